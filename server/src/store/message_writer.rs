//! The chat writer's path into the database: one transaction per batch of messages.
//!
//! On SQLite the writer has a connection of its own, on a thread of its own (rusqlite, on the
//! same SQLite library as sqlx). A batch's transaction — `BEGIN IMMEDIATE`, one cached prepared
//! `INSERT` per message and per proximity recipient, the sessions' new last seqs, `COMMIT` —
//! runs there in one go: one hand-over between the writer task and that thread per batch,
//! instead of a round trip to a pooled connection's worker thread for every statement, and no
//! copy of each bound value into an owned argument list. At 50,000 messages/s: half the context
//! switches, ~10% less CPU and about half the ack p50 (docs/performance.md, "The writer's own
//! SQLite connection").
//!
//! The connection has the pool's settings: WAL, `synchronous=FULL` (a commit survives power
//! loss), foreign keys on, automatic checkpoints off (the writer checkpoints between its own
//! commits through [`MessageWriter::checkpoint`]), and a busy timeout for the moments another
//! connection (a read receipt, a new group) holds SQLite's single write lock. A job that panics
//! fails alone: its transaction rolls back and the next job reopens the connection.
//!
//! On PostgreSQL the batch goes through the pool ([`Db::insert_message_batch`]).

use std::path::Path;
use std::sync::mpsc as std_mpsc;

use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::chat::NewMessage;
use super::{Db, StoreError, StoreResult};

/// Where the chat writer's batches go.
#[derive(Debug)]
pub enum MessageWriter {
    Sqlite(SqliteWriter),
    Postgres(Db),
}

impl MessageWriter {
    /// SQLite: opens the writer's connection to the pool's database file and starts its thread.
    /// PostgreSQL: the pool.
    pub fn open(db: &Db) -> StoreResult<Self> {
        match db {
            Db::Sqlite(pool) => Ok(Self::Sqlite(SqliteWriter::open(pool.connect_options().get_filename())?)),
            Db::Postgres(_) => Ok(Self::Postgres(db.clone())),
        }
    }

    /// Inserts a batch of messages, their proximity recipients and the sessions' new last seqs
    /// in one transaction; returns once it committed (or failed, with nothing of it stored).
    pub async fn insert(&self, messages: Vec<NewMessage>, last_seqs: Vec<(Uuid, i64)>) -> StoreResult<()> {
        self.start_insert(messages, last_seqs).await
    }

    /// Starts [`Self::insert`] at once and returns its outcome to wait for: the transaction
    /// runs whether or not the future is polled (the chat writer prepares the next batch
    /// meanwhile).
    pub fn start_insert(
        &self,
        messages: Vec<NewMessage>,
        last_seqs: Vec<(Uuid, i64)>,
    ) -> BoxFuture<'static, StoreResult<()>> {
        match self {
            Self::Sqlite(w) => {
                let result = w.submit(Job::Insert { messages, last_seqs });
                Box::pin(async move { result?.await.map_err(|_| stopped())? })
            }
            Self::Postgres(db) => {
                let db = db.clone();
                let task = tokio::spawn(async move { db.insert_message_batch(&messages, &last_seqs).await });
                Box::pin(async move {
                    task.await
                        .map_err(|e| StoreError::Io(std::io::Error::other(format!("the batch's task failed: {e}"))))?
                })
            }
        }
    }

    /// SQLite: copies the write-ahead log into the database file (`PASSIVE`: never waits for
    /// readers; what it cannot copy yet stays for the next one). PostgreSQL: nothing.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        match self {
            Self::Sqlite(w) => w.call(Job::Checkpoint).await,
            Self::Postgres(_) => Ok(()),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Io(std::io::Error::other("the SQLite writer thread stopped"))
}

enum Job {
    Insert {
        messages: Vec<NewMessage>,
        last_seqs: Vec<(Uuid, i64)>,
    },
    Checkpoint,
    /// Tests: a job that panics half-way through a transaction.
    #[cfg(test)]
    PanicInTransaction,
}

type Request = (Job, oneshot::Sender<StoreResult<()>>);

