//! World and chat frames → game messages.
//!
//! A game client is an ordinary connection to the world and to chat: it has a
//! [`crate::world::conn::ConnHandle`] whose queue receives the same JSON frames a WebSocket
//! gets (presence, land joins, chat, move results, errors), so every existing path reaches game
//! clients unchanged. The game systems drain that queue each tick and turn each frame into its
//! [`ServerMessage`]. `nearby_users` is dropped: game clients get spawns and snapshots for
//! their view instead. The frames that do not concern a game client are recognised by their
//! first bytes (serde writes the `type` tag first) and skipped without parsing.

use landworld_shared::limits::VIEW_RADIUS;
use landworld_shared::protocol::game::ServerMessage;
use landworld_shared::protocol::ws::ServerFrame;

/// Frames a game client does not get: proximity lists (replaced by the view), pong, receipts.
const SKIPPED: [&str; 3] = [r#"{"type":"nearby_users""#, r#"{"type":"pong""#, r#"{"type":"read_receipt""#];

/// The game message for a world or chat frame, if a game client gets one.
pub fn translate(json: &str) -> Option<ServerMessage> {
    if SKIPPED.iter().any(|p| json.starts_with(p)) {
        return None;
    }
    let frame: ServerFrame = match serde_json::from_str(json) {
        Ok(f) => f,
        Err(e) => {
            // The server wrote this frame itself; failing to read it back is a bug, not input.
            tracing::error!(error = %e, "a world frame does not parse; not forwarded to the game client");
            return None;
        }
    };
    Some(match frame {
        ServerFrame::Connected { user_id, username, position, tick_hz, .. } => ServerMessage::Welcome {
            user_id,
            username,
            tick_hz,
            x: position.x,
            y: position.y,
            land_id: position.land_id,
            view_radius: VIEW_RADIUS,
        },
        ServerFrame::JoinedRoom { room_id, kind, name, members, last_seq } => {
            ServerMessage::JoinedRoom { room_id, kind, name, members, last_seq }
        }
        ServerFrame::LeftRoom { room_id } => ServerMessage::LeftRoom { room_id },
        ServerFrame::Message {
            room_id,
            message_id,
            seq,
            sender_id,
            sender_username,
            content,
            created_at,
            client_msg_id,
        } => ServerMessage::Chat {
            room_id,
            message_id,
            seq,
            sender_id,
            sender_username,
            content,
            created_at,
            client_msg_id,
        },
        ServerFrame::MessageAck { room_id, message_id, seq, client_msg_id, .. } => {
            ServerMessage::ChatAck { room_id, message_id, seq, client_msg_id }
        }
        ServerFrame::MessageDeleted { room_id, message_id } => ServerMessage::ChatDeleted { room_id, message_id },
        ServerFrame::UserJoined { room_id, user_id, username } => {
            ServerMessage::UserJoined { room_id, user_id, username }
        }
        ServerFrame::UserLeft { room_id, user_id, username } => ServerMessage::UserLeft { room_id, user_id, username },
        ServerFrame::PresenceUpdate { user_id, username, status, last_seen } => {
            ServerMessage::Presence { user_id, username, status, last_seen }
        }
        ServerFrame::Typing { room_id, user_id, username, is_typing } => {
            ServerMessage::Typing { room_id, user_id, username, is_typing }
        }
        ServerFrame::LocationUpdated { x, y, land_id } => ServerMessage::Moved { x, y, land_id },
        ServerFrame::Error { code, message, reference } => ServerMessage::Error { code, message, reference },
        ServerFrame::NearbyUsers { .. } | ServerFrame::ReadReceipt { .. } | ServerFrame::Pong { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use landworld_shared::protocol::ws::{NearbyUser, Position};
    use uuid::Uuid;

    use super::*;

    #[test]
    fn frames_become_messages_and_lists_are_skipped() {
        let id = Uuid::new_v4();
        let connected = ServerFrame::Connected {
            user_id: id,
            username: "kim".into(),
            connection_id: Uuid::new_v4(),
            server_time: "now".into(),
            tick_hz: 20,
            position: Position { x: 3, y: 4, land_id: None },
        };
        assert_eq!(
            translate(&connected.to_json()),
            Some(ServerMessage::Welcome {
                user_id: id,
                username: "kim".into(),
                tick_hz: 20,
                x: 3,
                y: 4,
                land_id: None,
                view_radius: VIEW_RADIUS
            })
        );
        let err = ServerFrame::error("invalid_position", "that tile is not walkable", Some("update_location".into()));
        assert!(
            matches!(translate(&err.to_json()), Some(ServerMessage::Error { code, .. }) if code == "invalid_position")
        );
        let near = ServerFrame::NearbyUsers {
            radius: 5,
            users: vec![NearbyUser { user_id: id, username: "a".into(), x: 1, y: 1, distance: 1 }],
            total: None,
        };
        assert_eq!(translate(&near.to_json()), None);
        assert_eq!(translate(&ServerFrame::Pong { server_time: "t".into() }.to_json()), None);
    }
}
