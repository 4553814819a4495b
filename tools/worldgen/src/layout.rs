//! The world layout: a 256x256 map with nine themed lands in a 3x3 grid, dirt roads between
//! them, a river that feeds a lake and runs on to the south edge (bridged where roads cross it),
//! buildings with doors, trees and rocks, and named spawn points.
//!
//! Reachability is guaranteed by construction and then checked:
//! - single-tile obstacles (trees, rocks) are only placed where all eight neighbours are
//!   walkable, so they can never cut the walkable area apart;
//! - larger obstacles (buildings, hedges, ponds) keep a walkable ring of two tiles around them,
//!   and every building has a door;
//! - [`World::check_reachable`] flood-fills from the first spawn and fails the generator if any
//!   walkable tile is left over.

use anyhow::{Result, bail};

use crate::rng::{Rng, value_noise};
use crate::tiles::{self, *};

pub const MAP_TILES: i32 = 256;
const LAND_SIZE: i32 = 72;
/// Land origins along each axis: 8..80, 92..164, 176..248; roads run in the gaps.
const LAND_ORIGINS: [i32; 3] = [8, 92, 176];
/// Roads: 4 tiles wide, centred in the gaps between lands.
const ROADS: [i32; 2] = [84, 168];
const ROAD_WIDTH: i32 = 4;

#[derive(Clone)]
pub struct Land {
    pub name: String,
    pub description: &'static str,
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

#[derive(Clone)]
pub struct Spawn {
    pub name: String,
    pub x: i32,
    pub y: i32,
}

#[derive(Clone)]
pub struct World {
    pub width: i32,
    pub height: i32,
    /// Local tile ids of the `ground` layer (always present).
    pub ground: Vec<u32>,
    /// Local tile ids of the `structures` layer (walls, trees, rocks, hedges).
    pub top: Vec<Option<u32>>,
    pub lands: Vec<Land>,
    pub spawns: Vec<Spawn>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    North,
    South,
    East,
    West,
}

const THEMES: [(&str, &str); 9] = [
    ("Westbrook Farms", "Tilled fields, a red barn and a quiet duck pond."),
    ("Northgate", "A riverside village where the river enters the world."),
    ("Pinewood", "A dense pine forest with a woodcutter's cabin."),
    ("Stonehill", "Rocky uplands crowned by an old stone keep."),
    ("Central Plaza", "The town square with its fountain; everyone meets here."),
    ("Lakeside", "Cabins and a sandy beach around the great lake."),
    ("Meadowvale", "Wildflower meadows, hedgerows and a farmhouse."),
    ("Market Row", "Shops on both sides of a cobbled market street."),
    ("Sunset Dunes", "Warm sand dunes split by the river on its way south."),
];

impl World {
    /// This world laid out `k` x `k` times side by side (a `k * 256` tiles square map for load
    /// runs at scale), each copy's lands and spawns named with its column and row, e.g.
    /// `Central Plaza (2,5)`. `k == 1` is the world itself.
    pub fn repeated(&self, k: i32) -> World {
        if k <= 1 {
            return self.clone();
        }
        let (w, h) = (self.width * k, self.height * k);
        let mut out = World {
            width: w,
            height: h,
            ground: Vec::with_capacity((w * h) as usize),
            top: Vec::with_capacity((w * h) as usize),
            lands: Vec::new(),
            spawns: Vec::new(),
        };
        for _ in 0..k {
            for y in 0..self.height {
                let row = (y * self.width) as usize..((y + 1) * self.width) as usize;
                for _ in 0..k {
                    out.ground.extend_from_slice(&self.ground[row.clone()]);
                    out.top.extend_from_slice(&self.top[row.clone()]);
                }
            }
        }
        for cy in 0..k {
            for cx in 0..k {
                let (ox, oy) = (cx * self.width, cy * self.height);
                out.lands.extend(self.lands.iter().map(|l| Land {
                    name: format!("{} ({cx},{cy})", l.name),
                    description: l.description,
                    x: l.x + ox,
                    y: l.y + oy,
                    width: l.width,
                    height: l.height,
                }));
                out.spawns.extend(self.spawns.iter().map(|sp| Spawn {
                    name: format!("{} ({cx},{cy})", sp.name),
                    x: sp.x + ox,
                    y: sp.y + oy,
                }));
            }
        }
        out
    }

