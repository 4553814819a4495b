//! The chat WebSocket, `GET /api/v1/ws/connect?token=…` (SPEC §4): the world half — connect,
//! movement, radius, status, ping — and the chat half — rooms, messages, typing, read receipts
//! (handled by [`crate::chat`]) — with `error` frames for bad input and the close codes of
//! SPEC §10 (4001 auth, 1009 too big, 4008 rate limited / slow consumer, 1001 shutdown).
//!
//! Each connection is two halves: the reader loop below, which reads client frames straight off
//! the socket ([`super::frames`]; the socket comes from [`crate::api::socket`]), and its output
//! ([`ConnHandle`]): frames are written straight to the socket by whoever sends them while
//! nothing is queued (see [`crate::world::conn`]), and otherwise queued for the connection's
//! writer task, which drains the bounded queue with one write per batch. The world, the chat
//! fan-out and the reader (pongs, the answer to a close) all send through the same handle, so
//! frames keep their order; closing is requested through the connection's [`ConnControl`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::ExtensionRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use landworld_shared::limits::{self, MAX_FRAME_BYTES, close_code};
use landworld_shared::protocol::ws::{ClientFrame, ServerFrame, Status, error_code, parse_client_frame};
use landworld_shared::world::TilePos;
use uuid::Uuid;

use super::frames::{FrameReader, Incoming, Upgrade, close_reply, pong};
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

/// Bytes taken from the socket per read (on the stack, only while reading).
const READ_CHUNK: usize = 4096;
/// Queue items written per write at most (the writer's buffer lives only for one write).
const WRITE_BATCH: usize = 16;
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
    upgrade: Result<Upgrade, ApiError>,
) -> Response {
    if !super::origin_allowed(&headers, &state.config.allowed_origins) {
        return ApiError::Forbidden("origin not allowed".into()).into_response();
    }
    // A plain GET (no upgrade headers) gets a JSON error like every other route.
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // The router is always served with connect info (`app.rs`); without it there is no socket
    // to read from and write to.
    let Ok(ConnectInfo(peer)) = peer else {
        return ApiError::Unavailable("websocket served without its socket".into()).into_response();
    };
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
    let (response, on_upgrade) = upgrade.accept();
    let tracker = state.connections.clone();
    let tcp = peer.socket;
    tokio::spawn(tracker.track_future(async move {
        // Completes once hyper wrote the 101 and let go of the connection: then the socket is
        // ours, plus whatever hyper had already read past the request (a client may send its
        // first frames right behind the handshake).
        let Ok(upgraded) = on_upgrade.await else { return };
        let early = match take_early(upgraded) {
            Ok(early) => early,
            Err(e) => {
                tracing::debug!(error = %e, "websocket failed right after the upgrade");
                return;
            }
        };
        match user {
            None => close_with(&tcp, early, close_code::AUTH, "invalid or expired token").await,
            Some(user) => run(state, tcp, early, user.id, Arc::from(user.username.as_str())).await,
        }
    }));
    response
}

/// What hyper's upgraded connection holds before the socket: bytes it read past the request
/// (the client's first frames, when they came right behind the handshake). Read without
/// waiting until the upgraded connection would wait for the socket; from then on the socket is
/// read directly, and hyper's wrapper is dropped.
fn take_early(upgraded: hyper::upgrade::Upgraded) -> std::io::Result<Bytes> {
    use tokio::io::AsyncRead;
    let mut io = TokioIo::new(upgraded);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut early = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let mut buf = tokio::io::ReadBuf::new(&mut chunk);
        match std::pin::Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
            std::task::Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            std::task::Poll::Ready(Ok(())) => early.extend_from_slice(buf.filled()),
            std::task::Poll::Ready(Err(e)) => return Err(e),
            std::task::Poll::Pending => break,
        }
    }
    Ok(early.into())
}

/// Closes a connection that never became a chat connection: the close frame, then the client's
/// answer (briefly), so that the close code reaches it.
async fn close_with(tcp: &Socket, early: Bytes, code: u16, reason: &'static str) {
    if tokio::time::timeout(WRITE_TIMEOUT, tcp.write_all(&close_frame(code, reason))).await.is_ok() {
        let mut frames = FrameReader::new(MAX_FRAME_BYTES);
        frames.feed(&early);
        let _ = tokio::time::timeout(CLOSE_GRACE * 2, drain_until_close(tcp, &mut frames)).await;
    }
}

