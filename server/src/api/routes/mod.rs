//! REST handlers, one file per area.

pub mod auth;
pub mod chat;
pub mod game;
pub mod health;
pub mod lands;
pub mod stats;
