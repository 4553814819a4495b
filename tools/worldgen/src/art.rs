//! Procedural pixel art for `tileset.png`: one 32x32 drawing routine per tile of
//! [`crate::tiles::TILES`], all seeded deterministically.

use crate::rng::{Rng, hash2};
use crate::tiles::{self, COLUMNS, TILE_PX};

pub type Rgba = [u8; 4];

const fn rgb(r: u8, g: u8, b: u8) -> Rgba {
    [r, g, b, 255]
}

/// The reference colours tests and the client screenshot check can look for.
pub const GRASS_BASE: Rgba = rgb(92, 160, 60);
pub const WATER_BASE: Rgba = rgb(52, 120, 196);

/// An RGBA image.
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<Rgba>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self { width, height, pixels: vec![[0, 0, 0, 0]; (width * height) as usize] }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flatten().copied().collect()
    }
}

/// A 32x32 window onto the canvas where one tile is drawn.
struct Tile<'a> {
    canvas: &'a mut Canvas,
    ox: u32,
    oy: u32,
}

impl Tile<'_> {
    fn set(&mut self, x: i32, y: i32, c: Rgba) {
        if x < 0 || y < 0 || x >= TILE_PX as i32 || y >= TILE_PX as i32 {
            return;
        }
        let i = ((self.oy + y as u32) * self.canvas.width + self.ox + x as u32) as usize;
        self.canvas.pixels[i] = c;
    }

    fn get(&self, x: i32, y: i32) -> Rgba {
        if x < 0 || y < 0 || x >= TILE_PX as i32 || y >= TILE_PX as i32 {
            return [0, 0, 0, 0];
        }
        self.canvas.pixels[((self.oy + y as u32) * self.canvas.width + self.ox + x as u32) as usize]
    }

    /// Alpha-blends `c` over the current pixel.
    fn blend(&mut self, x: i32, y: i32, c: Rgba) {
        let d = self.get(x, y);
        let a = f32::from(c[3]) / 255.0;
        let da = f32::from(d[3]) / 255.0;
        let out_a = a + da * (1.0 - a);
        if out_a <= 0.0 {
            return;
        }
        let ch = |i: usize| ((f32::from(c[i]) * a + f32::from(d[i]) * da * (1.0 - a)) / out_a).round() as u8;
        self.set(x, y, [ch(0), ch(1), ch(2), (out_a * 255.0).round() as u8]);
    }

    fn fill(&mut self, c: Rgba) {
        for y in 0..TILE_PX as i32 {
            for x in 0..TILE_PX as i32 {
                self.set(x, y, c);
            }
        }
    }

    fn rect(&mut self, x0: i32, y0: i32, w: i32, h: i32, c: Rgba) {
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                self.set(x, y, c);
            }
        }
    }
}

fn shade(c: Rgba, d: i32) -> Rgba {
    let f = |v: u8| (i32::from(v) + d).clamp(0, 255) as u8;
    [f(c[0]), f(c[1]), f(c[2]), c[3]]
}

/// Draws the whole tileset.
pub fn draw_tileset() -> Canvas {
    let mut canvas = Canvas::new(COLUMNS * TILE_PX, tiles::rows() * TILE_PX);
    for id in 0..tiles::TILES.len() as u32 {
        let mut t = Tile { ox: (id % COLUMNS) * TILE_PX, oy: (id / COLUMNS) * TILE_PX, canvas: &mut canvas };
        let mut rng = Rng::new(0x5EED_0000 + u64::from(id));
        match id {
            tiles::GRASS => grass(&mut t, &mut rng, GRASS_BASE, 26),
            tiles::GRASS_DARK => grass(&mut t, &mut rng, rgb(87, 155, 58), 40),
            tiles::FLOWERS => flowers(&mut t, &mut rng),
            tiles::SAND => sand(&mut t, &mut rng),
            tiles::WATER => water(&mut t, &mut rng, WATER_BASE, 3),
            tiles::DEEP_WATER => water(&mut t, &mut rng, rgb(36, 92, 170), 2),
            tiles::WALL => wall(&mut t, &mut rng),
            tiles::DIRT => dirt(&mut t, &mut rng),
            tiles::WOOD_FLOOR => wood_floor(&mut t, &mut rng),
            tiles::STONE_FLOOR => stone_floor(&mut t, &mut rng),
            tiles::COBBLE => cobble(&mut t, &mut rng),
            tiles::BRIDGE_H => bridge(&mut t, &mut rng, true),
            tiles::BRIDGE_V => bridge(&mut t, &mut rng, false),
            tiles::SOIL => soil(&mut t, &mut rng),
            tiles::TREE => tree(&mut t, &mut rng),
            tiles::ROCK => rock(&mut t, &mut rng),
            tiles::HEDGE => hedge(&mut t, &mut rng),
            _ => t.fill(rgb(255, 0, 255)),
        }
    }
    canvas
}

