//! One full simulation tick through the real ECS app: drain commands, apply moves (10% of the
//! avatars step one tile), update the proximity index, compute and publish the diffs, land
//! membership, presence, the read model — on a 2048x2048 open world with radius 5.
//!
//! `cargo bench -p landworld-server --bench tick`. On a shared machine, set `TICK_CPU=1` to
//! print wall and process CPU time per tick instead (measured outside criterion; criterion is skipped).
//! The engine-level benchmark with the brute-force all-pairs baseline is
//! `cargo bench -p landworld-shared --bench proximity_tick`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use landworld_server::world::{WorldParts, WorldSettings, build_app};
use landworld_shared::world::WorldMap;

fn world_with_bots(
    n: u32,
) -> (bevy_app::App, tokio::sync::mpsc::Receiver<landworld_server::world::persist::PersistMsg>) {
    let (persist_tx, persist_rx) = tokio::sync::mpsc::channel(16);
    let parts = WorldParts {
        settings: WorldSettings {
            tick_hz: 20,
            max_step: 1,
            position_flush: Duration::from_secs(3600),
            nearby_interval: Duration::from_millis(200),
            sim_bots: n,
        },
        map: Arc::new(WorldMap::open(2048, 2048)),
        lands: Vec::new(),
        persist_tx,
        chat: None,
    };
    let (mut app, _handle) = build_app(parts);
    app.finish();
    app.cleanup();
    // First update spawns the bots; a few more settle the initial diffs.
    for _ in 0..5 {
        app.update();
    }
    (app, persist_rx)
}

/// CPU time the whole process has used (user + system, every thread: the schedule may run
/// systems on Bevy's task pool), from `/proc/self/stat` (Linux only; `None` elsewhere). Clock
/// ticks are assumed to be 100 Hz, the Linux default.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// With `TICK_CPU` set: prints wall and CPU time per tick and returns true (skip criterion).
fn cpu_report() -> bool {
    if std::env::var_os("TICK_CPU").is_none() {
        return false;
    }
    for (n, ticks) in [(10_000u32, 2000u32), (100_000, 200)] {
        let (mut app, _rx) = world_with_bots(n);
        for _ in 0..ticks / 10 {
            app.update();
        }
        let (c0, t0) = (process_cpu_time(), std::time::Instant::now());
        for _ in 0..ticks {
            app.update();
        }
        let wall = t0.elapsed() / ticks;
        let cpu = process_cpu_time().zip(c0).map(|(a, b)| (a - b) / ticks);
        eprintln!("ecs_tick/{n}: wall {wall:?}/tick, cpu {cpu:?}/tick");
    }
    true
}

fn ticks(c: &mut Criterion) {
    if cpu_report() {
        return;
    }
    let mut group = c.benchmark_group("ecs_tick");
    group.sample_size(30).measurement_time(Duration::from_secs(8));
    for n in [10_000u32, 100_000] {
        let (mut app, _rx) = world_with_bots(n);
        group.bench_function(format!("{n}_avatars_10pct_moving"), |b| b.iter(|| app.update()));
    }
    group.finish();
}

criterion_group!(benches, ticks);
criterion_main!(benches);
