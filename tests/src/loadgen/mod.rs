//! The load tool behind `landworld-loadgen` (and its test): N WebSocket connections running a
//! scenario against a live server, checking every delivery against what was sent.
//!
//! A run: read credentials (a `load-users` tokens file, or register users over REST), raise the
//! fd limit, open the connections with bounded concurrency (each gets its own [`bot::Bot`] task
//! as soon as `connected` arrives, so nothing queues up unread on the server), join the bots
//! round-robin to `rooms` land rooms, then the measured window: messages at `msg_rate` per
//! second in total, sent by the joined bots in turn, and moves at `move_rate` per bot; then a
//! drain period until everything expected arrived (or `drain` runs out), then the report.
//!
//! Checking: every message carries `client_msg_id = lg-<run>-<bot>-<gid>` (`run` random per run, `gid`
//! unique in the run) and
//! its send time (nanoseconds since the run's `Instant`) in the content, so each receiving bot
//! computes send→deliver latency on its own. The expected recipients of message `gid` are the
//! bots that had joined its room (all joins finish before the window opens; bots never leave),
//! the sender included. A delivery is matched by `(sender_id, client_msg_id)`; lost = expected
//! but not received by the end of the drain; duplicated = the same message twice on one
//! connection; out-of-order = a `seq` not above the last one seen in that room on that
//! connection. Messages the server refuses with an `error` whose `ref` is their `client_msg_id`
//! count as rejected, not lost.

pub mod bot;
pub mod prom;
pub mod report;
pub mod sys;
pub mod wire;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use landworld_shared::protocol::ws::ServerFrame;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use bot::{Bot, BotCmd, BotResult, Shared, Ws};
pub use report::Report;
use wire::Event;

/// The histogram the server reports tick durations in.
pub const TICK_METRIC: &str = "landworld_tick_duration_seconds";

/// A user the tool connects as: a line of a `load-users` tokens file.
#[derive(Clone, Debug, Deserialize)]
pub struct Cred {
    pub user_id: Uuid,
    pub username: String,
    pub token: String,
}

/// Where the users come from.
#[derive(Clone, Debug)]
pub enum Users {
    /// JSON lines `{user_id, username, token}` (from `landworld-server load-users`).
    TokensFile(PathBuf),
    /// Register and log in this many users over REST (argon2: only for small runs).
    Register { prefix: String, count: usize },
    /// Given directly (tests).
    Given(Vec<Cred>),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `http://host:port` of the server.
    pub base: String,
    pub users: Users,
    /// Connections to open (users are reused round-robin when there are fewer).
    pub connections: usize,
    /// Land rooms to spread the bots over (0: no rooms).
    pub rooms: usize,
    /// Messages per second in total.
    pub msg_rate: f64,
    /// Message content size in bytes.
    pub msg_size: usize,
    /// Moves per second per bot.
    pub move_rate: f64,
    /// Proximity radius to set on every connection (None: the server's default).
    pub radius: Option<u32>,
    /// Only hold the connections (the memory test).
    pub idle: bool,
    /// Length of the measured window.
    pub duration: Duration,
    /// Longest wait after the window for outstanding deliveries and acks.
    pub drain: Duration,
    /// Wait between "all connected" and the idle RSS sample.
    pub settle: Duration,
    /// Connection attempts in flight at once.
    pub concurrency: usize,
    /// Per-connection timeout for the upgrade and the `connected` frame.
    pub connect_timeout: Duration,
    /// Server process to sample CPU time and RSS of.
    pub server_pid: Option<u32>,
    /// `/metrics` URL to read the tick histogram from.
    pub metrics_url: Option<String>,
}

impl LoadConfig {
    pub fn new(base: impl Into<String>, users: Users, connections: usize) -> Self {
        Self {
            base: base.into(),
            users,
            connections,
            rooms: 0,
            msg_rate: 0.0,
            msg_size: 64,
            move_rate: 0.0,
            radius: None,
            idle: false,
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(5),
            settle: Duration::from_secs(2),
            concurrency: 200,
            connect_timeout: Duration::from_secs(60),
            server_pid: None,
            metrics_url: None,
        }
    }

    fn ws_base(&self) -> String {
        let host = self.base.trim_end_matches('/');
        match host.strip_prefix("https://") {
            Some(h) => format!("wss://{h}"),
            None => format!("ws://{}", host.strip_prefix("http://").unwrap_or(host)),
        }
    }

