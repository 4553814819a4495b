//! Identifiers. Every entity the API names (users, lands, chat sessions, messages, connections)
//! is a UUID; these aliases say which is which.

pub use uuid::Uuid;

pub type UserId = Uuid;
pub type LandId = Uuid;
pub type SessionId = Uuid;
pub type MessageId = Uuid;
pub type ConnectionId = Uuid;
