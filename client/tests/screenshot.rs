//! End-to-end tests of the game client binary under Xvfb (Mesa's software Vulkan renders it):
//!
//! - `screenshot_shows_the_world`: offline (no `--server`), the PNG shows the default world's
//!   art (grass and water colours, many distinct colours).
//! - `connected_client_shows_avatars_and_chat`: against the real server (in-process, port 0),
//!   a player signs in with the client while a web user stands four tiles away on the same land
//!   and has written in the land room, then set its status to away. The screenshot must show the
//!   map, the own avatar in the
//!   middle of the map area (blue, gold outline), the web user's avatar four tiles east (pink),
//!   the chat panel (its background on the right) with the history lines drawn (sender colour),
//!   the status dot green and the web user's presence dots amber. The web user sees the player come online.
//! - `wrong_password_exits_with_an_error`: a refused sign-in ends screenshot mode with exit 3.
//!
//! Without `xvfb-run` on the PATH the tests explain why and pass, unless
//! `LANDWORLD_REQUIRE_DISPLAY=1` is set, in which case they fail. With
//! `LANDWORLD_SCREENSHOT_COPY=path.png` the connected screenshot is also copied there (that is
//! how `docs/client.png` is made).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use landworld_shared::world::{TilePos, WorldMap};
use landworld_tests::{Backend, TestApp, TestUser, default_world};
use serde_json::json;

/// The colours the world generator paints grass and water with (`tools/worldgen/src/art.rs`).
const GRASS: [u8; 3] = [92, 160, 60];
const WATER: [u8; 3] = [52, 120, 196];
/// The client's colours (`client/src/game/avatars.rs`, `client/src/ui/`).
const OWN_OUTLINE: [u8; 3] = [255, 214, 0];
const OWN_BODY: [u8; 3] = [40, 110, 255];
const OTHER_BODY: [u8; 3] = [232, 64, 160];
const PANEL_BG: [u8; 3] = [24, 28, 40];
const SENDER: [u8; 3] = [130, 200, 255];
const ONLINE: [u8; 3] = [70, 210, 100];
const AWAY: [u8; 3] = [245, 175, 40];
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const PANEL_WIDTH: u32 = 380;

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether the tests can run the client; prints why not (or panics when a display is required).
fn display_available() -> bool {
    if on_path("xvfb-run") {
        return true;
    }
    let msg = "xvfb-run is not installed (apt-get install xvfb xauth mesa-vulkan-drivers libvulkan1)";
    if std::env::var("LANDWORLD_REQUIRE_DISPLAY").is_ok_and(|v| v == "1") {
        panic!("{msg}, and LANDWORLD_REQUIRE_DISPLAY=1");
    }
    eprintln!("skipping the client test: {msg}");
    false
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn near(a: &[u8], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 3)
}

/// One client at a time: `xvfb-run -a` picks a free display number racily, and two starting
/// together may pick the same one.
static XVFB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the client under Xvfb with `args`; returns its exit code.
async fn run_client(args: &[&str]) -> Result<i32> {
    let _one_at_a_time = XVFB.lock().await;
    let mut child = tokio::process::Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x720x24"])
        .arg(env!("CARGO_BIN_EXE_landworld-client"))
        .arg("--world")
        .arg(workspace_root().join("assets/worlds/default.tmx"))
        .args(args)
        .current_dir(workspace_root())
        .env("RUST_LOG", "warn,landworld_client=info")
        .env_remove("LANDWORLD_SERVER")
        .env_remove("LANDWORLD_USERNAME")
        .env_remove("LANDWORLD_PASSWORD")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(status) => Ok(status?.code().unwrap_or(-1)),
        Err(_) => {
            let _ = child.kill().await;
            bail!("the client did not finish within 300 s")
        }
    }
}

/// A decoded screenshot: RGB pixels, row by row.
struct Shot {
    pixels: Vec<[u8; 3]>,
}

