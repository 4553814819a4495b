//! The idempotency key store (`server/src/store/keys.rs`) as sorted runs, on a real SQLite file
//! (the key store file beside the database) and on PostgreSQL: every merge is a run of its own,
//! runs of one tier are compacted into one run of the next, every key stays found throughout,
//! a run that never went live is dropped at the next open, the retention purge reaches every
//! run, and a key store of the one-table layout is upgraded with its keys.

use std::path::Path;

use anyhow::{Result, ensure};
use landworld_server::store::Db;
use landworld_server::store::keys::{FANIN, KeyRow, KeyStore, Run, key_hash, sqlite_key_path};
use landworld_tests::{Backend, fresh_pg_database};
use uuid::Uuid;

/// A fresh, migrated database of `backend` (`None`: PostgreSQL unavailable and not required).
async fn database(backend: Backend, dir: &Path) -> Result<Option<Db>> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("k.db").display()),
        Backend::Postgres => match fresh_pg_database().await? {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    Ok(Some(db))
}

/// A key as the writer would hold it: sender, client id and the message it stored (a UUIDv7
/// of the given Unix millisecond, so the retention purge can tell old from new).
struct Key {
    sender: Uuid,
    cmid: String,
    message_id: Uuid,
}

impl Key {
    fn new(sender: Uuid, cmid: String, ms: u64) -> Self {
        let at = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
        Self { sender, cmid, message_id: Uuid::new_v7(at) }
    }

    fn row(&self) -> KeyRow<'_> {
        KeyRow {
            key_hash: key_hash(self.sender, &self.cmid),
            sender_id: self.sender,
            client_msg_id: &self.cmid,
            message_id: self.message_id,
        }
    }
}

/// `n` keys of `sender` named `<prefix><i>`, their messages made at `ms`.
fn keys(sender: Uuid, prefix: &str, n: usize, ms: u64) -> Vec<Key> {
    (0..n).map(|i| Key::new(sender, format!("{prefix}{i}"), ms)).collect()
}

/// Writes `keys` as one run, sorted as the writer's merge sorts them.
async fn merge(store: &KeyStore, keys: &[Key], marks: &[(Uuid, i64)]) -> Result<()> {
    let mut rows: Vec<KeyRow<'_>> = keys.iter().map(Key::row).collect();
    rows.sort_by(|a, b| (a.key_hash, a.sender_id, a.client_msg_id).cmp(&(b.key_hash, b.sender_id, b.client_msg_id)));
    store.merge(&rows, marks).await?;
    Ok(())
}

/// Every key of `keys` is found, with its message; each is looked up alone and all of them in
/// chunks, as the writer looks up a batch.
async fn all_found(store: &KeyStore, keys: &[Key]) -> Result<()> {
    for chunk in keys.chunks(300) {
        let asked: Vec<(Uuid, &str)> = chunk.iter().map(|k| (k.sender, k.cmid.as_str())).collect();
        let found = store.lookup(&asked).await?;
        ensure!(found.len() == chunk.len(), "{} of {} keys found", found.len(), chunk.len());
        for k in chunk {
            ensure!(
                found
                    .iter()
                    .any(|f| f.sender_id == k.sender && f.client_msg_id == k.cmid && f.message_id == k.message_id),
                "key {} is not found with its message",
                k.cmid
            );
        }
    }
    for k in keys.iter().step_by(97) {
        let found = store.lookup(&[(k.sender, k.cmid.as_str())]).await?;
        ensure!(found.len() == 1 && found[0].message_id == k.message_id, "{} alone: {found:?}", k.cmid);
    }
    Ok(())
}

/// The run tables that exist, live or not.
async fn run_tables(db: &Db, dir: &Path) -> Result<Vec<String>> {
    use sqlx::Row;
    let mut names: Vec<String> = match db {
        Db::Sqlite(_) => {
            let file = sqlite_key_path(&dir.join("k.db"));
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display())).await?;
            let rows = sqlx::query(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'message_key_run/_%' ESCAPE '/'",
            )
            .fetch_all(&pool)
            .await?;
            pool.close().await;
            rows.iter().map(|r| r.try_get("name")).collect::<Result<_, _>>()?
        }
        Db::Postgres(pool) => sqlx::query(
            "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename LIKE 'message_key_run/_%' ESCAPE '/'",
        )
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("name"))
        .collect::<Result<_, _>>()?,
    };
    names.sort();
    Ok(names)
}

