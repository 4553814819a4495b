//! Interest management and replication for one game client.
//!
//! Each tick the client's view is the avatars within [`VIEW_RADIUS`] of its own avatar (the
//! nearest [`MAX_VISIBLE_AVATARS`] when crowded), found with the proximity index's range query.
//! Avatars entering the view get a short id and a reliable `Spawn` (user id, username,
//! position); leaving it, a reliable `Despawn`. A retired id is not handed out again for
//! [`ID_QUARANTINE_TICKS`], so a late unreliable snapshot cannot move a newcomer with an old
//! avatar's id.
//!
//! Positions go as delta snapshots ([`landworld_shared::protocol::game`]): relative to the
//! newest snapshot the client acknowledged, kept in a short history here. Nothing is sent on a
//! tick where neither the view nor the viewer changed and the last snapshot was acknowledged.

use std::collections::{BTreeSet, VecDeque};

use bevy_ecs::entity::{EntityHashMap, EntityHashSet};
use bevy_ecs::prelude::*;
use landworld_shared::limits::{MAX_VISIBLE_AVATARS, VIEW_RADIUS};
use landworld_shared::protocol::game::{AvatarState, Entry, Replication, ServerMessage, Snapshot, encode_snapshot};
use landworld_shared::world::{Slot, TilePos, chebyshev};

use crate::world::avatar::{Avatar, Proximity};

/// Ticks before a retired short id may name another avatar (5 s at 20 Hz).
pub const ID_QUARANTINE_TICKS: u64 = 100;
/// Snapshots remembered as possible baselines (3.2 s at 20 Hz); older acknowledgements fall back
/// to a standalone snapshot.
const HISTORY: usize = 64;

/// What one game client currently sees.
#[derive(Debug, Default)]
pub struct View {
    ids: EntityHashMap<u16>,
    free: BTreeSet<u16>,
    retired: VecDeque<(u64, u16)>,
    next: u16,
    history: VecDeque<(u32, Vec<Entry>)>,
    acked: Option<u32>,
    /// The last snapshot sent: tick, viewer position, state.
    last: Option<(u32, TilePos, Vec<Entry>)>,
    pub mode: Replication,
}

/// Reused buffers for building views.
#[derive(Debug, Default)]
pub struct Scratch {
    slots: Vec<Slot>,
    near: Vec<(u32, Entity)>,
    seen: EntityHashSet,
}

impl View {
    fn allocate(&mut self, tick: u64) -> Option<u16> {
        while let Some(&(at, id)) = self.retired.front() {
            if tick.saturating_sub(at) < ID_QUARANTINE_TICKS {
                break;
            }
            self.retired.pop_front();
            self.free.insert(id);
        }
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        let id = self.next;
        self.next = self.next.checked_add(1)?;
        Some(id)
    }

    /// The client decoded the snapshot of `tick`: it may serve as the next baseline.
    pub fn ack(&mut self, tick: u32) {
        if self.acked.is_some_and(|a| a >= tick) || !self.history.iter().any(|(t, _)| *t == tick) {
            return;
        }
        self.acked = Some(tick);
        self.history.retain(|(t, _)| *t >= tick);
    }

