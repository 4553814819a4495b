//! The chat WebSocket protocol (`/api/v1/ws/connect`, SPEC §4): every frame is a JSON object with
//! a `type` field. [`ClientFrame`] is what clients send, [`ServerFrame`] what the server sends.
//!
//! [`parse_client_frame`] turns raw text into a frame or into the `error` frame the server answers
//! with, telling malformed JSON, an unknown `type` and bad fields apart.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Presence status. Clients may set `online`, `away` and `busy`; `offline` is the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Online,
    Away,
    Busy,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Busy => "busy",
            Status::Offline => "offline",
        }
    }
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    JoinRoom {
        room_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_seq: Option<i64>,
    },
    LeaveRoom {
        room_id: String,
    },
    SendMessage {
        room_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    UpdateLocation {
        x: i64,
        y: i64,
    },
    SetRadius {
        radius: i64,
    },
    SetStatus {
        status: Status,
    },
    Typing {
        room_id: String,
        is_typing: bool,
    },
    MarkRead {
        room_id: String,
        seq: i64,
    },
    Ping,
}

impl ClientFrame {
    /// The frame's `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::JoinRoom { .. } => "join_room",
            ClientFrame::LeaveRoom { .. } => "leave_room",
            ClientFrame::SendMessage { .. } => "send_message",
            ClientFrame::UpdateLocation { .. } => "update_location",
            ClientFrame::SetRadius { .. } => "set_radius",
            ClientFrame::SetStatus { .. } => "set_status",
            ClientFrame::Typing { .. } => "typing",
            ClientFrame::MarkRead { .. } => "mark_read",
            ClientFrame::Ping => "ping",
        }
    }
}

/// Every client frame type, for telling "unknown type" from "bad fields".
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "join_room",
    "leave_room",
    "send_message",
    "update_location",
    "set_radius",
    "set_status",
    "typing",
    "mark_read",
    "ping",
];

/// An avatar's position as the protocol reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub x: i32,
    pub y: i32,
    pub land_id: Option<Uuid>,
}

/// A member of a room, as listed in `joined_room`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMember {
    pub user_id: Uuid,
    pub username: String,
}

/// One entry of `nearby_users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearbyUser {
    pub user_id: Uuid,
    pub username: String,
    pub x: i32,
    pub y: i32,
    pub distance: u32,
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Connected {
        user_id: Uuid,
        username: String,
        connection_id: Uuid,
        server_time: String,
        tick_hz: u32,
        position: Position,
    },
    JoinedRoom {
        room_id: Uuid,
        kind: String,
        name: String,
        members: Vec<RoomMember>,
        last_seq: i64,
    },
    LeftRoom {
        room_id: Uuid,
    },
    Message {
        room_id: Uuid,
        message_id: Uuid,
        seq: i64,
        sender_id: Uuid,
        sender_username: String,
        content: String,
        created_at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    MessageAck {
        room_id: Uuid,
        message_id: Uuid,
        seq: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        created_at: String,
    },
    MessageDeleted {
        room_id: Uuid,
        message_id: Uuid,
    },
    UserJoined {
        room_id: Uuid,
        user_id: Uuid,
        username: String,
    },
    UserLeft {
        room_id: Uuid,
        user_id: Uuid,
        username: String,
    },
    PresenceUpdate {
        user_id: Uuid,
        username: String,
        status: Status,
        last_seen: Option<String>,
    },
    Typing {
        room_id: Uuid,
        user_id: Uuid,
        username: String,
        is_typing: bool,
    },
    LocationUpdated {
        x: i32,
        y: i32,
        land_id: Option<Uuid>,
    },
    NearbyUsers {
        radius: u32,
        /// Nearest first when the list was cut to [`crate::limits::MAX_NEARBY_LISTED`].
        users: Vec<NearbyUser>,
        /// How many users are within the radius, present only when `users` was cut short.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<u32>,
    },
    ReadReceipt {
        room_id: Uuid,
        user_id: Uuid,
        seq: i64,
    },
    Pong {
        server_time: String,
    },
    Error {
        code: String,
        message: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
}

impl ServerFrame {
    pub fn error(code: &str, message: impl Into<String>, reference: Option<String>) -> Self {
        ServerFrame::Error { code: code.to_string(), message: message.into(), reference }
    }

    /// The frame as JSON text. Serializing these types cannot fail (string keys, no maps with
    /// non-string keys), but a failure still yields a valid `error` frame rather than a panic.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","code":"internal","message":{}}}"#, serde_json::Value::String(e.to_string()))
        })
    }
}

