//! The incremental Chebyshev proximity index (OWNED BY HELPER B — being written).

use super::geometry::TilePos;

pub type Slot = u32;

#[derive(Debug, Default, Clone)]
pub struct ProximityChanges {
    pub entered: Vec<(Slot, Slot)>,
    pub left: Vec<(Slot, Slot)>,
    pub dirty: Vec<Slot>,
}

#[derive(Debug, Default)]
pub struct ProximityIndex {
    _todo: Vec<TilePos>,
}
