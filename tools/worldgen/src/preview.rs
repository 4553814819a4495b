//! A downscaled picture of the whole generated map (ground, then structures alpha-blended on
//! top), for eyeballing the layout without a game client.

use crate::art::Canvas;
use crate::layout::World;
use crate::tiles::{COLUMNS, TILE_PX};

/// Renders the map with `px` pixels per tile (`px` divides 32), averaging each tile's art.
pub fn render(world: &World, tileset: &Canvas, px: u32) -> Canvas {
    let px = px.clamp(1, TILE_PX);
    let step = TILE_PX / px;
    let mut out = Canvas::new(world.width as u32 * px, world.height as u32 * px);
    for ty in 0..world.height {
        for tx in 0..world.width {
            let i = (ty * world.width + tx) as usize;
            let layers = [Some(world.ground[i]), world.top[i]];
            for sy in 0..px {
                for sx in 0..px {
                    let mut acc = [0f32; 3];
                    for layer in layers.iter().flatten() {
                        let c = average(tileset, *layer, sx * step, sy * step, step);
                        let a = c[3] / 255.0;
                        for k in 0..3 {
                            acc[k] = acc[k] * (1.0 - a) + c[k] * a;
                        }
                    }
                    let o = ((ty as u32 * px + sy) * out.width + tx as u32 * px + sx) as usize;
                    out.pixels[o] = [acc[0] as u8, acc[1] as u8, acc[2] as u8, 255];
                }
            }
        }
    }
    out
}

fn average(tileset: &Canvas, id: u32, x0: u32, y0: u32, step: u32) -> [f32; 4] {
    let (ox, oy) = ((id % COLUMNS) * TILE_PX, (id / COLUMNS) * TILE_PX);
    let mut sum = [0f32; 4];
    for y in y0..y0 + step {
        for x in x0..x0 + step {
            let p = tileset.pixels[((oy + y) * tileset.width + ox + x) as usize];
            let a = f32::from(p[3]);
            for k in 0..3 {
                sum[k] += f32::from(p[k]) * a;
            }
            sum[3] += a;
        }
    }
    let n = (step * step) as f32;
    if sum[3] > 0.0 { [sum[0] / sum[3], sum[1] / sum[3], sum[2] / sum[3], sum[3] / n] } else { [0.0; 4] }
}
