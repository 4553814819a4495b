//! Command-line flags of the game client.

use std::path::PathBuf;

use clap::Parser;

/// Landworld game client.
#[derive(Parser, Debug, Clone)]
#[command(name = "landworld-client", version, about)]
pub struct Cli {
    /// The world map to draw (Tiled .tmx).
    #[arg(long, env = "LANDWORLD_WORLD", default_value = "assets/worlds/default.tmx")]
    pub world: PathBuf,

    /// Render `--frames` frames once the world is drawn, save a PNG screenshot here and exit.
    #[arg(long, value_parser = png_path)]
    pub screenshot: Option<PathBuf>,

    /// Frames to render before taking the `--screenshot`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub frames: u32,

    /// Server base URL, e.g. `http://127.0.0.1:8000`: sign in, join the world and chat.
    /// Without it the client only shows the map.
    #[arg(long, env = "LANDWORLD_SERVER", requires_all = ["username", "password"])]
    pub server: Option<String>,

    /// Username to sign in with.
    #[arg(long, env = "LANDWORLD_USERNAME")]
    pub username: Option<String>,

    /// Password to sign in with (prefer the environment variable over the flag).
    #[arg(long, env = "LANDWORLD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// Create the account before signing in (an existing account is fine).
    #[arg(long, requires = "server")]
    pub register: bool,
}

fn png_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png { Ok(path) } else { Err("the screenshot file name must end in .png".to_owned()) }
}

/// Where and how to sign in.
#[derive(bevy::prelude::Resource, Clone, Default)]
pub struct ServerLogin {
    pub server: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub register: bool,
}

impl std::fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerLogin")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("register", &self.register)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "landworld-client",
            "--world",
            "w.tmx",
            "--screenshot",
            "out.PNG",
            "--frames",
            "3",
            "--server",
            "http://127.0.0.1:8000",
            "--username",
            "alice",
            "--password",
            "secret123",
        ])
        .expect("parses");
        assert_eq!(cli.world, PathBuf::from("w.tmx"));
        assert_eq!(cli.frames, 3);
        assert_eq!(cli.username.as_deref(), Some("alice"));
        assert!(Cli::try_parse_from(["landworld-client", "--screenshot", "out.jpg"]).is_err());
        assert!(Cli::try_parse_from(["landworld-client", "--frames", "0"]).is_err());
        assert!(!cli.register);
        // A server needs credentials; --register needs a server.
        assert!(Cli::try_parse_from(["landworld-client", "--server", "http://h:1", "--username", "a"]).is_err());
        assert!(Cli::try_parse_from(["landworld-client", "--register"]).is_err());
    }

    #[test]
    fn login_debug_hides_the_password() {
        let login = ServerLogin { password: Some("hunter22".into()), ..Default::default() };
        assert!(!format!("{login:?}").contains("hunter22"));
    }
}
