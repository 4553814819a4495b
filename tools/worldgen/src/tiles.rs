//! The tile catalogue: every tile of the generated tileset, its local id (its index in
//! `tileset.png`, row-major), its `kind` property and whether avatars may stand on it.
//!
//! The `kind` values are the six the game knows (`grass`, `sand`, `water`, `wall`, `path`,
//! `floor`); several tiles share a kind and differ only in their art. `wall` means "solid
//! obstacle" and also covers trees, rocks and hedges.

/// One tile of the tileset.
pub struct TileDef {
    pub name: &'static str,
    pub kind: &'static str,
    pub walkable: bool,
}

pub const GRASS: u32 = 0;
pub const GRASS_DARK: u32 = 1;
pub const FLOWERS: u32 = 2;
pub const SAND: u32 = 3;
pub const WATER: u32 = 4;
pub const DEEP_WATER: u32 = 5;
pub const WALL: u32 = 6;
pub const DIRT: u32 = 7;
pub const WOOD_FLOOR: u32 = 8;
pub const STONE_FLOOR: u32 = 9;
pub const COBBLE: u32 = 10;
pub const BRIDGE_H: u32 = 11;
pub const BRIDGE_V: u32 = 12;
pub const SOIL: u32 = 13;
pub const TREE: u32 = 14;
pub const ROCK: u32 = 15;
pub const HEDGE: u32 = 16;

/// Tiles in local-id order.
pub const TILES: [TileDef; 17] = [
    TileDef { name: "grass", kind: "grass", walkable: true },
    TileDef { name: "grass_dark", kind: "grass", walkable: true },
    TileDef { name: "flowers", kind: "grass", walkable: true },
    TileDef { name: "sand", kind: "sand", walkable: true },
    TileDef { name: "water", kind: "water", walkable: false },
    TileDef { name: "deep_water", kind: "water", walkable: false },
    TileDef { name: "wall", kind: "wall", walkable: false },
    TileDef { name: "dirt_path", kind: "path", walkable: true },
    TileDef { name: "wood_floor", kind: "floor", walkable: true },
    TileDef { name: "stone_floor", kind: "floor", walkable: true },
    TileDef { name: "cobblestone", kind: "path", walkable: true },
    TileDef { name: "bridge_east_west", kind: "path", walkable: true },
    TileDef { name: "bridge_north_south", kind: "path", walkable: true },
    TileDef { name: "soil", kind: "grass", walkable: true },
    TileDef { name: "tree", kind: "wall", walkable: false },
    TileDef { name: "rock", kind: "wall", walkable: false },
    TileDef { name: "hedge", kind: "wall", walkable: false },
];

/// Tile size in pixels.
pub const TILE_PX: u32 = 32;
/// Tiles per row of `tileset.png`.
pub const COLUMNS: u32 = 8;

/// Rows of `tileset.png`.
pub const fn rows() -> u32 {
    (TILES.len() as u32).div_ceil(COLUMNS)
}

pub fn is_walkable(id: u32) -> bool {
    TILES.get(id as usize).is_some_and(|t| t.walkable)
}

pub fn is_water(id: u32) -> bool {
    id == WATER || id == DEEP_WATER
}
