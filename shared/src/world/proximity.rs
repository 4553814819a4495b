//! The incremental Chebyshev proximity index: who is near whom, kept up to date move by move.
//!
//! # Semantics
//!
//! Avatars live in dense, reusable [`Slot`]s. Each slot has a tile position and its own radius
//! `r` (clamped to `1..=50`). The *nearby* set of `a` is `S(a) = { b ≠ a : chebyshev(a, b) ≤ r_a }`;
//! its *observers* are `R(a) = { c : a ∈ S(c) }`. The relation is asymmetric when radii differ.
//! Both sets are stored explicitly for every slot and are exact after every call.
//!
//! Every change to a set is recorded and handed out per window by
//! [`ProximityIndex::take_changes`]: net `entered`/`left` pairs (each pair at most once; applying
//! them in any order onto the sets at the previous take gives the current sets), and a
//! deduplicated `dirty` list of observers whose nearby list *content* changed (membership, or a
//! member moved). A slot freed by [`ProximityIndex::remove`] is not handed out again until after
//! the next `take_changes`, so consumers can still map the pending changes' slots to their owners.
//!
//! # Design
//!
//! A tick is a few thousand independent moves, each landing on memory the previous one did not
//! touch, so the layout minimises the cache lines one move touches, batches issue their cache
//! misses together, and the scan of a move's candidates is kept free of unpredictable branches.
//! (Profiled at 100,000 avatars with `perf record -e cpu-clock` and callgrind: before batches
//! recorded their list updates, about a third of a tick was waiting on the per-slot lists'
//! cache lines and a tenth on the cells' header line; what is left is mostly the candidate scan,
//! about 2,300 instructions per move in all.)
//!
//! - **Two uniform grids ("tiers")** hold the slots: radius ≤ [`SMALL_TIER_MAX_RADIUS`] in a fine
//!   grid (16×16-tile cells), larger radii in a coarse one (128×128). A move scans each non-empty
//!   tier with `Q = max(r_a, largest radius in that tier)`, so one user with radius 50 does not
//!   make every other move scan a 101×101 area of the fine grid. A radius histogram gives each
//!   tier's largest radius in O(1).
//! - **A cell is two cache lines** (`#[repr(C, align(128))]`: the header must come first, which
//!   Rust's default layout did not do): its count and up to 15 packed 8-byte entries
//!   `(slot, x, y, radius)` with the position relative to the cell corner (hence cells of at most
//!   256 tiles and maps of at most [`MAX_SIDE`] tiles a side). Seven entries fit the first line,
//!   so a sparse cell costs one line; a crowded cell spills into a side vector. A scan
//!   reads rows of adjacent cells. The cell is recomputed from the slot's position; leaving it
//!   is a swap-remove after a search of that (small, already cached) cell. Cell sizes were picked by measurement with
//!   `benches/proximity_tick.rs` (16 beat 8 for the fine grid: fewer lines per scan).
//! - **A move reads only the grid.** The sets are exact before a move of `a` from `p` to `q`, so
//!   membership before the move is a pure function of the *current* positions: `c ∈ S(a)` iff
//!   `d(p, c) ≤ r_a`, `c ∈ R(a)` iff `d(p, c) ≤ r_c`. One scan of the box covering both `p` and
//!   `q` grown by `Q` (two scans for a teleport) sees every slot whose relation to `a` can change,
//!   with its position and radius inline, and compares before and after.
//! - **Branch-free candidate test** (`Mover::scan`): for every entry of the scanned cells, both
//!   distances and a superset test ("within `Q` of `p` or of `q`") are computed with plain
//!   arithmetic into a bit mask; only the set bits (about as many as the true hits) get the exact
//!   test "a relation changes, or it observes `a`" and take branches. (Random
//!   neighbours make a per-entry `if` a coin flip: a misprediction per candidate.) The stored
//!   lists are touched only where a pair actually enters or leaves; observers that keep `a` are
//!   only flagged dirty. Work per move is the number of slots in those few cells: never all-pairs,
//!   nothing hashed, nothing allocated in the steady state.
//! - **Per-slot lists** `S` and `R` share one cache line per slot, each holding up to six slots
//!   inline before moving to the heap.
//! - **Flags in one byte per slot** (alive, dirty, event counts, batch dedup) keep dirty dedup
//!   and the filtering in `take_changes` in cache. Netting pairs (so each pair is reported at
//!   most once per window) sorts only the events of observers with two or more events in the
//!   window.
//! - **Batches** ([`ProximityIndex::move_batch`]) keep each slot's last move, update the slot
//!   table in one loop of independent accesses, then file the moves in cell order (radix sort),
//!   so consecutive moves scan overlapping, cached cells. Since a scan reads only the grids, each
//!   group of 64 moves first only updates the grid and records what each hit changes (an
//!   `Event`), then applies the events in the same order, reading the list and flag lines of the
//!   next 32 events before applying the current ones: the cache misses of a chunk overlap instead
//!   of queueing one behind the other. The result equals the moves one by one. (Sorting the list
//!   updates by slot instead was tried earlier and measured no faster.)
//!
//! Measured with `benches/proximity_tick.rs` (2048×2048 map, radius 5, 10 % of avatars step each
//! tick): see `docs/performance.md` for the figures, the commands and the machine's load.
//!
//! Positions outside the map are **clamped** onto the map's nearest tile; out-of-range or freed
//! slot ids are no-ops for mutators and `None`/empty for readers. No method panics.

use super::geometry::{Rect, TilePos, chebyshev};
use crate::limits::{MAX_RADIUS, MIN_RADIUS};

/// A dense, reusable handle to one avatar in a [`ProximityIndex`].
pub type Slot = u32;

/// Slots with a radius up to this value live in the fine grid; larger ones in the coarse grid.
pub const SMALL_TIER_MAX_RADIUS: u32 = 8;
/// Fine grid cell side, as a power of two (16 tiles).
const SMALL_CELL_SHIFT: u32 = 4;
/// Coarse grid cell side, as a power of two (128 tiles).
const LARGE_CELL_SHIFT: u32 = 7;
/// Largest cell side, as a power of two: positions inside a cell fit a `u8`.
const MAX_CELL_SHIFT: u32 = 8;
/// Largest map side. With [`MAX_CELLS_PER_GRID`] this keeps cells within [`MAX_CELL_SHIFT`]:
/// `(65536 / 256)^2 = 65536` cells.
pub const MAX_SIDE: u32 = 1 << 16;
/// A grid grows its cells (doubling the side) until it has at most this many cells, so a big map
/// cannot make the index allocate without bound (at most 16 MiB of cells per grid).
const MAX_CELLS_PER_GRID: u64 = 1 << 17;

/// Flag bits, one byte per slot.
const ALIVE: u8 = 1;
/// On the pending dirty list.
const DIRTY: u8 = 2;
/// Observer of at least one / at least two pair events in the window (only those with two can
/// have a pair to net).
const EV1: u8 = 4;
const EV2: u8 = 8;
/// Already has a (later) move in the batch being read by [`ProximityIndex::move_batch`].
const BATCHED: u8 = 16;

/// The changes recorded by a [`ProximityIndex`] between two calls of
/// [`ProximityIndex::take_changes`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProximityChanges {
    /// `(observer, other)`: `other` entered `S(observer)` (net over the window).
    pub entered: Vec<(Slot, Slot)>,
    /// `(observer, other)`: `other` left `S(observer)` (net over the window).
    pub left: Vec<(Slot, Slot)>,
    /// Each observer, once, whose nearby list content changed: membership changed, or a member
    /// moved. A slot inserted in the window is always listed (its list is new). Slots removed in
    /// the window are never listed.
    pub dirty: Vec<Slot>,
}

impl ProximityChanges {
    /// Empties all three lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.entered.clear();
        self.left.clear();
        self.dirty.clear();
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entered.is_empty() && self.left.is_empty() && self.dirty.is_empty()
    }
}

/// A grid entry as the scans see it (unpacked from [`Packed`]): everything the candidate scan
/// needs, without touching the slot table.
#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: Slot,
    pos: TilePos,
}

/// Per-slot position and radius, 6 bytes so the table stays small (coordinates fit a `u16`
/// because maps are at most [`MAX_SIDE`] a side; the cell is recomputed from the position).
/// Liveness is in the flag bytes, and mirrored here as radius 0 for a free slot so a position
/// lookup reads one table.
#[derive(Debug, Clone, Copy, Default)]
struct SlotData {
    x: u16,
    y: u16,
    radius: u8,
    /// Which grid: 0 fine, 1 coarse.
    tier: u8,
}

