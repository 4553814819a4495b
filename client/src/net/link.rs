//! The connection to the server, on two threads of its own so that neither the frame rate nor a
//! slow HTTP call ever stalls the UDP connection (netcode times out after a few silent seconds):
//!
//! - the **session thread** signs in (`--register` first if asked), fetches a netcode connect
//!   token, and pumps the renet client over a non-blocking UDP socket every few milliseconds:
//!   it applies spawns, despawns and snapshots to the shared [`Replica`] and acknowledges each
//!   snapshot at once, forwards every other server message to the app in order, and sends what
//!   the app queued. When the connection is lost it reconnects with exponential backoff
//!   (0.5 s doubling to 30 s; reset after a connection that was up), with a fresh token each
//!   time and a fresh login when the bearer token has expired. Wrong credentials stop it.
//! - the **HTTP thread** runs the REST calls the app asks for (sessions, history, private
//!   rooms, who is online) with the current bearer token.
//!
//! The transport is renetcode's `NetcodeClient` over a `std` UDP socket, the steps of
//! `renet_netcode::NetcodeClientTransport` written out (as in the tests' headless client).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use landworld_shared::protocol::game::{
    ClientChannel, ClientMessage, ServerChannel, ServerMessage, connection_config, decode_server, encode,
};
use renet::RenetClient;
use renetcode::{ClientAuthentication, ConnectToken, NetcodeClient};
use uuid::Uuid;

use super::http::{Api, ApiError, HistoryMessage, OnlineUser, SessionInfo, UserInfo};
use landworld_shared::protocol::replica::Replica;

/// How often the session thread pumps the connection.
const PUMP: Duration = Duration::from_millis(5);
/// First reconnect delay; doubles per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Who to sign in as, and where.
#[derive(Clone)]
pub struct LinkConfig {
    pub server: String,
    pub username: String,
    pub password: String,
    /// Create the account first (an existing one is fine).
    pub register: bool,
}

/// Where the connection stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    SigningIn,
    Connecting,
    Connected,
    /// Waiting `retry_in` before attempt number `attempt`.
    Reconnecting {
        attempt: u32,
        retry_in: Duration,
        reason: String,
    },
    /// Given up (wrong credentials, a server that is no Landworld server).
    Failed(String),
}

/// REST calls the app asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpJob {
    Sessions,
    /// Everyone online and their status.
    OnlineUsers,
    /// The chat session of this land.
    LandSession(Uuid),
    History(Uuid),
    /// The private room with this user.
    OpenPrivate(Uuid),
}

/// What the network threads tell the app, in order.
#[derive(Clone, Debug)]
pub enum NetEvent {
    Status(LinkStatus),
    SignedIn(UserInfo),
    /// A server message other than spawns, despawns and snapshots (those go to the replica).
    Game(ServerMessage),
    Sessions(Vec<SessionInfo>),
    /// Who is online, with their status.
    Online(Vec<OnlineUser>),
    /// One session (a land's).
    Session(SessionInfo),
    History {
        room: Uuid,
        messages: Vec<HistoryMessage>,
    },
    /// A room's history could not be loaded (the live messages still arrive).
    HistoryFailed {
        room: Uuid,
        reason: String,
    },
    PrivateOpened(SessionInfo),
    /// A REST call failed; shown to the player.
    Problem(String),
}

