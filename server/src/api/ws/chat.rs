//! The chat WebSocket, `GET /api/v1/ws/connect?token=…` (SPEC §4): the world half — connect,
//! movement, radius, status, ping — and the chat half — rooms, messages, typing, read receipts
//! (handled by [`crate::chat`]) — with `error` frames for bad input and the close codes of
//! SPEC §10 (4001 auth, 1009 too big, 4008 rate limited / slow consumer, 1001 shutdown).
//!
//! Each connection is two halves: the reader loop below, and its output ([`ConnHandle`]): frames
//! are written straight to the socket by whoever sends them while nothing is queued (see
//! [`crate::world::conn`]; the socket comes from [`crate::api::socket`]), and otherwise queued
//! for the connection's writer task, which drains the bounded queue with one write per batch.
//! The world, the chat fan-out and the reader all send through the same handle, so frames keep
//! their order; closing is requested through the connection's [`ConnControl`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use landworld_shared::limits::{self, MAX_FRAME_BYTES, close_code};
use landworld_shared::protocol::ws::{ClientFrame, ServerFrame, Status, error_code, parse_client_frame};
use landworld_shared::world::TilePos;
use uuid::Uuid;

use super::limits::{Strikes, TokenBucket};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::ApiQuery;
use crate::api::socket::{Peer, Socket};
use crate::api::state::AppState;
use crate::chat::hub::ChatConn;
use crate::chat::writer::Reply;
use crate::store::{ms_to_rfc3339, now_ms};
use crate::world::WorldCommand;
use crate::world::conn::{ConnControl, ConnHandle, Out, OutQueue, close_frame};

/// Largest frame the transport reads before giving up on the connection.
const READ_LIMIT: usize = 1024 * 1024;
/// Initial read buffer per connection (grows for big frames); small so that idle connections
/// stay cheap (client frames are commands of a few hundred bytes).
const READ_BUFFER: usize = 1024;
/// Queue items written per write at most (the writer's buffer lives only for one write).
const WRITE_BATCH: usize = 16;
/// Room for queued frames a connection keeps between flushes.
const IDLE_BATCH: usize = 4;
/// All frames: rate and burst per connection.
const FRAME_RATE: u32 = 100;
const FRAME_BURST: u32 = 200;
/// Refusals within [`STRIKE_WINDOW`] that count as sustained abuse.
const STRIKE_LIMIT: u32 = 100;
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Opens the chat WebSocket (SPEC §4). The API description explains the protocol.
#[utoipa::path(
    get,
    path = "/api/v1/ws/connect",
    tag = "websocket",
    params(("token" = String, Query, description = "An access token from `/api/v1/auth/login` (browsers cannot set headers on WebSockets). \
        An invalid or expired token still upgrades, then closes with 4001.")),
    responses(
        (status = 101, description = "Switching protocols: the connection is a WebSocket; the first frame is `connected`"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 403, description = "The browser `Origin` is neither the server's own nor in `--allowed-origins`", body = ErrorBody),
        (status = 503, description = "The database did not answer while loading the user", body = ErrorBody),
    )
)]
pub async fn connect(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<HashMap<String, String>>,
    headers: HeaderMap,
    peer: Result<ConnectInfo<Peer>, ExtensionRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !super::origin_allowed(&headers, &state.config.allowed_origins) {
        return ApiError::Forbidden("origin not allowed".into()).into_response();
    }
    // A plain GET (no upgrade headers) gets a JSON error like every other route.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return ApiError::BadRequest(rejection.body_text()).into_response(),
    };
    // The router is always served with connect info (`app.rs`); without it there is no socket
    // to write to.
    let Ok(ConnectInfo(peer)) = peer else {
        return ApiError::Unavailable("websocket served without its socket".into()).into_response();
    };
    // The transport reads frames up to READ_LIMIT so that a frame just over the protocol limit
    // is consumed whole and answered with a clean close 1009 (closing with unread bytes in the
    // socket would reset the connection before the client reads the close frame). Anything
    // bigger fails at the transport and is closed with 1009 too.
    let ws = ws.max_message_size(READ_LIMIT).max_frame_size(READ_LIMIT).read_buffer_size(READ_BUFFER);
    let claims = params.get("token").and_then(|t| state.keys.verify(t).ok());
    let user = match claims {
        Some(c) => match state.db.user_by_id(c.sub).await {
            Ok(Some(u)) => Some(u),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "loading user for websocket failed");
                return ApiError::Unavailable("database unavailable".into()).into_response();
            }
        },
        None => None,
    };
    let tracker = state.connections.clone();
    match user {
        None => ws.on_upgrade(|socket| close_with(socket, close_code::AUTH, "invalid or expired token")),
        Some(user) => ws.on_upgrade(move |socket| {
            tracker.track_future(run(state, socket, peer.socket, user.id, Arc::from(user.username.as_str())))
        }),
    }
}

