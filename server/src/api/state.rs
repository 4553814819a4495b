//! Shared state of the HTTP layer: the database, token keys, the world handle, game connect
//! tokens and settings.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenKeys;
use crate::chat::Chat;
use crate::config::Config;
use crate::game::tokens::GameTokens;
use crate::store::Db;
use crate::world::WorldHandle;

/// What every request and connection shares, behind one `Arc`: cloning it (once per request,
/// and kept by every WebSocket connection for its lifetime) is one reference count, and an
/// idle connection carries 8 bytes of it instead of the whole struct. Fields are reached through
/// `Deref` (`state.db`).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub db: Db,
    pub keys: TokenKeys,
    pub world: WorldHandle,
    pub chat: Chat,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// Issues game connect tokens.
    pub game: GameTokens,
    /// Cancelled when the server starts shutting down (connections close with 1001).
    pub shutdown: CancellationToken,
    /// Tracks WebSocket connection tasks so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Serializes land edits so overlap checks and writes do not race.
    pub land_lock: Arc<tokio::sync::Mutex<()>>,
}
