//! Chat REST (SPEC §4): sessions with unread counts, history pages, send (the REST fallback, same
//! rules and durability as the WebSocket), soft delete, private and group sessions with their
//! members, land sessions and participants, chat totals.
//!
//! Non-members get 403 on private and group rooms; land rooms are public (any signed-in user may
//! join them); proximity history shows each user only the messages they received.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use landworld_shared::limits;
use landworld_shared::protocol::ws::RoomMember;
use landworld_shared::world::{Rect, TilePos};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::api::state::AppState;
use crate::chat::hub::{Room, RoomKind};
use crate::chat::{ChatError, HistoryMessage};
use crate::store::chat::Page;
use crate::store::{ms_to_rfc3339, now_ms};

/// Largest history page.
const MAX_PAGE: i64 = 200;
/// Most members in a group at creation.
const MAX_GROUP_MEMBERS: usize = 500;

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NotFound(m) => ApiError::NotFound(m),
            ChatError::Forbidden(m) => ApiError::Forbidden(m),
            ChatError::Invalid(m) => ApiError::Validation(m),
            ChatError::Unavailable => ApiError::Unavailable("chat storage is unavailable; retry".into()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: Uuid,
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub land_id: Option<Uuid>,
    pub last_seq: i64,
    pub unread_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<RoomMember>>,
}

async fn session_view(state: &AppState, room: &Room, user_id: Uuid, with_members: bool) -> ApiResult<SessionView> {
    let db = state.chat.db();
    let read = db.read_seq(room.id, user_id).await?;
    let last_seq = room.last_seq();
    let unread_count = match room.kind {
        RoomKind::Proximity => db.unread_proximity(room.id, user_id, read).await?,
        _ => (last_seq - read).max(0),
    };
    let members = if with_members { Some(state.chat.members_of(room).await?) } else { None };
    Ok(SessionView {
        id: room.id,
        kind: room.kind.as_str(),
        name: room.name.clone(),
        land_id: room.land_id,
        last_seq,
        unread_count,
        members,
    })
}

#[derive(Debug, Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    pub total: usize,
}

