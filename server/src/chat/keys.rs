//! Idempotency keys: which `(sender, client_msg_id)` keys are stored, and the message each one
//! stored, without an index write per message on the commit path.
//!
//! A unique index on the keys next to the messages would be the plain way, but its keys are
//! random: every commit then dirties about one index page per message, all over the tree, and
//! writes and fsyncs each of them to the log (measured: 0.67 log pages per message instead of
//! 0.14, docs/performance.md). Instead the writer keeps the keys it committed in memory, in
//! *epochs*, and a merge task writes each finished epoch into the key store
//! ([`crate::store::keys`]) as a new sorted run, beside the message commits; the store compacts
//! its runs in the background:
//!
//! - **Current epoch**: keys committed since the last freeze, in a hash table (exact).
//! - **Frozen epoch**: the previous epoch (at most [`EPOCH_AGE`] or [`EPOCH_KEYS`]), being
//!   merged into a run of its own, in slices, in key order. The run goes live together with the
//!   per-session marks it moves: every key of a message with a seq up to its session's mark is
//!   in the store. The writer drops the epoch only after that commit, so a key is always in
//!   memory, in the store, or both.
//! - **Filter**: a Bloom filter of every key stored. A key it has never seen is new for certain,
//!   which is nearly every key; only a key it may have seen (a retry, or one in a thousand new
//!   ones) is looked up in the store, after the two epochs.
//!
//! On start, keys of messages past their session's mark (committed after the last merge, or all
//! of them on a new or lost key store) are read back from `messages` and merged before the
//! server takes messages; then the filter is filled from the store. A merge cut short leaves a
//! run that never went live, dropped at the next start, and is redone.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastbloom::BloomFilter;
use hashbrown::HashTable;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::Committed;
use crate::store::keys::{KeyRow, KeyStore, key_hash};
use crate::store::{Db, StoreError, StoreResult};

/// An epoch is frozen after this long (if anything was committed in it)…
pub const EPOCH_AGE: Duration = Duration::from_secs(1);
/// …or once it holds this many keys.
pub const EPOCH_KEYS: usize = 65_536;
/// Keys an epoch is sized for at least.
const EPOCH_MIN: usize = 1024;
/// Keys an epoch can take past [`EPOCH_KEYS`] before it is frozen: the writer looks after each
/// batch.
const EPOCH_OVERSHOOT: usize = super::writer::MAX_BATCH;
/// Keys per merge transaction.
const SLICE: usize = 1024;
/// Keys read back from `messages` per query when catching up at start.
const CATCH_UP: i64 = 10_000;
/// Target false-positive rate of the filter: the share of new keys looked up in the database.
const FILTER_FP: f64 = 0.001;
/// Keys the first filter is sized for.
const FILTER_MIN: usize = 1 << 16;

/// A committed key and what its message was stored as.
#[derive(Debug)]
struct Entry {
    /// [`key_hash`]: the order of the merge and of the store.
    key_hash: i64,
    sender_id: Uuid,
    client_msg_id: Box<str>,
    message_id: Uuid,
    room_id: Uuid,
    seq: i64,
    created_at: i64,
}

impl Entry {
    fn committed(&self) -> Committed {
        Committed {
            message_id: self.message_id,
            room_id: self.room_id,
            seq: self.seq,
            created_at: self.created_at,
            client_msg_id: Some(self.client_msg_id.to_string()),
        }
    }

    fn row(&self) -> KeyRow<'_> {
        KeyRow {
            key_hash: self.key_hash,
            sender_id: self.sender_id,
            client_msg_id: &self.client_msg_id,
            message_id: self.message_id,
        }
    }
}

/// Keys committed in one span of time, found by key without allocating.
#[derive(Debug)]
struct Epoch {
    entries: Vec<Entry>,
    table: HashTable<u32>,
    /// Per session, the last seq committed in this epoch.
    marks: HashMap<Uuid, i64>,
    started: Instant,
}

