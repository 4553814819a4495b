//! Game clients over UDP (SPEC §7): a renet server with netcode's **secure** transport inside the
//! world's Bevy app (a thin plugin of ours over `renet` + `renet_netcode`; `bevy_renet` would
//! add its own schedules and Bevy's default features for what is two systems here).
//!
//! - [`tokens`]: the netcode private key and the connect tokens the REST API issues.
//! - [`GameServer`] (this file): the transport and the connected clients. Each tick,
//!   `receive_net` (first, [`TickSet::ReceiveNet`]) reads the socket, turns connections and
//!   disconnections into [`gateway`] events and client messages into world commands — a
//!   game client's move is the same [`WorldCommand::Move`] a WebSocket sends, validated by the
//!   same rule — and `send_net` (last, [`TickSet::SendNet`]) forwards what the world and chat
//!   queued for each client ([`translate`]), replicates its view ([`view`]) and flushes the
//!   socket.
//! - [`gateway`]: the async half (saved position, chat registration and sends), one task per
//!   client, so the tick never waits on the database or chat.
//!
//! A game client is an ordinary connection to the world and chat: it holds a
//! [`ConnHandle`] like a WebSocket does, so presence, land joins, chat messages, move results
//! and errors reach it through the paths that already exist. A message that does not decode
//! disconnects its sender with a logged reason; netcode drops packets it cannot authenticate.

pub mod gateway;
pub mod tokens;
mod translate;
pub mod view;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use landworld_shared::limits::{MESSAGE_RATE_BURST, MESSAGE_RATE_PER_SEC, MOVE_RATE_PER_SEC};
use landworld_shared::protocol::game::{
    ClientChannel, ClientMessage, PROTOCOL_ID, ServerChannel, connection_config, decode_client, decode_user_data,
    encode,
};
use landworld_shared::protocol::ws::{ServerFrame, Status, error_code};
use landworld_shared::world::TilePos;
use renet::{ClientId, RenetServer, ServerEvent};
use renet_netcode::{NetcodeServerTransport, ServerAuthentication, ServerConfig};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::world::avatar::{Avatar, Proximity, UsersIndex};
use crate::world::commands::CommandInbox;
use crate::world::conn::{ConnControl, ConnHandle, OutQueue};
use crate::world::{TickCount, TickSet, WorldCommand};
use gateway::GatewayMsg;
use view::{Scratch, View};

/// netcode's limit on clients per server.
pub const MAX_GAME_CLIENTS: usize = 1024;
/// Messages read per client and channel per tick; the rest wait for the next tick (renet's
/// channel memory limit bounds what can wait).
const MAX_MESSAGES_PER_TICK: usize = 64;
/// Longest room reference accepted (`proximity` or a UUID are far shorter); longer ones are
/// refused here rather than echoed back in a chat error.
const MAX_ROOM_REF: usize = 64;

/// What the world thread needs to run the game server.
pub struct GameParts {
    /// Bound already (so the address is known before the world starts); made non-blocking here.
    pub socket: UdpSocket,
    pub private_key: [u8; 32],
    /// The address in the connect tokens.
    pub public_addr: SocketAddr,
    pub gateway: mpsc::UnboundedSender<GatewayMsg>,
}