fn grass(t: &mut Tile<'_>, rng: &mut Rng, base: Rgba, tufts: u32) {
    for y in 0..32 {
        for x in 0..32 {
            let n = rng.unit();
            let c = if n < 0.10 {
                shade(base, -14)
            } else if n > 0.93 {
                shade(base, 14)
            } else {
                base
            };
            t.set(x, y, c);
        }
    }
    for _ in 0..tufts {
        let x = rng.range(1, 30);
        let y = rng.range(2, 30);
        let dark = shade(base, -28);
        let light = shade(base, 26);
        t.set(x, y, dark);
        t.set(x, y - 1, dark);
        t.set(x - 1, y, dark);
        t.set(x + 1, y - 1, light);
    }
}

fn flowers(t: &mut Tile<'_>, rng: &mut Rng) {
    grass(t, rng, GRASS_BASE, 14);
    let petals = [rgb(250, 250, 250), rgb(246, 214, 64), rgb(236, 110, 150), rgb(220, 70, 60), rgb(170, 120, 230)];
    for i in 0..6 {
        let x = rng.range(3, 28);
        let y = rng.range(3, 28);
        let p = petals[(i + rng.below(2) as usize) % petals.len()];
        t.set(x - 1, y, p);
        t.set(x + 1, y, p);
        t.set(x, y - 1, p);
        t.set(x, y + 1, p);
        t.set(x, y, rgb(250, 200, 40));
        t.set(x, y + 2, rgb(50, 110, 40));
    }
}

fn sand(t: &mut Tile<'_>, rng: &mut Rng) {
    let base = rgb(224, 202, 142);
    t.fill(base);
    for y in 0..32 {
        for x in 0..32 {
            let n = rng.unit();
            if n < 0.07 {
                t.set(x, y, shade(base, -24));
            } else if n > 0.95 {
                t.set(x, y, shade(base, 16));
            }
        }
    }
    // Wind ripples.
    for row in [7, 19, 28] {
        let off = rng.range(0, 10);
        for x in 0..32 {
            let y = row + (((x + off) as f32 / 5.0).sin() * 1.5).round() as i32;
            if (x + off) % 16 < 10 {
                t.set(x, y, shade(base, -14));
            }
        }
    }
}

fn water(t: &mut Tile<'_>, rng: &mut Rng, base: Rgba, waves: i32) {
    for y in 0..32 {
        for x in 0..32 {
            let n = hash2(77, x / 2, y / 2);
            t.set(x, y, if n < 0.2 { shade(base, -6) } else { base });
        }
    }
    let crest = shade(base, 70);
    let trough = shade(base, -18);
    for i in 0..waves {
        let cy = 5 + i * (28 / waves.max(1)) + rng.range(0, 3);
        let cx = rng.range(2, 16);
        for dx in 0..12 {
            let y = cy - (((dx as f32) / 11.0 * std::f32::consts::PI).sin() * 2.5).round() as i32;
            t.set(cx + dx, y, crest);
            t.set(cx + dx, y + 1, trough);
        }
    }
    for _ in 0..4 {
        let x = rng.range(0, 31);
        let y = rng.range(0, 31);
        t.set(x, y, shade(base, 90));
    }
}

fn wall(t: &mut Tile<'_>, rng: &mut Rng) {
    let mortar = rgb(86, 84, 92);
    t.fill(mortar);
    for row in 0..4 {
        let y0 = row * 8;
        let offset = if row % 2 == 0 { 0 } else { 8 };
        for col in -1..3 {
            let x0 = col * 16 + offset;
            let brick = shade(rgb(150, 146, 150), rng.range(-16, 14));
            for y in y0 + 1..y0 + 7 {
                for x in x0 + 1..x0 + 15 {
                    let mut c = brick;
                    if y == y0 + 1 || x == x0 + 1 {
                        c = shade(brick, 24);
                    } else if y == y0 + 6 || x == x0 + 14 {
                        c = shade(brick, -26);
                    } else if rng.chance(0.06) {
                        c = shade(brick, -12);
                    }
                    t.set(x, y, c);
                }
            }
        }
    }
}

