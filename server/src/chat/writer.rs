//! The message writer: one task that owns per-room sequence numbers, seals contents, and writes
//! messages in batches — everything queued while the previous transaction committed goes into
//! the next one (group commit). After a batch commits, its messages go, in seq order, to the
//! fan-out task, which acks senders and delivers to members. So an ack or a delivery always
//! means the message is durable, per-room seqs have no gaps, and the tick never waits on it.
//!
//! The writer is pipelined, one transaction in flight: while it runs, the messages arriving
//! meanwhile are checked for retries, numbered and sealed into the next batch, which is handed
//! to the database the moment the first one commits. So the database's thread does not wait
//! for that preparation between two commits, and a message's wait is about one transaction,
//! not one transaction plus the preparation of everything that queued during it. A retry of a
//! message that is still in flight is acked with it. If a transaction fails, the batch numbered
//! behind it fails too (its seqs follow the failed ones), and numbering resumes from each room's
//! last committed seq.
//!
//! Idempotency: a `(sender, client_msg_id)` seen before is not stored again; the retry is acked
//! with the original message id and seq. The writer knows every stored key through its
//! [`KeyIndex`]: keys of the last second or two in memory, a filter that rules out nearly every
//! new key, and the key store for the rest, which a merge task fills beside the commits (see
//! [`super::keys`]).
//!
//! Batches go through a [`MessageWriter`]: on SQLite a connection of the writer's own on a thread
//! of its own, one hand-over per transaction.
//!
//! Between commits the writer also checkpoints the SQLite log ([`MessageWriter::checkpoint`]) every
//! [`CHECKPOINT_EVERY`] while it writes, so the checkpoint's flush of the database file never
//! competes with a commit's flush of the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::crypto::Keyring;
use super::hub::Room;
use super::keys::{KeyIndex, Known};
use super::{ChatError, Committed};
use crate::store::chat::NewMessage;
use crate::store::message_writer::MessageWriter;
use crate::store::{Db, StoreResult, now_ms};
use crate::world::conn::ConnHandle;

/// Messages per transaction at most.
pub(crate) const MAX_BATCH: usize = 4096;
/// The writer checkpoints the SQLite log once it has written this many messages since the last
/// checkpoint, or [`CHECKPOINT_EVERY`] after the last one if fewer. A checkpoint holds the
/// writer's slot while it copies the pages written since the last one and flushes the database
/// file, a stall every message arriving meanwhile waits out: at 50,000 messages/s, every 10 ms
/// (500 messages) that is ~1–2 ms where every 50 ms it was ~5 ms (docs/performance.md, "The
/// writer's own SQLite connection"). At low rates the time bound keeps checkpoints (each one an
/// extra `fsync`) rare.
pub const CHECKPOINT_MESSAGES: usize = 500;
/// At most this long between a write and the next checkpoint.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Where the outcome of a send goes.
#[derive(Debug)]
pub enum Reply {
    /// `message_ack` (or an `error` frame) on this WebSocket connection.
    Conn(ConnHandle),
    /// A REST request waiting for the result.
    Rest(oneshot::Sender<Result<Committed, ChatError>>),
}

/// A validated message waiting for its seq.
#[derive(Debug)]
pub struct Outgoing {
    pub room: Arc<Room>,
    pub sender_id: Uuid,
    pub sender_username: Arc<str>,
    pub content: String,
    pub client_msg_id: Option<String>,
    /// Proximity: the sender's tile at send time.
    pub pos: Option<(i32, i32)>,
    /// Proximity: who receives it (the sender included).
    pub recipients: Vec<Uuid>,
    pub reply: Reply,
}

/// A committed message on its way to the fan-out.
#[derive(Debug)]
pub struct Stored {
    pub committed: Committed,
    pub outgoing: Outgoing,
    /// False for an idempotent retry: ack only, nothing is delivered again.
    pub deliver: bool,
}

/// Messages that failed to commit.
#[derive(Debug)]
pub struct Failed {
    pub outgoing: Outgoing,
    pub error: ChatError,
}

