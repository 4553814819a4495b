//! The key store: every stored message's idempotency key `(client_msg_id, sender)`, with the
//! message it stored, and per session the seq up to which every message's key is here (its
//! *mark*). It is written only in sorted batches by the chat writer's merges
//! ([`crate::chat::keys`]) and everything in it can be rebuilt from `messages`.
//!
//! On PostgreSQL it is two tables of the database itself (migrations/postgres/0003), written on
//! pooled connections beside the writer's. SQLite has one writer per file, so there it is a file
//! of its own next to the database (`<name>-keys.db`, migrations/sqlite-keys): merges run beside
//! the message commits instead of queueing behind them, and it is never fsynced while the server
//! runs (see [`KeyStore::open`] for why that is safe).

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use super::{Db, StoreError, StoreResult, fixed_chunks, on_pool};

static SQLITE_KEY_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite-keys");

/// The fixed SipHash key of [`key_hash`] (stored hashes must not change between runs).
const HASH_KEY: (u64, u64) = (0x6c61_6e64_776f_726c, 0x6469_6465_6d70_6f74);

/// The stored hash of a key: SipHash-1-3 of the sender's bytes and the client's id.
pub fn key_hash(sender: Uuid, client_msg_id: &str) -> i64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(HASH_KEY.0, HASH_KEY.1);
    h.write(sender.as_bytes());
    h.write(client_msg_id.as_bytes());
    h.finish() as i64
}

/// An idempotency key on its way into the store.
#[derive(Clone, Copy, Debug)]
pub struct KeyRow<'a> {
    pub key_hash: i64,
    pub sender_id: Uuid,
    pub client_msg_id: &'a str,
    pub message_id: Uuid,
}

/// A stored key and the message it stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub sender_id: Uuid,
    pub client_msg_id: String,
    pub message_id: Uuid,
}

/// Where the keys live: see the module documentation.
#[derive(Clone, Debug)]
pub struct KeyStore(Db);

/// The key store file of an SQLite database file: `data/landworld.db` → `data/landworld-keys.db`.
pub fn sqlite_key_path(db_file: &std::path::Path) -> PathBuf {
    let stem = db_file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "landworld".into());
    db_file.with_file_name(format!("{stem}-keys.db"))
}

/// The state file's content after a clean close.
const CLEAN: &str = "clean";

/// The file beside the key store that says who has it open: `clean`, or the boot id of the
/// machine run that opened it.
fn state_path(key_file: &std::path::Path) -> PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_os_string();
    name.push(".state");
    key_file.with_file_name(name)
}

/// This machine run's boot id (Linux); elsewhere one per process, so any unclean stop counts as
/// a possible power loss.
fn boot_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| format!("process-{}", Uuid::new_v4()))
    })
    .clone()
}

