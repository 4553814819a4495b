//! The in-memory side of chat: loaded rooms and who is in them, the online users' connections,
//! and per-connection delivery with per-room cursors.
//!
//! Membership: land rooms hold the users standing on the land (kept current by the world's
//! land-membership system) plus the users who joined explicitly; private and group rooms hold
//! their stored member list. A room message goes to every connection of every member.
//!
//! Delivery keeps, per connection and room, the range of seqs delivered live and an optional
//! catch-up buffer: while `join_room {since_seq}` replays history, live messages of that room are
//! buffered; afterwards the buffer is flushed without the ones the replay already sent. So a
//! reconnecting client gets every missed message once, in order, before live ones.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use landworld_shared::limits::close_code;
use uuid::Uuid;

use crate::world::conn::{ConnHandle, OutFrame};

/// Live messages buffered per room during a replay before the connection counts as too slow.
const CATCH_UP_BUFFER: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoomKind {
    Land,
    Private,
    Group,
    Proximity,
}

impl RoomKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Land => "land",
            RoomKind::Private => "private",
            RoomKind::Group => "group",
            RoomKind::Proximity => "proximity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "land" => RoomKind::Land,
            "private" => RoomKind::Private,
            "group" => RoomKind::Group,
            "proximity" => RoomKind::Proximity,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
struct Members {
    /// Land rooms: users standing on the land.
    on_land: HashSet<Uuid>,
    /// Land rooms: users who joined explicitly (until `leave_room` or going offline).
    joined: HashSet<Uuid>,
    /// Private and group rooms: the stored members.
    listed: HashSet<Uuid>,
}

/// A loaded room.
#[derive(Debug)]
pub struct Room {
    pub id: Uuid,
    pub kind: RoomKind,
    pub name: String,
    pub land_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    /// Highest committed seq.
    pub last_seq: AtomicI64,
    members: RwLock<Members>,
}

impl Room {
    pub fn new(
        id: Uuid,
        kind: RoomKind,
        name: String,
        land_id: Option<Uuid>,
        created_by: Option<Uuid>,
        last_seq: i64,
        listed: impl IntoIterator<Item = Uuid>,
    ) -> Self {
        let members = Members { listed: listed.into_iter().collect(), ..Members::default() };
        Self { id, kind, name, land_id, created_by, last_seq: AtomicI64::new(last_seq), members: RwLock::new(members) }
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Whether the user may read and write here now (proximity: everyone).
    pub fn is_member(&self, user: Uuid) -> bool {
        let Ok(m) = self.members.read() else { return false };
        match self.kind {
            RoomKind::Land => m.on_land.contains(&user) || m.joined.contains(&user),
            RoomKind::Private | RoomKind::Group => m.listed.contains(&user),
            RoomKind::Proximity => true,
        }
    }

    pub fn is_listed(&self, user: Uuid) -> bool {
        self.members.read().is_ok_and(|m| m.listed.contains(&user))
    }

    /// Current members (land: on the land or joined; private/group: listed).
    pub fn member_ids(&self) -> Vec<Uuid> {
        let mut ids = Vec::new();
        self.for_each_member(|u| ids.push(*u));
        ids
    }

    /// Calls `f` for each current member, under the room's lock, without collecting them.
    pub fn for_each_member(&self, mut f: impl FnMut(&Uuid)) {
        let Ok(m) = self.members.read() else { return };
        match self.kind {
            RoomKind::Land => {
                m.on_land.iter().for_each(&mut f);
                m.joined.iter().filter(|u| !m.on_land.contains(u)).for_each(f);
            }
            RoomKind::Private | RoomKind::Group => m.listed.iter().for_each(f),
            RoomKind::Proximity => {}
        }
    }

    pub fn member_count(&self) -> usize {
        let Ok(m) = self.members.read() else { return 0 };
        match self.kind {
            RoomKind::Land => m.on_land.union(&m.joined).count(),
            _ => m.listed.len(),
        }
    }

    /// Land rooms. Returns whether membership (on land or joined) changed.
    pub fn set_on_land(&self, user: Uuid, on: bool) -> bool {
        let Ok(mut m) = self.members.write() else { return false };
        let before = m.on_land.contains(&user) || m.joined.contains(&user);
        if on {
            m.on_land.insert(user);
        } else {
            m.on_land.remove(&user);
        }
        before != (m.on_land.contains(&user) || m.joined.contains(&user))
    }

    /// Land rooms: explicit join or leave. Returns whether membership changed.
    pub fn set_joined(&self, user: Uuid, joined: bool) -> bool {
        let Ok(mut m) = self.members.write() else { return false };
        let before = m.on_land.contains(&user) || m.joined.contains(&user);
        if joined {
            m.joined.insert(user);
        } else {
            m.joined.remove(&user);
        }
        before != (m.on_land.contains(&user) || m.joined.contains(&user))
    }

    pub fn set_listed(&self, user: Uuid, listed: bool) {
        if let Ok(mut m) = self.members.write() {
            if listed {
                m.listed.insert(user);
            } else {
                m.listed.remove(&user);
            }
        }
    }
}

/// One room's messages of a commit batch, serialized once for every recipient: seqs ascending,
/// `frames[i]` is the message with `seqs[i]`.
#[derive(Debug)]
pub struct RoomBatch {
    pub seqs: Vec<i64>,
    pub frames: Arc<[OutFrame]>,
}

impl RoomBatch {
    pub fn new(messages: Vec<(i64, OutFrame)>) -> Self {
        let (seqs, frames): (Vec<i64>, Vec<OutFrame>) = messages.into_iter().unzip();
        Self { seqs, frames: frames.into() }
    }