#[derive(Debug)]
pub enum FanOut {
    /// A committed batch and when it committed (the delivery window counts from then).
    Stored(Vec<Stored>, tokio::time::Instant),
    Failed(Vec<Failed>),
    /// A frame about earlier messages (`message_deleted`) for these users' connections: sent
    /// after every message queued before it, so it never overtakes the message it is about.
    Broadcast {
        users: Vec<Uuid>,
        frame: crate::world::conn::OutFrame,
    },
}

/// What the writer receives.
#[derive(Debug)]
pub enum WriterMsg {
    Send(Outgoing),
    /// Answered once everything queued before it is committed and handed to the fan-out.
    Flush(oneshot::Sender<()>),
    /// Like `Flush`, and answered once every key in memory is merged into the key store
    /// (shutdown).
    MergeKeys(oneshot::Sender<()>),
}

/// When the SQLite log was last checkpointed, and how many messages were written since.
struct Checkpoints {
    last: tokio::time::Instant,
    written: usize,
}

impl Checkpoints {
    fn due(&self) -> Option<tokio::time::Instant> {
        match self.written {
            0 => None,
            n if n >= CHECKPOINT_MESSAGES => Some(self.last),
            _ => Some(self.last + CHECKPOINT_EVERY),
        }
    }

    async fn run_if_due(&mut self, sink: &MessageWriter) {
        if self.due().is_some_and(|at| at <= tokio::time::Instant::now()) {
            if let Err(e) = sink.checkpoint().await {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying later");
            }
            self.last = tokio::time::Instant::now();
            self.written = 0;
        }
    }
}

/// Messages numbered and sealed for one transaction.
#[derive(Default)]
struct Batch {
    rows: Vec<NewMessage>,
    /// Every message taken, in order, with its outcome if the transaction commits: its
    /// committed form and whether it is new (false: an idempotent retry), or an error.
    results: Vec<(Outgoing, Result<(Committed, bool), ChatError>)>,
    /// The rooms the batch writes to and the last seq it gives each.
    touched: HashMap<Uuid, i64>,
    /// The idempotency keys it stores: in the writer's `pending` until it commits.
    keys: Vec<(Uuid, String)>,
    /// Set when its first message is taken.
    opened: Option<Opened>,
}

/// When a batch's first message was taken.
#[derive(Clone, Copy)]
struct Opened {
    at: tokio::time::Instant,
    /// Its messages' `created_at` (ms): one per batch, as one transaction stores them.
    created_at: i64,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// When a commit window keeps it open, until then.
    fn open_until(&self, window: Duration) -> Option<tokio::time::Instant> {
        self.opened.map(|o| o.at + window).filter(|at| !window.is_zero() && *at > tokio::time::Instant::now())
    }

    /// Every message fails with `unavailable`.
    fn fail(self) -> Vec<FanOut> {
        if self.results.is_empty() {
            return Vec::new();
        }
        vec![FanOut::Failed(fail_all(self.results.into_iter().map(|(outgoing, _)| outgoing)))]
    }
}

/// A batch whose transaction runs.
struct InFlight {
    batch: Batch,
    /// Messages written (retries are not).
    count: usize,
    done: BoxFuture<'static, StoreResult<()>>,
}

/// The writer's state (see the module documentation). At most one transaction is in flight;
/// messages that arrive meanwhile are numbered and sealed into the next batch while it runs,
/// which is submitted as soon as it commits.
struct Writer {
    db: Db,
    sink: MessageWriter,
    keys: Keyring,
    index: KeyIndex,
    window: Duration,
    fanout: mpsc::Sender<FanOut>,
    /// Each room's last seq given out (committed, in flight or in `next`).
    seqs: HashMap<Uuid, i64>,
    /// Keys of the messages in flight or in `next`, with what they will be stored as: a retry
    /// of one is acked with the same message once that commits.
    pending: HashMap<(Uuid, String), Committed>,
    next: Batch,
    checkpoints: Checkpoints,
}

/// What the writer waited for.
enum Event {
    Received(Option<WriterMsg>),
    Committed(InFlight, StoreResult<()>),
}

