//! Configuration: clap flags, `LANDWORLD_*` environment variables and an optional
//! `landworld.toml`, merged in that order of precedence (flag > env > file > default).
//!
//! clap reads flags and environment variables together (`#[arg(env)]`); every option is an
//! `Option` there so that a value missing from both can still come from the TOML file before the
//! built-in default applies. [`ServeOptions::resolve`] performs the merge and yields [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(name = "landworld-server", version, about = "Landworld: a virtual land world server with integrated chat")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeOptions,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeOptions),
    /// Apply database migrations and exit.
    Migrate(ServeOptions),
    /// Add a new message-encryption key, make it current and re-encrypt older messages with it.
    RotateKey(ServeOptions),
    /// Create an admin account (or promote an existing user to admin).
    CreateAdmin {
        #[arg(long)]
        username: String,
        /// The password; read from LANDWORLD_ADMIN_PASSWORD if not given.
        #[arg(long, env = "LANDWORLD_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[command(flatten)]
        opts: ServeOptions,
    },
    /// Load testing: create (or reuse) accounts `<prefix>0000`, `<prefix>0001`, … and write one
    /// JSON line `{user_id, username, token}` per account to `--out`, with access tokens signed by
    /// this server's key. See `landworld_server::load_users`.
    LoadUsers(LoadUsersArgs),
}

/// The flags of `load-users`.
#[derive(Debug, Clone, Args)]
pub struct LoadUsersArgs {
    /// How many accounts.
    #[arg(long)]
    pub count: u32,
    /// Username prefix; accounts are `<prefix>` plus a zero-padded index (at least 4 digits).
    #[arg(long)]
    pub prefix: String,
    /// Password of the new accounts (one argon2id hash is shared by the batch).
    #[arg(long, env = "LANDWORLD_LOAD_PASSWORD", hide_env_values = true, default_value = "load-test-password")]
    pub password: String,
    /// Where to write the JSON lines (`{user_id, username, token}`); `-` for stdout.
    #[arg(long)]
    pub out: PathBuf,
    /// Also save a random walkable position for every account, so that their avatars spawn
    /// spread over the map instead of on the few spawn points.
    #[arg(long)]
    pub scatter: bool,
    #[command(flatten)]
    pub opts: ServeOptions,
}