    /// This batch followed by later messages of the same room (seqs ascending, above this
    /// batch's): a new batch, shared like this one.
    pub fn extended(&self, more: &[(i64, OutFrame)]) -> Self {
        let mut seqs = Vec::with_capacity(self.seqs.len() + more.len());
        seqs.extend_from_slice(&self.seqs);
        let mut frames = Vec::with_capacity(seqs.capacity());
        frames.extend(self.frames.iter().cloned());
        for (seq, frame) in more {
            seqs.push(*seq);
            frames.push(frame.clone());
        }
        Self { seqs, frames: frames.into() }
    }

    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

#[derive(Debug, Default)]
struct Cursor {
    /// Seqs `first..=last` were delivered live (0 = none yet).
    first: i64,
    last: i64,
    catching_up: Option<Vec<(i64, OutFrame)>>,
}

impl Cursor {
    fn covers(&self, seq: i64) -> bool {
        self.first != 0 && self.first <= seq && seq <= self.last
    }

    fn record(&mut self, seq: i64) {
        if self.first == 0 || seq < self.first {
            self.first = seq;
        }
        self.last = self.last.max(seq);
    }
}

/// A chat connection: the world's connection handle plus per-room delivery cursors.
#[derive(Debug)]
pub struct ChatConn {
    pub handle: ConnHandle,
    pub user_id: Uuid,
    cursors: Mutex<HashMap<Uuid, Cursor>>,
}

impl ChatConn {
    pub fn new(handle: ConnHandle, user_id: Uuid) -> Self {
        Self { handle, user_id, cursors: Mutex::new(HashMap::new()) }
    }

