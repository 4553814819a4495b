//! `landworld-loadgen`: opens N chat WebSockets against a running server and runs a scenario
//! (land rooms and messages, moves, or idle connections), then prints what it measured. See
//! `landworld_tests::loadgen` for how deliveries are checked and the README's "Load tool".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use landworld_tests::loadgen::{self, LoadConfig, Users, sys};

#[derive(Debug, Parser)]
#[command(name = "landworld-loadgen", about = "Load generator for the Landworld chat WebSocket")]
struct Args {
    /// Server address (host:port or http://host:port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    server: String,
    /// Tokens file from `landworld-server load-users` (JSON lines {user_id, username, token}).
    #[arg(long, conflicts_with = "register")]
    tokens: Option<PathBuf>,
    /// Instead of a tokens file: register and log in this many users over REST (small runs only:
    /// each login costs an argon2 verification on the server).
    #[arg(long)]
    register: Option<usize>,
    /// Username prefix for --register.
    #[arg(long, default_value = "lgr")]
    register_prefix: String,
    /// Connections to open (default: one per user).
    #[arg(short = 'n', long)]
    connections: Option<usize>,
    /// Spread the bots round-robin over this many land rooms (join_room).
    #[arg(long, default_value_t = 0)]
    rooms: usize,
    /// Messages per second in total across all bots (needs --rooms).
    #[arg(long, default_value_t = 0.0)]
    msg_rate: f64,
    /// Message content size in bytes.
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Moves per second per bot (update_location, back and forth next to the spawn tile).
    #[arg(long, default_value_t = 0.0)]
    move_rate: f64,
    /// set_radius on every connection before the window.
    #[arg(long)]
    radius: Option<u32>,
    /// Only hold the connections (memory test): RSS before connecting vs after settling.
    #[arg(long)]
    idle: bool,
    /// Measured window in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Longest wait after the window for outstanding deliveries and acks, in seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Idle: seconds between "all connected" and the RSS sample.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Server process id: sample its CPU time and RSS (/proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Prometheus endpoint to read the tick histogram from (e.g. http://127.0.0.1:8000/metrics).
    #[arg(long)]
    metrics_url: Option<String>,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime threads of the load tool (1 = one thread, no cross-thread wake-ups: the cheapest
    /// way to read many connections when the tool shares the machine with the server).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

fn secs(v: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    match sys::raise_fd_limit() {
        Ok(limit) => eprintln!("fd limit {limit}"),
        Err(e) => eprintln!("warning: {e:#}"),
    }
    let base = if args.server.contains("://") { args.server.clone() } else { format!("http://{}", args.server) };
    let (users, default_n) = match (&args.tokens, args.register) {
        (Some(path), _) => {
            let n = loadgen::read_tokens(path)?.len();
            (Users::TokensFile(path.clone()), n)
        }
        (None, Some(count)) => (Users::Register { prefix: args.register_prefix.clone(), count }, count),
        (None, None) => anyhow::bail!("give --tokens FILE or --register N"),
    };
    let mut cfg = LoadConfig::new(base, users, args.connections.unwrap_or(default_n));
    cfg.rooms = args.rooms;
    cfg.msg_rate = args.msg_rate;
    cfg.msg_size = args.msg_size;
    cfg.move_rate = args.move_rate;
    cfg.radius = args.radius;
    cfg.idle = args.idle;
    cfg.duration = secs(args.duration, "duration")?;
    cfg.drain = secs(args.drain, "drain")?;
    cfg.settle = secs(args.settle, "settle")?;
    cfg.concurrency = args.concurrency;
    cfg.server_pid = args.server_pid;
    cfg.metrics_url = args.metrics_url.clone();
    if cfg.msg_rate > 0.0 && cfg.rooms == 0 {
        anyhow::bail!("--msg-rate needs --rooms");
    }
    eprintln!("running: {}", cfg.scenario());
    let report = loadgen::run(&cfg).await?;
    print!("{report}");
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(usize::from(args.threads)).enable_all().build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