impl SlotData {
    /// `pos` must be on the map, `radius` in `1..=50`.
    fn new(pos: TilePos, radius: u32) -> Self {
        let mut d = Self { x: 0, y: 0, radius: radius as u8, tier: tier_of(radius) };
        d.set_pos(pos);
        d
    }

    #[inline]
    fn pos(&self) -> TilePos {
        TilePos::new(i32::from(self.x), i32::from(self.y))
    }

    #[inline]
    fn set_pos(&mut self, pos: TilePos) {
        self.x = pos.x as u16;
        self.y = pos.y as u16;
    }

    #[inline]
    fn radius(&self) -> u32 {
        u32::from(self.radius)
    }
}

/// Slots a [`SlotList`] holds without a heap allocation.
const LIST_INLINE: usize = 6;

/// A short list of slots: inline up to [`LIST_INLINE`], on the heap beyond. A heap list goes back
/// inline only when it shrinks to half that, so a list hovering at the limit does not allocate
/// over and over.
#[derive(Debug, Clone)]
enum SlotList {
    Inline(u8, [Slot; LIST_INLINE]),
    Heap(Vec<Slot>),
}

impl Default for SlotList {
    fn default() -> Self {
        SlotList::Inline(0, [0; LIST_INLINE])
    }
}

impl SlotList {
    #[inline]
    fn len(&self) -> usize {
        match self {
            SlotList::Inline(n, _) => usize::from(*n),
            SlotList::Heap(v) => v.len(),
        }
    }

    #[inline]
    fn as_slice(&self) -> &[Slot] {
        match self {
            SlotList::Inline(n, buf) => buf.get(..usize::from(*n)).unwrap_or(&[]),
            SlotList::Heap(v) => v,
        }
    }

    #[inline]
    fn push(&mut self, x: Slot) {
        match self {
            SlotList::Inline(n, buf) => match buf.get_mut(usize::from(*n)) {
                Some(dst) => {
                    *dst = x;
                    *n += 1;
                }
                None => {
                    let mut v = Vec::with_capacity(2 * LIST_INLINE);
                    v.extend_from_slice(buf);
                    v.push(x);
                    *self = SlotList::Heap(v);
                }
            },
            SlotList::Heap(v) => v.push(x),
        }
    }

    /// Removes one occurrence of `x` (order not kept).
    #[inline]
    fn remove(&mut self, x: Slot) {
        match self {
            SlotList::Inline(n, buf) => {
                let len = usize::from(*n);
                if let Some(i) = buf.get(..len).and_then(|b| b.iter().position(|&y| y == x)) {
                    buf.swap(i, len - 1);
                    *n -= 1;
                }
            }
            SlotList::Heap(v) => {
                if let Some(i) = v.iter().position(|&y| y == x) {
                    v.swap_remove(i);
                }
                if v.len() <= LIST_INLINE / 2 {
                    let mut buf = [0; LIST_INLINE];
                    buf[..v.len()].copy_from_slice(v);
                    *self = SlotList::Inline(v.len() as u8, buf);
                }
            }
        }
    }
}

/// A slot's two lists in one cache line.
#[derive(Debug, Clone, Default)]
#[repr(align(64))]
struct Links {
    /// `S(slot)`.
    near: SlotList,
    /// `R(slot)`.
    obs: SlotList,
}

/// An inclusive rectangle of tiles, `(x0, y0, x1, y1)`, in `i64` so growing it cannot overflow.
type Area = (i64, i64, i64, i64);

fn point_area(p: TilePos) -> Area {
    (i64::from(p.x), i64::from(p.y), i64::from(p.x), i64::from(p.y))
}

/// A slot as stored in a cell: 8 bytes, position relative to the cell's corner (cells are at most
/// 256 tiles a side, see [`MAX_CELL_SHIFT`]).
#[derive(Debug, Clone, Copy, Default)]
struct Packed {
    slot: Slot,
    dx: u8,
    dy: u8,
    radius: u8,
}

impl Packed {
    /// The entry, given its cell's corner.
    #[inline(always)]
    fn unpack(&self, ox: i32, oy: i32) -> Entry {
        Entry { slot: self.slot, pos: TilePos::new(ox + i32::from(self.dx), oy + i32::from(self.dy)) }
    }
}

/// Entries stored inside a cell itself; more spill to a side vector.
const CELL_INLINE: usize = 15;

/// One grid cell: two cache lines holding its count and its first [`CELL_INLINE`] entries, so
/// scanning a row of cells reads consecutive memory and, unless the cell holds more than seven
/// slots, only its first line.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(128))]
struct Cell {
    len: u32,
    /// `1 +` index into [`Grid::spills`] while `len > CELL_INLINE`; 0 otherwise.
    spill: u32,
    inline: [Packed; CELL_INLINE],
}

/// A uniform grid of square cells over the map.
#[derive(Debug, Clone)]
struct Grid {
    shift: u32,
    cols: u32,
    cells: Vec<Cell>,
    /// Entries beyond the inline ones, per crowded cell.
    spills: Vec<Vec<Packed>>,
    /// Indices of `spills` not in use (emptied, capacity kept).
    free_spills: Vec<u32>,
    count: usize,
}

impl Grid {
    fn new(width: u32, height: u32, shift: u32) -> Self {
        let mut shift = shift;
        loop {
            let cols = (u64::from(width) + (1 << shift) - 1) >> shift;
            let rows = (u64::from(height) + (1 << shift) - 1) >> shift;
            if cols * rows <= MAX_CELLS_PER_GRID || shift >= MAX_CELL_SHIFT {
                let n = usize::try_from(cols * rows).unwrap_or(usize::MAX);
                let cols = u32::try_from(cols).unwrap_or(u32::MAX);
                return Self {
                    shift,
                    cols,
                    cells: vec![Cell::default(); n],
                    spills: Vec::new(),
                    free_spills: Vec::new(),
                    count: 0,
                };
            }
            shift += 1;
        }
    }

    /// Cell index of an on-map position.
    #[inline]
    fn cell_of(&self, p: TilePos) -> u32 {
        let cx = p.x.max(0) as u32 >> self.shift;
        let cy = p.y.max(0) as u32 >> self.shift;
        cy * self.cols + cx
    }

    /// Packs an entry for the cell holding `pos`.
    #[inline]
    fn pack(&self, slot: Slot, pos: TilePos, radius: u32) -> Packed {
        let mask = (1u32 << self.shift) - 1;
        Packed { slot, dx: (pos.x as u32 & mask) as u8, dy: (pos.y as u32 & mask) as u8, radius: radius as u8 }
    }