/// The SQLite writer thread's handle. Dropping it ends the thread (after the job it runs, if
/// any) and closes the connection.
#[derive(Debug)]
pub struct SqliteWriter {
    jobs: Option<std_mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SqliteWriter {
    fn open(path: &Path) -> StoreResult<Self> {
        let conn = connect(path)?;
        let path = path.to_path_buf();
        let (jobs, rx) = std_mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(&path, conn, &rx))
            .map_err(StoreError::Io)?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread) })
    }

    async fn call(&self, job: Job) -> StoreResult<()> {
        self.submit(job)?.await.map_err(|_| stopped())?
    }

    /// Hands a job to the thread; the receiver gets its outcome.
    fn submit(&self, job: Job) -> StoreResult<oneshot::Receiver<StoreResult<()>>> {
        let (done, result) = oneshot::channel();
        self.jobs.as_ref().ok_or_else(stopped)?.send((job, done)).map_err(|_| stopped())?;
        Ok(result)
    }
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread: runs jobs until every handle is gone. A job that panics (a bug, in
/// rusqlite or here) fails alone: its transaction rolls back as the panic unwinds, the
/// connection is closed, and the next job reopens it, so one bad batch never leaves every later
/// message failing until a restart. While the file cannot be reopened, each job fails with that
/// error and the next one tries again.
fn serve(path: &Path, conn: Connection, jobs: &std_mpsc::Receiver<Request>) {
    let mut conn = Some(conn);
    while let Ok((job, done)) = jobs.recv() {
        let opened = match conn.take() {
            Some(c) => Ok(c),
            None => connect(path),
        };
        let mut c = match opened {
            Ok(c) => c,
            Err(e) => {
                let _ = done.send(Err(e));
                continue;
            }
        };
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut c, job))) {
            Ok(result) => {
                conn = Some(c);
                result
            }
            // `c` is not put back: it closes at the end of this turn, and the next job opens a new one.
            Err(_) => {
                tracing::error!("an SQLite job of the chat writer panicked; its transaction rolled back, reopening");
                Err(StoreError::Io(std::io::Error::other("the chat writer's SQLite job panicked")))
            }
        };
        let _ = done.send(result);
    }
}

fn run(conn: &mut Connection, job: Job) -> StoreResult<()> {
    match job {
        Job::Insert { messages, last_seqs } => insert(conn, &messages, &last_seqs),
        Job::Checkpoint => conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)").map_err(Into::into),
        #[cfg(test)]
        Job::PanicInTransaction => {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute("UPDATE chat_sessions SET last_seq = last_seq + 1000", [])?;
            panic!("a job panicking inside its transaction");
        }
    }
}

