//! The Tiled map loader: reads a `.tmx` world (with its `.tsx` tilesets) into a [`WorldMap`]
//! that the server simulates on and the client draws.
//!
//! - Size in tiles (`width`, `height`) and pixels per tile (`tile_width`, `tile_height`).
//! - Walkability: a tile position is walkable iff at least one tile layer has a tile there and
//!   no tile at that position (in any layer, hidden ones included: they are often collision
//!   layers) has the property `walkable = false`. A tile without the property is walkable.
//! - Kind ([`TileKind`]): the `kind` property of the top-most tile at a position that has one.
//! - Lands: rectangle objects of the object layer(s) named `lands`, in whole tiles; each has a
//!   non-empty unique `name` and optional properties; lands never overlap.
//! - Spawns: objects of the object layer(s) named `spawns` (points, or rectangles/ellipses by
//!   their centre), converted to tiles; each must be walkable; at least one is required.
//! - For rendering: every tile layer in draw order ([`TileLayerDef`]) and every tileset with its
//!   image and grid ([`TilesetDef`]).
//!
//! Robustness: map files come from outside and are fuzzed. The `tiled` crate panics or
//! over-allocates on some malformed inputs (a layer with fewer tiles than `width * height`
//! panics on lookup, `tilecount` pre-sizes a hash map, compressed layer data is inflated without
//! a limit, deep nesting recurses). So every resource `tiled` reads passes through
//! [`validate_xml`] first: the same XML parser (`quick-xml` 0.31, as `tiled` 0.16 uses) and the
//! same decoders check sizes, counts and nesting before `tiled` sees the bytes. Limits:
//! [`MAX_FILE_BYTES`] per file, [`MAX_MAP_SIDE`] tiles per side, [`MAX_TILE_CELLS`] cells over
//! all tile layers, [`MAX_TILESET_TILES`], [`MAX_XML_DEPTH`], [`MAX_OBJECTS`] lands or spawns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use super::geometry::{Rect, TilePos};

/// Largest accepted map side, in tiles.
pub const MAX_MAP_SIDE: u32 = 8192;
/// Largest accepted number of tile cells, summed over all tile layers of a map.
pub const MAX_TILE_CELLS: u64 = 1 << 24;
/// Largest accepted file (map, tileset or template), in bytes.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest accepted tile size, in pixels.
pub const MAX_TILE_PX: u32 = 1024;
/// Largest accepted `tilecount` of a tileset.
pub const MAX_TILESET_TILES: u32 = 1 << 16;
/// Deepest accepted XML element nesting.
pub const MAX_XML_DEPTH: usize = 64;
/// Most lands, and most spawns, a map may have.
pub const MAX_OBJECTS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot load map: {0}")]
    Tiled(String),
    #[error("invalid map: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> MapError {
    MapError::Invalid(msg.into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    Grass,
    Sand,
    Water,
    Wall,
    Path,
    Floor,
}

impl TileKind {
    /// The value of the `kind` tile property for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            TileKind::Grass => "grass",
            TileKind::Sand => "sand",
            TileKind::Water => "water",
            TileKind::Wall => "wall",
            TileKind::Path => "path",
            TileKind::Floor => "floor",
        }
    }

    /// Parses a `kind` property value (case-insensitive); `None` for unknown kinds.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Grass, Self::Sand, Self::Water, Self::Wall, Self::Path, Self::Floor]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LandDef {
    pub name: String,
    pub rect: Rect,
    pub properties: BTreeMap<String, String>,
}

/// A tile of a layer: which tileset (index into [`WorldMap::tilesets`]) and which tile in it
/// (its local id, which for a grid tileset is its index in the image, row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileRef {
    pub tileset: u32,
    pub id: u32,
}

/// A tile layer, for rendering.
#[derive(Clone, PartialEq)]
pub struct TileLayerDef {
    pub name: String,
    pub visible: bool,
    pub opacity: f32,
    /// Row-major, `width * height` of the map.
    tiles: Vec<Option<TileRef>>,
    width: u32,
}

impl TileLayerDef {
    /// The tile at `p` (`None` when empty or outside the map).
    pub fn get(&self, p: TilePos) -> Option<TileRef> {
        if p.x < 0 || p.y < 0 || p.x as u32 >= self.width {
            return None;
        }
        let i = (p.y as usize).checked_mul(self.width as usize)?.checked_add(p.x as usize)?;
        self.tiles.get(i).copied().flatten()
    }
}

impl std::fmt::Debug for TileLayerDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileLayerDef")
            .field("name", &self.name)
            .field("visible", &self.visible)
            .field("opacity", &self.opacity)
            .field("tiles", &self.tiles.iter().filter(|t| t.is_some()).count())
            .finish()
    }
}

/// A tileset, for rendering: its image (if it is a single-image tileset) and grid.
#[derive(Clone, Debug, PartialEq)]
pub struct TilesetDef {
    pub name: String,
    /// The image path as `tiled` resolves it: relative paths are relative to the directory of
    /// the path the map was loaded from (so relative to the working directory when the map path
    /// was relative).
    pub image: Option<PathBuf>,
    pub image_width: u32,
    pub image_height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub columns: u32,
    pub tile_count: u32,
    pub spacing: u32,
    pub margin: u32,
}

impl TilesetDef {
    /// Pixel rectangle `(x, y, width, height)` of tile `id` in the tileset image.
    pub fn tile_rect(&self, id: u32) -> Option<(u32, u32, u32, u32)> {
        if self.columns == 0 || id >= self.tile_count {
            return None;
        }
        let col = id % self.columns;
        let row = id / self.columns;
        let x = self.margin.checked_add(col.checked_mul(self.tile_width.checked_add(self.spacing)?)?)?;
        let y = self.margin.checked_add(row.checked_mul(self.tile_height.checked_add(self.spacing)?)?)?;
        Some((x, y, self.tile_width, self.tile_height))
    }
}

