//! The game protocol (renet over netcode UDP, SPEC §7): channels, the two message enums and the
//! compact position snapshots.
//!
//! - **Channels** are defined once here ([`connection_config`]): server → client
//!   [`ServerChannel::Reliable`] (reliable ordered: welcome, spawns and despawns, chat, joins,
//!   presence, errors) and [`ServerChannel::Snapshots`] (unreliable: positions); client → server
//!   [`ClientChannel::Reliable`] (moves, chat, status) and [`ClientChannel::Unreliable`] (snapshot
//!   acknowledgements).
//! - **Messages** are [`ClientMessage`] and [`ServerMessage`], serialized with `postcard`
//!   ([`encode`], [`decode_client`], [`decode_server`]): varint integers, 16-byte UUIDs, no field
//!   names. Decoding never panics; a malformed message is an error the server answers by
//!   disconnecting that client.
//! - **Positions** travel as delta snapshots ([`Snapshot`]): each game client sees only the
//!   avatars within [`crate::limits::VIEW_RADIUS`] tiles; each visible avatar has a per-client
//!   short id (`u16`) announced by a reliable [`ServerMessage::Spawn`] (user id, username) and
//!   retired by [`ServerMessage::Despawn`]. A snapshot encodes the visible set relative to the
//!   last snapshot the client acknowledged ([`ClientMessage::SnapshotAck`]): one bit per baseline
//!   avatar ("changed"), one byte per changed avatar (a 4-bit dx and dy from the baseline), and
//!   avatars new since the baseline as `(id, dx, dy)` relative to the viewer. Without an
//!   acknowledged baseline the snapshot is complete on its own (every avatar "new"). Because
//!   every snapshot is relative to a state the client confirmed, a lost packet costs nothing but
//!   its own update: the next one is relative to an older, still-known state.
//!   See [`encode_snapshot`] / [`apply_snapshot`] for the exact layout.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ws::{RoomMember, Status};
use crate::world::TilePos;

/// netcode protocol id: "LANDWRLD" with the low byte as the game protocol version. A client with
/// another value cannot connect.
pub const PROTOCOL_ID: u64 = 0x4C41_4E44_5752_4C01;

/// Bytes of the netcode connect token's user data (netcode's fixed size).
pub const USER_DATA_BYTES: usize = 256;

/// Channels the server sends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerChannel {
    /// Reliable ordered: welcome, spawn/despawn, chat, joins, presence, move results, errors.
    Reliable,
    /// Unreliable: position snapshots.
    Snapshots,
}

impl From<ServerChannel> for u8 {
    fn from(c: ServerChannel) -> u8 {
        match c {
            ServerChannel::Reliable => 0,
            ServerChannel::Snapshots => 1,
        }
    }
}

/// Channels the client sends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientChannel {
    /// Reliable ordered: moves, chat, room joins, status.
    Reliable,
    /// Unreliable: snapshot acknowledgements.
    Unreliable,
}

impl From<ClientChannel> for u8 {
    fn from(c: ClientChannel) -> u8 {
        match c {
            ClientChannel::Reliable => 0,
            ClientChannel::Unreliable => 1,
        }
    }
}

/// The renet connection config both ends must use. The reliable channels come first, so they
/// have priority when a tick's bandwidth budget runs short. A receiver whose reliable channel
/// holds more than its memory limit disconnects the sender (a flood from a client, or a client
/// that stopped acknowledging).
pub fn connection_config() -> renet::ConnectionConfig {
    use std::time::Duration;

    use renet::{ChannelConfig, SendType};
    renet::ConnectionConfig {
        available_bytes_per_tick: 60_000,
        server_channels_config: vec![
            ChannelConfig {
                channel_id: ServerChannel::Reliable.into(),
                max_memory_usage_bytes: 4 * 1024 * 1024,
                send_type: SendType::ReliableOrdered { resend_time: Duration::from_millis(200) },
            },
            ChannelConfig {
                channel_id: ServerChannel::Snapshots.into(),
                max_memory_usage_bytes: 1024 * 1024,
                send_type: SendType::Unreliable,
            },
        ],
        client_channels_config: vec![
            ChannelConfig {
                channel_id: ClientChannel::Reliable.into(),
                max_memory_usage_bytes: 256 * 1024,
                send_type: SendType::ReliableOrdered { resend_time: Duration::from_millis(200) },
            },
            ChannelConfig {
                channel_id: ClientChannel::Unreliable.into(),
                max_memory_usage_bytes: 64 * 1024,
                send_type: SendType::Unreliable,
            },
        ],
    }
}

