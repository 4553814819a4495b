//! The result of a load run: built from every bot's observations, printed as a summary or
//! written as JSON.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::bot::{BotResult, Shared, new_histogram};
use super::{LoadConfig, prom, sys};

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn from_shards(shards: &[std::sync::Mutex<Histogram<u64>>]) -> Self {
        let mut all = new_histogram();
        for shard in shards {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        if all.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: all.len(),
            p50_ms: ms(all.value_at_quantile(0.5)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            max_ms: ms(all.max()),
        }
    }
}

/// What the server process did in the window (`--server-pid`).
#[derive(Clone, Debug, Serialize)]
pub struct ServerUsage {
    pub cpu_seconds: f64,
    /// Server CPU time / wall time of the window (1.0 = one core busy).
    pub cpu_cores: f64,
    pub deliveries_per_cpu_second: Option<f64>,
    pub rss_window_start_kib: u64,
    pub rss_window_end_kib: u64,
    /// Idle runs: RSS before connecting and after all connected and settled.
    pub rss_before_connect_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub rss_growth_per_connection_bytes: Option<f64>,
}

/// Tick durations inside the window, from the `/metrics` histogram's bucket deltas.
#[derive(Clone, Debug, Serialize)]
pub struct TickStats {
    pub ticks: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Upper bound of the highest non-empty bucket.
    pub max_bucket_ms: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub users: usize,
    pub connections_requested: usize,
    pub connections_opened: usize,
    pub connections_failed: u64,
    pub connect_failures: BTreeMap<String, u64>,
    pub connect_seconds: f64,
    pub rooms_requested: usize,
    pub rooms_joined: usize,
    pub bots_joined: usize,
    pub join_failures: BTreeMap<String, u64>,
    /// Wait after the joins for the server to stop sending (the window opened after it).
    pub settle_seconds: f64,
    pub window_seconds: f64,
    pub drain_seconds: f64,
    pub messages_sent: u64,
    pub messages_rejected: u64,
    pub acks: u64,
    pub missing_acks: u64,
    pub deliveries: u64,
    pub deliveries_expected: u64,
    /// Deliveries (all `message` frames) per second of the send window.
    pub deliveries_per_sec: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub seq_gaps: u64,
    pub foreign_messages: u64,
    pub wrong_sender: u64,
    pub delivery_latency: Latency,
    pub ack_latency: Latency,
    pub moves_sent: u64,
    pub moves_accepted: u64,
    /// `update_location` → `location_updated`.
    pub move_latency: Latency,
    pub frames_in: u64,
    pub unparsed_frames: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// Closes the server initiated before the run ended, by code.
    pub closes_by_code: BTreeMap<String, u64>,
    pub server: Option<ServerUsage>,
    pub tick: Option<TickStats>,
}

pub(super) struct Inputs<'a> {
    pub cfg: &'a LoadConfig,
    pub creds: usize,
    pub connect_time: Duration,
    pub connect_failures: BTreeMap<String, u64>,
    pub join_failures: BTreeMap<String, u64>,
    pub members: &'a [Vec<usize>],
    pub rooms_joined: usize,
    pub sent_rooms: &'a [u32],
    pub results: &'a [BotResult],
    pub shared: &'a Shared,
    pub settled_in: Duration,
    pub window: Duration,
    pub drained: Duration,
    pub clk_tck: u64,
    pub rss_before_connect: Option<sys::ProcSample>,
    pub rss_connected: Option<sys::ProcSample>,
    pub window_start_sample: Option<sys::ProcSample>,
    pub window_end_sample: Option<sys::ProcSample>,
    pub tick: Option<prom::Histogram>,
}

