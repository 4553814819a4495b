//! Benchmark of one simulation tick of the proximity index against an all-pairs baseline.
//!
//! World: 2048×2048 tiles, all walkable; N avatars at random positions (fixed seed, a tiny
//! xorshift so no RNG dependency), radius 5. One tick: a random 10 % subset of the avatars
//! (partial Fisher–Yates, so no avatar moves twice) each step one tile in one of the 8 directions
//! (clamped to the map), then `take_changes`. The world keeps walking between iterations, so
//! every sample is a steady-state tick.
//!
//! - `proximity_tick/index/10000` and `/100000`: the incremental index, one `move_to` per move.
//! - `proximity_tick/index_batch/10000` and `/100000`: the same moves collected into a `Vec` and
//!   applied with one `move_batch`.
//! - `proximity_tick/index_mixed_radii{,_batch}/100000`: the same with 1 % of avatars at
//!   radius 50 (the two-tier grid keeps the others' scans small).
//! - `proximity_tick/brute_force/10000`: the same moves applied to a plain `Vec` of positions,
//!   every avatar's set recomputed by checking all pairs and diffed against the previous sets.
//!
//! Before timing, both index paths and the brute force are run side by side for a few ticks at
//! N = 10,000 and their sets and net changes compared, then the two index paths with each other
//! at 100,000 with mixed radii, so the benchmark measures correct work.
//!
//! Run: `cargo bench -p landworld-shared --bench proximity_tick`. On a shared machine, add
//! `PROXIMITY_TICK_CPU=1` to also print wall and CPU time per tick, measured outside criterion
//! (including `brute_force/10000`), or `PROXIMITY_TICK_CPU=index/100000,index_batch/100000` to
//! time only those cases and skip everything else.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use landworld_shared::world::{ProximityChanges, ProximityIndex, Slot, TilePos};

const SIDE: i32 = 2048;
const RADIUS: u32 = 5;
const SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const DIRS: [(i32, i32); 8] = [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)];

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// Generates the avatars and, tick after tick, the same moves for either implementation.
struct Mover {
    rng: Rng,
    order: Vec<u32>,
}

impl Mover {
    fn new(n: usize) -> (Self, Vec<TilePos>) {
        let mut rng = Rng(SEED);
        let pos =
            (0..n).map(|_| TilePos::new(rng.below(SIDE as usize) as i32, rng.below(SIDE as usize) as i32)).collect();
        (Self { rng, order: (0..n as u32).collect() }, pos)
    }

    /// Calls `f(avatar, direction)` for a random 10 % subset.
    fn moves(&mut self, mut f: impl FnMut(usize, (i32, i32))) {
        let n = self.order.len();
        let k = n / 10;
        for i in 0..k {
            let j = i + self.rng.below(n - i);
            self.order.swap(i, j);
            let d = DIRS[self.rng.below(8)];
            f(self.order[i] as usize, d);
        }
    }
}

fn step(p: TilePos, (dx, dy): (i32, i32)) -> TilePos {
    TilePos::new((p.x + dx).clamp(0, SIDE - 1), (p.y + dy).clamp(0, SIDE - 1))
}

struct IndexWorld {
    ix: ProximityIndex,
    mover: Mover,
    changes: ProximityChanges,
    /// `Some`: the tick's moves are collected here and applied with one `move_batch`.
    batch: Option<Vec<(Slot, TilePos)>>,
}

impl IndexWorld {
    fn new(n: usize, big_every: usize, batch: bool) -> Self {
        let (mover, pos) = Mover::new(n);
        let mut ix = ProximityIndex::new(SIDE as u32, SIDE as u32);
        for (i, &p) in pos.iter().enumerate() {
            let r = if big_every > 0 && i % big_every == 0 { 50 } else { RADIUS };
            // A fresh index hands out slots in order, so avatar `i` is slot `i`.
            assert_eq!(ix.insert(p, r), i as Slot);
        }
        let mut changes = ProximityChanges::default();
        ix.take_changes(&mut changes);
        Self { ix, mover, changes, batch: batch.then(Vec::new) }
    }

