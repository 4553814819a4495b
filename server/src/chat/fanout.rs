//! From commit to the members' sockets: acks, then deliveries in rounds that sweep a room.
//!
//! Two stages, in commit order:
//! - **Acks** ([`ack_loop`], a task on the server's runtime): as soon as a commit batch arrives
//!   from the writer, each sender gets its `message_ack` (or its REST reply, or its error), and
//!   the batch goes on to the delivery thread. An ack never waits for a delivery round, nor for
//!   the serializing of the messages acked before it: each new message is serialized once, for
//!   all its recipients, on the delivery thread as it takes the batch.
//! - **Deliveries** ([`delivery_loop`], a thread of its own at a lower priority, see
//!   [`spawn`]): batches that queued up while a round was written are merged into the next
//!   round, so each member connection gets one queue item (one wake-up, one socket write) per
//!   room per round. With a delivery window the round stays open that long after its first
//!   message committed. A broadcast (`message_deleted`) closes the round first, so it arrives
//!   after the messages before it.
//!
//! **A round is a sweep.** Writing a room's batch to a thousand sockets takes milliseconds, and
//! messages commit meanwhile. Every [`ABSORB_EVERY`] recipients the round looks at its queue:
//! a batch whose messages are all for the room being written joins the round's batch at once
//! for the recipients not written to yet (old and new messages in one write). The new messages
//! are carried into the next round for the ones before: that round visits the members in the
//! same order and skips everyone who has them. So a message waits at most about one sweep, not
//! the rest of the round in progress plus its own round. Anything else that arrives mid-round
//! (another room's message, a proximity message, a broadcast) ends the taking and waits for the
//! next round, and so does everything queued behind it, keeping its place.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use landworld_shared::protocol::ws::ServerFrame;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::hub::{Room, RoomBatch, RoomKind};
use super::writer::{FanOut, Outgoing, Reply, Stored};
use super::{Chat, Inner};
use crate::store::ms_to_rfc3339;
use crate::world::conn::{OutFrame, encode};

/// Commit batches merged into one delivery round at most (when deliveries fall behind).
const MAX_ROUND: usize = 64;

/// How many recipients a round writes to between two looks for newly committed messages.
const ABSORB_EVERY: usize = 16;

/// Batches queued between the ack task and the delivery thread.
const QUEUE: usize = 1024;

/// A committed message on its way from the ack task to the delivery thread, which serializes
/// it ([`CommittedMessage::serialize`]): the ack task's time is every later ack's wait.
#[derive(Debug)]
struct CommittedMessage {
    room: Arc<Room>,
    seq: i64,
    frame: ServerFrame,
    recipients: Vec<Uuid>,
}

impl CommittedMessage {
    fn serialize(self) -> Message {
        Message { room: self.room, seq: self.seq, frame: encode(&self.frame), recipients: self.recipients }
    }
}

/// The new messages of a commit batch, serialized.
fn serialize(batch: Vec<CommittedMessage>) -> Vec<Message> {
    batch.into_iter().map(CommittedMessage::serialize).collect()
}

/// A committed message, serialized, on its way to its recipients.
#[derive(Debug)]
struct Message {
    room: Arc<Room>,
    seq: i64,
    frame: OutFrame,
    /// Proximity: who receives it (other rooms: the room's members at delivery).
    recipients: Vec<Uuid>,
}

/// What the delivery thread receives, in commit order.
#[derive(Debug)]
enum Delivery {
    /// The new messages of one commit batch, and when it committed (the delivery window
    /// counts from then).
    Batch(Vec<CommittedMessage>, Instant),
    /// A frame about earlier messages, for these users' connections.
    Broadcast { users: Vec<Uuid>, frame: OutFrame },
}

