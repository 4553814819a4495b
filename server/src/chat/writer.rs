//! The message writer: one task that owns per-room sequence numbers, seals contents, and writes
//! messages in batches — everything queued while the previous transaction committed goes into
//! the next one (group commit). After a batch commits, its messages go, in seq order, to the
//! fan-out task, which acks senders and delivers to members. So an ack or a delivery always
//! means the message is durable, per-room seqs have no gaps, and the tick never waits on it.
//!
//! Idempotency: a `(sender, client_msg_id)` seen before is not stored again; the retry is acked
//! with the original message id and seq. Recent keys are answered from memory. Keys not in
//! memory are nearly always new, so a batch is first written without asking the database about
//! them: the unique index on `(client_msg_id, sender_id)` refuses a key that is already stored,
//! the transaction rolls back (no seq is used), and only then is the batch written again after
//! one query for its unknown keys (a retry from before a restart, or older than the
//! [`RECENT_KEYS`] remembered).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::crypto::Keyring;
use super::hub::Room;
use super::{ChatError, Committed};
use crate::store::chat::NewMessage;
use crate::store::{Db, now_ms};
use crate::world::conn::ConnHandle;

/// Messages per transaction at most.
const MAX_BATCH: usize = 4096;
/// Idempotency keys remembered in memory.
const RECENT_KEYS: usize = 200_000;

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

/// The last [`RECENT_KEYS`] `(sender, client_msg_id)` keys and what they committed, looked up by
/// `&str` without allocating.
struct RecentKeys {
    map: HashMap<Uuid, HashMap<Box<str>, Committed>>,
    order: VecDeque<(Uuid, Box<str>)>,
}

impl RecentKeys {
    fn new() -> Self {
        Self { map: HashMap::new(), order: VecDeque::new() }
    }

    fn get(&self, sender: Uuid, client_msg_id: &str) -> Option<&Committed> {
        self.map.get(&sender)?.get(client_msg_id)
    }

    fn insert(&mut self, sender: Uuid, client_msg_id: &str, value: Committed) {
        let per_sender = self.map.entry(sender).or_default();
        if let Some(old) = per_sender.get_mut(client_msg_id) {
            *old = value;
            return;
        }
        per_sender.insert(client_msg_id.into(), value);
        self.order.push_back((sender, client_msg_id.into()));
        while self.order.len() > RECENT_KEYS {
            if let Some((s, c)) = self.order.pop_front()
                && let Some(per_sender) = self.map.get_mut(&s)
            {
                per_sender.remove(&c);
                if per_sender.is_empty() {
                    self.map.remove(&s);
                }
            }
        }
    }
}

/// What the writer receives.
#[derive(Debug)]
pub enum WriterMsg {
    Send(Outgoing),
    /// Answered once everything queued before it is committed and handed to the fan-out.
    Flush(oneshot::Sender<()>),
}

