//! `GET /api/v1/ws/online-users` and `GET /api/v1/ws/stats`, read from the world's published
//! snapshot (never from the tick itself).

use axum::Json;
use axum::extract::State;
use landworld_shared::protocol::ws::{Position, Status};
use serde::Serialize;
use uuid::Uuid;

use crate::api::extract::AuthUser;
use crate::api::state::AppState;
use crate::store::ms_to_rfc3339;

#[derive(Debug, Serialize)]
pub struct OnlineUserView {
    pub user_id: Uuid,
    pub username: String,
    pub status: Status,
    pub last_seen: String,
    pub position: Position,
    pub connection_count: usize,
}

#[derive(Debug, Serialize)]
pub struct OnlineUsers {
    pub users: Vec<OnlineUserView>,
    pub total: usize,
}

pub async fn online_users(State(state): State<AppState>, _user: AuthUser) -> Json<OnlineUsers> {
    let snapshot = state.world.snapshot.load();
    let users: Vec<OnlineUserView> = snapshot
        .users
        .iter()
        .map(|u| OnlineUserView {
            user_id: u.user_id,
            username: u.username.to_string(),
            status: u.status,
            last_seen: ms_to_rfc3339(u.status_since),
            position: u.position,
            connection_count: u.connection_count,
        })
        .collect();
    Json(OnlineUsers { total: users.len(), users })
}

#[derive(Debug, Serialize)]
pub struct WsStats {
    pub connections: usize,
    pub users_online: usize,
    pub avatars: usize,
    pub rooms: usize,
    pub messages_per_second: f64,
    pub tick: u64,
    pub tick_hz: u32,
}

pub async fn stats(State(state): State<AppState>, _user: AuthUser) -> Json<WsStats> {
    let snapshot = state.world.snapshot.load();
    Json(WsStats {
        connections: snapshot.connections,
        users_online: snapshot.users.iter().filter(|u| u.status != Status::Offline).count(),
        avatars: snapshot.avatars,
        rooms: snapshot.active_land_rooms,
        messages_per_second: state.chat.messages_per_second(),
        tick: snapshot.tick,
        tick_hz: state.world.tick_hz,
    })
}
