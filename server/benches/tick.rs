//! One full simulation tick through the real ECS app: drain commands, apply moves (10% of the
//! avatars step one tile), update the proximity index, compute and publish the diffs, land
//! membership, presence, the read model — on a 2048x2048 open world with radius 5.
//!
//! `cargo bench -p landworld-server --bench tick`. The engine-level benchmark with the
//! brute-force all-pairs baseline is `cargo bench -p landworld-shared --bench proximity_tick`.

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
        settings: WorldSettings { tick_hz: 20, max_step: 1, position_flush: Duration::from_secs(3600), sim_bots: n },
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

fn ticks(c: &mut Criterion) {
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
