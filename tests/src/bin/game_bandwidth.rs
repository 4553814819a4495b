//! `landworld-game-bandwidth`: downstream bytes per game client with N visible avatars moving
//! every tick, for delta snapshots and for full-state replication, in the same run.
//!
//! Starts the real server in-process (SQLite, port 0, 20 Hz), places N WebSocket users within
//! 30 tiles of two observers, and has each mover step back and forth between two tiles every
//! 50 ms (one accepted move per tick). Observer A uses the default delta snapshots; observer B
//! asks for [`Replication::FullState`] (every visible avatar's user id, username and position,
//! every tick). Both are the headless game client of `landworld_tests::game`, which counts
//! every UDP datagram it receives (netcode keep-alives, renet acks, reliable and unreliable
//! messages). After a warm-up it measures for `--secs` seconds and prints bytes per second.
//!
//! ```sh
//! cargo run -p landworld-tests --bin landworld-game-bandwidth -- --secs 20
//! ```
//! Exits 1 when the delta observer exceeds 3,000 B/s or is not at least 5x below full state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use futures_util::StreamExt;
use landworld_shared::limits::VIEW_RADIUS;
use landworld_shared::protocol::game::{ClientMessage, Replication};
use landworld_shared::world::{TilePos, WorldMap, chebyshev};
use landworld_tests::game::GameBot;
use landworld_tests::{Backend, default_world};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Game networking bandwidth: delta snapshots vs full state, N avatars moving every tick")]
struct Args {
    /// Moving avatars in view.
    #[arg(long, default_value_t = 50)]
    movers: usize,
    /// Measured seconds (after a 3 s warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

/// Tiles each mover paces over, back and forth, one per tick: long enough that its position
/// differs from the one a few ticks earlier (the baseline a snapshot is relative to), so
/// deltas are not flattered by avatars that return to the same tile.
const PATH: i32 = 6;

/// The observers' tile and, for each mover, a straight walkable path within 30 tiles of it.
fn layout(map: &WorldMap, movers: usize) -> Option<(TilePos, Vec<Vec<TilePos>>)> {
    let reach = VIEW_RADIUS as i32 - 2;
    for &o in &map.spawns {
        let mut paths = Vec::new();
        'scan: for y in o.y - reach..=o.y + reach {
            let mut x = o.x - reach;
            while x + PATH - 1 <= o.x + reach {
                let path: Vec<TilePos> = (0..PATH).map(|d| TilePos::new(x + d, y)).collect();
                if path.iter().all(|&p| p != o && map.is_walkable(p) && chebyshev(o, p) <= reach as u32) {
                    paths.push(path);
                    if paths.len() == movers {
                        break 'scan;
                    }
                    x += PATH;
                } else {
                    x += 1;
                }
            }
        }
        if paths.len() == movers {
            return Some((o, paths));
        }
    }
    None
}

/// Step `s` of a back-and-forth walk over `len` tiles.
fn ping_pong(s: u64, len: usize) -> usize {
    let period = 2 * (len as u64 - 1);
    let k = s % period;
    (if k < len as u64 { k } else { period - k }) as usize
}

struct Reading {
    bytes: u64,
    packets: u64,
}

fn read(bot: &GameBot) -> Reading {
    let s = bot.state();
    Reading { bytes: s.bytes_in, packets: s.packets_in }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let map = WorldMap::load(&default_world())?;
    let Some((o, paths)) = layout(&map, args.movers) else {
        bail!("the default world has no spawn point with {} mover spots within view", args.movers);
    };
    let app = landworld_tests::spawn_app(Backend::Sqlite).await?.ok_or_else(|| anyhow::anyhow!("no SQLite"))?;
    eprintln!("server http={} udp={}; observers at {o:?}; {} movers", app.addr, app.udp_addr, paths.len());

    let (delta_user, full_user) = (app.user("obs_delta").await?, app.user("obs_full").await?);
    app.place(&delta_user, o.x, o.y).await?;
    app.place(&full_user, o.x, o.y).await?;
    let mut senders = Vec::new();
    let moves = Arc::new(AtomicU64::new(0));
    for (i, path) in paths.iter().enumerate() {
        let user = app.user(&format!("mover{i}")).await?;
        let start = path[ping_pong(i as u64, path.len())];
        app.place(&user, start.x, start.y).await?;
        let (ws, _) = app.ws(&user).await?;
        let (sink, stream) = ws.stream.split();
        tokio::spawn(drain_split(stream, moves.clone()));
        // Movers start at different points of their walk.
        senders.push((sink, path.clone(), i as u64));
    }
    let mut delta = GameBot::join(&app, &delta_user).await?;
    delta.welcome().await?;
    let mut full = GameBot::join(&app, &full_user).await?;
    full.welcome().await?;
    full.send(&ClientMessage::SetReplication { mode: Replication::FullState });
    let n = paths.len();
    // The observers see each other too: n movers + 1.
    delta
        .wait_for("every mover in view", Duration::from_secs(20), |s| (s.view.avatars.len() > n).then_some(()))
        .await?;
    full.wait_for("every mover in full state", Duration::from_secs(20), |s| (s.full_state.len() > n).then_some(()))
        .await?;

    // Every mover steps every 50 ms (the tick), pacing its path.
    let stepping = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut step = 0u64;
        loop {
            every.tick().await;
            step += 1;
            for (sink, path, phase) in senders.iter_mut() {
                let to = path[ping_pong(step + *phase, path.len())];
                let frame = json!({"type": "update_location", "x": to.x, "y": to.y}).to_string();
                if futures_util::SinkExt::send(sink, tokio_tungstenite::tungstenite::Message::Text(frame.into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (d0, f0, m0, t0) = (read(&delta), read(&full), moves.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (d1, f1, m1, secs) = (read(&delta), read(&full), moves.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    stepping.abort();

    let rate = |a: &Reading, b: &Reading| ((b.bytes - a.bytes) as f64 / secs, (b.packets - a.packets) as f64 / secs);
    let (d_bps, d_pps) = rate(&d0, &d1);
    let (f_bps, f_pps) = rate(&f0, &f1);
    let move_hz = (m1 - m0) as f64 / secs / n as f64;
    let (errors, snapshots) = {
        let s = delta.state();
        (s.view.snapshot_errors, s.view.snapshots)
    };
    println!("game bandwidth: {n} visible avatars, measured {secs:.1} s, {move_hz:.1} accepted moves/s per avatar");
    println!("| replication | bytes/s per client (UDP payload) | datagrams/s | with IPv4+UDP headers |");
    println!("|---|---|---|---|");
    println!("| delta snapshots | {d_bps:.0} | {d_pps:.1} | {:.0} |", d_bps + 28.0 * d_pps);
    println!("| full state every tick | {f_bps:.0} | {f_pps:.1} | {:.0} |", f_bps + 28.0 * f_pps);
    let ratio = f_bps / d_bps.max(1.0);
    println!("full state / delta = {ratio:.1}x; snapshots applied {snapshots}, undecodable {errors}");
    drop((delta, full));
    if d_bps > 3000.0 || ratio < 5.0 || errors > 0 {
        bail!("target missed: delta {d_bps:.0} B/s (target <= 3000), ratio {ratio:.1}x (target >= 5), {errors} errors");
    }
    Ok(())
}

/// Reads a mover's frames (so its queue never fills) and counts accepted moves.
async fn drain_split(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    >,
    moves: Arc<AtomicU64>,
) {
    while let Some(Ok(msg)) = stream.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
            && t.as_str().starts_with(r#"{"type":"location_updated""#)
        {
            moves.fetch_add(1, Ordering::Relaxed);
        }
    }
}