/// How the server replicates positions to one client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Replication {
    /// Delta snapshots ([`ServerMessage::Snapshot`]); the default.
    #[default]
    Delta,
    /// Every visible avatar's full state every tick ([`ServerMessage::FullState`]): the naive
    /// scheme, kept for the bandwidth comparison and for debugging.
    FullState,
}

/// What a game client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Step to a tile: the same rule as the WebSocket's `update_location` (one move per tick,
    /// walkable, at most `max_step` tiles). Answered by [`ServerMessage::Moved`] or an `error`
    /// with code `invalid_position`.
    Move {
        x: i32,
        y: i32,
    },
    /// The newest snapshot the client decoded (unreliable channel).
    SnapshotAck {
        tick: u32,
    },
    /// A chat message: `room` is `proximity`, a chat session id or a land id, as on the
    /// WebSocket. Answered by [`ServerMessage::ChatAck`] once stored.
    SendChat {
        room: String,
        content: String,
        client_msg_id: Option<String>,
    },
    /// Join a room explicitly (land rooms of other lands, private and group rooms), optionally
    /// replaying what came after `since_seq`.
    JoinRoom {
        room: String,
        since_seq: Option<i64>,
    },
    LeaveRoom {
        room: String,
    },
    /// `online`, `away` or `busy`.
    SetStatus {
        status: Status,
    },
    SetReplication {
        mode: Replication,
    },
}

/// A visible avatar's full state ([`Replication::FullState`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarState {
    pub user_id: Uuid,
    pub username: String,
    pub x: i32,
    pub y: i32,
}

/// A position snapshot (unreliable channel); see the module comment and [`apply_snapshot`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server tick (wrapping).
    pub tick: u32,
    /// `tick - baseline tick`; 0 when the snapshot stands alone.
    pub base_age: u8,
    /// The receiving client's own avatar.
    pub x: i32,
    pub y: i32,
    pub body: Vec<u8>,
}

impl Snapshot {
    /// The tick of the baseline this snapshot is relative to.
    pub fn base_tick(&self) -> Option<u32> {
        (self.base_age != 0).then(|| self.tick.wrapping_sub(u32::from(self.base_age)))
    }
}

/// What the server sends a game client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The avatar is in the world (after connecting; also sent again to a further connection of
    /// an online user).
    Welcome {
        user_id: Uuid,
        username: String,
        tick_hz: u32,
        x: i32,
        y: i32,
        land_id: Option<Uuid>,
        view_radius: u32,
    },
    /// An avatar entered the view; `id` names it in snapshots until [`Self::Despawn`].
    Spawn {
        id: u16,
        user_id: Uuid,
        username: String,
        x: i32,
        y: i32,
    },
    /// An avatar left the view (or the world).
    Despawn {
        id: u16,
    },
    Snapshot(Snapshot),
    FullState {
        tick: u32,
        x: i32,
        y: i32,
        avatars: Vec<AvatarState>,
    },
    /// The client's own move was applied.
    Moved {
        x: i32,
        y: i32,
        land_id: Option<Uuid>,
    },
    Presence {
        user_id: Uuid,
        username: String,
        status: Status,
        last_seen: Option<String>,
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
    Chat {
        room_id: Uuid,
        message_id: Uuid,
        seq: i64,
        sender_id: Uuid,
        sender_username: String,
        content: String,
        created_at: String,
        client_msg_id: Option<String>,
    },
    ChatAck {
        room_id: Uuid,
        message_id: Uuid,
        seq: i64,
        client_msg_id: Option<String>,
    },
    ChatDeleted {
        room_id: Uuid,
        message_id: Uuid,
    },
    Typing {
        room_id: Uuid,
        user_id: Uuid,
        username: String,
        is_typing: bool,
    },
    /// Same codes as the WebSocket's `error` frames; the connection stays open.
    Error {
        code: String,
        message: String,
        reference: Option<String>,
    },
}

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed game message: {0}")]
pub struct DecodeError(pub String);

/// Serializes a message (either direction).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // postcard fails only on types it cannot represent (maps with unknown length, `deserialize_any`
    // formats); these enums have none, so the empty fallback is never used.
    postcard::to_allocvec(message).unwrap_or_default()
}

/// Parses a client's message; trailing bytes are an error.
pub fn decode_client(bytes: &[u8]) -> Result<ClientMessage, DecodeError> {
    decode_exact(bytes)
}

/// Parses a server's message; trailing bytes are an error.
pub fn decode_server(bytes: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_exact(bytes)
}

fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(DecodeError(e.to_string())),
    }
}