/// Options shared by every subcommand (the flags of `serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeOptions {
    /// Optional TOML config file (default: ./landworld.toml when it exists).
    #[arg(long, env = "LANDWORLD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP listen address (REST, WebSocket, metrics). Port 0 picks a free port.
    #[arg(long, env = "LANDWORLD_HTTP_ADDR", global = true)]
    pub http_addr: Option<SocketAddr>,
    /// UDP listen address for game clients (renet). Port 0 picks a free port.
    #[arg(long, env = "LANDWORLD_UDP_ADDR", global = true)]
    pub udp_addr: Option<SocketAddr>,
    /// The UDP address game clients are told to connect to (it is sealed into every connect
    /// token; default: the bound `--udp-addr`, with 127.0.0.1 when that is 0.0.0.0). Set it when
    /// clients reach the server through another address.
    #[arg(long, env = "LANDWORLD_UDP_PUBLIC_ADDR", global = true)]
    pub udp_public_addr: Option<SocketAddr>,
    /// netcode private key for game connect tokens (base64 of 32 bytes; default: generated into
    /// <data-dir>/netcode.key).
    #[arg(long, env = "LANDWORLD_NETCODE_KEY", global = true, hide_env_values = true)]
    pub netcode_key: Option<String>,
    /// Directory for keys and the SQLite database.
    #[arg(long, env = "LANDWORLD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://…` (default `sqlite://<data-dir>/landworld.db`) or `postgres://…`.
    #[arg(long, env = "LANDWORLD_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Tiled map file (.tmx).
    #[arg(long, env = "LANDWORLD_WORLD", global = true)]
    pub world: Option<PathBuf>,
    /// Simulation ticks per second.
    #[arg(long, env = "LANDWORLD_TICK_HZ", global = true)]
    pub tick_hz: Option<u32>,
    /// Largest Chebyshev step per tick for an accepted move.
    #[arg(long, env = "LANDWORLD_MAX_STEP", global = true)]
    pub max_step: Option<u32>,
    /// Purge chat messages older than this many days (default: keep forever).
    #[arg(long, env = "LANDWORLD_RETENTION_DAYS", global = true)]
    pub retention_days: Option<u32>,
    /// Extra origins allowed to open WebSockets (comma separated), besides the server's own.
    #[arg(long, env = "LANDWORLD_ALLOWED_ORIGINS", global = true, value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// JWT signing secret (default: generated into <data-dir>/jwt.key).
    #[arg(long, env = "LANDWORLD_JWT_SECRET", global = true, hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Access token lifetime in seconds.
    #[arg(long, env = "LANDWORLD_TOKEN_TTL_SECS", global = true)]
    pub token_ttl_secs: Option<u64>,
    /// Seconds between periodic position flushes to the database.
    #[arg(long, env = "LANDWORLD_POSITION_FLUSH_SECS", global = true)]
    pub position_flush_secs: Option<f64>,
    /// Shortest gap between two `nearby_users` frames to one user, in milliseconds (changes in
    /// between are coalesced into the next frame; 0 sends on every tick with a change).
    #[arg(long, env = "LANDWORLD_NEARBY_INTERVAL_MS", global = true)]
    pub nearby_interval_ms: Option<u64>,
    /// Load testing: wandering simulated avatars (no connection, not persisted) to add to the
    /// world; 10% of them step each tick.
    #[arg(long, env = "LANDWORLD_SIM_BOTS", global = true)]
    pub sim_bots: Option<u32>,
    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. `info,landworld_server=debug`.
    #[arg(long, env = "LANDWORLD_LOG", global = true)]
    pub log: Option<String>,
    /// Message encryption key (base64 of 32 bytes; default: generated into <data-dir>/chat.keys).
    #[arg(long, env = "LANDWORLD_MESSAGE_KEY", global = true, hide_env_values = true)]
    pub message_key: Option<String>,
    /// Largest message content in bytes of UTF-8.
    #[arg(long, env = "LANDWORLD_MAX_MESSAGE_BYTES", global = true)]
    pub max_message_bytes: Option<usize>,
    /// Seconds between retention purges (with --retention-days).
    #[arg(long, env = "LANDWORLD_RETENTION_INTERVAL_SECS", global = true)]
    pub retention_interval_secs: Option<f64>,
    /// Group-commit window in milliseconds: the message writer waits this long after the first
    /// message of a batch for more before committing (fewer commits and larger fan-out batches,
    /// for this much added ack and delivery latency; 0 commits as soon as the writer is free).
    #[arg(long, env = "LANDWORLD_COMMIT_WINDOW_MS", global = true)]
    pub commit_window_ms: Option<u64>,
    /// Delivery window in milliseconds: committed messages are gathered this long before they
    /// go to the members, so each connection gets several per socket write (acks are not
    /// delayed; 0 delivers as soon as a commit is done).
    #[arg(long, env = "LANDWORLD_DELIVERY_WINDOW_MS", global = true)]
    pub delivery_window_ms: Option<u64>,
}

/// Default group-commit window (see `--commit-window-ms`).
pub const DEFAULT_COMMIT_WINDOW_MS: u64 = 0;

/// Default delivery window (see `--delivery-window-ms`).
pub const DEFAULT_DELIVERY_WINDOW_MS: u64 = 2;