    /// A one-line description of the scenario, for reports.
    pub fn scenario(&self) -> String {
        if self.idle {
            return format!("idle: {} connections", self.connections);
        }
        format!(
            "{} connections, {} room(s), {} msg/s total, {} moves/s per bot, {:?}",
            self.connections, self.rooms, self.msg_rate, self.move_rate, self.duration
        )
    }
}

/// Reads a tokens file (JSON lines).
pub fn read_tokens(path: &std::path::Path) -> Result<Vec<Cred>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a token line", path.display(), i + 1))
        })
        .collect()
}

async fn register_users(http: &reqwest::Client, base: &str, prefix: &str, count: usize) -> Result<Vec<Cred>> {
    let run = &Uuid::new_v4().simple().to_string()[..6];
    let password = "load-test-password";
    let jobs = (0..count).map(|i| {
        let username = format!("{prefix}{run}_{i}");
        async move {
            let res = http
                .post(format!("{base}/api/v1/auth/register"))
                .json(&json!({"username": username, "password": password}))
                .send()
                .await?;
            if res.status().as_u16() != 201 {
                bail!("register {username}: HTTP {}", res.status());
            }
            let res = http
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({"username": username, "password": password}))
                .send()
                .await?;
            if !res.status().is_success() {
                bail!("login {username}: HTTP {}", res.status());
            }
            let body: serde_json::Value = res.json().await?;
            let token = body["access_token"].as_str().context("login: no access_token")?.to_string();
            let user_id = serde_json::from_value(body["user"]["id"].clone()).context("login: no user id")?;
            Ok(Cred { user_id, username, token })
        }
    });
    futures_util::stream::iter(jobs).buffered(4).collect::<Vec<_>>().await.into_iter().collect()
}

async fn land_ids(http: &reqwest::Client, base: &str, token: &str) -> Result<Vec<Uuid>> {
    let res = http.get(format!("{base}/api/v1/lands")).bearer_auth(token).send().await.context("GET /api/v1/lands")?;
    if !res.status().is_success() {
        bail!("GET /api/v1/lands: HTTP {}", res.status());
    }
    let body: serde_json::Value = res.json().await?;
    let lands = body["lands"].as_array().context("GET /api/v1/lands: no `lands` list")?;
    Ok(lands.iter().filter_map(|l| l["id"].as_str().and_then(|s| s.parse().ok())).collect())
}

/// No frame for this long before the window: the server has settled.
const QUIET: Duration = Duration::from_millis(300);
/// Longest wait for the server to settle before the window opens.
const MAX_QUIET_WAIT: Duration = Duration::from_secs(60);

