//! The read model handlers use without touching the tick: online users with positions, counts.
//! Rebuilt when presence changed (at once) or positions changed (at most every few ticks), and
//! swapped in atomically (`ArcSwap`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::{Position, Status};
use uuid::Uuid;

use super::avatar::Avatar;
use super::bots::Bot;
use super::lands::Lands;
use super::{TickCount, TickSet};

/// Position-only changes are published at most this often (ticks).
const POSITION_PUBLISH_TICKS: u64 = 5;
/// Published at least this often (ticks) so the tick counter in stats stays current.
const HEARTBEAT_TICKS: u64 = 20;

#[derive(Clone, Debug, PartialEq)]
pub struct OnlineUser {
    pub user_id: Uuid,
    pub username: Arc<str>,
    pub status: Status,
    /// Unix ms of the last presence change.
    pub status_since: i64,
    pub position: Position,
    pub connection_count: usize,
}

#[derive(Clone, Debug, Default)]
pub struct WorldSnapshot {
    pub tick: u64,
    pub users: Vec<OnlineUser>,
    pub connections: usize,
    /// Every avatar, simulated ones included.
    pub avatars: usize,
    /// Land rooms with at least one member.
    pub active_land_rooms: usize,
}

#[derive(Resource, Clone)]
pub struct Published(pub Arc<ArcSwap<WorldSnapshot>>);

#[derive(Resource, Default, Debug)]
pub struct SnapshotDirty {
    pub presence: bool,
    last_publish: u64,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<SnapshotDirty>();
    app.add_systems(Update, publish_snapshot.in_set(TickSet::Publish));
}

fn publish_snapshot(
    avatars: Query<&Avatar, Without<Bot>>,
    index: Res<super::avatar::UsersIndex>,
    changed: Query<(), (Changed<Avatar>, Without<Bot>)>,
    mut removed: RemovedComponents<Avatar>,
    lands: Res<Lands>,
    tick: Res<TickCount>,
    mut dirty: ResMut<SnapshotDirty>,
    published: Res<Published>,
) {
    let any_removed = removed.read().count() > 0;
    let any_changed = !changed.is_empty();
    let since = tick.0.saturating_sub(dirty.last_publish);
    let due = since >= POSITION_PUBLISH_TICKS;
    if !(dirty.presence || any_removed || (any_changed && due) || since >= HEARTBEAT_TICKS) {
        return;
    }
    let mut connections = 0;
    let users = avatars
        .iter()
        .map(|a| {
            connections += a.conns.len();
            OnlineUser {
                user_id: a.user_id,
                username: a.username.clone(),
                status: a.status,
                status_since: a.status_since,
                position: lands.position_of(a.pos),
                connection_count: a.conns.len(),
            }
        })
        .collect();
    let active_land_rooms = lands.members.iter().filter(|m| !m.is_empty()).count();
    let avatars = index.0.len();
    published.0.store(Arc::new(WorldSnapshot { tick: tick.0, users, connections, avatars, active_land_rooms }));
    dirty.presence = false;
    dirty.last_publish = tick.0;
}
