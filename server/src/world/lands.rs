//! Lands in the simulation: a per-tile lookup grid (O(1) "which land is this tile on"), each
//! land's current members (avatars standing on it), and the `user_joined` / `user_left` frames
//! when an avatar crosses a border. Each land has a chat room (`room_id`); the chat service is
//! told who stands on which land so land-room messages reach them.

use bevy_app::{App, Update};
use bevy_ecs::entity::EntityHashSet;
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::{Position, ServerFrame};
use landworld_shared::world::{Rect, TilePos, WorldMap};
use uuid::Uuid;

use super::TickSet;
use super::avatar::Avatar;
use super::conn::encode;

/// A land as the simulation needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LandInfo {
    pub id: Uuid,
    /// The land's chat room (session) id.
    pub room_id: Uuid,
    pub name: String,
    pub rect: Rect,
}

/// The chat service, when the world runs inside a server (plugin tests run without it).
#[derive(Resource, Clone, Default)]
pub struct ChatLink(pub Option<crate::chat::Chat>);

/// An avatar moved from one land (or none) to another.
#[derive(Message, Debug, Clone, Copy)]
pub struct LandChanged {
    pub entity: Entity,
    pub from: Option<usize>,
    pub to: Option<usize>,
}

#[derive(Resource, Debug)]
pub struct Lands {
    pub lands: Vec<LandInfo>,
    pub members: Vec<EntityHashSet>,
    /// Per tile: 0 for no land, else land index + 1.
    grid: Vec<u32>,
    width: u32,
    height: u32,
}

impl Lands {
    pub fn new(map: &WorldMap, lands: Vec<LandInfo>) -> Self {
        let mut me = Self {
            members: lands.iter().map(|_| EntityHashSet::default()).collect(),
            lands,
            grid: Vec::new(),
            width: map.width,
            height: map.height,
        };
        me.rebuild_grid();
        me
    }

    fn rebuild_grid(&mut self) {
        let (w, h) = (self.width as usize, self.height as usize);
        self.grid = vec![0; w * h];
        for (i, land) in self.lands.iter().enumerate() {
            let x0 = land.rect.x.max(0) as usize;
            let y0 = land.rect.y.max(0) as usize;
            let x1 = (land.rect.right().max(0) as usize).min(w);
            let y1 = (land.rect.bottom().max(0) as usize).min(h);
            for y in y0..y1 {
                for cell in &mut self.grid[y * w + x0.min(x1)..y * w + x1] {
                    // Lands never overlap (checked on create/edit); first wins regardless.
                    if *cell == 0 {
                        *cell = u32::try_from(i + 1).unwrap_or(0);
                    }
                }
            }
        }
    }

    /// The index of the land a tile belongs to.
    pub fn land_at(&self, p: TilePos) -> Option<usize> {
        if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
            return None;
        }
        match self.grid[p.y as usize * self.width as usize + p.x as usize] {
            0 => None,
            n => Some(n as usize - 1),
        }
    }

    pub fn land_id_at(&self, p: TilePos) -> Option<Uuid> {
        self.land_at(p).map(|i| self.lands[i].id)
    }

    pub fn position_of(&self, p: TilePos) -> Position {
        Position { x: p.x, y: p.y, land_id: self.land_id_at(p) }
    }
}

pub(super) fn plugin(app: &mut App) {
    app.add_message::<LandChanged>();
    app.init_resource::<ChatLink>();
    app.add_systems(Update, update_land_membership.in_set(TickSet::Memberships));
}

fn update_land_membership(world: &mut World) {
    let changes: Vec<LandChanged> = {
        let mut messages = world.resource_mut::<Messages<LandChanged>>();
        messages.drain().collect()
    };
    for change in changes {
        move_membership(world, change.entity, change.from, change.to);
    }
}

/// Moves an avatar between land rooms: `user_left` to the old room (and the avatar), then
/// `user_joined` to the new room (including the avatar). With chat running, chat sends them to
/// every member of the room (explicit joiners too); without it (plugin tests) the avatars on
/// the land get them from here.
pub fn move_membership(world: &mut World, entity: Entity, from: Option<usize>, to: Option<usize>) {
    let Some(avatar) = world.get::<Avatar>(entity) else { return };
    let (user_id, username) = (avatar.user_id, avatar.username.clone());
    let chat = world.resource::<ChatLink>().0.clone();
    for (land, joined) in [(from, false), (to, true)] {
        let Some(land) = land else { continue };
        let (room_id, recipients) = {
            let mut lands = world.resource_mut::<Lands>();
            let Some(set) = lands.members.get_mut(land) else { continue };
            if joined {
                set.insert(entity);
            } else {
                set.remove(&entity);
            }
            // Without chat the avatars on the land (and the mover) get the frame from here.
            let recipients: Vec<Entity> = if chat.is_some() {
                Vec::new()
            } else {
                set.iter().copied().chain((!joined).then_some(entity)).collect()
            };
            (lands.lands[land].room_id, recipients)
        };
        if let Some(chat) = &chat {
            chat.land_presence(room_id, user_id, &username, joined);
            continue;
        }
        let username = username.to_string();
        let frame = if joined {
            ServerFrame::UserJoined { room_id, user_id, username }
        } else {
            ServerFrame::UserLeft { room_id, user_id, username }
        };
        let frame = encode(&frame);
        for e in recipients {
            if let Some(a) = world.get::<Avatar>(e) {
                a.send(&frame);
            }
        }
    }
    if let Some(mut avatar) = world.get_mut::<Avatar>(entity) {
        avatar.land = to;
    }
}

/// Applies an admin's land creation or edit: rebuilds the lookup grid and re-evaluates every
/// avatar's land (rare, so a full pass is fine).
pub fn upsert_land(world: &mut World, info: LandInfo) {
    {
        let mut lands = world.resource_mut::<Lands>();
        match lands.lands.iter().position(|l| l.id == info.id) {
            Some(i) => lands.lands[i] = info,
            None => {
                lands.lands.push(info);
                lands.members.push(EntityHashSet::default());
            }
        }
        lands.rebuild_grid();
    }
    let moves: Vec<(Entity, Option<usize>, Option<usize>)> = {
        let lands = world.resource::<Lands>();
        let mut q = world.try_query::<(Entity, &Avatar)>();
        match q.as_mut() {
            Some(q) => q
                .iter(world)
                .filter_map(|(e, a)| {
                    let now = lands.land_at(a.pos);
                    (now != a.land).then_some((e, a.land, now))
                })
                .collect(),
            None => Vec::new(),
        }
    };
    for (entity, from, to) in moves {
        move_membership(world, entity, from, to);
    }
}
