//! Chat (SPEC §4): rooms fed by the world, durable messages encrypted at rest, history, recovery.
//!
//! Chat runs on the async side, not in the tick: the world only tells chat who stands on which
//! land ([`Chat::land_presence`]) and answers proximity lookups; routing, persistence and
//! fan-out never wait for a tick.
//!
//! - [`hub`]: loaded rooms, their members, online users' connections, per-connection cursors.
//! - [`writer`]: group-committing writer that assigns per-room seqs and seals contents.
//! - The fan-out task (here) acks senders and delivers each committed message — serialized once
//!   per message, not once per recipient — in commit order.
//! - [`crypto`]: AES-256-GCM keyring.
//! - [`retention`]: purge job; typing expiry also lives here.

pub mod crypto;
mod fanout;
pub mod hub;
pub mod keys;
pub mod retention;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use landworld_shared::protocol::ws::{RoomMember, ServerFrame, error_code};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::chat::{MessageRow, Page, SessionRow};
use crate::store::{Db, StoreError, ms_to_rfc3339, now_ms};
use crate::world::WorldCommand;
use crate::world::conn::{ConnHandle, encode};
use crypto::{Keyring, Sealed};
use hub::{ChatConn, Hub, Room, RoomKind, UserEntry};
use writer::{FanOut, Outgoing, Reply, WriterMsg};

/// Messages waiting for the writer before senders wait.
const WRITE_QUEUE: usize = 65_536;
/// A typing indicator expires after this long without renewal.
pub const TYPING_TTL: Duration = Duration::from_secs(5);
/// Replay page size for `join_room {since_seq}`.
const REPLAY_PAGE: i64 = 500;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("chat storage is unavailable; retry")]
    Unavailable,
}

impl ChatError {
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::NotFound(_) => error_code::NOT_FOUND,
            ChatError::Forbidden(_) => error_code::FORBIDDEN,
            ChatError::Invalid(_) => error_code::INVALID_MESSAGE,
            ChatError::Unavailable => error_code::UNAVAILABLE,
        }
    }

    pub fn frame(&self, reference: Option<String>) -> ServerFrame {
        ServerFrame::error(self.code(), self.to_string(), reference)
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ChatError::NotFound("not found".into()),
            other => {
                tracing::error!(error = %other, "chat storage error");
                ChatError::Unavailable
            }
        }
    }
}

/// The durable identity of a stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    pub created_at: i64,
    pub client_msg_id: Option<String>,
}

/// A message as history shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryMessage {
    pub message_id: Uuid,
    pub room_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_username: String,
    pub content: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<MessagePosition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MessagePosition {
    pub x: i32,
    pub y: i32,
}

/// Chat limits.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub max_content_bytes: usize,
    /// How long the writer gathers a batch after its first message (0: no waiting).
    pub commit_window: Duration,
    /// How long the fan-out gathers committed messages before delivering them (acks are not
    /// delayed; 0: deliver each round at once).
    pub delivery_window: Duration,
}

struct Inner {
    db: Db,
    keys: Keyring,
    key_store: crate::store::keys::KeyStore,
    settings: ChatSettings,
    hub: RwLock<Hub>,
    writer: mpsc::Sender<WriterMsg>,
    /// The fan-out's queue, for frames that must stay in order with deliveries.
    fanout: mpsc::Sender<FanOut>,
    world: OnceLock<mpsc::Sender<WorldCommand>>,
    proximity_room: Arc<Room>,
    typing: Mutex<HashMap<(Uuid, Uuid), Instant>>,
    delivered: AtomicU64,
    stored: AtomicU64,
    /// Messages per second over the last second, as f64 bits.
    rate: AtomicU64,
}

/// The chat service. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").finish_non_exhaustive()
    }
}

/// The tasks chat runs; they end when the returned token is cancelled and queues drain.
pub struct ChatTasks {
    pub writer: tokio::task::JoinHandle<()>,
    pub fanout: tokio::task::JoinHandle<()>,
    pub upkeep: tokio::task::JoinHandle<()>,
}