/// Runs the writer. With a `window`, a batch stays open that long after its first message for
/// more to arrive (fewer, larger commits and fan-out rounds); without one it holds whatever
/// queued while the previous transaction ran.
pub async fn run(
    db: Db,
    sink: MessageWriter,
    keys: Keyring,
    index: KeyIndex,
    window: Duration,
    mut rx: mpsc::Receiver<WriterMsg>,
    fanout: mpsc::Sender<FanOut>,
) {
    let mut w = Writer {
        db,
        sink,
        keys,
        index,
        window,
        fanout,
        seqs: HashMap::new(),
        pending: HashMap::new(),
        next: Batch::default(),
        checkpoints: Checkpoints { last: tokio::time::Instant::now(), written: 0 },
    };
    let mut inflight: Option<InFlight> = None;
    let mut open = true;
    loop {
        w.index.poll(false);
        // The next batch starts once nothing is in flight and its commit window (if any) is
        // over, or at once when the channel closed.
        if inflight.is_none() && !w.next.is_empty() && (!open || w.next.open_until(w.window).is_none()) {
            inflight = Some(w.submit());
        }
        let event = if let Some(mut f) = inflight.take() {
            if !open || w.next.results.len() >= MAX_BATCH {
                let result = (&mut f.done).await;
                Event::Committed(f, result)
            } else {
                tokio::select! {
                    biased;
                    result = &mut f.done => Event::Committed(f, result),
                    msg = rx.recv() => {
                        inflight = Some(f);
                        Event::Received(msg)
                    }
                }
            }
        } else if !open {
            break;
        } else if let Some(until) = w.next.open_until(w.window) {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(msg) => Event::Received(msg),
                Err(_) => continue,
            }
        } else {
            // Nothing to write: come back for the key merge and the checkpoint when due.
            let wake = match (w.index.next_work(), w.checkpoints.due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake {
                Some(at) => tokio::select! {
                    biased;
                    msg = rx.recv() => Event::Received(msg),
                    () = tokio::time::sleep_until(at) => {
                        w.checkpoints.run_if_due(&w.sink).await;
                        continue;
                    }
                },
                None => Event::Received(rx.recv().await),
            }
        };
        let forwarded = match event {
            Event::Committed(f, result) => w.committed(f, result).await,
            Event::Received(None) => {
                open = false;
                true
            }
            Event::Received(Some(msg)) => {
                // Take what is queued behind it, up to a flush.
                let mut chunk = Vec::new();
                // A flush's answer, and whether it also merges the keys.
                let mut control = None;
                let mut msg = Some(msg);
                while let Some(m) = msg.take() {
                    match m {
                        WriterMsg::Send(m) => chunk.push(m),
                        WriterMsg::Flush(done) => {
                            control = Some((done, false));
                            break;
                        }
                        WriterMsg::MergeKeys(done) => {
                            control = Some((done, true));
                            break;
                        }
                    }
                    if w.next.results.len() + chunk.len() < MAX_BATCH {
                        msg = rx.try_recv().ok();
                    }
                }
                let mut forwarded = w.take(chunk).await;
                if let Some((done, merge)) = control {
                    // Everything queued before it commits and goes to the fan-out first.
                    if let Some(f) = inflight.take() {
                        forwarded &= w.finish(f).await;
                    }
                    while forwarded && !w.next.is_empty() {
                        let f = w.submit();
                        forwarded &= w.finish(f).await;
                    }
                    if merge {
                        w.index.merge_all().await;
                    }
                    w.checkpoints.run_if_due(&w.sink).await;
                    let _ = done.send(());
                }
                forwarded
            }
        };
        if !forwarded {
            return;
        }
    }
    w.index.merge_all().await;
    tracing::debug!("message writer stopped");
}