fn table_names(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = runs.iter().map(|r| format!("message_key_run_{}", r.id)).collect();
    names.sort();
    names
}

/// Runs pile up one per merge; once a tier holds `FANIN` runs they become one run of the next
/// tier (in slices of the hash space, for the bigger one), the old tables are gone, and every
/// key — including keys merged twice — is found exactly once with its message, before and after.
async fn runs_are_compacted_tier_by_tier_and_every_key_stays_found(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(backend, dir.path()).await? else { return Ok(()) };
    let store = KeyStore::open(&db).await?;
    let (alice, bob, room) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let fanin = usize::try_from(FANIN)?;
    let mut stored = Vec::new();
    // Tier 1 (16..255 keys): `FANIN` merges of 100 keys; the second is the first merge redone
    // (the same keys again, as after a crash), which a compaction keeps once.
    let mut first = Vec::new();
    for r in 0..fanin {
        let batch = match r {
            1 => keys_like(&first),
            _ => keys(if r % 2 == 0 { alice } else { bob }, &format!("t1-{r}-"), 100, 1_000),
        };
        if r != 1 {
            stored.extend(keys_like(&batch));
        }
        merge(&store, &batch, &[(room, (r as i64 + 1) * 100)]).await?;
        if r == 0 {
            first = batch;
        }
        if r + 1 < fanin {
            ensure!(store.compact().await? == 0, "no compaction below {FANIN} runs of a tier");
        }
    }
    ensure!(store.runs().await.len() == fanin);
    ensure!(store.compact().await? == 1);
    let runs = store.runs().await;
    ensure!(runs.len() == 1, "{runs:?}");
    ensure!(runs[0].keys == 1_500, "{runs:?}: the twice-merged keys are kept once");
    ensure!(store.count().await? == 1_500);
    ensure!(run_tables(&db, dir.path()).await? == table_names(&runs), "the compacted runs' tables are dropped");
    ensure!(store.marks().await? == vec![(room, FANIN * 100)]);
    all_found(&store, &stored).await?;

    // Tier 2 (256..4095 keys): the compacted run and `FANIN - 1` merges of 1,600 keys make
    // `FANIN` runs of tier 2; their compaction writes 25,500 keys in several slices.
    for r in 1..fanin {
        let batch = keys(bob, &format!("t2-{r}-"), 1_600, 2_000);
        stored.extend(keys_like(&batch));
        merge(&store, &batch, &[]).await?;
    }
    all_found(&store, &stored).await?;
    // Lookups go on while the compaction runs, and find every key throughout: through its
    // slices, the swap of the runs and the drop of the old tables.
    let compacted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looking = {
        let (store, compacted) = (store.clone(), compacted.clone());
        let sample: Vec<Key> =
            stored.iter().step_by(53).map(|k| keys_like(std::slice::from_ref(k)).remove(0)).collect();
        tokio::spawn(async move {
            let mut rounds = 0;
            while !compacted.load(std::sync::atomic::Ordering::Relaxed) || rounds == 0 {
                all_found(&store, &sample).await?;
                rounds += 1;
            }
            anyhow::Ok(rounds)
        })
    };
    ensure!(store.compact().await? == 1);
    compacted.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = looking.await??;
    ensure!(rounds > 0);
    let runs = store.runs().await;
    ensure!(runs.len() == 1 && runs[0].keys == 1_500 + 15 * 1_600, "{runs:?}");
    ensure!(store.count().await? == runs[0].keys);
    ensure!(run_tables(&db, dir.path()).await? == table_names(&runs));
    all_found(&store, &stored).await?;
    for (sender, cmid) in [(alice, "t1-1-5"), (Uuid::new_v4(), "t1-0-5"), (alice, "never")] {
        ensure!(store.lookup(&[(sender, cmid)]).await?.is_empty(), "{cmid} of {sender} was never stored");
    }

    // Reopened, the store has the same runs and keys.
    store.close().await;
    let store = KeyStore::open(&db).await?;
    ensure!(store.runs().await == runs);
    all_found(&store, &stored).await?;
    store.close().await;
    db.close().await;
    Ok(())
}

