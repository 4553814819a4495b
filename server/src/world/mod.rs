//! The simulation: a headless Bevy app that owns the world state (avatars, positions, lands,
//! proximity sets, presence) and runs on its own thread at a fixed tick.
//!
//! - Inbound: axum handlers send [`WorldCommand`]s through a bounded channel; the first system of
//!   each tick drains it ([`commands`]).
//! - Each tick, in the order of [`TickSet`]: apply commands (connect, disconnect, radius, status,
//!   lands) → apply queued moves and bot steps ([`movement`], [`bots`]) → one batched update of
//!   the proximity index ([`movement::StepBatch`]) → land membership ([`lands`]) → proximity diffs
//!   ([`proximity`]) → presence ([`presence`]) → publish the read model ([`snapshot`]) → persist
//!   positions periodically ([`persist`]). Game clients' UDP input comes first
//!   ([`TickSet::ReceiveNet`]) and their output last ([`TickSet::SendNet`]), see [`crate::game`].
//! - Outbound: systems push serialized frames into each connection's bounded queue
//!   ([`conn::ConnHandle`]); a full queue kicks that connection (close 4008) instead of waiting.
//!   Handlers read [`snapshot::WorldSnapshot`] through an `ArcSwap` without touching the tick.

pub mod avatar;
pub mod bots;
pub mod commands;
pub mod conn;
pub mod lands;
pub mod movement;
pub mod persist;
pub mod presence;
pub mod proximity;
pub mod snapshot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use landworld_shared::world::WorldMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use commands::WorldCommand;
pub use snapshot::WorldSnapshot;

/// Capacity of the command channel from the async side into the tick.
pub const COMMAND_QUEUE: usize = 65_536;

/// The order of one tick.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickSet {
    /// Game clients' UDP input ([`crate::game`]).
    ReceiveNet,
    ReceiveCommands,
    ApplyCommands,
    Simulate,
    /// The tick's accepted steps go into the proximity index in one batch.
    ApplySteps,
    Memberships,
    Proximity,
    Presence,
    Publish,
    Persist,
    /// Game clients' output: queued frames, view replication, the socket flush.
    SendNet,
}

/// Static settings of the simulation.
#[derive(Resource, Clone, Debug)]
pub struct WorldSettings {
    pub tick_hz: u32,
    pub max_step: u32,
    pub position_flush: Duration,
    /// Shortest gap between two `nearby_users` frames to one avatar (see [`proximity`]).
    pub nearby_interval: Duration,
    /// Simulated wandering avatars for load testing (see [`bots`]).
    pub sim_bots: u32,
}

impl WorldSettings {
    /// [`Self::nearby_interval`] in whole ticks, at least 1 (1: a frame on every tick with a
    /// change).
    pub fn nearby_every_ticks(&self) -> u64 {
        let ticks = (self.nearby_interval.as_secs_f64() * f64::from(self.tick_hz)).round();
        if ticks.is_finite() && ticks >= 1.0 { ticks as u64 } else { 1 }
    }
}

/// The loaded map (bounds and walkability).
#[derive(Resource, Clone)]
pub struct Map(pub Arc<WorldMap>);

/// Counts ticks.
#[derive(Resource, Default, Debug)]
pub struct TickCount(pub u64);

/// Adds every world system to an app. Tests use it with `MinimalPlugins`-style setups; the server
/// uses it from [`spawn_world`].
pub fn plugin(app: &mut App) {
    app.configure_sets(
        Update,
        (
            TickSet::ReceiveNet,
            TickSet::ReceiveCommands,
            TickSet::ApplyCommands,
            TickSet::Simulate,
            TickSet::ApplySteps,
            TickSet::Memberships,
            TickSet::Proximity,
            TickSet::Presence,
            TickSet::Publish,
            TickSet::Persist,
            TickSet::SendNet,
        )
            .chain(),
    );
    app.init_resource::<TickCount>();
    app.add_systems(Update, count_tick.in_set(TickSet::ReceiveCommands));
    avatar::plugin(app);
    commands::plugin(app);
    movement::plugin(app);
    lands::plugin(app);
    proximity::plugin(app);
    presence::plugin(app);
    snapshot::plugin(app);
    persist::plugin(app);
    bots::plugin(app);
}

fn count_tick(mut ticks: ResMut<TickCount>) {
    ticks.0 += 1;
}

