//! Avatars: the own avatar (blue, with a gold outline) and every avatar the server replicates
//! into view (pink), each with its name label (`Text2d`) and a presence dot; they glide from tile
//! to tile. Remote avatars are kept in step with the network thread's replica every frame,
//! keyed by user id (short ids are per connection and may be reused).

use std::collections::HashMap;

use bevy::prelude::*;
use bevy::sprite::Text2dShadow;
use landworld_shared::protocol::game::ServerMessage;
use landworld_shared::protocol::ws::Status;
use landworld_shared::world::TilePos;
use uuid::Uuid;

use super::movement::{Prediction, STEP_EVERY};
use crate::app::World;
use crate::net::link::NetEvent;
use crate::net::{Connection, FromServer, Net};
use crate::render::tile_center;

/// Draw order: above every tile layer.
pub const Z_AVATARS: f32 = 50.0;
/// The own avatar's outline: the highlight.
pub const OWN_OUTLINE: Color = Color::srgb_u8(255, 214, 0);
pub const OWN_BODY: Color = Color::srgb_u8(40, 110, 255);
pub const OTHER_OUTLINE: Color = Color::srgb_u8(36, 28, 48);
pub const OTHER_BODY: Color = Color::srgb_u8(232, 64, 160);
const OUTLINE_SIZE: f32 = 26.0;
const BODY_SIZE: f32 = 18.0;

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<AvatarIndex>().init_resource::<PresenceBook>().add_systems(
        Update,
        (track_presence, spawn_own_avatar, sync_remote_avatars, place_own_avatar, glide, paint_presence).chain(),
    );
}

/// The colour of a presence status (dots here and in the nearby list).
pub fn status_color(status: Status) -> Color {
    match status {
        Status::Online => Color::srgb_u8(70, 210, 100),
        Status::Away => Color::srgb_u8(245, 175, 40),
        Status::Busy => Color::srgb_u8(225, 55, 55),
        Status::Offline => Color::srgb_u8(140, 140, 140),
    }
}

/// The own avatar.
#[derive(Component)]
pub struct OwnAvatar;

/// An avatar in view.
#[derive(Component, Debug, Clone)]
pub struct Avatar {
    pub user_id: Uuid,
    pub username: String,
    /// Its tile (for the own avatar, the predicted one).
    pub tile: TilePos,
}

/// The presence dot of an avatar (a child).
#[derive(Component)]
struct PresenceDot(Uuid);

/// Remote avatar entities by user id.
#[derive(Resource, Default)]
pub struct AvatarIndex(pub HashMap<Uuid, Entity>);

/// The last known status of each user (`online` when nothing was said): seeded from
/// `GET /api/v1/ws/online-users` on each connection, then kept by `Presence` messages.
#[derive(Resource, Default)]
pub struct PresenceBook {
    pub statuses: HashMap<Uuid, Status>,
    /// The online list arrived since the last welcome.
    pub loaded: bool,
}

impl PresenceBook {
    pub fn of(&self, user: Uuid) -> Status {
        self.statuses.get(&user).copied().unwrap_or_default()
    }
}

fn track_presence(mut events: MessageReader<FromServer>, mut book: ResMut<PresenceBook>) {
    for FromServer(event) in events.read() {
        match event {
            NetEvent::Game(ServerMessage::Welcome { .. }) => book.loaded = false,
            NetEvent::Game(ServerMessage::Presence { user_id, status, .. }) => {
                book.statuses.insert(*user_id, *status);
            }
            NetEvent::Online(users) => {
                // Live updates that came in meanwhile are newer than nothing, older than this
                // list only by a round trip: the list wins.
                book.statuses.extend(users.iter().map(|u| (u.user_id, u.status)));
                book.loaded = true;
            }
            _ => {}
        }
    }
}

