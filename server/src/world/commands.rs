//! Inbound commands from the async side, drained at the start of each tick and applied in order:
//! connections come and go, radius/status changes, land edits; moves are queued on the avatar
//! (one is applied per tick by [`super::movement`]).

use std::collections::VecDeque;
use std::sync::Arc;

use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use landworld_shared::limits::DEFAULT_RADIUS;
use landworld_shared::protocol::ws::{ServerFrame, Status, error_code};
use landworld_shared::world::TilePos;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::avatar::{Avatar, MOVE_QUEUE, PendingMove, PendingMovers, Proximity, UsersIndex};
use super::conn::ConnHandle;
use super::lands::{LandChanged, LandInfo, Lands};
use super::persist::PersistState;
use super::presence::PresenceChanged;
use super::proximity::ForceNearby;
use super::{Map, TickSet};
use crate::store::positions::SavedPosition;
use crate::store::{ms_to_rfc3339, now_ms};

/// What the async side asks of the world.
#[derive(Debug)]
pub enum WorldCommand {
    /// A connection opened for `user_id`. The world answers on the connection itself with
    /// `connected` (then presence, rooms and nearby users).
    Connect { user_id: Uuid, username: Arc<str>, conn: ConnHandle, saved: Option<SavedPosition> },
    /// A connection closed.
    Disconnect { user_id: Uuid, conn_id: Uuid },
    /// `update_location`: validated and applied on a later tick, one per tick.
    Move { user_id: Uuid, conn_id: Uuid, to: TilePos },
    /// `set_radius` (already validated to 1..=50).
    SetRadius { user_id: Uuid, radius: u32 },
    /// `set_status` (`online`, `away` or `busy`).
    SetStatus { user_id: Uuid, status: Status },
    /// A land was created or edited by an admin.
    UpsertLand(LandInfo),
    /// Proximity chat: the user's tile and the users within its radius now (None when the user
    /// has no avatar).
    Nearby { user_id: Uuid, reply: tokio::sync::oneshot::Sender<Option<((i32, i32), Vec<Uuid>)>> },
}

/// The receiving end of the command channel.
#[derive(Resource)]
pub struct CommandInbox {
    rx: mpsc::Receiver<WorldCommand>,
    pending: VecDeque<WorldCommand>,
}

impl CommandInbox {
    pub fn new(rx: mpsc::Receiver<WorldCommand>) -> Self {
        Self { rx, pending: VecDeque::new() }
    }

    /// Queues a command from inside the world thread (game clients' input), applied this tick
    /// with the ones from the channel.
    pub fn push(&mut self, cmd: WorldCommand) {
        self.pending.push_back(cmd);
    }
}

/// At most this many commands are applied per tick, so a flood cannot stall the tick; the rest
/// wait in the channel (which applies backpressure to the senders).
const MAX_COMMANDS_PER_TICK: usize = 200_000;

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Update, receive_commands.in_set(TickSet::ReceiveCommands));
    app.add_systems(Update, apply_commands.in_set(TickSet::ApplyCommands));
}

fn receive_commands(mut inbox: ResMut<CommandInbox>) {
    let inbox = &mut *inbox;
    while inbox.pending.len() < MAX_COMMANDS_PER_TICK {
        match inbox.rx.try_recv() {
            Ok(cmd) => inbox.pending.push_back(cmd),
            Err(_) => break,
        }
    }
}

fn apply_commands(world: &mut World) {
    let commands: Vec<WorldCommand> = world.resource_mut::<CommandInbox>().pending.drain(..).collect();
    for cmd in commands {
        match cmd {
            WorldCommand::Connect { user_id, username, conn, saved } => connect(world, user_id, username, conn, saved),
            WorldCommand::Disconnect { user_id, conn_id } => disconnect(world, user_id, conn_id),
            WorldCommand::Move { user_id, conn_id, to } => queue_move(world, user_id, conn_id, to),
            WorldCommand::SetRadius { user_id, radius } => set_radius(world, user_id, radius),
            WorldCommand::SetStatus { user_id, status } => set_status(world, user_id, status),
            WorldCommand::UpsertLand(info) => super::lands::upsert_land(world, info),
            WorldCommand::Nearby { user_id, reply } => {
                let _ = reply.send(nearby_users(world, user_id));
            }
        }
    }
}