/// The `landworld.toml` file: the same options, snake_case keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<SocketAddr>,
    udp_addr: Option<SocketAddr>,
    udp_public_addr: Option<SocketAddr>,
    netcode_key: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    world: Option<PathBuf>,
    tick_hz: Option<u32>,
    max_step: Option<u32>,
    retention_days: Option<u32>,
    allowed_origins: Option<Vec<String>>,
    jwt_secret: Option<String>,
    token_ttl_secs: Option<u64>,
    position_flush_secs: Option<f64>,
    nearby_interval_ms: Option<u64>,
    sim_bots: Option<u32>,
    log: Option<String>,
    message_key: Option<String>,
    max_message_bytes: Option<usize>,
    retention_interval_secs: Option<f64>,
    commit_window_ms: Option<u64>,
    delivery_window_ms: Option<u64>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub udp_addr: SocketAddr,
    pub udp_public_addr: Option<SocketAddr>,
    pub netcode_key: Option<String>,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub world: PathBuf,
    pub tick_hz: u32,
    pub max_step: u32,
    pub retention_days: Option<u32>,
    pub allowed_origins: Vec<String>,
    pub jwt_secret: Option<String>,
    pub token_ttl: Duration,
    pub position_flush: Duration,
    pub nearby_interval: Duration,
    pub sim_bots: u32,
    pub log: String,
    pub message_key: Option<String>,
    pub max_message_bytes: usize,
    pub retention_interval: Duration,
    pub commit_window: Duration,
    pub delivery_window: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Default world map: `assets/worlds/default.tmx`, relative to the working directory, or to the
/// source tree when run from elsewhere (tests, `cargo run` from a subdirectory).
pub fn default_world_path() -> PathBuf {
    let relative = PathBuf::from("assets/worlds/default.tmx");
    if relative.exists() {
        return relative;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/worlds/default.tmx")
}

impl ServeOptions {
    /// Merges flags/env (already in `self`) over the TOML file over the defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => {
                let path = PathBuf::from("landworld.toml");
                if path.exists() { read_file(&path)? } else { FileConfig::default() }
            }
        };
        let data_dir = self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let database_url = self
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("landworld.db").display()));
        let tick_hz = self.tick_hz.or(file.tick_hz).unwrap_or(landworld_shared::limits::DEFAULT_TICK_HZ);
        if !(1..=1000).contains(&tick_hz) {
            return Err(ConfigError::Invalid("tick_hz must be between 1 and 1000".into()));
        }
        let max_step = self.max_step.or(file.max_step).unwrap_or(landworld_shared::limits::DEFAULT_MAX_STEP);
        if max_step == 0 {
            return Err(ConfigError::Invalid("max_step must be at least 1".into()));
        }
        let flush = self.position_flush_secs.or(file.position_flush_secs).unwrap_or(5.0);
        if !(flush.is_finite() && flush > 0.0 && flush <= 3600.0) {
            return Err(ConfigError::Invalid("position_flush_secs must be in (0, 3600]".into()));
        }
        let nearby_ms =
            self.nearby_interval_ms.or(file.nearby_interval_ms).unwrap_or(landworld_shared::limits::NEARBY_INTERVAL_MS);
        if nearby_ms > 10_000 {
            return Err(ConfigError::Invalid("nearby_interval_ms must be at most 10000".into()));
        }
        let token_ttl = self.token_ttl_secs.or(file.token_ttl_secs).unwrap_or(24 * 3600);
        if token_ttl == 0 {
            return Err(ConfigError::Invalid("token_ttl_secs must be positive".into()));
        }
        if let Some(0) = self.retention_days.or(file.retention_days) {
            return Err(ConfigError::Invalid("retention_days must be at least 1".into()));
        }
        let max_message_bytes =
            self.max_message_bytes.or(file.max_message_bytes).unwrap_or(landworld_shared::limits::MAX_CONTENT_BYTES);
        if !(1..=landworld_shared::limits::MAX_FRAME_BYTES / 2).contains(&max_message_bytes) {
            return Err(ConfigError::Invalid("max_message_bytes must be between 1 and 32768".into()));
        }
        let retention_every = self.retention_interval_secs.or(file.retention_interval_secs).unwrap_or(3600.0);
        if !(retention_every.is_finite() && retention_every > 0.0) {
            return Err(ConfigError::Invalid("retention_interval_secs must be positive".into()));
        }
        let commit_window_ms = self.commit_window_ms.or(file.commit_window_ms).unwrap_or(DEFAULT_COMMIT_WINDOW_MS);
        if commit_window_ms > 100 {
            return Err(ConfigError::Invalid("commit_window_ms must be at most 100".into()));
        }
        let delivery_window_ms =
            self.delivery_window_ms.or(file.delivery_window_ms).unwrap_or(DEFAULT_DELIVERY_WINDOW_MS);
        if delivery_window_ms > 100 {
            return Err(ConfigError::Invalid("delivery_window_ms must be at most 100".into()));
        }
        Ok(Config {
            commit_window: Duration::from_millis(commit_window_ms),
            delivery_window: Duration::from_millis(delivery_window_ms),
            message_key: self.message_key.or(file.message_key),
            max_message_bytes,
            retention_interval: Duration::from_secs_f64(retention_every),
            http_addr: self.http_addr.or(file.http_addr).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8000))),
            udp_addr: self.udp_addr.or(file.udp_addr).unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5000))),
            udp_public_addr: self.udp_public_addr.or(file.udp_public_addr),
            netcode_key: self.netcode_key.or(file.netcode_key),
            database_url,
            world: self.world.or(file.world).unwrap_or_else(default_world_path),
            tick_hz,
            max_step,
            retention_days: self.retention_days.or(file.retention_days),
            allowed_origins: self
                .allowed_origins
                .or(file.allowed_origins)
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            token_ttl: Duration::from_secs(token_ttl),
            position_flush: Duration::from_secs_f64(flush),
            nearby_interval: Duration::from_millis(nearby_ms),
            sim_bots: self.sim_bots.or(file.sim_bots).unwrap_or(0),
            log: self.log.or(file.log).unwrap_or_else(|| "info".to_string()),
            data_dir,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(source) })
}