/// Writes `content` to `path` and fsyncs it (and its directory).
fn write_synced(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether the key store file at `path` can be trusted: closed cleanly, or left open by a
/// process of this same machine run (a process crash loses nothing the kernel has).
fn trustworthy(path: &std::path::Path) -> bool {
    match std::fs::read_to_string(state_path(path)) {
        Ok(state) => state == CLEAN || state == boot_id(),
        Err(_) => !path.exists(),
    }
}

impl KeyStore {
    /// Opens (and migrates) the key store of `db`.
    ///
    /// SQLite: the file runs with `synchronous=OFF`: nothing of it is ever fsynced while the
    /// server runs, so its writes never queue the message commits' fsyncs behind them on the
    /// disk (measured: the difference between an ack p99 over 20 ms and under 10 ms at 50,000
    /// messages/s, docs/performance.md). A process crash loses nothing that way; a power loss or
    /// a kernel crash could tear the file. So a state file records the boot id of the run that
    /// has it open, and a clean close (which fsyncs the file) records `clean`. A file left open
    /// by an earlier boot of the machine is deleted here, and the key store is rebuilt from
    /// `messages` ([`crate::chat::keys::KeyIndex::load`]).
    pub async fn open(db: &Db) -> StoreResult<Self> {
        match db {
            Db::Postgres(_) => Ok(Self(db.clone())),
            Db::Sqlite(main) => {
                let path = sqlite_key_path(main.connect_options().get_filename());
                if !trustworthy(&path) {
                    tracing::warn!(path = %path.display(), "the key store was not closed before the machine restarted: rebuilding it");
                    for suffix in ["", "-wal", "-shm"] {
                        let mut f = path.clone().into_os_string();
                        f.push(suffix);
                        match std::fs::remove_file(&f) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(StoreError::Io(e)),
                        }
                    }
                }
                write_synced(&state_path(&path), &boot_id()).map_err(StoreError::Io)?;
                let url = format!("sqlite://{}", path.display());
                let opts = SqliteConnectOptions::from_str(&url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Off)
                    .busy_timeout(super::SQLITE_BUSY_TIMEOUT);
                let pool = SqlitePoolOptions::new().max_connections(2).min_connections(1).connect_with(opts).await?;
                SQLITE_KEY_MIGRATIONS.run(&pool).await?;
                Ok(Self(Db::Sqlite(pool)))
            }
        }
    }

    /// Which of these `(sender, client_msg_id)` keys are stored, and the messages they stored.
    pub async fn lookup(&self, keys: &[(Uuid, &str)]) -> StoreResult<Vec<StoredKey>> {
        let mut found = Vec::new();
        for chunk in fixed_chunks(keys) {
            on_pool!(&self.0, |p| {
                let mut qb = sqlx::QueryBuilder::new(
                    "SELECT sender_id, client_msg_id, message_id FROM message_keys WHERE key_hash IN (",
                );
                let mut sep = qb.separated(", ");
                for (sender, cmid) in chunk {
                    sep.push_bind(key_hash(*sender, cmid));
                }
                qb.push(")");
                for r in qb.build().fetch_all(p).await? {
                    let k = StoredKey {
                        sender_id: r.try_get("sender_id")?,
                        client_msg_id: r.try_get("client_msg_id")?,
                        message_id: r.try_get("message_id")?,
                    };
                    if chunk.iter().any(|(s, c)| *s == k.sender_id && *c == k.client_msg_id) {
                        found.push(k);
                    }
                }
            });
        }
        Ok(found)
    }

    /// Every session's mark.
    pub async fn marks(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        on_pool!(&self.0, |p| {
            let rows = sqlx::query("SELECT session_id, seq FROM message_keys_merged").fetch_all(p).await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get("session_id")?, r.try_get("seq")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    pub async fn count(&self) -> StoreResult<i64> {
        on_pool!(&self.0, |p| {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM message_keys").fetch_one(p).await?;
            Ok(row.try_get("n")?)
        })
    }

    /// Calls `visit` with every stored key, streamed; returns how many.
    pub async fn each(&self, mut visit: impl FnMut(Uuid, &str)) -> StoreResult<u64> {
        use futures_util::TryStreamExt;
        let mut n = 0;
        on_pool!(&self.0, |p| {
            let mut rows = sqlx::query("SELECT sender_id, client_msg_id FROM message_keys").fetch(p);
            while let Some(r) = rows.try_next().await? {
                let sender: Uuid = r.try_get("sender_id")?;
                let cmid: &str = r.try_get("client_msg_id")?;
                visit(sender, cmid);
                n += 1;
            }
        });
        Ok(n)
    }

    /// Writes keys (sorted by key, so they land on neighbouring pages) and moves the sessions'
    /// marks forward, in one transaction. Keys already stored (a merge redone after a crash)
    /// are skipped; marks never move back.
    pub async fn merge(&self, rows: &[KeyRow<'_>], marks: &[(Uuid, i64)]) -> StoreResult<()> {
        on_pool!(&self.0, |p| {
            let mut tx = p.begin().await?;
            for chunk in fixed_chunks(rows) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO message_keys (key_hash, sender_id, client_msg_id, message_id) ",
                );
                qb.push_values(chunk, |mut b, k| {
                    b.push_bind(k.key_hash).push_bind(k.sender_id).push_bind(k.client_msg_id).push_bind(k.message_id);
                });
                qb.push(" ON CONFLICT (key_hash, sender_id, client_msg_id) DO NOTHING");
                qb.build().execute(&mut *tx).await?;
            }
            for (session, seq) in marks {
                sqlx::query(
                    "INSERT INTO message_keys_merged (session_id, seq) VALUES ($1, $2) ON CONFLICT (session_id) \
                     DO UPDATE SET seq = CASE WHEN excluded.seq > message_keys_merged.seq \
                     THEN excluded.seq ELSE message_keys_merged.seq END",
                )
                .bind(session)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes the keys of messages created before `cutoff` (Unix ms; retention). Message ids
    /// are UUIDv7, time first, so the cutoff is an id: every id made before it sorts below it.
    /// (A key whose message is gone otherwise counts as not stored: see [`crate::chat::keys`].)
    pub async fn purge_before(&self, cutoff: i64) -> StoreResult<u64> {
        let first_id = first_id_at(cutoff);
        on_pool!(&self.0, |p| {
            let done = sqlx::query("DELETE FROM message_keys WHERE message_id < $1").bind(first_id).execute(p).await?;
            Ok(done.rows_affected())
        })
    }

    /// SQLite: closes the file and marks it clean (see [`KeyStore::open`]). PostgreSQL: the
    /// tables close with the database.
    pub async fn close(&self) {
        let Db::Sqlite(pool) = &self.0 else { return };
        let path = pool.connect_options().get_filename().to_path_buf();
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(pool).await {
            tracing::warn!(error = %e, "checkpointing the key store at close failed");
        }
        pool.close().await;
        // Nothing of the file is left only in the page cache: the next start may trust it
        // whatever happens to the machine in between.
        let synced = std::fs::File::open(&path).and_then(|f| f.sync_all());
        match synced.and_then(|()| write_synced(&state_path(&path), CLEAN)) {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "marking the key store clean failed; it is rebuilt at the next start"),
        }
    }
}

/// The lowest UUIDv7 of the millisecond `ms` (Unix).
fn first_id_at(ms: i64) -> Uuid {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&ms.max(0).to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXED: i64 = -6_555_549_013_926_649_593;

    #[test]
    fn key_hashes_are_fixed_and_tell_senders_apart() {
        let a = Uuid::from_u128(1);
        assert_eq!(key_hash(a, "k-1"), key_hash(a, "k-1"));
        assert_ne!(key_hash(a, "k-1"), key_hash(Uuid::from_u128(2), "k-1"));
        // Stored hashes must survive an upgrade: this value may never change.
        assert_eq!(key_hash(a, "k-1"), FIXED);
    }

    #[test]
    fn the_purge_cutoff_is_the_first_id_of_that_millisecond() {
        let ms = 1_700_000_000_123i64;
        let at =
            |ms: i64| uuid::Timestamp::from_unix(uuid::NoContext, (ms / 1000) as u64, ((ms % 1000) * 1_000_000) as u32);
        for _ in 0..100 {
            assert!(first_id_at(ms) <= Uuid::new_v7(at(ms)), "ids of that millisecond are kept");
            assert!(Uuid::new_v7(at(ms - 1)) < first_id_at(ms), "ids of the millisecond before are purged");
        }
    }

    #[test]
    fn the_key_file_sits_next_to_the_database() {
        assert_eq!(sqlite_key_path("data/landworld.db".as_ref()), PathBuf::from("data/landworld-keys.db"));
        assert_eq!(sqlite_key_path("/x/chat".as_ref()), PathBuf::from("/x/chat-keys.db"));
    }
}