/// A copy of the keys (the same senders, ids and messages).
fn keys_like(batch: &[Key]) -> Vec<Key> {
    batch.iter().map(|k| Key { sender: k.sender, cmid: k.cmid.clone(), message_id: k.message_id }).collect()
}

/// A merge cut short (its run filled but never made live, as when the process dies) leaves a
/// table that lookups never read and the next open drops; the live runs are untouched.
async fn a_run_that_never_went_live_is_dropped_at_the_next_open(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(backend, dir.path()).await? else { return Ok(()) };
    let store = KeyStore::open(&db).await?;
    let sender = Uuid::new_v4();
    let live = keys(sender, "live-", 50, 1_000);
    merge(&store, &live, &[]).await?;
    let cut = keys(sender, "cut-", 50, 1_000);
    let run = store.begin_run().await?;
    let rows: Vec<KeyRow<'_>> = cut.iter().map(Key::row).collect();
    ensure!(store.fill_run(run, &rows).await? == 50);
    ensure!(run_tables(&db, dir.path()).await?.len() == 2);
    ensure!(store.lookup(&[(sender, "cut-3")]).await?.is_empty(), "a run that is not live is not read");
    let runs = store.runs().await;
    store.close().await;

    let store = KeyStore::open(&db).await?;
    ensure!(store.runs().await == runs);
    ensure!(run_tables(&db, dir.path()).await? == table_names(&runs), "the unfinished run's table is dropped");
    all_found(&store, &live).await?;
    // Run ids are not reused: a new merge gets a fresh table.
    let again = keys(sender, "again-", 10, 1_000);
    merge(&store, &again, &[]).await?;
    ensure!(store.runs().await.iter().map(|r| r.id).max() > Some(run));
    all_found(&store, &again).await?;
    store.close().await;
    db.close().await;
    Ok(())
}

/// Retention reaches every run: old keys go wherever they are, a run left empty is dropped
/// with its table, new keys stay found.
async fn the_purge_reaches_every_run_and_drops_empty_ones(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(backend, dir.path()).await? else { return Ok(()) };
    let store = KeyStore::open(&db).await?;
    let sender = Uuid::new_v4();
    let old = keys(sender, "old-", 40, 1_000_000);
    let mixed_old = keys(sender, "mixed-old-", 30, 1_000_000);
    let mixed_new = keys(sender, "mixed-new-", 20, 5_000_000);
    merge(&store, &old, &[]).await?;
    let mixed: Vec<Key> = keys_like(&mixed_old).into_iter().chain(keys_like(&mixed_new)).collect();
    merge(&store, &mixed, &[]).await?;
    ensure!(store.runs().await.len() == 2);
    ensure!(store.purge_before(2_000_000).await? == 70);
    let runs = store.runs().await;
    ensure!(runs.len() == 1 && runs[0].keys == 20, "{runs:?}");
    ensure!(run_tables(&db, dir.path()).await? == table_names(&runs));
    ensure!(store.count().await? == 20);
    all_found(&store, &mixed_new).await?;
    for k in old.iter().chain(&mixed_old) {
        ensure!(store.lookup(&[(k.sender, k.cmid.as_str())]).await?.is_empty(), "{} was purged", k.cmid);
    }
    store.close().await;
    let store = KeyStore::open(&db).await?;
    ensure!(store.runs().await == runs, "the purge is in the catalog");
    store.close().await;
    db.close().await;
    Ok(())
}

/// More live runs than one lookup query reads (64): lookups of one key and of a full chunk of
/// keys find every key, wherever it is.
async fn lookups_read_every_run_however_many(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(backend, dir.path()).await? else { return Ok(()) };
    let store = KeyStore::open(&db).await?;
    let sender = Uuid::new_v4();
    let mut stored = Vec::new();
    for r in 0..70 {
        let batch = keys(sender, &format!("r{r}-"), 4, 1_000);
        merge(&store, &batch, &[]).await?;
        stored.extend(batch);
    }
    ensure!(store.runs().await.len() == 70, "no compaction unless asked");
    all_found(&store, &stored).await?;
    for k in stored.iter().step_by(7) {
        let found = store.lookup(&[(k.sender, k.cmid.as_str())]).await?;
        ensure!(found.len() == 1 && found[0].message_id == k.message_id, "{}", k.cmid);
    }
    store.close().await;
    db.close().await;
    Ok(())
}