/// Error codes carried by `error` frames.
pub mod error_code {
    pub const INVALID_FRAME: &str = "invalid_frame";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const INVALID_POSITION: &str = "invalid_position";
    pub const INVALID_RADIUS: &str = "invalid_radius";
    pub const INVALID_STATUS: &str = "invalid_status";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const NOT_FOUND: &str = "not_found";
    pub const FORBIDDEN: &str = "forbidden";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const NOT_SUPPORTED: &str = "not_supported";
    pub const INVALID_MESSAGE: &str = "invalid_message";
}

/// Parses one text frame. On failure, returns the `error` frame to send back.
// The error is the frame the caller sends as is; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, ServerFrame> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(err) => Err(classify_parse_error(text, &err)),
    }
}

fn classify_parse_error(text: &str, err: &serde_json::Error) -> ServerFrame {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return ServerFrame::error(error_code::INVALID_FRAME, "frame is not valid JSON", None),
    };
    let Some(obj) = value.as_object() else {
        return ServerFrame::error(error_code::INVALID_FRAME, "frame must be a JSON object", None);
    };
    match obj.get("type") {
        None => ServerFrame::error(error_code::INVALID_FRAME, "frame has no `type` field", None),
        Some(serde_json::Value::String(t)) if CLIENT_FRAME_TYPES.contains(&t.as_str()) => {
            ServerFrame::error(error_code::INVALID_FRAME, format!("invalid `{t}` frame: {err}"), Some(t.clone()))
        }
        Some(serde_json::Value::String(t)) => {
            let shown: String = t.chars().take(64).collect();
            ServerFrame::error(error_code::UNKNOWN_TYPE, format!("unknown frame type `{shown}`"), Some(shown))
        }
        Some(_) => ServerFrame::error(error_code::INVALID_FRAME, "`type` must be a string", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(frame: &ServerFrame) -> &str {
        match frame {
            ServerFrame::Error { code, .. } => code,
            _ => "",
        }
    }

    #[test]
    fn parses_every_client_frame() {
        let cases = [
            r#"{"type":"join_room","room_id":"proximity","since_seq":4}"#,
            r#"{"type":"leave_room","room_id":"x"}"#,
            r#"{"type":"send_message","room_id":"x","content":"hi","client_msg_id":"c1"}"#,
            r#"{"type":"update_location","x":3,"y":4}"#,
            r#"{"type":"set_radius","radius":7}"#,
            r#"{"type":"set_status","status":"away"}"#,
            r#"{"type":"typing","room_id":"x","is_typing":true}"#,
            r#"{"type":"mark_read","room_id":"x","seq":9}"#,
            r#"{"type":"ping"}"#,
        ];
        for (text, kind) in cases.iter().zip(CLIENT_FRAME_TYPES) {
            let frame = parse_client_frame(text).expect(text);
            assert_eq!(frame.kind(), *kind);
            let again = serde_json::to_string(&frame).expect("serialize");
            assert_eq!(parse_client_frame(&again).expect("reparse"), frame);
        }
    }

    #[test]
    fn classifies_errors() {
        assert_eq!(code_of(&parse_client_frame("{nope").unwrap_err()), "invalid_frame");
        assert_eq!(code_of(&parse_client_frame("[1,2]").unwrap_err()), "invalid_frame");
        assert_eq!(code_of(&parse_client_frame(r#"{"x":1}"#).unwrap_err()), "invalid_frame");
        let unknown = parse_client_frame(r#"{"type":"fly"}"#).unwrap_err();
        assert_eq!(code_of(&unknown), "unknown_type");
        let bad = parse_client_frame(r#"{"type":"update_location","x":"a"}"#).unwrap_err();
        assert_eq!(code_of(&bad), "invalid_frame");
        assert!(matches!(bad, ServerFrame::Error { reference: Some(ref r), .. } if r == "update_location"));
    }

    #[test]
    fn server_frames_have_spec_field_names() {
        let f = ServerFrame::NearbyUsers {
            radius: 5,
            users: vec![NearbyUser { user_id: Uuid::nil(), username: "a".into(), x: 1, y: 2, distance: 1 }],
            total: None,
        };
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).expect("json");
        assert_eq!(v["type"], "nearby_users");
        assert_eq!(v["users"][0]["distance"], 1);
        assert!(v.get("total").is_none(), "total only when the list was cut: {v}");
        let e = ServerFrame::error("rate_limited", "slow down", Some("send_message".into()));
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        assert_eq!(v["ref"], "send_message");
        let p = ServerFrame::PresenceUpdate {
            user_id: Uuid::nil(),
            username: "a".into(),
            status: Status::Offline,
            last_seen: None,
        };
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).expect("json");
        assert_eq!(v["status"], "offline");
        assert!(v["last_seen"].is_null());
    }
}
