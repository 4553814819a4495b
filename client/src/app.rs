//! Builds the Bevy `App`: the plugins the client needs (see the feature list in Cargo.toml),
//! the primary window titled "Landworld", and the client's own plugins: drawing the map,
//! the camera, the network, the avatars and walking, the chat panel and the overlay.

use std::sync::Arc;

use bevy::prelude::*;
use bevy::window::PresentMode;
use landworld_shared::world::WorldMap;

use crate::cli::{Cli, ServerLogin};

/// The loaded world map, shared read-only.
#[derive(Resource, Clone)]
pub struct World(pub Arc<WorldMap>);

pub fn build(cli: Cli, map: WorldMap) -> App {
    let screenshot_mode = cli.screenshot.is_some();
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title: "Landworld".into(),
                    name: Some("landworld".into()),
                    resolution: (1280, 720).into(),
                    // Screenshots under Xvfb must not wait on a display's refresh.
                    present_mode: if screenshot_mode { PresentMode::AutoNoVsync } else { PresentMode::AutoVsync },
                    ..default()
                }),
                ..default()
            })
            // Pixel art: no smoothing between texels.
            .set(ImagePlugin::default_nearest()),
    )
    .insert_resource(ClearColor(Color::srgb(0.05, 0.07, 0.1)))
    .insert_resource(World(Arc::new(map)))
    .insert_resource(ServerLogin {
        server: cli.server,
        username: cli.username,
        password: cli.password,
        register: cli.register,
    })
    .init_resource::<crate::net::Net>()
    .add_plugins((
        crate::render::plugin,
        crate::camera::plugin,
        crate::net::plugin,
        crate::game::plugin,
        crate::ui::plugin,
    ));
    if let Some(path) = cli.screenshot {
        app.add_plugins(crate::screenshot::ScreenshotPlugin { path, frames: cli.frames });
    }
    app
}
