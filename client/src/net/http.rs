//! The REST calls the client makes (SPEC §3, §4, §7), blocking, from the network threads:
//! register, log in, fetch a netcode connect token, read who is online (and their status), list
//! chat sessions, find a land's session,
//! load a room's history and open a private room. Plain `http://` (no TLS stack is linked); every call has a timeout.
//!
//! Responses are read into small structs holding only the fields the client uses; anything
//! the server sends that does not parse is an [`ApiError`], never a panic.

use std::time::Duration;

use base64::Engine;
use landworld_shared::protocol::ws::Status;
use renetcode::ConnectToken;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// How long one HTTP call may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Messages loaded per room when it is first shown.
pub const HISTORY_PAGE: u32 = 50;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The server could not be reached or the connection broke: retry later.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// 401: the credentials or the bearer token are not (or no longer) valid.
    #[error("{0}")]
    Unauthorized(String),
    /// Any other refusal, with the server's message.
    #[error("the server refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// A response that does not have the expected shape.
    #[error("unexpected response: {0}")]
    Malformed(String),
}

impl ApiError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Unreachable(_) => true,
            ApiError::Refused { status, .. } => *status >= 500 || *status == 429,
            ApiError::Unauthorized(_) | ApiError::Malformed(_) => false,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
}

/// The signed-in user.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    pub id: Uuid,
    pub username: String,
}

#[derive(Deserialize)]
struct LoginResponse {
    access_token: String,
    user: UserInfo,
}

#[derive(Deserialize)]
struct TokenResponse {
    connect_token: String,
}

/// A chat session the user can read (`GET /api/v1/chat/sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SessionInfo {
    pub id: Uuid,
    /// `land`, `private`, `group` or `proximity`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub land_id: Option<Uuid>,
    #[serde(default)]
    pub last_seq: i64,
}

#[derive(Deserialize)]
struct SessionList {
    sessions: Vec<SessionInfo>,
}

/// One message of a history page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HistoryMessage {
    pub room_id: Uuid,
    pub seq: i64,
    pub sender_id: Uuid,
    pub sender_username: String,
    pub content: String,
    pub created_at: String,
    #[serde(default)]
    pub deleted: bool,
}

/// A user with at least one connection (`GET /api/v1/ws/online-users`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OnlineUser {
    pub user_id: Uuid,
    pub status: Status,
}

#[derive(Deserialize)]
struct OnlineUsers {
    users: Vec<OnlineUser>,
}

#[derive(Deserialize)]
struct HistoryPage {
    messages: Vec<HistoryMessage>,
}

