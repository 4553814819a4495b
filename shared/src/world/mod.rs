//! World geometry: tiles, rectangles, Chebyshev distance ([`geometry`]), the Tiled map loader
//! ([`map`]) and the incremental proximity index ([`proximity`]).

pub mod geometry;
pub mod map;
pub mod proximity;

pub use geometry::{Rect, TilePos, chebyshev};
pub use map::{LandDef, MapError, TileKind, WorldMap};
pub use proximity::{ProximityChanges, ProximityIndex, Slot};