    /// The entries of a cell: the inline ones, then the spilled ones.
    #[inline]
    fn entries<'a>(&'a self, cell: &'a Cell) -> (&'a [Packed], &'a [Packed]) {
        let n = (cell.len as usize).min(CELL_INLINE);
        let spill = match cell.spill.checked_sub(1) {
            Some(i) if cell.len as usize > CELL_INLINE => self.spills.get(i as usize).map_or(&[][..], Vec::as_slice),
            _ => &[],
        };
        (cell.inline.get(..n).unwrap_or(&[]), spill)
    }

    /// Calls `f(ox, oy, entries, x_range, y_range)` for every cell meeting the box `area` grown
    /// by `radius`, clipped to a `w x h` map: the cell's corner, its entries (inline ones, then
    /// spilled ones, in two calls), and the box's part of the cell as in-cell `(offset, span)`.
    #[inline(always)]
    fn visit_cells(
        &self,
        (x0, y0, x1, y1): Area,
        radius: u32,
        w: u32,
        h: u32,
        mut f: impl FnMut(i32, i32, &[Packed], (u32, u32), (u32, u32)),
    ) {
        let r = i64::from(radius);
        let lx = (x0 - r).max(0);
        let ly = (y0 - r).max(0);
        let hx = (x1 + r).min(i64::from(w) - 1);
        let hy = (y1 + r).min(i64::from(h) - 1);
        if lx > hx || ly > hy {
            return;
        }
        // All four are within 0..MAX_SIDE here.
        let (lx, ly, hx, hy) = (lx as u32, ly as u32, hx as u32, hy as u32);
        let s = self.shift;
        let last = (1u32 << s) - 1;
        for cy in ly >> s..=hy >> s {
            let oy = cy << s;
            // The box's rows inside this cell, as an offset and a span.
            let ry0 = ly.max(oy) - oy;
            let rys = hy.min(oy + last) - oy - ry0;
            let row = (cy * self.cols) as usize;
            let Some(cells) = self.cells.get(row + (lx >> s) as usize..=row + (hx >> s) as usize) else {
                continue;
            };
            let mut ox = (lx >> s) << s;
            for cell in cells {
                let rx0 = lx.max(ox) - ox;
                let rxs = hx.min(ox + last) - ox - rx0;
                let (inline, spill) = self.entries(cell);
                f(ox as i32, oy as i32, inline, (rx0, rxs), (ry0, rys));
                if !spill.is_empty() {
                    f(ox as i32, oy as i32, spill, (rx0, rxs), (ry0, rys));
                }
                ox += 1 << s;
            }
        }
    }

    /// Calls `f` on every entry within Chebyshev `radius` of `area` grown into a box (a square
    /// around a point), clipped to a `w x h` map. Entries of the covered cells that fall outside
    /// the box are rejected on their packed in-cell coordinates, before anything is unpacked.
    #[inline(always)]
    fn visit(&self, area: Area, radius: u32, w: u32, h: u32, mut f: impl FnMut(&Entry)) {
        self.visit_cells(area, radius, w, h, |ox, oy, entries, (rx0, rxs), (ry0, rys)| {
            for p in entries {
                if u32::from(p.dx).wrapping_sub(rx0) <= rxs && u32::from(p.dy).wrapping_sub(ry0) <= rys {
                    f(&p.unpack(ox, oy));
                }
            }
        });
    }

    /// The stored entry of `slot` in `cell`.
    fn find_mut(&mut self, cell: u32, slot: Slot) -> Option<&mut Packed> {
        let c = self.cells.get_mut(cell as usize)?;
        let n = (c.len as usize).min(CELL_INLINE);
        if let Some(e) = c.inline[..n].iter_mut().find(|e| e.slot == slot) {
            return Some(e);
        }
        let i = c.spill.checked_sub(1)?;
        self.spills.get_mut(i as usize)?.iter_mut().find(|e| e.slot == slot)
    }

    /// Moves `slot` (radius `r`) from `old` to `new` in this grid.
    #[inline]
    fn refile(&mut self, slot: Slot, old: TilePos, new: TilePos, r: u32) {
        let (old_cell, new_cell) = (self.cell_of(old), self.cell_of(new));
        if new_cell == old_cell {
            self.update(old_cell, slot, new, r);
        } else {
            self.remove(old_cell, slot);
            self.push(new_cell, slot, new, r);
        }
    }

    /// Rewrites `slot`'s entry in `cell` (which must still be the cell of `pos`).
    fn update(&mut self, cell: u32, slot: Slot, pos: TilePos, radius: u32) {
        let p = self.pack(slot, pos, radius);
        if let Some(e) = self.find_mut(cell, slot) {
            *e = p;
        }
    }

    fn push(&mut self, cell: u32, slot: Slot, pos: TilePos, radius: u32) {
        let e = self.pack(slot, pos, radius);
        let Some(c) = self.cells.get_mut(cell as usize) else {
            return;
        };
        let n = c.len as usize;
        if let Some(dst) = c.inline.get_mut(n) {
            *dst = e;
        } else {
            if c.spill == 0 {
                let i = match self.free_spills.pop() {
                    Some(i) => i,
                    None => {
                        self.spills.push(Vec::new());
                        (self.spills.len() - 1) as u32
                    }
                };
                c.spill = i + 1;
            }
            let Some(v) = self.spills.get_mut(c.spill as usize - 1) else {
                return;
            };
            v.push(e);
        }
        c.len += 1;
        self.count += 1;
    }

    /// Removes `slot`'s entry from `cell` (swap-remove after a linear search of a cell the
    /// caller's scans read anyway).
    fn remove(&mut self, cell: u32, slot: Slot) {
        let Some(c) = self.cells.get_mut(cell as usize) else {
            return;
        };
        let n = c.len as usize;
        let spill = c.spill.checked_sub(1).map(|i| i as usize);
        let at = |c: &Cell, spills: &[Vec<Packed>], i: usize| -> Option<Packed> {
            if i < CELL_INLINE { c.inline.get(i).copied() } else { spills.get(spill?)?.get(i - CELL_INLINE).copied() }
        };
        let Some(i) = (0..n).find(|&i| at(c, &self.spills, i).is_some_and(|e| e.slot == slot)) else {
            return;
        };
        // Move the last entry into the hole, then drop the last.
        if let Some(last) = at(c, &self.spills, n - 1) {
            if let Some(e) = c.inline.get_mut(i) {
                *e = last;
            } else if let Some(e) = spill.and_then(|s| self.spills.get_mut(s)).and_then(|v| v.get_mut(i - CELL_INLINE))
            {
                *e = last;
            }
        }
        if n > CELL_INLINE
            && let Some(s) = spill
            && let Some(v) = self.spills.get_mut(s)
        {
            v.pop();
            if v.is_empty() {
                c.spill = 0;
                self.free_spills.push(s as u32);
            }
        }
        c.len -= 1;
        self.count -= 1;
    }
}

/// Mutable access to the lists, flags and change buffers, separate from the grids so a grid can
/// be scanned while links are recorded.
struct Recorder<'a> {
    links: &'a mut [Links],
    flags: &'a mut [u8],
    changes: &'a mut ProximityChanges,
}

impl Recorder<'_> {
    #[inline]
    fn dirty(&mut self, s: Slot) {
        if let Some(f) = self.flags.get_mut(s as usize)
            && *f & DIRTY == 0
        {
            *f |= DIRTY;
            self.changes.dirty.push(s);
        }
    }

    /// Notes a pair event with observer `o`.
    #[inline]
    fn event(&mut self, o: Slot) {
        if let Some(f) = self.flags.get_mut(o as usize) {
            *f |= if *f & EV1 != 0 { EV2 } else { EV1 };
        }
        self.dirty(o);
    }

    /// `x` enters `S(o)`.
    #[inline]
    fn enter(&mut self, o: Slot, x: Slot) {
        if let Some(l) = self.links.get_mut(o as usize) {
            l.near.push(x);
        }
        if let Some(l) = self.links.get_mut(x as usize) {
            l.obs.push(o);
        }
        self.changes.entered.push((o, x));
        self.event(o);
    }

    /// `x` leaves `S(o)`.
    #[inline]
    fn leave(&mut self, o: Slot, x: Slot) {
        if let Some(l) = self.links.get_mut(o as usize) {
            l.near.remove(x);
        }
        if let Some(l) = self.links.get_mut(x as usize) {
            l.obs.remove(o);
        }
        self.changes.left.push((o, x));
        self.event(o);
    }

    /// Applies a recorded [`Event`]: the same as the `relate` call it was recorded from.
    #[inline]
    fn apply(&mut self, e: &Event) {
        if e.kind & EV_S_IN != 0 {
            self.enter(e.a, e.c);
        }
        if e.kind & EV_S_OUT != 0 {
            self.leave(e.a, e.c);
        }
        if e.kind & EV_R_IN != 0 {
            self.enter(e.c, e.a);
        }
        if e.kind & EV_R_OUT != 0 {
            self.leave(e.c, e.a);
        }
        if e.kind & EV_R_STAY != 0 {
            self.dirty(e.c);
        }
    }

    /// Reads the cache lines `apply(e)` will write (the lists of both slots, or only the mover's
    /// when just `c`'s flag changes, and `c`'s flags) and folds them into a value, so a loop of
    /// touches issues its cache misses together instead of one by one.
    #[inline(always)]
    fn touch(&self, e: &Event) -> usize {
        let other = if e.kind & !EV_R_STAY != 0 { e.c } else { e.a };
        let l = self.links.get(other as usize).map_or(0, |l| l.near.len());
        let la = self.links.get(e.a as usize).map_or(0, |l| l.obs.len());
        let f = self.flags.get(e.c as usize).map_or(0, |&f| usize::from(f));
        l ^ la ^ f
    }

    /// Slot `a` (radius `r_a`) went from distance `d_old` to `d_new` of the candidate in `h`
    /// (`u32::MAX`: not on the map). Records what changed on both sides. Kept out of line so
    /// the scan loops that call it for the few close candidates stay small.
    #[inline(never)]
    fn relate(&mut self, a: Slot, r_a: u32, h: &Hit) {
        let (s_old, s_new) = (h.d_old <= r_a, h.d_new <= r_a);
        if s_new != s_old {
            if s_new {
                self.enter(a, h.slot);
            } else {
                self.leave(a, h.slot);
            }
        }
        let (r_old, r_new) = (h.d_old <= h.radius, h.d_new <= h.radius);
        if r_new != r_old {
            if r_new {
                self.enter(h.slot, a);
            } else {
                self.leave(h.slot, a);
            }
        } else if r_new {
            // `a` stays in S(c) but moved.
            self.dirty(h.slot);
        }
    }
}