/// A blocking client for one server.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// `base` is the server's URL, e.g. `http://127.0.0.1:8000` (a trailing `/` is dropped).
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(ApiError::Malformed(format!("the server URL must start with http:// (got {base})")));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent(concat!("landworld-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        Ok(Self { base, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; returns the status and body text.
    fn call(&self, req: reqwest::blocking::RequestBuilder) -> Result<(u16, String), ApiError> {
        let res = req.send().map_err(|e| ApiError::Unreachable(without_url(e)))?;
        let status = res.status().as_u16();
        let body = res.text().map_err(|e| ApiError::Unreachable(without_url(e)))?;
        Ok((status, body))
    }

    /// Parses a 2xx body, or turns an error status into an [`ApiError`].
    fn parse<T: serde::de::DeserializeOwned>(&self, (status, body): (u16, String)) -> Result<T, ApiError> {
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|e| ApiError::Malformed(e.to_string()));
        }
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        if status == 401 { Err(ApiError::Unauthorized(message)) } else { Err(ApiError::Refused { status, message }) }
    }

    /// Creates the account; an existing account with that name (409) is not an error (the login
    /// that follows tells whether the password matches).
    pub fn register(&self, username: &str, password: &str) -> Result<(), ApiError> {
        let req = self.http.post(self.url("/api/v1/auth/register")).json(&json!({
            "username": username,
            "password": password,
        }));
        match self.call(req)? {
            (201 | 409, _) => Ok(()),
            other => self.parse::<serde_json::Value>(other).map(|_| ()),
        }
    }

    /// Logs in; returns the bearer token and the user.
    pub fn login(&self, username: &str, password: &str) -> Result<(String, UserInfo), ApiError> {
        let req = self.http.post(self.url("/api/v1/auth/login")).json(&json!({
            "username": username,
            "password": password,
        }));
        let res: LoginResponse = self.parse(self.call(req)?)?;
        Ok((res.access_token, res.user))
    }

    /// A fresh netcode connect token for the signed-in user.
    pub fn connect_token(&self, bearer: &str) -> Result<ConnectToken, ApiError> {
        let req = self.http.post(self.url("/api/v1/game/connect-token")).bearer_auth(bearer).json(&json!({}));
        let res: TokenResponse = self.parse(self.call(req)?)?;
        decode_token(&res.connect_token)
    }

    /// The chat sessions the user belongs to (land, private, group, proximity).
    pub fn sessions(&self, bearer: &str) -> Result<Vec<SessionInfo>, ApiError> {
        let req = self.http.get(self.url("/api/v1/chat/sessions")).bearer_auth(bearer);
        Ok(self.parse::<SessionList>(self.call(req)?)?.sessions)
    }

    /// The newest [`HISTORY_PAGE`] messages of a room, ascending seq.
    pub fn history(&self, bearer: &str, room: Uuid) -> Result<Vec<HistoryMessage>, ApiError> {
        let path = format!("/api/v1/chat/sessions/{room}/messages?limit={HISTORY_PAGE}");
        let req = self.http.get(self.url(&path)).bearer_auth(bearer);
        let mut messages = self.parse::<HistoryPage>(self.call(req)?)?.messages;
        messages.sort_by_key(|m| m.seq);
        Ok(messages)
    }

    /// Everyone online with their status (seeds the presence dots; changes then arrive as
    /// `Presence` messages).
    pub fn online_users(&self, bearer: &str) -> Result<Vec<OnlineUser>, ApiError> {
        let req = self.http.get(self.url("/api/v1/ws/online-users")).bearer_auth(bearer);
        Ok(self.parse::<OnlineUsers>(self.call(req)?)?.users)
    }

    /// The chat session of a land (created on first use).
    pub fn land_session(&self, bearer: &str, land_id: Uuid) -> Result<SessionInfo, ApiError> {
        let path = format!("/api/v1/chat/land/{land_id}/session");
        let req = self.http.post(self.url(&path)).bearer_auth(bearer).json(&json!({}));
        self.parse(self.call(req)?)
    }

    /// The private room with another user (created on first use).
    pub fn private_room(&self, bearer: &str, user_id: Uuid) -> Result<SessionInfo, ApiError> {
        let req = self.http.post(self.url("/api/v1/chat/private")).bearer_auth(bearer).json(&json!({
            "user_id": user_id,
        }));
        self.parse(self.call(req)?)
    }
}

/// reqwest's error text without the URL (it would repeat the server address in every line).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads the base64 connect token of `POST /api/v1/game/connect-token`.
pub fn decode_token(text: &str) -> Result<ConnectToken, ApiError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| ApiError::Malformed(format!("connect token is not base64: {e}")))?;
    ConnectToken::read(&mut bytes.as_slice())
        .map_err(|e| ApiError::Malformed(format!("connect token does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(Api::new("http://127.0.0.1:8000/").is_ok());
        assert!(matches!(Api::new("ftp://x"), Err(ApiError::Malformed(_))));
        assert_eq!(Api::new("http://h:1/").map(|a| a.url("/x")).ok(), Some("http://h:1/x".to_string()));
    }

    #[test]
    fn error_bodies_become_errors() {
        let api = Api::new("http://127.0.0.1:1").expect("api");
        let body = r#"{"error":{"code":"unauthorized","message":"bad password"}}"#.to_string();
        let err = api.parse::<serde_json::Value>((401, body)).expect_err("401");
        assert!(matches!(&err, ApiError::Unauthorized(m) if m == "bad password"), "{err:?}");
        assert!(!err.is_transient());
        let err = api.parse::<serde_json::Value>((503, "down".into())).expect_err("503");
        assert!(err.is_transient());
        let err = api.parse::<LoginResponse>((200, "{}".into())).err().expect("missing fields");
        assert!(matches!(err, ApiError::Malformed(_)));
        assert!(decode_token("!!!").is_err());
        assert!(decode_token("AAAA").is_err());
    }

    #[test]
    fn an_unreachable_server_is_transient() {
        // Port 1 on localhost: nothing listens there.
        let api = Api::new("http://127.0.0.1:1").expect("api");
        let err = api.login("a", "b").expect_err("no server");
        assert!(err.is_transient(), "{err:?}");
    }
}