    /// One tick; returns the number of changes so the work cannot be optimised away.
    fn tick(&mut self) -> usize {
        let Self { ix, mover, changes, batch } = self;
        match batch {
            None => mover.moves(|i, d| {
                let slot = i as Slot;
                if let Some(p) = ix.position(slot) {
                    ix.move_to(slot, step(p, d));
                }
            }),
            Some(moves) => {
                moves.clear();
                mover.moves(|i, d| {
                    let slot = i as Slot;
                    if let Some(p) = ix.position(slot) {
                        moves.push((slot, step(p, d)));
                    }
                });
                ix.move_batch(moves);
            }
        }
        changes.clear();
        ix.take_changes(changes);
        changes.entered.len() + changes.left.len() + changes.dirty.len()
    }
}

struct BruteWorld {
    pos: Vec<TilePos>,
    sets: Vec<Vec<u32>>,
    next: Vec<Vec<u32>>,
    mover: Mover,
}

impl BruteWorld {
    fn new(n: usize) -> Self {
        let (mover, pos) = Mover::new(n);
        let mut w = Self { pos, sets: vec![Vec::new(); n], next: vec![Vec::new(); n], mover };
        w.recompute();
        std::mem::swap(&mut w.sets, &mut w.next);
        w
    }

    /// All pairs into `next` (each list sorted by construction).
    fn recompute(&mut self) {
        let r = RADIUS as i32;
        for (a, pa) in self.pos.iter().enumerate() {
            let out = &mut self.next[a];
            out.clear();
            for (b, pb) in self.pos.iter().enumerate() {
                if b != a && (pa.x - pb.x).abs() <= r && (pa.y - pb.y).abs() <= r {
                    out.push(b as u32);
                }
            }
        }
    }

    fn tick(&mut self) -> usize {
        let pos = &mut self.pos;
        self.mover.moves(|i, d| pos[i] = step(pos[i], d));
        self.recompute();
        // Diff old vs new sets (sorted merge): entered + left.
        let mut changes = 0;
        for (old, new) in self.sets.iter().zip(&self.next) {
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < new.len() {
                match (old.get(i), new.get(j)) {
                    (Some(a), Some(b)) if a == b => {
                        i += 1;
                        j += 1;
                    }
                    (Some(a), Some(b)) if a < b => {
                        changes += 1;
                        i += 1;
                    }
                    (Some(_), None) => {
                        changes += 1;
                        i += 1;
                    }
                    _ => {
                        changes += 1;
                        j += 1;
                    }
                }
            }
        }
        std::mem::swap(&mut self.sets, &mut self.next);
        changes
    }
}

/// Sorted net changes of one take, for comparing the two move paths (`dirty` is left out: the
/// batch may order the moves differently, which can change transient dirt).
fn net_changes(w: &IndexWorld) -> (Vec<(Slot, Slot)>, Vec<(Slot, Slot)>) {
    let (mut e, mut l) = (w.changes.entered.clone(), w.changes.left.clone());
    e.sort_unstable();
    l.sort_unstable();
    (e, l)
}