    fn new() -> Self {
        let n = (MAP_TILES * MAP_TILES) as usize;
        Self {
            width: MAP_TILES,
            height: MAP_TILES,
            ground: vec![GRASS; n],
            top: vec![None; n],
            lands: Vec::new(),
            spawns: Vec::new(),
        }
    }

    fn in_bounds(&self, x: i32, y: i32) -> bool {
        x >= 0 && y >= 0 && x < self.width && y < self.height
    }

    fn idx(&self, x: i32, y: i32) -> usize {
        (y * self.width + x) as usize
    }

    pub fn ground_at(&self, x: i32, y: i32) -> Option<u32> {
        self.in_bounds(x, y).then(|| self.ground[self.idx(x, y)])
    }

    fn set_ground(&mut self, x: i32, y: i32, id: u32) {
        if self.in_bounds(x, y) {
            let i = self.idx(x, y);
            self.ground[i] = id;
        }
    }

    fn top_at(&self, x: i32, y: i32) -> Option<u32> {
        if self.in_bounds(x, y) { self.top[self.idx(x, y)] } else { None }
    }

    fn set_top(&mut self, x: i32, y: i32, id: Option<u32>) {
        if self.in_bounds(x, y) {
            let i = self.idx(x, y);
            self.top[i] = id;
        }
    }

    pub fn walkable(&self, x: i32, y: i32) -> bool {
        self.in_bounds(x, y)
            && tiles::is_walkable(self.ground[self.idx(x, y)])
            && self.top[self.idx(x, y)].is_none_or(tiles::is_walkable)
    }

    fn is_open_ground(&self, x: i32, y: i32) -> bool {
        matches!(self.ground_at(x, y), Some(GRASS | GRASS_DARK | FLOWERS | SAND)) && self.top_at(x, y).is_none()
    }