fn avatar_entity(world: &World, user_id: Uuid) -> Option<Entity> {
    world.resource::<UsersIndex>().0.get(&user_id).copied()
}

/// The spawn position: the saved one when it is still walkable, else a map spawn point
/// (chosen by user id so that users spread over the spawn points).
fn spawn_position(map: &landworld_shared::world::WorldMap, user_id: Uuid, saved: Option<SavedPosition>) -> TilePos {
    if let Some(s) = saved {
        let p = TilePos::new(s.x, s.y);
        if map.is_walkable(p) {
            return p;
        }
    }
    if map.spawns.is_empty() {
        return TilePos::new(0, 0);
    }
    let i = (user_id.as_u128() % map.spawns.len() as u128) as usize;
    map.spawns[i]
}

fn connect(world: &mut World, user_id: Uuid, username: Arc<str>, conn: ConnHandle, saved: Option<SavedPosition>) {
    let tick_hz = world.resource::<super::WorldSettings>().tick_hz;
    let now = now_ms();
    if let Some(entity) = avatar_entity(world, user_id) {
        // A further connection of an online user: same avatar, catch the connection up.
        let lands = world.resource::<Lands>();
        let Some(avatar) = world.get::<Avatar>(entity) else { return };
        let position = lands.position_of(avatar.pos);
        conn.send_frame(&ServerFrame::Connected {
            user_id,
            username: avatar.username.to_string(),
            connection_id: conn.conn_id,
            server_time: ms_to_rfc3339(now),
            tick_hz,
            position,
        });
        conn.send_frame(&ServerFrame::PresenceUpdate {
            user_id,
            username: avatar.username.to_string(),
            status: avatar.status,
            last_seen: Some(ms_to_rfc3339(avatar.status_since)),
        });
        conn.send_frame(&nearby_frame(world, entity));
        if let Some(mut avatar) = world.get_mut::<Avatar>(entity) {
            avatar.conns.push(conn);
            let slot = avatar.slot;
            world.resource_mut::<Proximity>().set_connected(slot, true);
        }
        metrics::gauge!("landworld_ws_connections").increment(1.0);
        return;
    }
    let map = world.resource::<Map>().0.clone();
    let pos = spawn_position(&map, user_id, saved);
    let radius = saved.map(|s| s.radius).filter(|r| (1..=50).contains(r)).unwrap_or(DEFAULT_RADIUS);
    let position = world.resource::<Lands>().position_of(pos);
    conn.send_frame(&ServerFrame::Connected {
        user_id,
        username: username.to_string(),
        connection_id: conn.conn_id,
        server_time: ms_to_rfc3339(now),
        tick_hz,
        position,
    });
    let entity = spawn_avatar(world, user_id, username, pos, radius, vec![conn]);
    world.resource_mut::<ForceNearby>().0.push(entity);
    metrics::gauge!("landworld_ws_connections").increment(1.0);
}

/// Puts a new avatar into the world: the entity, its proximity slot, the user index, and the
/// messages that announce it (presence, land membership). Nearby lists follow from the index.
pub fn spawn_avatar(
    world: &mut World,
    user_id: Uuid,
    username: Arc<str>,
    pos: TilePos,
    radius: u32,
    conns: Vec<ConnHandle>,
) -> Entity {
    let entity = world.spawn_empty().id();
    let connected = !conns.is_empty();
    let slot = {
        let mut prox = world.resource_mut::<Proximity>();
        let slot = prox.insert(pos, radius, entity);
        prox.set_connected(slot, connected);
        slot
    };
    let land = world.resource::<Lands>().land_at(pos);
    world.entity_mut(entity).insert(Avatar {
        user_id,
        username,
        pos,
        radius,
        slot,
        land: None,
        status: Status::Online,
        status_since: now_ms(),
        conns,
        pending_moves: VecDeque::new(),
    });
    world.resource_mut::<UsersIndex>().0.insert(user_id, entity);
    world.write_message(PresenceChanged { entity });
    if land.is_some() {
        world.write_message(LandChanged { entity, from: None, to: land });
    }
    metrics::gauge!("landworld_avatars").increment(1.0);
    entity
}