async fn close_with(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    let _ = socket.close().await;
}

/// What the reader needs about its connection.
struct Ctx {
    state: AppState,
    user_id: Uuid,
    username: Arc<str>,
    conn: ConnHandle,
    chat: Arc<ChatConn>,
    messages: TokenBucket,
    control: Arc<ConnControl>,
    frames: TokenBucket,
    moves: TokenBucket,
    strikes: Strikes,
}

/// Gives the socket back when the connection ends, however it ends: the socket and the
/// connection's output refer to each other until then.
struct Release {
    socket: Arc<Socket>,
    control: Arc<ConnControl>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.control.release_socket();
        self.socket.take_output_back();
    }
}

async fn run(state: AppState, mut socket: WebSocket, tcp: Arc<Socket>, user_id: Uuid, username: Arc<str>) {
    let conn_id = Uuid::new_v4();
    let (conn, rx, control) = ConnHandle::new(conn_id);
    conn.attach(tcp.clone());
    tcp.hand_output_to(conn.clone());
    let _release = Release { socket: tcp.clone(), control: control.clone() };
    // Boxed for the same reason as the frame handler below: a database future is large and
    // would otherwise size every connection's task.
    let saved = match Box::pin(state.db.load_position(user_id)).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, %user_id, "loading saved position failed; spawning at a spawn point");
            None
        }
    };
    // Chat first, so that land-room messages reach this connection as soon as the world puts
    // the avatar on a land.
    let chat = state.chat.register_conn(user_id, username.clone(), conn.clone());
    let connect = WorldCommand::Connect { user_id, username: username.clone(), conn: conn.clone(), saved };
    if state.world.commands.send(connect).await.is_err() {
        state.chat.unregister_conn(user_id, conn_id);
        close_with(socket, close_code::GOING_AWAY, "server shutting down").await;
        return;
    }
    tracing::debug!(%user_id, %conn_id, "websocket connected");
    metrics::counter!("landworld_ws_connections_total").increment(1);
    let writer = tokio::spawn(write_loop(tcp, rx, control.clone()));
    let mut ctx = Ctx {
        state: state.clone(),
        user_id,
        username,
        conn,
        chat,
        messages: TokenBucket::new(limits::MESSAGE_RATE_PER_SEC, limits::MESSAGE_RATE_BURST),
        control: control.clone(),
        frames: TokenBucket::new(FRAME_RATE, FRAME_BURST),
        moves: TokenBucket::new(limits::MOVE_RATE_PER_SEC, limits::MOVE_RATE_PER_SEC),
        strikes: Strikes::new(STRIKE_WINDOW, STRIKE_LIMIT),
    };
    let mut peer_gone = false;
    let closed = control.closed();
    let shutting_down = state.shutdown.cancelled();
    tokio::pin!(closed, shutting_down);
    loop {
        let msg = tokio::select! {
            biased;
            () = &mut closed => break,
            () = &mut shutting_down => break,
            msg = socket.recv() => msg,
        };
        peer_gone = matches!(msg, None | Some(Ok(Message::Close(_))) | Some(Err(_)));
        match msg {
            Some(Ok(Message::Text(text))) if text.len() > MAX_FRAME_BYTES => {
                control.close(close_code::TOO_BIG);
                break;
            }
            Some(Ok(Message::Binary(data))) if data.len() > MAX_FRAME_BYTES => {
                control.close(close_code::TOO_BIG);
                break;
            }
            // Boxed: the handler's state machine (several KB) is only allocated while a frame
            // is being handled, instead of inside every idle connection's reader future.
            Some(Ok(Message::Text(text))) => Box::pin(handle_text(&mut ctx, text.as_str())).await,
            Some(Ok(Message::Binary(_))) => {
                ctx.conn.send_frame(&ServerFrame::error(
                    error_code::INVALID_FRAME,
                    "binary frames are not supported; send JSON text",
                    None,
                ));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(e)) => {
                if is_too_big(&e) {
                    control.close(close_code::TOO_BIG);
                } else {
                    tracing::debug!(error = %e, %conn_id, "websocket read error");
                }
                break;
            }
        }
    }
    // Shutdown closes with 1001; otherwise a normal closure unless someone already asked for a
    // specific code (the first code asked for wins).
    control.close(if state.shutdown.is_cancelled() { close_code::GOING_AWAY } else { 1000 });
    if !peer_gone {
        // Closing from our side: keep reading (and discarding) until the client answers the
        // close frame, so unread input does not turn the close into a TCP reset that would hide
        // the close code from the client.
        let drain = async {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_GRACE * 2, drain).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    state.chat.unregister_conn(user_id, conn_id);
    let _ = state.world.commands.send(WorldCommand::Disconnect { user_id, conn_id }).await;
    tracing::debug!(%user_id, %conn_id, "websocket closed");
}