/// What [`Recorder::relate`] does for one hit, recorded by [`ProximityIndex::move_batch`] to be
/// applied later: `kind` holds the `EV_*` bits, applied in the order of their values.
#[derive(Debug, Clone, Copy, Default)]
struct Event {
    a: Slot,
    c: Slot,
    kind: u8,
}

/// `c` enters / leaves `S(a)`; `a` enters / leaves / stays in (and moved within) `S(c)`.
const EV_S_IN: u8 = 1;
const EV_S_OUT: u8 = 2;
const EV_R_IN: u8 = 4;
const EV_R_OUT: u8 = 8;
const EV_R_STAY: u8 = 16;

impl Event {
    /// The event of mover `a` (radius `r_a`) and hit `h`, exactly as `relate` decides.
    #[inline(always)]
    fn of(a: Slot, r_a: u32, h: &Hit) -> Self {
        let (s_old, s_new) = (h.d_old <= r_a, h.d_new <= r_a);
        let (r_old, r_new) = (h.d_old <= h.radius, h.d_new <= h.radius);
        let kind = (u8::from(s_new & !s_old) * EV_S_IN)
            | (u8::from(s_old & !s_new) * EV_S_OUT)
            | (u8::from(r_new & !r_old) * EV_R_IN)
            | (u8::from(r_old & !r_new) * EV_R_OUT)
            | (u8::from(r_old & r_new) * EV_R_STAY);
        Self { a, c: h.slot, kind }
    }
}

/// A candidate whose relation to a moving slot changes or that observes it: what
/// [`Recorder::relate`] needs.
#[derive(Debug, Clone, Copy, Default)]
struct Hit {
    slot: Slot,
    radius: u32,
    d_old: u32,
    d_new: u32,
}

/// Entries examined per round of [`Mover::scan`] (one bit each in a `u32`).
const HIT_CHUNK: usize = 32;

/// Where a [`Mover::scan`] may find the hits of a pass: `d_new` within `lo..=hi`.
type NewRange = (u32, u32);

/// A slot moving from `old` to `new` with radius `r_a`, as the branch-free candidate scan sees it.
#[derive(Debug, Clone, Copy)]
struct Mover {
    slot: Slot,
    r_a: u32,
    old: (i32, i32),
    new: (i32, i32),
}

impl Mover {
    /// Hands every entry of a cell (corner `ox, oy`) that `relate` has to see to `f`; `q` bounds
    /// the radii involved (the mover's and the tier's). The entries are examined in rounds of
    /// [`HIT_CHUNK`]: a cheap superset test, "within `q` of the old or the new position", is
    /// computed for each without a branch into a bit mask, so the unpredictable per-candidate
    /// decisions cost no mispredictions; only the few set bits (about as many as true hits) get
    /// the exact test, the range check and the call.
    #[inline(always)]
    fn scan(&self, entries: &[Packed], ox: i32, oy: i32, q: u32, (lo, hi): NewRange, f: &mut impl FnMut(&Hit)) {
        let (ax, ay) = (self.old.0 - ox, self.old.1 - oy);
        let (bx, by) = (self.new.0 - ox, self.new.1 - oy);
        for chunk in entries.chunks(HIT_CHUNK) {
            let mut mask = 0u32;
            for (i, p) in chunk.iter().enumerate() {
                let (x, y) = (i32::from(p.dx), i32::from(p.dy));
                let d_old = (x - ax).unsigned_abs().max((y - ay).unsigned_abs());
                let d_new = (x - bx).unsigned_abs().max((y - by).unsigned_abs());
                mask |= u32::from(d_old.min(d_new) <= q) << i;
            }
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let Some(p) = chunk.get(i) else { break };
                let (x, y) = (i32::from(p.dx), i32::from(p.dy));
                let d_old = (x - ax).unsigned_abs().max((y - ay).unsigned_abs());
                let d_new = (x - bx).unsigned_abs().max((y - by).unsigned_abs());
                let radius = u32::from(p.radius);
                let changes = (d_old <= self.r_a) != (d_new <= self.r_a);
                let observes = (d_old <= radius) | (d_new <= radius);
                if (changes | observes) && p.slot != self.slot && d_new >= lo && d_new <= hi {
                    f(&Hit { slot: p.slot, radius, d_old, d_new });
                }
            }
        }
    }
}

/// Calls `f` for every slot of `grids` whose relation to `slot` (radius `r_a`, already filed at
/// `new`) can have changed by its move from `old` (`None`: just inserted), or that observes it:
/// each tier is scanned around both positions. Reads only the grids.
#[inline]
fn scan_move(
    grids: &[Grid; 2],
    tier_max: &[u32; 2],
    w: u32,
    h: u32,
    slot: Slot,
    r_a: u32,
    old: Option<TilePos>,
    new: TilePos,
    mut f: impl FnMut(&Hit),
) {
    // A point so far away that nothing is near it stands in for "not on the map yet".
    const NOWHERE: i32 = -(1 << 29);
    let o = old.map_or((NOWHERE, NOWHERE), |p| (p.x, p.y));
    let m = Mover { slot, r_a, old: o, new: (new.x, new.y) };
    for (g, &tmax) in grids.iter().zip(tier_max.iter()) {
        if g.count == 0 {
            continue;
        }
        // Every slot of this tier whose relation to `slot` can change is within `q` of
        // `old` or of `new` (`q` covers both `r_a` and the tier's radii).
        let q = r_a.max(tmax);
        let all = (0, u32::MAX);
        match old {
            Some(old) if dist(old, new) > q => {
                // A teleport: the cells around `new`, then those around `old` for what is
                // not near `new` (so an entry seen by both scans counts once).
                g.visit_cells(point_area(new), q, w, h, |ox, oy, e, _, _| m.scan(e, ox, oy, q, (0, q), &mut f));
                g.visit_cells(point_area(old), q, w, h, |ox, oy, e, _, _| {
                    m.scan(e, ox, oy, q, (q + 1, u32::MAX), &mut f)
                });
            }
            Some(old) => {
                // Overlapping neighbourhoods: one scan of the cells of their bounding box.
                let area = (
                    i64::from(old.x.min(new.x)),
                    i64::from(old.y.min(new.y)),
                    i64::from(old.x.max(new.x)),
                    i64::from(old.y.max(new.y)),
                );
                g.visit_cells(area, q, w, h, |ox, oy, e, _, _| m.scan(e, ox, oy, q, all, &mut f));
            }
            None => {
                g.visit_cells(point_area(new), q, w, h, |ox, oy, e, _, _| m.scan(e, ox, oy, q, all, &mut f));
            }
        }
    }
}

/// One move of a batch, clamped and deduplicated, filed by the cell it leaves.
#[derive(Debug, Clone, Copy, Default)]
struct BatchMove {
    /// Sort key: the cell left (coarse cells numbered after the fine ones).
    key: u32,
    slot: Slot,
    /// The slot's record before the move.
    old: SlotData,
    new_x: u16,
    new_y: u16,
}

/// Reused buffers of [`ProximityIndex::move_batch`].
#[derive(Debug, Clone, Default)]
struct BatchScratch {
    moves: Vec<BatchMove>,
    moves_tmp: Vec<BatchMove>,
    /// Radix sort buckets.
    counts: Vec<u32>,
    /// Recorded list updates of the moves filed so far.
    events: Vec<Event>,
}

/// Moves of a batch whose list updates are recorded before they are applied together.
const BATCH_GROUP: usize = 64;
/// Events whose cache lines are touched ahead of applying them.
const TOUCH_AHEAD: usize = 32;

/// The incremental proximity index. See the module documentation.
#[derive(Debug, Clone)]
pub struct ProximityIndex {
    width: u32,
    height: u32,
    grids: [Grid; 2],
    slots: Vec<SlotData>,
    flags: Vec<u8>,
    links: Vec<Links>,
    /// Free slots that may be handed out now.
    free: Vec<Slot>,
    /// Slots freed since the last `take_changes`; they join `free` there.
    pending_free: Vec<Slot>,
    /// `hist[r]`: live slots with radius `r`.
    hist: [u32; MAX_RADIUS as usize + 1],
    /// Largest radius in use per tier (0 when the tier is empty).
    tier_max: [u32; 2],
    len: usize,
    changes: ProximityChanges,
    /// Reused buffers for netting `(entered, left)` in `take_changes`.
    net_scratch: (Vec<(Slot, Slot)>, Vec<(Slot, Slot)>),
    /// Reused buffers of `move_batch`.
    batch: BatchScratch,
}

impl Default for ProximityIndex {
    /// A 1×1 map.
    fn default() -> Self {
        Self::new(1, 1)
    }
}

/// Radius clamped to the allowed range.
#[inline]
fn clamp_radius(r: u32) -> u32 {
    r.clamp(MIN_RADIUS, MAX_RADIUS)
}