fn avatar_bundle(avatar: Avatar, at: Vec2, own: bool) -> impl Bundle {
    let (outline, body) = if own { (OWN_OUTLINE, OWN_BODY) } else { (OTHER_OUTLINE, OTHER_BODY) };
    let name = avatar.username.clone();
    let user = avatar.user_id;
    (
        Name::new(format!("avatar {name}")),
        avatar,
        Transform::from_translation(at.extend(Z_AVATARS + if own { 1.0 } else { 0.0 })),
        Visibility::default(),
        children![
            (Sprite::from_color(outline, Vec2::splat(OUTLINE_SIZE)), Transform::default()),
            (Sprite::from_color(body, Vec2::splat(BODY_SIZE)), Transform::from_xyz(0.0, 0.0, 0.1)),
            (
                PresenceDot(user),
                Sprite::from_color(status_color(Status::Online), Vec2::splat(8.0)),
                Transform::from_xyz(OUTLINE_SIZE / 2.0 - 2.0, OUTLINE_SIZE / 2.0 - 2.0, 0.2),
            ),
            (
                Text2d::new(name),
                TextFont { font_size: FontSize::Px(13.0), ..default() },
                TextColor(if own { OWN_OUTLINE } else { Color::WHITE }),
                Text2dShadow { offset: Vec2::new(1.0, -1.0), color: Color::BLACK },
                Transform::from_xyz(0.0, OUTLINE_SIZE / 2.0 + 10.0, 0.3),
            ),
        ],
    )
}

fn spawn_own_avatar(
    mut commands: Commands,
    conn: Res<Connection>,
    prediction: Res<Prediction>,
    world: Res<World>,
    own: Query<Entity, With<OwnAvatar>>,
) {
    let (Some(user_id), Some(username), Some(tile)) = (conn.user_id, conn.username.clone(), prediction.predicted)
    else {
        return;
    };
    if !conn.welcomed || !own.is_empty() {
        return;
    }
    let at = tile_center(&world.0, tile);
    commands.spawn((OwnAvatar, avatar_bundle(Avatar { user_id, username, tile }, at, true)));
}

fn place_own_avatar(prediction: Res<Prediction>, mut own: Query<&mut Avatar, With<OwnAvatar>>) {
    if let (Some(tile), Ok(mut avatar)) = (prediction.predicted, own.single_mut())
        && avatar.tile != tile
    {
        avatar.tile = tile;
    }
}

fn sync_remote_avatars(
    mut commands: Commands,
    net: Res<Net>,
    conn: Res<Connection>,
    world: Res<World>,
    mut index: ResMut<AvatarIndex>,
    mut avatars: Query<&mut Avatar, Without<OwnAvatar>>,
) {
    let Some(link) = net.link() else { return };
    let mut seen: HashMap<Uuid, (String, TilePos)> = HashMap::new();
    {
        let replica = link.replica();
        for s in replica.avatars.values() {
            // Another connection of our own user is not someone else.
            if Some(s.user_id) != conn.user_id {
                seen.insert(s.user_id, (s.username.clone(), s.pos));
            }
        }
    }
    index.0.retain(|user, entity| {
        if seen.contains_key(user) {
            return true;
        }
        commands.entity(*entity).despawn();
        false
    });
    for (user_id, (username, tile)) in seen {
        match index.0.get(&user_id).and_then(|e| avatars.get_mut(*e).ok()) {
            Some(mut avatar) => {
                if avatar.tile != tile {
                    avatar.tile = tile;
                }
            }
            None => {
                let at = tile_center(&world.0, tile);
                let entity = commands.spawn(avatar_bundle(Avatar { user_id, username, tile }, at, false)).id();
                index.0.insert(user_id, entity);
            }
        }
    }
}

/// Moves each avatar toward its tile at walking speed (a jump of more than two tiles, e.g. a
/// reconciliation or a teleport, is taken at once).
fn glide(time: Res<Time>, world: Res<World>, mut avatars: Query<(&Avatar, &mut Transform)>) {
    let tile = world.0.tile_width.max(1) as f32;
    let speed = tile / STEP_EVERY.as_secs_f32() * 1.2;
    for (avatar, mut transform) in &mut avatars {
        let target = tile_center(&world.0, avatar.tile);
        let here = transform.translation.truncate();
        let gap = target - here;
        let next = if gap.length() > tile * 2.5 || gap.length() <= speed * time.delta_secs() {
            target
        } else {
            here + gap.normalize() * speed * time.delta_secs()
        };
        transform.translation.x = next.x;
        transform.translation.y = next.y;
    }
}

fn paint_presence(book: Res<PresenceBook>, mut dots: Query<(&PresenceDot, &mut Sprite)>) {
    for (dot, mut sprite) in &mut dots {
        let color = status_color(book.of(dot.0));
        if sprite.color != color {
            sprite.color = color;
        }
    }
}
