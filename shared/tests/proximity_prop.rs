//! Property test of the incremental proximity index against an all-pairs model.
//!
//! Random maps (1..=200 tiles a side) get random sequences of inserts, one-step moves, teleports,
//! out-of-map positions (clamped), removals, radius changes (including out-of-range radii),
//! batches of moves through `move_batch` (steps and teleports, a slot possibly listed several
//! times, unknown slots mixed in), point and rectangle queries, and `take_changes` calls. The
//! test keeps its own model of every live slot (clamped position and radius) and after every
//! operation checks `nearby`/`observers` of every slot against the brute-force Chebyshev sets. At every take it checks the changes:
//! applying `left` and `entered` onto the sets of the previous take must give the current sets,
//! each pair at most once and in one list only; `dirty` must be deduplicated, live, and cover
//! every observer whose set changed or one of whose members moved, plus every slot inserted in
//! the window. Verified to fail when the distance test, the scan box or the netting is broken.

use std::collections::{BTreeMap, BTreeSet};

use landworld_shared::world::{ProximityChanges, ProximityIndex, Rect, Slot, TilePos, chebyshev};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert {
        x: i32,
        y: i32,
        r: u32,
    },
    Step {
        pick: usize,
        dx: i32,
        dy: i32,
    },
    Teleport {
        pick: usize,
        x: i32,
        y: i32,
    },
    Remove {
        pick: usize,
    },
    SetRadius {
        pick: usize,
        r: u32,
    },
    Query {
        x: i32,
        y: i32,
        r: u32,
    },
    QueryRect {
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        r: u32,
    },
    /// `move_batch` of `(pick, teleport, a, b)`: a step by `(a, b)` clamped to `-1..=1` from
    /// where the previous entries left the slot, or a teleport to `(a, b)`; `pick == 0` with
    /// `teleport` stands for an unknown slot.
    Batch {
        moves: Vec<(usize, bool, i32, i32)>,
    },
    Take,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-5i32..215, -5i32..215, 0u32..=55).prop_map(|(x, y, r)| Op::Insert { x, y, r }),
        8 => (any::<usize>(), -1i32..=1, -1i32..=1).prop_map(|(pick, dx, dy)| Op::Step { pick, dx, dy }),
        2 => (any::<usize>(), -5i32..215, -5i32..215).prop_map(|(pick, x, y)| Op::Teleport { pick, x, y }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        2 => (any::<usize>(), 0u32..=55).prop_map(|(pick, r)| Op::SetRadius { pick, r }),
        1 => (-60i32..260, -60i32..260, 0u32..=80).prop_map(|(x, y, r)| Op::Query { x, y, r }),
        1 => (-60i32..260, -60i32..260, 0u32..40, 0u32..40, 0u32..=30)
            .prop_map(|(x, y, w, h, r)| Op::QueryRect { x, y, w, h, r }),
        2 => prop::collection::vec((any::<usize>(), prop::bool::weighted(0.2), -5i32..215, -5i32..215), 0..12)
            .prop_map(|moves| Op::Batch { moves }),
        2 => Just(Op::Take),
    ]
}

type Sets = BTreeMap<Slot, BTreeSet<Slot>>;

struct Model {
    w: i32,
    h: i32,
    /// Live slots: position and radius.
    live: BTreeMap<Slot, (TilePos, u32)>,
    /// Slots removed since the last take (must not be reused yet).
    removed: BTreeSet<Slot>,
    /// Slots inserted since the last take.
    inserted: BTreeSet<Slot>,
    /// Sets and positions at the last take.
    prev_sets: Sets,
    prev_pos: BTreeMap<Slot, TilePos>,
}

impl Model {
    fn clamp(&self, x: i32, y: i32) -> TilePos {
        TilePos::new(x.clamp(0, self.w - 1), y.clamp(0, self.h - 1))
    }

    fn pick(&self, pick: usize) -> Option<Slot> {
        if self.live.is_empty() {
            return None;
        }
        self.live.keys().nth(pick % self.live.len()).copied()
    }

    /// Brute force: S(a) for every live a.
    fn sets(&self) -> Sets {
        self.live
            .iter()
            .map(|(&a, &(pa, ra))| {
                let s = self
                    .live
                    .iter()
                    .filter(|&(&b, &(pb, _))| b != a && chebyshev(pa, pb) <= ra)
                    .map(|(&b, _)| b)
                    .collect();
                (a, s)
            })
            .collect()
    }
}

