//! `GET /health` (live), `GET /ready` (database reachable), `GET /metrics` (Prometheus text).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::api::error::{ApiError, ApiResult};
use crate::api::state::AppState;

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    match tokio::time::timeout(std::time::Duration::from_secs(3), state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready", "database": state.db.backend() }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable("database unreachable".into()))
        }
        Err(_) => Err(ApiError::Unavailable("database did not answer in time".into())),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.world.snapshot.load();
    metrics::gauge!("landworld_users_online").set(snapshot.users.len() as f64);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
