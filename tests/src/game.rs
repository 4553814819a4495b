//! A headless game client ("bot") for tests and the bandwidth measurement: a renet client over a
//! netcode client transport, pumped by its own thread every few milliseconds, that decodes every
//! [`ServerMessage`], keeps the view the server replicates (spawns, despawns, delta snapshots,
//! acknowledged back to the server) and counts the UDP bytes it receives.
//!
//! The transport is renetcode's [`NetcodeClient`] over a `std` UDP socket, the same few steps
//! as `renet_netcode::NetcodeClientTransport`, written out here so that every datagram that
//! arrives is counted (connection keep-alives, acks and snapshots alike).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use landworld_shared::protocol::game::{
    AvatarState, ClientChannel, ClientMessage, ServerChannel, ServerMessage, connection_config, decode_server, encode,
};
pub use landworld_shared::protocol::replica::{Replica, Seen};
use landworld_shared::world::TilePos;
use renet::RenetClient;
use renetcode::{ClientAuthentication, ConnectToken, NetcodeClient};
use uuid::Uuid;

use crate::{TestApp, TestUser, WAIT};

/// How often the bot's thread pumps the connection.
const PUMP: Duration = Duration::from_millis(5);
/// Everything the bot knows, updated by its thread.
#[derive(Debug, Default)]
pub struct BotState {
    pub connected: bool,
    /// Why the connection ended (or never started).
    pub disconnect_reason: Option<String>,
    /// From `Welcome`.
    pub user_id: Option<Uuid>,
    /// The own avatar (welcome, moves, snapshots).
    pub pos: Option<TilePos>,
    /// Avatars in view and their positions from delta snapshots (the client's own replica).
    pub view: Replica,
    /// Full-state replication: the last list received.
    pub full_state: Vec<AvatarState>,
    pub full_states: u64,
    /// UDP payload bytes and datagrams received from the server (IP/UDP headers not included).
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
}

impl BotState {
    /// The avatars in view as (user id, username, position), by username.
    pub fn visible(&self) -> Vec<Seen> {
        let mut v: Vec<Seen> = self.view.avatars.values().cloned().collect();
        v.sort_by(|a, b| a.username.cmp(&b.username));
        v
    }

    pub fn sees(&self, user_id: Uuid) -> Option<TilePos> {
        self.view.avatars.values().find(|s| s.user_id == user_id).map(|s| s.pos)
    }

    fn apply(&mut self, msg: &ServerMessage) -> Option<u32> {
        match msg {
            ServerMessage::Welcome { user_id, x, y, .. } => {
                self.user_id = Some(*user_id);
                self.pos = Some(TilePos::new(*x, *y));
            }
            ServerMessage::Moved { x, y, .. } => self.pos = Some(TilePos::new(*x, *y)),
            ServerMessage::Spawn { .. } | ServerMessage::Despawn { .. } => {
                self.view.apply(msg);
            }
            ServerMessage::Snapshot(_) => {
                let tick = self.view.apply(msg);
                if tick.is_some() {
                    self.pos = self.view.own.map(|(_, at)| at);
                }
                return tick;
            }
            ServerMessage::FullState { x, y, avatars, .. } => {
                self.full_states += 1;
                self.pos = Some(TilePos::new(*x, *y));
                self.full_state = avatars.clone();
            }
            _ => {}
        }
        None
    }
}

/// What the test thread asks of the bot's thread.
enum Command {
    Send(ClientChannel, Vec<u8>),
}

/// A connected (or connecting) headless game client.
pub struct GameBot {
    commands: std::sync::mpsc::Sender<Command>,
    events: tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    state: Arc<Mutex<BotState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// A connect token from `POST /api/v1/game/connect-token`, decoded.
pub async fn fetch_token(app: &TestApp, user: &TestUser) -> Result<ConnectToken> {
    let (status, body) = app.post("/api/v1/game/connect-token", &serde_json::json!({}), Some(&user.token)).await?;
    if status != 200 {
        bail!("connect-token: {status} {body}");
    }
    let text = body["connect_token"].as_str().ok_or_else(|| anyhow!("no connect_token in {body}"))?;
    decode_token(text)
}

/// Reads a base64 connect token.
pub fn decode_token(text: &str) -> Result<ConnectToken> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).context("connect token is not base64")?;
    ConnectToken::read(&mut bytes.as_slice()).map_err(|e| anyhow!("connect token does not parse: {e}"))
}

struct Transport {
    socket: UdpSocket,
    netcode: NetcodeClient,
    buf: Box<[u8; 1500]>,
}

