//! Quick fuzzing of every parser of outside input (SPEC §10), in the normal `cargo test` run:
//! WebSocket frames (`parse_client_frame`), the WebSocket wire framing (`FrameReader`), Tiled maps
//! (`WorldMap::from_tmx_str`) and access tokens (`TokenKeys::verify`).
//!
//! Each parser gets a few thousand inputs: the seed corpus of `fuzz/corpus/<target>/` mutated the
//! way libFuzzer mutates (byte flips, inserts, deletes, duplicated and spliced ranges, dictionary
//! tokens), plus random text and, for frames, structurally valid JSON with random fields. The
//! properties: no panic, errors are the documented error values, and whatever parses keeps its
//! invariants. The coverage-guided fuzzers (`scripts/fuzz.sh`) check the same properties for as
//! long as you let them run; this test keeps them from rotting and runs in a few seconds.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use landworld_server::api::ws::frames::{FrameReader, Incoming};
use landworld_server::auth::{AuthError, Claims, TokenKeys};
use landworld_shared::protocol::ws::{CLIENT_FRAME_TYPES, ServerFrame, error_code, parse_client_frame};
use landworld_shared::world::WorldMap;
use proptest::prelude::*;
use serde_json::Value;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

/// The seed corpus of a fuzz target, sorted by file name.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "empty corpus {}", dir.display());
    seeds
}

static WS_SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| corpus("ws_frame"));
static WIRE_SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| corpus("ws_wire"));
static MAP_SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| corpus("map_tmx"));
static TOKEN_SEEDS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| corpus("jwt_token"));

/// The key the `jwt_token` corpus's `valid` token is signed with (as in `fuzz/fuzz_targets`).
static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| TokenKeys::from_secret(&[7u8; 32], Duration::from_secs(60)));

const WS_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "-0",
    "1e999",
    "-9223372036854775809",
    "18446744073709551616",
    "\"type\"",
    "\"join_room\"",
    "\"send_message\"",
    "\"update_location\"",
    "\"room_id\"",
    "\"content\"",
    "\"x\"",
    "\"y\"",
    "\"radius\"",
    "\"status\"",
    "\\u0000",
    "\\ud800",
    "\u{feff}",
    "\u{0}",
];

const MAP_DICT: &[&str] = &[
    "<layer",
    "</layer>",
    "<data encoding=\"base64\" compression=\"zlib\">",
    "<data encoding=\"csv\">",
    "<group>",
    "</group>",
    "<object ",
    "<point/>",
    "<ellipse/>",
    "<polygon points=\"0,0 1,1\"/>",
    "width=\"",
    "height=\"",
    "tilecount=\"",
    "columns=\"",
    "firstgid=\"",
    "4294967295",
    "2147483648",
    "-1",
    "0",
    "NaN",
    "1e30",
    "&amp;",
    "&#0;",
    "<![CDATA[",
    "]]>",
    "<!DOCTYPE m [<!ENTITY a \"aaaa\">]>",
    "&a;",
    "infinite=\"1\"",
    "<chunk x=\"0\" y=\"0\" width=\"16\" height=\"16\">",
    "name=\"lands\"",
    "name=\"spawns\"",
    "source=\"t.tsx\"",
    "<template",
    "<wangsets>",
    "<animation><frame tileid=\"0\" duration=\"1\"/></animation>",
];

const TOKEN_DICT: &[&str] = &[
    ".",
    "..",
    "=",
    "-",
    "_",
    "+",
    "/",
    "eyJ",
    "eyJhbGciOiJub25lIn0",
    "eyJhbGciOiJIUzM4NCJ9",
    "eyJhbGciOiJSUzI1NiJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
    "e30",
    "bnVsbA",
    "\u{0}",
    " ",
];

/// One mutation step, chosen by `op`, at positions derived from `a` and `b`.
fn mutate_once(data: &mut Vec<u8>, op: u8, a: usize, b: usize, byte: u8, seeds: &[Vec<u8>], dict: &[&str]) {
    let len = data.len();
    let at = if len == 0 { 0 } else { a % (len + 1) };
    match op % 9 {
        0 if len > 0 => data[at.min(len - 1)] ^= 1 << (byte % 8),
        1 if len > 0 => data[at.min(len - 1)] = byte,
        2 => data.insert(at, byte),
        3 if len > 0 => {
            let end = (at + 1 + b % 16).min(len);
            data.drain(at.min(len - 1)..end);
        }
        4 if len > 0 => {
            // Duplicate a range (repeats structure: nested elements, repeated fields).
            let start = at.min(len - 1);
            let end = (start + 1 + b % 64).min(len);
            let chunk = data[start..end].to_vec();
            let to = b % (len + 1);
            data.splice(to..to, chunk);
        }
        5 => {
            let token = dict[b % dict.len()].as_bytes();
            data.splice(at..at, token.iter().copied());
        }
        6 => {
            // Splice in a range of another seed.
            let other = &seeds[b % seeds.len()];
            if !other.is_empty() {
                let start = (b / 7) % other.len();
                let end = (start + 1 + usize::from(byte)).min(other.len());
                data.splice(at..at, other[start..end].iter().copied());
            }
        }
        7 => data.truncate(at),
        _ if len > 1 => {
            // Swap two bytes (digits, quotes, brackets).
            let j = b % len;
            data.swap(at.min(len - 1), j);
        }
        _ => data.push(byte),
    }
}

