//! `landworld-worldgen`: writes the default world, `assets/worlds/default.tmx`, with its
//! external tileset `tileset.tsx` and the tileset art `tileset.png`.
//!
//! Everything is derived from fixed seeds, so running it twice gives byte-identical files.
//!
//! Usage: `cargo run -p landworld-worldgen [-- --out DIR]` (default: the workspace's
//! `assets/worlds`; `--preview FILE` also writes a small picture of the whole map).
//! Modules: [`tiles`] (the tile catalogue), [`art`] (pixel art),
//! [`layout`] (the world), [`tmx`] (Tiled XML writers), [`preview`] (map picture), [`rng`] (deterministic randomness).

mod art;
mod layout;
mod preview;
mod rng;
mod tiles;
mod tmx;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const MAP_FILE: &str = "default.tmx";
const TILESET_FILE: &str = "tileset.tsx";
const IMAGE_FILE: &str = "tileset.png";

struct Args {
    out: PathBuf,
    /// Also write a downscaled picture of the whole map here (`--preview FILE`).
    preview: Option<PathBuf>,
    /// Lay the world out this many times along each axis (`--repeat K`: a `256 K` square map,
    /// for load runs at scale; not the default world).
    repeat: i32,
}

fn main() -> Result<()> {
    let Args { out, preview, repeat } = parse_args()?;
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let canvas = art::draw_tileset();
    write_png(&out.join(IMAGE_FILE), &canvas)?;
    fs::write(out.join(TILESET_FILE), tmx::tileset_tsx(IMAGE_FILE)).context("writing tileset")?;

    let world = layout::generate()?.repeated(repeat);
    if repeat > 1 {
        world.check_reachable().context("the repeated world")?;
    }
    fs::write(out.join(MAP_FILE), tmx::map_tmx(&world, TILESET_FILE)).context("writing map")?;

    if let Some(path) = preview {
        write_png(&path, &preview::render(&world, &canvas, 8))?;
        println!("wrote preview {}", path.display());
    }

    let walkable = (0..world.height)
        .flat_map(|y| (0..world.width).map(move |x| (x, y)))
        .filter(|&(x, y)| world.walkable(x, y))
        .count();
    println!(
        "wrote {} ({}x{} tiles, {} lands, {} spawns, {} walkable tiles, all reachable)",
        out.join(MAP_FILE).display(),
        world.width,
        world.height,
        world.lands.len(),
        world.spawns.len(),
        walkable
    );
    Ok(())
}

fn parse_args() -> Result<Args> {
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/worlds");
    let mut preview = None;
    let mut repeat = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--preview" => preview = Some(PathBuf::from(args.next().context("--preview needs a file")?)),
            "--repeat" => {
                let k = args.next().context("--repeat needs a number")?;
                repeat = k.parse().ok().filter(|k| (1..=16).contains(k)).context("--repeat takes 1..=16")?;
            }
            "-h" | "--help" => {
                println!("usage: landworld-worldgen [--out DIR] [--preview FILE.png] [--repeat K]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(Args { out, preview, repeat })
}

fn write_png(path: &Path, canvas: &art::Canvas) -> Result<()> {
    fs::write(path, encode_png(canvas)?).with_context(|| format!("writing {}", path.display()))
}

fn encode_png(canvas: &art::Canvas) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, canvas.width, canvas.height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("png header")?;
    writer.write_image_data(&canvas.to_bytes()).context("png data")?;
    writer.finish().context("png finish")?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed assets are exactly what the generator writes (rerun it after changing it).
    /// Only where they were generated: `f32::sin` comes from the platform's libm.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn committed_assets_match_the_generator() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/worlds");
        let world = layout::generate().expect("generates");
        let tmx = fs::read_to_string(dir.join(MAP_FILE)).expect("default.tmx");
        assert!(tmx == tmx::map_tmx(&world, TILESET_FILE), "default.tmx is stale: run cargo run -p landworld-worldgen");
        let tsx = fs::read_to_string(dir.join(TILESET_FILE)).expect("tileset.tsx");
        assert_eq!(tsx, tmx::tileset_tsx(IMAGE_FILE), "tileset.tsx is stale");
        let png = fs::read(dir.join(IMAGE_FILE)).expect("tileset.png");
        assert!(png == encode_png(&art::draw_tileset()).expect("encodes"), "tileset.png is stale");
    }

    #[test]
    fn a_repeated_world_tiles_the_layout_with_uniquely_named_lands() {
        let base = layout::generate().expect("generates");
        let big = base.repeated(3);
        assert_eq!((big.width, big.height), (768, 768));
        assert_eq!(big.lands.len(), 9 * base.lands.len());
        assert_eq!(big.spawns.len(), 9 * base.spawns.len());
        let names: std::collections::HashSet<&str> = big.lands.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.len(), big.lands.len(), "land names are unique");
        for (x, y) in [(0, 0), (17, 200), (255, 255)] {
            for (cx, cy) in [(0, 0), (1, 2), (2, 1)] {
                let (bx, by) = (x + cx * 256, y + cy * 256);
                assert_eq!(big.ground_at(bx, by), base.ground_at(x, y));
                assert_eq!(big.walkable(bx, by), base.walkable(x, y));
            }
        }
        let last = big.lands.last().expect("lands");
        let first = &base.lands[base.lands.len() - 1];
        assert_eq!((last.x, last.y), (first.x + 512, first.y + 512));
        // The written map is what the server's loader accepts.
        let tmx = tmx::map_tmx(&big, TILESET_FILE);
        assert!(tmx.contains(r#"width="768" height="768""#));
    }

    #[test]
    fn world_has_the_promised_shape() {
        let world = layout::generate().expect("generates");
        assert_eq!((world.width, world.height), (256, 256));
        assert!(world.lands.len() >= 9);
        assert!(world.spawns.len() >= 5);
        world.check_reachable().expect("every walkable tile is reachable");
    }
}
