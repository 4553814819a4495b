//! The key store: every stored message's idempotency key `(client_msg_id, sender)`, with the
//! message it stored, and per session the seq up to which every message's key is here (its
//! *mark*). It is written only by the chat writer's merges ([`crate::chat::keys`]) and
//! everything in it can be rebuilt from `messages`.
//!
//! **Sorted runs.** The keys are random, so one table keyed by them takes each merge's keys all
//! over its tree: once the table is much larger than a merge, every key dirties a page of its
//! own, and the merges' cost grows with the store (at 50,000 keys/s: 0.8 s of CPU per 10 s
//! after 10 s, 4.4 s after a minute, 38% of a core after three, against the half core their
//! pacing allows; docs/performance.md, "Idempotency keys in sorted runs"). So the store is a log-structured merge tree made of
//! tables: each merge writes a new *run*, a table of its own (`message_key_run_<n>`) filled in
//! key order, which appends, each page written about once; and once [`FANIN`] runs of one size
//! tier are live, a compaction merges them, in key order, into one run of the next tier. A key is
//! rewritten about once per tier (a handful in all), always sequentially, and the cost per key
//! stays flat however large the store grows. A lookup reads every live run (a few dozen at most,
//! each probed by its primary key, up to 64 in one query); lookups are rare, as the writer's Bloom filter
//! rules out nearly every new key. `message_key_runs` lists the live runs: a run goes live (and
//! the runs it replaces go) in one transaction, and a run table not in the list is dropped at
//! the next open.
//!
//! On PostgreSQL the runs are tables of the database itself (migrations/postgres/0003, 0004),
//! written on pooled connections beside the writer's. SQLite has one writer per file, so there
//! they live in a file of their own next to the database (`<name>-keys.db`,
//! migrations/sqlite-keys): merges run beside the message commits instead of queueing behind
//! them, and it is never fsynced while the server runs (see [`KeyStore::open`] for why that is
//! safe).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

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

/// A sorted run of the key store: a table of its own, `message_key_run_<id>`, and how many keys
/// it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: i64,
    pub keys: i64,
}

/// Runs are compacted once this many of one tier are live; a run's tier is `log_FANIN(keys)`.
/// So a key is rewritten about once per tier it climbs (at 50,000 keys/s: 1 s epochs of 50,000
/// keys, then 800,000, then 12.8 M…), and a lookup probes at most `FANIN - 1` runs per tier.
pub const FANIN: i64 = 16;
/// Hashes bound in one lookup query at most…
const LOOKUP_PARAMS: usize = 16_384;
/// …and runs read by it.
const LOOKUP_RUNS: usize = 64;
/// Keys per compaction transaction (on average: slices are ranges of the hash space).
const COMPACT_SLICE: i64 = 8192;

fn tier(keys: i64) -> u32 {
    if keys < FANIN { 0 } else { keys.ilog(FANIN) }
}

/// SQL text with a run's table name in it: the name is made of an integer of ours
/// ([`run_table`]), nothing from outside.
fn audited(sql: &str) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(sql)
}

fn run_table(run: i64) -> String {
    format!("message_key_run_{run}")
}

/// The `n` consecutive, inclusive ranges that split the key hashes (all of `i64`) evenly.
fn hash_ranges(n: i64) -> impl Iterator<Item = (i64, i64)> {
    let n = i128::from(n.max(1));
    let span = 1i128 << 64;
    let bound = move |i: i128| (i128::from(i64::MIN) + span * i / n) as i64;
    (0..n).map(move |i| (bound(i), if i + 1 == n { i64::MAX } else { bound(i + 1) - 1 }))
}

/// The live runs, and the lock that keeps a compaction from dropping a run a lookup reads.
#[derive(Debug)]
struct Shared {
    runs: tokio::sync::RwLock<Vec<Run>>,
    next_run: AtomicI64,
    /// Held by the compaction (one at a time) and by the retention purge.
    maintenance: tokio::sync::Mutex<()>,
    closing: AtomicBool,
}