#[derive(Clone)]
pub struct WorldMap {
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    pub lands: Vec<LandDef>,
    pub spawns: Vec<TilePos>,
    /// Names of the spawn points, parallel to `spawns` (empty string when unnamed).
    pub spawn_names: Vec<String>,
    pub tilesets: Vec<TilesetDef>,
    /// Tile layers in draw order (groups flattened).
    pub layers: Vec<TileLayerDef>,
    /// One bit per tile, row-major: 512 KiB for 2048x2048, so the tick's walkability checks of
    /// avatars spread over a big map mostly hit the cache.
    walkable: Vec<u64>,
    kinds: Vec<Option<TileKind>>,
}

/// Packs walkability flags into bits.
fn walk_bits(flags: impl IntoIterator<Item = bool>) -> Vec<u64> {
    let mut bits = Vec::new();
    for (i, walkable) in flags.into_iter().enumerate() {
        if i % 64 == 0 {
            bits.push(0);
        }
        if walkable && let Some(word) = bits.last_mut() {
            *word |= 1 << (i % 64);
        }
    }
    bits
}

impl std::fmt::Debug for WorldMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorldMap")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("tile_width", &self.tile_width)
            .field("tile_height", &self.tile_height)
            .field("lands", &self.lands)
            .field("spawns", &self.spawns)
            .field("tilesets", &self.tilesets)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

impl WorldMap {
    /// Loads a `.tmx` map and the tilesets and templates it references.
    pub fn load(path: &Path) -> Result<Self, MapError> {
        let reader = ValidatingReader { memory: None, allow_files: true };
        load_with(reader, path)
    }

    /// Parses a `.tmx` map from memory. External tilesets and templates are read relative to
    /// `base_dir`; with `None`, no file is read at all (the map must embed its tilesets).
    pub fn from_tmx_str(xml: &str, base_dir: Option<&Path>) -> Result<Self, MapError> {
        let path = base_dir.unwrap_or(Path::new("")).join("__memory__.tmx");
        let reader =
            ValidatingReader { memory: Some((path.clone(), xml.as_bytes().to_vec())), allow_files: base_dir.is_some() };
        load_with(reader, &path)
    }

    /// An all-walkable grass map of the given size (tests and benchmarks).
    pub fn open(width: u32, height: u32) -> Self {
        let n = (width as usize) * (height as usize);
        Self {
            width,
            height,
            tile_width: 32,
            tile_height: 32,
            lands: Vec::new(),
            spawns: vec![TilePos::new(0, 0)],
            spawn_names: vec![String::new()],
            tilesets: Vec::new(),
            layers: Vec::new(),
            walkable: walk_bits(std::iter::repeat_n(true, n)),
            kinds: vec![Some(TileKind::Grass); n],
        }
    }

    pub fn in_bounds(&self, p: TilePos) -> bool {
        p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height
    }

    fn index(&self, p: TilePos) -> Option<usize> {
        self.in_bounds(p).then(|| (p.y as usize) * (self.width as usize) + p.x as usize)
    }

    pub fn is_walkable(&self, p: TilePos) -> bool {
        self.index(p).is_some_and(|i| self.walkable.get(i / 64).is_some_and(|word| word >> (i % 64) & 1 == 1))
    }

    /// The kind of the top-most tile at `p` that has a `kind` property.
    pub fn kind(&self, p: TilePos) -> Option<TileKind> {
        self.index(p).and_then(|i| self.kinds.get(i).copied().flatten())
    }

