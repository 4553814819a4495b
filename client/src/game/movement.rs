//! Walking: arrow keys or WASD step the own avatar one tile at a time (diagonals by holding
//! two keys), with client-side prediction and reconciliation.
//!
//! - **Prediction**: a step onto a tile the shared [`WorldMap`] says is walkable moves the own
//!   avatar at once and sends [`ClientMessage::Move`]; a few steps may be in flight.
//! - **Reconciliation**: the server answers every move in order, `Moved` (the confirmed
//!   position) or an `invalid_position` / `rate_limited` error. A refused move puts the avatar
//!   back on the confirmed tile and forgets the moves predicted after it (their answers are
//!   skipped). Snapshots carry the server's view of our position: with nothing in flight it is
//!   the truth, and a move unanswered for [`STALE`] is given up in its favour.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use landworld_shared::protocol::game::{ClientMessage, ServerMessage};
use landworld_shared::world::{TilePos, WorldMap};

use crate::app::World;
use crate::net::link::NetEvent;
use crate::net::{FromServer, Net};
use crate::ui::chat::ChatInput;

/// Time between steps while a key is held.
pub const STEP_EVERY: Duration = Duration::from_millis(140);
/// Moves in flight at most (the server applies one per tick).
const MAX_IN_FLIGHT: usize = 4;
/// A move unanswered this long is considered lost.
const STALE: Duration = Duration::from_secs(2);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Prediction>()
        .init_resource::<StepClock>()
        .add_systems(Update, (reconcile, reconcile_with_snapshot, walk).chain());
}

/// The own avatar's position: confirmed by the server, and predicted.
#[derive(Resource, Debug, Default)]
pub struct Prediction {
    /// The last position the server confirmed.
    pub confirmed: Option<TilePos>,
    /// Where the avatar is shown: the confirmed tile plus the moves in flight.
    pub predicted: Option<TilePos>,
    /// Moves sent and not answered yet, oldest first.
    in_flight: VecDeque<(TilePos, Instant)>,
    /// Answers to skip: moves sent after a refused one, already forgotten.
    skip_answers: usize,
}