impl Chat {
    /// Loads the proximity room and every land room, and starts the writer, fan-out and upkeep
    /// tasks. `lands` are `(land id, land name)`.
    pub async fn start(
        db: Db,
        keys: Keyring,
        settings: ChatSettings,
        lands: &[(Uuid, String)],
        retention_days: Option<u32>,
        retention_every: Duration,
        stop: CancellationToken,
    ) -> Result<(Self, ChatTasks), StoreError> {
        let now = now_ms();
        let commit_window = settings.commit_window;
        let prox = db.ensure_proximity_session(now).await?;
        let proximity_room = Arc::new(room_from_row(&prox, Vec::new()));
        let mut hub = Hub::default();
        hub.rooms.insert(proximity_room.id, proximity_room.clone());
        for (land_id, name) in lands {
            let row = db.ensure_land_session(*land_id, name, now).await?;
            hub.land_rooms.insert(*land_id, row.id);
            hub.rooms.insert(row.id, Arc::new(room_from_row(&row, Vec::new())));
        }
        let key_store = crate::store::keys::KeyStore::open(&db).await?;
        let index = keys::KeyIndex::load(&db, key_store.clone()).await?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (fan_tx, fan_rx) = mpsc::channel(1024);
        let chat = Chat {
            inner: Arc::new(Inner {
                db: db.clone(),
                keys: keys.clone(),
                key_store,
                settings,
                hub: RwLock::new(hub),
                writer: tx,
                fanout: fan_tx.clone(),
                world: OnceLock::new(),
                proximity_room,
                typing: Mutex::new(HashMap::new()),
                delivered: AtomicU64::new(0),
                stored: AtomicU64::new(0),
                rate: AtomicU64::new(0),
            }),
        };
        let sink = crate::store::message_writer::MessageWriter::open(&db)?;
        let writer = tokio::spawn(writer::run(db.clone(), sink, keys, index, commit_window, rx, fan_tx));
        let fanout = fanout::spawn(&chat, fan_rx, stop.clone());
        let upkeep = tokio::spawn(upkeep_loop(chat.clone(), retention_days, retention_every, stop));
        Ok((chat, ChatTasks { writer, fanout, upkeep }))
    }

