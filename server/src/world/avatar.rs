//! The avatar component and the indexes that find avatars by user id and by proximity slot.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bevy_app::App;
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::{ServerFrame, Status};
use landworld_shared::world::{ProximityIndex, Slot, TilePos};
use uuid::Uuid;

use super::conn::{ConnHandle, OutFrame, encode};

/// Moves queued per avatar; one is applied per tick.
pub const MOVE_QUEUE: usize = 8;

/// A queued move and the connection that asked for it (errors go back there).
#[derive(Clone, Copy, Debug)]
pub struct PendingMove {
    pub to: TilePos,
    pub conn_id: Uuid,
}

/// One per signed-in user, however many connections.
#[derive(Component, Debug)]
pub struct Avatar {
    pub user_id: Uuid,
    pub username: Arc<str>,
    pub pos: TilePos,
    pub radius: u32,
    pub slot: Slot,
    /// Index into [`super::lands::Lands`] of the land the avatar stands on.
    pub land: Option<usize>,
    pub status: Status,
    /// Unix ms of the last presence change.
    pub status_since: i64,
    pub conns: Vec<ConnHandle>,
    pub pending_moves: VecDeque<PendingMove>,
}

impl Avatar {
    pub fn send(&self, frame: &OutFrame) {
        for conn in &self.conns {
            conn.send(frame);
        }
    }

    pub fn send_frame(&self, frame: &ServerFrame) {
        if !self.conns.is_empty() {
            self.send(&encode(frame));
        }
    }

    pub fn conn(&self, conn_id: Uuid) -> Option<&ConnHandle> {
        self.conns.iter().find(|c| c.conn_id == conn_id)
    }
}

/// User id → avatar entity.
#[derive(Resource, Default, Debug)]
pub struct UsersIndex(pub HashMap<Uuid, Entity>);

/// The proximity index, the owner of each of its slots, and which slots have a connection (so
/// the tick skips building frames for avatars nobody is listening to without touching them).
#[derive(Resource)]
pub struct Proximity {
    pub index: ProximityIndex,
    pub owners: Vec<Entity>,
    connected: Vec<bool>,
}

impl Proximity {
    pub fn new(width: u32, height: u32) -> Self {
        Self { index: ProximityIndex::new(width, height), owners: Vec::new(), connected: Vec::new() }
    }

    pub fn insert(&mut self, pos: TilePos, radius: u32, owner: Entity) -> Slot {
        let slot = self.index.insert(pos, radius);
        let i = slot as usize;
        if self.owners.len() <= i {
            self.owners.resize(i + 1, Entity::PLACEHOLDER);
            self.connected.resize(i + 1, false);
        }
        self.owners[i] = owner;
        self.connected[i] = false;
        slot
    }

    pub fn owner(&self, slot: Slot) -> Option<Entity> {
        self.owners.get(slot as usize).copied().filter(|e| *e != Entity::PLACEHOLDER)
    }

    pub fn set_connected(&mut self, slot: Slot, connected: bool) {
        if let Some(c) = self.connected.get_mut(slot as usize) {
            *c = connected;
        }
    }

    pub fn is_connected(&self, slot: Slot) -> bool {
        self.connected.get(slot as usize).copied().unwrap_or(false)
    }
}

/// Avatars with queued moves, so the tick visits only those (not every avatar).
#[derive(Resource, Default, Debug)]
pub struct PendingMovers(pub Vec<Entity>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<UsersIndex>();
    app.init_resource::<PendingMovers>();
    let (w, h) = {
        let map = app.world().resource::<super::Map>();
        (map.0.width, map.0.height)
    };
    app.insert_resource(Proximity::new(w, h));
}