fn disconnect(world: &mut World, user_id: Uuid, conn_id: Uuid) {
    let Some(entity) = avatar_entity(world, user_id) else { return };
    let remaining = {
        let Some(mut avatar) = world.get_mut::<Avatar>(entity) else { return };
        let before = avatar.conns.len();
        avatar.conns.retain(|c| c.conn_id != conn_id);
        if avatar.conns.len() < before {
            metrics::gauge!("landworld_ws_connections").decrement(1.0);
        }
        avatar.conns.len()
    };
    if remaining > 0 {
        return;
    }
    // The last connection closed: the user goes offline and the avatar leaves the world.
    let now = now_ms();
    if let Some(mut avatar) = world.get_mut::<Avatar>(entity) {
        avatar.status = Status::Offline;
        avatar.status_since = now;
    }
    super::presence::broadcast_presence(world, entity);
    let Some(avatar) = world.get::<Avatar>(entity) else { return };
    let (slot, land, pos, radius) = (avatar.slot, avatar.land, avatar.pos, avatar.radius);
    if land.is_some() {
        super::lands::move_membership(world, entity, land, None);
    }
    world.resource_mut::<Proximity>().index.remove(slot);
    world.resource_mut::<UsersIndex>().0.remove(&user_id);
    world.resource_mut::<PersistState>().leave(SavedPosition { user_id, x: pos.x, y: pos.y, radius }, now);
    world.despawn(entity);
    metrics::gauge!("landworld_avatars").decrement(1.0);
}

fn queue_move(world: &mut World, user_id: Uuid, conn_id: Uuid, to: TilePos) {
    let Some(entity) = avatar_entity(world, user_id) else { return };
    let Some(mut avatar) = world.get_mut::<Avatar>(entity) else { return };
    let was_idle = avatar.pending_moves.is_empty();
    if avatar.pending_moves.len() >= MOVE_QUEUE {
        if let Some(conn) = avatar.conn(conn_id) {
            conn.send_frame(&ServerFrame::error(
                error_code::RATE_LIMITED,
                "too many moves queued; at most one move is applied per tick",
                Some("update_location".into()),
            ));
        }
        return;
    }
    avatar.pending_moves.push_back(PendingMove { to, conn_id });
    if was_idle {
        world.resource_mut::<PendingMovers>().0.push(entity);
    }
}

fn set_radius(world: &mut World, user_id: Uuid, radius: u32) {
    let Some(entity) = avatar_entity(world, user_id) else { return };
    let Some(mut avatar) = world.get_mut::<Avatar>(entity) else { return };
    avatar.radius = radius;
    let slot = avatar.slot;
    world.resource_mut::<Proximity>().index.set_radius(slot, radius);
    world.resource_mut::<PersistState>().mark(entity);
    // Always confirm with a fresh list, even when the set did not change.
    world.resource_mut::<ForceNearby>().0.push(entity);
}

fn set_status(world: &mut World, user_id: Uuid, status: Status) {
    let Some(entity) = avatar_entity(world, user_id) else { return };
    let Some(mut avatar) = world.get_mut::<Avatar>(entity) else { return };
    if avatar.status == status {
        return;
    }
    avatar.status = status;
    avatar.status_since = now_ms();
    world.write_message(PresenceChanged { entity });
}

/// An avatar's tile and the signed-in users (not simulated avatars) within its radius.
fn nearby_users(world: &mut World, user_id: Uuid) -> Option<((i32, i32), Vec<Uuid>)> {
    let entity = avatar_entity(world, user_id)?;
    let avatar = world.get::<Avatar>(entity)?;
    let (slot, pos) = (avatar.slot, avatar.pos);
    let prox = world.resource::<Proximity>();
    let users = prox
        .index
        .nearby(slot)
        .iter()
        .filter(|&&s| prox.is_connected(s))
        .filter_map(|&s| prox.owner(s))
        .filter_map(|e| world.get::<Avatar>(e))
        .map(|a| a.user_id)
        .collect();
    Some(((pos.x, pos.y), users))
}

/// The `nearby_users` frame of an avatar, outside a system.
pub fn nearby_frame(world: &mut World, entity: Entity) -> ServerFrame {
    let mut state = bevy_ecs::system::SystemState::<(Query<&Avatar>, Res<Proximity>)>::new(world);
    let empty = ServerFrame::NearbyUsers { radius: DEFAULT_RADIUS, users: Vec::new(), total: None };
    let Ok((avatars, prox)) = state.get(world) else { return empty };
    match avatars.get(entity) {
        Ok(avatar) => super::proximity::build_nearby(avatar, &prox, &avatars),
        Err(_) => empty,
    }
}