pub(super) fn build(i: Inputs<'_>) -> Report {
    let by_idx: BTreeMap<usize, &BotResult> = i.results.iter().map(|r| (r.idx, r)).collect();
    let rejected: HashSet<u64> = i.results.iter().flat_map(|r| r.rejected.iter().copied()).collect();
    let mut expected = 0u64;
    let mut lost = 0u64;
    for (gid, &room) in i.sent_rooms.iter().enumerate() {
        let gid = gid as u64;
        if rejected.contains(&gid) {
            continue;
        }
        for idx in i.members.get(room as usize).map(Vec::as_slice).unwrap_or_default() {
            expected += 1;
            if !by_idx.get(idx).is_some_and(|r| r.has(gid)) {
                lost += 1;
            }
        }
    }
    let sum = |f: fn(&BotResult) -> u64| i.results.iter().map(f).sum::<u64>();
    let mut errors_by_code = BTreeMap::new();
    let mut closes_by_code = BTreeMap::new();
    for r in i.results {
        for (code, n) in &r.errors {
            *errors_by_code.entry(code.clone()).or_default() += n;
        }
        if let Some(code) = &r.closed_by_server {
            *closes_by_code.entry(code.clone()).or_default() += 1;
        }
    }
    let deliveries = sum(|r| r.deliveries);
    let window_s = i.window.as_secs_f64();
    let server = i.window_start_sample.zip(i.window_end_sample).map(|(a, b)| {
        let cpu_seconds = b.cpu_seconds_since(&a, i.clk_tck);
        let wall = (i.window + i.drained).as_secs_f64();
        let opened = i.results.len();
        let growth = i.rss_before_connect.zip(i.rss_connected).and_then(|(before, after)| {
            (opened > 0).then(|| (after.rss_kib as f64 - before.rss_kib as f64) * 1024.0 / opened as f64)
        });
        ServerUsage {
            cpu_seconds,
            cpu_cores: if wall > 0.0 { cpu_seconds / wall } else { 0.0 },
            deliveries_per_cpu_second: (cpu_seconds > 0.0 && deliveries > 0).then(|| deliveries as f64 / cpu_seconds),
            rss_window_start_kib: a.rss_kib,
            rss_window_end_kib: b.rss_kib,
            rss_before_connect_kib: i.rss_before_connect.map(|s| s.rss_kib),
            rss_connected_kib: i.rss_connected.map(|s| s.rss_kib),
            rss_growth_per_connection_bytes: growth,
        }
    });
    let tick = i.tick.map(|h| TickStats {
        ticks: h.count.max(0.0) as u64,
        p50_ms: h.quantile(0.5).map(|s| s * 1000.0),
        p99_ms: h.quantile(0.99).map(|s| s * 1000.0),
        mean_ms: h.mean().map(|s| s * 1000.0),
        max_bucket_ms: h.max_bound().map(|s| s * 1000.0),
    });
    Report {
        scenario: i.cfg.scenario(),
        users: i.creds,
        connections_requested: i.cfg.connections,
        connections_opened: i.results.len(),
        connections_failed: i.connect_failures.values().sum(),
        connect_failures: i.connect_failures,
        connect_seconds: i.connect_time.as_secs_f64(),
        rooms_requested: i.cfg.rooms,
        rooms_joined: i.rooms_joined,
        bots_joined: i.members.iter().map(Vec::len).sum(),
        join_failures: i.join_failures,
        settle_seconds: i.settled_in.as_secs_f64(),
        window_seconds: window_s,
        drain_seconds: i.drained.as_secs_f64(),
        messages_sent: sum(|r| r.sent),
        messages_rejected: rejected.len() as u64,
        acks: sum(|r| r.acks),
        missing_acks: sum(|r| r.unacked.len() as u64),
        deliveries,
        deliveries_expected: expected,
        deliveries_per_sec: if window_s > 0.0 { deliveries as f64 / window_s } else { 0.0 },
        lost,
        duplicated: sum(|r| r.duplicates),
        out_of_order: sum(|r| r.out_of_order),
        seq_gaps: sum(|r| r.seq_gaps),
        foreign_messages: sum(|r| r.foreign),
        wrong_sender: sum(|r| r.wrong_sender),
        delivery_latency: Latency::from_shards(&i.shared.delivery_latency),
        ack_latency: Latency::from_shards(&i.shared.ack_latency),
        moves_sent: sum(|r| r.moves_sent),
        moves_accepted: sum(|r| r.moves_accepted),
        move_latency: Latency::from_shards(&i.shared.move_latency),
        frames_in: sum(|r| r.frames_in),
        unparsed_frames: sum(|r| r.unparsed),
        errors_by_code,
        closes_by_code,
        server,
        tick,
    }
}