#[inline]
fn tier_of(radius: u32) -> u8 {
    u8::from(radius > SMALL_TIER_MAX_RADIUS)
}

/// Chebyshev distance between two on-map positions. Coordinates are in `0..MAX_SIDE`, so the
/// differences cannot overflow (unlike [`chebyshev`], no widening is needed).
#[inline]
fn dist(a: TilePos, b: TilePos) -> u32 {
    let dx = a.x.wrapping_sub(b.x).unsigned_abs();
    let dy = a.y.wrapping_sub(b.y).unsigned_abs();
    dx.max(dy)
}

impl ProximityIndex {
    /// An empty index over a `width x height` map. Sides are clamped to `1..=`[`MAX_SIDE`].
    pub fn new(width: u32, height: u32) -> Self {
        let width = width.clamp(1, MAX_SIDE);
        let height = height.clamp(1, MAX_SIDE);
        Self {
            width,
            height,
            grids: [Grid::new(width, height, SMALL_CELL_SHIFT), Grid::new(width, height, LARGE_CELL_SHIFT)],
            slots: Vec::new(),
            flags: Vec::new(),
            links: Vec::new(),
            free: Vec::new(),
            pending_free: Vec::new(),
            hist: [0; MAX_RADIUS as usize + 1],
            tier_max: [0; 2],
            len: 0,
            changes: ProximityChanges::default(),
            net_scratch: (Vec::new(), Vec::new()),
            batch: BatchScratch::default(),
        }
    }

    /// Map width in tiles.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Map height in tiles.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Clamps a position onto the map.
    pub fn clamp_pos(&self, pos: TilePos) -> TilePos {
        // Sides are at most MAX_SIDE, so `side - 1` fits an i32.
        let mx = (self.width - 1) as i32;
        let my = (self.height - 1) as i32;
        TilePos::new(pos.x.clamp(0, mx), pos.y.clamp(0, my))
    }

    /// Number of live slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest slot id ever handed out: size per-slot side tables with this.
    pub fn slot_bound(&self) -> usize {
        self.slots.len()
    }

    /// True when `slot` is live.
    pub fn contains(&self, slot: Slot) -> bool {
        self.alive(slot)
    }