impl Epoch {
    /// Sized up front: growing a large table in place rehashes every key at once, and growing
    /// the entries copies them to fresh pages, a stall of 5–12 ms on the writer's path at 50,000
    /// messages/s (docs/performance.md, "Epochs that never grow").
    fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            table: HashTable::with_capacity(n),
            marks: HashMap::new(),
            started: Instant::now(),
        }
    }

    fn find(&self, hasher: &impl BuildHasher, sender: Uuid, cmid: &str) -> Option<&Entry> {
        let hash = hasher.hash_one((sender, cmid));
        self.table
            .find(hash, |&i| {
                let e = &self.entries[i as usize];
                e.sender_id == sender && &*e.client_msg_id == cmid
            })
            .map(|&i| &self.entries[i as usize])
    }

    /// Adds `entry` unless its key is already here (one hash, one probe).
    fn insert(&mut self, hasher: &impl BuildHasher, entry: Entry) {
        let hash = hasher.hash_one((entry.sender_id, &*entry.client_msg_id));
        let i = self.entries.len() as u32;
        let entries = &self.entries;
        let slot = self.table.entry(
            hash,
            |&j| {
                let e = &entries[j as usize];
                e.sender_id == entry.sender_id && e.client_msg_id == entry.client_msg_id
            },
            |&j| {
                let e = &entries[j as usize];
                hasher.hash_one((e.sender_id, &*e.client_msg_id))
            },
        );
        if let hashbrown::hash_table::Entry::Vacant(slot) = slot {
            slot.insert(i);
            self.entries.push(entry);
        }
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.marks.is_empty()
    }

    /// Keys the epoch after one of `last` keys is sized for: twice as many (the rate may double
    /// before an epoch has to grow), and never less than the most an epoch can hold once it is
    /// full ([`EPOCH_KEYS`] and one batch more), so a steady rate never grows one.
    fn next_capacity(last: usize) -> usize {
        last.saturating_mul(2).clamp(EPOCH_MIN, EPOCH_KEYS + EPOCH_OVERSHOOT)
    }

    /// Keys it holds without growing.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.entries.capacity().min(self.table.capacity())
    }
}

/// The epoch being merged, and the merge task's answer.
#[derive(Debug)]
struct Frozen {
    epoch: Arc<Epoch>,
    done: oneshot::Receiver<StoreResult<()>>,
}

/// Every key stored, as a growing chain of Bloom filters (each twice the size of the last).
struct Filter {
    parts: Vec<(BloomFilter, usize, usize)>,
}

impl Filter {
    fn new(expected: usize) -> Self {
        let mut f = Self { parts: Vec::new() };
        f.grow(expected.max(FILTER_MIN));
        f
    }

    fn grow(&mut self, capacity: usize) {
        self.parts.push((BloomFilter::with_false_pos(FILTER_FP).expected_items(capacity), capacity, 0));
    }

    fn insert(&mut self, sender: Uuid, cmid: &str) {
        let full = self.parts.last().is_none_or(|(_, cap, len)| len >= cap);
        if full {
            let next = self.parts.last().map_or(FILTER_MIN, |(_, cap, _)| cap * 2);
            self.grow(next);
        }
        if let Some((f, _, len)) = self.parts.last_mut() {
            f.insert(&(sender, cmid));
            *len += 1;
        }
    }

    fn may_contain(&self, sender: Uuid, cmid: &str) -> bool {
        self.parts.iter().any(|(f, _, _)| f.contains(&(sender, cmid)))
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("parts", &self.parts.len()).finish()
    }
}

/// What is known about a key without asking the database.
#[derive(Debug)]
pub enum Known {
    /// Stored: the retry is answered with this.
    Stored(Committed),
    /// Never stored.
    New,
    /// Perhaps stored: look it up in the key store.
    Maybe,
}