fn reverse(sets: &Sets) -> Sets {
    let mut r: Sets = sets.keys().map(|&k| (k, BTreeSet::new())).collect();
    for (&a, s) in sets {
        for &b in s {
            r.entry(b).or_default().insert(a);
        }
    }
    r
}

fn check_sets(ix: &ProximityIndex, m: &Model) -> Result<Sets, TestCaseError> {
    prop_assert_eq!(ix.len(), m.live.len());
    prop_assert_eq!(ix.is_empty(), m.live.is_empty());
    let sets = m.sets();
    let rev = reverse(&sets);
    for (&a, &(pa, ra)) in &m.live {
        prop_assert_eq!(ix.position(a), Some(pa));
        prop_assert_eq!(ix.radius(a), Some(ra));
        let near: Vec<Slot> = ix.nearby(a).to_vec();
        let near_set: BTreeSet<Slot> = near.iter().copied().collect();
        prop_assert_eq!(near.len(), near_set.len(), "duplicate in nearby({})", a);
        prop_assert_eq!(&near_set, &sets[&a], "nearby({}) at {:?} r={}", a, pa, ra);
        let obs: Vec<Slot> = ix.observers(a).to_vec();
        let obs_set: BTreeSet<Slot> = obs.iter().copied().collect();
        prop_assert_eq!(obs.len(), obs_set.len(), "duplicate in observers({})", a);
        prop_assert_eq!(&obs_set, &rev[&a], "observers({})", a);
    }
    for &d in &m.removed {
        prop_assert_eq!(ix.position(d), None);
        prop_assert!(ix.nearby(d).is_empty() && ix.observers(d).is_empty());
    }
    Ok(sets)
}

fn check_take(ix: &mut ProximityIndex, m: &mut Model, cur: &Sets) -> Result<(), TestCaseError> {
    let mut ch = ProximityChanges::default();
    ix.take_changes(&mut ch);

    // Net pairs: each at most once, in one list only.
    let entered: BTreeSet<(Slot, Slot)> = ch.entered.iter().copied().collect();
    let left: BTreeSet<(Slot, Slot)> = ch.left.iter().copied().collect();
    prop_assert_eq!(entered.len(), ch.entered.len(), "duplicate entered pair");
    prop_assert_eq!(left.len(), ch.left.len(), "duplicate left pair");
    prop_assert!(entered.is_disjoint(&left), "pair in both lists");

    // Replay onto the previous sets.
    let mut replay = m.prev_sets.clone();
    for &(o, x) in &ch.left {
        let s = replay.entry(o).or_default();
        prop_assert!(s.remove(&x), "left ({}, {}) but {} was not in the set", o, x, x);
    }
    for &(o, x) in &ch.entered {
        let s = replay.entry(o).or_default();
        prop_assert!(s.insert(x), "entered ({}, {}) but {} was already in the set", o, x, x);
    }
    replay.retain(|k, _| m.live.contains_key(k));
    for (&k, s) in cur {
        let got = replay.get(&k).cloned().unwrap_or_default();
        prop_assert_eq!(&got, s, "replayed set of {}", k);
    }

    // Dirty: deduplicated, live, covering every changed list and every new slot.
    let dirty: BTreeSet<Slot> = ch.dirty.iter().copied().collect();
    prop_assert_eq!(dirty.len(), ch.dirty.len(), "duplicate dirty");
    for &d in &dirty {
        prop_assert!(m.live.contains_key(&d), "dead slot {} dirty", d);
    }
    for &s in &m.inserted {
        if m.live.contains_key(&s) {
            prop_assert!(dirty.contains(&s), "inserted {} not dirty", s);
        }
    }
    for (&o, s) in cur {
        if m.inserted.contains(&o) {
            continue;
        }
        let before = m.prev_sets.get(&o).cloned().unwrap_or_default();
        let member_moved = s.iter().any(|b| before.contains(b) && m.prev_pos.get(b) != m.live.get(b).map(|v| &v.0));
        if before != *s || member_moved {
            prop_assert!(dirty.contains(&o), "{} changed but is not dirty", o);
        }
    }

    m.prev_sets = cur.clone();
    m.prev_pos = m.live.iter().map(|(&k, v)| (k, v.0)).collect();
    m.removed.clear();
    m.inserted.clear();
    Ok(())
}

