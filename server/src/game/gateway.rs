//! The async half of game connections: what the world thread cannot wait for.
//!
//! The world thread sends [`GatewayMsg`]s (never blocking: an unbounded channel whose volume the
//! per-client rate limits bound). [`run`] routes them to one task per game client, which does
//! what the WebSocket handler does for its connection: load the saved position, register the
//! connection with chat, send [`WorldCommand::Connect`]; then chat sends, joins and leaves, in
//! the order the client sent them; and on disconnect, unregister from chat and send
//! [`WorldCommand::Disconnect`]. A slow database or chat stalls only that client.

use std::collections::HashMap;
use std::sync::Arc;

use landworld_shared::limits::close_code;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::chat::Chat;
use crate::chat::writer::Reply;
use crate::store::Db;
use crate::world::WorldCommand;
use crate::world::conn::ConnHandle;

/// From the world thread to the gateway.
#[derive(Debug)]
pub enum GatewayMsg {
    /// netcode accepted a client with a valid token for this user.
    Connected {
        client_id: u64,
        user_id: Uuid,
        username: Arc<str>,
        conn: ConnHandle,
    },
    Chat {
        client_id: u64,
        room: String,
        content: String,
        client_msg_id: Option<String>,
    },
    Join {
        client_id: u64,
        room: String,
        since_seq: Option<i64>,
    },
    Leave {
        client_id: u64,
        room: String,
    },
    Disconnected {
        client_id: u64,
    },
}

/// Routes gateway messages to per-client tasks until `stop`; then every client task winds down
/// (unregisters from chat and disconnects its avatar).
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<GatewayMsg>,
    chat: Chat,
    db: Db,
    world: mpsc::Sender<WorldCommand>,
    stop: CancellationToken,
) {
    let mut clients: HashMap<u64, mpsc::UnboundedSender<GatewayMsg>> = HashMap::new();
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(m) => m,
                None => break,
            },
        };
        match msg {
            GatewayMsg::Connected { client_id, .. } => {
                let (tx, client_rx) = mpsc::unbounded_channel();
                let _ = tx.send(msg);
                clients.insert(client_id, tx);
                tokio::spawn(client_task(client_rx, chat.clone(), db.clone(), world.clone()));
            }
            GatewayMsg::Disconnected { client_id } => {
                if let Some(tx) = clients.remove(&client_id) {
                    let _ = tx.send(msg);
                }
            }
            GatewayMsg::Chat { client_id, .. }
            | GatewayMsg::Join { client_id, .. }
            | GatewayMsg::Leave { client_id, .. } => {
                if let Some(tx) = clients.get(&client_id) {
                    let _ = tx.send(msg);
                }
            }
        }
    }
}

async fn client_task(
    mut rx: mpsc::UnboundedReceiver<GatewayMsg>,
    chat: Chat,
    db: Db,
    world: mpsc::Sender<WorldCommand>,
) {
    let Some(GatewayMsg::Connected { client_id, user_id, username, conn }) = rx.recv().await else { return };
    let conn_id = conn.conn_id;
    let saved = match db.load_position(user_id).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, %user_id, "loading saved position failed; spawning at a spawn point");
            None
        }
    };
    // Chat first, so land-room messages reach the client as soon as the avatar stands on a land.
    let chat_conn = chat.register_conn(user_id, username.clone(), conn.clone());
    let connect = WorldCommand::Connect { user_id, username: username.clone(), conn: conn.clone(), saved };
    if world.send(connect).await.is_err() {
        chat.unregister_conn(user_id, conn_id);
        conn.close(close_code::GOING_AWAY);
        return;
    }
    tracing::debug!(client_id, %user_id, %conn_id, "game client joined the world");
    while let Some(msg) = rx.recv().await {
        match msg {
            GatewayMsg::Chat { room, content, client_msg_id, .. } => {
                let reference = client_msg_id.clone().unwrap_or_else(|| "send_chat".into());
                let sent = chat
                    .send(user_id, username.clone(), &room, content, client_msg_id, Reply::Conn(conn.clone()))
                    .await;
                if let Err(e) = sent {
                    conn.send_frame(&e.frame(Some(reference)));
                }
            }
            GatewayMsg::Join { room, since_seq, .. } => {
                if let Err(e) = chat.join(&chat_conn, &room, since_seq).await {
                    conn.send_frame(&e.frame(Some("join_room".into())));
                }
            }
            GatewayMsg::Leave { room, .. } => {
                if let Err(e) = chat.leave(&chat_conn, &room) {
                    conn.send_frame(&e.frame(Some("leave_room".into())));
                }
            }
            GatewayMsg::Disconnected { .. } => break,
            GatewayMsg::Connected { .. } => {}
        }
    }
    chat.unregister_conn(user_id, conn_id);
    let _ = world.send(WorldCommand::Disconnect { user_id, conn_id }).await;
    tracing::debug!(client_id, %user_id, %conn_id, "game client left the world");
}
