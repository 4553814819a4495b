//! The HTTP layer (axum): REST routes, the chat WebSocket, health and metrics. Handlers never
//! touch the simulation's `World`: they send [`crate::world::WorldCommand`]s and read the
//! published snapshot.
//!
//! Every error is JSON (`{"error": {"code", "message"}}`), including unknown routes, wrong
//! methods, oversized bodies and panics. Request spans carry the path only — never the query
//! string, where WebSocket tokens travel.
//!
//! The OpenAPI document (`/api/openapi.json`, UI at `/api/docs`, see [`docs`]) is generated from
//! [`ApiDoc`] below the router. **Adding a route** takes three steps:
//! 1. add it to [`router`];
//! 2. annotate its handler with `#[utoipa::path(method, path = "/full/path", tag, security(("bearer" = []))
//!    if it needs a token, params(...), request_body = T, responses((status, description, body = T), …,
//!    (status = 4xx, body = ErrorBody)))]` and derive `utoipa::ToSchema` on its request and
//!    response types (a field whose type comes from `landworld-shared` takes
//!    `#[schema(value_type = SomeDoc)]`, a mirror in [`docs`]);
//! 3. list the handler in `ApiDoc`'s `paths(...)`, and the path in the `ROUTES` list of
//!    `tests/tests/api.rs` (`openapi_lists_every_route`), which fails until the two agree.

pub mod docs;
pub mod error;
pub mod extract;
pub mod routes;
pub mod socket;
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

use docs::Setup as DocsSetup;
use error::{ApiError, ErrorBody};
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
        .route("/game/connect-token", post(routes::game::connect_token))
        .route("/ws/connect", get(ws::chat::connect))
        .route("/ws/online-users", get(routes::stats::online_users))
        .route("/ws/stats", get(routes::stats::stats));
    Router::new()
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route("/metrics", get(routes::health::metrics))
        .nest("/api/v1", api)
        .merge(docs::routes())
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

/// The OpenAPI description of every route of [`router`]: keep the two in step (see the module
/// comment).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        routes::auth::register,
        routes::auth::login,
        routes::auth::me,
        routes::lands::list,
        routes::lands::create,
        routes::lands::get,
        routes::lands::patch,
        routes::chat::sessions,
        routes::chat::history,
        routes::chat::send,
        routes::chat::delete_message,
        routes::chat::private,
        routes::chat::create_group,
        routes::chat::add_member,
        routes::chat::remove_member,
        routes::chat::remove_member_path,
        routes::chat::land_session,
        routes::chat::participants,
        routes::chat::stats,
        routes::game::connect_token,
        ws::chat::connect,
        routes::stats::online_users,
        routes::stats::stats,
        routes::health::health,
        routes::health::ready,
        routes::health::metrics,
        docs::openapi,
        docs::index,
    ),
    components(schemas(ErrorBody, error::ErrorDetail)),
    modifiers(&DocsSetup),
    tags(
        (name = "auth", description = "Accounts and access tokens"),
        (name = "lands", description = "Parcels of the map; admins create and edit them"),
        (name = "chat", description = "Chat sessions, history, sending and membership"),
        (name = "game", description = "Game clients: connect tokens for the UDP game server (see the description above)"),
        (name = "world", description = "Read models published by the simulation"),
        (name = "websocket", description = "The chat WebSocket (see the description above)"),
        (name = "operations", description = "Health, readiness, metrics and this documentation"),
    )
)]
pub struct ApiDoc;

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody::new("method_not_allowed", "method not allowed on this route");
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}