    fn fill_ground(&mut self, x0: i32, y0: i32, w: i32, h: i32, id: u32) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.set_ground(x, y, id);
            }
        }
    }

    /// True when every tile of the rectangle is open ground and the two-tile ring around it is
    /// walkable and free of structures (so nothing placed there can enclose anything).
    fn area_free(&self, x0: i32, y0: i32, w: i32, h: i32) -> bool {
        for y in y0 - 2..y0 + h + 2 {
            for x in x0 - 2..x0 + w + 2 {
                if !self.in_bounds(x, y) {
                    return false;
                }
                let inside = x >= x0 && x < x0 + w && y >= y0 && y < y0 + h;
                if inside {
                    if !self.is_open_ground(x, y) {
                        return false;
                    }
                } else if !self.walkable(x, y) || self.top_at(x, y).is_some() {
                    return false;
                }
            }
        }
        true
    }

    /// Places a single-tile obstacle where all eight neighbours are walkable and structure-free.
    fn try_obstacle(&mut self, x: i32, y: i32, id: u32, ground_ok: &[u32]) -> bool {
        if !self.in_bounds(x, y) || self.top_at(x, y).is_some() {
            return false;
        }
        if !self.ground_at(x, y).is_some_and(|g| ground_ok.contains(&g)) {
            return false;
        }
        for dy in -1..=1 {
            for dx in -1..=1 {
                if (dx, dy) != (0, 0) && (!self.walkable(x + dx, y + dy) || self.top_at(x + dx, y + dy).is_some()) {
                    return false;
                }
            }
        }
        self.set_top(x, y, Some(id));
        true
    }

    /// A walled building with a floor, a door (two tiles wide on long walls) with a dirt step
    /// outside, and for large buildings an inner wall with a doorway.
    fn try_building(&mut self, x0: i32, y0: i32, w: i32, h: i32, floor: u32, door: Side) -> bool {
        if !self.area_free(x0, y0, w, h) {
            return false;
        }
        self.fill_ground(x0, y0, w, h, floor);
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                if x == x0 || y == y0 || x == x0 + w - 1 || y == y0 + h - 1 {
                    self.set_top(x, y, Some(WALL));
                }
            }
        }
        // Door: centred on the chosen side, with a two-tile dirt step outside.
        let (len, wide) = match door {
            Side::North | Side::South => (w, w >= 10),
            Side::East | Side::West => (h, h >= 10),
        };
        let mid = len / 2;
        let door_cells: Vec<i32> = if wide { vec![mid - 1, mid] } else { vec![mid] };
        for &d in &door_cells {
            let (dx, dy, ox, oy) = match door {
                Side::North => (x0 + d, y0, 0, -1),
                Side::South => (x0 + d, y0 + h - 1, 0, 1),
                Side::West => (x0, y0 + d, -1, 0),
                Side::East => (x0 + w - 1, y0 + d, 1, 0),
            };
            self.set_top(dx, dy, None);
            for step in 1..=2 {
                let (sx, sy) = (dx + ox * step, dy + oy * step);
                if self.is_open_ground(sx, sy) {
                    self.set_ground(sx, sy, DIRT);
                }
            }
        }
        // Inner wall splitting large buildings into two rooms, with a two-tile doorway.
        if w >= 12 && h >= 7 {
            let split = x0 + w / 2 + if matches!(door, Side::North | Side::South) { 2 } else { 0 };
            let gap = y0 + h / 2;
            for y in y0 + 1..y0 + h - 1 {
                if y != gap && y != gap - 1 {
                    self.set_top(split, y, Some(WALL));
                }
            }
        } else if h >= 12 && w >= 7 {
            let split = y0 + h / 2;
            let gap = x0 + w / 2;
            for x in x0 + 1..x0 + w - 1 {
                if x != gap && x != gap - 1 {
                    self.set_top(x, split, Some(WALL));
                }
            }
        }
        true
    }

    /// A straight hedge row with a clear ring around it.
    fn try_hedge(&mut self, x0: i32, y0: i32, len: i32, horizontal: bool) -> bool {
        let (w, h) = if horizontal { (len, 1) } else { (1, len) };
        if !self.area_free(x0, y0, w, h) {
            return false;
        }
        for i in 0..len {
            let (x, y) = if horizontal { (x0 + i, y0) } else { (x0, y0 + i) };
            self.set_top(x, y, Some(HEDGE));
        }
        true
    }

    /// A roundish pond with a sandy rim.
    fn try_pond(&mut self, cx: i32, cy: i32, r: i32) -> bool {
        if !self.area_free(cx - r - 1, cy - r - 1, 2 * r + 3, 2 * r + 3) {
            return false;
        }
        for y in cy - r - 1..=cy + r + 1 {
            for x in cx - r - 1..=cx + r + 1 {
                let d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
                if d2 <= r * r {
                    self.set_ground(x, y, WATER);
                } else if d2 <= (r + 1) * (r + 1) + 1 {
                    self.set_ground(x, y, SAND);
                }
            }
        }
        true
    }

    fn land_rect(&self, i: usize) -> (i32, i32, i32, i32) {
        let l = &self.lands[i];
        (l.x, l.y, l.width, l.height)
    }

    /// Randomly places buildings inside land `i`, doors facing the land's centre.
    fn scatter_buildings(&mut self, rng: &mut Rng, i: usize, count: usize, floor: u32) {
        let (lx, ly, lw, lh) = self.land_rect(i);
        let mut placed = 0;
        for _ in 0..4000 {
            if placed == count {
                break;
            }
            let w = rng.range(7, 12);
            let h = rng.range(6, 9);
            let x = rng.range(lx + 3, lx + lw - w - 3);
            let y = rng.range(ly + 3, ly + lh - h - 3);
            let (cx, cy) = (lx + lw / 2, ly + lh / 2);
            let (bx, by) = (x + w / 2, y + h / 2);
            let door = if (cx - bx).abs() > (cy - by).abs() {
                if cx > bx { Side::East } else { Side::West }
            } else if cy > by {
                Side::South
            } else {
                Side::North
            };
            if self.try_building(x, y, w, h, floor, door) {
                placed += 1;
            }
        }
    }

    fn scatter_obstacles(&mut self, rng: &mut Rng, i: usize, id: u32, tries: u32, ground_ok: &[u32]) {
        let (lx, ly, lw, lh) = self.land_rect(i);
        for _ in 0..tries {
            let x = rng.range(lx + 1, lx + lw - 2);
            let y = rng.range(ly + 1, ly + lh - 2);
            self.try_obstacle(x, y, id, ground_ok);
        }
    }

    /// The nearest walkable tile to `(x, y)` whose ground is in `prefer` (any walkable tile if
    /// none is within 40 tiles).
    fn nearest_walkable(&self, x: i32, y: i32, prefer: &[u32]) -> (i32, i32) {
        for pass in 0..2 {
            for r in 0..40i32 {
                for dy in -r..=r {
                    for dx in -r..=r {
                        if dx.abs().max(dy.abs()) != r {
                            continue;
                        }
                        let (px, py) = (x + dx, y + dy);
                        let ok = self.walkable(px, py)
                            && (pass == 1 || self.ground_at(px, py).is_some_and(|g| prefer.contains(&g)));
                        if ok {
                            return (px, py);
                        }
                    }
                }
            }
        }
        (x, y)
    }

    /// Flood-fills (4-connected) from the first spawn; every walkable tile must be reached.
    pub fn check_reachable(&self) -> Result<()> {
        let Some(start) = self.spawns.first() else { bail!("no spawns") };
        let mut seen = vec![false; self.ground.len()];
        let mut stack = vec![(start.x, start.y)];
        seen[self.idx(start.x, start.y)] = true;
        while let Some((x, y)) = stack.pop() {
            for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                let (nx, ny) = (x + dx, y + dy);
                if self.walkable(nx, ny) && !seen[self.idx(nx, ny)] {
                    seen[self.idx(nx, ny)] = true;
                    stack.push((nx, ny));
                }
            }
        }
        let mut missing = Vec::new();
        for y in 0..self.height {
            for x in 0..self.width {
                if self.walkable(x, y) && !seen[self.idx(x, y)] {
                    missing.push((x, y));
                }
            }
        }
        if !missing.is_empty() {
            bail!("{} walkable tiles are unreachable, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
        }
        for s in &self.spawns {
            if !self.walkable(s.x, s.y) {
                bail!("spawn {} at ({}, {}) is not walkable", s.name, s.x, s.y);
            }
        }
        Ok(())
    }
}