/// Starts the ack task and the delivery thread. The delivery thread runs at
/// [`crate::sched::FANOUT_NICE`]: writing a round to a thousand sockets is the server's bulk
/// work (most of its CPU time under chat load), and on a busy machine it must not delay the
/// short, latency-bound steps of a message's way to its commit and ack — the connection's
/// reader, the writer, the database thread, the ack task — nor, through them, every later
/// message. It has its own single-threaded runtime (it needs only its channel and timers; socket
/// writes are non-blocking calls that need no runtime), and holds the chat service weakly.
///
/// The ack task ends when `stop` fires (after acking what is queued) or every sender of `rx`
/// is gone; the delivery thread ends after it. The returned handle finishes when both have.
pub(super) fn spawn(chat: &Chat, rx: mpsc::Receiver<FanOut>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let (tx, deliveries) = mpsc::channel(QUEUE);
    let acks = tokio::spawn(ack_loop(rx, tx, stop));
    let weak = Arc::downgrade(&chat.inner);
    let window = chat.inner.settings.delivery_window;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let started = std::thread::Builder::new().name("landworld-fanout".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(runtime) => {
                if let Err(e) = crate::sched::set_current_thread_nice(crate::sched::FANOUT_NICE) {
                    tracing::info!(error = %e, "the fan-out thread keeps its priority");
                }
                runtime.block_on(delivery_loop(weak, window, deliveries));
            }
            Err(e) => tracing::error!(error = %e, "cannot start the fan-out's runtime"),
        }
        let _ = done_tx.send(());
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the fan-out thread");
    }
    tokio::spawn(async move {
        let _ = acks.await;
        let _ = done_rx.await;
    })
}