fn is_too_big(err: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(t) = e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            return matches!(t, tokio_tungstenite::tungstenite::Error::Capacity(_));
        }
        source = e.source();
    }
    let text = err.to_string();
    text.contains("too long") || text.contains("Space limit exceeded")
}

/// Longest a batch of frames may take to reach the socket before the client counts as stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write in progress may still take once the connection is asked to close.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

async fn write_loop(socket: Arc<Socket>, mut rx: OutQueue, control: Arc<ConnControl>) {
    // The close future is made once: building one per wake-up registers a waiter each time,
    // which showed up in the fan-out's profile. Shutdown arrives through it too: the reader
    // asks for 1001 when the server shuts down.
    let closed = control.closed();
    tokio::pin!(closed);
    let mut batch: Vec<Out> = Vec::new();
    let code = loop {
        if control.is_closed() {
            break control.code();
        }
        let n = tokio::select! {
            biased;
            () = &mut closed => break control.code(),
            n = rx.recv_many(&mut batch, WRITE_BATCH) => n,
        };
        if n == 0 {
            break 1000;
        }
        let mut bytes = Vec::new();
        for item in batch.drain(..) {
            item.encode_into(&mut bytes);
        }
        // A client that stops reading blocks the write: when its queue overflows (close
        // requested) or the write times out, the socket is dropped without a close handshake,
        // which could not reach it anyway.
        let ok = {
            let mut write = std::pin::pin!(socket.write_all(&bytes));
            tokio::select! {
                r = tokio::time::timeout(WRITE_TIMEOUT, write.as_mut()) => matches!(r, Ok(Ok(()))),
                () = &mut closed => {
                    // Closing: a reading client finishes this write at once and then gets the
                    // close frame; a stalled one does not.
                    matches!(tokio::time::timeout(CLOSE_GRACE, write.as_mut()).await, Ok(Ok(())))
                }
            }
        };
        if !ok {
            rx.finish();
            control.close(close_code::RATE_LIMITED);
            return;
        }
        rx.written();
        // An idle connection keeps no room for a burst it had once.
        batch.shrink_to(IDLE_BATCH);
    };
    // Frames already queued still go out before a normal or shutdown close.
    let mut bytes = Vec::new();
    if code == 1000 || code == close_code::GOING_AWAY {
        while let Ok(item) = rx.try_recv() {
            item.encode_into(&mut bytes);
        }
    }
    // Nothing is written after the close frame: later sends are dropped from here on. When
    // the client closed first, the protocol layer's answer already was the close frame.
    if !rx.finish() {
        let reason = match code {
            close_code::GOING_AWAY => "server shutting down",
            close_code::TOO_BIG => "frame too big",
            close_code::RATE_LIMITED => "rate limited or too slow; reconnect later",
            _ => "",
        };
        bytes.extend_from_slice(&close_frame(code, reason));
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&bytes)).await;
}