/// Runs the index (per move and batched) and the brute force side by side and compares every
/// set; then, at 100,000 with mixed radii, compares the two index paths with each other.
fn verify() {
    let n = 10_000;
    let mut iw = IndexWorld::new(n, 0, false);
    let mut ib = IndexWorld::new(n, 0, true);
    let mut bw = BruteWorld::new(n);
    for _ in 0..5 {
        iw.tick();
        ib.tick();
        bw.tick();
        assert_eq!(net_changes(&iw), net_changes(&ib), "per-move and batch changes disagree");
        for i in 0..n {
            for w in [&iw, &ib] {
                let mut got: Vec<u32> = w.ix.nearby(i as Slot).to_vec();
                got.sort_unstable();
                assert_eq!(got, bw.sets[i], "avatar {i}: index and brute force disagree");
            }
        }
    }
    let n = 100_000;
    let mut iw = IndexWorld::new(n, 100, false);
    let mut ib = IndexWorld::new(n, 100, true);
    for _ in 0..3 {
        iw.tick();
        ib.tick();
        assert_eq!(net_changes(&iw), net_changes(&ib), "per-move and batch changes disagree");
    }
    for i in 0..n as Slot {
        for (a, b) in [(iw.ix.nearby(i), ib.ix.nearby(i)), (iw.ix.observers(i), ib.ix.observers(i))] {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "avatar {i}: per-move and batch sets disagree");
        }
    }
}

/// CPU time this thread has used (user + system), from `/proc/thread-self/stat` (Linux only;
/// `None` elsewhere). Clock ticks are assumed to be 100 Hz, the Linux default.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// With `PROXIMITY_TICK_CPU` set: prints wall and CPU time per tick, to tell the index's cost
/// from contention on a busy machine (criterion measures wall time only). A value other than `1`
/// is a comma-separated list of the cases to run (e.g. `PROXIMITY_TICK_CPU=index_batch/100000`);
/// then nothing else runs (handy under a profiler). Returns whether to go on.
fn cpu_report() -> bool {
    let Some(filter) = std::env::var_os("PROXIMITY_TICK_CPU") else {
        return true;
    };
    let filter = filter.to_string_lossy().into_owned();
    let wanted = |name: &str| filter == "1" || filter.split(',').any(|f| f == name);
    let time = |name: &str, ticks: u32, tick: &mut dyn FnMut() -> usize| {
        for _ in 0..ticks.div_ceil(10) {
            black_box(tick());
        }
        let (c0, t0) = (thread_cpu_time(), std::time::Instant::now());
        for _ in 0..ticks {
            black_box(tick());
        }
        let wall = t0.elapsed() / ticks;
        let cpu = thread_cpu_time().zip(c0).map(|(a, b)| (a - b) / ticks);
        eprintln!("{name}: wall {wall:?}/tick, cpu {cpu:?}/tick");
    };
    for (name, n, big, batch, ticks) in [
        ("index/10000", 10_000, 0, false, 4000),
        ("index_batch/10000", 10_000, 0, true, 4000),
        ("index/100000", 100_000, 0, false, 400),
        ("index_batch/100000", 100_000, 0, true, 400),
        ("index_mixed_radii/100000", 100_000, 100, false, 300),
        ("index_mixed_radii_batch/100000", 100_000, 100, true, 300),
    ] {
        if wanted(name) {
            let mut w = IndexWorld::new(n, big, batch);
            time(name, ticks, &mut || w.tick());
        }
    }
    if wanted("brute_force/10000") {
        let mut w = BruteWorld::new(10_000);
        time("brute_force/10000", 10, &mut || w.tick());
    }
    filter == "1"
}

fn bench(c: &mut Criterion) {
    if !cpu_report() {
        return;
    }
    verify();
    let mut g = c.benchmark_group("proximity_tick");
    for n in [10_000usize, 100_000] {
        for (name, batch) in [("index", false), ("index_batch", true)] {
            let mut w = IndexWorld::new(n, 0, batch);
            g.bench_function(BenchmarkId::new(name, n), |b| b.iter(|| black_box(w.tick())));
        }
    }
    for (name, batch) in [("index_mixed_radii", false), ("index_mixed_radii_batch", true)] {
        let mut w = IndexWorld::new(100_000, 100, batch);
        g.bench_function(BenchmarkId::new(name, 100_000), |b| b.iter(|| black_box(w.tick())));
    }
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    let mut w = BruteWorld::new(10_000);
    g.bench_function(BenchmarkId::new("brute_force", 10_000), |b| b.iter(|| black_box(w.tick())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