impl Writer {
    /// Starts the transaction of the next batch.
    fn submit(&mut self) -> InFlight {
        let mut batch = std::mem::take(&mut self.next);
        let rows = std::mem::take(&mut batch.rows);
        let count = rows.len();
        self.checkpoints.written += count;
        let done: BoxFuture<'static, StoreResult<()>> = if rows.is_empty() {
            Box::pin(std::future::ready(Ok(())))
        } else {
            let last_seqs = batch.touched.iter().map(|(k, v)| (*k, *v)).collect();
            self.sink.start_insert(rows, last_seqs)
        };
        InFlight { batch, count, done }
    }

    /// Waits for a transaction and hands its outcome on.
    async fn finish(&mut self, mut f: InFlight) -> bool {
        let result = (&mut f.done).await;
        self.committed(f, result).await
    }

    /// A transaction finished: its messages go to the fan-out (acked and delivered, or
    /// failed). Then the log is checkpointed if due, before the next transaction starts.
    /// False once the fan-out is gone.
    async fn committed(&mut self, f: InFlight, result: StoreResult<()>) -> bool {
        let InFlight { batch, count, .. } = f;
        for key in &batch.keys {
            self.pending.remove(key);
        }
        let mut out = Vec::new();
        if let Err(e) = result {
            tracing::error!(error = %e, messages = count, "writing a message batch failed");
            // Nothing of it is stored. The batch numbered behind it fails too (its seqs
            // follow this one's), and every room's next seq starts again from its last
            // committed one.
            out.extend(batch.fail());
            out.extend(std::mem::take(&mut self.next).fail());
            self.pending.clear();
            self.seqs.clear();
        } else {
            if count > 0 {
                if let Some(opened) = batch.opened {
                    metrics::histogram!("landworld_chat_commit_seconds").record(opened.at.elapsed().as_secs_f64());
                }
                metrics::counter!("landworld_chat_messages_stored_total").increment(count as u64);
            }
            let mut stored = Vec::with_capacity(batch.results.len());
            let mut failed = Vec::new();
            for (outgoing, r) in batch.results {
                match r {
                    Ok((committed, deliver)) => {
                        if deliver {
                            outgoing.room.last_seq.fetch_max(committed.seq, std::sync::atomic::Ordering::AcqRel);
                            self.index.committed(outgoing.sender_id, &committed);
                        }
                        stored.push(Stored { committed, outgoing, deliver });
                    }
                    Err(error) => failed.push(Failed { outgoing, error }),
                }
            }
            out.push(FanOut::Stored(stored, tokio::time::Instant::now()));
            if !failed.is_empty() {
                out.push(FanOut::Failed(failed));
            }
        }
        for msg in out {
            if self.fanout.send(msg).await.is_err() {
                return false;
            }
        }
        self.checkpoints.run_if_due(&self.sink).await;
        true
    }

    /// Numbers and seals messages into the next batch. False once the fan-out is gone.
    async fn take(&mut self, chunk: Vec<Outgoing>) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let now = self
            .next
            .opened
            .get_or_insert_with(|| Opened { at: tokio::time::Instant::now(), created_at: now_ms() })
            .created_at;
        // 1. Idempotency: what memory knows of each key, once; keys the filter may have seen
        //    (retries, and a rare false positive) are looked up in one query; every other key
        //    is new.
        let known: Vec<Option<Known>> =
            chunk.iter().map(|m| m.client_msg_id.as_deref().map(|c| self.index.known(m.sender_id, c))).collect();
        let maybe: Vec<(Uuid, &str)> = chunk
            .iter()
            .zip(&known)
            .filter(|(_, k)| matches!(k, Some(Known::Maybe)))
            .filter_map(|(m, _)| m.client_msg_id.as_deref().map(|c| (m.sender_id, c)))
            .collect();
        let mut found = HashMap::new();
        if !maybe.is_empty() {
            metrics::counter!("landworld_chat_key_lookups_total").increment(maybe.len() as u64);
            match lookup(&self.db, &self.index, &maybe).await {
                Ok(stored) => found = stored,
                Err(e) => {
                    tracing::error!(error = %e, "idempotency lookup failed");
                    return self.fanout.send(FanOut::Failed(fail_all(chunk))).await.is_ok();
                }
            }
        }

        // 2. Seqs, ids and sealing for the new ones; retries point at their original.
        let next = &mut self.next;
        for (m, known) in chunk.into_iter().zip(known) {
            // The key, built once: looked up here, kept in `pending` and the batch below.
            let key = m.client_msg_id.clone().map(|cmid| (m.sender_id, cmid));
            if let Some(key) = &key {
                let prior = match known {
                    Some(Known::Stored(c)) => Some(c),
                    _ => self.pending.get(key).or_else(|| found.get(key)).cloned(),
                };
                if let Some(c) = prior {
                    next.results.push((m, Ok((c, false))));
                    continue;
                }
            }
            // Time-ordered ids keep primary-key inserts at the end of the index.
            let message_id = Uuid::now_v7();
            let sealed = match self.keys.seal(message_id, m.room.id, m.content.as_bytes()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "sealing a message failed");
                    next.results.push((m, Err(ChatError::Unavailable)));
                    continue;
                }
            };
            let last = self.seqs.entry(m.room.id).or_insert_with(|| m.room.last_seq());
            *last += 1;
            let seq = *last;
            next.touched.insert(m.room.id, seq);
            let committed = Committed {
                message_id,
                room_id: m.room.id,
                seq,
                created_at: now,
                client_msg_id: m.client_msg_id.clone(),
            };
            if let Some(key) = key {
                self.pending.insert(key.clone(), committed.clone());
                next.keys.push(key);
            }
            next.rows.push(NewMessage {
                id: message_id,
                session_id: m.room.id,
                seq,
                sender_id: m.sender_id,
                client_msg_id: m.client_msg_id.clone(),
                key_id: sealed.key_id,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
                pos: m.pos,
                created_at: now,
                recipients: m.recipients.clone(),
            });
            next.results.push((m, Ok((committed, true))));
        }
        true
    }
}