/// The running network threads; dropping it disconnects.
pub struct Link {
    replica: Arc<Mutex<Replica>>,
    game_tx: Sender<ClientMessage>,
    http_tx: Sender<HttpJob>,
    events: Mutex<Receiver<NetEvent>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Link {
    pub fn start(config: LinkConfig) -> std::io::Result<Self> {
        let replica = Arc::new(Mutex::new(Replica::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let bearer: Arc<Mutex<Option<String>>> = Arc::default();
        let (game_tx, game_rx) = std::sync::mpsc::channel();
        let (http_tx, http_rx) = std::sync::mpsc::channel();
        let (ev_tx, ev_rx) = std::sync::mpsc::channel();
        // Each thread builds its own blocking HTTP client (building or dropping one inside an
        // async runtime is not allowed, and the caller may be in one).
        let server = config.server.clone();
        let session = {
            let (replica, stop, bearer, ev_tx) = (replica.clone(), stop.clone(), bearer.clone(), ev_tx.clone());
            std::thread::Builder::new().name("net-session".into()).spawn(move || {
                let api = match Api::new(&config.server) {
                    Ok(api) => api,
                    Err(e) => {
                        let _ = ev_tx.send(NetEvent::Status(LinkStatus::Failed(e.to_string())));
                        return;
                    }
                };
                let mut session = Session { config, api, bearer, replica, events: ev_tx, game_rx, stop };
                session.run();
            })?
        };
        let http = std::thread::Builder::new().name("net-http".into()).spawn({
            let stop = stop.clone();
            move || {
                if let Ok(api) = Api::new(&server) {
                    run_http(&api, &bearer, &http_rx, &ev_tx, &stop);
                }
            }
        })?;
        Ok(Self { replica, game_tx, http_tx, events: Mutex::new(ev_rx), stop, threads: vec![session, http] })
    }

    /// Queues a message for the server (reliable channel); dropped while disconnected.
    pub fn send(&self, msg: ClientMessage) {
        let _ = self.game_tx.send(msg);
    }

    pub fn request(&self, job: HttpJob) {
        let _ = self.http_tx.send(job);
    }

    /// Everything the threads reported since the last call.
    pub fn drain(&self) -> Vec<NetEvent> {
        let Ok(rx) = self.events.lock() else { return Vec::new() };
        rx.try_iter().collect()
    }

    pub fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// How a pumped connection ended.
enum Ended {
    /// The app is closing.
    Stopped,
    /// Lost (or refused); `was_up` if it had connected.
    Lost { reason: String, was_up: bool },
}

struct Session {
    config: LinkConfig,
    api: Api,
    bearer: Arc<Mutex<Option<String>>>,
    replica: Arc<Mutex<Replica>>,
    events: Sender<NetEvent>,
    game_rx: Receiver<ClientMessage>,
    stop: Arc<AtomicBool>,
}

impl Session {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn status(&self, status: LinkStatus) {
        let _ = self.events.send(NetEvent::Status(status));
    }

    fn bearer(&self) -> Option<String> {
        self.bearer.lock().ok().and_then(|b| b.clone())
    }

    fn set_bearer(&self, token: Option<String>) {
        if let Ok(mut b) = self.bearer.lock() {
            *b = token;
        }
    }

    fn run(&mut self) {
        let mut attempt = 0u32;
        let mut registered = !self.config.register;
        while !self.stopped() {
            let reason = match self.attempt(&mut registered) {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Lost { reason, was_up }) => {
                    if was_up {
                        attempt = 0;
                    }
                    reason
                }
                Err(e) if e.is_transient() => e.to_string(),
                Err(e) => {
                    bevy::log::error!(error = %e, "giving up connecting");
                    self.status(LinkStatus::Failed(e.to_string()));
                    return;
                }
            };
            attempt += 1;
            let retry_in = backoff(attempt);
            bevy::log::warn!(%reason, attempt, ?retry_in, "connection lost; reconnecting");
            self.status(LinkStatus::Reconnecting { attempt, retry_in, reason });
            let until = Instant::now() + retry_in;
            while Instant::now() < until {
                if self.stopped() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// One try: sign in if needed, get a token, connect and pump until the connection ends.
    fn attempt(&mut self, registered: &mut bool) -> Result<Ended, ApiError> {
        let bearer = match self.bearer() {
            Some(b) => b,
            None => {
                self.status(LinkStatus::SigningIn);
                if !*registered {
                    self.api.register(&self.config.username, &self.config.password)?;
                    *registered = true;
                }
                let (token, user) = self.api.login(&self.config.username, &self.config.password)?;
                bevy::log::info!(user = %user.username, "signed in");
                self.set_bearer(Some(token.clone()));
                let _ = self.events.send(NetEvent::SignedIn(user));
                token
            }
        };
        self.status(LinkStatus::Connecting);
        let token = match self.api.connect_token(&bearer) {
            Ok(t) => t,
            Err(ApiError::Unauthorized(m)) => {
                // The bearer token expired: sign in again on the next attempt.
                self.set_bearer(None);
                return Err(ApiError::Unreachable(format!("session expired ({m})")));
            }
            Err(e) => return Err(e),
        };
        Ok(self.pump(token))
    }

    fn pump(&mut self, token: ConnectToken) -> Ended {
        let Some(server) = token.server_addresses.iter().flatten().next().copied() else {
            return Ended::Lost { reason: "the connect token names no server address".into(), was_up: false };
        };
        let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = match UdpSocket::bind(local).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(s) => s,
            Err(e) => return Ended::Lost { reason: format!("UDP socket: {e}"), was_up: false },
        };
        let mut netcode = match NetcodeClient::new(unix_now(), ClientAuthentication::Secure { connect_token: token }) {
            Ok(n) => n,
            Err(e) => return Ended::Lost { reason: format!("netcode: {e}"), was_up: false },
        };
        let mut client = RenetClient::new(connection_config());
        if let Ok(mut r) = self.replica.lock() {
            *r = Replica::default();
        }
        // Messages queued while disconnected are stale (moves from an old position).
        while self.game_rx.try_recv().is_ok() {}
        let mut buf = vec![0u8; 1500];
        let mut was_up = false;
        let mut last = Instant::now();
        bevy::log::info!(%server, "connecting over UDP");
        loop {
            if self.stopped() {
                // Leaving: tell the server at once.
                if let Ok((addr, packet)) = netcode.disconnect() {
                    let _ = socket.send_to(packet, addr);
                }
                return Ended::Stopped;
            }
            let now = Instant::now();
            let dt = now - last;
            last = now;
            client.update(dt);
            // Transport: the renet_netcode client transport's update, written out.
            if let Some(reason) = netcode.disconnect_reason() {
                client.disconnect_due_to_transport();
                return Ended::Lost { reason: format!("{reason:?}"), was_up };
            }
            if let Some(reason) = client.disconnect_reason() {
                if let Ok((addr, packet)) = netcode.disconnect() {
                    let _ = socket.send_to(packet, addr);
                }
                return Ended::Lost { reason: reason.to_string(), was_up };
            }
            if netcode.is_connected() {
                client.set_connected();
            } else if netcode.is_connecting() {
                client.set_connecting();
            }
            loop {
                match socket.recv_from(&mut buf) {
                    Ok((len, addr)) => {
                        if addr != netcode.server_addr() {
                            continue;
                        }
                        if let Some(payload) = netcode.process_packet(&mut buf[..len]) {
                            client.process_packet(payload);
                        }
                    }
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                        break;
                    }
                    // An ICMP "port unreachable" from an earlier send: the server is not up (yet).
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Ended::Lost { reason: format!("UDP: {e}"), was_up },
                }
            }
            if let Some((packet, addr)) = netcode.update(dt) {
                let _ = socket.send_to(packet, addr);
            }
            if client.is_connected() && !was_up {
                was_up = true;
                bevy::log::info!(%server, "connected");
                self.status(LinkStatus::Connected);
            }
            // Messages: the view into the replica (acknowledging snapshots), the rest to the app.
            let mut ack = None;
            for channel in [ServerChannel::Reliable, ServerChannel::Snapshots] {
                while let Some(bytes) = client.receive_message(channel) {
                    let msg = match decode_server(&bytes) {
                        Ok(m) => m,
                        Err(e) => {
                            bevy::log::warn!(error = %e, "dropping a malformed message from the server");
                            continue;
                        }
                    };
                    match &msg {
                        ServerMessage::Spawn { .. } | ServerMessage::Despawn { .. } | ServerMessage::Snapshot(_) => {
                            if let Ok(mut r) = self.replica.lock()
                                && let Some(tick) = r.apply(&msg)
                            {
                                ack = Some(ack.map_or(tick, |a: u32| a.max(tick)));
                            }
                        }
                        ServerMessage::FullState { .. } => {}
                        _ => {
                            let _ = self.events.send(NetEvent::Game(msg));
                        }
                    }
                }
            }
            if let Some(tick) = ack {
                client.send_message(ClientChannel::Unreliable, encode(&ClientMessage::SnapshotAck { tick }));
            }
            while let Ok(msg) = self.game_rx.try_recv() {
                if client.is_connected() {
                    client.send_message(ClientChannel::Reliable, encode(&msg));
                }
            }
            if client.is_connected() {
                for packet in client.get_packets_to_send() {
                    match netcode.generate_payload_packet(&packet) {
                        Ok((addr, payload)) => {
                            let _ = socket.send_to(payload, addr);
                        }
                        Err(e) => return Ended::Lost { reason: format!("netcode: {e}"), was_up },
                    }
                }
            }
            std::thread::sleep(PUMP);
        }
    }
}

/// The wait before reconnect attempt `attempt` (1-based): 0.5 s, 1 s, 2 s, … up to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A room's history; retried a few times (just after joining a land, the server may not yet
/// count us as a member of its room).
fn history_with_retries(api: &Api, token: &str, room: Uuid, stop: &AtomicBool) -> Result<NetEvent, ApiError> {
    let mut wait = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        match api.history(token, room) {
            Ok(messages) => return Ok(NetEvent::History { room, messages }),
            Err(e) if tries >= 3 || stop.load(Ordering::Acquire) || matches!(e, ApiError::Unauthorized(_)) => {
                return Err(e);
            }
            Err(_) => {
                tries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
    }
}

fn run_http(
    api: &Api,
    bearer: &Mutex<Option<String>>,
    jobs: &Receiver<HttpJob>,
    events: &Sender<NetEvent>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let job = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Wait for a sign-in (jobs are only asked for once the game connected, so this is short).
        let token = loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            if let Some(t) = bearer.lock().ok().and_then(|b| b.clone()) {
                break t;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let event = match &job {
            HttpJob::Sessions => api.sessions(&token).map(NetEvent::Sessions),
            HttpJob::OnlineUsers => api.online_users(&token).map(NetEvent::Online),
            HttpJob::LandSession(land) => api.land_session(&token, *land).map(NetEvent::Session),
            HttpJob::History(room) => history_with_retries(api, &token, *room, stop),
            HttpJob::OpenPrivate(peer) => api.private_room(&token, *peer).map(NetEvent::PrivateOpened),
        };
        let event = event.unwrap_or_else(|e| {
            bevy::log::warn!(?job, error = %e, "REST call failed");
            match job {
                HttpJob::History(room) => NetEvent::HistoryFailed { room, reason: e.to_string() },
                // Presence then comes from live updates only.
                HttpJob::OnlineUsers => NetEvent::Online(Vec::new()),
                _ => NetEvent::Problem(e.to_string()),
            }
        });
        if events.send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(7), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(30));
    }

    /// Drains the link until `pred` matches an event (or fails after 20 s); returns that event.
    async fn wait_for(link: &Link, what: &str, pred: impl Fn(&NetEvent) -> bool) -> NetEvent {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            for event in link.drain() {
                if pred(&event) {
                    return event;
                }
                seen.push(event);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}; saw {seen:?}");
    }

    /// Against the real server (in-process, port 0): signs in (`--register` with an existing
    /// account is fine), connects over UDP, is welcomed and sees its own position in snapshots,
    /// chats with an ack, lists sessions and loads history over REST; when the server stops,
    /// reports the loss and retries with backoff, and reconnects once the server is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_the_world_chats_and_reconnects_when_the_server_comes_back() -> anyhow::Result<()> {
        let Some(mut app) = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await? else {
            anyhow::bail!("SQLite is always available");
        };
        let user = app.user("linker").await?;
        let link = Link::start(LinkConfig {
            server: app.url(""),
            username: user.username.clone(),
            password: user.password.clone(),
            register: true,
        })?;
        wait_for(&link, "connected", |e| matches!(e, NetEvent::Status(LinkStatus::Connected))).await;
        let welcome = wait_for(&link, "welcome", |e| matches!(e, NetEvent::Game(ServerMessage::Welcome { .. }))).await;
        let NetEvent::Game(ServerMessage::Welcome { user_id, x, y, .. }) = welcome else { unreachable!() };
        assert_eq!(user_id, user.id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while link.replica().own.is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(link.replica().own.map(|(_, at)| (at.x, at.y)), Some((x, y)), "first snapshot");

        link.send(ClientMessage::SendChat {
            room: "proximity".into(),
            content: "anyone near?".into(),
            client_msg_id: Some("t1".into()),
        });
        wait_for(
            &link,
            "chat ack",
            |e| matches!(e, NetEvent::Game(ServerMessage::ChatAck { client_msg_id: Some(c), .. }) if c == "t1"),
        )
        .await;
        link.request(HttpJob::Sessions);
        let sessions = wait_for(&link, "sessions", |e| matches!(e, NetEvent::Sessions(_))).await;
        let NetEvent::Sessions(sessions) = sessions else { unreachable!() };
        let proximity = sessions.iter().find(|s| s.kind == "proximity").expect("the proximity room is listed");
        link.request(HttpJob::History(proximity.id));
        let room = proximity.id;
        wait_for(&link, "history", |e| matches!(e, NetEvent::History { room: r, .. } if *r == room)).await;

        app.stop().await?;
        let lost = wait_for(&link, "reconnecting", |e| {
            matches!(e, NetEvent::Status(LinkStatus::Reconnecting { attempt: 1, .. }))
        })
        .await;
        assert!(matches!(lost, NetEvent::Status(LinkStatus::Reconnecting { retry_in, .. }) if retry_in == backoff(1)));
        // The server comes back on the same addresses: the link signs in again with a fresh
        // token, reconnects over UDP and is welcomed at its saved position.
        let app = app.restart_in_place().await?;
        wait_for(&link, "connected again", |e| matches!(e, NetEvent::Status(LinkStatus::Connected))).await;
        let again =
            wait_for(&link, "welcome again", |e| matches!(e, NetEvent::Game(ServerMessage::Welcome { .. }))).await;
        assert!(matches!(again, NetEvent::Game(ServerMessage::Welcome { user_id: u, .. }) if u == user.id));
        drop(link);
        drop(app);
        Ok(())
    }

    #[test]
    fn a_dead_server_reports_reconnecting_and_stops_on_drop() {
        let link = Link::start(LinkConfig {
            server: "http://127.0.0.1:1".into(),
            username: "nobody".into(),
            password: "whatever1".into(),
            register: false,
        })
        .expect("threads start");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            seen.extend(link.drain());
            if seen.iter().any(|e| matches!(e, NetEvent::Status(LinkStatus::Reconnecting { attempt: 1, .. }))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            seen.iter().any(|e| matches!(e, NetEvent::Status(LinkStatus::Reconnecting { attempt: 1, .. }))),
            "{seen:?}"
        );
        assert!(matches!(seen.first(), Some(NetEvent::Status(LinkStatus::SigningIn))), "{seen:?}");
        drop(link); // joins both threads promptly
    }
}
