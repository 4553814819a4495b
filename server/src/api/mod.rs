//! The HTTP layer (axum): REST routes, the chat WebSocket, health and metrics. Handlers never
//! touch the simulation's `World`: they send [`crate::world::WorldCommand`]s and read the
//! published snapshot.
//!
//! Every error is JSON (`{"error": {"code", "message"}}`), including unknown routes, wrong
//! methods, oversized bodies and panics. Request spans carry the path only — never the query
//! string, where WebSocket tokens travel.

pub mod error;
pub mod extract;
pub mod routes;
pub mod state;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use error::ApiError;
use state::AppState;

/// Largest REST request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/auth/register", post(routes::auth::register))
        .route("/auth/login", post(routes::auth::login))
        .route("/auth/me", get(routes::auth::me))
        .route("/lands", get(routes::lands::list).post(routes::lands::create))
        .route("/lands/{id}", get(routes::lands::get).patch(routes::lands::patch))
        .route("/chat/sessions", get(routes::chat::sessions))
        .route("/chat/sessions/{id}/messages", get(routes::chat::history).post(routes::chat::send))
        .route("/chat/sessions/{id}/messages/{message_id}", delete(routes::chat::delete_message))
        .route("/chat/private", post(routes::chat::private))
        .route("/chat/groups", post(routes::chat::create_group))
        .route("/chat/groups/{id}/members", post(routes::chat::add_member).delete(routes::chat::remove_member))
        .route("/chat/groups/{id}/members/{user_id}", delete(routes::chat::remove_member_path))
        .route("/chat/land/{land_id}/participants", get(routes::chat::participants))
        .route("/chat/land/{land_id}/session", post(routes::chat::land_session))
        .route("/chat/stats", get(routes::chat::stats))
        .route("/ws/connect", get(ws::chat::connect))
        .route("/ws/online-users", get(routes::stats::online_users))
        .route("/ws/stats", get(routes::stats::stats));
    Router::new()
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route("/metrics", get(routes::health::metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let request_id =
                        req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    // The path only: the query string may hold a token.
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id)
                })
                .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_millis() as u64,
                        "response"
                    );
                    metrics::counter!("landworld_http_responses_total", "status" => res.status().as_u16().to_string())
                        .increment(1);
                }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    let body =
        serde_json::json!({ "error": { "code": "method_not_allowed", "message": "method not allowed on this route" } });
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