// ----- connect token user data ------------------------------------------------------------------

const USER_DATA_VERSION: u8 = 1;

/// The connect token's user data: who the client is (the server reads it back when the client
/// connects). Layout: version 1, the user id (16 bytes), the username's length and bytes.
pub fn encode_user_data(user_id: Uuid, username: &str) -> Result<[u8; USER_DATA_BYTES], DecodeError> {
    let name = username.as_bytes();
    if name.len() > USER_DATA_BYTES - 18 {
        return Err(DecodeError("username too long for the connect token".into()));
    }
    let mut out = [0u8; USER_DATA_BYTES];
    out[0] = USER_DATA_VERSION;
    out[1..17].copy_from_slice(user_id.as_bytes());
    out[17] = name.len() as u8;
    out[18..18 + name.len()].copy_from_slice(name);
    Ok(out)
}

/// Reads [`encode_user_data`] back.
pub fn decode_user_data(data: &[u8; USER_DATA_BYTES]) -> Result<(Uuid, String), DecodeError> {
    if data[0] != USER_DATA_VERSION {
        return Err(DecodeError(format!("unknown user data version {}", data[0])));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&data[1..17]);
    let len = usize::from(data[17]);
    let name = data.get(18..18 + len).ok_or_else(|| DecodeError("username length out of range".into()))?;
    let name = std::str::from_utf8(name).map_err(|_| DecodeError("username is not UTF-8".into()))?;
    Ok((Uuid::from_bytes(id), name.to_string()))
}

// ----- snapshots --------------------------------------------------------------------------------

/// One visible avatar in a snapshot state: its short id and tile. States are sorted by id.
pub type Entry = (u16, TilePos);

/// Code byte: the baseline avatar is no longer visible.
const REMOVED: u8 = 0x88;
/// Code byte: a delta too large for nibbles follows as two zigzag varints.
const ESCAPE: u8 = 0x80;

/// Why a snapshot does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot body ends early")]
    Truncated,
    #[error("snapshot body has {0} trailing bytes")]
    Trailing(usize),
    #[error("invalid change code {0:#04x}")]
    BadCode(u8),
    #[error("avatar id {0} appears twice")]
    Duplicate(u16),
    #[error("a number in the snapshot is out of range")]
    Range,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let b = *self.bytes.get(self.at).ok_or(SnapshotError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SnapshotError::Range)
    }

    /// A coordinate difference (two i32 coordinates differ by up to 2^32 - 1).
    fn coord_delta(&mut self) -> Result<i64, SnapshotError> {
        Ok(unzigzag(self.varint()?))
    }
}

fn add(a: i32, d: i64) -> Result<i32, SnapshotError> {
    i64::from(a).checked_add(d).and_then(|v| i32::try_from(v).ok()).ok_or(SnapshotError::Range)
}

