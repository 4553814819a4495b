//! Lands: `GET /api/v1/lands`, `GET /api/v1/lands/{id}`; admins `POST` and `PATCH`.
//! Lands must lie inside the map and must not overlap; edits reach the simulation at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use landworld_shared::limits;
use landworld_shared::world::Rect;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{AdminUser, ApiJson, ApiPath, AuthUser};
use crate::api::state::AppState;
use crate::store::lands::LandRow;
use crate::store::{ms_to_rfc3339, now_ms};
use crate::world::WorldCommand;
use crate::world::lands::LandInfo;

#[derive(Debug, Serialize)]
pub struct LandView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub owner_id: Option<Uuid>,
    pub created_at: String,
}

impl From<&LandRow> for LandView {
    fn from(l: &LandRow) -> Self {
        Self {
            id: l.id,
            name: l.name.clone(),
            description: l.description.clone(),
            x: l.x,
            y: l.y,
            width: l.width,
            height: l.height,
            owner_id: l.owner_id,
            created_at: ms_to_rfc3339(l.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LandList {
    pub lands: Vec<LandView>,
    pub total: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLand {
    pub name: String,
    pub description: Option<String>,
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub owner_id: Option<Uuid>,
}

/// A partial update; `owner_id`/`description` may be set to `null` explicitly.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchLand {
    pub name: Option<String>,
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    pub x: Option<i32>,
    pub y: Option<i32>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    #[serde(default, with = "double_option")]
    pub owner_id: Option<Option<Uuid>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(de).map(Some)
    }
}

pub async fn list(State(state): State<AppState>, _user: AuthUser) -> ApiResult<Json<LandList>> {
    let lands: Vec<LandView> = state.db.list_lands().await?.iter().map(LandView::from).collect();
    Ok(Json(LandList { total: lands.len(), lands }))
}

pub async fn get(
    State(state): State<AppState>,
    _user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<LandView>> {
    let land = state.db.land_by_id(id).await?.ok_or_else(|| ApiError::NotFound("land not found".into()))?;
    Ok(Json(LandView::from(&land)))
}

pub async fn create(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(req): ApiJson<CreateLand>,
) -> ApiResult<(StatusCode, Json<LandView>)> {
    let _guard = state.land_lock.lock().await;
    let land = LandRow {
        id: Uuid::new_v4(),
        name: req.name.trim().to_string(),
        description: req.description,
        x: req.x,
        y: req.y,
        width: req.width,
        height: req.height,
        owner_id: req.owner_id,
        created_at: now_ms(),
    };
    validate_land(&state, &land).await?;
    state.db.insert_land(&land).await?;
    notify_world(&state, &land).await;
    tracing::info!(land_id = %land.id, name = %land.name, "land created");
    Ok((StatusCode::CREATED, Json(LandView::from(&land))))
}

pub async fn patch(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<PatchLand>,
) -> ApiResult<Json<LandView>> {
    let _guard = state.land_lock.lock().await;
    let mut land = state.db.land_by_id(id).await?.ok_or_else(|| ApiError::NotFound("land not found".into()))?;
    if let Some(name) = req.name {
        land.name = name.trim().to_string();
    }
    if let Some(description) = req.description {
        land.description = description;
    }
    land.x = req.x.unwrap_or(land.x);
    land.y = req.y.unwrap_or(land.y);
    land.width = req.width.unwrap_or(land.width);
    land.height = req.height.unwrap_or(land.height);
    if let Some(owner) = req.owner_id {
        land.owner_id = owner;
    }
    validate_land(&state, &land).await?;
    state.db.update_land(&land).await?;
    notify_world(&state, &land).await;
    Ok(Json(LandView::from(&land)))
}

fn rect_of(land: &LandRow) -> Option<Rect> {
    Some(Rect::new(land.x, land.y, u32::try_from(land.width).ok()?, u32::try_from(land.height).ok()?))
}

async fn validate_land(state: &AppState, land: &LandRow) -> ApiResult<()> {
    limits::validate_land_name(&land.name).map_err(ApiError::Validation)?;
    if land.description.as_ref().is_some_and(|d| d.len() > 2000) {
        return Err(ApiError::Validation("description must be at most 2000 bytes".into()));
    }
    let rect = rect_of(land)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::Validation("width and height must be positive".into()))?;
    let map = &state.world.map;
    if land.x < 0 || land.y < 0 || rect.right() > i64::from(map.width) || rect.bottom() > i64::from(map.height) {
        return Err(ApiError::Validation(format!("the land must lie inside the {}x{} map", map.width, map.height)));
    }
    if let Some(owner) = land.owner_id
        && state.db.user_by_id(owner).await?.is_none()
    {
        return Err(ApiError::Validation("owner_id is not a user".into()));
    }
    for other in state.db.list_lands().await? {
        if other.id != land.id && rect_of(&other).is_some_and(|o| o.intersects(&rect)) {
            return Err(ApiError::Conflict(format!("overlaps land {:?} ({})", other.name, other.id)));
        }
    }
    Ok(())
}

async fn notify_world(state: &AppState, land: &LandRow) {
    let room_id = match state.chat.ensure_land_room(land.id, &land.name).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, land_id = %land.id, "creating the land's chat room failed; it is created on next start");
            return;
        }
    };
    if let Some(rect) = rect_of(land) {
        let info = LandInfo { id: land.id, room_id, name: land.name.clone(), rect };
        if state.world.commands.send(WorldCommand::UpsertLand(info)).await.is_err() {
            tracing::warn!("world is stopping; land edit applies on next start");
        }
    }
}
