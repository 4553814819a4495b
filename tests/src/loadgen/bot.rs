//! One load-test connection: a task that owns its WebSocket, obeys commands from the run
//! (join a room, send a message, start moving), and checks every frame it receives.
//!
//! Everything a bot learns stays in its own [`BotResult`] until the run ends; the only shared
//! state on the hot path is a few atomic counters and sharded latency histograms.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use landworld_shared::protocol::ws::{ClientFrame, ServerFrame, error_code};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::wire::{Event, RawWs};

pub type Ws = RawWs;

/// Latency histograms are sharded so that bots on different threads rarely share a lock.
pub const SHARDS: usize = 16;

/// Highest latency recorded, in microseconds (longer ones are clamped).
const MAX_LATENCY_US: u64 = 600_000_000;

/// Neighbouring steps, tried in this order when a move is refused.
const DIRS: [(i32, i32); 8] = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (1, -1), (-1, -1)];

/// The fields of `message` and `message_ack` frames the load tool checks, borrowed from the
/// frame's text (strings with escapes are the only ones copied).
#[derive(serde::Deserialize, Debug, Default, PartialEq)]
struct HotFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    room_id: Option<Uuid>,
    seq: Option<i64>,
    sender_id: Option<Uuid>,
    #[serde(borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    client_msg_id: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> HotFrame<'a> {
    /// Reads the hot fields: a single pass over a flat JSON object (what the server sends for
    /// `message` and `message_ack`), falling back to serde for anything else — nested values,
    /// escapes in the fields it keeps — so the result is always what serde would give. The
    /// tool reads every delivery of a run and shares the cores with the server: this pass costs
    /// a fraction of a general deserializer that also skips the fields nobody needs.
    fn parse(text: &'a str) -> Option<Self> {
        Self::scan(text).or_else(|| serde_json::from_str(text).ok())
    }

    fn scan(text: &'a str) -> Option<Self> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i += 1;
        let mut hot = HotFrame::default();
        let mut kind = None;
        loop {
            i = skip_ws(b, i);
            match b.get(i)? {
                b'}' => break,
                b'"' => {}
                _ => return None,
            }
            let (key, after) = plain_string(text, i)?;
            i = skip_ws(b, after);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let value_end = match b.get(i)? {
                b'"' => {
                    let (value, end) = plain_string(text, i)?;
                    match key {
                        "type" => kind = Some(value),
                        "room_id" => hot.room_id = Some(value.parse().ok()?),
                        "sender_id" => hot.sender_id = Some(value.parse().ok()?),
                        "content" => hot.content = Some(value.into()),
                        "client_msg_id" => hot.client_msg_id = Some(value.into()),
                        "seq" => return None,
                        _ => {}
                    }
                    end
                }
                b'{' | b'[' => return None,
                _ => {
                    let len = b[i..].iter().position(|c| matches!(c, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))?;
                    let raw = &text[i..i + len];
                    match (key, raw) {
                        (_, "null") if key != "type" => {}
                        ("seq", n) => hot.seq = Some(n.parse().ok()?),
                        ("type" | "room_id" | "sender_id" | "content" | "client_msg_id", _) => return None,
                        _ => {}
                    }
                    i + len
                }
            };
            i = skip_ws(b, value_end);
            match b.get(i)? {
                b',' => i += 1,
                b'}' => break,
                _ => return None,
            }
        }
        if skip_ws(b, i + 1) != b.len() {
            return None;
        }
        hot.kind = kind?;
        Some(hot)
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The string starting at the quote `text[at]`, when it has no escapes; and the index after
/// its closing quote. None for strings with escapes (the caller falls back to serde). Raw
/// control characters, which serde would refuse, are not looked for: the server never sends
/// them (its JSON writer escapes them).
fn plain_string(text: &str, at: usize) -> Option<(&str, usize)> {
    let body = &text.as_bytes()[at + 1..];
    let end = memchr::memchr2(b'"', b'\\', body)?;
    if body[end] != b'"' {
        return None;
    }
    Some((&text[at + 1..at + 1 + end], at + end + 2))
}

pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds, valid for hdrhistogram (low >= 1, high >= 2 * low, 3 significant figures).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

fn record(shards: &[std::sync::Mutex<Histogram<u64>>], idx: usize, value: Duration) {
    let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
    if let Some(shard) = shards.get(idx % shards.len())
        && let Ok(mut h) = shard.lock()
    {
        let _ = h.record(us);
    }
}

/// State shared by the run and every bot.
pub struct Shared {
    /// Time zero of the run; message contents carry nanoseconds since it.
    pub t0: Instant,
    pub stop: CancellationToken,
    /// Moves are sent only while the measured window is open.
    pub moving: AtomicBool,
    /// Set until the measured window opens: frames received are counted in
    /// [`Self::frames_before_window`] (the run waits for them to stop before measuring).
    pub settling: AtomicBool,
    pub frames_before_window: AtomicU64,
    /// Size of message contents in bytes (at least what the timestamp needs).
    pub msg_size: usize,
    /// Random per run, part of every `client_msg_id`: a rerun with the same accounts must not
    /// send the ids of an earlier run (the server would rightly treat them as retries, ack them
    /// with the original message and deliver nothing).
    pub run: String,
    /// User id of each bot, by bot index (to check `sender_id`).
    pub bot_users: Vec<Uuid>,
    /// First deliveries of loadgen messages (not duplicates), for the drain wait.
    pub delivered: AtomicU64,
    /// Acks plus rejections of loadgen messages, for the drain wait.
    pub answered: AtomicU64,
    pub delivery_latency: Vec<std::sync::Mutex<Histogram<u64>>>,
    pub ack_latency: Vec<std::sync::Mutex<Histogram<u64>>>,
    pub move_latency: Vec<std::sync::Mutex<Histogram<u64>>>,
}

impl Shared {
    pub fn new(bot_users: Vec<Uuid>, msg_size: usize) -> Self {
        let shards = || (0..SHARDS).map(|_| std::sync::Mutex::new(new_histogram())).collect();
        Self {
            t0: Instant::now(),
            stop: CancellationToken::new(),
            moving: AtomicBool::new(false),
            settling: AtomicBool::new(true),
            frames_before_window: AtomicU64::new(0),
            msg_size,
            run: Uuid::new_v4().simple().to_string()[..8].to_string(),
            bot_users,
            delivered: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            delivery_latency: shards(),
            ack_latency: shards(),
            move_latency: shards(),
        }
    }
}

/// What the run asks of a bot.
pub enum BotCmd {
    /// Send `join_room` for this land and answer with `(room_id, last_seq)` or the error code.
    Join { land_id: Uuid, reply: oneshot::Sender<Result<(Uuid, i64), String>> },
    /// Send message `gid` to the joined room.
    Send { gid: u64 },
    /// Send `set_radius`.
    SetRadius { radius: u32 },
    /// Step back and forth at this period while [`Shared::moving`] is set.
    Moves { period: Duration, phase: Duration },
}

/// Everything one bot observed.
#[derive(Debug, Default)]
pub struct BotResult {
    pub idx: usize,
    /// The room (session id) this bot joined.
    pub room: Option<Uuid>,
    /// Bit `gid` set: loadgen message `gid` was delivered to this connection.
    pub received: Vec<u64>,
    pub deliveries: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub seq_gaps: u64,
    /// `message` frames without a loadgen `client_msg_id`.
    pub foreign: u64,
    /// Loadgen messages whose `sender_id` is not the sending bot's user.
    pub wrong_sender: u64,
    pub sent: u64,
    pub acks: u64,
    /// Messages still waiting for their ack when the bot stopped.
    pub unacked: Vec<u64>,
    /// Messages the server refused with an `error` naming their `client_msg_id`.
    pub rejected: Vec<u64>,
    pub moves_sent: u64,
    pub moves_accepted: u64,
    pub frames_in: u64,
    pub unparsed: u64,
    pub errors: HashMap<String, u64>,
    /// How the server closed the connection before the run ended: the close code, `none`
    /// (close without code), `eof` or `error`.
    pub closed_by_server: Option<String>,
}

impl BotResult {
    pub fn has(&self, gid: u64) -> bool {
        let (word, bit) = ((gid / 64) as usize, gid % 64);
        self.received.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Marks `gid` received; false when it already was (a duplicate).
    fn mark(&mut self, gid: u64) -> bool {
        let (word, bit) = ((gid / 64) as usize, gid % 64);
        if self.received.len() <= word {
            self.received.resize(word + 1, 0);
        }
        let fresh = self.received[word] & (1 << bit) == 0;
        self.received[word] |= 1 << bit;
        fresh
    }
}

/// `lg-<run>-<bot>-<gid>` → `(bot, gid)` for ids of this run (`run`); None for anything else.
pub fn parse_client_msg_id(id: &str, run: &str) -> Option<(usize, u64)> {
    let rest = id.strip_prefix("lg-")?.strip_prefix(run)?.strip_prefix('-')?;
    let (bot, gid) = rest.split_once('-')?;
    Some((bot.parse().ok()?, gid.parse().ok()?))
}

/// The bot's task.
pub struct Bot {
    pub idx: usize,
    pub ws: Ws,
    pub spawn: (i32, i32),
    pub cmds: mpsc::UnboundedReceiver<BotCmd>,
    pub shared: Arc<Shared>,
}

struct Moves {
    interval: tokio::time::Interval,
    at_spawn: bool,
    dir: usize,
    pending: Option<Instant>,
}

async fn next_move(moves: &mut Option<Moves>) {
    match moves {
        Some(m) => {
            m.interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

impl Bot {
    pub async fn run(self) -> BotResult {
        let Bot { idx, mut ws, spawn, mut cmds, shared } = self;
        let mut r = BotResult { idx, ..Default::default() };
        let mut room: Option<Uuid> = None;
        let mut join_reply: Option<oneshot::Sender<Result<(Uuid, i64), String>>> = None;
        let mut last_seq: HashMap<Uuid, i64> = HashMap::new();
        let mut pending_acks: HashMap<u64, Instant> = HashMap::new();
        let mut moves: Option<Moves> = None;
        let mut open = true;
        // Made once: a new `cancelled()` future per loop turn registers (and drops) a waiter
        // on the run's one token under its lock, for every frame of every bot.
        let stop = shared.stop.clone();
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => break,
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(BotCmd::Join { land_id, reply }) => {
                        let frame = ClientFrame::JoinRoom { room_id: land_id.to_string(), since_seq: None };
                        if !open || send(&mut ws, &frame).await.is_err() {
                            let _ = reply.send(Err("connection closed".into()));
                        } else {
                            join_reply = Some(reply);
                        }
                    }
                    Some(BotCmd::Send { gid }) => {
                        let Some(room_id) = room else { continue };
                        let ns = shared.t0.elapsed().as_nanos();
                        let mut content = format!("lg {ns} ");
                        while content.len() < shared.msg_size {
                            content.push('x');
                        }
                        let frame = ClientFrame::SendMessage {
                            room_id: room_id.to_string(),
                            content,
                            client_msg_id: Some(format!("lg-{}-{idx}-{gid}", shared.run)),
                        };
                        if open && send(&mut ws, &frame).await.is_ok() {
                            pending_acks.insert(gid, Instant::now());
                            r.sent += 1;
                        }
                    }
                    Some(BotCmd::SetRadius { radius }) => {
                        if open {
                            let _ = send(&mut ws, &ClientFrame::SetRadius { radius: i64::from(radius) }).await;
                        }
                    }
                    Some(BotCmd::Moves { period, phase }) => {
                        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                        moves = Some(Moves { interval, at_spawn: true, dir: 0, pending: None });
                    }
                },
                () = next_move(&mut moves) => {
                    let Some(m) = moves.as_mut() else { continue };
                    if !open || !shared.moving.load(Ordering::Relaxed) {
                        continue;
                    }
                    let (dx, dy) = DIRS[m.dir % DIRS.len()];
                    let (x, y) = if m.at_spawn { (spawn.0 + dx, spawn.1 + dy) } else { spawn };
                    if send(&mut ws, &ClientFrame::UpdateLocation { x: i64::from(x), y: i64::from(y) }).await.is_ok() {
                        m.at_spawn = !m.at_spawn;
                        m.pending = Some(Instant::now());
                        r.moves_sent += 1;
                    }
                },
                msg = ws.next(), if open => {
                    let bytes = match msg {
                        Some(Ok(Event::Text(t))) => t,
                        Some(Ok(Event::Close(code))) => {
                            r.closed_by_server = Some(code.map_or("none".into(), |c| c.to_string()));
                            open = false;
                            continue;
                        }
                        Some(Err(_)) => {
                            r.closed_by_server = Some("error".into());
                            open = false;
                            continue;
                        }
                        None => {
                            r.closed_by_server = Some("eof".into());
                            open = false;
                            continue;
                        }
                    };
                    r.frames_in += 1;
                    if shared.settling.load(Ordering::Relaxed) {
                        shared.frames_before_window.fetch_add(1, Ordering::Relaxed);
                    }
                    let Ok(text) = std::str::from_utf8(&bytes) else {
                        r.unparsed += 1;
                        continue;
                    };
                    // The two frames that make up nearly all the traffic are read without
                    // allocating; everything else through the full frame type.
                    let Some(hot) = HotFrame::parse(text) else {
                        r.unparsed += 1;
                        continue;
                    };
                    match hot.kind {
                        "message" => {
                            let (Some(room_id), Some(seq), Some(sender_id), Some(content)) =
                                (hot.room_id, hot.seq, hot.sender_id, hot.content.as_deref())
                            else {
                                r.unparsed += 1;
                                continue;
                            };
                            r.deliveries += 1;
                            let last = last_seq.entry(room_id).or_insert(seq - 1);
                            if seq <= *last {
                                r.out_of_order += 1;
                            } else {
                                if seq > *last + 1 {
                                    r.seq_gaps += 1;
                                }
                                *last = seq;
                            }
                            let Some((sender_bot, gid)) = hot.client_msg_id.as_deref().and_then(|c| parse_client_msg_id(c, &shared.run)) else {
                                r.foreign += 1;
                                continue;
                            };
                            if shared.bot_users.get(sender_bot) != Some(&sender_id) {
                                r.wrong_sender += 1;
                            }
                            if !r.mark(gid) {
                                r.duplicates += 1;
                                continue;
                            }
                            // The drain waits for the expected deliveries: messages of the
                            // room this bot joined. A bot standing on another loadgen room's
                            // land gets that room's messages too; they must not end the drain
                            // early.
                            if room == Some(room_id) {
                                shared.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            let sent_ns = content.split(' ').nth(1).and_then(|s| s.parse::<u128>().ok());
                            if let Some(sent_ns) = sent_ns {
                                let now_ns = shared.t0.elapsed().as_nanos();
                                let ns = u64::try_from(now_ns.saturating_sub(sent_ns)).unwrap_or(u64::MAX);
                                record(&shared.delivery_latency, idx, Duration::from_nanos(ns));
                            }
                            continue;
                        }
                        "message_ack" => {
                            let Some((_, gid)) = hot.client_msg_id.as_deref().and_then(|c| parse_client_msg_id(c, &shared.run)) else { continue };
                            if let Some(at) = pending_acks.remove(&gid) {
                                r.acks += 1;
                                shared.answered.fetch_add(1, Ordering::Relaxed);
                                record(&shared.ack_latency, idx, at.elapsed());
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let frame = match serde_json::from_str::<ServerFrame>(text) {
                        Ok(f) => f,
                        Err(_) => {
                            r.unparsed += 1;
                            continue;
                        }
                    };
                    match frame {
                        ServerFrame::JoinedRoom { room_id, last_seq: seq, .. } => {
                            last_seq.insert(room_id, seq);
                            if let Some(reply) = join_reply.take() {
                                room = Some(room_id);
                                r.room = Some(room_id);
                                let _ = reply.send(Ok((room_id, seq)));
                            }
                        }
                        ServerFrame::LocationUpdated { .. } => {
                            r.moves_accepted += 1;
                            if let Some(at) = moves.as_mut().and_then(|m| m.pending.take()) {
                                record(&shared.move_latency, idx, at.elapsed());
                            }
                        }
                        ServerFrame::Error { code, reference, .. } => {
                            if code == error_code::INVALID_POSITION
                                && let Some(m) = moves.as_mut()
                            {
                                // That neighbour is not walkable: stay, try the next direction.
                                m.dir += 1;
                                m.at_spawn = true;
                                m.pending = None;
                            }
                            if reference.as_deref() == Some("join_room")
                                && let Some(reply) = join_reply.take()
                            {
                                let _ = reply.send(Err(code.clone()));
                            }
                            if let Some((_, gid)) = reference.as_deref().and_then(|c| parse_client_msg_id(c, &shared.run))
                                && pending_acks.remove(&gid).is_some()
                            {
                                r.rejected.push(gid);
                                shared.answered.fetch_add(1, Ordering::Relaxed);
                            }
                            *r.errors.entry(code).or_default() += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(reply) = join_reply.take() {
            let _ = reply.send(Err("no answer".into()));
        }
        r.unacked = pending_acks.into_keys().collect();
        if open {
            let _ = ws.send_close(1000).await;
            // Read until the server's close answer (bounded), so the close is clean.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(m)) = ws.next().await {
                    if matches!(m, Event::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        r
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) -> std::io::Result<()> {
    let text = serde_json::to_string(frame).unwrap_or_default();
    ws.send_text(&text).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_round_trip() {
        assert_eq!(parse_client_msg_id("lg-r1-12-345", "r1"), Some((12, 345)));
        assert_eq!(parse_client_msg_id("lg-r0-12-345", "r1"), None, "an earlier run's id");
        assert_eq!(parse_client_msg_id("lg-r1-12", "r1"), None);
        assert_eq!(parse_client_msg_id("other-r1-1-2", "r1"), None);
        assert_eq!(parse_client_msg_id("lg-r1-a-2", "r1"), None);
    }

    #[test]
    fn the_hot_frame_scan_reads_what_serde_reads() {
        let room = Uuid::new_v4();
        let sender = Uuid::new_v4();
        let message = ServerFrame::Message {
            room_id: room,
            message_id: Uuid::new_v4(),
            seq: 42,
            sender_id: sender,
            sender_username: "lg1".into(),
            content: "lg 123 xxxx".into(),
            created_at: "2026-11-23T00:00:00.000Z".into(),
            client_msg_id: Some("lg-r1-3-7".into()),
        };
        let text = serde_json::to_string(&message).expect("json");
        let scanned = HotFrame::scan(&text).expect("a flat message frame scans");
        assert_eq!(scanned, serde_json::from_str::<HotFrame<'_>>(&text).expect("serde"));
        assert_eq!((scanned.kind, scanned.room_id, scanned.seq), ("message", Some(room), Some(42)));
        assert_eq!(scanned.sender_id, Some(sender));
        assert_eq!(scanned.client_msg_id.as_deref(), Some("lg-r1-3-7"));
        // Whitespace, nulls and unknown fields are fine.
        let spaced = r#" { "type" : "message_ack" , "seq" : 5, "client_msg_id": null, "x": true } "#;
        let hot = HotFrame::scan(spaced).expect("scans");
        assert_eq!((hot.kind, hot.seq, hot.client_msg_id), ("message_ack", Some(5), None));
        // Escapes and nesting go to serde, which gives the same answer.
        let escaped = r#"{"type":"message","content":"a \"quote\"","seq":1}"#;
        assert!(HotFrame::scan(escaped).is_none());
        assert_eq!(HotFrame::parse(escaped).and_then(|h| h.content).as_deref(), Some("a \"quote\""));
        let nested = r#"{"type":"joined_room","members":[{"user_id":"x"}],"last_seq":3}"#;
        assert!(HotFrame::scan(nested).is_none());
        assert_eq!(HotFrame::parse(nested).map(|h| h.kind), Some("joined_room"));
        // Not JSON, or a truncated object: nothing.
        for bad in ["", "{", r#"{"type":"message""#, r#"{"type":"message"} x"#, "[1]", r#"{"seq":1}"#] {
            assert!(HotFrame::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn received_bitmap() {
        let mut r = BotResult::default();
        assert!(!r.has(130));
        assert!(r.mark(130));
        assert!(!r.mark(130));
        assert!(r.has(130));
        assert!(!r.has(129));
    }
}
