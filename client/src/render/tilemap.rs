//! The tile map: every tile layer of the world drawn with Bevy's `TilemapChunk` (one mesh and
//! one draw call per 64x64-tile chunk and layer, instead of one sprite per tile).
//!
//! `TilemapChunk` samples an array texture, one layer per tile. The Tiled tileset is a grid
//! atlas (margin, spacing, columns), so at start-up the atlas image is cut into tiles with
//! [`TilesetDef::tile_rect`] (the same grid `TextureAtlasLayout::from_grid` describes) and
//! stacked into one array texture; tiles of several tilesets share it, each tileset starting at
//! its own base layer. Layer 0 is drawn opaque, layers above it alpha-blended (trees and rocks
//! have transparent surroundings and soft shadows).

use bevy::asset::RenderAssetUsages;
use bevy::image::{CompressedImageFormats, ImageSampler, ImageType};
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use bevy::sprite_render::{AlphaMode2d, TileData, TilemapChunk, TilemapChunkTileData};
use landworld_shared::world::map::TilesetDef;
use landworld_shared::world::{TilePos, WorldMap};

use crate::app::World;

/// Chunk side in tiles.
pub const CHUNK: u32 = 64;
/// Array texture layers we rely on (wgpu's default limit for `max_texture_array_layers`).
pub const MAX_TILE_LAYERS: u32 = 256;

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<TilemapStatus>().add_systems(Startup, spawn_tilemap);
}

/// Whether the tile map has been spawned, and how many chunks it has.
#[derive(Resource, Default, Debug)]
pub struct TilemapStatus {
    pub spawned: bool,
    pub chunks: usize,
}

/// A decoded RGBA8 image.
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgba {
    fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        if x >= self.width || y >= self.height {
            return [0; 4];
        }
        let i = ((y * self.width + x) * 4) as usize;
        match self.data.get(i..i + 4) {
            Some(p) => [p[0], p[1], p[2], p[3]],
            None => [0; 4],
        }
    }
}

/// The tiles of all tilesets stacked into the layers of one array texture.
pub struct TileArray {
    pub tile_width: u32,
    pub tile_height: u32,
    pub layers: u32,
    /// RGBA8, `layers` images of `tile_width x tile_height` stacked vertically.
    pub data: Vec<u8>,
    /// First layer of each tileset (`None` when the tileset has no usable image).
    pub bases: Vec<Option<u32>>,
}

impl TileArray {
    /// The array layer of a tile, if it has one.
    pub fn layer_of(&self, tileset: u32, id: u32, tile_count: u32) -> Option<u16> {
        let base = self.bases.get(tileset as usize).copied().flatten()?;
        if id >= tile_count {
            return None;
        }
        let layer = base.checked_add(id)?;
        if layer >= self.layers { None } else { u16::try_from(layer).ok() }
    }
}

/// Cuts every tileset image into tiles of the map's tile size (nearest-neighbour scaled if the
/// tileset's tiles differ) and stacks them. At most [`MAX_TILE_LAYERS`] tiles; at least two
/// layers (a single-layer image cannot be an array texture).
pub fn build_tile_array(map: &WorldMap, images: &[Option<Rgba>]) -> TileArray {
    let (tw, th) = (map.tile_width.max(1), map.tile_height.max(1));
    let layer_bytes = (tw * th * 4) as usize;
    let mut data = Vec::new();
    let mut bases = Vec::new();
    let mut layers = 0u32;
    for (ts, image) in map.tilesets.iter().zip(images.iter().chain(std::iter::repeat(&None))) {
        let Some(image) = image else {
            bases.push(None);
            continue;
        };
        if layers + ts.tile_count > MAX_TILE_LAYERS {
            warn!(tileset = %ts.name, "too many tiles for one array texture; this tileset is not drawn");
            bases.push(None);
            continue;
        }
        bases.push(Some(layers));
        for id in 0..ts.tile_count {
            data.extend(cut_tile(ts, image, id, tw, th));
            layers += 1;
        }
    }
    while layers < 2 {
        data.extend(std::iter::repeat_n(0u8, layer_bytes));
        layers += 1;
    }
    TileArray { tile_width: tw, tile_height: th, layers, data, bases }
}

fn cut_tile(ts: &TilesetDef, image: &Rgba, id: u32, tw: u32, th: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((tw * th * 4) as usize);
    let rect = ts.tile_rect(id);
    for y in 0..th {
        for x in 0..tw {
            let px = match rect {
                Some((rx, ry, rw, rh)) => {
                    let sx = rx.saturating_add(x * rw / tw);
                    let sy = ry.saturating_add(y * rh / th);
                    image.pixel(sx, sy)
                }
                None => [0; 4],
            };
            out.extend_from_slice(&px);
        }
    }
    out
}

/// The tiles of one chunk of one layer, in `TilemapChunk` order (rows bottom to top).
/// `None` when the chunk has no drawable tile.
pub fn chunk_tiles(
    map: &WorldMap,
    layer: usize,
    array: &TileArray,
    origin: TilePos,
    size: UVec2,
    color: Color,
) -> Option<Vec<Option<TileData>>> {
    let layer_def = map.layers.get(layer)?;
    let mut tiles = vec![None; (size.x * size.y) as usize];
    let mut any = false;
    for ly in 0..size.y {
        for lx in 0..size.x {
            let p = TilePos::new(origin.x + lx as i32, origin.y + ly as i32);
            let Some(tile) = layer_def.get(p) else {
                continue;
            };
            let Some(ts) = map.tilesets.get(tile.tileset as usize) else {
                continue;
            };
            let Some(index) = array.layer_of(tile.tileset, tile.id, ts.tile_count) else {
                continue;
            };
            let row = size.y - 1 - ly;
            tiles[(row * size.x + lx) as usize] = Some(TileData { tileset_index: index, color, ..default() });
            any = true;
        }
    }
    any.then_some(tiles)
}