/// The writer's idempotency keys (see the module documentation).
#[derive(Debug)]
pub struct KeyIndex {
    store: KeyStore,
    hasher: std::hash::RandomState,
    filter: Filter,
    current: Epoch,
    frozen: Option<Frozen>,
}

impl KeyIndex {
    /// Merges what the last run left unmerged, then fills the filter from the store.
    pub async fn load(db: &Db, store: KeyStore) -> StoreResult<Self> {
        let started = std::time::Instant::now();
        let marks: HashMap<Uuid, i64> = store.marks().await?.into_iter().collect();
        let mut caught_up = 0usize;
        for (session, last_seq) in db.all_last_seqs().await? {
            let mut mark = marks.get(&session).copied().unwrap_or(0);
            while mark < last_seq {
                let keys = db.message_keys_after(session, mark, CATCH_UP).await?;
                let upto = match keys.last() {
                    Some(k) if keys.len() as i64 == CATCH_UP => k.seq,
                    _ => last_seq,
                };
                let rows: Vec<KeyRow<'_>> = keys
                    .iter()
                    .map(|k| KeyRow {
                        key_hash: key_hash(k.sender_id, &k.client_msg_id),
                        sender_id: k.sender_id,
                        client_msg_id: &k.client_msg_id,
                        message_id: k.id,
                    })
                    .collect();
                store.merge(&rows, &[(session, upto)]).await?;
                caught_up += rows.len();
                mark = upto;
            }
        }
        let stored = store.keys().await;
        let mut filter = Filter::new(usize::try_from(stored).unwrap_or(0) * 2);
        let merged = store.each(|sender, cmid| filter.insert(sender, cmid)).await?;
        tracing::info!(
            keys = merged,
            read_back = caught_up,
            ms = started.elapsed().as_millis() as u64,
            "idempotency keys loaded"
        );
        // Keys read back come as runs of `CATCH_UP` keys at most (a lost store: as many runs as
        // there are messages over `CATCH_UP`): compact them now rather than after the first merge.
        spawn_compaction(store.clone());
        Ok(Self {
            store,
            hasher: std::hash::RandomState::new(),
            filter,
            current: Epoch::with_capacity(EPOCH_MIN),
            frozen: None,
        })
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// What is known about `(sender, cmid)` without asking the store.
    pub fn known(&self, sender: Uuid, cmid: &str) -> Known {
        if let Some(e) = self.current.find(&self.hasher, sender, cmid) {
            return Known::Stored(e.committed());
        }
        if let Some(f) = &self.frozen
            && let Some(e) = f.epoch.find(&self.hasher, sender, cmid)
        {
            return Known::Stored(e.committed());
        }
        if self.filter.may_contain(sender, cmid) { Known::Maybe } else { Known::New }
    }

    /// Records a committed message: its key, and its session's seq.
    pub fn committed(&mut self, sender: Uuid, c: &Committed) {
        let mark = self.current.marks.entry(c.room_id).or_insert(c.seq);
        *mark = (*mark).max(c.seq);
        if let Some(cmid) = &c.client_msg_id {
            self.filter.insert(sender, cmid);
            let entry = Entry {
                key_hash: key_hash(sender, cmid),
                sender_id: sender,
                client_msg_id: cmid.as_str().into(),
                message_id: c.message_id,
                room_id: c.room_id,
                seq: c.seq,
                created_at: c.created_at,
            };
            self.current.insert(&self.hasher, entry);
        }
    }

    /// Collects a finished merge, and starts the next when the current epoch is old or large
    /// enough (`force`: whatever it holds).
    pub fn poll(&mut self, force: bool) {
        if let Some(f) = &mut self.frozen {
            match f.done.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(Ok(())) => {
                    metrics::counter!("landworld_chat_keys_merged_total").increment(f.epoch.entries.len() as u64);
                    if let Some(f) = self.frozen.take() {
                        // Freeing every key of the epoch is not the writer's business either.
                        tokio::task::spawn_blocking(move || drop(f));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "merging idempotency keys failed; retrying");
                    let epoch = f.epoch.clone();
                    f.done = spawn_merge(self.store.clone(), epoch, true);
                    return;
                }
                Err(oneshot::error::TryRecvError::Closed) => {
                    tracing::error!("the idempotency key merge stopped; retrying");
                    let epoch = f.epoch.clone();
                    f.done = spawn_merge(self.store.clone(), epoch, true);
                    return;
                }
            }
        }
        if self.current.is_empty() {
            return;
        }
        let due = force || self.current.entries.len() >= EPOCH_KEYS || self.current.started.elapsed() >= EPOCH_AGE;
        if due {
            let size = Epoch::next_capacity(self.current.entries.len());
            let epoch = Arc::new(std::mem::replace(&mut self.current, Epoch::with_capacity(size)));
            let done = spawn_merge(self.store.clone(), epoch.clone(), false);
            self.frozen = Some(Frozen { epoch, done });
        }
    }