/// Where the keys live: see the module documentation.
#[derive(Clone, Debug)]
pub struct KeyStore {
    db: Db,
    shared: Arc<Shared>,
}

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
    ///
    /// Run tables that are not live (a merge or a compaction cut short) are dropped.
    pub async fn open(db: &Db) -> StoreResult<Self> {
        let db = match db {
            Db::Postgres(_) => db.clone(),
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
                // One connection each for the writer's merge, a compaction and the writer's lookups,
                // so a lookup never waits for a slice of either.
                let pool = SqlitePoolOptions::new().max_connections(3).min_connections(1).connect_with(opts).await?;
                SQLITE_KEY_MIGRATIONS.run(&pool).await?;
                Db::Sqlite(pool)
            }
        };
        let runs: Vec<Run> = on_pool!(&db, |p| {
            sqlx::query("SELECT run, keys FROM message_key_runs ORDER BY run")
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| Ok(Run { id: r.try_get("run")?, keys: r.try_get("keys")? }))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        let list = match &db {
            Db::Sqlite(_) => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'message\\_key\\_run\\_%' ESCAPE '\\'"
            }
            Db::Postgres(_) => {
                "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema() \
                 AND tablename LIKE 'message\\_key\\_run\\_%' ESCAPE '\\'"
            }
        };
        let tables: Vec<String> = on_pool!(&db, |p| {
            sqlx::query(list)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(|r| r.try_get("name"))
                .collect::<Result<Vec<String>, sqlx::Error>>()?
        });
        let mut last = runs.iter().map(|r| r.id).max().unwrap_or(0);
        let mut ids = Vec::new();
        for table in tables {
            let Some(id) = table.strip_prefix("message_key_run_").and_then(|n| n.parse::<i64>().ok()) else {
                continue;
            };
            last = last.max(id);
            ids.push(id);
            if !runs.iter().any(|r| r.id == id) {
                tracing::info!(table, "dropping a key run that never went live");
                drop_run_table(&db, id).await?;
            }
        }
        // A live run whose table is gone (dropped by hand, or a commit reported failed that went
        // through): its keys are not here, but the marks say they are. Forget the run and every
        // mark, so that the keys are read back from `messages` (a key stored twice is harmless:
        // a compaction keeps it once).
        let (runs, missing): (Vec<Run>, Vec<Run>) = runs.into_iter().partition(|r| ids.contains(&r.id));
        if !missing.is_empty() {
            tracing::warn!(runs = ?missing, "key runs without their tables: reading every key back from messages");
            on_pool!(&db, |p| {
                let mut tx = p.begin().await?;
                for run in &missing {
                    sqlx::query("DELETE FROM message_key_runs WHERE run = $1").bind(run.id).execute(&mut *tx).await?;
                }
                sqlx::query("DELETE FROM message_keys_merged").execute(&mut *tx).await?;
                tx.commit().await?;
            });
        }
        Ok(Self {
            db,
            shared: Arc::new(Shared {
                runs: tokio::sync::RwLock::new(runs),
                next_run: AtomicI64::new(last + 1),
                maintenance: tokio::sync::Mutex::new(()),
                closing: AtomicBool::new(false),
            }),
        })
    }

    /// The live runs, oldest first.
    pub async fn runs(&self) -> Vec<Run> {
        self.shared.runs.read().await.clone()
    }

    /// Keys in the live runs, as their catalog counts them.
    pub async fn keys(&self) -> i64 {
        self.shared.runs.read().await.iter().map(|r| r.keys).sum()
    }

    /// Which of these `(sender, client_msg_id)` keys are stored, and the messages they stored:
    /// one query per chunk of keys, over every live run.
    pub async fn lookup(&self, keys: &[(Uuid, &str)]) -> StoreResult<Vec<StoredKey>> {
        let runs = self.shared.runs.read().await;
        let mut found = Vec::new();
        if runs.is_empty() {
            return Ok(found);
        }
        for chunk in fixed_chunks(keys) {
            // At most LOOKUP_PARAMS hashes and LOOKUP_RUNS runs per query (SQLite allows
            // 32,766 parameters and 500 terms of a compound SELECT).
            let per_query = (LOOKUP_PARAMS / chunk.len()).clamp(1, LOOKUP_RUNS);
            for group in runs.chunks(per_query) {
                on_pool!(&self.db, |p| {
                    let mut qb = sqlx::QueryBuilder::new("");
                    for (i, run) in group.iter().enumerate() {
                        if i > 0 {
                            qb.push(" UNION ALL ");
                        }
                        qb.push(format_args!(
                            "SELECT sender_id, client_msg_id, message_id FROM {} WHERE key_hash IN (",
                            run_table(run.id)
                        ));
                        let mut sep = qb.separated(", ");
                        for (sender, cmid) in chunk {
                            sep.push_bind(key_hash(*sender, cmid));
                        }
                        qb.push(")");
                    }
                    for r in qb.build().fetch_all(p).await? {
                        let k = StoredKey {
                            sender_id: r.try_get("sender_id")?,
                            client_msg_id: r.try_get("client_msg_id")?,
                            message_id: r.try_get("message_id")?,
                        };
                        if chunk.iter().any(|(s, c)| *s == k.sender_id && *c == k.client_msg_id) && !found.contains(&k)
                        {
                            found.push(k);
                        }
                    }
                });
            }
        }
        Ok(found)
    }

    /// Every session's mark.
    pub async fn marks(&self) -> StoreResult<Vec<(Uuid, i64)>> {
        on_pool!(&self.db, |p| {
            let rows = sqlx::query("SELECT session_id, seq FROM message_keys_merged").fetch_all(p).await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get("session_id")?, r.try_get("seq")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(Into::into)
        })
    }

    /// Keys stored, counted row by row in every live run.
    pub async fn count(&self) -> StoreResult<i64> {
        let runs = self.shared.runs.read().await;
        let mut n = 0;
        for run in runs.iter() {
            let sql = format!("SELECT COUNT(*) AS n FROM {}", run_table(run.id));
            n += on_pool!(&self.db, |p| sqlx::query(audited(&sql)).fetch_one(p).await?.try_get::<i64, _>("n")?);
        }
        Ok(n)
    }

    /// Calls `visit` with every stored key, streamed; returns how many.
    pub async fn each(&self, mut visit: impl FnMut(Uuid, &str)) -> StoreResult<u64> {
        use futures_util::TryStreamExt;
        let runs = self.shared.runs.read().await;
        let mut n = 0;
        for run in runs.iter() {
            let sql = format!("SELECT sender_id, client_msg_id FROM {}", run_table(run.id));
            on_pool!(&self.db, |p| {
                let mut rows = sqlx::query(audited(&sql)).fetch(p);
                while let Some(r) = rows.try_next().await? {
                    let sender: Uuid = r.try_get("sender_id")?;
                    let cmid: &str = r.try_get("client_msg_id")?;
                    visit(sender, cmid);
                    n += 1;
                }
            });
        }
        Ok(n)
    }

    /// Writes keys as one new run and moves the sessions' marks forward (marks never move
    /// back); with no keys, only the marks. At start-up ([`crate::chat::keys::KeyIndex::load`])
    /// and in tests; the writer's merges write theirs in slices ([`Self::add_run`]).
    pub async fn merge(&self, rows: &[KeyRow<'_>], marks: &[(Uuid, i64)]) -> StoreResult<()> {
        if rows.is_empty() {
            return self.go_live(None, &[], marks).await;
        }
        self.add_run(std::iter::once(rows.to_vec()), marks, false).await
    }

    /// Writes a new run, one transaction per slice (slices sorted by `(key_hash, sender_id,
    /// client_msg_id)` and in order append), and makes it live with the marks
    /// ([`Self::go_live`]). `paced`: after each slice but the last, a pause as long as it took,
    /// so the run never holds a core the message commits need for long. If any step fails, the
    /// run is dropped and nothing of it was live.
    pub async fn add_run<'a>(
        &self,
        slices: impl IntoIterator<Item = Vec<KeyRow<'a>>>,
        marks: &[(Uuid, i64)],
        paced: bool,
    ) -> StoreResult<()> {
        let run = self.begin_run().await?;
        let written = async {
            let mut keys = 0;
            let mut slices = slices.into_iter().peekable();
            while let Some(rows) = slices.next() {
                let started = std::time::Instant::now();
                keys += self.fill_run(run, &rows).await?;
                if paced && slices.peek().is_some() {
                    tokio::time::sleep(started.elapsed()).await;
                }
            }
            self.go_live(Some(Run { id: run, keys }), &[], marks).await
        }
        .await;
        if written.is_err() {
            self.abandon_run(run).await;
        }
        written
    }

    /// Creates an empty run, not live yet: lookups do not see it until it goes live
    /// ([`Self::add_run`]).
    pub async fn begin_run(&self) -> StoreResult<i64> {
        let run = self.shared.next_run.fetch_add(1, Ordering::Relaxed);
        let ddl = match &self.db {
            Db::Sqlite(_) => format!(
                "CREATE TABLE {} (key_hash INTEGER NOT NULL, sender_id BLOB NOT NULL, client_msg_id TEXT NOT NULL, \
                 message_id BLOB NOT NULL, PRIMARY KEY (key_hash, sender_id, client_msg_id)) WITHOUT ROWID",
                run_table(run)
            ),
            Db::Postgres(_) => format!(
                "CREATE TABLE {} (key_hash BIGINT NOT NULL, sender_id UUID NOT NULL, client_msg_id TEXT NOT NULL, \
                 message_id UUID NOT NULL, PRIMARY KEY (key_hash, sender_id, client_msg_id))",
                run_table(run)
            ),
        };
        on_pool!(&self.db, |p| {
            sqlx::query(audited(&ddl)).execute(p).await?;
        });
        Ok(run)
    }

    /// Adds keys to a run that is not live yet, in one transaction. Keys sorted by
    /// `(key_hash, sender_id, client_msg_id)` and added in order are appended: each page of the
    /// run is written about once. Returns how many were new to the run.
    pub async fn fill_run(&self, run: i64, rows: &[KeyRow<'_>]) -> StoreResult<i64> {
        let table = run_table(run);
        let mut added = 0;
        on_pool!(&self.db, |p| {
            let mut tx = p.begin().await?;
            for chunk in fixed_chunks(rows) {
                let mut qb = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO {table} (key_hash, sender_id, client_msg_id, message_id) "
                ));
                qb.push_values(chunk, |mut b, k| {
                    b.push_bind(k.key_hash).push_bind(k.sender_id).push_bind(k.client_msg_id).push_bind(k.message_id);
                });
                qb.push(" ON CONFLICT (key_hash, sender_id, client_msg_id) DO NOTHING");
                added += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(i64::try_from(added).unwrap_or(i64::MAX))
    }

    /// The catalog's one kind of change, in one transaction: `new` goes live, the runs it
    /// `replaces` go, the sessions' marks move. So a run's keys and the marks that say they
    /// are here appear together, and a compaction's run and its inputs never both count. Then
    /// the same for lookups, which read the runs from memory (until then the old ones, or the
    /// writer's memory for a new run's keys), and then the replaced runs' tables are dropped:
    /// the write lock waits for the lookups under way, so none is reading them. A crash in
    /// between leaves those tables to the next open.
    async fn go_live(&self, new: Option<Run>, replaces: &[Run], marks: &[(Uuid, i64)]) -> StoreResult<()> {
        on_pool!(&self.db, |p| {
            let mut tx = p.begin().await?;
            if let Some(run) = new {
                sqlx::query("INSERT INTO message_key_runs (run, keys) VALUES ($1, $2)")
                    .bind(run.id)
                    .bind(run.keys)
                    .execute(&mut *tx)
                    .await?;
            }
            for old in replaces {
                sqlx::query("DELETE FROM message_key_runs WHERE run = $1").bind(old.id).execute(&mut *tx).await?;
            }
            for (session, seq) in marks {
                sqlx::query(MOVE_MARK).bind(session).bind(seq).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        if new.is_some() || !replaces.is_empty() {
            let mut runs = self.shared.runs.write().await;
            runs.retain(|r| !replaces.iter().any(|old| old.id == r.id));
            runs.extend(new);
        }
        for old in replaces {
            self.abandon_run(old.id).await;
        }
        Ok(())
    }

    /// Drops a run's table: one that will never go live (its merge failed), or one no longer
    /// live (compacted, or purged empty). One left behind is dropped at the next open.
    pub async fn abandon_run(&self, run: i64) {
        if let Err(e) = drop_run_table(&self.db, run).await {
            tracing::warn!(error = %e, run, "dropping a key run table failed; it is dropped at the next start");
        }
    }

    /// The runs the next compaction merges: the oldest [`FANIN`] runs of the lowest tier that
    /// has that many.
    fn due(runs: &[Run]) -> Option<Vec<Run>> {
        let mut tiers: std::collections::BTreeMap<u32, Vec<Run>> = std::collections::BTreeMap::new();
        for run in runs {
            tiers.entry(tier(run.keys)).or_default().push(*run);
        }
        tiers.into_values().find(|t| t.len() >= FANIN as usize).map(|mut t| {
            t.sort_by_key(|r| r.id);
            t.truncate(FANIN as usize);
            t
        })
    }

    /// Compacts while some tier holds [`FANIN`] runs: their keys are merged, in order, into one
    /// new run, slice by slice (each slice a range of the hash space and a transaction of
    /// about [`COMPACT_SLICE`] keys, followed by a pause as long as it took, so the compaction
    /// never holds a core for long). The new run replaces the old ones in the catalog in one
    /// transaction and then for lookups, which read the old ones until then; the old tables
    /// are dropped after that. Returns how many compactions ran (0
    /// when another one is running). Stops early, leaving its unfinished run to be dropped at
    /// the next open, once [`Self::close`] is called.
    pub async fn compact(&self) -> StoreResult<usize> {
        let Ok(_maintenance) = self.shared.maintenance.try_lock() else { return Ok(0) };
        let mut done = 0;
        loop {
            if self.shared.closing.load(Ordering::Relaxed) {
                return Ok(done);
            }
            let Some(inputs) = Self::due(&self.shared.runs.read().await) else { return Ok(done) };
            let run = self.begin_run().await?;
            match self.compact_into(run, &inputs).await {
                Ok(true) => done += 1,
                Ok(false) => return Ok(done),
                Err(e) => {
                    self.abandon_run(run).await;
                    return Err(e);
                }
            }
        }
    }

    /// One compaction of `inputs` into the new run `run`; false if the store is closing.
    async fn compact_into(&self, run: i64, inputs: &[Run]) -> StoreResult<bool> {
        let total: i64 = inputs.iter().map(|r| r.keys).sum();
        let union = inputs
            .iter()
            .map(|r| {
                format!(
                    "SELECT key_hash, sender_id, client_msg_id, message_id FROM {} WHERE key_hash BETWEEN $1 AND $2",
                    run_table(r.id)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let slice = format!(
            "INSERT INTO {} (key_hash, sender_id, client_msg_id, message_id) \
             SELECT key_hash, sender_id, client_msg_id, message_id FROM ({union}) AS u WHERE true \
             ORDER BY key_hash, sender_id, client_msg_id ON CONFLICT (key_hash, sender_id, client_msg_id) DO NOTHING",
            run_table(run)
        );
        let mut keys = 0i64;
        for (lo, hi) in hash_ranges(total / COMPACT_SLICE + 1) {
            if self.shared.closing.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let started = std::time::Instant::now();
            let added = on_pool!(&self.db, |p| sqlx::query(audited(&slice))
                .bind(lo)
                .bind(hi)
                .execute(p)
                .await?
                .rows_affected());
            keys += i64::try_from(added).unwrap_or(i64::MAX);
            tokio::time::sleep(started.elapsed()).await;
        }
        self.go_live(Some(Run { id: run, keys }), inputs, &[]).await?;
        metrics::counter!("landworld_chat_key_compactions_total").increment(1);
        Ok(true)
    }

    /// Deletes the keys of messages created before `cutoff` (Unix ms; retention). Message ids
    /// are UUIDv7, time first, so the cutoff is an id: every id made before it sorts below it.
    /// (A key whose message is gone otherwise counts as not stored: see [`crate::chat::keys`].)
    /// A run left empty is dropped. Waits for a running compaction.
    pub async fn purge_before(&self, cutoff: i64) -> StoreResult<u64> {
        let first_id = first_id_at(cutoff);
        let _maintenance = self.shared.maintenance.lock().await;
        // Runs only come (merges) while the maintenance lock is held, never go: the snapshot's
        // tables all exist, and lookups read them beside the deletes.
        let mut purged = 0u64;
        let mut left = Vec::new();
        for run in self.runs().await {
            let table = run_table(run.id);
            let keys = on_pool!(&self.db, |p| {
                let mut tx = p.begin().await?;
                let gone = sqlx::query(audited(&format!("DELETE FROM {table} WHERE message_id < $1")))
                    .bind(first_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let keys = (run.keys - i64::try_from(gone).unwrap_or(i64::MAX)).max(0);
                if keys == 0 {
                    sqlx::query("DELETE FROM message_key_runs WHERE run = $1").bind(run.id).execute(&mut *tx).await?;
                } else if gone > 0 {
                    sqlx::query("UPDATE message_key_runs SET keys = $1 WHERE run = $2")
                        .bind(keys)
                        .bind(run.id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                purged += gone;
                keys
            });
            left.push((run.id, keys));
        }
        {
            let mut runs = self.shared.runs.write().await;
            for r in runs.iter_mut() {
                if let Some((_, keys)) = left.iter().find(|(id, _)| *id == r.id) {
                    r.keys = *keys;
                }
            }
            runs.retain(|r| r.keys > 0);
        }
        for (id, keys) in left {
            if keys == 0 {
                self.abandon_run(id).await;
            }
        }
        Ok(purged)
    }

    /// SQLite: closes the file and marks it clean (see [`KeyStore::open`]). PostgreSQL: the
    /// tables close with the database. A compaction under way stops after its slice.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        let _maintenance = self.shared.maintenance.lock().await;
        let Db::Sqlite(pool) = &self.db else { return };
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

/// Drops a run's table if it is there.
async fn drop_run_table(db: &Db, run: i64) -> StoreResult<()> {
    let sql = format!("DROP TABLE IF EXISTS {}", run_table(run));
    on_pool!(db, |p| {
        sqlx::query(audited(&sql)).execute(p).await?;
    });
    Ok(())
}

/// Moves a session's mark forward (never back).
const MOVE_MARK: &str = "INSERT INTO message_keys_merged (session_id, seq) VALUES ($1, $2) ON CONFLICT (session_id) \
                         DO UPDATE SET seq = CASE WHEN excluded.seq > message_keys_merged.seq \
                         THEN excluded.seq ELSE message_keys_merged.seq END";

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