fn dirt(t: &mut Tile<'_>, rng: &mut Rng) {
    let base = rgb(180, 142, 96);
    for y in 0..32 {
        for x in 0..32 {
            let n = rng.unit();
            let c = if n < 0.08 {
                shade(base, -22)
            } else if n > 0.94 {
                shade(base, 14)
            } else {
                base
            };
            t.set(x, y, c);
        }
    }
    for _ in 0..7 {
        let x = rng.range(1, 29);
        let y = rng.range(1, 29);
        let pebble = shade(rgb(150, 140, 126), rng.range(-10, 20));
        t.rect(x, y, 2, 2, pebble);
        t.set(x + 1, y + 1, shade(pebble, -40));
    }
}

fn wood_floor(t: &mut Tile<'_>, rng: &mut Rng) {
    for row in 0..4 {
        let y0 = row * 8;
        let plank = shade(rgb(160, 106, 60), rng.range(-14, 12));
        let joint = rng.range(4, 28);
        for y in y0..y0 + 8 {
            for x in 0..32 {
                let mut c = plank;
                if y == y0 + 7 || x == joint {
                    c = rgb(104, 66, 36);
                } else if y == y0 {
                    c = shade(plank, 14);
                } else if ((x * 7 + y * 13 + row * 5) % 23) == 0 {
                    c = shade(plank, -18);
                }
                t.set(x, y, c);
            }
        }
    }
}

fn stone_floor(t: &mut Tile<'_>, rng: &mut Rng) {
    for (x0, y0) in [(0, 0), (16, 0), (0, 16), (16, 16)] {
        let slab = shade(rgb(188, 184, 172), rng.range(-12, 10));
        for y in y0..y0 + 16 {
            for x in x0..x0 + 16 {
                let c = if x == x0 || y == y0 {
                    rgb(132, 128, 120)
                } else if x == x0 + 1 || y == y0 + 1 {
                    shade(slab, 14)
                } else if rng.chance(0.05) {
                    shade(slab, -10)
                } else {
                    slab
                };
                t.set(x, y, c);
            }
        }
    }
}

fn cobble(t: &mut Tile<'_>, rng: &mut Rng) {
    let gap = rgb(112, 108, 104);
    t.fill(gap);
    for row in 0..4 {
        let offset = if row % 2 == 0 { 0 } else { 5 };
        let mut x0 = -offset;
        while x0 < 32 {
            let w = rng.range(8, 11);
            let stone = shade(rgb(172, 168, 160), rng.range(-18, 14));
            for y in row * 8 + 1..row * 8 + 7 {
                for x in x0 + 1..x0 + w - 1 {
                    let corner = (x == x0 + 1 || x == x0 + w - 2) && (y == row * 8 + 1 || y == row * 8 + 6);
                    if corner {
                        continue;
                    }
                    let c = if y == row * 8 + 1 {
                        shade(stone, 18)
                    } else if y == row * 8 + 6 {
                        shade(stone, -20)
                    } else {
                        stone
                    };
                    t.set(x, y, c);
                }
            }
            x0 += w;
        }
    }
}

fn bridge(t: &mut Tile<'_>, rng: &mut Rng, east_west: bool) {
    // Drawn for an east-west crossing, then transposed for north-south.
    let mut buf = [[[0u8; 4]; 32]; 32];
    for (x, col) in buf.iter_mut().enumerate() {
        let board = x / 4;
        let plank = shade(rgb(176, 124, 72), ((board * 37) % 21) as i32 - 10);
        for (y, px) in col.iter_mut().enumerate() {
            *px = if x % 4 == 3 {
                rgb(112, 74, 42)
            } else if rng.chance(0.04) {
                shade(plank, -16)
            } else {
                plank
            };
            if !(3..=28).contains(&y) {
                *px = if y == 1 || y == 30 { rgb(90, 58, 32) } else { rgb(132, 88, 50) };
                if x % 8 == 0 {
                    *px = rgb(70, 44, 24);
                }
            }
        }
    }
    for (x, col) in buf.iter().enumerate() {
        for (y, px) in col.iter().enumerate() {
            if east_west {
                t.set(x as i32, y as i32, *px);
            } else {
                t.set(y as i32, x as i32, *px);
            }
        }
    }
}