    /// Number of avatars in view.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Updates the view around `me` (owned by `own`) on tick `tick` and returns the messages to
    /// send: reliable ones (spawns, despawns) and at most one unreliable (the snapshot).
    pub fn update(
        &mut self,
        own: Entity,
        me: &Avatar,
        tick: u64,
        avatars: &Query<&Avatar>,
        prox: &Proximity,
        scratch: &mut Scratch,
    ) -> (Vec<ServerMessage>, Option<ServerMessage>) {
        let Scratch { slots, near, seen } = scratch;
        prox.index.query(me.pos, VIEW_RADIUS, slots);
        near.clear();
        for &slot in slots.iter() {
            let Some(entity) = prox.owner(slot) else { continue };
            if entity == own {
                continue;
            }
            if let Ok(other) = avatars.get(entity) {
                near.push((chebyshev(me.pos, other.pos), entity));
            }
        }
        if near.len() > MAX_VISIBLE_AVATARS {
            near.select_nth_unstable_by_key(MAX_VISIBLE_AVATARS - 1, |&(d, _)| d);
            near.truncate(MAX_VISIBLE_AVATARS);
        }
        seen.clear();
        seen.extend(near.iter().map(|&(_, e)| e));
        let mut reliable = Vec::new();
        // Leavers first, so their ids can be retired before newcomers take fresh ones.
        let gone: Vec<(Entity, u16)> =
            self.ids.iter().filter(|(e, _)| !seen.contains(*e)).map(|(e, id)| (*e, *id)).collect();
        for (entity, id) in gone {
            self.ids.remove(&entity);
            self.retired.push_back((tick, id));
            reliable.push(ServerMessage::Despawn { id });
        }
        let mut state: Vec<Entry> = Vec::with_capacity(near.len());
        let mut full: Vec<AvatarState> = Vec::new();
        for &(_, entity) in near.iter() {
            let Ok(other) = avatars.get(entity) else { continue };
            let id = match self.ids.get(&entity) {
                Some(&id) => id,
                None => {
                    let Some(id) = self.allocate(tick) else { continue };
                    self.ids.insert(entity, id);
                    reliable.push(ServerMessage::Spawn {
                        id,
                        user_id: other.user_id,
                        username: other.username.to_string(),
                        x: other.pos.x,
                        y: other.pos.y,
                    });
                    id
                }
            };
            state.push((id, other.pos));
            if self.mode == Replication::FullState {
                full.push(AvatarState {
                    user_id: other.user_id,
                    username: other.username.to_string(),
                    x: other.pos.x,
                    y: other.pos.y,
                });
            }
        }
        state.sort_unstable_by_key(|&(id, _)| id);
        let tick32 = tick as u32;
        let unreliable = match self.mode {
            Replication::FullState => {
                Some(ServerMessage::FullState { tick: tick32, x: me.pos.x, y: me.pos.y, avatars: full })
            }
            Replication::Delta => self.snapshot(tick32, me.pos, state).map(ServerMessage::Snapshot),
        };
        (reliable, unreliable)
    }

    fn snapshot(&mut self, tick: u32, viewer: TilePos, state: Vec<Entry>) -> Option<Snapshot> {
        if let Some((t, v, s)) = &self.last
            && *v == viewer
            && *s == state
            && self.acked == Some(*t)
        {
            return None;
        }
        let base = self
            .acked
            .and_then(|a| self.history.iter().find(|(t, _)| *t == a))
            .and_then(|(t, s)| u8::try_from(tick.wrapping_sub(*t)).ok().filter(|age| *age > 0).map(|age| (age, s)));
        let (base_age, body) = match base {
            Some((age, base_state)) => (age, encode_snapshot(base_state, &state, viewer)),
            None => (0, encode_snapshot(&[], &state, viewer)),
        };
        self.history.push_back((tick, state.clone()));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        self.last = Some((tick, viewer, state));
        Some(Snapshot { tick, base_age, x: viewer.x, y: viewer.y, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_only_after_quarantine() {
        let mut v = View::default();
        assert_eq!(v.allocate(1), Some(0));
        assert_eq!(v.allocate(1), Some(1));
        v.retired.push_back((1, 0));
        assert_eq!(v.allocate(50), Some(2));
        assert_eq!(v.allocate(1 + ID_QUARANTINE_TICKS), Some(0));
    }

    #[test]
    fn acks_pick_baselines_and_idle_views_send_nothing() {
        let mut v = View::default();
        let at = TilePos::new(10, 10);
        let s1 = vec![(0, TilePos::new(11, 10))];
        let first = v.snapshot(1, at, s1.clone()).expect("first");
        assert_eq!(first.base_age, 0);
        // Not acknowledged: the same state goes again, still standalone.
        assert_eq!(v.snapshot(2, at, s1.clone()).expect("resent").base_age, 0);
        v.ack(2);
        assert!(v.snapshot(3, at, s1.clone()).is_none(), "acknowledged and unchanged");
        let s2 = vec![(0, TilePos::new(12, 10))];
        let delta = v.snapshot(4, at, s2).expect("moved");
        assert_eq!(delta.base_age, 2);
        assert_eq!(delta.body, vec![1, 0x10, 0]);
        // Unknown or older ticks are ignored.
        v.ack(99);
        v.ack(1);
        assert_eq!(v.acked, Some(2));
    }
}
