//! The view the server replicates to a game client: the avatars in view (spawned and despawned
//! on the reliable channel) and their positions from delta snapshots (unreliable), applied onto
//! the baselines they were encoded against (see [`super::game`]).
//!
//! One implementation for every game client: `landworld-client`'s network thread and the
//! headless test client both keep a [`Replica`] and acknowledge each applied snapshot at once
//! (the server encodes the next one against it).

use std::collections::{BTreeMap, VecDeque};

use super::game::{Entry, ServerMessage, Snapshot, apply_snapshot};
use crate::world::TilePos;
use uuid::Uuid;

/// Snapshot states kept as possible baselines (the server keeps as many).
const HISTORY: usize = 64;

/// An avatar in view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub user_id: Uuid,
    pub username: String,
    pub pos: TilePos,
}

/// The replicated view of one connection.
#[derive(Debug, Default)]
pub struct Replica {
    /// Avatars in view by their short id.
    pub avatars: BTreeMap<u16, Seen>,
    /// The own avatar's position in the newest snapshot (the server's view, a tick or two
    /// behind the moves in flight), with that snapshot's tick.
    pub own: Option<(u32, TilePos)>,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Snapshots dropped because they did not apply onto their baseline.
    pub snapshot_errors: u64,
    last_tick: Option<u32>,
    history: VecDeque<(u32, Vec<Entry>)>,
}

impl Replica {
    /// Applies a message; returns the snapshot tick to acknowledge, if it was an applied snapshot.
    pub fn apply(&mut self, msg: &ServerMessage) -> Option<u32> {
        match msg {
            ServerMessage::Spawn { id, user_id, username, x, y } => {
                // A snapshot that already placed this id (the unreliable channel can overtake the
                // reliable one) is newer than the spawn's position.
                let latest = self
                    .history
                    .back()
                    .and_then(|(_, state)| state.binary_search_by_key(id, |&(i, _)| i).ok().map(|k| state[k].1));
                let pos = latest.unwrap_or(TilePos::new(*x, *y));
                self.avatars.insert(*id, Seen { user_id: *user_id, username: username.clone(), pos });
            }
            ServerMessage::Despawn { id } => {
                self.avatars.remove(id);
            }
            ServerMessage::Snapshot(s) => return self.apply_snapshot(s),
            _ => {}
        }
        None
    }

    fn apply_snapshot(&mut self, s: &Snapshot) -> Option<u32> {
        // Ticks wrap after 6.8 years at 20 Hz; compare as a window rather than plainly.
        if self.last_tick.is_some_and(|t| s.tick.wrapping_sub(t) == 0 || s.tick.wrapping_sub(t) > u32::MAX / 2) {
            return None; // late (unreliable channel): a newer state is already applied
        }
        let base: &[Entry] = match s.base_tick() {
            None => &[],
            Some(t) => &self.history.iter().find(|(bt, _)| *bt == t)?.1,
        };
        let viewer = TilePos::new(s.x, s.y);
        let Ok(state) = apply_snapshot(base, &s.body, viewer) else {
            self.snapshot_errors += 1;
            return None;
        };
        for &(id, pos) in &state {
            if let Some(seen) = self.avatars.get_mut(&id) {
                seen.pos = pos;
            }
        }
        self.history.push_back((s.tick, state));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.own = Some((s.tick, viewer));
        self.last_tick = Some(s.tick);
        self.snapshots += 1;
        Some(s.tick)
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::game::encode_snapshot;

    use super::*;

    fn p(x: i32, y: i32) -> TilePos {
        TilePos::new(x, y)
    }

    fn spawn(id: u16, name: &str, at: TilePos) -> ServerMessage {
        ServerMessage::Spawn { id, user_id: Uuid::new_v4(), username: name.into(), x: at.x, y: at.y }
    }

    fn snapshot(tick: u32, base: Option<(u32, &[Entry])>, current: &[Entry], viewer: TilePos) -> ServerMessage {
        let (base_age, base_state): (u8, &[Entry]) = match base {
            Some((t, s)) => ((tick - t) as u8, s),
            None => (0, &[]),
        };
        let body = encode_snapshot(base_state, current, viewer);
        ServerMessage::Snapshot(Snapshot { tick, base_age, x: viewer.x, y: viewer.y, body })
    }

    #[test]
    fn spawns_and_delta_snapshots_move_avatars() {
        let mut r = Replica::default();
        let me = p(10, 10);
        r.apply(&spawn(1, "ann", p(12, 10)));
        r.apply(&spawn(2, "bob", p(8, 8)));
        let s1: Vec<Entry> = vec![(1, p(12, 10)), (2, p(8, 8))];
        assert_eq!(r.apply(&snapshot(5, None, &s1, me)), Some(5));
        let s2: Vec<Entry> = vec![(1, p(13, 10)), (2, p(8, 8))];
        assert_eq!(r.apply(&snapshot(6, Some((5, &s1)), &s2, p(11, 10))), Some(6));
        assert_eq!(r.avatars[&1].pos, p(13, 10));
        assert_eq!(r.own, Some((6, p(11, 10))));
        // A late snapshot is ignored; one against an unknown baseline too.
        assert_eq!(r.apply(&snapshot(5, None, &s1, me)), None);
        assert_eq!(r.apply(&snapshot(9, Some((8, &s1)), &s2, me)), None);
        assert_eq!(r.avatars[&1].pos, p(13, 10));
        // A garbled body counts as an error and changes nothing.
        let bad = ServerMessage::Snapshot(Snapshot { tick: 10, base_age: 0, x: 0, y: 0, body: vec![0xff] });
        assert_eq!(r.apply(&bad), None);
        assert_eq!(r.snapshot_errors, 1);
        r.apply(&ServerMessage::Despawn { id: 2 });
        assert_eq!(r.avatars.len(), 1);
        assert_eq!(r.snapshots, 2);
    }

    #[test]
    fn a_spawn_after_its_snapshot_keeps_the_newer_position() {
        let mut r = Replica::default();
        let s: Vec<Entry> = vec![(4, p(3, 3))];
        r.apply(&snapshot(1, None, &s, p(0, 0)));
        r.apply(&spawn(4, "cy", p(2, 2)));
        assert_eq!(r.avatars[&4].pos, p(3, 3));
    }
}