fn map_text(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2} ms"))
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
            self.p50_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario          {}", self.scenario)?;
        writeln!(
            f,
            "connections       {} opened, {} failed of {} ({} users) in {:.1} s; failures: {}",
            self.connections_opened,
            self.connections_failed,
            self.connections_requested,
            self.users,
            self.connect_seconds,
            map_text(&self.connect_failures)
        )?;
        if self.rooms_requested > 0 {
            writeln!(
                f,
                "rooms             {} of {} joined by {} bots; join failures: {}",
                self.rooms_joined,
                self.rooms_requested,
                self.bots_joined,
                map_text(&self.join_failures)
            )?;
        }
        writeln!(
            f,
            "window            {:.1} s (+ {:.1} s drain), opened after {:.1} s of settling",
            self.window_seconds, self.drain_seconds, self.settle_seconds
        )?;
        writeln!(
            f,
            "messages          {} sent, {} acked, {} rejected, {} missing acks",
            self.messages_sent, self.acks, self.messages_rejected, self.missing_acks
        )?;
        writeln!(
            f,
            "deliveries        {} ({:.0}/s), expected {}; lost {}, duplicated {}, out-of-order {}, seq gaps {}",
            self.deliveries,
            self.deliveries_per_sec,
            self.deliveries_expected,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.seq_gaps
        )?;
        if self.foreign_messages > 0 || self.wrong_sender > 0 {
            writeln!(f, "                  {} foreign, {} wrong sender_id", self.foreign_messages, self.wrong_sender)?;
        }
        writeln!(f, "send→deliver      {}", self.delivery_latency)?;
        writeln!(f, "send→ack          {}", self.ack_latency)?;
        writeln!(
            f,
            "moves             {} sent, {} accepted; move→location_updated {}",
            self.moves_sent, self.moves_accepted, self.move_latency
        )?;
        writeln!(f, "frames in         {} ({} unparsed)", self.frames_in, self.unparsed_frames)?;
        writeln!(f, "errors by code    {}", map_text(&self.errors_by_code))?;
        writeln!(f, "closes by code    {}", map_text(&self.closes_by_code))?;
        if let Some(s) = &self.server {
            writeln!(
                f,
                "server CPU        {:.2} s ({:.2} cores){}",
                s.cpu_seconds,
                s.cpu_cores,
                s.deliveries_per_cpu_second.map_or(String::new(), |d| format!(", {d:.0} deliveries per CPU-second"))
            )?;
            writeln!(
                f,
                "server RSS        {} KiB → {} KiB over the window",
                s.rss_window_start_kib, s.rss_window_end_kib
            )?;
            if let (Some(a), Some(b), Some(g)) =
                (s.rss_before_connect_kib, s.rss_connected_kib, s.rss_growth_per_connection_bytes)
            {
                writeln!(
                    f,
                    "idle RSS          {a} KiB before connecting → {b} KiB connected: {:.1} KiB per connection",
                    g / 1024.0
                )?;
            }
        }
        if let Some(t) = &self.tick {
            writeln!(
                f,
                "tick (/metrics)   {} ticks; p50 {}, p99 {}, mean {}, max ≤ {}",
                t.ticks,
                opt_ms(t.p50_ms),
                opt_ms(t.p99_ms),
                opt_ms(t.mean_ms),
                opt_ms(t.max_bucket_ms)
            )?;
        }
        Ok(())
    }
}