/// Catmull-Rom spline through `points`, sampled every `step` along each segment.
fn spline(points: &[(f32, f32)], step: f32) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for i in 0..points.len().saturating_sub(1) {
        let p0 = points[i.saturating_sub(1)];
        let p1 = points[i];
        let p2 = points[i + 1];
        let p3 = points[(i + 2).min(points.len() - 1)];
        let len = ((p2.0 - p1.0).powi(2) + (p2.1 - p1.1).powi(2)).sqrt();
        let n = (len / step).ceil().max(1.0) as i32;
        for k in 0..n {
            let t = k as f32 / n as f32;
            let (t2, t3) = (t * t, t * t * t);
            let f = |a: f32, b: f32, c: f32, d: f32| {
                0.5 * (2.0 * b
                    + (-a + c) * t
                    + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                    + (-a + 3.0 * b - 3.0 * c + d) * t3)
            };
            out.push((f(p0.0, p1.0, p2.0, p3.0), f(p0.1, p1.1, p2.1, p3.1)));
        }
    }
    if let Some(&last) = points.last() {
        out.push(last);
    }
    out
}

pub fn generate() -> Result<World> {
    let mut world = World::new();
    let mut rng = Rng::new(0x1A4D_3001);

    // Lands, row-major.
    for (i, (name, description)) in THEMES.iter().enumerate() {
        world.lands.push(Land {
            name: (*name).to_owned(),
            description,
            x: LAND_ORIGINS[i % 3],
            y: LAND_ORIGINS[i / 3],
            width: LAND_SIZE,
            height: LAND_SIZE,
        });
    }

    paint_base(&mut world);
    paint_water(&mut world);
    paint_roads(&mut world);

    build_farms(&mut world, &mut rng, 0);
    build_northgate(&mut world, &mut rng, 1);
    build_pinewood(&mut world, &mut rng, 2);
    build_stonehill(&mut world, &mut rng, 3);
    build_plaza(&mut world, &mut rng, 4);
    build_lakeside(&mut world, &mut rng, 5);
    build_meadow(&mut world, &mut rng, 6);
    build_market(&mut world, &mut rng, 7);
    build_dunes(&mut world, &mut rng, 8);

    // A few trees along the roads outside the lands.
    for _ in 0..900 {
        let x = rng.range(0, MAP_TILES - 1);
        let y = rng.range(0, MAP_TILES - 1);
        let in_land = world.lands.iter().any(|l| x >= l.x && x < l.x + l.width && y >= l.y && y < l.y + l.height);
        if !in_land {
            world.try_obstacle(x, y, TREE, &[GRASS, GRASS_DARK]);
        }
    }

    place_spawns(&mut world);
    world.check_reachable()?;
    Ok(world)
}

