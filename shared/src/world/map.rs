//! The Tiled map loader (OWNED BY HELPER A — being written).
//!
//! API contract (the server codes against it):
//! - `WorldMap::load(path) -> Result<WorldMap, MapError>`
//! - `width`, `height` (tiles), `tile_width`, `tile_height` (pixels)
//! - `in_bounds(TilePos) -> bool`, `is_walkable(TilePos) -> bool` (false outside the map)
//! - `kind(TilePos) -> Option<TileKind>`
//! - `lands: Vec<LandDef>` from the object layer `lands`, `spawns: Vec<TilePos>`

use std::path::Path;

use super::geometry::{Rect, TilePos};

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot load map: {0}")]
    Tiled(String),
    #[error("invalid map: {0}")]
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    Grass,
    Sand,
    Water,
    Wall,
    Path,
    Floor,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LandDef {
    pub name: String,
    pub rect: Rect,
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct WorldMap {
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub lands: Vec<LandDef>,
    pub spawns: Vec<TilePos>,
    walkable: Vec<bool>,
}

impl WorldMap {
    pub fn load(path: &Path) -> Result<Self, MapError> {
        Err(MapError::Tiled(format!("not yet implemented: {}", path.display())))
    }

    /// An all-walkable map of the given size (tests and benchmarks).
    pub fn open(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            tile_width: 32,
            tile_height: 32,
            lands: Vec::new(),
            spawns: vec![TilePos::new(0, 0)],
            walkable: vec![true; (width as usize) * (height as usize)],
        }
    }

    pub fn in_bounds(&self, p: TilePos) -> bool {
        p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height
    }

    pub fn is_walkable(&self, p: TilePos) -> bool {
        self.in_bounds(p) && self.walkable[(p.y as usize) * (self.width as usize) + p.x as usize]
    }
}