    /// When the writer should come back to collect a merge or freeze an epoch while no messages
    /// arrive.
    pub fn next_work(&self) -> Option<tokio::time::Instant> {
        match &self.frozen {
            Some(_) => Some(tokio::time::Instant::now() + Duration::from_millis(5)),
            None if self.current.is_empty() => None,
            None => Some((self.current.started + EPOCH_AGE).into()),
        }
    }

    /// Merges everything in memory and waits for it (shutdown, and tests).
    pub async fn merge_all(&mut self) {
        loop {
            self.poll(true);
            if self.frozen.is_none() && self.current.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Keys in memory (both epochs).
    pub fn in_memory(&self) -> usize {
        self.current.entries.len() + self.frozen.as_ref().map_or(0, |f| f.epoch.entries.len())
    }
}

/// Sorts the epoch's keys and writes them as a new run of the key store, in transactions of
/// [`SLICE`] keys; the run goes live with the marks. Runs beside the writer (sorting on a
/// blocking thread), then starts a compaction of the store's runs if one is due.
fn spawn_merge(store: KeyStore, epoch: Arc<Epoch>, after_failure: bool) -> oneshot::Receiver<StoreResult<()>> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if after_failure {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let sorting = epoch.clone();
        let order = tokio::task::spawn_blocking(move || {
            let e = &sorting.entries;
            let mut order: Vec<u32> = (0..e.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                let (a, b) = (&e[a as usize], &e[b as usize]);
                (a.key_hash, a.sender_id, &*a.client_msg_id).cmp(&(b.key_hash, b.sender_id, &*b.client_msg_id))
            });
            order
        })
        .await;
        let result = match order {
            Ok(order) => merge_sorted(&store, &epoch, &order).await,
            Err(e) => Err(StoreError::Io(std::io::Error::other(format!("sorting keys failed: {e}")))),
        };
        let _ = tx.send(result);
    });
    rx
}

async fn merge_sorted(store: &KeyStore, epoch: &Epoch, order: &[u32]) -> StoreResult<()> {
    let marks: Vec<(Uuid, i64)> = epoch.marks.iter().map(|(k, v)| (*k, *v)).collect();
    if order.is_empty() {
        return store.merge(&[], &marks).await;
    }
    let slices: Vec<Vec<KeyRow<'_>>> =
        order.chunks(SLICE).map(|slice| slice.iter().map(|&i| epoch.entries[i as usize].row()).collect()).collect();
    store.add_run(slices, &marks, true).await?;
    // The merge is done (the writer may drop the epoch); compacting the runs is not its wait.
    spawn_compaction(store.clone());
    Ok(())
}

