//! Drawing the world: the tile map ([`tilemap`]) and the mapping from tiles to world space.
//!
//! World space: one unit per pixel, x to the east, y to the north; tile `(0, 0)` (the map's
//! top-left) has its top-left corner at the origin, so map row `y` lies at negative world y.

pub mod tilemap;

use bevy::prelude::*;
use landworld_shared::world::{TilePos, WorldMap};

pub(super) fn plugin(app: &mut App) {
    app.add_plugins(tilemap::plugin);
}

/// The world-space centre of a tile.
pub fn tile_center(map: &WorldMap, p: TilePos) -> Vec2 {
    let (tw, th) = (map.tile_width as f32, map.tile_height as f32);
    Vec2::new(p.x as f32 * tw + tw / 2.0, -(p.y as f32 * th + th / 2.0))
}
