//! Storage: one [`Db`] handle over SQLite (the embedded default) or PostgreSQL, chosen by the
//! database URL, with the migrations of `migrations/sqlite` and `migrations/postgres` embedded in
//! the binary and applied at start.
//!
//! Queries are written once: both backends accept `$N` placeholders, ids are UUIDs (BLOB on
//! SQLite, `uuid` on PostgreSQL) and times are Unix milliseconds. The [`on_pool!`] macro expands a
//! query body once per backend so each runs with its own typed driver (no `Any` driver overhead).
//! One file per aggregate: [`users`], [`lands`], [`positions`].

pub mod chat;
pub mod keys;
pub mod lands;
pub mod message_writer;
pub mod positions;
pub mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// Runs `$body` with `$pool` bound to the concrete pool of whichever backend `$db` is.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    Conflict,
    #[error("not found")]
    NotFound,
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("file error: {0}")]
    Io(std::io::Error),
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`].
    pub fn from_insert(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Db(err),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Statement sizes (rows, or keys of an `IN` list) a batch is split into, largest first (11
/// binds per message row, 4 per key row: far under SQLite's and PostgreSQL's parameter limits). Only
/// these few sizes ever reach the database, so each multi-row statement is prepared once and
/// then reused from the connection's statement cache, instead of preparing a new statement for
/// every batch size (a 256-row INSERT has 2,816 parameters to parse).
const CHUNK_SIZES: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `items` into consecutive chunks whose lengths are all in [`CHUNK_SIZES`].
pub(crate) fn fixed_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.iter().copied().find(|&s| s <= items.len())?;
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// The database handle: cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// How long an SQLite connection (the pool's, the key store's, the chat writer's own) waits for
/// another connection's write lock before its statement fails.
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies the SQLite write-ahead log back into the database file, in the background.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses the WAL size threshold
/// (1,000 pages): that commit then copies the log into the database file and fsyncs it, and every
/// message waiting on it waits too — the long tail of the write path's ack latency. Here
/// automatic checkpoints are off. While messages flow, the chat writer checkpoints between its
/// own commits ([`message_writer::MessageWriter::checkpoint`]), so a checkpoint's fsync of the database file never runs
/// while a commit's fsync of the log waits on the same disk. This task is the fallback for
/// everything else that writes (and for a quiet writer): a `PASSIVE` checkpoint every
/// [`CHECKPOINT_EVERY`] on a pooled connection; it never blocks writers, and finds little to do
/// when the writer has just checkpointed. Ends when the pool is closed.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        tick.tick().await;
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            if pool.is_closed() {
                break;
            }
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

impl Db {
    /// Connects (creating the SQLite file if needed). SQLite runs in WAL mode with
    /// `synchronous=FULL`, so a committed write survives power loss.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                // No checkpoint inside a committing transaction (see `checkpoints`).
                .pragma("wal_autocheckpoint", "0");
            let pool = SqlitePoolOptions::new().max_connections(8).min_connections(1).connect_with(opts).await?;
            tokio::spawn(checkpoints(pool.clone()));
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub async fn migrate(&self) -> StoreResult<()> {
        match self {
            Db::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        Ok(())
    }

    /// `SELECT 1`: is the database reachable?
    pub async fn ping(&self) -> StoreResult<()> {
        on_pool!(self, |p| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await)
    }
}

/// Tests: a migrated SQLite database `file` in `dir` with one user and one group session
/// holding them; returns the database, the user and the session.
#[cfg(test)]
pub(crate) async fn test_db_with_group(
    dir: &std::path::Path,
    file: &str,
) -> anyhow::Result<(Db, uuid::Uuid, uuid::Uuid)> {
    let db = Db::connect(&format!("sqlite://{}", dir.join(file).display())).await?;
    db.migrate().await?;
    let user = uuid::Uuid::new_v4();
    db.insert_user(&users::UserRow {
        id: user,
        username: "tester".into(),
        display_name: None,
        password_hash: "$argon2id$unused".into(),
        role: "user".into(),
        created_at: 0,
        last_seen: None,
    })
    .await?;
    let room = db.create_group("g", user, &[user], 0).await?.id;
    Ok((db, user, room))
}

/// A database URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 text of a Unix-milliseconds time.
pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Automatic checkpoints are off (they would run inside a commit): the background task
    /// copies the log into the database file, and the log is reused instead of growing with
    /// everything ever written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sqlite_log_is_checkpointed_in_the_background() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wal.db");
        let db = Db::connect(&format!("sqlite://{}", path.display())).await?;
        let Db::Sqlite(pool) = &db else { anyhow::bail!("sqlite expected") };
        sqlx::query("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)").execute(pool).await?;
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let wal = dir.path().join("wal.db-wal");
        let round = 512 * 1024;
        let mut largest_wal = 0;
        for _ in 0..12 {
            let mut tx = pool.begin().await?;
            for _ in 0..8 {
                sqlx::query("INSERT INTO blobs (data) VALUES (randomblob($1))")
                    .bind(round as i64 / 8)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            largest_wal = largest_wal.max(size(&wal));
            tokio::time::sleep(CHECKPOINT_EVERY * 2).await;
        }
        let written = 12 * round;
        assert!(size(&path) >= written, "the database file holds what was written: {} of {written}", size(&path));
        assert!(largest_wal < written / 3, "the log is reused, not grown: {largest_wal} of {written} bytes written");
        db.close().await;
        Ok(())
    }

    #[test]
    fn batches_split_into_the_few_cached_statement_sizes() {
        for n in [0usize, 1, 3, 4, 5, 17, 255, 256, 257, 500, 4096] {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = fixed_chunks(&items).collect();
            assert!(
                chunks.iter().all(|c| CHUNK_SIZES.contains(&c.len())),
                "n={n}: {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
            let flat: Vec<usize> = chunks.concat();
            assert_eq!(flat, items, "n={n}: every item once, in order");
        }
        assert_eq!(fixed_chunks(&[0u8; 500]).map(<[u8]>::len).collect::<Vec<_>>(), [256, 128, 64, 32, 16, 4]);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