fn paint_base(world: &mut World) {
    for y in 0..world.height {
        for x in 0..world.width {
            let (fx, fy) = (x as f32, y as f32);
            let patches = value_noise(11, fx, fy, 9.0) * 0.7 + value_noise(12, fx, fy, 3.0) * 0.3;
            let bloom = value_noise(13, fx, fy, 6.0);
            let speck = crate::rng::hash2(14, x, y);
            let id = if bloom > 0.78 && speck < 0.35 {
                FLOWERS
            } else if patches > 0.58 {
                GRASS_DARK
            } else if speck < 0.012 {
                FLOWERS
            } else {
                GRASS
            };
            world.set_ground(x, y, id);
        }
    }
}

fn paint_water(world: &mut World) {
    // The river enters from the north edge and winds into the lake in Lakeside.
    let upper =
        [(146.0, -4.0), (151.0, 14.0), (141.0, 36.0), (148.0, 60.0), (160.0, 82.0), (182.0, 104.0), (204.0, 122.0)];
    // Its outflow runs south through the Sunset Dunes to the south edge.
    let lower = [(214.0, 132.0), (220.0, 152.0), (208.0, 176.0), (200.0, 198.0), (214.0, 222.0), (206.0, 260.0)];
    for path in [&upper[..], &lower[..]] {
        for (i, (px, py)) in spline(path, 0.25).into_iter().enumerate() {
            let r = 2.1 + value_noise(21, i as f32, 0.0, 40.0) * 1.0;
            let ri = r.ceil() as i32 + 1;
            for y in (py as i32) - ri..=(py as i32) + ri {
                for x in (px as i32) - ri..=(px as i32) + ri {
                    let d = ((x as f32 + 0.5 - px).powi(2) + (y as f32 + 0.5 - py).powi(2)).sqrt();
                    if d <= r {
                        world.set_ground(x, y, WATER);
                    }
                }
            }
        }
    }
    // The lake: a noisy ellipse.
    let (cx, cy, rx, ry) = (212.0f32, 128.0f32, 22.0f32, 15.0f32);
    for y in 100..160 {
        for x in 180..246 {
            let dx = (x as f32 + 0.5 - cx) / rx;
            let dy = (y as f32 + 0.5 - cy) / ry;
            let wobble = (value_noise(31, x as f32, y as f32, 6.0) - 0.5) * 0.35;
            if dx * dx + dy * dy <= 1.0 + wobble {
                world.set_ground(x, y, WATER);
            }
        }
    }
    // Deep water away from the shore; sandy banks along it.
    let snapshot: Vec<u32> = world.ground.clone();
    let water_at = |x: i32, y: i32| {
        !(0..MAP_TILES).contains(&x)
            || !(0..MAP_TILES).contains(&y)
            || tiles::is_water(snapshot[(y * MAP_TILES + x) as usize])
    };
    for y in 0..world.height {
        for x in 0..world.width {
            let here = snapshot[(y * MAP_TILES + x) as usize];
            if tiles::is_water(here) {
                let deep = (-3..=3).all(|dy| (-3..=3).all(|dx| water_at(x + dx, y + dy)));
                if deep {
                    world.set_ground(x, y, DEEP_WATER);
                }
            } else {
                let reach = if value_noise(41, x as f32, y as f32, 4.0) > 0.55 { 2 } else { 1 };
                let near = (-reach..=reach).any(|dy| {
                    (-reach..=reach).any(|dx| {
                        (0..MAP_TILES).contains(&(x + dx))
                            && (0..MAP_TILES).contains(&(y + dy))
                            && tiles::is_water(snapshot[((y + dy) * MAP_TILES + x + dx) as usize])
                    })
                });
                if near {
                    world.set_ground(x, y, SAND);
                }
            }
        }
    }
}