    /// Delivers messages of one room, in seq order, under one lock: never twice on this
    /// connection, and buffered while a replay runs. Returns how many frames went out (or into
    /// the replay's buffer).
    ///
    /// In the common cases the frames go as one queue item sharing the batch's frames, so the
    /// connection's writer (or the direct write) sends them with one wake-up and one write: no
    /// replay running and either nothing of the batch delivered yet (the whole batch), or the
    /// batch starting inside the range delivered so far (the tail past it: the fan-out's sweep
    /// hands a room's batch again to the connections that got its first messages already).
    pub fn deliver_many(&self, room: Uuid, batch: &RoomBatch) -> usize {
        let Ok(mut cursors) = self.cursors.lock() else { return 0 };
        let cursor = cursors.entry(room).or_default();
        let (Some(&first), Some(&last)) = (batch.seqs.first(), batch.seqs.last()) else { return 0 };
        if cursor.catching_up.is_none() {
            let from = if cursor.first == 0 || first > cursor.last {
                Some(0)
            } else if first >= cursor.first {
                Some(batch.seqs.partition_point(|s| *s <= cursor.last))
            } else {
                None
            };
            if let Some(from) = from {
                let n = batch.len() - from;
                if n == 0 {
                    return 0;
                }
                if !self.handle.send_tail_now(&batch.frames, from) {
                    return 0;
                }
                cursor.record(batch.seqs[from]);
                cursor.record(last);
                return n;
            }
        }
        let mut sent = 0;
        for (seq, frame) in batch.seqs.iter().zip(batch.frames.iter()) {
            if let Some(buf) = &mut cursor.catching_up {
                if buf.last().is_some_and(|(s, _)| s >= seq) {
                    // Buffered already (a sweep hands a batch's messages to a member again).
                    continue;
                }
                if buf.len() >= CATCH_UP_BUFFER {
                    self.handle.close(close_code::RATE_LIMITED);
                    return sent;
                }
                buf.push((*seq, frame.clone()));
                sent += 1;
                continue;
            }
            if cursor.covers(*seq) {
                continue;
            }
            if self.handle.send_now(frame) {
                cursor.record(*seq);
                sent += 1;
            }
        }
        sent
    }

    /// Starts buffering live messages of `room` while history is replayed.
    pub fn begin_catch_up(&self, room: Uuid) {
        if let Ok(mut cursors) = self.cursors.lock() {
            cursors.entry(room).or_default().catching_up = Some(Vec::new());
        }
    }

    /// Whether a replayed message was already delivered live.
    pub fn already_has(&self, room: Uuid, seq: i64) -> bool {
        self.cursors.lock().is_ok_and(|c| c.get(&room).is_some_and(|c| c.covers(seq)))
    }

    /// Ends a replay that sent everything in `since+1..=replayed`: flushes buffered live
    /// messages after it, and records the whole range as delivered.
    pub fn end_catch_up(&self, room: Uuid, since: i64, replayed: i64) {
        let Ok(mut cursors) = self.cursors.lock() else { return };
        let cursor = cursors.entry(room).or_default();
        let buffered = cursor.catching_up.take().unwrap_or_default();
        let mut high = replayed.max(since);
        if replayed > since {
            cursor.record(since + 1);
            cursor.record(replayed);
        }
        for (seq, frame) in buffered {
            if seq <= high || cursor.covers(seq) {
                continue;
            }
            if self.handle.send(&frame) {
                cursor.record(seq);
                high = seq;
            }
        }
    }

    /// Forgets a room's cursor (the user left it).
    pub fn forget(&self, room: Uuid) {
        if let Ok(mut cursors) = self.cursors.lock() {
            cursors.remove(&room);
        }
    }
}

#[derive(Debug)]
pub struct UserEntry {
    pub username: Arc<str>,
    pub conns: Vec<Arc<ChatConn>>,
    /// Land rooms joined explicitly.
    pub joined: HashSet<Uuid>,
}

/// Loaded rooms and online users.
#[derive(Debug, Default)]
pub struct Hub {
    pub rooms: HashMap<Uuid, Arc<Room>>,
    /// Land id → its room id.
    pub land_rooms: HashMap<Uuid, Uuid>,
    pub users: HashMap<Uuid, UserEntry>,
}

impl Hub {
    /// Sends a frame to every connection of the room's current members.
    pub fn send_to_members(&self, room: &Room, frame: &OutFrame) {
        room.for_each_member(|u| self.send_to_user(u, frame));
    }

    /// Sends a frame to every connection of the given users.
    pub fn send_to_users<'a>(&self, users: impl IntoIterator<Item = &'a Uuid>, frame: &OutFrame) {
        for u in users {
            self.send_to_user(u, frame);
        }
    }

    /// Sends a frame to every connection of one user (none when offline).
    fn send_to_user(&self, user: &Uuid, frame: &OutFrame) {
        if let Some(entry) = self.users.get(user) {
            for c in &entry.conns {
                c.handle.send(frame);
            }
        }
    }

