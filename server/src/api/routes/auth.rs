//! `POST /api/v1/auth/register`, `POST /api/v1/auth/login`, `GET /api/v1/auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use landworld_shared::limits;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult, ErrorBody};
use crate::api::extract::{ApiJson, AuthUser};
use crate::api::state::AppState;
use crate::auth;
use crate::store::users::UserRow;
use crate::store::{Db, StoreError, ms_to_rfc3339, now_ms};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3..=32 characters of `[a-zA-Z0-9_.-]`, unique case-insensitively.
    #[schema(example = "alice", min_length = 3, max_length = 32, pattern = "^[a-zA-Z0-9_.-]+$")]
    pub username: String,
    /// At least 8 characters.
    #[schema(example = "wonderland", min_length = 8)]
    pub password: String,
    /// Shown instead of the username; defaults to it.
    #[schema(example = "Alice")]
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "wonderland")]
    pub password: String,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    #[schema(example = "alice")]
    pub username: String,
    #[schema(example = "Alice")]
    pub display_name: String,
    /// `user` or `admin`.
    #[schema(example = "user")]
    pub role: String,
    /// RFC 3339 timestamp.
    #[schema(example = "2025-01-01T12:00:00.000Z")]
    pub created_at: String,
    /// RFC 3339 timestamp of the last disconnect, if any.
    pub last_seen: Option<String>,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        Self {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone().unwrap_or_else(|| u.username.clone()),
            role: u.role.clone(),
            created_at: ms_to_rfc3339(u.created_at),
            last_seen: u.last_seen.map(ms_to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// A signed JWT (HS256): send it as `Authorization: Bearer <token>`, or as `?token=` on
    /// WebSocket URLs.
    pub access_token: String,
    #[schema(value_type = String, example = "bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    #[schema(example = 86400)]
    pub expires_in: u64,
    pub user: UserView,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user", body = UserView),
        (status = 400, description = "Malformed JSON or missing content type", body = ErrorBody),
        (status = 409, description = "Username already taken", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Invalid username, password or display name", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = create_user(&state.db, &req.username, &req.password, req.display_name.as_deref(), "user").await?;
    tracing::info!(user_id = %user.id, username = %user.username, "user registered");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

/// Validates and creates an account (also used by `create-admin`).
pub async fn create_user(
    db: &Db,
    username: &str,
    password: &str,
    display_name: Option<&str>,
    role: &str,
) -> ApiResult<UserRow> {
    limits::validate_username(username).map_err(ApiError::Validation)?;
    limits::validate_password(password).map_err(ApiError::Validation)?;
    if let Some(name) = display_name {
        limits::validate_display_name(name).map_err(ApiError::Validation)?;
    }
    if db.user_by_username(username).await?.is_some() {
        return Err(ApiError::Conflict("username already taken".into()));
    }
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let user = UserRow {
        id: Uuid::new_v4(),
        username: username.to_string(),
        display_name: display_name.map(|n| n.trim().to_string()),
        password_hash: hash,
        role: role.to_string(),
        created_at: now_ms(),
        last_seen: None,
    };
    match db.insert_user(&user).await {
        Ok(()) => Ok(user),
        Err(StoreError::Conflict) => Err(ApiError::Conflict("username already taken".into())),
        Err(e) => Err(e.into()),
    }
}

/// Exchanges a username and password for an access token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "An access token and the user", body = LoginResponse),
        (status = 400, description = "Malformed JSON or missing content type", body = ErrorBody),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Missing or mistyped fields", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let invalid = || ApiError::Unauthorized("invalid username or password".into());
    if req.password.len() > limits::PASSWORD_MAX || req.username.len() > 256 {
        return Err(invalid());
    }
    let user = state.db.user_by_username(&req.username).await?;
    let hash = user.as_ref().map_or_else(|| auth::dummy_hash().to_string(), |u| u.password_hash.clone());
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(u) if ok => u,
        _ => return Err(invalid()),
    };
    let access_token = state.keys.issue(user.id, &user.username, &user.role).map_err(ApiError::internal)?;
    Ok(Json(LoginResponse {
        access_token,
        token_type: "bearer",
        expires_in: state.keys.ttl().as_secs(),
        user: UserView::from(&user),
    }))
}

/// The caller.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The signed-in user", body = UserView),
        (status = 401, description = "Missing, invalid or expired token, or the user no longer exists", body = ErrorBody),
    )
)]
pub async fn me(State(state): State<AppState>, AuthUser(claims): AuthUser) -> ApiResult<Json<UserView>> {
    let user =
        state.db.user_by_id(claims.sub).await?.ok_or_else(|| ApiError::Unauthorized("user no longer exists".into()))?;
    Ok(Json(UserView::from(&user)))
}