fn paint_roads(world: &mut World) {
    for &r in &ROADS {
        for along in 0..MAP_TILES {
            for across in r..r + ROAD_WIDTH {
                // Horizontal road (x = along, y = across) and vertical road (x = across, y = along).
                for (x, y, bridge) in [(along, across, BRIDGE_H), (across, along, BRIDGE_V)] {
                    let g = world.ground_at(x, y);
                    if g.is_some_and(tiles::is_water) || g == Some(BRIDGE_H) || g == Some(BRIDGE_V) {
                        if !matches!(g, Some(BRIDGE_H | BRIDGE_V)) {
                            world.set_ground(x, y, bridge);
                        }
                    } else {
                        world.set_ground(x, y, DIRT);
                    }
                }
            }
        }
    }
}

/// A dirt lane from `(x0, y0)` to `(x1, y1)` (L-shaped, horizontal first), `w` tiles wide,
/// bridging water and leaving other paved tiles alone.
fn lane(world: &mut World, (x0, y0): (i32, i32), (x1, y1): (i32, i32), w: i32, id: u32) {
    let mut paint = |x: i32, y: i32, horizontal: bool| {
        for k in 0..w {
            let (px, py) = if horizontal { (x, y + k) } else { (x + k, y) };
            match world.ground_at(px, py) {
                Some(g) if tiles::is_water(g) => world.set_ground(px, py, if horizontal { BRIDGE_H } else { BRIDGE_V }),
                Some(GRASS | GRASS_DARK | FLOWERS | SAND | SOIL) => world.set_ground(px, py, id),
                _ => {}
            }
        }
    };
    for x in x0.min(x1)..=x0.max(x1) {
        paint(x, y0, true);
    }
    for y in y0.min(y1)..=y0.max(y1) {
        paint(x1, y, false);
    }
}

fn build_farms(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, _, _) = world.land_rect(i);
    // Fields of tilled soil with hedgerows along their north edges.
    for &(fx, fy, fw, fh) in &[(6, 8, 22, 12), (34, 8, 18, 12), (6, 28, 22, 14), (34, 28, 12, 10)] {
        let (x, y) = (lx + fx, ly + fy);
        if world.area_free(x, y, fw, fh) {
            world.fill_ground(x, y, fw, fh, SOIL);
            world.try_hedge(x + 2, y - 3, fw - 4, true);
        }
    }
    world.try_building(lx + 50, ly + 30, 14, 10, WOOD_FLOOR, Side::West);
    world.try_building(lx + 44, ly + 52, 10, 8, WOOD_FLOOR, Side::North);
    world.try_pond(lx + 18, ly + 56, 5);
    lane(world, (lx + 49, ly + 35), (lx + 30, ly + 72), 2, DIRT);
    world.scatter_obstacles(rng, i, TREE, 120, &[GRASS, GRASS_DARK]);
}

fn build_northgate(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, _, _) = world.land_rect(i);
    lane(world, (lx - 4, ly + 40), (lx + 76, ly + 40), 3, COBBLE);
    lane(world, (lx + 30, ly + 43), (lx + 30, ly + 76), 3, COBBLE);
    world.scatter_buildings(rng, i, 9, WOOD_FLOOR);
    world.scatter_obstacles(rng, i, TREE, 500, &[GRASS, GRASS_DARK, FLOWERS]);
}

fn build_pinewood(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, _, _) = world.land_rect(i);
    lane(world, (lx - 4, ly + 50), (lx + 36, ly + 50), 2, DIRT);
    lane(world, (lx + 36, ly + 50), (lx + 36, ly + 76), 2, DIRT);
    world.try_building(lx + 30, ly + 38, 11, 8, WOOD_FLOOR, Side::South);
    world.scatter_buildings(rng, i, 2, WOOD_FLOOR);
    world.scatter_obstacles(rng, i, ROCK, 40, &[GRASS, GRASS_DARK]);
    world.scatter_obstacles(rng, i, TREE, 6000, &[GRASS, GRASS_DARK, FLOWERS]);
}