/// One batch in one transaction. Any error rolls it back (the transaction is dropped
/// uncommitted), so a failed batch leaves nothing behind.
fn insert(conn: &mut Connection, messages: &[NewMessage], last_seqs: &[(Uuid, i64)]) -> StoreResult<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut message = tx.prepare_cached(
            "INSERT INTO messages (id, session_id, seq, sender_id, client_msg_id, key_id, nonce, ciphertext, \
             pos_x, pos_y, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut recipient =
            tx.prepare_cached("INSERT INTO message_recipients (message_id, user_id) VALUES (?1, ?2)")?;
        for m in messages {
            message.execute(params![
                &m.id.as_bytes()[..],
                &m.session_id.as_bytes()[..],
                m.seq,
                &m.sender_id.as_bytes()[..],
                m.client_msg_id.as_deref(),
                m.key_id,
                &m.nonce[..],
                &m.ciphertext[..],
                m.pos.map(|p| p.0),
                m.pos.map(|p| p.1),
                m.created_at,
            ])?;
            for user in &m.recipients {
                recipient.execute(params![&m.id.as_bytes()[..], &user.as_bytes()[..]])?;
            }
        }
        let mut last_seq =
            tx.prepare_cached("UPDATE chat_sessions SET last_seq = ?1 WHERE id = ?2 AND last_seq < ?1")?;
        for (session, seq) in last_seqs {
            last_seq.execute(params![seq, &session.as_bytes()[..]])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The writer's connection, with the pool's settings.
fn connect(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(super::SQLITE_BUSY_TIMEOUT)?;
    // The pool created the file in WAL mode; asking again is a no-op that says so.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Io(std::io::Error::other(format!("the database is in {mode} mode, not WAL"))));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chat::Page;

    async fn setup(dir: &Path) -> anyhow::Result<(Db, Uuid, Uuid)> {
        crate::store::test_db_with_group(dir, "w.db").await
    }

    /// The seqs of the room's stored messages, oldest first.
    async fn stored_seqs(db: &Db, room: Uuid) -> anyhow::Result<Vec<i64>> {
        Ok(db.history(room, None, Page::latest(10)).await?.0.iter().map(|r| r.seq).collect())
    }

    fn message(room: Uuid, user: Uuid, seq: i64) -> NewMessage {
        NewMessage {
            id: Uuid::now_v7(),
            session_id: room,
            seq,
            sender_id: user,
            client_msg_id: Some(format!("c{seq}")),
            key_id: 3,
            nonce: vec![seq as u8; 12],
            ciphertext: format!("sealed {seq}").into_bytes(),
            pos: (seq % 2 == 0).then_some((seq as i32, -(seq as i32))),
            created_at: 1_000 + seq,
            recipients: if seq % 2 == 0 { vec![user] } else { Vec::new() },
        }
    }

    /// What the writer's own connection commits is what the pool (sqlx) reads back, field by
    /// field: the same UUID encoding, the proximity recipients, the session's last seq.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_written_on_the_writers_connection_reads_back_through_the_pool() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let writer = MessageWriter::open(&db)?;
        anyhow::ensure!(matches!(writer, MessageWriter::Sqlite(_)), "SQLite gets its own connection");
        let batch: Vec<NewMessage> = (1..=5).map(|seq| message(room, user, seq)).collect();
        writer.insert(batch.clone(), vec![(room, 5)]).await?;
        let (rows, more) = db.history(room, None, Page::latest(10)).await?;
        assert!(!more);
        assert_eq!(rows.len(), 5);
        for (row, m) in rows.iter().zip(&batch) {
            assert_eq!(
                (row.id, row.session_id, row.seq, row.sender_id, row.client_msg_id.as_deref(), row.key_id),
                (m.id, m.session_id, m.seq, m.sender_id, m.client_msg_id.as_deref(), m.key_id)
            );
            assert_eq!((&row.nonce, &row.ciphertext), (&m.nonce, &m.ciphertext));
            assert_eq!((row.pos_x, row.pos_y, row.created_at), (m.pos.map(|p| p.0), m.pos.map(|p| p.1), m.created_at));
            assert_eq!(row.sender_username, "tester");
            assert_eq!(db.is_recipient(m.id, user).await?, !m.recipients.is_empty());
        }
        assert_eq!(db.last_seq(room).await?, 5);
        drop(writer);
        db.close().await;
        Ok(())
    }

    /// A batch that fails part-way leaves nothing behind — not its earlier rows, not the last
    /// seq — and the writer goes on with the next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_is_rolled_back_whole_and_the_writer_goes_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let writer = MessageWriter::open(&db)?;
        let mut batch: Vec<NewMessage> = (1..=3).map(|seq| message(room, user, seq)).collect();
        // A room that does not exist: the foreign key refuses the third row.
        batch[2].session_id = Uuid::new_v4();
        let err = writer.insert(batch, vec![(room, 3)]).await;
        assert!(matches!(err, Err(StoreError::Sqlite(_))), "{err:?}");
        assert!(stored_seqs(&db, room).await?.is_empty(), "nothing of the batch is stored");
        assert_eq!(db.last_seq(room).await?, 0);

        writer.insert((1..=2).map(|seq| message(room, user, seq)).collect(), vec![(room, 2)]).await?;
        assert_eq!(stored_seqs(&db, room).await?, [1, 2]);
        assert_eq!(db.last_seq(room).await?, 2);
        drop(writer);
        db.close().await;
        Ok(())
    }

    /// A job that panics inside its transaction fails alone: what it wrote is rolled back, and
    /// the thread reopens its connection and goes on with the next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_panics_fails_alone_and_the_writer_goes_on() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let writer = MessageWriter::open(&db)?;
        writer.insert(vec![message(room, user, 1)], vec![(room, 1)]).await?;
        let MessageWriter::Sqlite(w) = &writer else { anyhow::bail!("sqlite expected") };
        let err = w.call(Job::PanicInTransaction).await;
        assert!(matches!(&err, Err(StoreError::Io(e)) if e.to_string().contains("panicked")), "{err:?}");
        assert_eq!(db.last_seq(room).await?, 1, "the panicking job's update was rolled back");

        for seq in 2..=3 {
            writer.insert(vec![message(room, user, seq)], vec![(room, seq)]).await?;
        }
        writer.checkpoint().await?;
        assert_eq!(stored_seqs(&db, room).await?, [1, 2, 3]);
        assert_eq!(db.last_seq(room).await?, 3);
        drop(writer);
        db.close().await;
        Ok(())
    }

    /// Checkpoints through the writer copy the log into the database file, so the log is
    /// reused instead of growing with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writers_checkpoints_keep_the_log_from_growing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let writer = MessageWriter::open(&db)?;
        let wal = dir.path().join("w.db-wal");
        let mut largest_wal = 0;
        let mut seq = 0;
        for _ in 0..40 {
            let batch: Vec<NewMessage> = (0..50)
                .map(|_| {
                    seq += 1;
                    let mut m = message(room, user, seq);
                    m.ciphertext = vec![7; 2_000];
                    m
                })
                .collect();
            writer.insert(batch, vec![(room, seq)]).await?;
            writer.checkpoint().await?;
            largest_wal = largest_wal.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        let written = 40 * 50 * 2_000;
        assert!(largest_wal < written / 4, "the log is reused: largest {largest_wal} of {written} bytes written");
        assert!(std::fs::metadata(dir.path().join("w.db"))?.len() >= written, "the database file holds the messages");
        drop(writer);
        db.close().await;
        Ok(())
    }
}