/// Opens one connection and waits for `connected`; returns the socket and the spawn tile.
async fn open(url: String, timeout: Duration) -> Result<(Ws, Uuid, (i32, i32)), String> {
    let attempt = async {
        let mut ws = Ws::connect(&url).await.map_err(|e| format!("connect: {}", short_error(&e.to_string())))?;
        loop {
            match ws.next().await {
                Some(Ok(Event::Text(t))) => {
                    if let Ok(ServerFrame::Connected { user_id, position, .. }) = serde_json::from_slice(&t) {
                        return Ok((ws, user_id, (position.x, position.y)));
                    }
                }
                Some(Ok(Event::Close(code))) => {
                    return Err(format!("closed {}", code.map_or("without code".into(), |c| c.to_string())));
                }
                Some(Err(e)) => return Err(format!("read: {}", short_error(&e.to_string()))),
                None => return Err("eof before connected".into()),
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

/// Error text without details that vary per connection (ports, addresses).
fn short_error(e: &str) -> String {
    e.split(" (os error").next().unwrap_or(e).chars().take(80).collect()
}

struct Connected {
    idx: usize,
    cmds: mpsc::UnboundedSender<BotCmd>,
    task: tokio::task::JoinHandle<BotResult>,
}

/// Runs a load scenario and returns its report. Does not print.
pub async fn run(cfg: &LoadConfig) -> Result<Report> {
    let http = reqwest::Client::new();
    let base = cfg.base.trim_end_matches('/').to_string();
    let creds = match &cfg.users {
        Users::TokensFile(path) => read_tokens(path)?,
        Users::Register { prefix, count } => register_users(&http, &base, prefix, *count).await?,
        Users::Given(c) => c.clone(),
    };
    if creds.is_empty() {
        bail!("no users to connect as");
    }
    if cfg.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let lands = if cfg.rooms > 0 {
        let all = land_ids(&http, &base, &creds[0].token).await?;
        if all.len() < cfg.rooms {
            bail!("asked for {} rooms but the server has {} lands", cfg.rooms, all.len());
        }
        all[..cfg.rooms].to_vec()
    } else {
        Vec::new()
    };
    let clk_tck = sys::clock_ticks_per_sec();
    let sample = |pid: Option<u32>| pid.map(sys::sample).transpose();
    let rss_before_connect = sample(cfg.server_pid)?;

    // Connect.
    let bot_users: Vec<Uuid> = (0..cfg.connections).map(|i| creds[i % creds.len()].user_id).collect();
    let shared = Arc::new(Shared::new(bot_users, cfg.msg_size.max(40)));
    let ws_base = cfg.ws_base();
    let connect_started = Instant::now();
    let attempts = (0..cfg.connections).map(|idx| {
        let url = format!("{ws_base}/api/v1/ws/connect?token={}", creds[idx % creds.len()].token);
        let shared = shared.clone();
        let timeout = cfg.connect_timeout;
        async move {
            let (ws, _user, spawn) = open(url, timeout).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let task = tokio::spawn(Bot { idx, ws, spawn, cmds: rx, shared }.run());
            Ok::<_, String>(Connected { idx, cmds: tx, task })
        }
    });
    let results: Vec<Result<Connected, String>> =
        futures_util::stream::iter(attempts).buffer_unordered(cfg.concurrency.max(1)).collect().await;
    let connect_time = connect_started.elapsed();
    let mut bots: Vec<Connected> = Vec::new();
    let mut connect_failures: BTreeMap<String, u64> = BTreeMap::new();
    for r in results {
        match r {
            Ok(c) => bots.push(c),
            Err(reason) => *connect_failures.entry(reason).or_default() += 1,
        }
    }
    bots.sort_by_key(|b| b.idx);

    if let Some(radius) = cfg.radius {
        // Before the window, so that `nearby_users` sizes are settled when measuring.
        for b in &bots {
            let _ = b.cmds.send(BotCmd::SetRadius { radius });
        }
    }

    // Join rooms, round-robin over the lands.
    let mut room_ids: Vec<Option<Uuid>> = vec![None; lands.len()];
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); lands.len()];
    let mut join_failures: BTreeMap<String, u64> = BTreeMap::new();
    if !lands.is_empty() {
        let mut waits = Vec::new();
        for (n, b) in bots.iter().enumerate() {
            let k = n % lands.len();
            let (tx, rx) = oneshot::channel();
            if b.cmds.send(BotCmd::Join { land_id: lands[k], reply: tx }).is_ok() {
                waits.push((b.idx, k, rx));
            }
        }
        for (idx, k, rx) in waits {
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(Ok((room_id, _last_seq)))) => {
                    room_ids[k] = Some(room_id);
                    members[k].push(idx);
                }
                Ok(Ok(Err(code))) => *join_failures.entry(code).or_default() += 1,
                Ok(Err(_)) => *join_failures.entry("bot ended".into()).or_default() += 1,
                Err(_) => *join_failures.entry("timeout".into()).or_default() += 1,
            }
        }
    }

    // The server is still busy after the last join: every arrival in a crowded land is a
    // `user_joined` to everyone already there (a million frames for 1,000 bots in one room).
    // Measuring starts once that stopped — no frame for a while and, with `--server-pid`, the
    // server's CPU below a tenth of a core — so the window sees the steady state.
    let quiet_started = Instant::now();
    loop {
        let frames = shared.frames_before_window.load(Ordering::Relaxed);
        let cpu = sample(cfg.server_pid)?;
        tokio::time::sleep(QUIET).await;
        let server_busy = match (cpu, sample(cfg.server_pid)?) {
            (Some(a), Some(b)) => b.cpu_seconds_since(&a, clk_tck) / QUIET.as_secs_f64() > 0.1,
            _ => false,
        };
        let quiet = shared.frames_before_window.load(Ordering::Relaxed) == frames && !server_busy;
        if quiet || quiet_started.elapsed() > MAX_QUIET_WAIT {
            break;
        }
    }
    let settled_in = quiet_started.elapsed();
    shared.settling.store(false, Ordering::Relaxed);

    // Idle: the memory figure is taken once everything is connected and settled.
    let mut rss_connected = None;
    if cfg.idle {
        tokio::time::sleep(cfg.settle).await;
        rss_connected = sample(cfg.server_pid)?;
    }

    // The measured window.
    let tick_before = match &cfg.metrics_url {
        Some(url) => Some(prom::scrape(&http, url, TICK_METRIC).await?),
        None => None,
    };
    let window_start_sample = sample(cfg.server_pid)?;
    let window_start = Instant::now();
    let mut sent_rooms: Vec<u32> = Vec::new();
    if !cfg.idle {
        if cfg.move_rate > 0.0 {
            let period = Duration::from_secs_f64(1.0 / cfg.move_rate);
            let n = bots.len().max(1) as f64;
            for (i, b) in bots.iter().enumerate() {
                let phase = period.mul_f64(i as f64 / n);
                let _ = b.cmds.send(BotCmd::Moves { period, phase });
            }
            shared.moving.store(true, Ordering::Relaxed);
        }
        let senders: Vec<(usize, u32)> =
            members.iter().enumerate().flat_map(|(k, m)| m.iter().map(move |&idx| (idx, k as u32))).collect();
        let by_idx: BTreeMap<usize, &Connected> = bots.iter().map(|b| (b.idx, b)).collect();
        if cfg.msg_rate > 0.0 && !senders.is_empty() {
            // Interleave the rooms: sender n is the n-th bot in (room-major) order, strided.
            let mut order: Vec<(usize, u32)> = Vec::with_capacity(senders.len());
            let per_room = members.iter().map(Vec::len).max().unwrap_or(0);
            for j in 0..per_room {
                for m in members.iter().enumerate() {
                    if let Some(&idx) = m.1.get(j) {
                        order.push((idx, m.0 as u32));
                    }
                }
            }
            let mut gid: u64 = 0;
            loop {
                let elapsed = window_start.elapsed();
                if elapsed >= cfg.duration {
                    break;
                }
                let due = (elapsed.as_secs_f64() * cfg.msg_rate) as u64;
                while gid < due {
                    let (idx, room) = order[(gid % order.len() as u64) as usize];
                    if let Some(b) = by_idx.get(&idx) {
                        let _ = b.cmds.send(BotCmd::Send { gid });
                    }
                    sent_rooms.push(room);
                    gid += 1;
                }
                let next = Duration::from_secs_f64((gid + 1) as f64 / cfg.msg_rate);
                let wait = next.saturating_sub(window_start.elapsed()).min(Duration::from_millis(50));
                tokio::time::sleep(wait.max(Duration::from_micros(500))).await;
            }
        } else {
            tokio::time::sleep(cfg.duration).await;
        }
    } else {
        tokio::time::sleep(cfg.duration).await;
    }
    shared.moving.store(false, Ordering::Relaxed);
    let window = window_start.elapsed();

    // Drain: until every expected delivery and every ack (or rejection) is in, or time is up.
    let expected_total: u64 = sent_rooms.iter().map(|&k| members[k as usize].len() as u64).sum();
    let sent_total = sent_rooms.len() as u64;
    let drain_start = Instant::now();
    while drain_start.elapsed() < cfg.drain {
        let done = shared.delivered.load(Ordering::Relaxed) >= expected_total
            && shared.answered.load(Ordering::Relaxed) >= sent_total;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = drain_start.elapsed();
    let window_end_sample = sample(cfg.server_pid)?;
    let tick_after = match &cfg.metrics_url {
        Some(url) => Some(prom::scrape(&http, url, TICK_METRIC).await?),
        None => None,
    };

    // Stop every bot and collect what it saw.
    shared.stop.cancel();
    let mut results = Vec::with_capacity(bots.len());
    for b in bots {
        match b.task.await {
            Ok(r) => results.push(r),
            Err(e) => bail!("a bot task failed: {e}"),
        }
    }
    results.sort_by_key(|r| r.idx);

    Ok(report::build(report::Inputs {
        cfg,
        creds: creds.len(),
        connect_time,
        settled_in,
        connect_failures,
        join_failures,
        members: &members,
        rooms_joined: room_ids.iter().filter(|r| r.is_some()).count(),
        sent_rooms: &sent_rooms,
        results: &results,
        shared: &shared,
        window,
        drained,
        clk_tck,
        rss_before_connect,
        rss_connected,
        window_start_sample,
        window_end_sample,
        tick: tick_before.zip(tick_after).map(|(b, a)| a.since(&b)),
    }))
}