    /// The live slots, in id order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.flags.iter().enumerate().filter(|(_, f)| *f & ALIVE != 0).map(|(i, _)| i as Slot)
    }

    /// Position of a live slot.
    pub fn position(&self, slot: Slot) -> Option<TilePos> {
        self.data(slot).map(SlotData::pos)
    }

    /// Radius of a live slot.
    pub fn radius(&self, slot: Slot) -> Option<u32> {
        self.data(slot).map(SlotData::radius)
    }

    /// `S(slot)`: the slots within `slot`'s radius, in no particular order. Empty for a free or
    /// unknown slot.
    pub fn nearby(&self, slot: Slot) -> &[Slot] {
        match self.links.get(slot as usize) {
            Some(l) if self.alive(slot) => l.near.as_slice(),
            _ => &[],
        }
    }

    /// `R(slot)`: the slots that have `slot` in their nearby set, in no particular order.
    pub fn observers(&self, slot: Slot) -> &[Slot] {
        match self.links.get(slot as usize) {
            Some(l) if self.alive(slot) => l.obs.as_slice(),
            _ => &[],
        }
    }

    #[inline]
    fn alive(&self, slot: Slot) -> bool {
        self.flags.get(slot as usize).is_some_and(|f| f & ALIVE != 0)
    }

    /// A live slot's record; a free slot's record has radius 0 (so this reads one table).
    #[inline]
    fn data(&self, slot: Slot) -> Option<&SlotData> {
        self.slots.get(slot as usize).filter(|d| d.radius != 0)
    }

    /// Adds a slot at `pos` (clamped onto the map) with `radius` (clamped to `1..=50`) and links
    /// it with its neighbours. The new slot is dirty.
    pub fn insert(&mut self, pos: TilePos, radius: u32) -> Slot {
        let pos = self.clamp_pos(pos);
        let radius = clamp_radius(radius);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // More than u32::MAX slots cannot be allocated in practice (memory runs out first).
                let s = Slot::try_from(self.slots.len()).unwrap_or(Slot::MAX);
                self.slots.push(SlotData::default());
                self.flags.push(0);
                self.links.push(Links::default());
                s
            }
        };
        let i = slot as usize;
        let d = SlotData::new(pos, radius);
        if let Some(s) = self.slots.get_mut(i) {
            *s = d;
        }
        if let Some(f) = self.flags.get_mut(i) {
            *f = ALIVE;
        }
        self.len += 1;
        self.hist_add(radius);
        let g = &mut self.grids[usize::from(d.tier)];
        g.push(g.cell_of(pos), slot, pos, radius);
        self.recorder().dirty(slot);
        self.relink(slot, radius, None, pos);
        slot
    }

    /// Frees a slot. Every observer that had it gets a `left` pair and becomes dirty; the slot
    /// itself produces nothing more. The id is reused only after the next `take_changes`.
    pub fn remove(&mut self, slot: Slot) {
        let Some(&d) = self.data(slot) else { return };
        let i = slot as usize;
        let Some(l) = self.links.get_mut(i) else {
            return;
        };
        let near = std::mem::take(&mut l.near);
        let obs = std::mem::take(&mut l.obs);
        let mut rec = self.recorder();
        for &c in near.as_slice() {
            if let Some(l) = rec.links.get_mut(c as usize) {
                l.obs.remove(slot);
            }
        }
        for &c in obs.as_slice() {
            rec.leave(c, slot);
        }
        let g = &mut self.grids[usize::from(d.tier)];
        g.remove(g.cell_of(d.pos()), slot);
        self.hist_remove(d.radius());
        if let Some(f) = self.flags.get_mut(i) {
            // Keep DIRTY so the flag stays consistent with the pending list; take_changes drops it.
            *f &= !ALIVE;
        }
        if let Some(d) = self.slots.get_mut(i) {
            // Radius 0 marks the record free (see `data`).
            d.radius = 0;
        }
        self.len -= 1;
        self.pending_free.push(slot);
    }

    /// Moves a slot to `pos` (clamped onto the map). Any distance works (steps and teleports).
    pub fn move_to(&mut self, slot: Slot, pos: TilePos) {
        let Some(&d) = self.data(slot) else { return };
        let new = self.clamp_pos(pos);
        let old = d.pos();
        if new == old {
            return;
        }
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.set_pos(new);
        }
        self.refile(slot, d, new);
    }

    /// Applies several moves at once: the same end state as calling [`Self::move_to`] for each
    /// `(slot, pos)` in order. The moves are first applied to the slot table (independent reads
    /// the CPU overlaps) and then filed into the grid in cell order (a stable radix sort), so
    /// neighbouring moves scan the same, already cached cells. `moves` is not modified.
    ///
    /// Guarantees, compared with the calls one by one:
    /// - positions, `nearby` and `observers` sets afterwards are identical;
    /// - a slot listed more than once moves straight to its **last** position (the earlier ones
    ///   are skipped, as if it had teleported); unknown or freed slots are ignored, as by
    ///   `move_to`;
    /// - the changes handed out by the next [`Self::take_changes`] follow the same rules (net
    ///   pairs against the sets at the previous take; `dirty` holds every observer whose list
    ///   changed or one of whose members moved). Within a batch the moves of different slots
    ///   happen in an unspecified order, so `dirty` may include observers whose list changed
    ///   only transiently, exactly as the same moves issued one by one in some order would.
    pub fn move_batch(&mut self, moves: &[(Slot, TilePos)]) {
        let mut batch = std::mem::take(&mut self.batch.moves);
        batch.clear();
        let (mx, my) = ((self.width - 1) as i32, (self.height - 1) as i32);
        let fine_cells = self.grids[0].cells.len() as u32;
        // Newest first, so a slot's last move is the one kept. Each kept move is applied to the
        // slot table here (so this loop's independent random reads overlap) and filed under the
        // cell it leaves.
        for &(slot, pos) in moves.iter().rev() {
            let i = slot as usize;
            let Some(f) = self.flags.get_mut(i) else { continue };
            if *f & (ALIVE | BATCHED) != ALIVE {
                continue;
            }
            *f |= BATCHED;
            let Some(d) = self.slots.get_mut(i) else { continue };
            let old = *d;
            let new = TilePos::new(pos.x.clamp(0, mx), pos.y.clamp(0, my));
            if new == old.pos() {
                continue;
            }
            d.set_pos(new);
            let g = &self.grids[usize::from(old.tier)];
            let key = g.cell_of(old.pos()) + if old.tier == 0 { 0 } else { fine_cells };
            batch.push(BatchMove { key, slot, old, new_x: new.x as u16, new_y: new.y as u16 });
        }
        for &(slot, _) in moves {
            if let Some(f) = self.flags.get_mut(slot as usize) {
                *f &= !BATCHED;
            }
        }
        let key_bound = fine_cells + self.grids[1].cells.len() as u32;
        let BatchScratch { moves_tmp, counts, .. } = &mut self.batch;
        radix_sort(&mut batch, moves_tmp, counts, key_bound, |m| m.key);
        // The scans read only the grids, so each group's list updates are recorded as events and
        // applied afterwards in the same order (hence the same result), with the lines they
        // write touched a chunk ahead: the cache misses of a chunk overlap instead of queueing.
        let mut events = std::mem::take(&mut self.batch.events);
        let (w, h) = (self.width, self.height);
        for group in batch.chunks(BATCH_GROUP) {
            events.clear();
            // The cells the group leaves, touched together (the scans read around them).
            let mut touched = 0;
            for m in group {
                let (g, cell) = match m.key.checked_sub(fine_cells) {
                    None => (&self.grids[0], m.key),
                    Some(k) => (&self.grids[1], k),
                };
                touched ^= g.cells.get(cell as usize).map_or(0, |c| c.len as usize);
            }
            for m in group {
                let new = TilePos::new(i32::from(m.new_x), i32::from(m.new_y));
                let r_a = m.old.radius();
                self.grids[usize::from(m.old.tier)].refile(m.slot, m.old.pos(), new, r_a);
                scan_move(&self.grids, &self.tier_max, w, h, m.slot, r_a, Some(m.old.pos()), new, |hit| {
                    events.push(Event::of(m.slot, r_a, hit))
                });
            }
            let mut rec = self.recorder();
            for e in events.iter().take(TOUCH_AHEAD) {
                touched ^= rec.touch(e);
            }
            for (i, e) in events.iter().enumerate() {
                if i % TOUCH_AHEAD == 0 {
                    for e in events.iter().skip(i + TOUCH_AHEAD).take(TOUCH_AHEAD) {
                        touched ^= rec.touch(e);
                    }
                }
                rec.apply(e);
            }
            std::hint::black_box(touched);
        }
        self.batch.events = events;
        self.batch.moves = batch;
    }

    /// Moves `slot` (whose record was `d`; the slot table already holds `new`) in its grid and
    /// records what changed.
    #[inline]
    fn refile(&mut self, slot: Slot, d: SlotData, new: TilePos) {
        let (old, r) = (d.pos(), d.radius());
        self.grids[usize::from(d.tier)].refile(slot, old, new, r);
        self.relink(slot, r, Some(old), new);
    }

    /// Changes a slot's radius (clamped to `1..=50`). Only `S(slot)` can change; `R(slot)` depends
    /// on the observers' radii. The slot is dirty if its membership changed.
    pub fn set_radius(&mut self, slot: Slot, radius: u32) {
        let Some(&d) = self.data(slot) else { return };
        let new_r = clamp_radius(radius);
        let old_r = d.radius();
        if new_r == old_r {
            return;
        }
        self.hist_remove(old_r);
        self.hist_add(new_r);
        let pos = d.pos();
        let nd = SlotData::new(pos, new_r);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = nd;
        }
        let g = &mut self.grids[usize::from(d.tier)];
        let cell = g.cell_of(pos);
        if nd.tier == d.tier {
            g.update(cell, slot, pos, new_r);
        } else {
            g.remove(cell, slot);
            let g = &mut self.grids[usize::from(nd.tier)];
            g.push(g.cell_of(pos), slot, pos, new_r);
        }
        let (w, h) = (self.width, self.height);
        let Self { grids, links, flags, changes, .. } = self;
        let mut rec = Recorder { links, flags, changes };
        let area = point_area(pos);
        for g in grids.iter().filter(|g| g.count > 0) {
            g.visit(area, old_r.max(new_r), w, h, |e| {
                let dist = dist(pos, e.pos);
                let (was, is) = (dist <= old_r, dist <= new_r);
                if e.slot != slot && was != is {
                    if is {
                        rec.enter(slot, e.slot);
                    } else {
                        rec.leave(slot, e.slot);
                    }
                }
            });
        }
    }

    /// Every live slot within Chebyshev `radius` of `center` (any radius, any point, on the map
    /// or not). `out` is cleared first; order unspecified.
    pub fn query(&self, center: TilePos, radius: u32, out: &mut Vec<Slot>) {
        self.scan(point_area(center), radius, out, |e| chebyshev(center, e.pos) <= radius);
    }

    /// Every live slot within Chebyshev `radius` of the rectangle `rect` (0 = standing on it).
    /// `out` is cleared first; order unspecified. An empty rectangle matches nothing.
    pub fn query_rect(&self, rect: Rect, radius: u32, out: &mut Vec<Slot>) {
        out.clear();
        if rect.is_empty() {
            return;
        }
        let area = (i64::from(rect.x), i64::from(rect.y), rect.right() - 1, rect.bottom() - 1);
        self.scan(area, radius, out, |e| rect.distance_to(e.pos) <= radius);
    }

    fn scan(&self, area: Area, radius: u32, out: &mut Vec<Slot>, keep: impl Fn(&Entry) -> bool) {
        out.clear();
        for g in self.grids.iter().filter(|g| g.count > 0) {
            g.visit(area, radius, self.width, self.height, |e| {
                if keep(e) {
                    out.push(e.slot);
                }
            });
        }
    }

    /// Moves the changes recorded since the last call into `out` and starts a new window.
    ///
    /// The window's pairs are netted first: a pair that entered and left (or left and entered)
    /// within the window cancels out, so each pair appears at most once, in `entered` or in
    /// `left`, and the lists can be applied in any order onto the sets as they were at the
    /// previous call. Pairs whose observer was removed in the window are dropped (that observer's
    /// set is gone); its observers' `left` pairs stay. Order is unspecified. Buffers are swapped into `out` when its lists are empty (keep passing the same,
    /// cleared `ProximityChanges` for zero allocation), appended otherwise. Slots removed in the
    /// window become reusable.
    pub fn take_changes(&mut self, out: &mut ProximityChanges) {
        let Self { flags, changes, pending_free, net_scratch: (se, sl), .. } = self;
        if !pending_free.is_empty() {
            let live = |&(o, _): &(Slot, Slot)| flags.get(o as usize).is_some_and(|f| f & ALIVE != 0);
            changes.entered.retain(live);
            changes.left.retain(live);
        }
        // Only an observer with two or more events in the window can have a pair to net: set
        // those events aside, net them, and put back what survives.
        let repeated = |&(o, _): &(Slot, Slot)| flags.get(o as usize).is_some_and(|f| f & EV2 != 0);
        se.clear();
        sl.clear();
        changes.entered.retain(|p| {
            !repeated(p) || {
                se.push(*p);
                false
            }
        });
        changes.left.retain(|p| {
            !repeated(p) || {
                sl.push(*p);
                false
            }
        });
        net_pairs(se, sl);
        changes.entered.extend_from_slice(se);
        changes.left.extend_from_slice(sl);
        changes.dirty.retain(|&s| match flags.get_mut(s as usize) {
            Some(f) => {
                *f &= !(DIRTY | EV1 | EV2);
                *f & ALIVE != 0
            }
            None => false,
        });
        move_list(&mut changes.entered, &mut out.entered);
        move_list(&mut changes.left, &mut out.left);
        move_list(&mut changes.dirty, &mut out.dirty);
        self.free.append(&mut self.pending_free);
    }

    // ---- internals ----

    fn recorder(&mut self) -> Recorder<'_> {
        Recorder { links: &mut self.links, flags: &mut self.flags, changes: &mut self.changes }
    }

    /// After `slot` (radius `r_a`, already filed at `new`) moved from `old` (`None`: it was just
    /// inserted), scans each tier around both positions and records every relation that changed.
    fn relink(&mut self, slot: Slot, r_a: u32, old: Option<TilePos>, new: TilePos) {
        let (w, h) = (self.width, self.height);
        let Self { grids, links, flags, changes, tier_max, .. } = self;
        let mut rec = Recorder { links, flags, changes };
        scan_move(grids, tier_max, w, h, slot, r_a, old, new, |h| rec.relate(slot, r_a, h));
    }

    fn hist_add(&mut self, r: u32) {
        if let Some(n) = self.hist.get_mut(r as usize) {
            *n += 1;
        }
        let t = usize::from(tier_of(r));
        self.tier_max[t] = self.tier_max[t].max(r);
    }

    fn hist_remove(&mut self, r: u32) {
        if let Some(n) = self.hist.get_mut(r as usize) {
            *n = n.saturating_sub(1);
            if *n > 0 {
                return;
            }
        }
        let t = usize::from(tier_of(r));
        if self.tier_max[t] != r {
            return;
        }
        let lo = if t == 0 { MIN_RADIUS } else { SMALL_TIER_MAX_RADIUS + 1 };
        self.tier_max[t] = (lo..=r).rev().find(|&x| self.hist.get(x as usize).is_some_and(|&n| n > 0)).unwrap_or(0);
    }
}