fn build_stonehill(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, _, _) = world.land_rect(i);
    lane(world, (lx - 4, ly + 36), (lx + 76, ly + 36), 3, COBBLE);
    world.try_building(lx + 18, ly + 8, 30, 20, STONE_FLOOR, Side::South);
    world.try_building(lx + 20, ly + 48, 12, 9, STONE_FLOOR, Side::North);
    world.try_building(lx + 44, ly + 48, 12, 9, STONE_FLOOR, Side::North);
    world.scatter_obstacles(rng, i, ROCK, 700, &[GRASS, GRASS_DARK, FLOWERS]);
    world.scatter_obstacles(rng, i, TREE, 150, &[GRASS, GRASS_DARK]);
}

fn build_plaza(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, lw, lh) = world.land_rect(i);
    // The town hall north of the square, houses around it, larger halls in the corners.
    world.try_building(lx + 25, ly + 7, 22, 12, STONE_FLOOR, Side::South);
    for (x, y, door) in [
        (lx + 7, ly + 21, Side::East),
        (lx + 7, ly + 42, Side::East),
        (lx + 54, ly + 21, Side::West),
        (lx + 54, ly + 42, Side::West),
    ] {
        world.try_building(x, y, 11, 8, WOOD_FLOOR, door);
    }
    world.try_building(lx + 18, ly + 56, 12, 9, WOOD_FLOOR, Side::North);
    world.try_building(lx + 42, ly + 56, 12, 9, STONE_FLOOR, Side::North);
    world.try_building(lx + 3, ly + 3, 12, 10, STONE_FLOOR, Side::South);
    world.try_building(lx + 57, ly + 3, 12, 10, WOOD_FLOOR, Side::South);
    world.try_building(lx + 3, ly + 60, 11, 9, WOOD_FLOOR, Side::North);
    world.try_building(lx + 58, ly + 60, 11, 9, WOOD_FLOOR, Side::North);
    // Cobbled avenues from the west, east and south roads, the square, the town hall steps.
    world.fill_ground(lx - 4, ly + 34, 28, 4, COBBLE);
    world.fill_ground(lx + 48, ly + 34, lw - 48 + 4, 4, COBBLE);
    world.fill_ground(lx + 34, ly + 48, 4, lh - 48 + 4, COBBLE);
    world.fill_ground(lx + 24, ly + 24, 24, 24, COBBLE);
    world.fill_ground(lx + 34, ly + 19, 4, 5, COBBLE);
    // The fountain with its stone rim, and four flower beds with a tree each.
    world.fill_ground(lx + 32, ly + 32, 8, 8, STONE_FLOOR);
    world.fill_ground(lx + 33, ly + 33, 6, 6, WATER);
    world.fill_ground(lx + 35, ly + 35, 2, 2, DEEP_WATER);
    for (bx, by) in [(26, 26), (42, 26), (26, 42), (42, 42)] {
        world.fill_ground(lx + bx, ly + by, 4, 4, FLOWERS);
        world.try_obstacle(lx + bx + 1, ly + by + 1, TREE, &[FLOWERS]);
    }
    // Trees lining the square.
    for k in (0..=24).step_by(4) {
        for (x, y) in [(lx + 24 + k, ly + 22), (lx + 24 + k, ly + 50), (lx + 22, ly + 24 + k), (lx + 50, ly + 24 + k)] {
            world.try_obstacle(x, y, TREE, &[GRASS, GRASS_DARK, FLOWERS]);
        }
    }
    world.scatter_obstacles(rng, i, TREE, 60, &[GRASS, GRASS_DARK]);
}

fn build_lakeside(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, _, _) = world.land_rect(i);
    lane(world, (lx - 4, ly + 8), (lx + 76, ly + 8), 2, DIRT);
    world.scatter_buildings(rng, i, 5, WOOD_FLOOR);
    world.scatter_obstacles(rng, i, TREE, 250, &[GRASS, GRASS_DARK, FLOWERS]);
}