/// What the async side holds to talk to the world.
#[derive(Clone)]
pub struct WorldHandle {
    pub commands: mpsc::Sender<WorldCommand>,
    pub snapshot: Arc<ArcSwap<WorldSnapshot>>,
    pub map: Arc<WorldMap>,
    pub tick_hz: u32,
}

/// Everything needed to build the world app.
pub struct WorldParts {
    pub settings: WorldSettings,
    pub map: Arc<WorldMap>,
    pub lands: Vec<lands::LandInfo>,
    pub persist_tx: mpsc::Sender<persist::PersistMsg>,
    /// The chat service (land-room membership follows avatars); None in plugin tests.
    pub chat: Option<crate::chat::Chat>,
}

/// Builds the world app (without running it) and the handle to talk to it.
pub fn build_app(parts: WorldParts) -> (App, WorldHandle) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let snapshot = Arc::new(ArcSwap::from_pointee(WorldSnapshot::default()));
    let mut app = App::new();
    app.add_plugins(bevy_time::TimePlugin);
    app.insert_resource(parts.settings.clone());
    app.insert_resource(Map(parts.map.clone()));
    app.insert_resource(commands::CommandInbox::new(rx));
    app.insert_resource(lands::Lands::new(&parts.map, parts.lands));
    app.insert_resource(lands::ChatLink(parts.chat.clone()));
    app.insert_resource(snapshot::Published(snapshot.clone()));
    app.insert_resource(persist::PersistState::new(parts.persist_tx, parts.settings.position_flush));
    app.add_plugins(plugin);
    // The tick's sets run one after another; on a small machine handing systems to a task pool
    // only adds thread hops that wait behind the async runtime's workers.
    app.edit_schedule(Update, |schedule| {
        schedule.set_executor(bevy_ecs::schedule::SingleThreadedExecutor::default());
    });
    let handle = WorldHandle { commands: tx, snapshot, map: parts.map, tick_hz: parts.settings.tick_hz };
    (app, handle)
}

/// Runs the world on its own thread at the configured tick until `stop` is cancelled, then runs
/// one last tick (to apply the final disconnects), disconnects the game clients and flushes every
/// position. The app is built on that thread (a Bevy `App` is not `Send`); the handle comes back
/// once it is ready. With `game`, the app also runs the game clients' renet server
/// ([`crate::game`]).
pub fn spawn_world(
    parts: WorldParts,
    game: Option<crate::game::GameParts>,
    stop: CancellationToken,
) -> std::io::Result<(WorldHandle, std::thread::JoinHandle<()>)> {
    let period = Duration::from_secs_f64(1.0 / f64::from(parts.settings.tick_hz));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new().name("landworld-world".into()).spawn(move || {
        raise_priority();
        let (mut app, handle) = build_app(parts);
        if let Some(game) = game
            && let Err(e) = crate::game::install(&mut app, game)
        {
            tracing::error!(error = %e, "the game server could not start; game clients cannot connect");
        }
        app.finish();
        app.cleanup();
        if ready_tx.send(handle).is_err() {
            return;
        }
        let mut next = Instant::now();
        while !stop.is_cancelled() {
            let started = Instant::now();
            app.update();
            metrics::histogram!("landworld_tick_duration_seconds").record(started.elapsed().as_secs_f64());
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                // Overran: do not try to catch up with a burst of ticks.
                next = now;
            }
        }
        app.update();
        crate::game::shutdown(app.world_mut());
        persist::flush_all(app.world_mut());
        tracing::info!("world stopped");
    })?;
    let handle = ready_rx.recv().map_err(|_| std::io::Error::other("the world thread failed to start"))?;
    Ok((handle, thread))
}

/// The tick is the server's one thread with a deadline (every 1/tick-hz seconds): ask the kernel
/// to favour it over the async workers and anything else on the machine, so that a busy machine
/// delays WebSocket writes rather than ticks (see [`crate::sched`]). Without `CAP_SYS_NICE`
/// (root) the thread keeps its priority, which is logged.
fn raise_priority() {
    match crate::sched::set_current_thread_nice(crate::sched::WORLD_NICE) {
        Ok(()) => tracing::debug!(nice = crate::sched::WORLD_NICE, "world thread priority raised"),
        Err(e) => tracing::info!(error = %e, "the world thread keeps its priority"),
    }
}

#[cfg(test)]
mod tests;