/// Cancels pairs present in both lists, one occurrence from each side at a time, and sorts them. A pair's
/// events strictly alternate (its membership is a boolean), so what survives is its net change.
fn net_pairs(entered: &mut Vec<(Slot, Slot)>, left: &mut Vec<(Slot, Slot)>) {
    if entered.is_empty() || left.is_empty() {
        return;
    }
    // Same order as the tuples', on one integer.
    let key = |&(a, b): &(Slot, Slot)| (u64::from(a) << 32) | u64::from(b);
    entered.sort_unstable_by_key(key);
    left.sort_unstable_by_key(key);
    let (mut i, mut j) = (0, 0);
    let (mut wi, mut wj) = (0, 0);
    while i < entered.len() && j < left.len() {
        match entered[i].cmp(&left[j]) {
            std::cmp::Ordering::Less => {
                entered[wi] = entered[i];
                wi += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                left[wj] = left[j];
                wj += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    while i < entered.len() {
        entered[wi] = entered[i];
        wi += 1;
        i += 1;
    }
    while j < left.len() {
        left[wj] = left[j];
        wj += 1;
        j += 1;
    }
    entered.truncate(wi);
    left.truncate(wj);
}

/// Stable LSD radix sort of `v` by `key`, whose values are below `bound`; `tmp` and `counts` are
/// scratch. Digits of at most 11 bits keep the counts in L1; a pass whose digit is the same for
/// every item is skipped.
fn radix_sort<T: Copy + Default>(
    v: &mut Vec<T>,
    tmp: &mut Vec<T>,
    counts: &mut Vec<u32>,
    bound: u32,
    key: impl Fn(&T) -> u32,
) {
    if v.len() < 2 {
        return;
    }
    let bits = u32::BITS - bound.saturating_sub(1).leading_zeros();
    let passes = bits.div_ceil(11).max(1);
    let digit = bits.div_ceil(passes);
    let mask = (1u32 << digit) - 1;
    for pass in 0..passes {
        let shift = pass * digit;
        counts.clear();
        counts.resize(mask as usize + 1, 0);
        for x in v.iter() {
            if let Some(c) = counts.get_mut(((key(x) >> shift) & mask) as usize) {
                *c += 1;
            }
        }
        if counts.contains(&(v.len() as u32)) {
            continue;
        }
        // Counts become each bucket's first index.
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        tmp.clear();
        tmp.resize(v.len(), T::default());
        for x in v.iter() {
            if let Some(c) = counts.get_mut(((key(x) >> shift) & mask) as usize) {
                if let Some(dst) = tmp.get_mut(*c as usize) {
                    *dst = *x;
                }
                *c += 1;
            }
        }
        std::mem::swap(v, tmp);
    }
}

/// Moves `from`'s items into `to`: a buffer swap when `to` is empty, an append otherwise. `from`
/// ends empty either way, with a capacity to reuse.
fn move_list<T>(from: &mut Vec<T>, to: &mut Vec<T>) {
    if to.is_empty() {
        std::mem::swap(from, to);
    } else {
        to.append(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: i32, y: i32) -> TilePos {
        TilePos::new(x, y)
    }

    fn sorted(v: &[Slot]) -> Vec<Slot> {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    }

    fn take(ix: &mut ProximityIndex) -> ProximityChanges {
        let mut c = ProximityChanges::default();
        ix.take_changes(&mut c);
        c.entered.sort_unstable();
        c.left.sort_unstable();
        c.dirty.sort_unstable();
        c
    }

    #[test]
    fn insert_links_both_sides() {
        let mut ix = ProximityIndex::new(100, 100);
        let a = ix.insert(p(10, 10), 5);
        let b = ix.insert(p(15, 10), 5);
        let c = ix.insert(p(16, 10), 5);
        assert_eq!(ix.len(), 3);
        assert_eq!(sorted(ix.nearby(a)), vec![b]);
        assert_eq!(sorted(ix.nearby(b)), vec![a, c]);
        assert_eq!(sorted(ix.nearby(c)), vec![b]);
        assert_eq!(sorted(ix.observers(b)), vec![a, c]);
        let ch = take(&mut ix);
        assert_eq!(ch.entered, vec![(a, b), (b, a), (b, c), (c, b)]);
        assert!(ch.left.is_empty());
        assert_eq!(ch.dirty, vec![a, b, c]);
        assert!(take(&mut ix).is_empty());
    }

    #[test]
    fn move_enters_leaves_and_dirties_observers() {
        let mut ix = ProximityIndex::new(100, 100);
        let a = ix.insert(p(10, 10), 5);
        let b = ix.insert(p(14, 10), 5);
        let far = ix.insert(p(90, 90), 5);
        take(&mut ix);
        // A move within range: b's list content changed (a moved), a's membership did not.
        ix.move_to(a, p(11, 11));
        let ch = take(&mut ix);
        assert!(ch.entered.is_empty() && ch.left.is_empty());
        assert_eq!(ch.dirty, vec![b]);
        // Out of range.
        ix.move_to(a, p(3, 10));
        let ch = take(&mut ix);
        assert_eq!(ch.left, vec![(a, b), (b, a)]);
        assert_eq!(ch.dirty, vec![a, b]);
        assert!(ix.nearby(a).is_empty() && ix.observers(a).is_empty());
        // Teleport next to `far`.
        ix.move_to(a, p(95, 95));
        let ch = take(&mut ix);
        assert_eq!(ch.entered, vec![(a, far), (far, a)]);
        assert_eq!(ix.nearby(far), &[a]);
        // A move to the same tile records nothing.
        ix.move_to(a, p(95, 95));
        assert!(take(&mut ix).is_empty());
    }

    #[test]
    fn asymmetric_radii() {
        let mut ix = ProximityIndex::new(200, 200);
        let big = ix.insert(p(50, 50), 20);
        let small = ix.insert(p(60, 50), 3);
        assert_eq!(ix.nearby(big), &[small]);
        assert!(ix.nearby(small).is_empty());
        assert_eq!(ix.observers(small), &[big]);
        assert!(ix.observers(big).is_empty());
        take(&mut ix);
        // The small one moves: only `big` sees it, so only `big` is dirty.
        ix.move_to(small, p(61, 50));
        assert_eq!(take(&mut ix).dirty, vec![big]);
        // The big one moves within range of small's radius.
        ix.move_to(big, p(58, 50));
        let ch = take(&mut ix);
        assert_eq!(ch.entered, vec![(small, big)]);
        assert_eq!(ch.dirty, vec![small]);
    }

    #[test]
    fn set_radius_grows_and_shrinks_only_own_set() {
        let mut ix = ProximityIndex::new(200, 200);
        let a = ix.insert(p(100, 100), 1);
        let b = ix.insert(p(110, 100), 1);
        let c = ix.insert(p(140, 100), 1);
        take(&mut ix);
        ix.set_radius(a, 10);
        assert_eq!(ix.radius(a), Some(10));
        let ch = take(&mut ix);
        assert_eq!(ch.entered, vec![(a, b)]);
        assert_eq!(ch.dirty, vec![a]);
        assert!(ix.observers(a).is_empty());
        // Into the coarse tier and back.
        ix.set_radius(a, 999);
        assert_eq!(ix.radius(a), Some(50));
        assert_eq!(take(&mut ix).entered, vec![(a, c)]);
        ix.move_to(a, p(101, 100));
        assert_eq!(take(&mut ix).dirty, Vec::<Slot>::new());
        ix.set_radius(a, 0);
        assert_eq!(ix.radius(a), Some(1));
        let ch = take(&mut ix);
        assert_eq!(ch.left, vec![(a, b), (a, c)]);
        assert_eq!(ch.dirty, vec![a]);
        ix.set_radius(a, 1);
        assert!(take(&mut ix).is_empty());
    }

    #[test]
    fn remove_notifies_observers_and_delays_reuse() {
        let mut ix = ProximityIndex::new(50, 50);
        let a = ix.insert(p(5, 5), 5);
        let b = ix.insert(p(6, 6), 5);
        let c = ix.insert(p(7, 7), 1);
        take(&mut ix);
        ix.move_to(b, p(6, 5));
        ix.remove(b);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.position(b), None);
        assert_eq!(ix.radius(b), None);
        assert!(ix.nearby(b).is_empty() && ix.observers(b).is_empty());
        assert_eq!(ix.nearby(a), &[c]);
        assert_eq!(ix.observers(c), &[a]);
        // Not reused before take_changes.
        let d = ix.insert(p(40, 40), 5);
        assert_ne!(d, b);
        let ch = take(&mut ix);
        assert_eq!(ch.left, vec![(a, b), (c, b)]);
        assert_eq!(ch.dirty, vec![a, c, d]);
        // Reused afterwards.
        let e = ix.insert(p(41, 41), 5);
        assert_eq!(e, b);
        assert_eq!(ix.nearby(e), &[d]);
        // Removing twice, or an unknown slot, is a no-op.
        ix.remove(e);
        ix.remove(e);
        ix.remove(9999);
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn removed_slot_not_listed_dirty() {
        let mut ix = ProximityIndex::new(50, 50);
        let a = ix.insert(p(5, 5), 5);
        let b = ix.insert(p(6, 6), 5);
        ix.remove(a);
        let ch = take(&mut ix);
        assert_eq!(ch.dirty, vec![b]);
        // (a, b) is dropped with its observer; (b, a) entered and left: nets to nothing.
        assert!(ch.entered.is_empty() && ch.left.is_empty());
    }

    #[test]
    fn dirty_is_deduplicated() {
        let mut ix = ProximityIndex::new(50, 50);
        let a = ix.insert(p(10, 10), 5);
        let b = ix.insert(p(11, 10), 5);
        let c = ix.insert(p(12, 10), 5);
        for k in 0..5 {
            ix.move_to(a, p(10, 10 + k % 2));
            ix.move_to(b, p(11, 10 + k % 2));
        }
        let ch = take(&mut ix);
        assert_eq!(ch.dirty, vec![a, b, c]);
        ix.move_to(c, p(13, 10));
        ix.move_to(c, p(12, 10));
        assert_eq!(take(&mut ix).dirty, vec![a, b]);
    }

    #[test]
    fn edges_clamp_and_bad_input() {
        let mut ix = ProximityIndex::new(10, 5);
        let a = ix.insert(p(-3, 99), 0);
        assert_eq!(ix.position(a), Some(p(0, 4)));
        assert_eq!(ix.radius(a), Some(1));
        let b = ix.insert(p(i32::MAX, i32::MIN), 50);
        assert_eq!(ix.position(b), Some(p(9, 0)));
        ix.move_to(b, p(1, 3));
        assert_eq!(ix.nearby(a), &[b]);
        assert_eq!(ix.nearby(b), &[a]);
        ix.move_to(a, p(i32::MIN, i32::MAX));
        assert_eq!(ix.position(a), Some(p(0, 4)));
        // Unknown slots.
        ix.move_to(77, p(1, 1));
        ix.set_radius(77, 3);
        assert_eq!(ix.position(77), None);
        assert!(ix.nearby(77).is_empty() && ix.observers(77).is_empty());
        // A zero-sized map is a 1x1 map.
        let mut z = ProximityIndex::new(0, 0);
        let s = z.insert(p(5, 5), 5);
        assert_eq!(z.position(s), Some(p(0, 0)));
        // A huge map still builds (cells grow instead).
        let mut huge = ProximityIndex::new(u32::MAX, u32::MAX);
        let h1 = huge.insert(p(i32::MAX, i32::MAX), 50);
        let h2 = huge.insert(p(i32::MAX - 50, i32::MAX - 50), 5);
        assert_eq!(huge.nearby(h1), &[h2]);
    }

    #[test]
    fn query_point_and_rect() {
        let mut ix = ProximityIndex::new(300, 300);
        let a = ix.insert(p(0, 0), 5);
        let b = ix.insert(p(100, 100), 30);
        let c = ix.insert(p(105, 120), 5);
        let mut out = vec![42];
        ix.query(p(100, 110), 10, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![b, c]);
        ix.query(p(-5, -5), 5, &mut out);
        assert_eq!(out, vec![a]);
        ix.query(p(-1000, -1000), 5, &mut out);
        assert!(out.is_empty());
        ix.query(p(0, 0), u32::MAX, &mut out);
        assert_eq!(out.len(), 3);
        ix.query_rect(Rect::new(90, 90, 11, 11), 0, &mut out);
        assert_eq!(out, vec![b]);
        ix.query_rect(Rect::new(90, 90, 11, 11), 19, &mut out);
        assert_eq!(out, vec![b]);
        ix.query_rect(Rect::new(90, 90, 11, 11), 20, &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![b, c]);
        ix.query_rect(Rect::new(90, 90, 0, 11), 100, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn changes_are_net_per_window() {
        let mut ix = ProximityIndex::new(50, 50);
        let a = ix.insert(p(10, 10), 2);
        let b = ix.insert(p(12, 10), 2);
        take(&mut ix);
        // Leave and come back: nothing net, but both lists were touched.
        ix.move_to(b, p(13, 10));
        ix.move_to(b, p(12, 10));
        let ch = take(&mut ix);
        assert!(ch.entered.is_empty() && ch.left.is_empty());
        assert_eq!(ch.dirty, vec![a, b]);
        // Leave, come back, leave again: one net `left` per side.
        ix.move_to(b, p(13, 10));
        ix.move_to(b, p(12, 10));
        ix.move_to(b, p(20, 10));
        let ch = take(&mut ix);
        assert!(ch.entered.is_empty());
        assert_eq!(ch.left, vec![(a, b), (b, a)]);
    }

    #[test]
    fn layout_is_cache_friendly() {
        assert_eq!(std::mem::size_of::<Packed>(), 8);
        assert_eq!(std::mem::size_of::<Cell>(), 128);
        // The header shares the first cache line with the first entries.
        assert_eq!(std::mem::offset_of!(Cell, len), 0);
        assert_eq!(std::mem::offset_of!(Cell, inline), 8);
        assert_eq!(std::mem::size_of::<Links>(), 64);
    }

    #[test]
    fn crowd_spills_and_shrinks_back() {
        // 60 slots on a 6x6 patch: cells spill, lists go to the heap and come back.
        let mut ix = ProximityIndex::new(64, 64);
        let slots: Vec<Slot> = (0..60).map(|k| ix.insert(p(20 + k % 6, 20 + k / 10), 3)).collect();
        let check = |ix: &ProximityIndex| {
            for s in ix.slots() {
                let ps = ix.position(s).unwrap_or_default();
                let r = ix.radius(s).unwrap_or_default();
                let want: Vec<Slot> =
                    ix.slots().filter(|&o| o != s && ix.position(o).is_some_and(|po| chebyshev(ps, po) <= r)).collect();
                assert_eq!(sorted(ix.nearby(s)), want, "nearby({s})");
                let obs: Vec<Slot> = ix.slots().filter(|&o| o != s && ix.nearby(o).contains(&s)).collect();
                assert_eq!(sorted(ix.observers(s)), obs, "observers({s})");
            }
        };
        check(&ix);
        assert!(ix.nearby(slots[0]).len() > LIST_INLINE);
        for &s in &slots[..55] {
            ix.remove(s);
        }
        check(&ix);
        for &s in &slots[55..] {
            ix.move_to(s, p(40, 40));
            ix.set_radius(s, 50);
        }
        check(&ix);
        assert_eq!(ix.len(), 5);
    }

    #[test]
    fn take_changes_appends_when_out_is_not_empty() {
        let mut ix = ProximityIndex::new(50, 50);
        let a = ix.insert(p(1, 1), 5);
        let mut out = ProximityChanges::default();
        ix.take_changes(&mut out);
        let b = ix.insert(p(2, 2), 5);
        ix.take_changes(&mut out);
        assert_eq!(out.dirty, vec![a, b, a]);
        assert_eq!(out.entered.len(), 2);
    }

    #[test]
    fn many_in_one_cell_and_swap_remove_bookkeeping() {
        let mut ix = ProximityIndex::new(16, 16);
        let slots: Vec<Slot> = (0..20).map(|k| ix.insert(p(k % 4, k / 4), 1)).collect();
        ix.remove(slots[0]);
        ix.remove(slots[7]);
        ix.move_to(slots[19], p(15, 15));
        ix.move_to(slots[19], p(0, 0));
        for &s in &slots {
            let Some(ps) = ix.position(s) else { continue };
            let mut want: Vec<Slot> = slots
                .iter()
                .copied()
                .filter(|&o| o != s && ix.position(o).is_some_and(|po| chebyshev(ps, po) <= 1))
                .collect();
            want.sort_unstable();
            assert_eq!(sorted(ix.nearby(s)), want, "slot {s}");
        }
    }
}
