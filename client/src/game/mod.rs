//! The world as the player lives it: avatars ([`avatars`]) and walking with prediction
//! ([`movement`]).

pub mod avatars;
pub mod movement;

use bevy::prelude::*;

pub(super) fn plugin(app: &mut App) {
    app.add_plugins((avatars::plugin, movement::plugin));
}
