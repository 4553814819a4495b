//! Tile positions, rectangles and Chebyshev distance (`max(|dx|, |dy|)`).

use serde::{Deserialize, Serialize};

/// A tile coordinate. `x` grows to the east, `y` to the south; `(0, 0)` is the top-left tile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TilePos {
    pub x: i32,
    pub y: i32,
}

impl TilePos {
    pub const fn new(x: i32, y: i32) -> Self {
        Self { x, y }
    }
}

/// Chebyshev distance between two tiles: `max(|dx|, |dy|)`.
#[inline]
pub fn chebyshev(a: TilePos, b: TilePos) -> u32 {
    let dx = (i64::from(a.x) - i64::from(b.x)).unsigned_abs();
    let dy = (i64::from(a.y) - i64::from(b.y)).unsigned_abs();
    // Coordinates are i32, so the difference fits in u32.
    u32::try_from(dx.max(dy)).unwrap_or(u32::MAX)
}

/// An axis-aligned rectangle of tiles: `x..x+width`, `y..y+height`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, width: u32, height: u32) -> Self {
        Self { x, y, width, height }
    }

    /// Exclusive right edge.
    pub fn right(&self) -> i64 {
        i64::from(self.x) + i64::from(self.width)
    }

    /// Exclusive bottom edge.
    pub fn bottom(&self) -> i64 {
        i64::from(self.y) + i64::from(self.height)
    }

    pub fn contains(&self, p: TilePos) -> bool {
        i64::from(p.x) >= i64::from(self.x)
            && i64::from(p.x) < self.right()
            && i64::from(p.y) >= i64::from(self.y)
            && i64::from(p.y) < self.bottom()
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    pub fn intersects(&self, other: &Rect) -> bool {
        !self.is_empty()
            && !other.is_empty()
            && i64::from(self.x) < other.right()
            && i64::from(other.x) < self.right()
            && i64::from(self.y) < other.bottom()
            && i64::from(other.y) < self.bottom()
    }

    /// Chebyshev distance from a tile to the nearest tile of the rectangle (0 inside).
    pub fn distance_to(&self, p: TilePos) -> u32 {
        if self.is_empty() {
            return u32::MAX;
        }
        let px = i64::from(p.x);
        let py = i64::from(p.y);
        let dx = if px < i64::from(self.x) {
            i64::from(self.x) - px
        } else if px >= self.right() {
            px - (self.right() - 1)
        } else {
            0
        };
        let dy = if py < i64::from(self.y) {
            i64::from(self.y) - py
        } else if py >= self.bottom() {
            py - (self.bottom() - 1)
        } else {
            0
        };
        u32::try_from(dx.max(dy)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chebyshev_is_max_of_axis_distances() {
        assert_eq!(chebyshev(TilePos::new(0, 0), TilePos::new(3, -7)), 7);
        assert_eq!(chebyshev(TilePos::new(5, 5), TilePos::new(5, 5)), 0);
        assert_eq!(chebyshev(TilePos::new(i32::MIN, 0), TilePos::new(i32::MAX, 0)), u32::MAX);
    }

    #[test]
    fn rect_contains_and_distance() {
        let r = Rect::new(10, 10, 5, 3);
        assert!(r.contains(TilePos::new(10, 10)));
        assert!(r.contains(TilePos::new(14, 12)));
        assert!(!r.contains(TilePos::new(15, 12)));
        assert!(!r.contains(TilePos::new(14, 13)));
        assert_eq!(r.distance_to(TilePos::new(12, 11)), 0);
        assert_eq!(r.distance_to(TilePos::new(16, 11)), 2);
        assert_eq!(r.distance_to(TilePos::new(7, 20)), 8);
        assert!(r.intersects(&Rect::new(14, 12, 1, 1)));
        assert!(!r.intersects(&Rect::new(15, 10, 3, 3)));
    }
}