    /// The land containing `p`, if any.
    pub fn land_at(&self, p: TilePos) -> Option<&LandDef> {
        self.lands.iter().find(|l| l.rect.contains(p))
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Serves files to `tiled`, after [`validate_xml`] accepted them.
struct ValidatingReader {
    /// The in-memory map, served for its virtual path.
    memory: Option<(PathBuf, Vec<u8>)>,
    /// Whether other paths may be read from disk.
    allow_files: bool,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl tiled::ResourceReader for ValidatingReader {
    type Resource = Cursor<Vec<u8>>;
    type Error = ReadError;

    fn read_from(&mut self, path: &Path) -> Result<Self::Resource, Self::Error> {
        let bytes = match &self.memory {
            Some((mem_path, bytes)) if mem_path == path => {
                if bytes.len() as u64 > MAX_FILE_BYTES {
                    return Err(ReadError::Invalid(format!("file larger than {MAX_FILE_BYTES} bytes")));
                }
                bytes.clone()
            }
            _ if !self.allow_files => {
                return Err(ReadError::Invalid(format!(
                    "{} is not available (map parsed from memory without a base directory)",
                    path.display()
                )));
            }
            _ => {
                let file = std::fs::File::open(path)?;
                let mut bytes = Vec::new();
                file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
                if bytes.len() as u64 > MAX_FILE_BYTES {
                    return Err(ReadError::Invalid(format!("file larger than {MAX_FILE_BYTES} bytes")));
                }
                bytes
            }
        };
        validate_xml(&bytes).map_err(ReadError::Invalid)?;
        Ok(Cursor::new(bytes))
    }
}

fn tiled_error(err: tiled::Error) -> MapError {
    if let tiled::Error::ResourceLoadingError { path, err } = &err
        && let Some(ReadError::Invalid(msg)) = err.downcast_ref::<ReadError>()
    {
        return invalid(format!("{}: {msg}", path.display()));
    }
    MapError::Tiled(err.to_string())
}

fn load_with(reader: ValidatingReader, path: &Path) -> Result<WorldMap, MapError> {
    let mut loader = tiled::Loader::with_reader(reader);
    let map = loader.load_tmx_map(path).map_err(tiled_error)?;
    convert(&map)
}

/// Per-tile facts from a tileset's `<tile>` properties.
#[derive(Clone, Copy)]
struct TileFacts {
    walkable: bool,
    kind: Option<TileKind>,
}

struct TilesetFacts {
    tile_count: u32,
    tiles: HashMap<u32, TileFacts>,
}

impl TilesetFacts {
    /// Facts of tile `id`; `None` when the tileset has no such tile.
    fn get(&self, id: u32) -> Option<TileFacts> {
        match self.tiles.get(&id) {
            Some(f) => Some(*f),
            None if id < self.tile_count => Some(TileFacts { walkable: true, kind: None }),
            None => None,
        }
    }
}

fn property_string(value: &tiled::PropertyValue) -> Option<String> {
    use tiled::PropertyValue as V;
    Some(match value {
        V::BoolValue(b) => b.to_string(),
        V::FloatValue(f) => f.to_string(),
        V::IntValue(i) => i.to_string(),
        V::ColorValue(c) => format!("#{:02x}{:02x}{:02x}{:02x}", c.alpha, c.red, c.green, c.blue),
        V::StringValue(s) | V::FileValue(s) => s.clone(),
        V::ObjectValue(id) => id.to_string(),
        V::ListValue(_) | V::ClassValue { .. } => return None,
    })
}

fn tile_facts(ts_name: &str, id: u32, props: &tiled::Properties) -> Result<TileFacts, MapError> {
    let walkable = match props.get("walkable") {
        None => true,
        Some(tiled::PropertyValue::BoolValue(b)) => *b,
        Some(tiled::PropertyValue::StringValue(s)) if s.trim().eq_ignore_ascii_case("true") => true,
        Some(tiled::PropertyValue::StringValue(s)) if s.trim().eq_ignore_ascii_case("false") => false,
        Some(other) => {
            return Err(invalid(format!(
                "tileset {ts_name:?} tile {id}: property `walkable` must be a bool, got {other:?}"
            )));
        }
    };
    let kind = match props.get("kind") {
        Some(tiled::PropertyValue::StringValue(s)) => TileKind::parse(s),
        _ => None,
    };
    Ok(TileFacts { walkable, kind })
}

fn to_u32(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Flattens group layers: tile layers and object layers in draw order.
fn flatten<'m>(
    layers: impl Iterator<Item = tiled::Layer<'m>>,
    tiles: &mut Vec<(tiled::Layer<'m>, tiled::TileLayer<'m>)>,
    objects: &mut Vec<(tiled::Layer<'m>, tiled::ObjectLayer<'m>)>,
    depth: usize,
) -> Result<(), MapError> {
    if depth > MAX_XML_DEPTH {
        return Err(invalid("layer groups nested too deeply"));
    }
    for layer in layers {
        match layer.layer_type() {
            tiled::LayerType::Tiles(t) => tiles.push((layer, t)),
            tiled::LayerType::Objects(o) => objects.push((layer, o)),
            tiled::LayerType::Group(g) => flatten(g.layers(), tiles, objects, depth + 1)?,
            tiled::LayerType::Image(_) => {}
        }
    }
    Ok(())
}

fn convert(map: &tiled::Map) -> Result<WorldMap, MapError> {
    if map.infinite() {
        return Err(invalid("infinite maps are not supported"));
    }
    if map.orientation != tiled::Orientation::Orthogonal {
        return Err(invalid(format!("only orthogonal maps are supported, got {:?}", map.orientation)));
    }
    let (width, height) = (map.width, map.height);
    if width == 0 || height == 0 || width > MAX_MAP_SIDE || height > MAX_MAP_SIDE {
        return Err(invalid(format!("map size {width}x{height} outside 1..={MAX_MAP_SIDE}")));
    }
    let (tw, th) = (map.tile_width, map.tile_height);
    if tw == 0 || th == 0 || tw > MAX_TILE_PX || th > MAX_TILE_PX {
        return Err(invalid(format!("tile size {tw}x{th} outside 1..={MAX_TILE_PX}")));
    }

    // Tilesets: rendering info and per-tile facts.
    let mut tilesets = Vec::new();
    let mut facts = Vec::new();
    for ts in map.tilesets() {
        let mut tiles = HashMap::new();
        for (id, tile) in ts.tiles() {
            tiles.insert(id, tile_facts(&ts.name, id, &tile.properties)?);
        }
        facts.push(TilesetFacts { tile_count: ts.tilecount, tiles });
        tilesets.push(TilesetDef {
            name: ts.name.clone(),
            image: ts.image.as_ref().map(|i| i.source.clone()),
            image_width: ts.image.as_ref().map_or(0, |i| to_u32(i.width)),
            image_height: ts.image.as_ref().map_or(0, |i| to_u32(i.height)),
            tile_width: ts.tile_width,
            tile_height: ts.tile_height,
            columns: ts.columns,
            tile_count: ts.tilecount,
            spacing: ts.spacing,
            margin: ts.margin,
        });
    }

    let mut tile_layers = Vec::new();
    let mut object_layers = Vec::new();
    flatten(map.layers(), &mut tile_layers, &mut object_layers, 0)?;

    let n = (width as usize) * (height as usize);
    let cells = (n as u64).saturating_mul(tile_layers.len() as u64);
    if cells > MAX_TILE_CELLS {
        return Err(invalid(format!("{cells} tile cells over all layers, more than {MAX_TILE_CELLS}")));
    }
    let mut has_tile = vec![false; n];
    let mut blocked = vec![false; n];
    let mut kinds: Vec<Option<TileKind>> = vec![None; n];
    let mut layers = Vec::with_capacity(tile_layers.len());
    for (layer, tile_layer) in &tile_layers {
        let tiled::TileLayer::Finite(finite) = tile_layer else {
            return Err(invalid("infinite tile layers are not supported"));
        };
        let mut tiles = vec![None; n];
        for y in 0..height {
            for x in 0..width {
                // Sizes are capped at 8192, so these fit in i32; the validator guaranteed the
                // layer data holds exactly `layer width * height` tiles, so lookups cannot panic.
                let Some(tile) = finite.get_tile(x as i32, y as i32) else {
                    continue;
                };
                let ts_index = tile.tileset_index();
                let id = tile.id();
                let tile_facts = facts.get(ts_index).and_then(|f| f.get(id)).ok_or_else(|| {
                    invalid(format!("layer {:?} at ({x}, {y}) uses tile {id} that its tileset lacks", layer.name))
                })?;
                let i = (y as usize) * (width as usize) + x as usize;
                has_tile[i] = true;
                blocked[i] |= !tile_facts.walkable;
                if tile_facts.kind.is_some() {
                    kinds[i] = tile_facts.kind;
                }
                tiles[i] = Some(TileRef { tileset: ts_index as u32, id });
            }
        }
        layers.push(TileLayerDef {
            name: layer.name.clone(),
            visible: layer.visible,
            opacity: layer.opacity,
            tiles,
            width,
        });
    }
    let walkable = walk_bits(has_tile.iter().zip(&blocked).map(|(h, b)| *h && !*b));

    let mut world = WorldMap {
        width,
        height,
        tile_width: tw,
        tile_height: th,
        lands: Vec::new(),
        spawns: Vec::new(),
        spawn_names: Vec::new(),
        tilesets,
        layers,
        walkable,
        kinds,
    };

    for (layer, objects) in &object_layers {
        match layer.name.as_str() {
            "lands" => {
                for object in objects.objects() {
                    let land = land_from_object(&world, &object)?;
                    world.lands.push(land);
                    if world.lands.len() > MAX_OBJECTS {
                        return Err(invalid(format!("more than {MAX_OBJECTS} lands")));
                    }
                }
            }
            "spawns" => {
                for object in objects.objects() {
                    let (name, pos) = spawn_from_object(&world, &object)?;
                    world.spawns.push(pos);
                    world.spawn_names.push(name);
                    if world.spawns.len() > MAX_OBJECTS {
                        return Err(invalid(format!("more than {MAX_OBJECTS} spawns")));
                    }
                }
            }
            _ => {}
        }
    }
    check_lands(&world.lands)?;
    if world.spawns.is_empty() {
        return Err(invalid("the map has no spawn points (object layer `spawns`)"));
    }
    Ok(world)
}

/// Converts a pixel coordinate to whole tiles, requiring an exact multiple of the tile size.
fn exact_tiles(px: f32, tile: u32, what: &str, name: &str) -> Result<i64, MapError> {
    let v = f64::from(px);
    let t = f64::from(tile);
    if !v.is_finite() || v < 0.0 || (v / t).fract() != 0.0 || v / t > f64::from(MAX_MAP_SIDE) {
        return Err(invalid(format!("land {name:?}: {what} {px} is not a whole number of tiles in the map")));
    }
    Ok((v / t) as i64)
}

fn land_from_object(world: &WorldMap, object: &tiled::Object<'_>) -> Result<LandDef, MapError> {
    let name = object.name.trim().to_owned();
    if name.is_empty() {
        return Err(invalid(format!("land object {} has no name", object.id())));
    }
    let tiled::ObjectShape::Rect { width, height } = object.shape else {
        return Err(invalid(format!("land {name:?} is not a rectangle")));
    };
    if object.tile_data().is_some() || object.rotation != 0.0 {
        return Err(invalid(format!("land {name:?} must be a plain, unrotated rectangle")));
    }
    let x = exact_tiles(object.x, world.tile_width, "x", &name)?;
    let y = exact_tiles(object.y, world.tile_height, "y", &name)?;
    let w = exact_tiles(width, world.tile_width, "width", &name)?;
    let h = exact_tiles(height, world.tile_height, "height", &name)?;
    if w == 0 || h == 0 {
        return Err(invalid(format!("land {name:?} has zero size")));
    }
    if x + w > i64::from(world.width) || y + h > i64::from(world.height) {
        return Err(invalid(format!("land {name:?} extends outside the map")));
    }
    // All four are within 0..=MAX_MAP_SIDE, so the conversions are exact.
    let rect = Rect::new(x as i32, y as i32, w as u32, h as u32);
    let properties = object.properties.iter().filter_map(|(k, v)| property_string(v).map(|s| (k.clone(), s))).collect();
    Ok(LandDef { name, rect, properties })
}

fn check_lands(lands: &[LandDef]) -> Result<(), MapError> {
    let mut names = HashSet::new();
    for land in lands {
        if !names.insert(land.name.as_str()) {
            return Err(invalid(format!("two lands are named {:?}", land.name)));
        }
    }
    // Sweep by left edge: O(n log n + overlaps checked), at most MAX_OBJECTS lands.
    let mut order: Vec<&LandDef> = lands.iter().collect();
    order.sort_by_key(|l| l.rect.x);
    for (i, a) in order.iter().enumerate() {
        for b in &order[i + 1..] {
            if i64::from(b.rect.x) >= a.rect.right() {
                break;
            }
            if a.rect.intersects(&b.rect) {
                return Err(invalid(format!("lands {:?} and {:?} overlap", a.name, b.name)));
            }
        }
    }
    Ok(())
}

fn spawn_from_object(world: &WorldMap, object: &tiled::Object<'_>) -> Result<(String, TilePos), MapError> {
    let name = object.name.trim().to_owned();
    let (px, py) = match object.shape {
        tiled::ObjectShape::Point(..) => (f64::from(object.x), f64::from(object.y)),
        tiled::ObjectShape::Rect { width, height } | tiled::ObjectShape::Ellipse { width, height } => {
            (f64::from(object.x) + f64::from(width) / 2.0, f64::from(object.y) + f64::from(height) / 2.0)
        }
        _ => {
            return Err(invalid(format!("spawn {name:?} must be a point, rectangle or ellipse")));
        }
    };
    let tx = (px / f64::from(world.tile_width)).floor();
    let ty = (py / f64::from(world.tile_height)).floor();
    let in_map = tx.is_finite()
        && ty.is_finite()
        && tx >= 0.0
        && ty >= 0.0
        && tx < f64::from(world.width)
        && ty < f64::from(world.height);
    if !in_map {
        return Err(invalid(format!("spawn {name:?} is outside the map")));
    }
    let pos = TilePos::new(tx as i32, ty as i32);
    if !world.is_walkable(pos) {
        return Err(invalid(format!("spawn {name:?} at ({}, {}) is not walkable", pos.x, pos.y)));
    }
    Ok((name, pos))
}

// ---------------------------------------------------------------------------------------------
// Pre-validation

/// Checks a Tiled XML resource (map, tileset or template) before `tiled` parses it: nesting
/// depth, no infinite maps, size limits, `tilecount` limits, and that every finite tile layer's
/// data holds exactly `width * height` tiles, decoded the way `tiled` decodes it (first text or
/// CDATA child; CSV, base64, base64+zlib/gzip with bounded inflation).
pub fn validate_xml(bytes: &[u8]) -> Result<(), String> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut depth = 0usize;
    // Dimensions of the enclosing `<layer>` elements.
    let mut layers: Vec<(usize, u64)> = Vec::new();
    let mut cells = 0u64;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("XML error: {e}"))?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    return Err(format!("XML nested deeper than {MAX_XML_DEPTH}"));
                }
                let name = e.local_name().as_ref().to_vec();
                let attrs = attributes(&e)?;
                check_element(&name, &attrs)?;
                match name.as_slice() {
                    b"layer" => {
                        let w = u64::from(attr_u32(&attrs, "width")?.unwrap_or(0));
                        let h = u64::from(attr_u32(&attrs, "height")?.unwrap_or(0));
                        cells = cells.saturating_add(w.saturating_mul(h));
                        if cells > MAX_TILE_CELLS {
                            return Err(format!("more than {MAX_TILE_CELLS} tile cells"));
                        }
                        layers.push((depth, w * h));
                    }
                    b"data" => {
                        let expected = layers.last().map(|l| l.1);
                        let end = e.to_end().into_owned();
                        let text = first_text(&mut reader, end.name())?;
                        depth -= 1;
                        if let Some(expected) = expected {
                            check_layer_data(&attrs, text.as_deref().unwrap_or(""), expected)?;
                        }
                    }
                    b"chunk" => {
                        return Err("infinite maps (chunked layer data) are not supported".into());
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                let name = e.local_name().as_ref().to_vec();
                let attrs = attributes(&e)?;
                check_element(&name, &attrs)?;
                if name == b"data"
                    && let Some(&(_, expected)) = layers.last()
                {
                    check_layer_data(&attrs, "", expected)?;
                }
            }
            Event::End(_) => {
                if layers.last().is_some_and(|l| l.0 == depth) {
                    layers.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

type Attrs = Vec<(Vec<u8>, String)>;

fn attributes(e: &quick_xml::events::BytesStart<'_>) -> Result<Attrs, String> {
    let mut out = Vec::new();
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("XML attribute error: {err}"))?;
        let value = attr.unescape_value().map_err(|err| format!("XML attribute error: {err}"))?;
        out.push((attr.key.local_name().as_ref().to_vec(), value.into_owned()));
    }
    Ok(out)
}

/// The last value of attribute `key` (as `tiled` takes it).
fn attr<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a str> {
    attrs.iter().rev().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v.as_str())
}

fn attr_u32(attrs: &Attrs, key: &str) -> Result<Option<u32>, String> {
    match attr(attrs, key) {
        None => Ok(None),
        Some(v) => v.parse::<u32>().map(Some).map_err(|_| format!("attribute {key}={v:?} is not a number")),
    }
}

fn check_element(name: &[u8], attrs: &Attrs) -> Result<(), String> {
    match name {
        b"map" => {
            if attr(attrs, "infinite").is_some_and(|v| v == "1") {
                return Err("infinite maps are not supported".into());
            }
            for key in ["width", "height"] {
                if attr_u32(attrs, key)?.is_some_and(|v| v > MAX_MAP_SIDE) {
                    return Err(format!("map {key} larger than {MAX_MAP_SIDE}"));
                }
            }
            for key in ["tilewidth", "tileheight"] {
                if attr_u32(attrs, key)?.is_some_and(|v| v > MAX_TILE_PX) {
                    return Err(format!("map {key} larger than {MAX_TILE_PX}"));
                }
            }
        }
        b"tileset" => {
            if attr_u32(attrs, "tilecount")?.is_some_and(|v| v > MAX_TILESET_TILES) {
                return Err(format!("tileset tilecount larger than {MAX_TILESET_TILES}"));
            }
            // Without `columns`, `tiled` derives it from the image width with unchecked
            // arithmetic (a division by zero for zero-width tiles). Tiled >= 1.0 always
            // writes it; a `source` reference carries no tileset attributes.
            if attr(attrs, "source").is_none() && attr_u32(attrs, "columns")?.is_none() {
                return Err("tileset without a columns attribute (save it with Tiled >= 1.0)".into());
            }
        }
        b"layer" => {
            for key in ["width", "height"] {
                if attr_u32(attrs, key)?.is_some_and(|v| v > MAX_MAP_SIDE) {
                    return Err(format!("layer {key} larger than {MAX_MAP_SIDE}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads the content of an element the way `tiled` does: the first text or CDATA event wins,
/// child elements are skipped. Consumes the element's end tag.
fn first_text(
    reader: &mut quick_xml::Reader<&[u8]>,
    end: quick_xml::name::QName<'_>,
) -> Result<Option<String>, String> {
    use quick_xml::events::Event;
    let end_name = end.as_ref().to_vec();
    let mut buf = Vec::new();
    let mut result = None;
    loop {
        match reader.read_event_into(&mut buf).map_err(|e| format!("XML error: {e}"))? {
            Event::Text(t) if result.is_none() => {
                result = Some(t.unescape().map_err(|e| format!("XML error: {e}"))?.into_owned());
            }
            Event::CData(t) if result.is_none() => {
                result = Some(String::from_utf8_lossy(t.as_ref()).into_owned());
            }
            Event::Start(e) => {
                let inner_end = e.to_end().into_owned();
                let mut skip = Vec::new();
                reader.read_to_end_into(inner_end.name(), &mut skip).map_err(|e| format!("XML error: {e}"))?;
            }
            Event::End(e) => {
                if e.name().as_ref() != end_name.as_slice() {
                    return Err("mismatched end tag in layer data".into());
                }
                return Ok(result);
            }
            Event::Eof => return Err("end of file inside layer data".into()),
            _ => {}
        }
        buf.clear();
    }
}

/// Checks that layer data decodes to exactly `expected` tiles.
fn check_layer_data(attrs: &Attrs, text: &str, expected: u64) -> Result<(), String> {
    let encoding = attr(attrs, "encoding");
    let compression = attr(attrs, "compression");
    let count = match (encoding, compression) {
        (Some("csv"), None) => text.split(',').count() as u64,
        (Some("base64"), compression) => {
            use base64::Engine as _;
            let engine =
                base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, base64::engine::general_purpose::PAD);
            let raw = engine.decode(text.trim().as_bytes()).map_err(|e| format!("bad base64 layer data: {e}"))?;
            let limit = expected.saturating_mul(4).saturating_add(1);
            let bytes = match compression {
                None => raw.len() as u64,
                Some("zlib") => inflated_len(flate2::bufread::ZlibDecoder::new(&raw[..]), limit)?,
                Some("gzip") => inflated_len(flate2::bufread::GzDecoder::new(&raw[..]), limit)?,
                Some(other) => {
                    return Err(format!(
                        "unsupported layer compression {other:?} (use CSV, or base64 with zlib or gzip)"
                    ));
                }
            };
            if bytes != expected.saturating_mul(4) {
                return Err(format!(
                    "layer data has {bytes} bytes, expected width*height*4 = {}",
                    expected.saturating_mul(4)
                ));
            }
            expected
        }
        _ => {
            return Err(format!("unsupported layer encoding {encoding:?}/{compression:?} (use CSV or base64)"));
        }
    };
    if count != expected {
        return Err(format!("layer data has {count} tiles, expected width*height = {expected}"));
    }
    Ok(())
}

/// Inflates at most `limit` bytes and returns how many came out.
fn inflated_len(decoder: impl Read, limit: u64) -> Result<u64, String> {
    let mut sink = Vec::new();
    decoder.take(limit).read_to_end(&mut sink).map_err(|e| format!("bad compressed layer data: {e}"))?;
    Ok(sink.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_map_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/worlds/default.tmx")
    }

    /// A small map with an embedded tileset: 0 grass, 1 water (not walkable), 2 wall.
    fn small_map(layer_csv: &str, objects: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<map version="1.10" orientation="orthogonal" renderorder="right-down" width="4" height="3" tilewidth="32" tileheight="32" infinite="0">
 <tileset firstgid="1" name="t" tilewidth="32" tileheight="32" tilecount="3" columns="3">
  <image source="t.png" width="96" height="32"/>
  <tile id="0"><properties><property name="kind" value="grass"/><property name="walkable" type="bool" value="true"/></properties></tile>
  <tile id="1"><properties><property name="kind" value="water"/><property name="walkable" type="bool" value="false"/></properties></tile>
  <tile id="2"><properties><property name="kind" value="wall"/><property name="walkable" type="bool" value="false"/></properties></tile>
 </tileset>
 <layer id="1" name="ground" width="4" height="3">
  <data encoding="csv">{layer_csv}</data>
 </layer>
 {objects}
</map>"#
        )
    }

    const GROUND: &str = "1,1,1,2,\n1,1,1,2,\n0,1,1,3";
    const SPAWN: &str =
        r#"<objectgroup id="3" name="spawns"><object id="9" name="s" x="16" y="16"><point/></object></objectgroup>"#;

    fn lands(objs: &str) -> String {
        format!(r#"<objectgroup id="2" name="lands">{objs}</objectgroup>{SPAWN}"#)
    }

    #[test]
    fn loads_the_default_world() {
        let map = WorldMap::load(&default_map_path()).expect("default map loads");
        assert_eq!((map.width, map.height), (256, 256));
        assert_eq!((map.tile_width, map.tile_height), (32, 32));
        assert!(map.lands.len() >= 9, "{} lands", map.lands.len());
        let mut names = HashSet::new();
        for land in &map.lands {
            assert!(!land.name.is_empty());
            assert!(names.insert(land.name.clone()));
            assert!(land.properties.contains_key("description"), "{land:?}");
        }
        assert!(map.lands.iter().any(|l| l.name == "Central Plaza"));
        assert!(!map.spawns.is_empty());
        assert_eq!(map.spawns.len(), map.spawn_names.len());
        for &s in &map.spawns {
            assert!(map.is_walkable(s), "spawn {s:?}");
        }
        // Every kind is present; water and walls are never walkable; grass, path and floor are
        // walkable unless something stands on them.
        let mut seen = HashSet::new();
        for y in 0..256 {
            for x in 0..256 {
                let p = TilePos::new(x, y);
                let kind = map.kind(p).expect("every tile has a kind");
                seen.insert(kind);
                if matches!(kind, TileKind::Water | TileKind::Wall) {
                    assert!(!map.is_walkable(p), "{kind:?} at {p:?} is walkable");
                }
                if matches!(kind, TileKind::Path | TileKind::Floor | TileKind::Sand) {
                    assert!(map.is_walkable(p), "{kind:?} at {p:?} is not walkable");
                }
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!(!map.is_walkable(TilePos::new(-1, 0)));
        assert!(!map.is_walkable(TilePos::new(0, 256)));
        // Rendering info.
        assert_eq!(map.tilesets.len(), 1);
        let ts = &map.tilesets[0];
        assert_eq!(ts.tile_rect(9), Some((32, 32, 32, 32)));
        assert!(ts.image.as_ref().is_some_and(|p| p.ends_with("tileset.png")));
        assert_eq!(map.layers.len(), 2);
        assert!(map.layers[0].get(TilePos::new(0, 0)).is_some());
    }

    #[test]
    fn loads_from_memory() {
        let xml = small_map(
            GROUND,
            &lands(
                r#"<object id="1" name="A" x="0" y="0" width="64" height="64"><properties><property name="description" value="first"/></properties></object><object id="2" name="B" x="64" y="0" width="32" height="96"/>"#,
            ),
        );
        let map = WorldMap::from_tmx_str(&xml, None).expect("loads");
        assert_eq!((map.width, map.height), (4, 3));
        assert_eq!(map.lands.len(), 2);
        assert_eq!(map.lands[0].rect, Rect::new(0, 0, 2, 2));
        assert_eq!(map.lands[0].properties.get("description").map(String::as_str), Some("first"));
        assert_eq!(map.lands[1].rect, Rect::new(2, 0, 1, 3));
        assert_eq!(map.spawns, vec![TilePos::new(0, 0)]);
        assert_eq!(map.spawn_names, vec!["s".to_owned()]);
        assert!(map.is_walkable(TilePos::new(0, 0)));
        assert!(!map.is_walkable(TilePos::new(3, 0)), "water");
        assert!(!map.is_walkable(TilePos::new(3, 2)), "wall");
        assert!(!map.is_walkable(TilePos::new(0, 2)), "no tile");
        assert_eq!(map.kind(TilePos::new(3, 2)), Some(TileKind::Wall));
        assert_eq!(map.kind(TilePos::new(0, 2)), None);
        assert_eq!(map.land_at(TilePos::new(2, 2)).map(|l| l.name.as_str()), Some("B"));
    }

    #[test]
    fn a_blocking_tile_in_any_layer_blocks() {
        let xml = small_map(GROUND, SPAWN).replace(
            " </layer>",
            " </layer>\n <layer id=\"5\" name=\"top\" width=\"4\" height=\"3\" visible=\"0\"><data encoding=\"csv\">0,3,0,0,0,0,0,0,0,0,0,0</data></layer>",
        );
        let map = WorldMap::from_tmx_str(&xml, None).expect("loads");
        assert!(!map.is_walkable(TilePos::new(1, 0)));
        assert_eq!(map.kind(TilePos::new(1, 0)), Some(TileKind::Wall));
        assert!(map.is_walkable(TilePos::new(2, 0)));
    }

    fn assert_invalid(xml: &str, needle: &str) {
        match WorldMap::from_tmx_str(xml, None) {
            Err(MapError::Invalid(msg)) => {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
            }
            other => panic!("expected Invalid({needle:?}), got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_lands() {
        let overlap = r#"<object id="1" name="A" x="0" y="0" width="64" height="64"/><object id="2" name="B" x="32" y="32" width="64" height="64"/>"#;
        assert_invalid(&small_map(GROUND, &lands(overlap)), "overlap");
        let dup = r#"<object id="1" name="A" x="0" y="0" width="32" height="32"/><object id="2" name="A" x="64" y="0" width="32" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(dup)), "two lands");
        let unnamed = r#"<object id="1" x="0" y="0" width="32" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(unnamed)), "no name");
        let fractional = r#"<object id="1" name="A" x="10" y="0" width="32" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(fractional)), "whole number");
        let negative = r#"<object id="1" name="A" x="-32" y="0" width="32" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(negative)), "whole number");
        let outside = r#"<object id="1" name="A" x="64" y="0" width="96" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(outside)), "outside");
        let empty = r#"<object id="1" name="A" x="0" y="0" width="0" height="32"/>"#;
        assert_invalid(&small_map(GROUND, &lands(empty)), "");
        let point = r#"<object id="1" name="A" x="0" y="0"><point/></object>"#;
        assert_invalid(&small_map(GROUND, &lands(point)), "rectangle");
    }

    #[test]
    fn rejects_bad_spawns() {
        let on_water = r#"<objectgroup id="3" name="spawns"><object id="9" name="wet" x="100" y="10"><point/></object></objectgroup>"#;
        assert_invalid(&small_map(GROUND, on_water), "not walkable");
        let outside = r#"<objectgroup id="3" name="spawns"><object id="9" name="far" x="1000" y="10"><point/></object></objectgroup>"#;
        assert_invalid(&small_map(GROUND, outside), "outside");
        assert_invalid(&small_map(GROUND, ""), "no spawn");
    }

    #[test]
    fn rejects_malformed_input_without_panicking() {
        let good = small_map(GROUND, SPAWN);
        assert!(WorldMap::from_tmx_str(&good, None).is_ok());
        // Truncated at every length: never a panic, and an error for every proper prefix.
        for cut in (0..good.len()).step_by(7) {
            if good.is_char_boundary(cut) {
                assert!(WorldMap::from_tmx_str(&good[..cut], None).is_err(), "prefix {cut} loaded");
            }
        }
        // Too few / too many tiles for the layer size.
        assert_invalid(&small_map("1,1,1", SPAWN), "expected width*height");
        assert_invalid(&small_map(&format!("{GROUND},1"), SPAWN), "expected width*height");
        // Base64 with too little data, and a zlib bomb.
        let b64 = good
            .replace(&format!(r#"<data encoding="csv">{GROUND}</data>"#), r#"<data encoding="base64">AQAAAA==</data>"#);
        assert_invalid(&b64, "expected width*height");
        let bomb = {
            use base64::Engine as _;
            use std::io::Write as _;
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&vec![0u8; 8 << 20]).expect("compress");
            let data = base64::engine::general_purpose::STANDARD.encode(enc.finish().expect("compress"));
            good.replace(
                &format!(r#"<data encoding="csv">{GROUND}</data>"#),
                &format!(r#"<data encoding="base64" compression="zlib">{data}</data>"#),
            )
        };
        assert_invalid(&bomb, "expected width*height");
        // Huge sizes and counts.
        assert_invalid(
            &good.replace(r#"width="4" height="3" tilewidth"#, r#"width="100000" height="3" tilewidth"#),
            "larger than",
        );
        assert_invalid(&good.replace(r#"tilecount="3""#, r#"tilecount="4000000000""#), "tilecount");
        assert_invalid(&good.replace(r#"infinite="0""#, r#"infinite="1""#), "infinite");
        let no_columns = good.replace(
            r#"tilewidth="32" tileheight="32" tilecount="3" columns="3""#,
            r#"tilewidth="0" tileheight="0" tilecount="3""#,
        );
        assert_invalid(&no_columns, "columns");
        // Deep nesting.
        let deep = good
            .replace(" <layer", &format!("{} <layer", "<group>".repeat(200)))
            .replace(" </layer>", &format!(" </layer>{}", "</group>".repeat(200)));
        assert_invalid(&deep, "nested");
        // Garbage.
        for junk in
            ["", "<", "<map", "not xml at all", "<map width=\"x\"/>", "<?xml version=\"1.0\"?><map/>", "\u{0}\u{1}"]
        {
            assert!(WorldMap::from_tmx_str(junk, None).is_err(), "{junk:?} loaded");
        }
        // Files are not read for in-memory maps without a base directory.
        let external = good.replace(
            r#"<tileset firstgid="1" name="t""#,
            r#"<tileset firstgid="1" source="/etc/passwd"/><tileset firstgid="100" name="t""#,
        );
        assert!(WorldMap::from_tmx_str(&external, None).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// Random edits of a valid map never panic (a cheap stand-in for the fuzzer).
        #[test]
        fn mutated_maps_never_panic(
            edits in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY, 0u8..3), 1..8)
        ) {
            let mut bytes = small_map(GROUND, SPAWN).into_bytes();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {}
                }
            }
            let _ = WorldMap::from_tmx_str(&String::from_utf8_lossy(&bytes), None);
        }

        /// Numbers of a valid map replaced by extreme values never panic.
        #[test]
        fn extreme_numbers_never_panic(
            picks in proptest::collection::vec((0usize..1000, 0usize..10), 1..5)
        ) {
            const VALUES: [&str; 10] =
                ["0", "-1", "4294967295", "4294967296", "2147483648", "99999999", "1e30", "NaN", "", "3.5"];
            let xml = small_map(GROUND, SPAWN);
            // Byte ranges of the digit runs.
            let mut runs = Vec::new();
            let bytes = xml.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i].is_ascii_digit() {
                    let start = i;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    runs.push((start, i));
                } else {
                    i += 1;
                }
            }
            let mut chosen: Vec<(usize, usize, &str)> = picks
                .iter()
                .map(|&(r, v)| {
                    let (a, b) = runs[r % runs.len()];
                    (a, b, VALUES[v])
                })
                .collect();
            chosen.sort_by_key(|c| std::cmp::Reverse(c.0));
            chosen.dedup_by_key(|c| c.0);
            let mut out = xml.clone();
            for (a, b, v) in chosen {
                out.replace_range(a..b, v);
            }
            let _ = WorldMap::from_tmx_str(&out, None);
        }
    }

    #[test]
    fn open_map_is_walkable_everywhere() {
        let map = WorldMap::open(10, 5);
        assert!(map.is_walkable(TilePos::new(9, 4)));
        assert!(!map.is_walkable(TilePos::new(10, 4)));
        assert_eq!(map.kind(TilePos::new(0, 0)), Some(TileKind::Grass));
        assert_eq!(map.spawns, vec![TilePos::new(0, 0)]);
    }
}