/// Reads and discards client input until its close frame, the end of the stream or broken
/// framing: a connection we are closing must not have unread input when the socket is dropped
/// (that turns the close into a TCP reset, which can hide the close frame from the client).
async fn drain_until_close(tcp: &Socket, frames: &mut FrameReader) {
    loop {
        loop {
            match frames.next_frame() {
                Ok(Some(Incoming::Close(_))) => return,
                Ok(Some(_)) | Err(super::frames::Violation::TooBig) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if !read_more(tcp, frames).await {
            return;
        }
    }
}

/// Waits until the socket is readable and reads what is there into `frames`; false at the end
/// of the stream or when the socket failed.
async fn read_more(tcp: &Socket, frames: &mut FrameReader) -> bool {
    if let Err(e) = tcp.readable().await {
        tracing::debug!(error = %e, "websocket read error");
        return false;
    }
    match read_into(tcp, frames) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Err(e) => {
            tracing::debug!(error = %e, "websocket read error");
            false
        }
    }
}

/// One non-blocking read from the socket into the frame reader. A plain function, so the read
/// chunk lives on the stack only while reading, never in the connection's future.
fn read_into(tcp: &Socket, frames: &mut FrameReader) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = tcp.try_read(&mut chunk)?;
    frames.feed(&chunk[..n]);
    Ok(n)
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

/// Lets go of the socket when the connection ends, however it ends (the output, shared with
/// the world and the chat hub, would otherwise keep it open).
struct Release(Arc<ConnControl>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release_socket();
    }
}

async fn run(state: AppState, tcp: Arc<Socket>, early: Bytes, user_id: Uuid, username: Arc<str>) {
    let conn_id = Uuid::new_v4();
    let (conn, rx, control) = ConnHandle::new(conn_id);
    conn.attach(tcp.clone());
    let _release = Release(control.clone());
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
        control.release_socket();
        close_with(&tcp, early, close_code::GOING_AWAY, "server shutting down").await;
        return;
    }
    tracing::debug!(%user_id, %conn_id, "websocket connected");
    metrics::counter!("landworld_ws_connections_total").increment(1);
    let writer = tokio::spawn(write_loop(tcp.clone(), rx, control.clone()));
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
    let mut frames = FrameReader::new(MAX_FRAME_BYTES);
    frames.feed(&early);
    drop(early);
    let peer_gone = read_loop(&mut ctx, &tcp, &mut frames).await;
    // Shutdown closes with 1001; otherwise a normal closure unless someone already asked for a
    // specific code (the first code asked for wins).
    control.close(if state.shutdown.is_cancelled() { close_code::GOING_AWAY } else { 1000 });
    if !peer_gone {
        // Closing from our side: keep reading (and discarding) until the client answers the
        // close frame, so unread input does not turn the close into a TCP reset that would hide
        // the close code from the client.
        let _ = tokio::time::timeout(CLOSE_GRACE * 2, drain_until_close(&tcp, &mut frames)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    state.chat.unregister_conn(user_id, conn_id);
    let _ = state.world.commands.send(WorldCommand::Disconnect { user_id, conn_id }).await;
    tracing::debug!(%user_id, %conn_id, "websocket closed");
}

/// Reads and handles client frames until the connection ends; whether the client is gone (it
/// closed, or the stream ended), as opposed to the server closing.
async fn read_loop(ctx: &mut Ctx, tcp: &Socket, frames: &mut FrameReader) -> bool {
    let control = ctx.control.clone();
    let closed = control.closed();
    let shutdown = ctx.state.shutdown.clone();
    let shutting_down = shutdown.cancelled();
    tokio::pin!(closed, shutting_down);
    loop {
        // Everything complete in the buffer first, then wait for more.
        let next = frames.next_frame();
        // Every data frame and ping counts against the connection's frame rate (a flood of
        // pings or binary frames costs the server as much as one of commands).
        if matches!(next, Ok(Some(Incoming::Text(_) | Incoming::Binary(_) | Incoming::Ping(_)))) {
            metrics::counter!("landworld_ws_frames_in_total").increment(1);
            if !ctx.frames.try_take(Instant::now()) {
                refuse(ctx, "too many frames; slow down", "frame");
                if control.is_closed() {
                    return false;
                }
                continue;
            }
        }
        match next {
            // Boxed: the handler's state machine (several KB) is only allocated while a frame
            // is being handled, instead of inside every idle connection's future.
            Ok(Some(Incoming::Text(text))) => {
                Box::pin(handle_text(ctx, &text)).await;
                continue;
            }
            Ok(Some(Incoming::Binary(_))) => {
                ctx.conn.send_frame_now(&ServerFrame::error(
                    error_code::INVALID_FRAME,
                    "binary frames are not supported; send JSON text",
                    None,
                ));
                continue;
            }
            Ok(Some(Incoming::Ping(payload))) => {
                ctx.conn.send_raw(pong(&payload));
                continue;
            }
            Ok(Some(Incoming::Close(code))) => {
                // The answer is the last frame on the wire (the writer sends no second one).
                ctx.conn.send_raw(close_reply(code));
                return true;
            }
            Ok(None) => {}
            Err(violation) => {
                tracing::debug!(conn_id = %ctx.conn.conn_id, why = violation.reason(), "closing on bad client input");
                control.close(violation.close_code());
                return false;
            }
        }
        if control.is_closed() {
            return false;
        }
        let more = tokio::select! {
            biased;
            () = &mut closed => return false,
            () = &mut shutting_down => return false,
            more = read_more(tcp, frames) => more,
        };
        if !more {
            return true;
        }
    }
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
        tokio::select! {
            biased;
            () = &mut closed => break control.code(),
            _ = rx.recv_many(&mut batch, WRITE_BATCH) => {}
        }
        let mut bytes = Vec::new();
        for item in batch.drain(..) {
            item.encode_into(&mut bytes);
        }
        // Boxed: the write's state (two timers) exists only while a write is under way, not in
        // every idle connection's writer.
        if !Box::pin(write_batch(&socket, &bytes, closed.as_mut())).await {
            rx.finish();
            control.close(close_code::RATE_LIMITED);
            return;
        }
        rx.written();
        // An idle connection's writer keeps no room for a burst it had once.
        batch.shrink_to(0);
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
            1002 => "protocol error",
            1007 => "text frame is not valid UTF-8",
            close_code::RATE_LIMITED => "rate limited or too slow; reconnect later",
            _ => "",
        };
        bytes.extend_from_slice(&close_frame(code, reason));
    }
    let _ = Box::pin(tokio::time::timeout(WRITE_TIMEOUT, socket.write_all(&bytes))).await;
}