    /// Connects chat to the world (for proximity lookups).
    pub fn attach_world(&self, commands: mpsc::Sender<WorldCommand>) {
        let _ = self.inner.world.set(commands);
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn keys(&self) -> &Keyring {
        &self.inner.keys
    }

    /// Where idempotency keys are stored (closed by the application after the writer stops).
    pub fn key_store(&self) -> &crate::store::keys::KeyStore {
        &self.inner.key_store
    }

    pub fn proximity_room_id(&self) -> Uuid {
        self.inner.proximity_room.id
    }

    fn hub_read(&self) -> std::sync::RwLockReadGuard<'_, Hub> {
        self.inner.hub.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hub_write(&self) -> std::sync::RwLockWriteGuard<'_, Hub> {
        self.inner.hub.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // ----- connections -------------------------------------------------------------------

    pub fn register_conn(&self, user_id: Uuid, username: Arc<str>, handle: ConnHandle) -> Arc<ChatConn> {
        let conn = Arc::new(ChatConn::new(handle, user_id));
        let mut hub = self.hub_write();
        hub.users
            .entry(user_id)
            .or_insert_with(|| UserEntry { username, conns: Vec::new(), joined: Default::default() })
            .conns
            .push(conn.clone());
        conn
    }

    /// A connection closed. When it was the user's last, explicit land-room joins end.
    pub fn unregister_conn(&self, user_id: Uuid, conn_id: Uuid) {
        let mut hub = self.hub_write();
        let Some(entry) = hub.users.get_mut(&user_id) else { return };
        entry.conns.retain(|c| c.handle.conn_id != conn_id);
        if !entry.conns.is_empty() {
            return;
        }
        let joined: Vec<Uuid> = entry.joined.drain().collect();
        hub.users.remove(&user_id);
        for room_id in joined {
            if let Some(room) = hub.rooms.get(&room_id) {
                room.set_joined(user_id, false);
            }
        }
        drop(hub);
        if let Ok(mut typing) = self.inner.typing.lock() {
            typing.retain(|(_, u), _| *u != user_id);
        }
    }

    pub fn online_username(&self, user_id: Uuid) -> Option<Arc<str>> {
        self.hub_read().users.get(&user_id).map(|u| u.username.clone())
    }

    // ----- rooms -------------------------------------------------------------------------

    /// The land room of a land, if it has one.
    pub fn land_room_id(&self, land_id: Uuid) -> Option<Uuid> {
        self.hub_read().land_rooms.get(&land_id).copied()
    }

    /// Creates (once) and loads the room of a new land.
    pub async fn ensure_land_room(&self, land_id: Uuid, name: &str) -> Result<Uuid, ChatError> {
        if let Some(id) = self.land_room_id(land_id) {
            return Ok(id);
        }
        let row = self.inner.db.ensure_land_session(land_id, name, now_ms()).await?;
        let mut hub = self.hub_write();
        hub.land_rooms.insert(land_id, row.id);
        hub.rooms.entry(row.id).or_insert_with(|| Arc::new(room_from_row(&row, Vec::new())));
        Ok(row.id)
    }

    /// The world reports that a user now stands (or no longer stands) on a land room's land.
    /// When that changes the user's membership, every member (the user included) gets
    /// `user_joined` / `user_left`.
    pub fn land_presence(&self, room_id: Uuid, user_id: Uuid, username: &str, on: bool) {
        let hub = self.hub_read();
        let Some(room) = hub.rooms.get(&room_id) else { return };
        if !room.set_on_land(user_id, on) {
            return;
        }
        // Joined: every member now, the user included. Left: every member before, which is the
        // members now plus the user.
        let frame = if on {
            ServerFrame::UserJoined { room_id, user_id, username: username.to_string() }
        } else {
            ServerFrame::UserLeft { room_id, user_id, username: username.to_string() }
        };
        let frame = encode(&frame);
        hub.send_to_members(room, &frame);
        if !on {
            hub.send_to_users([&user_id], &frame);
            if let Some(entry) = hub.users.get(&user_id) {
                for c in &entry.conns {
                    c.forget(room_id);
                }
            }
        }
    }

    /// Resolves a room reference from a client: `proximity`, a session id or a land id.
    pub async fn room(&self, reference: &str) -> Result<Arc<Room>, ChatError> {
        match parse_room_ref(reference)? {
            RoomRef::Proximity => Ok(self.inner.proximity_room.clone()),
            RoomRef::Id(id) => self.room_by_id(id).await,
        }
    }

    /// A room already in memory, by session id or land id.
    fn loaded_room(&self, id: Uuid) -> Option<Arc<Room>> {
        let hub = self.hub_read();
        hub.rooms.get(&id).or_else(|| hub.land_rooms.get(&id).and_then(|r| hub.rooms.get(r))).cloned()
    }

    pub async fn room_by_id(&self, id: Uuid) -> Result<Arc<Room>, ChatError> {
        if let Some(room) = self.loaded_room(id) {
            return Ok(room);
        }
        let row = self.inner.db.session_by_id(id).await?.ok_or_else(|| ChatError::NotFound(format!("no room {id}")))?;
        let kind = RoomKind::parse(&row.kind).ok_or(ChatError::Unavailable)?;
        let members = match kind {
            RoomKind::Private | RoomKind::Group => {
                self.inner.db.session_members(id).await?.into_iter().map(|(u, _)| u).collect()
            }
            _ => Vec::new(),
        };
        let room = Arc::new(room_from_row(&row, members));
        let mut hub = self.hub_write();
        if let Some(land) = row.land_id {
            hub.land_rooms.insert(land, row.id);
        }
        Ok(hub.rooms.entry(id).or_insert(room).clone())
    }

    /// Members as `joined_room` lists them (land: on the land or joined; proximity: the
    /// sender's current neighbours are not a fixed list, so none).
    pub async fn members_of(&self, room: &Room) -> Result<Vec<RoomMember>, ChatError> {
        match room.kind {
            RoomKind::Private | RoomKind::Group => Ok(self
                .inner
                .db
                .session_members(room.id)
                .await?
                .into_iter()
                .map(|(user_id, username)| RoomMember { user_id, username })
                .collect()),
            RoomKind::Land => {
                let ids = room.member_ids();
                let hub = self.hub_read();
                let mut out: Vec<RoomMember> = ids
                    .into_iter()
                    .map(|u| RoomMember {
                        user_id: u,
                        username: hub.users.get(&u).map(|e| e.username.to_string()).unwrap_or_default(),
                    })
                    .collect();
                out.sort_by(|a, b| a.username.cmp(&b.username));
                Ok(out)
            }
            RoomKind::Proximity => Ok(Vec::new()),
        }
    }

    /// Whether a user may read a room's history.
    pub fn may_read(&self, room: &Room, user_id: Uuid) -> bool {
        match room.kind {
            // Land rooms are public: any signed-in user may join them.
            RoomKind::Land | RoomKind::Proximity => true,
            RoomKind::Private | RoomKind::Group => room.is_listed(user_id),
        }
    }

    /// `join_room`: answers `joined_room`, then (with `since_seq`) replays what was missed,
    /// then live messages follow.
    pub async fn join(&self, conn: &Arc<ChatConn>, reference: &str, since_seq: Option<i64>) -> Result<(), ChatError> {
        let room = self.room(reference).await?;
        let user_id = conn.user_id;
        match room.kind {
            RoomKind::Private | RoomKind::Group if !room.is_listed(user_id) => {
                return Err(ChatError::Forbidden("you are not a member of this room".into()));
            }
            _ => {}
        }
        if since_seq.is_some() {
            conn.begin_catch_up(room.id);
        }
        if room.kind == RoomKind::Land {
            let newly = {
                let mut hub = self.hub_write();
                if let Some(u) = hub.users.get_mut(&user_id) {
                    u.joined.insert(room.id);
                }
                room.set_joined(user_id, true)
            };
            if newly {
                let username = self.online_username(user_id).map(|u| u.to_string()).unwrap_or_default();
                let frame = encode(&ServerFrame::UserJoined { room_id: room.id, user_id, username });
                self.hub_read().send_to_users(room.member_ids().iter(), &frame);
            }
        }
        let members = self.members_of(&room).await?;
        conn.handle.send_frame(&ServerFrame::JoinedRoom {
            room_id: room.id,
            kind: room.kind.as_str().into(),
            name: room.name.clone(),
            members,
            last_seq: room.last_seq(),
        });
        if let Some(since) = since_seq {
            let since = since.max(0);
            let replayed = self.replay(conn, &room, since).await;
            conn.end_catch_up(room.id, since, replayed.clone().unwrap_or(since));
            replayed?;
        }
        Ok(())
    }

    /// Sends every stored message after `since` (that this user may see) to the connection.
    /// Returns the highest seq sent.
    async fn replay(&self, conn: &Arc<ChatConn>, room: &Room, since: i64) -> Result<i64, ChatError> {
        let recipient = (room.kind == RoomKind::Proximity).then_some(conn.user_id);
        let mut cursor = since;
        loop {
            let (rows, more) = self
                .inner
                .db
                .history(room.id, recipient, Page { after_seq: Some(cursor), before_seq: None, limit: REPLAY_PAGE })
                .await?;
            for row in &rows {
                cursor = row.seq;
                if row.deleted_at.is_some() || conn.already_has(room.id, row.seq) {
                    continue;
                }
                let Some(frame) = self.message_frame(row) else { continue };
                if !conn.handle.send_wait(encode(&frame)).await {
                    return Ok(cursor);
                }
            }
            if !more || rows.is_empty() {
                return Ok(cursor);
            }
        }
    }

    pub fn leave(&self, conn: &ChatConn, reference: &str) -> Result<Uuid, ChatError> {
        let user_id = conn.user_id;
        // Only a loaded room can have been joined.
        let room = match parse_room_ref(reference)? {
            RoomRef::Proximity => self.inner.proximity_room.clone(),
            RoomRef::Id(id) => self.loaded_room(id).ok_or_else(|| ChatError::NotFound(format!("no room {id}")))?,
        };
        if room.kind == RoomKind::Land {
            let recipients = room.member_ids();
            let changed = room.set_joined(user_id, false);
            if let Some(u) = self.hub_write().users.get_mut(&user_id) {
                u.joined.remove(&room.id);
            }
            if changed {
                let username = self.online_username(user_id).map(|u| u.to_string()).unwrap_or_default();
                let frame = encode(&ServerFrame::UserLeft { room_id: room.id, user_id, username });
                self.hub_read().send_to_users(recipients.iter(), &frame);
                conn.forget(room.id);
            }
        }
        conn.handle.send_frame(&ServerFrame::LeftRoom { room_id: room.id });
        Ok(room.id)
    }

    // ----- messages ----------------------------------------------------------------------

    fn validate_content(&self, content: &str) -> Result<(), ChatError> {
        let max = self.inner.settings.max_content_bytes;
        if content.is_empty() {
            return Err(ChatError::Invalid("content must not be empty".into()));
        }
        if content.len() > max {
            return Err(ChatError::Invalid(format!("content is {} bytes; the limit is {max}", content.len())));
        }
        Ok(())
    }

    /// Validates and queues a message; the outcome arrives through `reply` once it is durable.
    pub async fn send(
        &self,
        sender_id: Uuid,
        sender_username: Arc<str>,
        reference: &str,
        content: String,
        client_msg_id: Option<String>,
        reply: Reply,
    ) -> Result<(), ChatError> {
        self.validate_content(&content)?;
        if let Some(c) = &client_msg_id
            && (c.is_empty() || c.len() > 128)
        {
            return Err(ChatError::Invalid("client_msg_id must be 1..=128 bytes".into()));
        }
        let room = self.room(reference).await?;
        let (pos, recipients) = match room.kind {
            RoomKind::Proximity => {
                let (pos, mut near) = self.nearby_of(sender_id).await?;
                near.push(sender_id);
                (Some(pos), near)
            }
            _ => {
                if !room.is_member(sender_id) {
                    return Err(ChatError::Forbidden(match room.kind {
                        RoomKind::Land => "stand on the land or join_room it before sending".into(),
                        _ => "you are not a member of this room".into(),
                    }));
                }
                (None, Vec::new())
            }
        };
        let outgoing = Outgoing { room, sender_id, sender_username, content, client_msg_id, pos, recipients, reply };
        self.inner.writer.send(WriterMsg::Send(outgoing)).await.map_err(|_| ChatError::Unavailable)
    }

    /// Waits until every message queued so far is committed and handed to the fan-out
    /// (shutdown: nothing accepted is left behind).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Like [`Chat::flush`], then merges every idempotency key the writer holds in memory into
    /// the database (graceful shutdown: the next start has nothing to read back).
    pub async fn merge_keys(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(WriterMsg::MergeKeys(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// REST send: waits until the message is durable.
    pub async fn send_and_wait(
        &self,
        sender_id: Uuid,
        sender_username: Arc<str>,
        reference: &str,
        content: String,
        client_msg_id: Option<String>,
    ) -> Result<Committed, ChatError> {
        let (tx, rx) = oneshot::channel();
        self.send(sender_id, sender_username, reference, content, client_msg_id, Reply::Rest(tx)).await?;
        rx.await.map_err(|_| ChatError::Unavailable)?
    }

    /// The sender's tile and the users within its radius, asked of the world.
    async fn nearby_of(&self, user_id: Uuid) -> Result<((i32, i32), Vec<Uuid>), ChatError> {
        let world = self.inner.world.get().ok_or(ChatError::Unavailable)?;
        let (tx, rx) = oneshot::channel();
        world.send(WorldCommand::Nearby { user_id, reply: tx }).await.map_err(|_| ChatError::Unavailable)?;
        let found = rx.await.map_err(|_| ChatError::Unavailable)?;
        found.ok_or_else(|| ChatError::Forbidden("proximity chat needs an avatar in the world: connect first".into()))
    }

    /// Opens a stored row into a `message` frame (None for a row that fails to decrypt, which is
    /// logged: it means tampering or a lost key).
    pub fn message_frame(&self, row: &MessageRow) -> Option<ServerFrame> {
        let content = self.open_row(row)?;
        Some(ServerFrame::Message {
            room_id: row.session_id,
            message_id: row.id,
            seq: row.seq,
            sender_id: row.sender_id,
            sender_username: row.sender_username.clone(),
            content,
            created_at: ms_to_rfc3339(row.created_at),
            client_msg_id: row.client_msg_id.clone(),
        })
    }

    fn open_row(&self, row: &MessageRow) -> Option<String> {
        let sealed = Sealed { key_id: row.key_id, nonce: row.nonce.clone(), ciphertext: row.ciphertext.clone() };
        match self.inner.keys.open_text(row.id, row.session_id, &sealed) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::error!(message_id = %row.id, error = %e, "a stored message does not decrypt");
                None
            }
        }
    }

    pub fn history_message(&self, row: &MessageRow) -> HistoryMessage {
        let deleted = row.deleted_at.is_some();
        let content = if deleted { String::new() } else { self.open_row(row).unwrap_or_default() };
        HistoryMessage {
            message_id: row.id,
            room_id: row.session_id,
            seq: row.seq,
            sender_id: row.sender_id,
            sender_username: row.sender_username.clone(),
            content,
            created_at: ms_to_rfc3339(row.created_at),
            client_msg_id: row.client_msg_id.clone(),
            deleted,
            position: row.pos_x.zip(row.pos_y).map(|(x, y)| MessagePosition { x, y }),
        }
    }

    /// A history page the user may see.
    pub async fn history(
        &self,
        room: &Room,
        user_id: Uuid,
        page: Page,
    ) -> Result<(Vec<HistoryMessage>, bool), ChatError> {
        if !self.may_read(room, user_id) {
            return Err(ChatError::Forbidden("you are not a member of this room".into()));
        }
        let recipient = (room.kind == RoomKind::Proximity).then_some(user_id);
        let (rows, more) = self.inner.db.history(room.id, recipient, page).await?;
        Ok((rows.iter().map(|r| self.history_message(r)).collect(), more))
    }

    /// Soft delete by the sender or an admin; members get `message_deleted`.
    pub async fn delete(&self, room: &Room, message_id: Uuid, user_id: Uuid, is_admin: bool) -> Result<(), ChatError> {
        let row = self
            .inner
            .db
            .message_by_id(message_id)
            .await?
            .filter(|r| r.session_id == room.id)
            .ok_or_else(|| ChatError::NotFound(format!("no message {message_id} in this room")))?;
        if !self.may_read(room, user_id)
            || (room.kind == RoomKind::Proximity && !self.inner.db.is_recipient(message_id, user_id).await?)
        {
            return Err(ChatError::NotFound(format!("no message {message_id} in this room")));
        }
        if row.sender_id != user_id && !is_admin {
            return Err(ChatError::Forbidden("only the sender or an admin may delete a message".into()));
        }
        if self.inner.db.soft_delete_message(message_id, now_ms()).await? {
            let frame = encode(&ServerFrame::MessageDeleted { room_id: room.id, message_id });
            let users = match room.kind {
                RoomKind::Proximity => vec![row.sender_id],
                _ => room.member_ids(),
            };
            // Through the fan-out, behind any delivery still gathering: a member never hears of
            // a deletion before the message.
            let _ = self.inner.fanout.send(FanOut::Broadcast { users, frame }).await;
        }
        Ok(())
    }

    // ----- typing and read receipts ------------------------------------------------------

    pub async fn typing(&self, user_id: Uuid, reference: &str, is_typing: bool) -> Result<(), ChatError> {
        let room = self.room(reference).await?;
        if room.kind == RoomKind::Proximity || !room.is_member(user_id) {
            return Err(ChatError::Forbidden("typing goes to rooms you are a member of".into()));
        }
        {
            let Ok(mut typing) = self.inner.typing.lock() else { return Ok(()) };
            let key = (room.id, user_id);
            if is_typing {
                let renewed = typing.insert(key, Instant::now() + TYPING_TTL).is_some();
                if renewed {
                    return Ok(());
                }
            } else if typing.remove(&key).is_none() {
                return Ok(());
            }
        }
        self.broadcast_typing(&room, user_id, is_typing);
        Ok(())
    }

    fn broadcast_typing(&self, room: &Room, user_id: Uuid, is_typing: bool) {
        let hub = self.hub_read();
        let username = hub.users.get(&user_id).map(|u| u.username.to_string()).unwrap_or_default();
        let frame = encode(&ServerFrame::Typing { room_id: room.id, user_id, username, is_typing });
        let others: Vec<Uuid> = room.member_ids().into_iter().filter(|u| *u != user_id).collect();
        hub.send_to_users(others.iter(), &frame);
    }

    fn expire_typing(&self) {
        let now = Instant::now();
        let expired: Vec<(Uuid, Uuid)> = {
            let Ok(mut typing) = self.inner.typing.lock() else { return };
            let keys: Vec<(Uuid, Uuid)> = typing.iter().filter(|(_, t)| **t <= now).map(|(k, _)| *k).collect();
            for k in &keys {
                typing.remove(k);
            }
            keys
        };
        for (room_id, user_id) in expired {
            let room = self.hub_read().rooms.get(&room_id).cloned();
            if let Some(room) = room {
                self.broadcast_typing(&room, user_id, false);
            }
        }
    }

    /// `mark_read`: stores the marker and sends `read_receipt` to the other members.
    pub async fn mark_read(&self, user_id: Uuid, reference: &str, seq: i64) -> Result<i64, ChatError> {
        let room = self.room(reference).await?;
        if !self.may_read(&room, user_id) {
            return Err(ChatError::Forbidden("you are not a member of this room".into()));
        }
        if seq < 0 || seq > room.last_seq() {
            return Err(ChatError::Invalid(format!(
                "seq must be between 0 and the room's last_seq {}",
                room.last_seq()
            )));
        }
        let stored = self.inner.db.mark_read(room.id, user_id, seq).await?;
        if room.kind != RoomKind::Proximity {
            let frame = encode(&ServerFrame::ReadReceipt { room_id: room.id, user_id, seq: stored });
            let others: Vec<Uuid> = room.member_ids().into_iter().filter(|u| *u != user_id).collect();
            self.hub_read().send_to_users(others.iter(), &frame);
        }
        Ok(stored)
    }

    // ----- membership of private and group rooms ---------------------------------------

    /// A member was added to (or removed from) a private/group room: update the loaded room and
    /// tell the members.
    pub fn member_changed(&self, room: &Room, user_id: Uuid, username: &str, added: bool) {
        let before = room.member_ids();
        room.set_listed(user_id, added);
        let frame = if added {
            ServerFrame::UserJoined { room_id: room.id, user_id, username: username.to_string() }
        } else {
            ServerFrame::UserLeft { room_id: room.id, user_id, username: username.to_string() }
        };
        let mut recipients = room.member_ids();
        if !added {
            recipients = before;
        }
        self.hub_read().send_to_users(recipients.iter(), &encode(&frame));
    }

    /// Land and explicitly joined rooms the user is in now.
    pub fn live_rooms_of(&self, user_id: Uuid) -> Vec<Arc<Room>> {
        self.hub_read().rooms.values().filter(|r| r.kind == RoomKind::Land && r.is_member(user_id)).cloned().collect()
    }

    pub fn proximity_room(&self) -> Arc<Room> {
        self.inner.proximity_room.clone()
    }

    /// Rooms with at least one member online (land) or loaded with members (private/group).
    pub fn active_rooms(&self) -> usize {
        self.hub_read().rooms.values().filter(|r| r.kind == RoomKind::Land && r.member_count() > 0).count()
    }

    pub fn messages_per_second(&self) -> f64 {
        f64::from_bits(self.inner.rate.load(Ordering::Relaxed))
    }

    pub fn deliveries_total(&self) -> u64 {
        self.inner.delivered.load(Ordering::Relaxed)
    }
}

pub fn room_from_row(row: &SessionRow, members: Vec<Uuid>) -> Room {
    let kind = RoomKind::parse(&row.kind).unwrap_or(RoomKind::Group);
    Room::new(row.id, kind, row.name.clone(), row.land_id, row.created_by, row.last_seq, members)
}

/// A room reference from a client: `proximity`, or a session or land id.
enum RoomRef {
    Proximity,
    Id(Uuid),
}

fn parse_room_ref(reference: &str) -> Result<RoomRef, ChatError> {
    if reference == "proximity" {
        return Ok(RoomRef::Proximity);
    }
    Uuid::parse_str(reference.trim()).map(RoomRef::Id).map_err(|_| {
        ChatError::NotFound(format!("no room {reference:?}: use a session id, a land id or \"proximity\""))
    })
}

/// Typing expiry, the messages/s gauge and the retention purge.
async fn upkeep_loop(chat: Chat, retention_days: Option<u32>, retention_every: Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let mut last_count = 0u64;
    let mut last_at = Instant::now();
    let mut next_purge = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        chat.expire_typing();
        let now = Instant::now();
        let elapsed = now.duration_since(last_at).as_secs_f64();
        if elapsed >= 1.0 {
            let count = chat.inner.stored.load(Ordering::Relaxed);
            let rate = (count - last_count) as f64 / elapsed;
            chat.inner.rate.store(rate.to_bits(), Ordering::Relaxed);
            last_count = count;
            last_at = now;
        }
        if let Some(days) = retention_days
            && now >= next_purge
        {
            next_purge = now + retention_every;
            retention::purge(chat.db(), &chat.inner.key_store, days).await;
        }
    }
}

/// Tests: a chat service on `db` with no lands, no commit or delivery window, and a fixed key.
#[cfg(test)]
pub(crate) async fn test_service(db: Db) -> anyhow::Result<Chat> {
    let settings =
        ChatSettings { max_content_bytes: 4096, commit_window: Duration::ZERO, delivery_window: Duration::ZERO };
    let stop = CancellationToken::new();
    let (chat, _tasks) =
        Chat::start(db, Keyring::single([3; 32]), settings, &[], None, Duration::from_secs(3600), stop).await?;
    Ok(chat)
}