/// Compacts the key store's runs beside everything else, if due (and none is under way).
fn spawn_compaction(store: KeyStore) {
    tokio::spawn(async move {
        if let Err(e) = store.compact().await {
            tracing::warn!(error = %e, "compacting idempotency key runs failed; retrying after the next merge");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::chat::NewMessage;

    /// A database with one user and one group session.
    async fn setup(dir: &std::path::Path) -> anyhow::Result<(Db, Uuid, Uuid)> {
        crate::store::test_db_with_group(dir, "k.db").await
    }

    /// Stores messages `from..to` with keys `k{n}` (seq n+1), as the writer would.
    async fn store(db: &Db, user: Uuid, room: Uuid, range: std::ops::Range<i64>) -> anyhow::Result<Vec<Committed>> {
        let rows: Vec<NewMessage> = range
            .clone()
            .map(|n| NewMessage {
                id: Uuid::now_v7(),
                session_id: room,
                seq: n + 1,
                sender_id: user,
                client_msg_id: Some(format!("k{n}")),
                key_id: 1,
                nonce: vec![0; 12],
                ciphertext: vec![1; 20],
                pos: None,
                created_at: n,
                recipients: Vec::new(),
            })
            .collect();
        // The chat writer's own path (on SQLite its own connection), as in production.
        let writer = crate::store::message_writer::MessageWriter::open(db)?;
        writer.insert(rows.clone(), vec![(room, range.end)]).await?;
        drop(writer);
        Ok(rows
            .iter()
            .map(|r| Committed {
                message_id: r.id,
                room_id: room,
                seq: r.seq,
                created_at: r.created_at,
                client_msg_id: r.client_msg_id.clone(),
            })
            .collect())
    }

    /// Keys merged by the writer, keys it never merged (a crash), and a key store that is lost
    /// altogether: after each, loading answers every stored key with its message and rules out
    /// keys never stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_stored_key_is_found_after_merges_crashes_and_a_lost_store() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let mut index = KeyIndex::load(&db, KeyStore::open(&db).await?).await?;
        // 3,000 keys through the writer's path, merged in slices of `SLICE`.
        let first = store(&db, user, room, 0..3000).await?;
        for c in &first {
            index.committed(user, c);
        }
        assert!(matches!(index.known(user, "k10"), Known::Stored(c) if c.message_id == first[10].message_id));
        index.merge_all().await;
        assert_eq!(index.in_memory(), 0);
        assert_eq!(index.store().count().await?, 3000);
        assert_eq!(index.store().marks().await?, vec![(room, 3000)]);
        // 500 more are stored, but the process dies before their merge.
        let second = store(&db, user, room, 3000..3500).await?;
        for c in &second {
            index.committed(user, c);
        }
        drop(index);

        let index = KeyIndex::load(&db, KeyStore::open(&db).await?).await?;
        assert_eq!(index.store().count().await?, 3500, "keys past the mark are read back from messages");
        assert_eq!(index.store().marks().await?, vec![(room, 3500)]);
        for (n, c) in [(0, &first[0]), (2999, &first[2999]), (3499, &second[499])] {
            let key = format!("k{n}");
            assert!(matches!(index.known(user, &key), Known::Maybe), "{key} may be stored");
            let found = index.store().lookup(&[(user, key.as_str())]).await?;
            assert_eq!(found.iter().map(|k| k.message_id).collect::<Vec<_>>(), vec![c.message_id]);
        }
        assert!(index.store().lookup(&[(Uuid::new_v4(), "k1")]).await?.is_empty(), "keys are per sender");
        let strangers = (0..10_000).filter(|i| !matches!(index.known(user, &format!("x{i}")), Known::New)).count();
        assert!(strangers < 100, "{strangers} of 10,000 new keys would be looked up");

        // The key store file is lost: everything is rebuilt from `messages`.
        index.store().close().await;
        drop(index);
        let key_file = crate::store::keys::sqlite_key_path(&dir.path().join("k.db"));
        std::fs::write(&key_file, b"not a database")?;
        std::fs::write(key_file.with_file_name("k-keys.db.state"), b"another boot")?;
        let index = KeyIndex::load(&db, KeyStore::open(&db).await?).await?;
        assert_eq!(index.store().count().await?, 3500);
        let found = index.store().lookup(&[(user, "k1234")]).await?;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].message_id, first[1234].message_id);
        index.store().close().await;
        db.close().await;
        Ok(())
    }

    /// A key for `n` as the writer would record it (nothing stored behind it: only the index's
    /// memory is looked at).
    fn key(room: Uuid, n: usize) -> Committed {
        Committed {
            message_id: Uuid::now_v7(),
            room_id: room,
            seq: n as i64 + 1,
            created_at: 0,
            client_msg_id: Some(format!("e{n}")),
        }
    }

    /// An epoch is sized from the one before it, so at a steady rate — and up to twice it — its
    /// keys never make it grow on the writer's path; from a full epoch, not even by the batch
    /// that the writer commits before it freezes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn epochs_are_sized_from_the_last_so_a_steady_rate_never_grows_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (db, user, room) = setup(dir.path()).await?;
        let mut index = KeyIndex::load(&db, KeyStore::open(&db).await?).await?;
        let mut n = 0;
        for (last, next) in
            [(3_000, 6_000), (6_000, 9_000), (40_000, 40_500), (EPOCH_KEYS, EPOCH_KEYS + EPOCH_OVERSHOOT)]
        {
            for _ in 0..last {
                index.committed(user, &key(room, n));
                n += 1;
            }
            index.merge_all().await;
            let sized = index.current.capacity();
            let entries = index.current.entries.as_ptr();
            for _ in 0..next {
                index.committed(user, &key(room, n));
                n += 1;
            }
            assert_eq!(index.current.entries.len(), next);
            assert_eq!(index.current.capacity(), sized, "after {last} keys, {next} more grew the epoch");
            assert_eq!(index.current.entries.as_ptr(), entries, "the keys were not moved");
            assert!(matches!(index.known(user, &format!("e{}", n - 1)), Known::Stored(_)));
            index.merge_all().await;
        }
        index.store().close().await;
        db.close().await;
        Ok(())
    }

    #[test]
    fn the_filter_grows_without_forgetting() {
        let mut f = Filter::new(0);
        let sender = Uuid::new_v4();
        let keys: Vec<String> = (0..FILTER_MIN * 5).map(|i| format!("k{i}")).collect();
        for k in &keys {
            f.insert(sender, k);
        }
        assert!(f.parts.len() >= 3, "{} parts", f.parts.len());
        assert!(keys.iter().all(|k| f.may_contain(sender, k)), "no key inserted is ever reported absent");
        let strangers = (0..100_000).filter(|i| f.may_contain(sender, &format!("x{i}"))).count();
        assert!(strangers < 1_000, "{strangers} of 100,000 unseen keys reported present");
    }

    #[test]
    fn epochs_find_keys_by_sender_and_id() {
        let h = std::hash::RandomState::new();
        let mut e = Epoch::with_capacity(4);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for (i, s) in [a, b].into_iter().enumerate() {
            for n in 0..100 {
                e.insert(
                    &h,
                    Entry {
                        key_hash: 0,
                        sender_id: s,
                        client_msg_id: format!("m{n}").into(),
                        message_id: Uuid::new_v4(),
                        room_id: Uuid::nil(),
                        seq: (i * 100 + n) as i64,
                        created_at: 0,
                    },
                );
            }
        }
        assert_eq!(e.entries.len(), 200);
        let again = Entry {
            key_hash: 0,
            sender_id: a,
            client_msg_id: "m7".into(),
            message_id: Uuid::new_v4(),
            room_id: Uuid::nil(),
            seq: 999,
            created_at: 0,
        };
        e.insert(&h, again);
        assert_eq!(e.entries.len(), 200, "a key already there is not added twice");
        assert_eq!(e.find(&h, a, "m7").map(|x| x.seq), Some(7));
        assert_eq!(e.find(&h, b, "m7").map(|x| x.seq), Some(107));
        assert!(e.find(&h, a, "m100").is_none());
        assert!(e.find(&h, Uuid::new_v4(), "m1").is_none());
    }
}
