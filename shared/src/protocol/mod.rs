//! Wire protocols. [`ws`] holds the chat WebSocket's JSON frames (SPEC §4); the game (renet)
//! and call-signaling protocols join here in later issues.

pub mod ws;
