//! Presence: `presence_update` goes to the user's own connections and to every user who shares
//! a room with them (their land) or has them in their proximity set.

use bevy_app::{App, Update};
use bevy_ecs::entity::EntityHashSet;
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::ServerFrame;

use super::TickSet;
use super::avatar::{Avatar, Proximity};
use super::conn::encode;
use super::lands::Lands;
use super::snapshot::SnapshotDirty;
use crate::store::ms_to_rfc3339;

/// A user's status changed (online, away, busy; offline is broadcast immediately on leave).
#[derive(Message, Debug, Clone, Copy)]
pub struct PresenceChanged {
    pub entity: Entity,
}

pub(super) fn plugin(app: &mut App) {
    app.add_message::<PresenceChanged>();
    app.add_systems(Update, publish_presence.in_set(TickSet::Presence));
}

fn publish_presence(world: &mut World) {
    let changed: Vec<PresenceChanged> = world.resource_mut::<Messages<PresenceChanged>>().drain().collect();
    for change in changed {
        broadcast_presence(world, change.entity);
    }
}

/// Sends the avatar's current presence to everyone who should see it.
pub fn broadcast_presence(world: &mut World, entity: Entity) {
    world.resource_mut::<SnapshotDirty>().presence = true;
    let Some(avatar) = world.get::<Avatar>(entity) else { return };
    let frame = encode(&ServerFrame::PresenceUpdate {
        user_id: avatar.user_id,
        username: avatar.username.to_string(),
        status: avatar.status,
        last_seen: Some(ms_to_rfc3339(avatar.status_since)),
    });
    let mut recipients = EntityHashSet::default();
    recipients.insert(entity);
    if let Some(members) = avatar.land.and_then(|land| world.resource::<Lands>().members.get(land)) {
        recipients.extend(members.iter().copied());
    }
    let prox = world.resource::<Proximity>();
    recipients.extend(prox.index.observers(avatar.slot).iter().filter_map(|&s| prox.owner(s)));
    for e in recipients {
        if let Some(a) = world.get::<Avatar>(e) {
            a.send(&frame);
        }
    }
}