fn load_rgba(path: &std::path::Path) -> Result<Rgba, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("png").to_ascii_lowercase();
    let image = Image::from_buffer(
        &bytes,
        ImageType::Extension(&ext),
        CompressedImageFormats::NONE,
        true,
        ImageSampler::nearest(),
        RenderAssetUsages::MAIN_WORLD,
    )
    .map_err(|e| e.to_string())?;
    let rgba = image.convert(TextureFormat::Rgba8UnormSrgb).ok_or("cannot convert to RGBA8")?;
    let data = rgba.data.ok_or("image has no pixel data")?;
    Ok(Rgba { width: rgba.texture_descriptor.size.width, height: rgba.texture_descriptor.size.height, data })
}

fn spawn_tilemap(
    mut commands: Commands,
    world: Res<World>,
    mut images: ResMut<Assets<Image>>,
    mut status: ResMut<TilemapStatus>,
) {
    let map = &world.0;
    let decoded: Vec<Option<Rgba>> = map
        .tilesets
        .iter()
        .map(|ts| {
            let path = ts.image.as_ref()?;
            match load_rgba(path) {
                Ok(img) => Some(img),
                Err(err) => {
                    error!(tileset = %ts.name, path = %path.display(), %err, "cannot load tileset image");
                    None
                }
            }
        })
        .collect();
    let array = build_tile_array(map, &decoded);
    let mut image = Image::new(
        Extent3d { width: array.tile_width, height: array.tile_height * array.layers, depth_or_array_layers: 1 },
        TextureDimension::D2,
        array.data.clone(),
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::RENDER_WORLD,
    );
    if let Err(err) = image.reinterpret_stacked_2d_as_array(array.layers) {
        error!(?err, "cannot build the tile array texture");
        return;
    }
    image.sampler = ImageSampler::nearest();
    let tileset = images.add(image);

    let (tw, th) = (map.tile_width, map.tile_height);
    let mut chunks = 0;
    for (index, layer) in map.layers.iter().enumerate() {
        if !layer.visible {
            continue;
        }
        let color = Color::srgba(1.0, 1.0, 1.0, layer.opacity.clamp(0.0, 1.0));
        let alpha_mode = if index == 0 { AlphaMode2d::Opaque } else { AlphaMode2d::Blend };
        for cy in (0..map.height).step_by(CHUNK as usize) {
            for cx in (0..map.width).step_by(CHUNK as usize) {
                let size = UVec2::new(CHUNK.min(map.width - cx), CHUNK.min(map.height - cy));
                let origin = TilePos::new(cx as i32, cy as i32);
                let Some(tiles) = chunk_tiles(map, index, &array, origin, size, color) else {
                    continue;
                };
                let center = Vec2::new(
                    (cx * tw) as f32 + (size.x * tw) as f32 / 2.0,
                    -((cy * th) as f32 + (size.y * th) as f32 / 2.0),
                );
                commands.spawn((
                    Name::new(format!("tiles {} chunk {cx},{cy}", layer.name)),
                    TilemapChunk {
                        chunk_size: size,
                        tile_display_size: UVec2::new(tw, th),
                        tileset: tileset.clone(),
                        alpha_mode,
                    },
                    TilemapChunkTileData(tiles),
                    Transform::from_xyz(center.x, center.y, index as f32),
                ));
                chunks += 1;
            }
        }
    }
    info!(chunks, layers = map.layers.len(), tiles = array.layers, "tile map spawned");
    status.spawned = true;
    status.chunks = chunks;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_map() -> WorldMap {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/worlds/default.tmx");
        WorldMap::load(&path).expect("default map")
    }

    #[test]
    fn tileset_is_cut_into_layers_in_id_order() {
        let map = default_map();
        let ts = &map.tilesets[0];
        let image = ts.image.as_ref().expect("tileset image");
        let rgba = load_rgba(image).expect("decodes");
        let array = build_tile_array(&map, &[Some(rgba)]);
        assert_eq!(array.layers, ts.tile_count);
        assert_eq!(array.bases, vec![Some(0)]);
        assert_eq!(array.data.len(), (32 * 32 * 4 * array.layers) as usize);
        // Tile 4 is water: bluish everywhere.
        let water = &array.data[(4 * 32 * 32 * 4) as usize..(5 * 32 * 32 * 4) as usize];
        let blue = water.chunks(4).filter(|p| p[2] > p[0] && p[2] > p[1]).count();
        assert!(blue > 32 * 32 * 9 / 10, "{blue}");
        assert_eq!(array.layer_of(0, ts.tile_count, ts.tile_count), None);
    }

    #[test]
    fn chunks_are_stored_bottom_row_first() {
        let map = default_map();
        let array = build_tile_array(&map, &[None]);
        // No image: nothing drawable.
        assert!(chunk_tiles(&map, 0, &array, TilePos::new(0, 0), UVec2::splat(4), Color::WHITE).is_none());
        let fake = Rgba { width: 256, height: 96, data: vec![255; 256 * 96 * 4] };
        let array = build_tile_array(&map, &[Some(fake)]);
        let tiles = chunk_tiles(&map, 0, &array, TilePos::new(0, 0), UVec2::new(2, 3), Color::WHITE).expect("tiles");
        let top_left = map.layers[0].get(TilePos::new(0, 0)).expect("ground").id;
        let bottom_left = map.layers[0].get(TilePos::new(0, 2)).expect("ground").id;
        assert_eq!(tiles[4].map(|t| u32::from(t.tileset_index)), Some(top_left));
        assert_eq!(tiles[0].map(|t| u32::from(t.tileset_index)), Some(bottom_left));
    }
}