impl Prediction {
    /// A (re)connection placed the avatar.
    pub fn reset(&mut self, at: TilePos) {
        *self = Self { confirmed: Some(at), predicted: Some(at), ..Self::default() };
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Predicts a step by `(dx, dy)`; returns the tile to send, or `None` when the step is not
    /// possible (not walkable, off the map, too many moves in flight, not in the world yet).
    pub fn step(&mut self, map: &WorldMap, dx: i32, dy: i32, now: Instant) -> Option<TilePos> {
        let from = self.predicted?;
        if (dx, dy) == (0, 0) || self.in_flight.len() >= MAX_IN_FLIGHT {
            return None;
        }
        let to = TilePos::new(from.x.checked_add(dx)?, from.y.checked_add(dy)?);
        if !map.is_walkable(to) {
            return None;
        }
        self.predicted = Some(to);
        self.in_flight.push_back((to, now));
        Some(to)
    }

    /// The server moved us to `at` (an answer to the oldest move in flight, or a move made by
    /// another connection of the same user).
    pub fn on_moved(&mut self, at: TilePos) {
        self.confirmed = Some(at);
        if self.skip_answers > 0 {
            self.skip_answers -= 1;
        } else if let Some(k) = self.in_flight.iter().position(|(p, _)| *p == at) {
            self.in_flight.drain(..=k);
        } else {
            self.in_flight.clear();
        }
        if self.in_flight.is_empty() {
            self.predicted = Some(at);
        }
    }

    /// The server refused the oldest move in flight.
    pub fn on_refused(&mut self) {
        if self.skip_answers > 0 {
            self.skip_answers -= 1;
            return;
        }
        if self.in_flight.pop_front().is_none() {
            return; // not one of ours
        }
        self.skip_answers = self.in_flight.len();
        self.in_flight.clear();
        self.predicted = self.confirmed;
    }

    /// A snapshot placed us at `at`.
    pub fn on_snapshot(&mut self, at: TilePos, now: Instant) {
        let stale = self.in_flight.front().is_some_and(|&(_, sent)| now.saturating_duration_since(sent) > STALE);
        if stale {
            self.in_flight.clear();
            self.skip_answers = 0;
        }
        if self.in_flight.is_empty() && self.skip_answers == 0 {
            self.confirmed = Some(at);
            self.predicted = Some(at);
        }
    }
}

/// When the next step may be taken while a key is held.
#[derive(Resource, Default)]
struct StepClock {
    next: Option<Instant>,
}

fn is_move_error(code: &str, reference: Option<&str>) -> bool {
    code == "invalid_position" || (code == "rate_limited" && reference == Some("move"))
}

fn reconcile(mut events: MessageReader<FromServer>, mut prediction: ResMut<Prediction>) {
    for FromServer(event) in events.read() {
        match event {
            NetEvent::Game(ServerMessage::Welcome { x, y, .. }) => prediction.reset(TilePos::new(*x, *y)),
            NetEvent::Game(ServerMessage::Moved { x, y, .. }) => prediction.on_moved(TilePos::new(*x, *y)),
            NetEvent::Game(ServerMessage::Error { code, reference, .. })
                if is_move_error(code, reference.as_deref()) =>
            {
                prediction.on_refused();
            }
            _ => {}
        }
    }
}

fn reconcile_with_snapshot(net: Res<Net>, mut prediction: ResMut<Prediction>, mut last_tick: Local<Option<u32>>) {
    let Some(link) = net.link() else { return };
    let own = link.replica().own;
    if let Some((tick, at)) = own
        && *last_tick != Some(tick)
    {
        *last_tick = Some(tick);
        prediction.on_snapshot(at, Instant::now());
    }
}

fn walk(
    keys: Res<ButtonInput<KeyCode>>,
    input: Res<ChatInput>,
    net: Res<Net>,
    world: Res<World>,
    mut prediction: ResMut<Prediction>,
    mut clock: ResMut<StepClock>,
) {
    if !net.is_online() || input.focused {
        return;
    }
    let mut dx = 0;
    let mut dy = 0;
    if keys.any_pressed([KeyCode::ArrowLeft, KeyCode::KeyA]) {
        dx -= 1;
    }
    if keys.any_pressed([KeyCode::ArrowRight, KeyCode::KeyD]) {
        dx += 1;
    }
    if keys.any_pressed([KeyCode::ArrowUp, KeyCode::KeyW]) {
        dy -= 1;
    }
    if keys.any_pressed([KeyCode::ArrowDown, KeyCode::KeyS]) {
        dy += 1;
    }
    let now = Instant::now();
    if (dx, dy) == (0, 0) {
        clock.next = None;
        return;
    }
    if clock.next.is_some_and(|t| now < t) {
        return;
    }
    // Along a wall, a diagonal slides along the free axis.
    let tries = [(dx, dy), (dx, 0), (0, dy)];
    for (sx, sy) in tries {
        if let Some(to) = prediction.step(&world.0, sx, sy, now) {
            net.send(ClientMessage::Move { x: to.x, y: to.y });
            break;
        }
    }
    clock.next = Some(now + STEP_EVERY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(x: i32, y: i32) -> TilePos {
        TilePos::new(x, y)
    }

    #[test]
    fn steps_are_predicted_and_confirmed() {
        let map = WorldMap::open(10, 10);
        let now = Instant::now();
        let mut pr = Prediction::default();
        assert_eq!(pr.step(&map, 1, 0, now), None, "not in the world yet");
        pr.reset(p(5, 5));
        assert_eq!(pr.step(&map, 1, 0, now), Some(p(6, 5)));
        assert_eq!(pr.step(&map, 1, 1, now), Some(p(7, 6)));
        assert_eq!(pr.predicted, Some(p(7, 6)));
        pr.on_moved(p(6, 5));
        assert_eq!((pr.confirmed, pr.predicted), (Some(p(6, 5)), Some(p(7, 6))));
        // A snapshot lagging behind the moves in flight changes nothing.
        pr.on_snapshot(p(5, 5), now);
        assert_eq!(pr.predicted, Some(p(7, 6)));
        pr.on_moved(p(7, 6));
        assert_eq!(pr.in_flight(), 0);
        // Off the map: not predicted, not sent.
        pr.reset(p(9, 9));
        assert_eq!(pr.step(&map, 1, 0, now), None);
        assert_eq!(pr.predicted, Some(p(9, 9)));
    }

    #[test]
    fn a_refused_move_rolls_back_and_skips_the_answers_after_it() {
        let map = WorldMap::open(10, 10);
        let now = Instant::now();
        let mut pr = Prediction::default();
        pr.reset(p(2, 2));
        pr.step(&map, 1, 0, now);
        pr.step(&map, 1, 0, now);
        pr.step(&map, 1, 0, now);
        pr.on_refused();
        assert_eq!(pr.predicted, Some(p(2, 2)));
        // The two later moves are answered (refused) too; those answers are skipped.
        pr.step(&map, 0, 1, now);
        pr.on_refused();
        pr.on_refused();
        assert_eq!(pr.predicted, Some(p(2, 3)), "the new move is still in flight");
        pr.on_moved(p(2, 3));
        assert_eq!((pr.confirmed, pr.predicted, pr.in_flight()), (Some(p(2, 3)), Some(p(2, 3)), 0));
    }

    #[test]
    fn snapshots_correct_an_idle_avatar_and_lost_moves() {
        let map = WorldMap::open(10, 10);
        let now = Instant::now();
        let mut pr = Prediction::default();
        pr.reset(p(1, 1));
        pr.on_snapshot(p(4, 4), now);
        assert_eq!(pr.predicted, Some(p(4, 4)), "moved by the server (another connection)");
        pr.step(&map, 1, 0, now);
        pr.on_snapshot(p(4, 4), now + Duration::from_millis(100));
        assert_eq!(pr.predicted, Some(p(5, 4)));
        pr.on_snapshot(p(4, 4), now + STALE + Duration::from_millis(1));
        assert_eq!((pr.predicted, pr.in_flight()), (Some(p(4, 4)), 0));
        // Never more than a few moves ahead of the server.
        for _ in 0..MAX_IN_FLIGHT {
            assert!(pr.step(&map, 0, 1, now).is_some());
        }
        assert_eq!(pr.step(&map, 0, 1, now), None);
    }
}
