//! `POST /api/v1/game/connect-token`: a short-lived netcode connect token for the game client
//! (SPEC §7). See [`crate::game::tokens`].

use axum::Json;
use axum::extract::State;
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::AuthUser;
use crate::api::state::AppState;

/// A netcode connect token and where to use it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectTokenResponse {
    /// Standard base64 (padded) of the netcode connect token (2048 bytes). The client passes it
    /// to its netcode transport as is; it names the UDP address and carries the session keys.
    pub connect_token: String,
    /// The netcode client id sealed in the token (decimal; JSON numbers cannot hold every u64).
    #[schema(example = "1311768467294899695")]
    pub client_id: String,
    /// The game server's UDP address (also inside the token).
    #[schema(example = "127.0.0.1:5000")]
    pub server_addr: String,
    /// Seconds within which the client must connect; netcode refuses the token afterwards.
    #[schema(example = 30)]
    pub expires_in: u64,
}

/// A connect token for the caller's avatar in the game (renet over netcode UDP, secure mode).
#[utoipa::path(
    post,
    path = "/api/v1/game/connect-token",
    tag = "game",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A fresh connect token for this user", body = ConnectTokenResponse),
        (status = 401, description = "Missing, invalid or expired token, or the user no longer exists", body = ErrorBody),
        (status = 503, description = "The database did not answer", body = ErrorBody),
    )
)]
pub async fn connect_token(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
) -> ApiResult<Json<ConnectTokenResponse>> {
    let user = state
        .db
        .user_by_id(claims.sub)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "loading user for a connect token failed");
            ApiError::Unavailable("database unavailable".into())
        })?
        .ok_or_else(|| ApiError::Unauthorized("the user no longer exists".into()))?;
    let issued = state.game.issue(user.id, &user.username).map_err(ApiError::internal)?;
    Ok(Json(ConnectTokenResponse {
        connect_token: base64::engine::general_purpose::STANDARD.encode(&issued.bytes),
        client_id: issued.client_id.to_string(),
        server_addr: issued.server_addr.to_string(),
        expires_in: issued.expires_in.as_secs(),
    }))
}