impl Config {
    /// A configuration for tests: ephemeral ports, the given data directory, the default world.
    pub fn for_tests(data_dir: &Path) -> Self {
        let opts = ServeOptions {
            config: Some(PathBuf::from("/dev/null")),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            udp_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        };
        // The defaults above are valid by construction.
        match opts.resolve() {
            Ok(c) => c,
            Err(e) => panic!("test config: {e}"),
        }
    }

    /// The tick period.
    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_hz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("landworld.toml");
        std::fs::write(
            &file,
            "tick_hz = 10\nmax_step = 3\nnearby_interval_ms = 0\ncommit_window_ms = 4\nallowed_origins = [\"http://a.test/\"]\n",
        )
        .expect("write");
        let opts = ServeOptions { config: Some(file.clone()), tick_hz: Some(30), ..Default::default() };
        let c = opts.resolve().expect("resolve");
        assert_eq!(c.tick_hz, 30);
        assert_eq!(c.max_step, 3);
        assert_eq!(c.nearby_interval, Duration::ZERO);
        let defaults = ServeOptions::default().resolve().expect("resolve");
        assert_eq!(defaults.nearby_interval, Duration::from_millis(200));
        let too_long = ServeOptions { nearby_interval_ms: Some(60_000), ..Default::default() };
        assert!(matches!(too_long.resolve(), Err(ConfigError::Invalid(_))));
        assert_eq!(c.commit_window, Duration::from_millis(4));
        assert_eq!(defaults.commit_window, Duration::from_millis(DEFAULT_COMMIT_WINDOW_MS));
        let too_long = ServeOptions { commit_window_ms: Some(1_000), ..Default::default() };
        assert!(matches!(too_long.resolve(), Err(ConfigError::Invalid(_))));
        assert_eq!(defaults.delivery_window, Duration::from_millis(DEFAULT_DELIVERY_WINDOW_MS));
        let off = ServeOptions { delivery_window_ms: Some(0), ..Default::default() }.resolve().expect("resolve");
        assert_eq!(off.delivery_window, Duration::ZERO);
        let too_long = ServeOptions { delivery_window_ms: Some(1_000), ..Default::default() };
        assert!(matches!(too_long.resolve(), Err(ConfigError::Invalid(_))));
        assert_eq!(c.allowed_origins, vec!["http://a.test".to_string()]);
        assert_eq!(c.http_addr.port(), 8000);
        assert!(c.database_url.starts_with("sqlite://data"));
        std::fs::write(&file, "bogus = 1\n").expect("write");
        let opts = ServeOptions { config: Some(file), ..Default::default() };
        assert!(matches!(opts.resolve(), Err(ConfigError::Parse { .. })));
    }
}