/// A live run whose table is gone (dropped behind the store's back): the next open forgets it
/// and every mark, so the keys are read back from `messages`, and lookups work.
async fn a_live_run_without_its_table_is_forgotten_with_the_marks(backend: Backend) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(backend, dir.path()).await? else { return Ok(()) };
    let store = KeyStore::open(&db).await?;
    let (sender, room) = (Uuid::new_v4(), Uuid::new_v4());
    let kept = keys(sender, "kept-", 30, 1_000);
    let lost = keys(sender, "lost-", 30, 1_000);
    merge(&store, &kept, &[(room, 30)]).await?;
    merge(&store, &lost, &[(room, 60)]).await?;
    let runs = store.runs().await;
    ensure!(runs.len() == 2);
    store.close().await;
    let drop_lost = format!("DROP TABLE message_key_run_{}", runs[1].id);
    match &db {
        Db::Sqlite(_) => {
            let file = sqlite_key_path(&dir.path().join("k.db"));
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display())).await?;
            sqlx::query(sqlx::AssertSqlSafe(drop_lost)).execute(&pool).await?;
            pool.close().await;
        }
        Db::Postgres(pool) => {
            sqlx::query(sqlx::AssertSqlSafe(drop_lost)).execute(pool).await?;
        }
    }

    let store = KeyStore::open(&db).await?;
    ensure!(store.runs().await == runs[..1], "{:?}", store.runs().await);
    ensure!(store.marks().await?.is_empty(), "every key is read back from messages");
    all_found(&store, &kept).await?;
    ensure!(store.lookup(&[(sender, "lost-3")]).await?.is_empty());
    store.close().await;
    db.close().await;
    Ok(())
}

/// For each scenario above, a test module with a `sqlite` and a `postgres` test (the latter
/// passes with a printed reason where PostgreSQL is unreachable and not required).
macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                super::$scenario(landworld_tests::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                super::$scenario(landworld_tests::Backend::Postgres).await
            }
        }
    )*};
}

on_both_databases!(
    runs_are_compacted_tier_by_tier_and_every_key_stays_found,
    a_run_that_never_went_live_is_dropped_at_the_next_open,
    the_purge_reaches_every_run_and_drops_empty_ones,
    lookups_read_every_run_however_many,
    a_live_run_without_its_table_is_forgotten_with_the_marks,
);

/// A key store file of the one-table layout (before sorted runs) is upgraded in place: its keys
/// become the first run, found as before, and new merges add runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_store_of_the_one_table_layout_keeps_its_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(db) = database(Backend::Sqlite, dir.path()).await? else { return Ok(()) };
    let file = sqlite_key_path(&dir.path().join("k.db"));
    // The store as the last release left it: only the first migration applied, keys in it.
    let first = tempfile::tempdir()?;
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite-keys");
    std::fs::copy(migrations.join("0001_message_keys.sql"), first.path().join("0001_message_keys.sql"))?;
    let old_layout = sqlx::migrate::Migrator::new(first.path()).await?;
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&file).create_if_missing(true),
    )
    .await?;
    old_layout.run(&pool).await?;
    let sender = Uuid::new_v4();
    let before = keys(sender, "before-", 200, 1_000);
    for k in &before {
        sqlx::query("INSERT INTO message_keys (key_hash, sender_id, client_msg_id, message_id) VALUES (?, ?, ?, ?)")
            .bind(key_hash(k.sender, &k.cmid))
            .bind(k.sender)
            .bind(&k.cmid)
            .bind(k.message_id)
            .execute(&pool)
            .await?;
    }
    pool.close().await;
    // Closed cleanly, so the store is trusted rather than rebuilt.
    std::fs::write(file.with_file_name("k-keys.db.state"), "clean")?;

    let store = KeyStore::open(&db).await?;
    let runs = store.runs().await;
    ensure!(runs == vec![Run { id: 0, keys: 200 }], "{runs:?}");
    all_found(&store, &before).await?;
    let after = keys(sender, "after-", 20, 1_000);
    merge(&store, &after, &[]).await?;
    ensure!(store.runs().await.len() == 2);
    all_found(&store, &before).await?;
    all_found(&store, &after).await?;
    store.close().await;
    db.close().await;
    Ok(())
}
