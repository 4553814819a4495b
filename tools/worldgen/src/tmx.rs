//! Writers for the Tiled files: the external tileset (`tileset.tsx`) and the map
//! (`default.tmx`, CSV-encoded tile layers, object layers `lands` and `spawns`).

use std::fmt::Write as _;

use crate::layout::World;
use crate::tiles::{COLUMNS, TILE_PX, TILES, rows};

/// Escapes text for an XML attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

pub fn tileset_tsx(image_name: &str) -> String {
    let mut s = String::new();
    let count = TILES.len();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<tileset version="1.10" tiledversion="1.10.2" name="landworld" tilewidth="{TILE_PX}" tileheight="{TILE_PX}" tilecount="{count}" columns="{COLUMNS}">"#
    );
    let _ = writeln!(
        s,
        r#" <image source="{}" width="{}" height="{}"/>"#,
        esc(image_name),
        COLUMNS * TILE_PX,
        rows() * TILE_PX
    );
    for (id, t) in TILES.iter().enumerate() {
        let _ = writeln!(s, r#" <tile id="{id}" type="{}">"#, t.name);
        let _ = writeln!(s, "  <properties>");
        let _ = writeln!(s, r#"   <property name="kind" value="{}"/>"#, t.kind);
        let _ = writeln!(s, r#"   <property name="walkable" type="bool" value="{}"/>"#, t.walkable);
        let _ = writeln!(s, "  </properties>");
        let _ = writeln!(s, " </tile>");
    }
    let _ = writeln!(s, "</tileset>");
    s
}

fn csv_layer(s: &mut String, id: u32, name: &str, width: i32, height: i32, gids: impl Fn(usize) -> u32) {
    let _ = writeln!(s, r#" <layer id="{id}" name="{name}" width="{width}" height="{height}">"#);
    let _ = writeln!(s, r#"  <data encoding="csv">"#);
    for y in 0..height {
        let row: Vec<String> = (0..width).map(|x| gids((y * width + x) as usize).to_string()).collect();
        s.push_str(&row.join(","));
        if y + 1 < height {
            s.push(',');
        }
        s.push('\n');
    }
    let _ = writeln!(s, "  </data>");
    let _ = writeln!(s, " </layer>");
}

pub fn map_tmx(world: &World, tileset_name: &str) -> String {
    let mut s = String::new();
    let px = TILE_PX as i32;
    let next_object = 1 + world.lands.len() + world.spawns.len();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<map version="1.10" tiledversion="1.10.2" orientation="orthogonal" renderorder="right-down" width="{}" height="{}" tilewidth="{px}" tileheight="{px}" infinite="0" nextlayerid="5" nextobjectid="{next_object}">"#,
        world.width, world.height
    );
    let _ = writeln!(s, " <properties>");
    let _ = writeln!(s, r#"  <property name="name" value="Landworld"/>"#);
    let _ = writeln!(s, r#"  <property name="generator" value="landworld-worldgen"/>"#);
    let _ = writeln!(s, " </properties>");
    let _ = writeln!(s, r#" <tileset firstgid="1" source="{}"/>"#, esc(tileset_name));
    // Tiled stores global ids: local id + firstgid (1); 0 means "no tile".
    csv_layer(&mut s, 1, "ground", world.width, world.height, |i| world.ground[i] + 1);
    csv_layer(&mut s, 2, "structures", world.width, world.height, |i| world.top[i].map_or(0, |t| t + 1));
    let mut object_id = 1;
    let _ = writeln!(s, r#" <objectgroup id="3" name="lands">"#);
    for land in &world.lands {
        let _ = writeln!(
            s,
            r#"  <object id="{object_id}" name="{}" x="{}" y="{}" width="{}" height="{}">"#,
            esc(&land.name),
            land.x * px,
            land.y * px,
            land.width * px,
            land.height * px
        );
        let _ = writeln!(s, "   <properties>");
        let _ = writeln!(s, r#"    <property name="description" value="{}"/>"#, esc(land.description));
        let _ = writeln!(s, "   </properties>");
        let _ = writeln!(s, "  </object>");
        object_id += 1;
    }
    let _ = writeln!(s, " </objectgroup>");
    let _ = writeln!(s, r#" <objectgroup id="4" name="spawns">"#);
    for spawn in &world.spawns {
        // Points at the centre of their tile.
        let _ = writeln!(
            s,
            r#"  <object id="{object_id}" name="{}" x="{}" y="{}">"#,
            esc(&spawn.name),
            spawn.x * px + px / 2,
            spawn.y * px + px / 2
        );
        let _ = writeln!(s, "   <point/>");
        let _ = writeln!(s, "  </object>");
        object_id += 1;
    }
    let _ = writeln!(s, " </objectgroup>");
    let _ = writeln!(s, "</map>");
    s
}
