//! Movement: applies at most one queued move per avatar per tick after validating it (inside the
//! map, on a walkable tile, at most `max_step` tiles Chebyshev from the current position). A
//! rejected move answers `error` `invalid_position` on the connection that sent it; an accepted
//! one moves the avatar and answers `location_updated`.
//!
//! Every accepted step of a tick, the users' here and the simulated avatars' ([`super::bots`]),
//! goes through [`accept_step`]: the avatar's position and land change at once, and the step is
//! queued in [`StepBatch`]. At the end of [`TickSet::Simulate`], [`apply_steps`] hands the whole
//! tick's steps to the proximity index in one [`ProximityIndex::move_batch`] (the same sets and
//! net changes as moving them one by one, filed in grid order). Nothing reads the index between
//! the moves and that flush.
//!
//! [`ProximityIndex::move_batch`]: landworld_shared::world::ProximityIndex::move_batch

use bevy_app::{App, Update};
use bevy_ecs::prelude::*;
use landworld_shared::protocol::ws::{ServerFrame, error_code};
use landworld_shared::world::{Slot, TilePos, WorldMap, chebyshev};

use super::avatar::{Avatar, PendingMovers, Proximity};
use super::lands::{LandChanged, Lands};
use super::persist::PersistState;
use super::{Map, TickSet, WorldSettings};

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<StepBatch>();
    app.add_systems(Update, apply_moves.in_set(TickSet::Simulate));
    app.add_systems(Update, apply_steps.in_set(TickSet::ApplySteps));
}

/// The accepted steps of the current tick, `(slot, new position)` in the order they were
/// accepted, waiting for [`apply_steps`].
#[derive(Resource, Default, Debug)]
pub struct StepBatch(pub Vec<(Slot, TilePos)>);

/// Applies one validated step of `avatar` (owned by `entity`) to `to`: moves the avatar, queues
/// the step for the proximity index, and announces a land change. Returns whether the position
/// changed (a step onto the current tile is accepted but moves nothing).
pub fn accept_step(
    entity: Entity,
    avatar: &mut Avatar,
    to: TilePos,
    lands: &Lands,
    steps: &mut StepBatch,
    land_changes: &mut MessageWriter<LandChanged>,
) -> bool {
    let moved = to != avatar.pos;
    if moved {
        steps.0.push((avatar.slot, to));
        avatar.pos = to;
    }
    let land = lands.land_at(to);
    if land != avatar.land {
        land_changes.write(LandChanged { entity, from: avatar.land, to: land });
    }
    moved
}

/// Hands the tick's accepted steps to the proximity index in one batch.
fn apply_steps(mut steps: ResMut<StepBatch>, mut prox: ResMut<Proximity>) {
    if steps.0.is_empty() {
        return;
    }
    prox.index.move_batch(&steps.0);
    steps.0.clear();
}

/// Why a move was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum MoveError {
    OutsideMap,
    NotWalkable,
    TooFar { distance: u32, max: u32 },
}

impl MoveError {
    pub fn message(&self) -> String {
        match self {
            MoveError::OutsideMap => "position is outside the map".into(),
            MoveError::NotWalkable => "that tile is not walkable".into(),
            MoveError::TooFar { distance, max } => {
                format!("move of {distance} tiles exceeds the limit of {max} per tick")
            }
        }
    }
}

/// The movement rule, shared by WebSocket and game-client moves.
pub fn validate_move(map: &WorldMap, from: TilePos, to: TilePos, max_step: u32) -> Result<(), MoveError> {
    if !map.in_bounds(to) {
        return Err(MoveError::OutsideMap);
    }
    if !map.is_walkable(to) {
        return Err(MoveError::NotWalkable);
    }
    let distance = chebyshev(from, to);
    if distance > max_step {
        return Err(MoveError::TooFar { distance, max: max_step });
    }
    Ok(())
}

fn apply_moves(
    mut avatars: Query<&mut Avatar>,
    mut movers: ResMut<PendingMovers>,
    mut still_moving: Local<Vec<Entity>>,
    map: Res<Map>,
    settings: Res<WorldSettings>,
    lands: Res<Lands>,
    mut steps: ResMut<StepBatch>,
    mut persist: ResMut<PersistState>,
    mut land_changes: MessageWriter<LandChanged>,
) {
    still_moving.clear();
    for entity in movers.0.drain(..) {
        let Ok(mut avatar) = avatars.get_mut(entity) else { continue };
        let Some(mv) = avatar.pending_moves.pop_front() else { continue };
        if !avatar.pending_moves.is_empty() {
            still_moving.push(entity);
        }
        match validate_move(&map.0, avatar.pos, mv.to, settings.max_step) {
            Err(err) => {
                metrics::counter!("landworld_moves_rejected_total").increment(1);
                if let Some(conn) = avatar.conn(mv.conn_id) {
                    conn.send_frame(&ServerFrame::error(
                        error_code::INVALID_POSITION,
                        err.message(),
                        Some("update_location".into()),
                    ));
                }
            }
            Ok(()) => {
                metrics::counter!("landworld_moves_accepted_total").increment(1);
                if accept_step(entity, &mut avatar, mv.to, &lands, &mut steps, &mut land_changes) {
                    persist.mark(entity);
                }
                let position = lands.position_of(mv.to);
                avatar.send_frame(&ServerFrame::LocationUpdated {
                    x: position.x,
                    y: position.y,
                    land_id: position.land_id,
                });
            }
        }
    }
    movers.0.extend(still_moving.drain(..));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rules() {
        let map = WorldMap::open(10, 10);
        let at = TilePos::new(5, 5);
        assert_eq!(validate_move(&map, at, TilePos::new(6, 6), 1), Ok(()));
        assert_eq!(validate_move(&map, at, TilePos::new(5, 5), 1), Ok(()));
        assert_eq!(validate_move(&map, at, TilePos::new(7, 5), 1), Err(MoveError::TooFar { distance: 2, max: 1 }));
        assert_eq!(validate_move(&map, at, TilePos::new(7, 5), 2), Ok(()));
        assert_eq!(validate_move(&map, at, TilePos::new(-1, 5), 9), Err(MoveError::OutsideMap));
        assert_eq!(validate_move(&map, at, TilePos::new(5, 10), 9), Err(MoveError::OutsideMap));
    }
}
