//! The Tiled map loader on arbitrary text, without file access: never panics, never
//! over-allocates; a map that loads keeps its invariants (lands inside the map, spawns walkable).
#![no_main]

use landworld_shared::world::WorldMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else { return };
    if let Ok(map) = WorldMap::from_tmx_str(xml, None) {
        assert!(!map.spawns.is_empty(), "a map needs a spawn");
        for &s in &map.spawns {
            assert!(map.is_walkable(s), "spawn {s:?} not walkable");
        }
        for land in &map.lands {
            assert!(!land.name.is_empty());
            let r = land.rect;
            let inside = r.x >= 0
                && r.y >= 0
                && !r.is_empty()
                && r.right() <= i64::from(map.width)
                && r.bottom() <= i64::from(map.height);
            assert!(inside, "land {land:?} outside the map");
        }
    }
});
