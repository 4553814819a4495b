//! `landworld-server`: the world simulation, the HTTP/WebSocket API and storage, as a library;
//! `main.rs` is a thin CLI over it.
//!
//! - [`config`]: flags, environment and `landworld.toml`.
//! - [`app`]: [`app::Application`] builds and runs everything.
//! - [`world`]: the Bevy ECS simulation on its own thread.
//! - [`game`]: game clients over UDP (renet + netcode inside the world's app), connect tokens.
//! - [`api`]: axum routes and WebSockets.
//! - [`store`]: sqlx over SQLite or PostgreSQL.
//! - [`auth`]: passwords and tokens. [`telemetry`]: logs and metrics.
//! - [`load_users`]: the `load-users` command (bulk load-test accounts and tokens).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod app;
pub mod auth;
pub mod chat;
pub mod config;
pub mod game;
pub mod load_users;
pub mod sched;
pub mod store;
pub mod telemetry;
pub mod world;

pub use app::Application;
pub use config::Config;