fn mutate(seeds: &[Vec<u8>], seed: usize, steps: &[(u8, usize, usize, u8)], dict: &[&str]) -> String {
    let mut data = seeds[seed % seeds.len()].clone();
    for &(op, a, b, byte) in steps {
        mutate_once(&mut data, op, a, b, byte, seeds, dict);
    }
    // Every parser here takes text; the transports hand over UTF-8 (or reject it earlier).
    String::from_utf8_lossy(&data).into_owned()
}

fn steps(max: usize) -> impl Strategy<Value = Vec<(u8, usize, usize, u8)>> {
    proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()), 1..max)
}

// --- WebSocket frames --------------------------------------------------------------------------

/// The parser's contract: a frame that parses survives a round trip; anything else yields an
/// `error` frame with a known code, a message and a bounded `ref`, which serializes to JSON.
fn check_frame(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).unwrap();
            prop_assert_eq!(parse_client_frame(&again).ok(), Some(frame));
        }
        Err(err) => {
            let ServerFrame::Error { code, message, reference } = &err else {
                return Err(TestCaseError::fail(format!("not an error frame: {err:?}")));
            };
            prop_assert!(code == error_code::INVALID_FRAME || code == error_code::UNKNOWN_TYPE, "code {}", code);
            prop_assert!(!message.is_empty());
            prop_assert!(reference.as_ref().is_none_or(|r| r.chars().count() <= 64), "ref {:?}", reference);
            let json: Value = serde_json::from_str(&err.to_json()).unwrap();
            prop_assert_eq!(&json["type"], "error");
        }
    }
    Ok(())
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        proptest::sample::select(vec!["proximity", "online", "away", "busy", "offline", ""]).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A frame object with a known (or random) `type` and fields drawn from the protocol's names.
fn frame_object() -> impl Strategy<Value = String> {
    const FIELDS: &[&str] =
        &["room_id", "since_seq", "content", "client_msg_id", "x", "y", "radius", "status", "is_typing", "seq", "type"];
    let kind = prop_oneof![
        4 => proptest::sample::select(CLIENT_FRAME_TYPES.to_vec()).prop_map(Value::from),
        1 => json_value(),
    ];
    let fields = proptest::collection::vec((proptest::sample::select(FIELDS.to_vec()), json_value()), 0..5);
    (kind, fields).prop_map(|(kind, fields)| {
        let mut obj = serde_json::Map::new();
        obj.insert("type".into(), kind);
        for (k, v) in fields {
            obj.insert(k.into(), v);
        }
        Value::Object(obj).to_string()
    })
}