fn refuse(ctx: &mut Ctx, message: &str, reference: &str) {
    ctx.conn.send_frame(&ServerFrame::error(error_code::RATE_LIMITED, message, Some(reference.to_string())));
    if ctx.strikes.strike(Instant::now()) {
        tracing::info!(user_id = %ctx.user_id, "closing connection for sustained rate-limit abuse");
        metrics::counter!("landworld_ws_rate_limit_closes_total").increment(1);
        ctx.control.close(close_code::RATE_LIMITED);
    }
}

async fn handle_text(ctx: &mut Ctx, text: &str) {
    metrics::counter!("landworld_ws_frames_in_total").increment(1);
    let now = Instant::now();
    if !ctx.frames.try_take(now) {
        refuse(ctx, "too many frames; slow down", "frame");
        return;
    }
    let frame = match parse_client_frame(text) {
        Ok(f) => f,
        Err(err) => {
            ctx.conn.send_frame(&err);
            return;
        }
    };
    let kind = frame.kind();
    let command = match frame {
        ClientFrame::Ping => {
            ctx.conn.send_frame(&ServerFrame::Pong { server_time: ms_to_rfc3339(now_ms()) });
            return;
        }
        ClientFrame::UpdateLocation { x, y } => {
            if !ctx.moves.try_take(now) {
                refuse(ctx, "too many moves; slow down", kind);
                return;
            }
            let (Ok(x), Ok(y)) = (i32::try_from(x), i32::try_from(y)) else {
                ctx.conn.send_frame(&ServerFrame::error(
                    error_code::INVALID_POSITION,
                    "position is outside the map",
                    Some(kind.into()),
                ));
                return;
            };
            WorldCommand::Move { user_id: ctx.user_id, conn_id: ctx.conn.conn_id, to: TilePos::new(x, y) }
        }
        ClientFrame::SetRadius { radius } => match limits::validate_radius(radius) {
            Ok(radius) => WorldCommand::SetRadius { user_id: ctx.user_id, radius },
            Err(msg) => {
                ctx.conn.send_frame(&ServerFrame::error(error_code::INVALID_RADIUS, msg, Some(kind.into())));
                return;
            }
        },
        ClientFrame::SetStatus { status } => {
            if status == Status::Offline {
                ctx.conn.send_frame(&ServerFrame::error(
                    error_code::INVALID_STATUS,
                    "status must be online, away or busy (offline follows disconnecting)",
                    Some(kind.into()),
                ));
                return;
            }
            WorldCommand::SetStatus { user_id: ctx.user_id, status }
        }
        ClientFrame::JoinRoom { room_id, since_seq } => {
            if let Err(e) = ctx.state.chat.join(&ctx.chat, &room_id, since_seq).await {
                ctx.conn.send_frame(&e.frame(Some(kind.into())));
            }
            return;
        }
        ClientFrame::LeaveRoom { room_id } => {
            if let Err(e) = ctx.state.chat.leave(&ctx.chat, &room_id) {
                ctx.conn.send_frame(&e.frame(Some(kind.into())));
            }
            return;
        }
        ClientFrame::SendMessage { room_id, content, client_msg_id } => {
            let reference = client_msg_id.clone().unwrap_or_else(|| kind.to_string());
            if !ctx.messages.try_take(now) {
                refuse(ctx, "too many messages; slow down", &reference);
                return;
            }
            let sent = ctx
                .state
                .chat
                .send(
                    ctx.user_id,
                    ctx.username.clone(),
                    &room_id,
                    content,
                    client_msg_id,
                    Reply::Conn(ctx.conn.clone()),
                )
                .await;
            if let Err(e) = sent {
                ctx.conn.send_frame(&e.frame(Some(reference)));
            }
            return;
        }
        ClientFrame::Typing { room_id, is_typing } => {
            if let Err(e) = ctx.state.chat.typing(ctx.user_id, &room_id, is_typing).await {
                ctx.conn.send_frame(&e.frame(Some(kind.into())));
            }
            return;
        }
        ClientFrame::MarkRead { room_id, seq } => {
            if let Err(e) = ctx.state.chat.mark_read(ctx.user_id, &room_id, seq).await {
                ctx.conn.send_frame(&e.frame(Some(kind.into())));
            }
            return;
        }
    };
    if ctx.state.world.commands.send(command).await.is_err() {
        ctx.conn.send_frame(&ServerFrame::error(
            error_code::UNAVAILABLE,
            "the world is shutting down",
            Some(kind.into()),
        ));
    }
}