fn run(w: u32, h: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut ix = ProximityIndex::new(w, h);
    let mut m = Model {
        w: w as i32,
        h: h as i32,
        live: BTreeMap::new(),
        removed: BTreeSet::new(),
        inserted: BTreeSet::new(),
        prev_sets: Sets::new(),
        prev_pos: BTreeMap::new(),
    };
    let mut out = Vec::new();
    for op in ops {
        match *op {
            Op::Insert { x, y, r } => {
                let s = ix.insert(TilePos::new(x, y), r);
                prop_assert!(!m.live.contains_key(&s), "slot {} handed out twice", s);
                prop_assert!(!m.removed.contains(&s), "slot {} reused before take", s);
                m.live.insert(s, (m.clamp(x, y), r.clamp(1, 50)));
                m.inserted.insert(s);
            }
            Op::Step { pick, dx, dy } => {
                if let Some(s) = m.pick(pick) {
                    let p = m.live[&s].0;
                    let to = TilePos::new(p.x + dx, p.y + dy);
                    ix.move_to(s, to);
                    let c = m.clamp(to.x, to.y);
                    m.live.entry(s).and_modify(|v| v.0 = c);
                }
            }
            Op::Teleport { pick, x, y } => {
                if let Some(s) = m.pick(pick) {
                    ix.move_to(s, TilePos::new(x, y));
                    let c = m.clamp(x, y);
                    m.live.entry(s).and_modify(|v| v.0 = c);
                }
            }
            Op::Remove { pick } => {
                if let Some(s) = m.pick(pick) {
                    ix.remove(s);
                    m.live.remove(&s);
                    m.removed.insert(s);
                }
            }
            Op::SetRadius { pick, r } => {
                if let Some(s) = m.pick(pick) {
                    ix.set_radius(s, r);
                    m.live.entry(s).and_modify(|v| v.1 = r.clamp(1, 50));
                }
            }
            Op::Query { x, y, r } => {
                ix.query(TilePos::new(x, y), r, &mut out);
                let got: BTreeSet<Slot> = out.iter().copied().collect();
                prop_assert_eq!(got.len(), out.len(), "duplicate in query");
                let want: BTreeSet<Slot> =
                    m.live.iter().filter(|(_, v)| chebyshev(TilePos::new(x, y), v.0) <= r).map(|(&k, _)| k).collect();
                prop_assert_eq!(got, want, "query");
            }
            Op::QueryRect { x, y, w, h, r } => {
                let rect = Rect::new(x, y, w, h);
                ix.query_rect(rect, r, &mut out);
                let got: BTreeSet<Slot> = out.iter().copied().collect();
                prop_assert_eq!(got.len(), out.len(), "duplicate in query_rect");
                let want: BTreeSet<Slot> = m
                    .live
                    .iter()
                    .filter(|(_, v)| !rect.is_empty() && rect.distance_to(v.0) <= r)
                    .map(|(&k, _)| k)
                    .collect();
                prop_assert_eq!(got, want, "query_rect");
            }
            Op::Batch { ref moves } => {
                let mut batch = Vec::new();
                for &(pick, teleport, a, b) in moves {
                    if teleport && pick == 0 {
                        batch.push((ix.slot_bound() as Slot + 7, TilePos::new(a, b)));
                        continue;
                    }
                    let Some(s) = m.pick(pick) else { continue };
                    let to = if teleport {
                        TilePos::new(a, b)
                    } else {
                        let p = m.live[&s].0;
                        TilePos::new(p.x + a.clamp(-1, 1), p.y + b.clamp(-1, 1))
                    };
                    batch.push((s, to));
                    let c = m.clamp(to.x, to.y);
                    m.live.entry(s).and_modify(|v| v.0 = c);
                }
                let before = batch.clone();
                ix.move_batch(&batch);
                prop_assert_eq!(batch, before, "move_batch modified its input");
            }
            Op::Take => {
                let cur = check_sets(&ix, &m)?;
                check_take(&mut ix, &mut m, &cur)?;
            }
        }
        check_sets(&ix, &m)?;
        // Unknown slots never panic and read as absent.
        let bogus = ix.slot_bound() as Slot + 3;
        ix.move_to(bogus, TilePos::new(0, 0));
        ix.set_radius(bogus, 7);
        ix.remove(bogus);
        prop_assert!(ix.nearby(bogus).is_empty() && ix.position(bogus).is_none());
    }
    let cur = check_sets(&ix, &m)?;
    check_take(&mut ix, &mut m, &cur)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any map, any operations.
    #[test]
    fn matches_brute_force(w in 1u32..=200, h in 1u32..=200, ops in prop::collection::vec(op(), 1..120)) {
        run(w, h, &ops)?;
    }

    /// Small maps: crowded, every slot near every other, many cell changes at the edges.
    #[test]
    fn matches_brute_force_crowded(w in 1u32..=12, h in 1u32..=12, ops in prop::collection::vec(op(), 1..150)) {
        run(w, h, &ops)?;
    }
}