/// Runs the writer. With a `window`, a batch stays open that long after its first message for
/// more to arrive (fewer, larger commits and fan-out rounds); without one it holds whatever
/// queued while the previous batch committed.
pub async fn run(
    db: Db,
    keys: Keyring,
    window: std::time::Duration,
    mut rx: mpsc::Receiver<WriterMsg>,
    fanout: mpsc::Sender<FanOut>,
) {
    let mut recent = RecentKeys::new();
    let mut seqs: HashMap<Uuid, i64> = HashMap::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + window;
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Send(m) => batch.push(m),
                WriterMsg::Flush(done) => {
                    flushes.push(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(_) if !window.is_zero() => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
                    Err(_) => None,
                };
            }
        }
        if !batch.is_empty() {
            let out = write_batch(&db, &keys, &mut recent, &mut seqs, std::mem::take(&mut batch)).await;
            for msg in out {
                if fanout.send(msg).await.is_err() {
                    return;
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
    tracing::debug!("message writer stopped");
}

async fn write_batch(
    db: &Db,
    keys: &Keyring,
    recent: &mut RecentKeys,
    seqs: &mut HashMap<Uuid, i64>,
    batch: Vec<Outgoing>,
) -> Vec<FanOut> {
    match try_write_batch(db, keys, recent, seqs, batch, false).await {
        Attempt::Done(out) => out,
        Attempt::KnownKey(batch) => {
            metrics::counter!("landworld_chat_key_lookups_total").increment(1);
            match try_write_batch(db, keys, recent, seqs, batch, true).await {
                Attempt::Done(out) => out,
                // The lookup answered every stored key: a conflict now is not a retry.
                Attempt::KnownKey(batch) => {
                    tracing::error!("a message batch conflicts with stored keys the lookup did not find");
                    vec![FanOut::Failed(fail_all(batch))]
                }
            }
        }
    }
}

/// How one attempt at writing a batch ended.
enum Attempt {
    Done(Vec<FanOut>),
    /// Nothing was written: a key not in memory is already stored (the batch, in its order).
    KnownKey(Vec<Outgoing>),
}

/// Writes a batch; with `lookup`, first asks the database about keys not in memory.
async fn try_write_batch(
    db: &Db,
    keys: &Keyring,
    recent: &mut RecentKeys,
    seqs: &mut HashMap<Uuid, i64>,
    batch: Vec<Outgoing>,
    lookup: bool,
) -> Attempt {
    let started = std::time::Instant::now();
    // 1. Idempotency: keys answered from memory; with `lookup`, one query for the rest.
    let unknown: Vec<(Uuid, &str)> = if lookup {
        batch
            .iter()
            .filter_map(|m| m.client_msg_id.as_deref().map(|c| (m.sender_id, c)))
            .filter(|(s, c)| recent.get(*s, c).is_none())
            .collect()
    } else {
        Vec::new()
    };
    let found = match db.existing_client_ids(&unknown).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "idempotency lookup failed");
            return Attempt::Done(vec![FanOut::Failed(fail_all(batch))]);
        }
    };
    for e in found {
        let committed = Committed {
            message_id: e.id,
            room_id: e.session_id,
            seq: e.seq,
            created_at: e.created_at,
            client_msg_id: Some(e.client_msg_id.clone()),
        };
        recent.insert(e.sender_id, &e.client_msg_id, committed);
    }

    // 2. Seqs, ids and sealing for the new ones; retries point at their original.
    let now = now_ms();
    let mut rows: Vec<NewMessage> = Vec::with_capacity(batch.len());
    let mut results: Vec<(Outgoing, Result<(Committed, bool), ChatError>)> = Vec::with_capacity(batch.len());
    let mut in_batch: HashMap<(Uuid, String), Committed> = HashMap::new();
    let mut touched: HashMap<Uuid, i64> = HashMap::new();
    for m in batch {
        let key = m.client_msg_id.as_ref().map(|cmid| (m.sender_id, cmid.clone()));
        if let Some(key) = &key
            && let Some(c) = recent.get(key.0, &key.1).or_else(|| in_batch.get(key))
        {
            let c = c.clone();
            results.push((m, Ok((c, false))));
            continue;
        }
        // Time-ordered ids keep primary-key inserts at the end of the index.
        let message_id = Uuid::now_v7();
        let sealed = match keys.seal(message_id, m.room.id, m.content.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "sealing a message failed");
                results.push((m, Err(ChatError::Unavailable)));
                continue;
            }
        };
        let next = seqs.entry(m.room.id).or_insert_with(|| m.room.last_seq());
        *next += 1;
        let seq = *next;
        touched.insert(m.room.id, seq);
        let committed =
            Committed { message_id, room_id: m.room.id, seq, created_at: now, client_msg_id: m.client_msg_id.clone() };
        if let Some(key) = key {
            in_batch.insert(key, committed.clone());
        }
        rows.push(NewMessage {
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
        results.push((m, Ok((committed, true))));
    }

    // 3. One transaction for the batch.
    if !rows.is_empty() {
        let last_seqs: Vec<(Uuid, i64)> = touched.iter().map(|(k, v)| (*k, *v)).collect();
        if let Err(e) = db.insert_message_batch(&rows, &last_seqs).await {
            // Seqs of this batch were not used: forget them so the next batch starts from the
            // last committed seq.
            for room in touched.keys() {
                seqs.remove(room);
            }
            if matches!(e, crate::store::StoreError::Conflict) && !lookup {
                return Attempt::KnownKey(results.into_iter().map(|(outgoing, _)| outgoing).collect());
            }
            tracing::error!(error = %e, messages = rows.len(), "writing a message batch failed");
            let failed = results
                .into_iter()
                .map(|(outgoing, r)| Failed { outgoing, error: r.err().unwrap_or(ChatError::Unavailable) })
                .collect();
            return Attempt::Done(vec![FanOut::Failed(failed)]);
        }
        metrics::histogram!("landworld_chat_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("landworld_chat_messages_stored_total").increment(rows.len() as u64);
    }
    let mut stored = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for (outgoing, r) in results {
        match r {
            Ok((committed, deliver)) => {
                if deliver {
                    outgoing.room.last_seq.fetch_max(committed.seq, std::sync::atomic::Ordering::AcqRel);
                    if let Some(cmid) = &outgoing.client_msg_id {
                        recent.insert(outgoing.sender_id, cmid, committed.clone());
                    }
                }
                stored.push(Stored { committed, outgoing, deliver });
            }
            Err(error) => failed.push(Failed { outgoing, error }),
        }
    }
    let mut out = vec![FanOut::Stored(stored, tokio::time::Instant::now())];
    if !failed.is_empty() {
        out.push(FanOut::Failed(failed));
    }
    Attempt::Done(out)
}

fn fail_all(batch: Vec<Outgoing>) -> Vec<Failed> {
    batch.into_iter().map(|outgoing| Failed { outgoing, error: ChatError::Unavailable }).collect()
}
