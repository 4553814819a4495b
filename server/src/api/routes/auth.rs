//! `POST /api/v1/auth/register`, `POST /api/v1/auth/login`, `GET /api/v1/auth/me`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use landworld_shared::limits;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{ApiJson, AuthUser};
use crate::api::state::AppState;
use crate::auth;
use crate::store::users::UserRow;
use crate::store::{Db, StoreError, ms_to_rfc3339, now_ms};

#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub created_at: String,
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

#[derive(Debug, Serialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: UserView,
}

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

pub async fn me(State(state): State<AppState>, AuthUser(claims): AuthUser) -> ApiResult<Json<UserView>> {
    let user =
        state.db.user_by_id(claims.sub).await?.ok_or_else(|| ApiError::Unauthorized("user no longer exists".into()))?;
    Ok(Json(UserView::from(&user)))
}
