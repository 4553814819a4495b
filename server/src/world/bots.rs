//! Simulated avatars for load testing (`--sim-bots N`): wandering avatars without connections,
//! never persisted and not listed as online users. Each tick the next 10% of them (in turn, so
//! each bot tries a step every tenth tick and the tick walks its bots in memory order) step one
//! tile in a random direction through the same movement rule and the same step ([`accept_step`]) as
//! players, so they exercise the proximity index (their steps join the tick's one batch),
//! land membership and the frames real users near them receive.

use std::sync::Arc;

use bevy_app::{App, Startup, Update};
use bevy_ecs::prelude::*;
use landworld_shared::limits::DEFAULT_RADIUS;
use landworld_shared::world::TilePos;
use uuid::Uuid;

use super::avatar::Avatar;
use super::lands::{LandChanged, Lands};
use super::movement::{StepBatch, accept_step, validate_move};
use super::{Map, TickSet, WorldSettings};

/// Marks a simulated avatar.
#[derive(Component, Debug)]
pub struct Bot;

/// Every bot, so a tick can take the ones that move without visiting the others, and where the
/// next tick's turn starts.
#[derive(Resource, Default, Debug)]
pub struct Bots {
    pub all: Vec<Entity>,
    next: usize,
}

/// Percentage of bots that step each tick.
pub const BOT_MOVE_PERCENT: u64 = 10;

/// xorshift64*: fast, deterministic, good enough for wandering.
#[derive(Resource, Debug)]
pub struct BotRng(u64);

impl BotRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub(super) fn plugin(app: &mut App) {
    app.insert_resource(BotRng::new(0x5eed_1a2d));
    app.init_resource::<Bots>();
    app.add_systems(Startup, spawn_bots);
    app.add_systems(Update, move_bots.in_set(TickSet::Simulate));
}

fn spawn_bots(world: &mut World) {
    let n = world.resource::<WorldSettings>().sim_bots;
    if n == 0 {
        return;
    }
    let map = world.resource::<Map>().0.clone();
    let mut placed = 0u32;
    for i in 0..n {
        let mut pos = None;
        for _ in 0..64 {
            let r = world.resource_mut::<BotRng>().next_u64();
            let p = TilePos::new((r % u64::from(map.width)) as i32, ((r >> 32) % u64::from(map.height)) as i32);
            if map.is_walkable(p) {
                pos = Some(p);
                break;
            }
        }
        let Some(pos) = pos else { continue };
        let user_id = Uuid::new_v4();
        let entity = super::commands::spawn_avatar(
            world,
            user_id,
            Arc::from(format!("bot-{i}")),
            pos,
            DEFAULT_RADIUS,
            Vec::new(),
        );
        world.entity_mut(entity).insert(Bot);
        world.resource_mut::<Bots>().all.push(entity);
        placed += 1;
    }
    tracing::info!(bots = placed, "simulated avatars spawned");
}

const DIRS: [(i32, i32); 8] = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)];

fn move_bots(
    mut bots: ResMut<Bots>,
    mut avatars: Query<&mut Avatar, With<Bot>>,
    map: Res<Map>,
    settings: Res<WorldSettings>,
    lands: Res<Lands>,
    mut steps: ResMut<StepBatch>,
    mut rng: ResMut<BotRng>,
    mut land_changes: MessageWriter<LandChanged>,
) {
    let n = bots.all.len();
    if n == 0 {
        return;
    }
    let moves = (n as u64 * BOT_MOVE_PERCENT).div_ceil(100) as usize;
    let start = bots.next;
    bots.next = (start + moves) % n;
    for k in 0..moves {
        let entity = bots.all[(start + k) % n];
        let Ok(mut avatar) = avatars.get_mut(entity) else { continue };
        let (dx, dy) = DIRS[(rng.next_u64() >> 40) as usize % 8];
        let to = TilePos::new(avatar.pos.x + dx, avatar.pos.y + dy);
        if validate_move(&map.0, avatar.pos, to, settings.max_step).is_err() {
            continue;
        }
        accept_step(entity, &mut avatar, to, &lands, &mut steps, &mut land_changes);
    }
}
