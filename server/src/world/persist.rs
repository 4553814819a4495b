//! Position persistence without blocking the tick: avatars that moved are marked, and every
//! `position_flush` their positions go as one batch to the writer task, which upserts them in one
//! transaction. An avatar that leaves is saved at once with its user's `last_seen`; on shutdown
//! every position is flushed and the writer drains before the process exits.

use std::time::{Duration, Instant};

use bevy_app::{App, Update};
use bevy_ecs::entity::EntityHashSet;
use bevy_ecs::prelude::*;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::TickSet;
use super::avatar::Avatar;
use crate::store::positions::SavedPosition;
use crate::store::{Db, now_ms};

/// What the world sends the writer.
#[derive(Debug)]
pub enum PersistMsg {
    Positions(Vec<SavedPosition>),
    LastSeen { user_id: Uuid, at_ms: i64 },
}

/// Capacity of the channel to the writer; when full, batches wait in the world for the next try.
pub const PERSIST_QUEUE: usize = 256;

#[derive(Resource)]
pub struct PersistState {
    tx: mpsc::Sender<PersistMsg>,
    dirty: EntityHashSet,
    /// Positions of avatars that left, waiting to be handed to the writer.
    left: Vec<SavedPosition>,
    last_seen: Vec<(Uuid, i64)>,
    every: Duration,
    last_flush: Instant,
}

impl PersistState {
    pub fn new(tx: mpsc::Sender<PersistMsg>, every: Duration) -> Self {
        Self {
            tx,
            dirty: EntityHashSet::default(),
            left: Vec::new(),
            last_seen: Vec::new(),
            every,
            last_flush: Instant::now(),
        }
    }

    /// The avatar's position or radius changed.
    pub fn mark(&mut self, entity: Entity) {
        self.dirty.insert(entity);
    }

    /// The avatar left the world: save its position and the user's last-seen time now.
    pub fn leave(&mut self, pos: SavedPosition, at_ms: i64) {
        self.left.push(pos);
        self.last_seen.push((pos.user_id, at_ms));
        self.hand_over_left();
    }

    fn hand_over_left(&mut self) {
        if !self.left.is_empty() {
            let batch = std::mem::take(&mut self.left);
            if let Err(mpsc::error::TrySendError::Full(PersistMsg::Positions(batch))) =
                self.tx.try_send(PersistMsg::Positions(batch))
            {
                self.left = batch;
            }
        }
        while let Some(&(user_id, at_ms)) = self.last_seen.last() {
            match self.tx.try_send(PersistMsg::LastSeen { user_id, at_ms }) {
                Err(mpsc::error::TrySendError::Full(_)) => break,
                _ => {
                    self.last_seen.pop();
                }
            }
        }
    }
}

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Update, persist_positions.in_set(TickSet::Persist));
}

fn persist_positions(avatars: Query<&Avatar>, mut state: ResMut<PersistState>) {
    state.hand_over_left();
    if state.last_flush.elapsed() < state.every || state.dirty.is_empty() {
        return;
    }
    let batch: Vec<SavedPosition> = state
        .dirty
        .iter()
        .filter_map(|&e| avatars.get(e).ok())
        .map(|a| SavedPosition { user_id: a.user_id, x: a.pos.x, y: a.pos.y, radius: a.radius })
        .collect();
    match state.tx.try_send(PersistMsg::Positions(batch)) {
        Ok(()) => {
            state.dirty.clear();
            state.last_flush = Instant::now();
        }
        // The writer is behind: keep the marks and try again next tick.
        Err(mpsc::error::TrySendError::Full(_)) => {}
        Err(mpsc::error::TrySendError::Closed(_)) => state.dirty.clear(),
    }
}

/// Shutdown: hands every avatar's position (and pending leaves) to the writer, waiting for room.
pub fn flush_all(world: &mut World) {
    let mut q = world.query::<&Avatar>();
    let all: Vec<SavedPosition> =
        q.iter(world).map(|a| SavedPosition { user_id: a.user_id, x: a.pos.x, y: a.pos.y, radius: a.radius }).collect();
    let now = now_ms();
    let online: Vec<Uuid> = all.iter().map(|p| p.user_id).collect();
    let mut state = world.resource_mut::<PersistState>();
    let mut batch = std::mem::take(&mut state.left);
    batch.extend(all);
    let mut seen = std::mem::take(&mut state.last_seen);
    seen.extend(online.into_iter().map(|u| (u, now)));
    let tx = state.tx.clone();
    let count = batch.len();
    if tx.blocking_send(PersistMsg::Positions(batch)).is_err() && count > 0 {
        tracing::error!("position writer is gone; {count} positions not saved");
    }
    for (user_id, at_ms) in seen {
        let _ = tx.blocking_send(PersistMsg::LastSeen { user_id, at_ms });
    }
    tracing::info!(positions = count, "positions flushed");
}

/// The writer task: applies batches in order until every sender is gone.
pub async fn run_writer(db: Db, mut rx: mpsc::Receiver<PersistMsg>) {
    while let Some(msg) = rx.recv().await {
        let result = match &msg {
            PersistMsg::Positions(batch) => db.save_positions(batch, now_ms()).await,
            PersistMsg::LastSeen { user_id, at_ms } => db.set_last_seen(*user_id, *at_ms).await,
        };
        if let Err(e) = result {
            // Positions are best-effort state: log and carry on (the next flush rewrites them).
            tracing::error!(error = %e, "saving positions failed");
        }
    }
}
