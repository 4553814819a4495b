//! Wire protocols. [`ws`] holds the chat WebSocket's JSON frames (SPEC §4); [`game`] the game
//! clients' renet messages, channels and position snapshots (SPEC §7). Call signaling joins here
//! in a later issue.

pub mod game;
pub mod replica;
pub mod ws;