/// A token bucket (moves and chat messages per client, as on the WebSocket).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self { tokens: f64::from(burst), rate: f64::from(rate), burst: f64::from(burst), at: Instant::now() }
    }

    fn try_take(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connected game client.
struct GameClient {
    user_id: Uuid,
    conn: ConnHandle,
    rx: OutQueue,
    control: Arc<ConnControl>,
    /// The world greeted the connection (its avatar exists): replication may start.
    welcomed: bool,
    moves: Bucket,
    chats: Bucket,
    view: View,
}

/// The renet server, its netcode transport and the connected clients.
#[derive(Resource)]
pub struct GameServer {
    server: RenetServer,
    transport: NetcodeServerTransport,
    clients: HashMap<ClientId, GameClient>,
    last_update: Instant,
    gateway: mpsc::UnboundedSender<GatewayMsg>,
    scratch: Scratch,
}

impl GameServer {
    /// Connected game clients.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
}

/// Adds the game server to the world app.
pub fn install(app: &mut App, parts: GameParts) -> std::io::Result<()> {
    let config = ServerConfig {
        current_time: tokens::unix_now(),
        max_clients: MAX_GAME_CLIENTS,
        protocol_id: PROTOCOL_ID,
        public_addresses: vec![parts.public_addr],
        authentication: ServerAuthentication::Secure { private_key: parts.private_key },
    };
    let transport = NetcodeServerTransport::new(config, parts.socket)?;
    app.insert_resource(GameServer {
        server: RenetServer::new(connection_config()),
        transport,
        clients: HashMap::new(),
        last_update: Instant::now(),
        gateway: parts.gateway,
        scratch: Scratch::default(),
    });
    app.add_systems(Update, receive_net.in_set(TickSet::ReceiveNet));
    app.add_systems(Update, send_net.in_set(TickSet::SendNet));
    Ok(())
}

/// Shutdown: tells every game client at once (netcode disconnect packets).
pub fn shutdown(world: &mut World) {
    if let Some(mut game) = world.get_resource_mut::<GameServer>() {
        let game = &mut *game;
        game.transport.disconnect_all(&mut game.server);
    }
}

fn receive_net(mut game: ResMut<GameServer>, mut inbox: ResMut<CommandInbox>) {
    let GameServer { server, transport, clients, last_update, gateway, .. } = &mut *game;
    let now = Instant::now();
    let dt = now.saturating_duration_since(*last_update);
    *last_update = now;
    server.update(dt);
    if let Err(e) = transport.update(dt, server) {
        tracing::warn!(error = %e, "game transport error");
    }
    while let Some(event) = server.get_event() {
        match event {
            ServerEvent::ClientConnected { client_id } => {
                let who = transport
                    .user_data(client_id)
                    .ok_or_else(|| "no user data".to_string())
                    .and_then(|data| decode_user_data(&data).map_err(|e| e.to_string()));
                let (user_id, username) = match who {
                    Ok(who) => who,
                    Err(reason) => {
                        tracing::warn!(client_id, %reason, "game client with unusable token data; disconnecting");
                        server.disconnect(client_id);
                        continue;
                    }
                };
                let (conn, rx, control) = ConnHandle::new(Uuid::new_v4());
                let msg =
                    GatewayMsg::Connected { client_id, user_id, username: Arc::from(username), conn: conn.clone() };
                if gateway.send(msg).is_err() {
                    // The server is shutting down.
                    server.disconnect(client_id);
                    continue;
                }
                tracing::info!(client_id, %user_id, addr = ?transport.client_addr(client_id), "game client connected");
                metrics::gauge!("landworld_game_clients").increment(1.0);
                clients.insert(
                    client_id,
                    GameClient {
                        user_id,
                        conn,
                        rx,
                        control,
                        welcomed: false,
                        moves: Bucket::new(MOVE_RATE_PER_SEC, MOVE_RATE_PER_SEC),
                        chats: Bucket::new(MESSAGE_RATE_PER_SEC, MESSAGE_RATE_BURST),
                        view: View::default(),
                    },
                );
            }
            ServerEvent::ClientDisconnected { client_id, reason } => {
                if let Some(client) = clients.remove(&client_id) {
                    tracing::info!(client_id, user_id = %client.user_id, %reason, "game client disconnected");
                    metrics::gauge!("landworld_game_clients").decrement(1.0);
                    let _ = gateway.send(GatewayMsg::Disconnected { client_id });
                }
            }
        }
    }
    for (&client_id, client) in clients.iter_mut() {
        for channel in [ClientChannel::Reliable, ClientChannel::Unreliable] {
            for _ in 0..MAX_MESSAGES_PER_TICK {
                let Some(bytes) = server.receive_message(client_id, channel) else { break };
                match decode_client(&bytes) {
                    Ok(msg) => handle(client_id, client, msg, now, &mut inbox, gateway),
                    Err(e) => {
                        tracing::warn!(
                            client_id,
                            user_id = %client.user_id,
                            error = %e,
                            len = bytes.len(),
                            "disconnecting a game client that sent a malformed message"
                        );
                        metrics::counter!("landworld_game_malformed_total").increment(1);
                        server.disconnect(client_id);
                        break;
                    }
                }
            }
            if !server.is_connected(client_id) {
                break;
            }
        }
    }
}

fn refuse(client: &GameClient, code: &str, message: &str, reference: &str) {
    client.conn.send_frame(&ServerFrame::error(code, message, Some(reference.to_string())));
}

/// Applies one message from a game client: moves and status as world commands (the same ones
/// the WebSocket sends), chat through the gateway.
fn handle(
    client_id: ClientId,
    client: &mut GameClient,
    msg: ClientMessage,
    now: Instant,
    inbox: &mut CommandInbox,
    gateway: &mpsc::UnboundedSender<GatewayMsg>,
) {
    let (user_id, conn_id) = (client.user_id, client.conn.conn_id);
    let room_ref = match &msg {
        ClientMessage::SendChat { room, .. } => Some((room, "send_chat")),
        ClientMessage::JoinRoom { room, .. } => Some((room, "join_room")),
        ClientMessage::LeaveRoom { room } => Some((room, "leave_room")),
        _ => None,
    };
    if let Some((room, reference)) = room_ref
        && room.len() > MAX_ROOM_REF
    {
        let message = "room must be \"proximity\", a session id or a land id";
        refuse(client, error_code::NOT_FOUND, message, reference);
        return;
    }
    match msg {
        ClientMessage::Move { x, y } => {
            if client.moves.try_take(now) {
                inbox.push(WorldCommand::Move { user_id, conn_id, to: TilePos::new(x, y) });
            } else {
                refuse(client, error_code::RATE_LIMITED, "too many moves; slow down", "move");
            }
        }
        ClientMessage::SnapshotAck { tick } => client.view.ack(tick),
        ClientMessage::SetStatus { status } => {
            if status == Status::Offline {
                refuse(
                    client,
                    error_code::INVALID_STATUS,
                    "status must be online, away or busy (offline follows disconnecting)",
                    "set_status",
                );
            } else {
                inbox.push(WorldCommand::SetStatus { user_id, status });
            }
        }
        ClientMessage::SetReplication { mode } => client.view.mode = mode,
        ClientMessage::SendChat { room, content, client_msg_id } => {
            if client.chats.try_take(now) {
                let _ = gateway.send(GatewayMsg::Chat { client_id, room, content, client_msg_id });
            } else {
                let reference = client_msg_id.unwrap_or_else(|| "send_chat".into());
                refuse(client, error_code::RATE_LIMITED, "too many messages; slow down", &reference);
            }
        }
        ClientMessage::JoinRoom { room, since_seq } => {
            if client.chats.try_take(now) {
                let _ = gateway.send(GatewayMsg::Join { client_id, room, since_seq });
            } else {
                refuse(client, error_code::RATE_LIMITED, "too many requests; slow down", "join_room");
            }
        }
        ClientMessage::LeaveRoom { room } => {
            let _ = gateway.send(GatewayMsg::Leave { client_id, room });
        }
    }
}

fn send_net(
    mut game: ResMut<GameServer>,
    users: Res<UsersIndex>,
    avatars: Query<&Avatar>,
    prox: Res<Proximity>,
    ticks: Res<TickCount>,
) {
    let GameServer { server, transport, clients, scratch, .. } = &mut *game;
    for (&client_id, client) in clients.iter_mut() {
        // What the world and chat queued, in order (the welcome comes first of all).
        while let Ok(item) = client.rx.try_recv() {
            for frame in item.frames() {
                let Some(msg) = translate::translate(frame.as_str()) else { continue };
                if matches!(msg, landworld_shared::protocol::game::ServerMessage::Welcome { .. }) {
                    client.welcomed = true;
                }
                server.send_message(client_id, ServerChannel::Reliable, encode(&msg));
            }
        }
        if client.control.is_closed() {
            // Too slow to keep up with its queue (or the server is closing it).
            tracing::info!(client_id, user_id = %client.user_id, code = client.control.code(), "closing game client");
            server.disconnect(client_id);
            continue;
        }
        if !client.welcomed {
            continue;
        }
        let Some(&own) = users.0.get(&client.user_id) else { continue };
        let Ok(me) = avatars.get(own) else { continue };
        let (reliable, unreliable) = client.view.update(own, me, ticks.0, &avatars, &prox, scratch);
        for msg in reliable {
            server.send_message(client_id, ServerChannel::Reliable, encode(&msg));
        }
        if let Some(msg) = unreliable {
            server.send_message(client_id, ServerChannel::Snapshots, encode(&msg));
        }
    }
    transport.send_packets(server);
}
