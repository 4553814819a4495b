//! Request extractors: JSON bodies, paths and queries whose rejections are API errors, and the
//! bearer-token user.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use super::state::AppState;
use crate::auth::Claims;

/// `axum::Json` with rejections turned into [`ApiError`] (400 syntax, 422 data, 413 size).
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The caller, from `Authorization: Bearer <jwt>`.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized("invalid authorization header".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthorized("expected a bearer token".into()))?;
        let claims =
            state.keys.verify(token.trim()).map_err(|_| ApiError::Unauthorized("invalid or expired token".into()))?;
        Ok(AuthUser(claims))
    }
}

/// An admin caller.
#[derive(Debug, Clone)]
pub struct AdminUser(pub Claims);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(claims) = AuthUser::from_request_parts(parts, state).await?;
        if !claims.is_admin() {
            return Err(ApiError::Forbidden("admin role required".into()));
        }
        Ok(AdminUser(claims))
    }
}
