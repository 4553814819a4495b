//! `landworld-shared`: everything the server and the game client must agree on.
//!
//! - [`protocol`]: the JSON frames of the chat WebSocket (SPEC §4), `type`-tagged serde enums,
//!   and the game protocol (SPEC §7): renet channels, postcard messages, delta snapshots.
//! - [`world`]: tile geometry, Chebyshev distance, the Tiled map loader and the incremental
//!   proximity index the server's simulation runs on.
//! - [`ids`] and [`limits`]: identifiers, limits and input validators.
//!
//! This crate is pure: no async runtime, no database, no rendering.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod ids;
pub mod limits;
pub mod protocol;
pub mod world;