#[test]
fn ws_frame_seeds_behave() {
    for seed in WS_SEEDS.iter() {
        check_frame(&String::from_utf8_lossy(seed)).unwrap();
    }
    // The valid seeds parse.
    let ok = WS_SEEDS.iter().filter(|s| parse_client_frame(&String::from_utf8_lossy(s)).is_ok()).count();
    assert!(ok >= CLIENT_FRAME_TYPES.len(), "{ok} seeds parse");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ws_frame_mutations(seed in any::<usize>(), steps in steps(12)) {
        check_frame(&mutate(&WS_SEEDS, seed, &steps, WS_DICT))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ws_frame_random_text(text in ".{0,200}") {
        check_frame(&text)?;
    }

    #[test]
    fn ws_frame_random_objects(text in frame_object()) {
        check_frame(&text)?;
    }
}

// --- WebSocket wire framing --------------------------------------------------------------------

/// Largest message for the wire checks (small, so that limits are reached by mutated inputs).
const WIRE_MAX: usize = 1024;

/// Everything the reader yields until it needs more input (true) or refuses the input (false),
/// checking the reader's invariants on the way.
fn drain_wire(r: &mut FrameReader, out: &mut Vec<Result<Incoming, u16>>) -> Result<bool, TestCaseError> {
    loop {
        match r.next_frame() {
            Ok(Some(f)) => {
                if let Incoming::Text(t) = &f {
                    prop_assert!(t.len() <= WIRE_MAX, "text over the limit: {}", t.len());
                }
                out.push(Ok(f));
            }
            Ok(None) => {
                prop_assert!(r.buffered() <= WIRE_MAX + 14, "{} bytes buffered while waiting", r.buffered());
                return Ok(true);
            }
            Err(v) => {
                prop_assert!([1002, 1007, 1009].contains(&v.close_code()), "{v:?}");
                out.push(Err(v.close_code()));
                return Ok(false);
            }
        }
    }
}

/// The reader's contract on any bytes: no panic, bounded buffering, and the same frames (and the
/// same refusal) whether the bytes arrive at once or `step` bytes at a time.
fn check_wire(wire: &[u8], step: usize) -> Result<Vec<Result<Incoming, u16>>, TestCaseError> {
    let mut whole = FrameReader::new(WIRE_MAX);
    whole.feed(wire);
    let mut expected = Vec::new();
    drain_wire(&mut whole, &mut expected)?;
    let mut pieces = FrameReader::new(WIRE_MAX);
    let mut got = Vec::new();
    for chunk in wire.chunks(step.max(1)) {
        pieces.feed(chunk);
        if !drain_wire(&mut pieces, &mut got)? {
            break;
        }
    }
    prop_assert_eq!(&got, &expected, "split every {} bytes", step);
    Ok(expected)
}

#[test]
fn ws_wire_seeds_behave() {
    let mut texts = 0;
    for seed in WIRE_SEEDS.iter() {
        for step in 1..=9 {
            let frames = check_wire(seed, step).unwrap();
            assert!(frames.iter().all(Result::is_ok), "a seed is valid framing: {frames:?}");
            texts += frames.iter().filter(|f| matches!(f, Ok(Incoming::Text(_)))).count();
        }
    }
    assert!(texts > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ws_wire_mutations(seed in any::<usize>(), steps in steps(12), step in 1usize..40) {
        let mut data = WIRE_SEEDS[seed % WIRE_SEEDS.len()].clone();
        for &(op, a, b, byte) in &steps {
            mutate_once(&mut data, op, a, b, byte, &WIRE_SEEDS, &["\u{7e}", "\u{7f}", "\u{0}"]);
        }
        check_wire(&data, step)?;
    }

    #[test]
    fn ws_wire_random_bytes(wire in proptest::collection::vec(any::<u8>(), 0..600), step in 1usize..40) {
        check_wire(&wire, step)?;
    }
}

// --- Map files ---------------------------------------------------------------------------------

/// A map that loads keeps its invariants; a map that does not yields a described error.
fn check_map(xml: &str) -> Result<(), TestCaseError> {
    match WorldMap::from_tmx_str(xml, None) {
        Ok(map) => {
            prop_assert!(!map.spawns.is_empty());
            for &s in &map.spawns {
                prop_assert!(map.is_walkable(s), "spawn {:?} not walkable", s);
            }
            for land in &map.lands {
                let r = land.rect;
                let inside = r.x >= 0
                    && r.y >= 0
                    && !r.is_empty()
                    && r.right() <= i64::from(map.width)
                    && r.bottom() <= i64::from(map.height);
                prop_assert!(inside, "land {:?} outside the {}x{} map", land, map.width, map.height);
            }
        }
        Err(err) => prop_assert!(!err.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn map_seeds_behave() {
    let mut loaded = 0;
    for seed in MAP_SEEDS.iter() {
        let xml = String::from_utf8_lossy(seed);
        check_map(&xml).unwrap();
        loaded += usize::from(WorldMap::from_tmx_str(&xml, None).is_ok());
    }
    assert!(loaded >= 3, "the small seed maps load ({loaded} did)");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn map_mutations(seed in any::<usize>(), steps in steps(8)) {
        check_map(&mutate(&MAP_SEEDS, seed, &steps, MAP_DICT))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn map_random_text(text in "(<[a-z]{1,8}( [a-z]{1,6}=\"[0-9a-z-]{0,6}\"){0,3}/?>|</[a-z]{1,8}>|[^<]{0,8}){0,30}") {
        check_map(&text)?;
    }
}

// --- Access tokens -----------------------------------------------------------------------------

fn valid_claims() -> Claims {
    let token = std::fs::read_to_string(corpus_dir("jwt_token").join("valid")).unwrap();
    KEYS.verify(token.trim()).expect("the corpus's valid token verifies (exp 2100)")
}

static VALID_CLAIMS: LazyLock<Claims> = LazyLock::new(valid_claims);

/// Verification either fails with `InvalidToken` or yields exactly the claims of a genuinely
/// signed token: mutations can never forge other claims.
fn check_token(text: &str) -> Result<(), TestCaseError> {
    match KEYS.verify(text) {
        Ok(claims) => prop_assert_eq!(&claims, &*VALID_CLAIMS, "forged claims from {:?}", text),
        Err(err) => prop_assert!(matches!(err, AuthError::InvalidToken), "{:?}", err),
    }
    Ok(())
}

#[test]
fn token_seeds_behave() {
    let accepted: Vec<String> = TOKEN_SEEDS
        .iter()
        .map(|s| String::from_utf8_lossy(s).trim().to_string())
        .filter(|t| KEYS.verify(t).is_ok())
        .collect();
    // Only the valid one: not the expired, the wrongly signed, `alg: none` or garbage.
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    for seed in TOKEN_SEEDS.iter() {
        check_token(&String::from_utf8_lossy(seed)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_mutations(seed in any::<usize>(), steps in steps(6)) {
        check_token(&mutate(&TOKEN_SEEDS, seed, &steps, TOKEN_DICT))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn token_random_text(text in "([A-Za-z0-9_-]{0,40}\\.?){0,4}|.{0,100}") {
        check_token(&text)?;
    }
}
