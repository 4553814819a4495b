//! The interface over the world (Bevy UI): the chat panel on the right ([`chat`]) and, over the
//! map's top-left corner, the connection status and the nearby users with presence dots
//! ([`hud`]).

pub mod chat;
pub mod hud;

use bevy::prelude::*;

/// Width of the chat panel (logical pixels); the camera centres the avatar in the rest.
pub const PANEL_WIDTH: f32 = 380.0;
/// The chat panel's background (opaque, so tests can find it in a screenshot).
pub const PANEL_BG: Color = Color::srgb_u8(24, 28, 40);
/// Secondary text.
pub const TEXT_DIM: Color = Color::srgb_u8(150, 158, 176);

/// The chat panel's root node.
#[derive(Component)]
pub struct ChatPanel;

pub(super) fn plugin(app: &mut App) {
    app.add_plugins((chat::plugin, hud::plugin));
}

/// The default font (embedded) at a size.
pub fn font(size: f32) -> TextFont {
    TextFont { font_size: FontSize::Px(size), ..default() }
}