fn soil(t: &mut Tile<'_>, rng: &mut Rng) {
    let base = rgb(124, 86, 54);
    for y in 0..32 {
        for x in 0..32 {
            let furrow = y % 8 >= 6;
            let c = if furrow {
                shade(base, -26)
            } else if rng.chance(0.08) {
                shade(base, 12)
            } else {
                base
            };
            t.set(x, y, c);
        }
    }
    for row in 0..4 {
        let mut x = rng.range(1, 4);
        while x < 31 {
            let y = row * 8 + 4;
            t.set(x, y, rgb(86, 160, 58));
            t.set(x, y - 1, rgb(110, 184, 70));
            t.set(x - 1, y - 2, rgb(86, 160, 58));
            t.set(x + 1, y - 2, rgb(86, 160, 58));
            x += rng.range(5, 7);
        }
    }
}

fn tree(t: &mut Tile<'_>, rng: &mut Rng) {
    // Shadow, trunk, then a round canopy lit from the top left.
    for y in 0..32 {
        for x in 0..32 {
            let dx = (x as f32 - 17.0) / 12.0;
            let dy = (y as f32 - 27.0) / 4.0;
            if dx * dx + dy * dy <= 1.0 {
                t.blend(x, y, [0, 0, 0, 70]);
            }
        }
    }
    t.rect(14, 20, 5, 9, rgb(112, 74, 40));
    t.rect(14, 20, 1, 9, rgb(140, 96, 56));
    t.rect(18, 20, 1, 9, rgb(80, 50, 28));
    let (cx, cy, r) = (16.0f32, 13.0f32, 12.5f32);
    for y in 0..32 {
        for x in 0..32 {
            let dx = x as f32 + 0.5 - cx;
            let dy = y as f32 + 0.5 - cy;
            let wobble = (dy.atan2(dx) * 5.0).sin() * 1.2;
            let d = (dx * dx + dy * dy).sqrt();
            if d <= r + wobble {
                let light = (-dx - dy) / (2.0 * r);
                let mut c = shade(rgb(46, 118, 46), (light * 40.0) as i32);
                if d > r + wobble - 1.5 {
                    c = rgb(26, 76, 30);
                } else if rng.chance(0.12) {
                    c = shade(c, if rng.chance(0.5) { 18 } else { -18 });
                }
                t.set(x, y, c);
            }
        }
    }
}

fn rock(t: &mut Tile<'_>, rng: &mut Rng) {
    for y in 0..32 {
        for x in 0..32 {
            let dx = (x as f32 - 16.0) / 13.0;
            let dy = (y as f32 - 25.0) / 4.0;
            if dx * dx + dy * dy <= 1.0 {
                t.blend(x, y, [0, 0, 0, 60]);
            }
        }
    }
    let (cx, cy) = (15.5f32, 17.0f32);
    for y in 0..32 {
        for x in 0..32 {
            let dx = (x as f32 + 0.5 - cx) / 12.0;
            let dy = (y as f32 + 0.5 - cy) / 10.0;
            let d = dx * dx + dy * dy;
            if d <= 1.0 {
                let light = (-dx - dy) * 0.5;
                let mut c = shade(rgb(140, 138, 134), (light * 60.0) as i32);
                if d > 0.85 {
                    c = rgb(84, 82, 80);
                } else if rng.chance(0.1) {
                    c = shade(c, -14);
                }
                t.set(x, y, c);
            }
        }
    }
    // A crack.
    for i in 0..6 {
        t.set(12 + i, 14 + i / 2, rgb(96, 94, 90));
    }
}

fn hedge(t: &mut Tile<'_>, rng: &mut Rng) {
    let base = rgb(52, 116, 50);
    for y in 0..32 {
        for x in 0..32 {
            let n = hash2(9, x / 3, y / 3);
            let mut c = shade(base, ((n - 0.5) * 30.0) as i32);
            if y >= 28 {
                c = rgb(30, 72, 32);
            } else if y <= 1 {
                c = shade(base, 30);
            } else if rng.chance(0.08) {
                c = shade(c, 24);
            }
            t.set(x, y, c);
        }
    }
}
