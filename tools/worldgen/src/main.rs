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
}

fn main() -> Result<()> {
    let Args { out, preview } = parse_args()?;
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let canvas = art::draw_tileset();
    write_png(&out.join(IMAGE_FILE), &canvas)?;
    fs::write(out.join(TILESET_FILE), tmx::tileset_tsx(IMAGE_FILE)).context("writing tileset")?;

    let world = layout::generate()?;
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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--preview" => preview = Some(PathBuf::from(args.next().context("--preview needs a file")?)),
            "-h" | "--help" => {
                println!("usage: landworld-worldgen [--out DIR] [--preview FILE.png]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(Args { out, preview })
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
    fn world_has_the_promised_shape() {
        let world = layout::generate().expect("generates");
        assert_eq!((world.width, world.height), (256, 256));
        assert!(world.lands.len() >= 9);
        assert!(world.spawns.len() >= 5);
        world.check_reachable().expect("every walkable tile is reachable");
    }
}
