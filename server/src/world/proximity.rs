//! Proximity: after the moves of a tick, takes the index's changes and pushes `nearby_users` to
//! each avatar whose list changed (someone entered, left, or moved within it) — both sides of a
//! pair, each by its own radius. Nothing is sent when nothing changed.
//!
//! The index itself ([`landworld_shared::world::ProximityIndex`]) is incremental: its work is
//! proportional to what moved, never all-pairs.

use bevy_app::{App, Update};
use bevy_ecs::entity::EntityHashSet;
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::{NearbyUser, ServerFrame};
use landworld_shared::world::{ProximityChanges, chebyshev};

use super::TickSet;
use super::avatar::{Avatar, Proximity};
use super::conn::encode;

/// Avatars that get a fresh `nearby_users` this tick even if their set did not change
/// (a new connection, a `set_radius`).
#[derive(Resource, Default, Debug)]
pub struct ForceNearby(pub Vec<Entity>);

/// Reused buffer for the index's changes.
#[derive(Resource, Default, Debug)]
pub struct ChangeBuffer(pub ProximityChanges);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<ForceNearby>();
    app.init_resource::<ChangeBuffer>();
    app.add_systems(Update, publish_nearby.in_set(TickSet::Proximity));
}

fn publish_nearby(
    avatars: Query<&Avatar>,
    mut prox: ResMut<Proximity>,
    mut force: ResMut<ForceNearby>,
    mut buf: ResMut<ChangeBuffer>,
) {
    let buf = &mut buf.0;
    buf.entered.clear();
    buf.left.clear();
    buf.dirty.clear();
    prox.index.take_changes(buf);
    // Only avatars with a connection get frames; the flag is checked without touching them.
    let mut sent = EntityHashSet::default();
    let dirty = buf.dirty.iter().filter(|&&slot| prox.is_connected(slot)).filter_map(|&slot| prox.owner(slot));
    let targets: Vec<Entity> = dirty.chain(force.0.drain(..)).collect();
    for entity in targets {
        let Ok(avatar) = avatars.get(entity) else { continue };
        if avatar.conns.is_empty() || !sent.insert(entity) {
            continue;
        }
        avatar.send(&encode(&build_nearby(avatar, &prox, &avatars)));
    }
}

/// An avatar's `nearby_users` frame.
pub fn build_nearby(avatar: &Avatar, prox: &Proximity, avatars: &Query<&Avatar>) -> ServerFrame {
    let users = prox
        .index
        .nearby(avatar.slot)
        .iter()
        .filter_map(|&s| prox.owner(s))
        .filter_map(|e| avatars.get(e).ok())
        .map(|other| NearbyUser {
            user_id: other.user_id,
            username: other.username.to_string(),
            x: other.pos.x,
            y: other.pos.y,
            distance: chebyshev(avatar.pos, other.pos),
        })
        .collect();
    ServerFrame::NearbyUsers { radius: avatar.radius, users }
}