impl Transport {
    fn update(&mut self, dt: Duration, client: &mut RenetClient, state: &Mutex<BotState>) -> Result<(), String> {
        if let Some(reason) = self.netcode.disconnect_reason() {
            client.disconnect_due_to_transport();
            return Err(format!("{reason:?}"));
        }
        if let Some(reason) = client.disconnect_reason() {
            if let Ok((addr, packet)) = self.netcode.disconnect() {
                let _ = self.socket.send_to(packet, addr);
            }
            return Err(reason.to_string());
        }
        if self.netcode.is_connected() {
            client.set_connected();
        } else if self.netcode.is_connecting() {
            client.set_connecting();
        }
        let (mut bytes, mut packets) = (0u64, 0u64);
        loop {
            match self.socket.recv_from(&mut self.buf[..]) {
                Ok((len, addr)) => {
                    if addr != self.netcode.server_addr() {
                        continue;
                    }
                    bytes += len as u64;
                    packets += 1;
                    if let Some(payload) = self.netcode.process_packet(&mut self.buf[..len]) {
                        client.process_packet(payload);
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut out = (0u64, 0u64);
        if let Some((packet, addr)) = self.netcode.update(dt) {
            out = (packet.len() as u64, 1);
            let _ = self.socket.send_to(packet, addr);
        }
        if let Ok(mut s) = state.lock() {
            s.bytes_in += bytes;
            s.packets_in += packets;
            s.bytes_out += out.0;
            s.packets_out += out.1;
        }
        Ok(())
    }

    fn send_packets(&mut self, client: &mut RenetClient, state: &Mutex<BotState>) -> Result<(), String> {
        let (mut bytes, mut packets) = (0u64, 0u64);
        for packet in client.get_packets_to_send() {
            let (addr, payload) = self.netcode.generate_payload_packet(&packet).map_err(|e| e.to_string())?;
            bytes += payload.len() as u64;
            packets += 1;
            self.socket.send_to(payload, addr).map_err(|e| e.to_string())?;
        }
        if let Ok(mut s) = state.lock() {
            s.bytes_out += bytes;
            s.packets_out += packets;
        }
        Ok(())
    }
}

impl GameBot {
    /// Starts connecting with a token (the connection completes in the background; see
    /// [`Self::welcome`]).
    pub fn connect(token: ConnectToken) -> Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        socket.set_nonblocking(true)?;
        let netcode = NetcodeClient::new(unix_now(), ClientAuthentication::Secure { connect_token: token })
            .map_err(|e| anyhow!("netcode client: {e}"))?;
        let mut transport = Transport { socket, netcode, buf: Box::new([0u8; 1500]) };
        let mut client = RenetClient::new(connection_config());
        let state = Arc::new(Mutex::new(BotState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<Command>();
        let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new().name("game-bot".into()).spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    let now = Instant::now();
                    let dt = now - last;
                    last = now;
                    client.update(dt);
                    if let Err(reason) = transport.update(dt, &mut client, &state) {
                        if let Ok(mut s) = state.lock() {
                            s.connected = false;
                            s.disconnect_reason.get_or_insert(reason);
                        }
                        return;
                    }
                    if client.is_connected()
                        && let Ok(mut s) = state.lock()
                    {
                        s.connected = true;
                    }
                    let mut acks = Vec::new();
                    for channel in [ServerChannel::Reliable, ServerChannel::Snapshots] {
                        while let Some(bytes) = client.receive_message(channel) {
                            let Ok(msg) = decode_server(&bytes) else {
                                if let Ok(mut s) = state.lock() {
                                    s.disconnect_reason = Some("the server sent a malformed message".into());
                                }
                                continue;
                            };
                            if let Ok(mut s) = state.lock()
                                && let Some(tick) = s.apply(&msg)
                            {
                                acks.push(tick);
                            }
                            let _ = ev_tx.send(msg);
                        }
                    }
                    if let Some(&tick) = acks.iter().max() {
                        client.send_message(ClientChannel::Unreliable, encode(&ClientMessage::SnapshotAck { tick }));
                    }
                    while let Ok(Command::Send(channel, bytes)) = cmd_rx.try_recv() {
                        client.send_message(channel, bytes);
                    }
                    if client.is_connected() {
                        // A failure here surfaces as a disconnect reason on the next update.
                        let _ = transport.send_packets(&mut client, &state);
                    }
                    std::thread::sleep(PUMP);
                }
                // Leaving: tell the server at once.
                if let Ok((addr, packet)) = transport.netcode.disconnect() {
                    let _ = transport.socket.send_to(packet, addr);
                }
            })?
        };
        Ok(Self { commands: cmd_tx, events: ev_rx, state, stop, thread: Some(thread) })
    }

    /// Fetches a token for `user` and connects.
    pub async fn join(app: &TestApp, user: &TestUser) -> Result<Self> {
        Self::connect(fetch_token(app, user).await?)
    }

    /// Sends a message on the reliable channel.
    pub fn send(&self, msg: &ClientMessage) {
        let _ = self.commands.send(Command::Send(ClientChannel::Reliable, encode(msg)));
    }

    /// Sends raw bytes as a message (tests of malformed input).
    pub fn send_raw(&self, channel: ClientChannel, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::Send(channel, bytes));
    }

    pub fn state(&self) -> MutexGuard<'_, BotState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Skips messages until one satisfies `pred`, or fails after [`WAIT`].
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&ServerMessage) -> bool) -> Result<ServerMessage> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(msg)) if pred(&msg) => return Ok(msg),
                Ok(Some(_)) => continue,
                Ok(None) => bail!("bot stopped while waiting for {what}: {:?}", self.state().disconnect_reason),
                Err(_) => bail!("timed out waiting for {what} (state: {:?})", self.state().disconnect_reason),
            }
        }
    }

    /// Waits for the welcome; returns the own position.
    pub async fn welcome(&mut self) -> Result<TilePos> {
        match self.expect("welcome", |m| matches!(m, ServerMessage::Welcome { .. })).await? {
            ServerMessage::Welcome { x, y, .. } => Ok(TilePos::new(x, y)),
            other => bail!("expected a welcome, got {other:?}"),
        }
    }

    /// Polls the state until `f` returns `Some`, or fails after `wait`.
    pub async fn wait_for<T>(&self, what: &str, wait: Duration, f: impl Fn(&BotState) -> Option<T>) -> Result<T> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(v) = f(&self.state()) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Messages received so far and not yet consumed by [`Self::expect`].
    pub fn drain(&mut self) -> Vec<ServerMessage> {
        let mut out = Vec::new();
        while let Ok(m) = self.events.try_recv() {
            out.push(m);
        }
        out
    }

    /// Whether the pump thread is still running (false once the connection ended).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Ids in view keyed by user id (for assertions).
    pub fn visible_users(&self) -> HashMap<Uuid, TilePos> {
        self.state().view.avatars.values().map(|s| (s.user_id, s.pos)).collect()
    }
}

impl Drop for GameBot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