/// Encodes the snapshot body of `current` relative to `base` (both sorted by id, without
/// duplicates), for a viewer at `viewer`:
///
/// 1. a bit mask with one bit per `base` entry, least significant bit first: 1 = changed;
/// 2. per changed entry, in order: one byte `dx << 4 | dy & 0xf` (each in `-7..=7`, not both 0)
///    for a move from the baseline position, [`REMOVED`] (`0x88`) when it is no longer visible,
///    or [`ESCAPE`] (`0x80`) followed by dx and dy as zigzag varints;
/// 3. the entries not in `base`: their count, then `(id, x - viewer.x, y - viewer.y)` as
///    varints (zigzag for the offsets).
pub fn encode_snapshot(base: &[Entry], current: &[Entry], viewer: TilePos) -> Vec<u8> {
    let mut out = vec![0u8; base.len().div_ceil(8)];
    let mut codes = Vec::new();
    let mut fresh: Vec<Entry> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < base.len() || j < current.len() {
        match (base.get(i), current.get(j)) {
            (Some(&(bid, bpos)), Some(&(cid, cpos))) if bid == cid => {
                if bpos != cpos {
                    out[i / 8] |= 1 << (i % 8);
                    let (dx, dy) = (i64::from(cpos.x) - i64::from(bpos.x), i64::from(cpos.y) - i64::from(bpos.y));
                    if (-7..=7).contains(&dx) && (-7..=7).contains(&dy) {
                        codes.push((((dx as i8) << 4) as u8) | ((dy as i8) as u8 & 0x0f));
                    } else {
                        codes.push(ESCAPE);
                        put_varint(&mut codes, zigzag(dx));
                        put_varint(&mut codes, zigzag(dy));
                    }
                }
                i += 1;
                j += 1;
            }
            (Some(&(bid, _)), Some(&(cid, _))) if bid < cid => {
                out[i / 8] |= 1 << (i % 8);
                codes.push(REMOVED);
                i += 1;
            }
            (Some(_), None) => {
                out[i / 8] |= 1 << (i % 8);
                codes.push(REMOVED);
                i += 1;
            }
            (_, Some(&entry)) => {
                fresh.push(entry);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out.extend_from_slice(&codes);
    put_varint(&mut out, fresh.len() as u64);
    for (id, pos) in fresh {
        put_varint(&mut out, u64::from(id));
        put_varint(&mut out, zigzag(i64::from(pos.x) - i64::from(viewer.x)));
        put_varint(&mut out, zigzag(i64::from(pos.y) - i64::from(viewer.y)));
    }
    out
}

/// Applies a snapshot body to the baseline state it was encoded against; returns the new state,
/// sorted by id. Never panics; any inconsistency is an error and the snapshot should be dropped.
pub fn apply_snapshot(base: &[Entry], body: &[u8], viewer: TilePos) -> Result<Vec<Entry>, SnapshotError> {
    let mask_len = base.len().div_ceil(8);
    let mask = body.get(..mask_len).ok_or(SnapshotError::Truncated)?;
    let mut r = Reader { bytes: body, at: mask_len };
    let mut out: Vec<Entry> = Vec::with_capacity(base.len());
    for (i, &(id, pos)) in base.iter().enumerate() {
        if mask[i / 8] & (1 << (i % 8)) == 0 {
            out.push((id, pos));
            continue;
        }
        match r.byte()? {
            REMOVED => {}
            ESCAPE => {
                let dx = r.coord_delta()?;
                let dy = r.coord_delta()?;
                if dx == 0 && dy == 0 {
                    return Err(SnapshotError::BadCode(ESCAPE));
                }
                out.push((id, TilePos::new(add(pos.x, dx)?, add(pos.y, dy)?)));
            }
            code => {
                let dx = i64::from((code as i8) >> 4);
                let dy = i64::from(((code << 4) as i8) >> 4);
                if dx == -8 || dy == -8 || (dx == 0 && dy == 0) {
                    return Err(SnapshotError::BadCode(code));
                }
                out.push((id, TilePos::new(add(pos.x, dx)?, add(pos.y, dy)?)));
            }
        }
    }
    // Mask bits past the baseline's length must be clear.
    if !base.len().is_multiple_of(8) && mask.last().is_some_and(|&m| m >> (base.len() % 8) != 0) {
        return Err(SnapshotError::BadCode(mask[mask_len - 1]));
    }
    let count = r.varint()?;
    if count > u64::from(u16::MAX) + 1 {
        return Err(SnapshotError::Range);
    }
    for _ in 0..count {
        let id = u16::try_from(r.varint()?).map_err(|_| SnapshotError::Range)?;
        let x = add(viewer.x, r.coord_delta()?)?;
        let y = add(viewer.y, r.coord_delta()?)?;
        out.push((id, TilePos::new(x, y)));
    }
    if r.at != body.len() {
        return Err(SnapshotError::Trailing(body.len() - r.at));
    }
    out.sort_unstable_by_key(|&(id, _)| id);
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SnapshotError::Duplicate(w[0].0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: i32, y: i32) -> TilePos {
        TilePos::new(x, y)
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let msgs = vec![
            ClientMessage::Move { x: -3, y: 70_000 },
            ClientMessage::SnapshotAck { tick: u32::MAX },
            ClientMessage::SendChat {
                room: "proximity".into(),
                content: "hé".into(),
                client_msg_id: Some("c1".into()),
            },
            ClientMessage::JoinRoom { room: Uuid::nil().to_string(), since_seq: Some(4) },
            ClientMessage::LeaveRoom { room: "x".into() },
            ClientMessage::SetStatus { status: Status::Busy },
            ClientMessage::SetReplication { mode: Replication::FullState },
        ];
        for m in msgs {
            let bytes = encode(&m);
            assert_eq!(decode_client(&bytes), Ok(m.clone()));
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_client(&longer).is_err());
            if bytes.len() > 1 {
                assert!(decode_client(&bytes[..bytes.len() - 1]).is_err(), "{m:?}");
            }
        }
        assert!(decode_client(&[]).is_err());
        assert!(decode_client(&[200, 1, 2, 3]).is_err());
        assert!(decode_client(&[2, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(), "a huge string length");
        let s = ServerMessage::Snapshot(Snapshot { tick: 9, base_age: 2, x: 1, y: 2, body: vec![1, 2, 3] });
        assert_eq!(decode_server(&encode(&s)), Ok(s));
        let w = ServerMessage::Spawn { id: 7, user_id: Uuid::new_v4(), username: "ann".into(), x: 5, y: 6 };
        assert_eq!(decode_server(&encode(&w)), Ok(w));
    }

    #[test]
    fn user_data_round_trips() {
        let id = Uuid::new_v4();
        let data = encode_user_data(id, "alice_01").expect("fits");
        assert_eq!(decode_user_data(&data), Ok((id, "alice_01".to_string())));
        let mut bad = data;
        bad[0] = 9;
        assert!(decode_user_data(&bad).is_err());
        let mut bad = data;
        bad[17] = 250;
        assert!(decode_user_data(&bad).is_err());
        assert!(encode_user_data(id, &"x".repeat(239)).is_err());
    }

    #[test]
    fn snapshots_encode_changes_removals_and_new_avatars() {
        let viewer = p(100, 100);
        let base = vec![(1, p(90, 90)), (2, p(95, 100)), (4, p(120, 80)), (9, p(100, 101))];
        let current = vec![(1, p(91, 89)), (3, p(130, 70)), (4, p(120, 80)), (9, p(60, 140)), (12, p(100, 99))];
        let body = encode_snapshot(&base, &current, viewer);
        assert_eq!(apply_snapshot(&base, &body, viewer), Ok(current.clone()));
        // Unchanged state: just the mask and an empty "new" list.
        let same = encode_snapshot(&current, &current, viewer);
        assert_eq!(same, vec![0, 0]);
        // Standalone: everything is new.
        let full = encode_snapshot(&[], &current, viewer);
        assert_eq!(apply_snapshot(&[], &full, viewer), Ok(current));
    }

    #[test]
    fn fifty_moving_avatars_cost_about_a_byte_each() {
        let viewer = p(500, 500);
        let base: Vec<Entry> = (0..50).map(|i| (i as u16, p(480 + i, 490 + (i % 7)))).collect();
        let current: Vec<Entry> = base.iter().map(|&(id, q)| (id, p(q.x + 1, q.y - 1))).collect();
        let body = encode_snapshot(&base, &current, viewer);
        assert_eq!(body.len(), 7 + 50 + 1);
        assert_eq!(apply_snapshot(&base, &body, viewer), Ok(current));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let viewer = p(0, 0);
        let base = vec![(1, p(1, 1)), (2, p(2, 2))];
        assert_eq!(apply_snapshot(&base, &[], viewer), Err(SnapshotError::Truncated));
        assert_eq!(apply_snapshot(&base, &[0b01], viewer), Err(SnapshotError::Truncated));
        assert_eq!(apply_snapshot(&base, &[0b01, 0x8f, 0], viewer), Err(SnapshotError::BadCode(0x8f)));
        assert_eq!(apply_snapshot(&base, &[0b01, 0x00, 0], viewer), Err(SnapshotError::BadCode(0)));
        assert_eq!(apply_snapshot(&base, &[0b100, 0], viewer), Err(SnapshotError::BadCode(0b100)));
        assert_eq!(apply_snapshot(&base, &[0, 0, 0], viewer), Err(SnapshotError::Trailing(1)));
        assert_eq!(apply_snapshot(&base, &[0, 1, 1, 0, 0], viewer), Err(SnapshotError::Duplicate(1)));
        assert_eq!(apply_snapshot(&[], &[1, 0xff, 0xff, 0xff, 0x0f, 0, 0], viewer), Err(SnapshotError::Range));
        let huge = [1, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0];
        assert_eq!(apply_snapshot(&[], &huge, TilePos::new(i32::MAX, 0)), Err(SnapshotError::Range), "i64 overflow");
        assert_eq!(
            apply_snapshot(&[(1, p(i32::MAX, 0))], &[1, 0x10, 0], viewer),
            Err(SnapshotError::Range),
            "overflowing a coordinate"
        );
    }

    #[test]
    fn channels_are_distinct() {
        let c = connection_config();
        let ids: Vec<u8> = c.server_channels_config.iter().map(|c| c.channel_id).collect();
        assert_eq!(ids, vec![u8::from(ServerChannel::Reliable), u8::from(ServerChannel::Snapshots)]);
        let ids: Vec<u8> = c.client_channels_config.iter().map(|c| c.channel_id).collect();
        assert_eq!(ids, vec![u8::from(ClientChannel::Reliable), u8::from(ClientChannel::Unreliable)]);
    }
}