/// Keys the filter may have seen, looked up in the key store, with their messages. A key whose
/// message is gone (retention, a deleted account) counts as not stored.
async fn lookup(
    db: &Db,
    index: &KeyIndex,
    keys: &[(Uuid, &str)],
) -> Result<HashMap<(Uuid, String), Committed>, crate::store::StoreError> {
    let stored = index.store().lookup(keys).await?;
    if stored.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = stored.iter().map(|k| k.message_id).collect();
    let heads: HashMap<Uuid, (Uuid, i64, i64)> =
        db.message_heads(&ids).await?.into_iter().map(|(id, room, seq, at)| (id, (room, seq, at))).collect();
    Ok(stored
        .into_iter()
        .filter_map(|k| {
            let (room_id, seq, created_at) = *heads.get(&k.message_id)?;
            let committed = Committed {
                message_id: k.message_id,
                room_id,
                seq,
                created_at,
                client_msg_id: Some(k.client_msg_id.clone()),
            };
            Some(((k.sender_id, k.client_msg_id), committed))
        })
        .collect())
}

fn fail_all(batch: impl IntoIterator<Item = Outgoing>) -> Vec<Failed> {
    batch.into_iter().map(|outgoing| Failed { outgoing, error: ChatError::Unavailable }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Chat;
    use crate::store::chat::Page;

    /// A chat service on a new SQLite database with one user in one group, and a second
    /// connection to the file that can hold SQLite's write lock: while it does, the writer's
    /// transaction waits, and what is sent meanwhile is prepared as the next batch.
    async fn service(dir: &std::path::Path) -> anyhow::Result<(Chat, Db, Uuid, Uuid, rusqlite::Connection)> {
        let (db, user, room) = crate::store::test_db_with_group(dir, "w.db").await?;
        let chat = crate::chat::test_service(db.clone()).await?;
        let lock = rusqlite::Connection::open(dir.join("w.db"))?;
        Ok((chat, db, user, room, lock))
    }

    /// Sends `cmid` as the user; the receiver gets the outcome.
    async fn send(
        chat: &Chat,
        user: Uuid,
        room: Uuid,
        cmid: &str,
    ) -> anyhow::Result<oneshot::Receiver<Result<Committed, ChatError>>> {
        let (tx, rx) = oneshot::channel();
        let content = format!("content of {cmid}");
        chat.send(user, "tester".into(), &room.to_string(), content, Some(cmid.into()), Reply::Rest(tx)).await?;
        Ok(rx)
    }

    /// The writer has taken what was sent (it is prepared or in flight).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn stored_seqs(db: &Db, room: Uuid) -> anyhow::Result<Vec<(i64, Option<String>)>> {
        Ok(db.history(room, None, Page::latest(10)).await?.0.into_iter().map(|r| (r.seq, r.client_msg_id)).collect())
    }

    /// While a transaction runs, the messages sent meanwhile are numbered after it, and a
    /// retry of a message in that transaction is recognised: it is acked with the same message
    /// and stored once. Everything commits in order once the transaction can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_sent_during_a_transaction_follow_it_and_a_retry_of_it_is_acked_with_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (chat, db, user, room, lock) = service(dir.path()).await?;
        lock.execute_batch("BEGIN IMMEDIATE")?;
        let a = send(&chat, user, room, "a").await?;
        settle().await;
        let retry = send(&chat, user, room, "a").await?;
        let b = send(&chat, user, room, "b").await?;
        settle().await;
        lock.execute_batch("ROLLBACK")?;
        let a = a.await??;
        let retry = retry.await??;
        let b = b.await??;
        assert_eq!(a.seq, 1);
        assert_eq!((retry.message_id, retry.seq), (a.message_id, 1), "the retry is acked with the original");
        assert_eq!(b.seq, 2);
        chat.flush().await;
        assert_eq!(stored_seqs(&db, room).await?, vec![(1, Some("a".into())), (2, Some("b".into()))]);
        Ok(())
    }

    /// A transaction that fails takes the batch prepared behind it along (its seqs follow the
    /// failed ones): both fail with `unavailable`, and the next messages are numbered from the
    /// last committed seq, without a gap. A failed message sent again is stored as new.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_transaction_fails_the_batch_behind_it_and_seqs_stay_gapless() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (chat, db, user, room, lock) = service(dir.path()).await?;
        let first = send(&chat, user, room, "first").await?.await??;
        assert_eq!(first.seq, 1);
        lock.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.client_msg_id = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END; BEGIN IMMEDIATE",
        )?;
        let refused = send(&chat, user, room, "refused").await?;
        settle().await;
        let behind = send(&chat, user, room, "behind").await?;
        settle().await;
        lock.execute_batch("ROLLBACK")?;
        assert!(matches!(refused.await?, Err(ChatError::Unavailable)));
        assert!(matches!(behind.await?, Err(ChatError::Unavailable)), "numbered behind a failed batch");
        let after = send(&chat, user, room, "after").await?.await??;
        assert_eq!(after.seq, 2, "numbered from the last committed seq");
        let again = send(&chat, user, room, "behind").await?.await??;
        assert_eq!(again.seq, 3, "a failed message sent again is new");
        chat.flush().await;
        let stored = stored_seqs(&db, room).await?;
        assert_eq!(stored, vec![(1, Some("first".into())), (2, Some("after".into())), (3, Some("behind".into()))]);
        Ok(())
    }

    /// Nothing written: no checkpoint. A few messages: one within `CHECKPOINT_EVERY`. A full
    /// `CHECKPOINT_MESSAGES`: one at once, however recent the last.
    #[test]
    fn checkpoints_follow_the_messages_written_with_a_time_bound() {
        let last = tokio::time::Instant::now();
        let due = |written| Checkpoints { last, written }.due();
        assert_eq!(due(0), None);
        assert_eq!(due(1), Some(last + CHECKPOINT_EVERY));
        assert_eq!(due(CHECKPOINT_MESSAGES - 1), Some(last + CHECKPOINT_EVERY));
        assert_eq!(due(CHECKPOINT_MESSAGES), Some(last));
        assert_eq!(due(10 * CHECKPOINT_MESSAGES), Some(last));
    }
}
