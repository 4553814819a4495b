//! The message writer: one task that owns per-room sequence numbers, seals contents, and writes
//! messages in batches — everything queued while the previous transaction committed goes into
//! the next one (group commit). After a batch commits, its messages go, in seq order, to the
//! fan-out task, which acks senders and delivers to members. So an ack or a delivery always
//! means the message is durable, per-room seqs have no gaps, and the tick never waits on it.
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

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::crypto::Keyring;
use super::hub::Room;
use super::keys::{KeyIndex, Known};
use super::{ChatError, Committed};
use crate::store::chat::NewMessage;
use crate::store::message_writer::MessageWriter;
use crate::store::{Db, now_ms};
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
    /// Like `Flush`, and answered once every key in memory is merged into `message_keys`
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

/// Runs the writer. With a `window`, a batch stays open that long after its first message for
/// more to arrive (fewer, larger commits and fan-out rounds); without one it holds whatever
/// queued while the previous batch committed.
pub async fn run(
    db: Db,
    sink: MessageWriter,
    keys: Keyring,
    mut index: KeyIndex,
    window: Duration,
    mut rx: mpsc::Receiver<WriterMsg>,
    fanout: mpsc::Sender<FanOut>,
) {
    let mut seqs: HashMap<Uuid, i64> = HashMap::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = Checkpoints { last: tokio::time::Instant::now(), written: 0 };
    loop {
        index.poll(false);
        // With nothing to write, come back for the key merge and the checkpoint when due.
        let wake = match (index.next_work(), checkpoints.due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let received = match wake {
            Some(at) => tokio::select! {
                biased;
                msg = rx.recv() => msg,
                () = tokio::time::sleep_until(at) => {
                    checkpoints.run_if_due(&sink).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(first) = received else { break };
        let deadline = tokio::time::Instant::now() + window;
        let mut flushes = Vec::new();
        let mut merge_all = false;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Send(m) => batch.push(m),
                WriterMsg::Flush(done) => {
                    flushes.push(done);
                    break;
                }
                WriterMsg::MergeKeys(done) => {
                    flushes.push(done);
                    merge_all = true;
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
            checkpoints.written += batch.len();
            let out = write_batch(&db, &sink, &keys, &mut index, &mut seqs, std::mem::take(&mut batch)).await;
            for msg in out {
                if fanout.send(msg).await.is_err() {
                    return;
                }
            }
        }
        if merge_all {
            index.merge_all().await;
        }
        checkpoints.run_if_due(&sink).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
    index.merge_all().await;
    tracing::debug!("message writer stopped");
}

async fn write_batch(
    db: &Db,
    sink: &MessageWriter,
    keys: &Keyring,
    index: &mut KeyIndex,
    seqs: &mut HashMap<Uuid, i64>,
    batch: Vec<Outgoing>,
) -> Vec<FanOut> {
    let started = std::time::Instant::now();
    // 1. Idempotency: what memory knows of each key, once; keys the filter may have seen
    //    (retries, and a rare false positive) are looked up in one query; every other key is new.
    let known: Vec<Option<Known>> =
        batch.iter().map(|m| m.client_msg_id.as_deref().map(|c| index.known(m.sender_id, c))).collect();
    let maybe: Vec<(Uuid, &str)> = batch
        .iter()
        .zip(&known)
        .filter(|(_, k)| matches!(k, Some(Known::Maybe)))
        .filter_map(|(m, _)| m.client_msg_id.as_deref().map(|c| (m.sender_id, c)))
        .collect();
    let mut found = HashMap::new();
    if !maybe.is_empty() {
        metrics::counter!("landworld_chat_key_lookups_total").increment(maybe.len() as u64);
        match lookup(db, index, &maybe).await {
            Ok(stored) => found = stored,
            Err(e) => {
                tracing::error!(error = %e, "idempotency lookup failed");
                return vec![FanOut::Failed(fail_all(batch))];
            }
        }
    }

    // 2. Seqs, ids and sealing for the new ones; retries point at their original.
    let now = now_ms();
    let mut rows: Vec<NewMessage> = Vec::with_capacity(batch.len());
    let mut results: Vec<(Outgoing, Result<(Committed, bool), ChatError>)> = Vec::with_capacity(batch.len());
    let mut in_batch: HashMap<(Uuid, String), Committed> = HashMap::new();
    let mut touched: HashMap<Uuid, i64> = HashMap::new();
    for (m, known) in batch.into_iter().zip(known) {
        if let Some(cmid) = m.client_msg_id.as_deref() {
            let key = (m.sender_id, cmid.to_string());
            let prior = match known {
                Some(Known::Stored(c)) => Some(c),
                _ => in_batch.get(&key).or_else(|| found.get(&key)).cloned(),
            };
            if let Some(c) = prior {
                results.push((m, Ok((c, false))));
                continue;
            }
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
        if let Some(cmid) = &m.client_msg_id {
            in_batch.insert((m.sender_id, cmid.clone()), committed.clone());
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
        let count = rows.len();
        let result = sink.insert(rows, last_seqs).await;
        if let Err(e) = result {
            // Seqs of this batch were not used: forget them so the next batch starts from the
            // last committed seq.
            for room in touched.keys() {
                seqs.remove(room);
            }
            tracing::error!(error = %e, messages = count, "writing a message batch failed");
            let failed = results
                .into_iter()
                .map(|(outgoing, r)| Failed { outgoing, error: r.err().unwrap_or(ChatError::Unavailable) })
                .collect();
            return vec![FanOut::Failed(failed)];
        }
        metrics::histogram!("landworld_chat_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("landworld_chat_messages_stored_total").increment(count as u64);
    }
    let mut stored = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    for (outgoing, r) in results {
        match r {
            Ok((committed, deliver)) => {
                if deliver {
                    outgoing.room.last_seq.fetch_max(committed.seq, std::sync::atomic::Ordering::AcqRel);
                    index.committed(outgoing.sender_id, &committed);
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
    out
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

fn fail_all(batch: Vec<Outgoing>) -> Vec<Failed> {
    batch.into_iter().map(|outgoing| Failed { outgoing, error: ChatError::Unavailable }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