impl Shot {
    fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path).expect("screenshot written");
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
        let info = reader.next_frame(&mut buf).expect("PNG data");
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected colour type {other:?}"),
        };
        let pixels = buf[..info.buffer_size()].chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
        Self { pixels }
    }

    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.pixels[(y * WIDTH + x) as usize]
    }

    /// Pixels near `color` inside `x0..x1, y0..y1`.
    fn count(&self, color: [u8; 3], (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> usize {
        (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| near(&self.at(x, y), color)).count()
    }

    fn count_all(&self, color: [u8; 3]) -> usize {
        self.count(color, (0, WIDTH), (0, HEIGHT))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_shows_the_world() -> Result<()> {
    if !display_available() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let shot = dir.path().join("shot.png");
    let code = run_client(&["--screenshot", shot.to_str().unwrap(), "--frames", "5"]).await?;
    assert_eq!(code, 0, "client exit code");
    let shot = Shot::read(&shot);
    let distinct: HashSet<[u8; 3]> = shot.pixels.iter().copied().collect();
    let grass = shot.count_all(GRASS);
    let water = shot.count_all(WATER);
    eprintln!("{} distinct colours, {grass} grass pixels, {water} water pixels", distinct.len());
    assert!(distinct.len() >= 40, "only {} distinct colours", distinct.len());
    assert!(grass >= 5_000, "{grass} grass-coloured pixels");
    assert!(water >= 500, "{water} water-coloured pixels");
    // Offline there is no avatar.
    assert_eq!(shot.count_all(OWN_BODY), 0);
    Ok(())
}

/// A land with five walkable tiles in a row inside it: (land id, first tile).
async fn land_row(app: &TestApp, user: &TestUser, map: &WorldMap) -> Result<(String, TilePos)> {
    let (_, lands) = app.get("/api/v1/lands", Some(&user.token)).await?;
    for land in lands["lands"].as_array().ok_or_else(|| anyhow!("no lands in {lands}"))? {
        let num = |k: &str| land[k].as_i64().map(|v| v as i32).ok_or_else(|| anyhow!("land without {k}"));
        let (lx, ly, w, h) = (num("x")?, num("y")?, num("width")?, num("height")?);
        // Away from the land's edges, so the avatar four tiles east is on the land too.
        for y in ly + 1..ly + h - 1 {
            for x in lx + 1..lx + w - 5 {
                if (0..5).all(|d| map.is_walkable(TilePos::new(x + d, y))) {
                    return Ok((land["id"].as_str().unwrap_or_default().to_string(), TilePos::new(x, y)));
                }
            }
        }
    }
    bail!("no land with five walkable tiles in a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_client_shows_avatars_and_chat() -> Result<()> {
    if !display_available() {
        return Ok(());
    }
    let app = landworld_tests::spawn_app(Backend::Sqlite).await?.expect("SQLite is always available");
    let map = WorldMap::load(&default_world())?;
    let player = app.user("player").await?;
    let friend = app.user("friend").await?;
    let (land_id, p) = land_row(&app, &friend, &map).await?;
    app.place(&player, p.x, p.y).await?;
    app.place(&friend, p.x + 4, p.y).await?;

    // The web user stands on the land (so is in its room) and writes there before the player
    // comes: the client shows it from the room's history.
    let (status, session) =
        app.post(&format!("/api/v1/chat/land/{land_id}/session"), &json!({}), Some(&friend.token)).await?;
    assert_eq!(status, 200, "{session}");
    let room_id = session["id"].as_str().unwrap().to_string();
    let (mut ws, _) = app.ws(&friend).await?;
    let fid = friend.id.to_string();
    ws.expect_where("user_joined", |f| f["user_id"] == fid.as_str() && f["room_id"] == room_id.as_str()).await?;
    ws.send(
        json!({"type": "send_message", "room_id": room_id, "content": "hello from the web", "client_msg_id": "w1"}),
    )
    .await?;
    ws.expect_where("message_ack", |f| f["client_msg_id"] == "w1").await?;
    ws.send(
        json!({"type": "send_message", "room_id": room_id, "content": "come see the plaza", "client_msg_id": "w2"}),
    )
    .await?;
    ws.expect_where("message_ack", |f| f["client_msg_id"] == "w2").await?;
    // Away: the client reads everyone's status when it connects (the dots turn amber).
    ws.send(json!({"type": "set_status", "status": "away"})).await?;
    ws.expect_where("presence_update", |f| f["user_id"] == fid.as_str() && f["status"] == "away").await?;

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("online.png");
    let server = app.url("");
    let args = [
        "--server",
        server.as_str(),
        "--username",
        player.username.as_str(),
        "--password",
        player.password.as_str(),
        "--screenshot",
        path.to_str().unwrap(),
        "--frames",
        "5",
    ];
    let code = run_client(&args).await?;
    assert_eq!(code, 0, "client exit code");
    // The web user saw the game player come online (and leave).
    let pid = player.id.to_string();
    ws.expect_where("user_joined", |f| f["user_id"] == pid.as_str() && f["room_id"] == room_id.as_str()).await?;
    if let Ok(copy) = std::env::var("LANDWORLD_SCREENSHOT_COPY") {
        std::fs::copy(&path, &copy)?;
    }

    let shot = Shot::read(&path);
    let map_area = (0, WIDTH - PANEL_WIDTH);
    let grass = shot.count(GRASS, map_area, (0, HEIGHT));
    let own_outline = shot.count(OWN_OUTLINE, map_area, (0, HEIGHT));
    let own_body = shot.count(OWN_BODY, map_area, (0, HEIGHT));
    let other_body = shot.count(OTHER_BODY, map_area, (0, HEIGHT));
    let panel = shot.count(PANEL_BG, (WIDTH - PANEL_WIDTH, WIDTH), (0, HEIGHT));
    let panel_elsewhere = shot.count(PANEL_BG, map_area, (0, HEIGHT));
    let sender = shot.count(SENDER, (WIDTH - PANEL_WIDTH, WIDTH), (0, HEIGHT));
    let status_dot = shot.count(ONLINE, (0, 60), (0, 45));
    let away = shot.count(AWAY, map_area, (0, HEIGHT));
    eprintln!(
        "grass {grass}, own outline {own_outline}, own body {own_body}, other body {other_body}, panel {panel} \
         (elsewhere {panel_elsewhere}), sender text {sender}, status dot {status_dot}, away dots {away}"
    );
    assert!(grass >= 5_000, "the map is drawn: {grass} grass pixels");
    assert!(own_outline >= 150, "the own avatar's highlight: {own_outline} pixels");
    assert!(own_body >= 200, "the own avatar: {own_body} pixels");
    assert!(other_body >= 200, "the web user's avatar: {other_body} pixels");
    // The camera follows the own avatar: it stands in the middle of the map area, the web user
    // four tiles (128 px) east of it.
    let (cx, cy) = ((WIDTH - PANEL_WIDTH) / 2, HEIGHT / 2);
    assert!(near(&shot.at(cx, cy), OWN_BODY), "centre pixel {:?}", shot.at(cx, cy));
    assert!(near(&shot.at(cx + 128, cy), OTHER_BODY), "pixel four tiles east {:?}", shot.at(cx + 128, cy));
    // The chat panel: its background fills most of the right-hand strip and nothing else.
    let strip = (PANEL_WIDTH * HEIGHT) as usize;
    assert!(panel * 2 > strip, "the chat panel covers {panel} of {strip} pixels");
    assert!(panel_elsewhere < 500, "panel colour outside the panel: {panel_elsewhere}");
    assert!(sender >= 10, "the history line's sender is drawn: {sender} pixels");
    assert!(status_dot >= 30, "the status dot is green (connected): {status_dot} pixels");
    // The web user's presence dot (on the avatar and in the nearby list) is amber.
    assert!(away >= 60, "away dots: {away} pixels");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_exits_with_an_error() -> Result<()> {
    if !display_available() {
        return Ok(());
    }
    let app = landworld_tests::spawn_app(Backend::Sqlite).await?.expect("SQLite is always available");
    let user = app.user("forgetful").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("never.png");
    let server = app.url("");
    let args = [
        "--server",
        server.as_str(),
        "--username",
        user.username.as_str(),
        "--password",
        "not the password",
        "--screenshot",
        path.to_str().unwrap(),
    ];
    assert_eq!(run_client(&args).await?, 3, "a refused sign-in ends screenshot mode with exit code 3");
    assert!(!path.exists());
    Ok(())
}