fn build_meadow(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, lw, lh) = world.land_rect(i);
    for y in ly..ly + lh {
        for x in lx..lx + lw {
            if world.ground_at(x, y) == Some(GRASS) && crate::rng::hash2(61, x, y) < 0.22 {
                world.set_ground(x, y, FLOWERS);
            }
        }
    }
    world.try_building(lx + 40, ly + 14, 14, 9, WOOD_FLOOR, Side::South);
    world.try_pond(lx + 20, ly + 44, 6);
    for _ in 0..300 {
        let len = rng.range(6, 12);
        let horizontal = rng.chance(0.6);
        let x = rng.range(lx + 3, lx + lw - 14);
        let y = rng.range(ly + 3, ly + lh - 14);
        world.try_hedge(x, y, len, horizontal);
    }
    world.scatter_obstacles(rng, i, TREE, 200, &[GRASS, GRASS_DARK, FLOWERS]);
}

fn build_market(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, lw, _) = world.land_rect(i);
    world.fill_ground(lx - 4, ly + 32, lw + 8, 6, COBBLE);
    world.fill_ground(lx + 34, ly - 4, 4, 36, COBBLE);
    for k in 0..5 {
        let x = lx + 2 + k * 14;
        if k != 2 {
            world.try_building(x, ly + 20, 11, 9, WOOD_FLOOR, Side::South);
        }
        world.try_building(x, ly + 41, 11, 9, if k % 2 == 0 { STONE_FLOOR } else { WOOD_FLOOR }, Side::North);
    }
    world.scatter_buildings(rng, i, 4, WOOD_FLOOR);
    world.scatter_obstacles(rng, i, TREE, 200, &[GRASS, GRASS_DARK, FLOWERS]);
}

fn build_dunes(world: &mut World, rng: &mut Rng, i: usize) {
    let (lx, ly, lw, lh) = world.land_rect(i);
    for y in ly - 3..ly + lh + 3 {
        for x in lx - 3..lx + lw + 3 {
            // Depth inside the land, with a ragged edge and a few grassy oases.
            let depth = (x - lx).min(lx + lw - 1 - x).min(y - ly).min(ly + lh - 1 - y) as f32;
            let ragged = depth + (value_noise(72, x as f32, y as f32, 3.0) - 0.5) * 7.0;
            let grassy = value_noise(71, x as f32, y as f32, 7.0) > 0.72 || ragged < 0.0;
            if matches!(world.ground_at(x, y), Some(GRASS | GRASS_DARK | FLOWERS)) && !grassy {
                world.set_ground(x, y, SAND);
            }
        }
    }
    world.scatter_buildings(rng, i, 4, WOOD_FLOOR);
    world.scatter_obstacles(rng, i, ROCK, 220, &[SAND]);
    world.scatter_obstacles(rng, i, TREE, 120, &[SAND, GRASS, GRASS_DARK]);
}

fn place_spawns(world: &mut World) {
    let plaza = &world.lands[4];
    let wanted: [(&str, i32, i32, &[u32]); 8] = [
        ("Central Plaza", plaza.x + 36, plaza.y + 26, &[COBBLE]),
        ("Northwest Crossroads", ROADS[0] + 2, ROADS[0] + 2, &[DIRT]),
        ("Northeast Crossroads", ROADS[1] + 2, ROADS[0] + 2, &[DIRT]),
        ("Southwest Crossroads", ROADS[0] + 2, ROADS[1] + 2, &[DIRT]),
        ("Southeast Crossroads", ROADS[1] + 2, ROADS[1] + 2, &[DIRT]),
        ("Market Street", plaza.x + 20, plaza.y + 84 + 34, &[COBBLE]),
        ("Lakeside Beach", 186, 126, &[SAND]),
        ("Pinewood Trail", 220, 58, &[DIRT]),
    ];
    for (name, x, y, prefer) in wanted {
        let (sx, sy) = world.nearest_walkable(x, y, prefer);
        world.spawns.push(Spawn { name: name.to_owned(), x: sx, y: sy });
    }
}
