//! `landworld-client`: the Landworld game client (Bevy).
//!
//! Thin entry point: parse the command line ([`cli`]), load the world map, build the Bevy app
//! ([`app`]) and run it. Modules:
//! - [`cli`]: flags (`--world`, `--screenshot FILE --frames N`, `--server/--username/--password`).
//! - [`app`]: the Bevy `App`: plugins, window, resources.
//! - [`render`]: drawing the world (tile map chunks from the tileset art).
//! - [`camera`]: the 2D camera, following the own avatar (offline: panned with arrows/WASD).
//! - [`net`]: sign-in over HTTP, the UDP game connection (renet + netcode) on its own threads,
//!   reconnects with backoff, the replicated view.
//! - [`game`]: avatars with name labels and presence dots; walking with prediction.
//! - [`ui`]: the chat panel (land room, proximity, private), connection status, nearby users.
//! - [`screenshot`]: `--screenshot` mode: render once loaded, save a PNG, exit.

mod app;
mod camera;
mod cli;
mod game;
mod net;
mod render;
mod screenshot;
#[cfg(test)]
mod tests;
mod ui;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let map = match landworld_shared::world::WorldMap::load(&cli.world) {
        Ok(map) => map,
        Err(err) => {
            eprintln!("landworld-client: cannot load world {}: {err}", cli.world.display());
            return ExitCode::FAILURE;
        }
    };
    match app::build(cli, map).run() {
        bevy::app::AppExit::Success => ExitCode::SUCCESS,
        bevy::app::AppExit::Error(code) => ExitCode::from(code.get()),
    }
}
