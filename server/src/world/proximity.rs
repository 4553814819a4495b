//! Proximity: after the moves of a tick, takes the index's changes and pushes `nearby_users` to
//! each avatar whose list changed (someone entered, left, or moved within it) — both sides of a
//! pair, each by its own radius. Nothing is sent when nothing changed.
//!
//! Crowds are bounded two ways, so a dense neighbourhood that changes on every tick cannot flood
//! its listeners' send queues:
//! - **Coalescing**: an avatar gets at most one frame per [`WorldSettings::nearby_every_ticks`]
//!   (`--nearby-interval-ms`, default 200 ms). The first change after a quiet spell goes out on
//!   its tick; later changes inside the interval are deferred and sent once, with the state as
//!   it is when the interval has passed. A new connection or a `set_radius` is answered at once.
//! - **Cap**: a frame lists at most [`MAX_NEARBY_LISTED`] users, the nearest ones, and then
//!   carries `total`, the full count within the radius.
//!
//! The index itself ([`landworld_shared::world::ProximityIndex`]) is incremental: its work is
//! proportional to what moved, never all-pairs.

use bevy_app::{App, Update};
use bevy_ecs::entity::EntityHashSet;
use bevy_ecs::prelude::*;
use landworld_shared::limits::MAX_NEARBY_LISTED;
use landworld_shared::protocol::ws::{NearbyUser, ServerFrame};
use landworld_shared::world::{ProximityChanges, Slot, chebyshev};

use super::avatar::{Avatar, Proximity};
use super::conn::encode;
use super::{TickCount, TickSet, WorldSettings};

/// Avatars that get a fresh `nearby_users` this tick even if their set did not change
/// (a new connection, a `set_radius`).
#[derive(Resource, Default, Debug)]
pub struct ForceNearby(pub Vec<Entity>);

/// Reused buffer for the index's changes.
#[derive(Resource, Default, Debug)]
pub struct ChangeBuffer(pub ProximityChanges);

/// When each slot last got a `nearby_users` frame, and the slots whose changes wait for their
/// interval to pass.
#[derive(Resource, Default, Debug)]
pub struct NearbyPacing {
    /// By slot: the tick of the last frame (0: none yet).
    last_sent: Vec<u64>,
    /// By slot: a change is waiting in `deferred`.
    waiting: Vec<bool>,
    deferred: Vec<Slot>,
}

impl NearbyPacing {
    fn grow(&mut self, slot: Slot) -> usize {
        let i = slot as usize;
        if self.last_sent.len() <= i {
            self.last_sent.resize(i + 1, 0);
            self.waiting.resize(i + 1, false);
        }
        i
    }

    /// True when the slot may get a frame on tick `now`; otherwise the change is remembered.
    fn admit(&mut self, slot: Slot, now: u64, every: u64) -> bool {
        let i = self.grow(slot);
        if self.waiting[i] {
            return false;
        }
        let last = self.last_sent[i];
        if last == 0 || now.saturating_sub(last) >= every {
            return true;
        }
        self.waiting[i] = true;
        self.deferred.push(slot);
        false
    }

    fn sent(&mut self, slot: Slot, now: u64) {
        let i = self.grow(slot);
        self.last_sent[i] = now;
        self.waiting[i] = false;
    }

    /// Deferred slots whose interval has passed by tick `now` (removed from the waiting list).
    fn due(&mut self, now: u64, every: u64, out: &mut Vec<Slot>) {
        let (last_sent, waiting) = (&self.last_sent, &mut self.waiting);
        self.deferred.retain(|&slot| {
            let i = slot as usize;
            if now.saturating_sub(last_sent[i]) >= every {
                waiting[i] = false;
                out.push(slot);
                false
            } else {
                true
            }
        });
    }

    /// Number of slots with a deferred change (for tests).
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<ForceNearby>();
    app.init_resource::<ChangeBuffer>();
    app.init_resource::<NearbyPacing>();
    app.add_systems(Update, publish_nearby.in_set(TickSet::Proximity));
}

fn publish_nearby(
    avatars: Query<&Avatar>,
    mut prox: ResMut<Proximity>,
    mut force: ResMut<ForceNearby>,
    mut buf: ResMut<ChangeBuffer>,
    mut pacing: ResMut<NearbyPacing>,
    ticks: Res<TickCount>,
    settings: Res<WorldSettings>,
) {
    let (now, every) = (ticks.0.max(1), settings.nearby_every_ticks());
    let buf = &mut buf.0;
    buf.entered.clear();
    buf.left.clear();
    buf.dirty.clear();
    prox.index.take_changes(buf);
    // Only avatars with a connection get frames; the flag is checked without touching them.
    let mut slots: Vec<Slot> = Vec::new();
    pacing.due(now, every, &mut slots);
    for &slot in &buf.dirty {
        if prox.is_connected(slot) && pacing.admit(slot, now, every) {
            slots.push(slot);
        }
    }
    let mut sent = EntityHashSet::default();
    let forced = force.0.drain(..).filter_map(|e| avatars.get(e).ok());
    let paced = slots.iter().filter_map(|&slot| prox.owner(slot)).filter_map(|e| avatars.get(e).ok());
    for avatar in forced.chain(paced) {
        let Some(entity) = prox.owner(avatar.slot) else { continue };
        if avatar.conns.is_empty() || !sent.insert(entity) {
            continue;
        }
        avatar.send(&encode(&build_nearby(avatar, &prox, &avatars)));
        pacing.sent(avatar.slot, now);
    }
}

/// An avatar's `nearby_users` frame: everyone within its radius, or the
/// [`MAX_NEARBY_LISTED`] nearest with `total`.
pub fn build_nearby(avatar: &Avatar, prox: &Proximity, avatars: &Query<&Avatar>) -> ServerFrame {
    let mut near: Vec<(u32, &Avatar)> = prox
        .index
        .nearby(avatar.slot)
        .iter()
        .filter_map(|&s| prox.owner(s))
        .filter_map(|e| avatars.get(e).ok())
        .map(|other| (chebyshev(avatar.pos, other.pos), other))
        .collect();
    let mut total = None;
    if near.len() > MAX_NEARBY_LISTED {
        total = u32::try_from(near.len()).ok();
        near.select_nth_unstable_by_key(MAX_NEARBY_LISTED - 1, |(d, _)| *d);
        near.truncate(MAX_NEARBY_LISTED);
        near.sort_unstable_by_key(|(d, _)| *d);
    }
    let users = near
        .into_iter()
        .map(|(distance, other)| NearbyUser {
            user_id: other.user_id,
            username: other.username.to_string(),
            x: other.pos.x,
            y: other.pos.y,
            distance,
        })
        .collect();
    ServerFrame::NearbyUsers { radius: avatar.radius, users, total }
}