    /// Delivers room messages (in seq order) to every connection of the given users; returns
    /// how many frames went out.
    pub fn deliver_to_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a Uuid>,
        room: Uuid,
        batch: &RoomBatch,
    ) -> u64 {
        users.into_iter().map(|u| self.deliver_to_user(u, room, batch)).sum()
    }

    /// Delivers room messages (in seq order) to every connection of one user; returns how many
    /// frames went out.
    pub fn deliver_to_user(&self, user: &Uuid, room: Uuid, batch: &RoomBatch) -> u64 {
        self.users.get(user).map_or(0, |entry| entry.conns.iter().map(|c| c.deliver_many(room, batch) as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::conn::Out;

    fn batch(seqs: &[i64]) -> RoomBatch {
        RoomBatch::new(seqs.iter().map(|s| (*s, OutFrame::from(format!("m{s}")))).collect())
    }

    fn drain(rx: &mut crate::world::conn::OutQueue) -> (usize, Vec<String>) {
        let (mut items, mut frames) = (0, Vec::new());
        while let Ok(item) = rx.try_recv() {
            items += 1;
            frames.extend(item.frames().iter().map(|f| f.as_str().to_string()));
        }
        (items, frames)
    }

    #[test]
    fn a_room_batch_is_one_queue_item_sharing_the_frames() {
        let (handle, mut rx, _control) = ConnHandle::new(Uuid::new_v4());
        let conn = ChatConn::new(handle, Uuid::new_v4());
        let room = Uuid::new_v4();
        let b = batch(&[1, 2, 3]);
        conn.deliver_many(room, &b);
        let Ok(Out::Many(shared)) = rx.try_recv() else { panic!("expected one batch item") };
        assert!(Arc::ptr_eq(&shared, &b.frames), "the recipients share the batch's frames");
        assert!(rx.try_recv().is_err());
        // Already delivered: a repeat of the same seqs sends nothing; a later batch goes whole.
        conn.deliver_many(room, &b);
        conn.deliver_many(room, &batch(&[4]));
        assert_eq!(drain(&mut rx), (1, vec!["m4".to_string()]));
    }

    #[test]
    fn a_batch_overlapping_what_was_delivered_sends_only_the_new_messages() {
        let (handle, mut rx, _control) = ConnHandle::new(Uuid::new_v4());
        let conn = ChatConn::new(handle, Uuid::new_v4());
        let room = Uuid::new_v4();
        assert_eq!(conn.deliver_many(room, &batch(&[5, 6])), 2);
        drain(&mut rx);
        // The new tail goes as one item sharing the batch's frames.
        let b = batch(&[6, 7, 8]);
        assert_eq!(conn.deliver_many(room, &b), 2);
        let Ok(Out::Tail(shared, 1)) = rx.try_recv() else { panic!("expected the batch's tail as one item") };
        assert!(Arc::ptr_eq(&shared, &b.frames));
        assert!(rx.try_recv().is_err());
        // Everything already delivered: nothing is sent.
        assert_eq!(conn.deliver_many(room, &batch(&[7, 8])), 0);
        assert_eq!(drain(&mut rx).0, 0);
        conn.deliver_many(room, &batch(&[8, 9]));
        assert_eq!(drain(&mut rx).1, ["m9"]);
    }

    #[test]
    fn batches_during_a_replay_are_buffered_then_flushed_after_it() {
        let (handle, mut rx, _control) = ConnHandle::new(Uuid::new_v4());
        let conn = ChatConn::new(handle, Uuid::new_v4());
        let room = Uuid::new_v4();
        conn.begin_catch_up(room);
        conn.deliver_many(room, &batch(&[3, 4]));
        assert_eq!(conn.deliver_many(room, &batch(&[4])), 0, "buffered once");
        assert_eq!(drain(&mut rx).0, 0, "nothing live while the replay runs");
        // The replay sent 1..=3; only 4 is still missing.
        conn.end_catch_up(room, 0, 3);
        assert_eq!(drain(&mut rx).1, ["m4"]);
        conn.deliver_many(room, &batch(&[4, 5]));
        assert_eq!(drain(&mut rx).1, ["m5"]);
    }
}