/// `GET /api/v1/chat/sessions`: private and group sessions, the land rooms the caller is in now,
/// and the proximity room.
pub async fn sessions(State(state): State<AppState>, AuthUser(claims): AuthUser) -> ApiResult<Json<SessionList>> {
    let user_id = claims.sub;
    let mut rooms: Vec<Arc<Room>> = Vec::new();
    for row in state.chat.db().member_sessions(user_id).await? {
        rooms.push(state.chat.room_by_id(row.id).await?);
    }
    rooms.extend(state.chat.live_rooms_of(user_id));
    rooms.push(state.chat.proximity_room());
    let mut sessions = Vec::with_capacity(rooms.len());
    for room in &rooms {
        sessions.push(session_view(&state, room, user_id, false).await?);
    }
    Ok(Json(SessionList { total: sessions.len(), sessions }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub limit: Option<i64>,
    pub before_seq: Option<i64>,
    pub after_seq: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub room_id: Uuid,
    pub messages: Vec<HistoryMessage>,
    pub has_more: bool,
    pub last_seq: i64,
}

/// `GET /api/v1/chat/sessions/{id}/messages?limit=&before_seq=&after_seq=`.
pub async fn history(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Validation(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    if q.before_seq.is_some_and(|s| s < 0) || q.after_seq.is_some_and(|s| s < 0) {
        return Err(ApiError::Validation("before_seq and after_seq must not be negative".into()));
    }
    let room = state.chat.room_by_id(id).await?;
    let page = Page { after_seq: q.after_seq, before_seq: q.before_seq, limit };
    let (messages, has_more) = state.chat.history(&room, claims.sub, page).await?;
    Ok(Json(HistoryPage { room_id: room.id, messages, has_more, last_seq: room.last_seq() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    pub content: String,
    pub client_msg_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SentView {
    pub room_id: Uuid,
    pub message_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub content: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
}

/// `POST /api/v1/chat/sessions/{id}/messages`: answers 201 once the message is durable.
pub async fn send(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SendBody>,
) -> ApiResult<(StatusCode, Json<SentView>)> {
    let username: Arc<str> = Arc::from(claims.name.as_str());
    let content = body.content.clone();
    let c = state.chat.send_and_wait(claims.sub, username, &id.to_string(), body.content, body.client_msg_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(SentView {
            room_id: c.room_id,
            message_id: c.message_id,
            seq: c.seq,
            sender_id: claims.sub,
            content,
            created_at: ms_to_rfc3339(c.created_at),
            client_msg_id: c.client_msg_id,
        }),
    ))
}

/// `DELETE /api/v1/chat/sessions/{id}/messages/{message_id}`: soft delete (sender or admin).
pub async fn delete_message(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath((id, message_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let room = state.chat.room_by_id(id).await?;
    state.chat.delete(&room, message_id, claims.sub, claims.is_admin()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateBody {
    pub user_id: Uuid,
}

/// `POST /api/v1/chat/private`: the private session with another user (created once).
pub async fn private(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<PrivateBody>,
) -> ApiResult<Json<SessionView>> {
    if body.user_id == claims.sub {
        return Err(ApiError::Validation("a private session needs another user".into()));
    }
    let db = state.chat.db();
    let other = db.user_by_id(body.user_id).await?.ok_or_else(|| ApiError::NotFound("no such user".into()))?;
    let name = format!("{} & {}", claims.name, other.username);
    let row = db.ensure_private_session(claims.sub, other.id, &name, now_ms()).await?;
    let room = state.chat.room_by_id(row.id).await?;
    Ok(Json(session_view(&state, &room, claims.sub, true).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub name: String,
    #[serde(default)]
    pub member_ids: Vec<Uuid>,
}

/// `POST /api/v1/chat/groups`: a named group of the caller and `member_ids`.
pub async fn create_group(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<GroupBody>,
) -> ApiResult<(StatusCode, Json<SessionView>)> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > limits::LAND_NAME_MAX {
        return Err(ApiError::Validation(format!("name must be 1..={} characters", limits::LAND_NAME_MAX)));
    }
    let mut members = vec![claims.sub];
    for id in body.member_ids {
        if !members.contains(&id) {
            members.push(id);
        }
    }
    if members.len() > MAX_GROUP_MEMBERS {
        return Err(ApiError::Validation(format!("a group has at most {MAX_GROUP_MEMBERS} members")));
    }
    let db = state.chat.db();
    for id in &members[1..] {
        if db.user_by_id(*id).await?.is_none() {
            return Err(ApiError::Validation(format!("member {id} is not a user")));
        }
    }
    let row = db.create_group(name, claims.sub, &members, now_ms()).await?;
    let room = state.chat.room_by_id(row.id).await?;
    Ok((StatusCode::CREATED, Json(session_view(&state, &room, claims.sub, true).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    pub user_id: Uuid,
}

async fn group_room(state: &AppState, id: Uuid) -> ApiResult<Arc<Room>> {
    let room = state.chat.room_by_id(id).await?;
    if room.kind != RoomKind::Group {
        return Err(ApiError::NotFound("no such group".into()));
    }
    Ok(room)
}

/// `POST /api/v1/chat/groups/{id}/members`: members (or admins) add a user.
pub async fn add_member(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MemberBody>,
) -> ApiResult<Json<SessionView>> {
    let room = group_room(&state, id).await?;
    if !room.is_listed(claims.sub) && !claims.is_admin() {
        return Err(ApiError::Forbidden("only members may add members".into()));
    }
    let db = state.chat.db();
    let user =
        db.user_by_id(body.user_id).await?.ok_or_else(|| ApiError::Validation("user_id is not a user".into()))?;
    if db.add_member(room.id, user.id, now_ms()).await? {
        state.chat.member_changed(&room, user.id, &user.username, true);
    }
    Ok(Json(session_view(&state, &room, claims.sub, true).await?))
}

/// `DELETE /api/v1/chat/groups/{id}/members` (`{user_id}`) or `…/members/{user_id}`: the
/// group's creator or an admin removes anyone; members remove themselves.
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MemberBody>,
) -> ApiResult<StatusCode> {
    remove(&state, &claims, id, body.user_id).await
}

pub async fn remove_member_path(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath((id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    remove(&state, &claims, id, user_id).await
}

async fn remove(state: &AppState, claims: &crate::auth::Claims, id: Uuid, user_id: Uuid) -> ApiResult<StatusCode> {
    let room = group_room(state, id).await?;
    let allowed = user_id == claims.sub || room.created_by == Some(claims.sub) || claims.is_admin();
    if !room.is_listed(claims.sub) && !claims.is_admin() {
        return Err(ApiError::Forbidden("you are not a member of this group".into()));
    }
    if !allowed {
        return Err(ApiError::Forbidden("only the group's creator or an admin may remove other members".into()));
    }
    let db = state.chat.db();
    if !db.remove_member(room.id, user_id).await? {
        return Err(ApiError::NotFound("that user is not a member".into()));
    }
    let username = db.user_by_id(user_id).await?.map(|u| u.username).unwrap_or_default();
    state.chat.member_changed(&room, user_id, &username, false);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/chat/land/{land_id}/session`: the land's session (created once).
pub async fn land_session(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(land_id): ApiPath<Uuid>,
) -> ApiResult<Json<SessionView>> {
    let land = state.db.land_by_id(land_id).await?.ok_or_else(|| ApiError::NotFound("no such land".into()))?;
    let room_id = state.chat.ensure_land_room(land.id, &land.name).await?;
    let room = state.chat.room_by_id(room_id).await?;
    Ok(Json(session_view(&state, &room, claims.sub, true).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantsQuery {
    pub radius: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct Participant {
    pub user_id: Uuid,
    pub username: String,
    pub x: i32,
    pub y: i32,
    /// Chebyshev distance to the land (0 on it).
    pub distance: u32,
    pub on_land: bool,
}

#[derive(Debug, Serialize)]
pub struct Participants {
    pub land_id: Uuid,
    pub radius: u32,
    pub participants: Vec<Participant>,
    pub total: usize,
}

/// Chebyshev distance from a tile to a rectangle (0 inside).
fn distance_to_rect(p: TilePos, r: &Rect) -> u32 {
    let dx = if p.x < r.x { i64::from(r.x) - i64::from(p.x) } else { (i64::from(p.x) - (r.right() - 1)).max(0) };
    let dy = if p.y < r.y { i64::from(r.y) - i64::from(p.y) } else { (i64::from(p.y) - (r.bottom() - 1)).max(0) };
    u32::try_from(dx.max(dy)).unwrap_or(u32::MAX)
}

/// `GET /api/v1/chat/land/{land_id}/participants?radius=5`: online users on the land or within
/// `radius` (1..=50) tiles of it.
pub async fn participants(
    State(state): State<AppState>,
    _user: AuthUser,
    ApiPath(land_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ParticipantsQuery>,
) -> ApiResult<Json<Participants>> {
    let radius =
        limits::validate_radius(q.radius.unwrap_or(i64::from(limits::DEFAULT_RADIUS))).map_err(ApiError::Validation)?;
    let land = state.db.land_by_id(land_id).await?.ok_or_else(|| ApiError::NotFound("no such land".into()))?;
    let (Ok(w), Ok(h)) = (u32::try_from(land.width), u32::try_from(land.height)) else {
        return Err(ApiError::NotFound("no such land".into()));
    };
    let rect = Rect::new(land.x, land.y, w, h);
    let snapshot = state.world.snapshot.load();
    let mut participants: Vec<Participant> = snapshot
        .users
        .iter()
        .filter_map(|u| {
            let p = TilePos::new(u.position.x, u.position.y);
            let distance = distance_to_rect(p, &rect);
            (distance <= radius).then(|| Participant {
                user_id: u.user_id,
                username: u.username.to_string(),
                x: p.x,
                y: p.y,
                distance,
                on_land: distance == 0,
            })
        })
        .collect();
    participants.sort_by(|a, b| a.distance.cmp(&b.distance).then_with(|| a.username.cmp(&b.username)));
    Ok(Json(Participants { land_id, radius, total: participants.len(), participants }))
}

#[derive(Debug, Serialize)]
pub struct ChatStats {
    pub sessions: i64,
    pub messages: i64,
    pub messages_today: i64,
    pub active_rooms: usize,
    pub messages_per_second: f64,
}

/// `GET /api/v1/chat/stats`.
pub async fn stats(State(state): State<AppState>, _user: AuthUser) -> ApiResult<Json<ChatStats>> {
    let today_start = now_ms() - now_ms().rem_euclid(24 * 60 * 60 * 1000);
    let totals = state.chat.db().chat_totals(today_start).await?;
    Ok(Json(ChatStats {
        sessions: totals.sessions,
        messages: totals.messages,
        messages_today: totals.messages_today,
        active_rooms: state.chat.active_rooms(),
        messages_per_second: state.chat.messages_per_second(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_to_a_rectangle() {
        let r = Rect::new(10, 10, 5, 5);
        assert_eq!(distance_to_rect(TilePos::new(12, 12), &r), 0);
        assert_eq!(distance_to_rect(TilePos::new(14, 14), &r), 0);
        assert_eq!(distance_to_rect(TilePos::new(15, 12), &r), 1);
        assert_eq!(distance_to_rect(TilePos::new(5, 20), &r), 6);
        assert_eq!(distance_to_rect(TilePos::new(9, 9), &r), 1);
    }
}