/// Writes one batch. A client that stops reading blocks the write: when its queue overflows
/// (close requested) or the write times out, this fails and the socket is dropped without a
/// close handshake, which could not reach it anyway.
async fn write_batch(
    socket: &Socket,
    bytes: &[u8],
    closed: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> bool {
    let mut write = std::pin::pin!(socket.write_all(bytes));
    tokio::select! {
        r = tokio::time::timeout(WRITE_TIMEOUT, write.as_mut()) => matches!(r, Ok(Ok(()))),
        () = closed => {
            // Closing: a reading client finishes this write at once and then gets the close
            // frame; a stalled one does not.
            matches!(tokio::time::timeout(CLOSE_GRACE, write.as_mut()).await, Ok(Ok(())))
        }
    }
}

fn refuse(ctx: &mut Ctx, message: &str, reference: &str) {
    ctx.conn.send_frame_now(&ServerFrame::error(error_code::RATE_LIMITED, message, Some(reference.to_string())));
    if ctx.strikes.strike(Instant::now()) {
        tracing::info!(user_id = %ctx.user_id, "closing connection for sustained rate-limit abuse");
        metrics::counter!("landworld_ws_rate_limit_closes_total").increment(1);
        ctx.control.close(close_code::RATE_LIMITED);
    }
}

async fn handle_text(ctx: &mut Ctx, text: &str) {
    let now = Instant::now();
    let frame = match parse_client_frame(text) {
        Ok(f) => f,
        Err(err) => {
            ctx.conn.send_frame_now(&err);
            return;
        }
    };
    let kind = frame.kind();
    let command = match frame {
        ClientFrame::Ping => {
            ctx.conn.send_frame_now(&ServerFrame::Pong { server_time: ms_to_rfc3339(now_ms()) });
            return;
        }
        ClientFrame::UpdateLocation { x, y } => {
            if !ctx.moves.try_take(now) {
                refuse(ctx, "too many moves; slow down", kind);
                return;
            }
            let (Ok(x), Ok(y)) = (i32::try_from(x), i32::try_from(y)) else {
                ctx.conn.send_frame_now(&ServerFrame::error(
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
                ctx.conn.send_frame_now(&ServerFrame::error(error_code::INVALID_RADIUS, msg, Some(kind.into())));
                return;
            }
        },
        ClientFrame::SetStatus { status } => {
            if status == Status::Offline {
                ctx.conn.send_frame_now(&ServerFrame::error(
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
                ctx.conn.send_frame_now(&e.frame(Some(kind.into())));
            }
            return;
        }
        ClientFrame::LeaveRoom { room_id } => {
            if let Err(e) = ctx.state.chat.leave(&ctx.chat, &room_id) {
                ctx.conn.send_frame_now(&e.frame(Some(kind.into())));
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
                ctx.conn.send_frame_now(&e.frame(Some(reference)));
            }
            return;
        }
        ClientFrame::Typing { room_id, is_typing } => {
            if let Err(e) = ctx.state.chat.typing(ctx.user_id, &room_id, is_typing).await {
                ctx.conn.send_frame_now(&e.frame(Some(kind.into())));
            }
            return;
        }
        ClientFrame::MarkRead { room_id, seq } => {
            if let Err(e) = ctx.state.chat.mark_read(ctx.user_id, &room_id, seq).await {
                ctx.conn.send_frame_now(&e.frame(Some(kind.into())));
            }
            return;
        }
    };
    if ctx.state.world.commands.send(command).await.is_err() {
        ctx.conn.send_frame_now(&ServerFrame::error(
            error_code::UNAVAILABLE,
            "the world is shutting down",
            Some(kind.into()),
        ));
    }
}