/// Acks each commit batch and hands its new messages, serialized, to the delivery thread.
async fn ack_loop(mut rx: mpsc::Receiver<FanOut>, tx: mpsc::Sender<Delivery>, stop: CancellationToken) {
    loop {
        let batch = tokio::select! {
            batch = rx.recv() => batch,
            () = stop.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        if let Some(delivery) = ack(batch) {
            // Without the delivery thread (it could not start) acks still go out.
            let _ = tx.send(delivery).await;
        }
    }
    // Stopping: whatever committed is still acked.
    while let Ok(batch) = rx.try_recv() {
        if let Some(delivery) = ack(batch) {
            let _ = tx.try_send(delivery);
        }
    }
}

/// Sends a batch's acks, replies and errors; returns what is left to deliver.
fn ack(batch: FanOut) -> Option<Delivery> {
    match batch {
        FanOut::Stored(stored, committed_at) => {
            let mut messages = Vec::new();
            for Stored { committed: c, outgoing, deliver } in stored {
                let Outgoing { room, sender_id, sender_username, content, recipients, reply, .. } = outgoing;
                match reply {
                    Reply::Conn(conn) => {
                        let ack = ServerFrame::MessageAck {
                            room_id: c.room_id,
                            message_id: c.message_id,
                            seq: c.seq,
                            client_msg_id: c.client_msg_id.clone(),
                            created_at: ms_to_rfc3339(c.created_at),
                        };
                        // A task whose job is writing to connections: the ack may go straight
                        // to the socket.
                        conn.send_now(&encode(&ack));
                    }
                    Reply::Rest(tx) => {
                        let _ = tx.send(Ok(c.clone()));
                    }
                }
                if !deliver {
                    continue;
                }
                let frame = ServerFrame::Message {
                    room_id: c.room_id,
                    message_id: c.message_id,
                    seq: c.seq,
                    sender_id,
                    sender_username: sender_username.to_string(),
                    content,
                    created_at: ms_to_rfc3339(c.created_at),
                    client_msg_id: c.client_msg_id,
                };
                messages.push(CommittedMessage { room, seq: c.seq, frame, recipients });
            }
            (!messages.is_empty()).then_some(Delivery::Batch(messages, committed_at))
        }
        FanOut::Failed(failed) => {
            for f in failed {
                match f.outgoing.reply {
                    Reply::Conn(conn) => {
                        conn.send_frame(&f.error.frame(f.outgoing.client_msg_id.clone()));
                    }
                    Reply::Rest(tx) => {
                        let _ = tx.send(Err(f.error));
                    }
                }
            }
            None
        }
        FanOut::Broadcast { users, frame } => Some(Delivery::Broadcast { users, frame }),
    }
}

/// Delivers batches in rounds (see the module docs) until the ack task is gone or the chat
/// service is.
async fn delivery_loop(service: Weak<Inner>, window: Duration, mut rx: mpsc::Receiver<Delivery>) {
    let mut round = Round::default();
    let mut stash: Option<Delivery> = None;
    loop {
        let first = match stash.take() {
            Some(d) => d,
            // Messages carried over from the last sweep go out now, with whatever is waiting.
            None if round.has_deliveries() => match rx.try_recv() {
                Ok(d) => d,
                Err(_) => {
                    let Some(chat) = service.upgrade().map(|inner| Chat { inner }) else { break };
                    round.deliver(&chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
                    continue;
                }
            },
            None => match rx.recv().await {
                Some(d) => d,
                None => break,
            },
        };
        let Some(chat) = service.upgrade().map(|inner| Chat { inner }) else { break };
        // The window counts from the first message's commit, not from when this loop got to
        // it: a message that waited while the previous round was written has had its window.
        let since = match &first {
            Delivery::Batch(_, committed_at) => *committed_at,
            Delivery::Broadcast { .. } => Instant::now(),
        };
        let deadline = since + window;
        let mut next = Some(first);
        let mut merged = 0;
        while let Some(d) = next.take() {
            match d {
                Delivery::Broadcast { users, frame } => {
                    round.deliver(&chat, None);
                    chat.hub_read().send_to_users(users.iter(), &frame);
                }
                Delivery::Batch(messages, _) => {
                    round.add(serialize(messages));
                    merged += 1;
                }
            }
            if merged >= MAX_ROUND {
                break;
            }
            next = match rx.try_recv() {
                Ok(d) => Some(d),
                Err(_) if !window.is_zero() && round.has_deliveries() => {
                    tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
                }
                Err(_) => None,
            };
        }
        round.deliver(&chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
    }
}

/// Where a round takes batches committed while it writes, and where it leaves the first one it
/// cannot take.
struct Absorb<'a> {
    rx: &'a mut mpsc::Receiver<Delivery>,
    stash: &'a mut Option<Delivery>,
}

/// One delivery round: messages grouped per room (seq order kept).
#[derive(Default)]
struct Round {
    rooms: Vec<(Arc<Room>, Vec<(i64, OutFrame)>)>,
    proximity: Vec<(Vec<Uuid>, Uuid, i64, OutFrame)>,
    new: u64,
}

impl Round {
    fn has_deliveries(&self) -> bool {
        !self.rooms.is_empty() || !self.proximity.is_empty()
    }

    fn add(&mut self, messages: Vec<Message>) {
        for Message { room, seq, frame, recipients } in messages {
            self.new += 1;
            if room.kind == RoomKind::Proximity {
                self.proximity.push((recipients, room.id, seq, frame));
            } else if let Some((_, frames)) = self.rooms.iter_mut().find(|(r, _)| r.id == room.id) {
                frames.push((seq, frame));
            } else {
                self.rooms.push((room, vec![(seq, frame)]));
            }
        }
    }

    /// Whether a delivery can join the sweep of `room` mid-round: a batch whose messages are
    /// all for that room (a round sweeps only rooms, never the proximity room).
    fn joins_sweep(delivery: &Delivery, room: &Room) -> bool {
        match delivery {
            Delivery::Batch(messages, _) => messages.iter().all(|m| m.room.id == room.id),
            Delivery::Broadcast { .. } => false,
        }
    }

    /// Takes the batches committed meanwhile for the room being written and returns their
    /// messages, which also stay in this round's state to be carried into the next round. The
    /// first delivery that cannot join is stashed, and nothing more is taken this round.
    fn absorb(&mut self, absorb: &mut Absorb<'_>, room: &Arc<Room>) -> Vec<(i64, OutFrame)> {
        let mut new = Vec::new();
        while absorb.stash.is_none() {
            let Ok(delivery) = absorb.rx.try_recv() else { break };
            if !Self::joins_sweep(&delivery, room) {
                *absorb.stash = Some(delivery);
                break;
            }
            let Delivery::Batch(messages, _) = delivery else { continue };
            let messages = serialize(messages);
            new.extend(messages.iter().map(|m| (m.seq, m.frame.clone())));
            self.add(messages);
        }
        new
    }

    /// Writes the round. With `absorb`, batches of the room being written that commit
    /// meanwhile join it; they stay in `self` for the next round, which delivers them to the
    /// members written to before they came.
    fn deliver(&mut self, chat: &Chat, mut absorb: Option<Absorb<'_>>) {
        if !self.has_deliveries() {
            return;
        }
        let started = std::time::Instant::now();
        let mut delivered = 0u64;
        let rooms = std::mem::take(&mut self.rooms);
        let proximity = std::mem::take(&mut self.proximity);
        {
            let hub = chat.hub_read();
            for (room, frames) in rooms {
                let mut batch = RoomBatch::new(frames);
                let members = room.member_ids();
                for (i, user) in members.iter().enumerate() {
                    if i > 0
                        && i % ABSORB_EVERY == 0
                        && let Some(a) = absorb.as_mut()
                    {
                        let new = self.absorb(a, &room);
                        if !new.is_empty() {
                            batch = batch.extended(&new);
                        }
                    }
                    delivered += hub.deliver_to_user(user, room.id, &batch);
                }
            }
            for (recipients, room_id, seq, frame) in proximity {
                let batch = RoomBatch::new(vec![(seq, frame)]);
                delivered += hub.deliver_to_users(recipients.iter(), room_id, &batch);
            }
        }
        chat.inner.delivered.fetch_add(delivered, Ordering::Relaxed);
        chat.inner.stored.fetch_add(std::mem::take(&mut self.new), Ordering::Relaxed);
        metrics::counter!("landworld_chat_deliveries_total").increment(delivered);
        metrics::histogram!("landworld_chat_delivery_round_seconds").record(started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::{self, IoSlice};
    use std::sync::Mutex;

    use super::*;
    use crate::chat::hub::{ChatConn, UserEntry};
    use crate::chat::writer::Failed;
    use crate::chat::{ChatError, Committed};
    use crate::store::Db;
    use crate::world::conn::{ConnHandle, DirectWrite, OutQueue, decode_frames};

    /// A socket that records what each write carried, and on its first write queues a delivery
    /// for the round, as if it committed while the round was being written.
    #[derive(Debug, Default)]
    struct Recorder {
        writes: Mutex<Vec<Vec<u8>>>,
        inject: Mutex<Option<(mpsc::Sender<Delivery>, Delivery)>>,
    }

    impl DirectWrite for Recorder {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = bytes.len();
            self.writes.lock().expect("lock").push(bytes);
            if let Some((tx, d)) = self.inject.lock().expect("lock").take() {
                tx.try_send(d).expect("room in the channel");
            }
            Ok(n)
        }
    }

    impl Recorder {
        /// The `seq` of each message frame, per write.
        fn seqs_per_write(&self) -> Vec<Vec<i64>> {
            let writes = self.writes.lock().expect("lock");
            writes
                .iter()
                .map(|w| {
                    decode_frames(w)
                        .iter()
                        .map(|f| serde_json::from_str::<serde_json::Value>(f).expect("a JSON frame"))
                        .filter_map(|f| f["seq"].as_i64())
                        .collect()
                })
                .collect()
        }
    }

    struct Setup {
        chat: Chat,
        room: Arc<Room>,
        /// Per member, in the order a round writes to them.
        sockets: Vec<Arc<Recorder>>,
        _queues: Vec<OutQueue>,
        _dir: tempfile::TempDir,
    }

    /// A chat service and a group room of `n` members, each with one connection writing to a
    /// [`Recorder`].
    async fn setup(n: usize) -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("f.db").display())).await?;
        db.migrate().await?;
        let chat = crate::chat::test_service(db).await?;
        let members: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let room = Arc::new(Room::new(Uuid::new_v4(), RoomKind::Group, "g".into(), None, None, 0, members.clone()));
        let mut by_user = HashMap::new();
        let mut queues = Vec::new();
        {
            let mut hub = chat.hub_write();
            for user in &members {
                let (handle, queue, _control) = ConnHandle::new(Uuid::new_v4());
                let socket = Arc::new(Recorder::default());
                handle.attach(socket.clone());
                queues.push(queue);
                by_user.insert(*user, socket);
                let conn = Arc::new(ChatConn::new(handle, *user));
                hub.users.insert(*user, UserEntry { username: "u".into(), conns: vec![conn], joined: HashSet::new() });
            }
        }
        let sockets = room.member_ids().iter().map(|u| by_user[u].clone()).collect();
        Ok(Setup { chat, room, sockets, _queues: queues, _dir: dir })
    }

    /// A committed message of `room` with `seq`, answered over REST (the returned receiver).
    fn stored(room: &Arc<Room>, seq: i64) -> (Stored, oneshot::Receiver<Result<Committed, ChatError>>) {
        let (tx, rx) = oneshot::channel();
        let committed = Committed {
            message_id: Uuid::now_v7(),
            room_id: room.id,
            seq,
            created_at: 0,
            client_msg_id: Some(format!("c{seq}")),
        };
        let outgoing = Outgoing {
            room: room.clone(),
            sender_id: Uuid::new_v4(),
            sender_username: "s".into(),
            content: format!("message {seq}"),
            client_msg_id: committed.client_msg_id.clone(),
            pos: None,
            recipients: Vec::new(),
            reply: Reply::Rest(tx),
        };
        (Stored { committed, outgoing, deliver: true }, rx)
    }

    /// One committed message of `room` with `seq`, serialized.
    fn messages(room: &Arc<Room>, seq: i64) -> Vec<Message> {
        let frame = OutFrame::from(format!(r#"{{"type":"message","seq":{seq}}}"#));
        vec![Message { room: room.clone(), seq, frame, recipients: Vec::new() }]
    }

    /// The delivery of one committed message of `room` with `seq`.
    fn delivery(room: &Arc<Room>, seq: i64) -> Delivery {
        let frame = ServerFrame::Message {
            room_id: room.id,
            message_id: Uuid::now_v7(),
            seq,
            sender_id: Uuid::nil(),
            sender_username: "s".into(),
            content: format!("message {seq}"),
            created_at: ms_to_rfc3339(0),
            client_msg_id: None,
        };
        Delivery::Batch(
            vec![CommittedMessage { room: room.clone(), seq, frame, recipients: Vec::new() }],
            Instant::now(),
        )
    }

    /// A message that commits while a round writes to the room's members joins the round for
    /// the members not written to yet (one write with both messages), and reaches the members
    /// before it in the next round, which writes to no one else. Every member gets both
    /// messages once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_committed_mid_round_joins_it_for_the_members_not_yet_written() -> anyhow::Result<()> {
        let s = setup(48).await?;
        let (tx, mut rx) = mpsc::channel(16);
        let mut round = Round::default();
        round.add(messages(&s.room, 1));
        // It commits while the round writes to the 21st member; the round looks for new
        // messages after every 16th member, so members 32.. are written to after it came.
        *s.sockets[20].inject.lock().expect("lock") = Some((tx.clone(), delivery(&s.room, 2)));
        let mut stash = None;
        round.deliver(&s.chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
        assert!(stash.is_none());
        for (i, socket) in s.sockets.iter().enumerate() {
            let expected: Vec<Vec<i64>> = if i < 32 { vec![vec![1]] } else { vec![vec![1, 2]] };
            assert_eq!(socket.seqs_per_write(), expected, "member {i} after the first round");
        }
        assert!(round.has_deliveries(), "the message is carried into the next round");
        round.deliver(&s.chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
        assert!(!round.has_deliveries());
        for (i, socket) in s.sockets.iter().enumerate() {
            let expected: Vec<Vec<i64>> = if i < 32 { vec![vec![1], vec![2]] } else { vec![vec![1, 2]] };
            assert_eq!(socket.seqs_per_write(), expected, "member {i} after the second round");
        }
        assert_eq!(s.chat.deliveries_total(), 96, "deliveries count frames sent, once each");
        Ok(())
    }

    /// What cannot join a round (a broadcast, another room's message) waits for the next one,
    /// and so does everything queued behind it: nothing overtakes a broadcast.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broadcast_committed_mid_round_stops_the_round_taking_more() -> anyhow::Result<()> {
        let s = setup(40).await?;
        let (tx, mut rx) = mpsc::channel(16);
        let mut round = Round::default();
        round.add(messages(&s.room, 1));
        let broadcast = Delivery::Broadcast { users: Vec::new(), frame: OutFrame::from("{}") };
        *s.sockets[3].inject.lock().expect("lock") = Some((tx.clone(), broadcast));
        *s.sockets[5].inject.lock().expect("lock") = Some((tx.clone(), delivery(&s.room, 2)));
        let mut stash = None;
        round.deliver(&s.chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
        assert!(matches!(stash, Some(Delivery::Broadcast { .. })), "the broadcast waits for the next round");
        assert!(matches!(rx.try_recv(), Ok(Delivery::Batch(..))), "the message behind it stays queued");
        assert!(!round.has_deliveries());
        for socket in &s.sockets {
            assert_eq!(socket.seqs_per_write(), vec![vec![1]]);
        }

        // Another room's message is not taken into this room's round either.
        let other = Arc::new(Room::new(Uuid::new_v4(), RoomKind::Group, "o".into(), None, None, 0, []));
        round.add(messages(&s.room, 3));
        *s.sockets[0].inject.lock().expect("lock") = Some((tx.clone(), delivery(&other, 1)));
        let mut stash = None;
        round.deliver(&s.chat, Some(Absorb { rx: &mut rx, stash: &mut stash }));
        assert!(matches!(&stash, Some(Delivery::Batch(m, _)) if m[0].room.id == other.id));
        Ok(())
    }

    /// The ack task answers every sender of a commit batch before its messages go on to be
    /// delivered, serializes each new message once, passes broadcasts on in order, and answers
    /// failures without delivering anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acks_go_out_before_the_batch_moves_on_to_delivery() -> anyhow::Result<()> {
        let room = Arc::new(Room::new(Uuid::new_v4(), RoomKind::Group, "g".into(), None, None, 0, []));
        let (fan_tx, fan_rx) = mpsc::channel(16);
        let (tx, mut deliveries) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(ack_loop(fan_rx, tx, stop.clone()));

        let (one, ack1) = stored(&room, 1);
        let (mut retry, ack2) = stored(&room, 1);
        retry.deliver = false;
        let (failing, ack3) = stored(&room, 9);
        fan_tx.send(FanOut::Stored(vec![one, retry], Instant::now())).await?;
        fan_tx.send(FanOut::Broadcast { users: Vec::new(), frame: OutFrame::from("deleted") }).await?;
        fan_tx.send(FanOut::Failed(vec![Failed { outgoing: failing.outgoing, error: ChatError::Unavailable }])).await?;

        let Some(Delivery::Batch(messages, _)) = deliveries.recv().await else { panic!("the batch") };
        assert!(matches!(ack1.await, Ok(Ok(c)) if c.seq == 1));
        assert!(matches!(ack2.await, Ok(Ok(c)) if c.seq == 1), "a retry is acked");
        assert_eq!(messages.len(), 1, "a retry is not delivered again");
        let frame: serde_json::Value = serde_json::from_str(encode(&messages[0].frame).as_str())?;
        assert_eq!((frame["type"].as_str(), frame["seq"].as_i64()), (Some("message"), Some(1)));
        assert!(matches!(deliveries.recv().await, Some(Delivery::Broadcast { .. })));
        assert!(matches!(ack3.await, Ok(Err(ChatError::Unavailable))));

        // Stopping: what is queued is still acked.
        let (late, ack4) = stored(&room, 2);
        fan_tx.send(FanOut::Stored(vec![late], Instant::now())).await?;
        stop.cancel();
        task.await?;
        assert!(matches!(ack4.await, Ok(Ok(c)) if c.seq == 2));
        Ok(())
    }
}
