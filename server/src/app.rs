//! [`Application`]: builds every part of the server from a [`Config`] — data directory, database
//! and migrations, map and lands, keys, the world thread (with the game clients' UDP server),
//! the position writer — binds every listener (port 0 in tests) and runs until shutdown.
//!
//! Shutdown (SIGINT/SIGTERM or [`Application::shutdown_token`]): stop accepting, close every
//! WebSocket with 1001, let the world apply the final disconnects and flush every position,
//! drain the writer, close the database, return.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use landworld_shared::world::{Rect, WorldMap};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api;
use crate::api::socket::{Peer, SocketListener};
use crate::api::state::{AppState, AppStateInner};
use crate::auth::TokenKeys;
use crate::chat::crypto::Keyring;
use crate::chat::{Chat, ChatSettings, ChatTasks};
use crate::config::Config;
use crate::game::{self, GameParts, tokens::GameTokens};
use crate::store::lands::LandRow;
use crate::store::{Db, now_ms, redact_url};
use crate::telemetry;
use crate::world::{self, WorldParts, WorldSettings, lands::LandInfo, persist};

pub struct Application {
    listener: TcpListener,
    /// The game clients' UDP socket, owned by the world thread's netcode transport.
    udp_addr: SocketAddr,
    state: AppState,
    world_thread: std::thread::JoinHandle<()>,
    world_stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    chat_tasks: ChatTasks,
    chat_stop: CancellationToken,
    gateway: tokio::task::JoinHandle<()>,
}

/// The address game clients connect to: the configured public one, else the bound one (with
/// loopback for an unspecified IP, which no client can connect to).
fn public_udp_addr(config: &Config, bound: SocketAddr) -> SocketAddr {
    if let Some(addr) = config.udp_public_addr {
        return addr;
    }
    if bound.ip().is_unspecified() {
        let loopback: std::net::IpAddr =
            if bound.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        tracing::warn!(
            "UDP bound to {bound}: connect tokens name {loopback}:{}; set --udp-public-addr for remote game clients",
            bound.port()
        );
        return SocketAddr::new(loopback, bound.port());
    }
    bound
}

/// Creates the data directory (mode 0700 when new).
fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating data directory {}", dir.display()))
}

/// Connects and migrates the database named by the config.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    if config.database_url.starts_with("sqlite:") {
        ensure_data_dir(&config.data_dir)?;
    }
    let db = Db::connect(&config.database_url)
        .await
        .with_context(|| format!("connecting to {}", redact_url(&config.database_url)))?;
    db.migrate().await.context("running migrations")?;
    Ok(db)
}

/// Seeds the map's lands into an empty `lands` table, then returns every land.
async fn seed_lands(db: &Db, map: &WorldMap) -> anyhow::Result<Vec<LandRow>> {
    if db.count_lands().await? == 0 && !map.lands.is_empty() {
        let now = now_ms();
        let rows: Vec<LandRow> = map
            .lands
            .iter()
            .map(|l| LandRow {
                id: Uuid::new_v4(),
                name: l.name.clone(),
                description: l.properties.get("description").cloned(),
                x: l.rect.x,
                y: l.rect.y,
                width: i32::try_from(l.rect.width).unwrap_or(i32::MAX),
                height: i32::try_from(l.rect.height).unwrap_or(i32::MAX),
                owner_id: None,
                created_at: now,
            })
            .collect();
        db.insert_lands(&rows).await.context("seeding lands from the map")?;
        tracing::info!(lands = rows.len(), "seeded lands from the map");
    }
    Ok(db.list_lands().await?)
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        ensure_data_dir(&config.data_dir)?;
        let db = open_database(&config).await?;
        let world_path = config.world.clone();
        let map = tokio::task::spawn_blocking(move || WorldMap::load(&world_path))
            .await?
            .with_context(|| format!("loading world {}", config.world.display()))?;
        let map = Arc::new(map);
        let lands = seed_lands(&db, &map).await?;
        let keys = TokenKeys::load_or_create(config.jwt_secret.as_deref(), &config.data_dir, config.token_ttl)?;
        let metrics = telemetry::metrics_handle();
        let message_keys = Keyring::load_or_create(config.message_key.as_deref(), &config.data_dir)
            .context("loading the message keyring")?;
        let chat_stop = CancellationToken::new();
        let land_names: Vec<(Uuid, String)> = lands.iter().map(|l| (l.id, l.name.clone())).collect();
        let (chat, chat_tasks) = Chat::start(
            db.clone(),
            message_keys,
            ChatSettings {
                max_content_bytes: config.max_message_bytes,
                commit_window: config.commit_window,
                delivery_window: config.delivery_window,
            },
            &land_names,
            config.retention_days,
            config.retention_interval,
            chat_stop.clone(),
        )
        .await
        .context("starting chat")?;

        let (persist_tx, persist_rx) = mpsc::channel(persist::PERSIST_QUEUE);
        let writer = tokio::spawn(persist::run_writer(db.clone(), persist_rx));
        let world_stop = CancellationToken::new();
        let land_infos = lands
            .iter()
            .filter_map(|l| {
                let rect = Rect::new(l.x, l.y, u32::try_from(l.width).ok()?, u32::try_from(l.height).ok()?);
                let room_id = chat.land_room_id(l.id)?;
                Some(LandInfo { id: l.id, room_id, name: l.name.clone(), rect })
            })
            .collect();
        let parts = WorldParts {
            settings: WorldSettings {
                tick_hz: config.tick_hz,
                max_step: config.max_step,
                position_flush: config.position_flush,
                nearby_interval: config.nearby_interval,
                sim_bots: config.sim_bots,
            },
            map: map.clone(),
            lands: land_infos,
            persist_tx,
            chat: Some(chat.clone()),
        };
        // Game clients' UDP: bound here so that the address is known (and a taken port fails
        // startup); the world thread's netcode transport owns the socket.
        let udp = std::net::UdpSocket::bind(config.udp_addr)
            .with_context(|| format!("binding UDP on {}", config.udp_addr))?;
        udp.set_nonblocking(true).context("making the UDP socket non-blocking")?;
        let udp_addr = udp.local_addr().context("reading the bound UDP address")?;
        let netcode_key = game::tokens::load_or_create_key(config.netcode_key.as_deref(), &config.data_dir)
            .context("loading the netcode key")?;
        let game_tokens = GameTokens::new(netcode_key, public_udp_addr(&config, udp_addr));
        let (gateway_tx, gateway_rx) = mpsc::unbounded_channel();
        let game_parts = GameParts {
            socket: udp,
            private_key: netcode_key,
            public_addr: game_tokens.public_addr(),
            gateway: gateway_tx,
        };
        let (world, world_thread) =
            world::spawn_world(parts, Some(game_parts), world_stop.clone()).context("starting the world thread")?;
        chat.attach_world(world.commands.clone());
        let shutdown = CancellationToken::new();
        let gateway = tokio::spawn(game::gateway::run(
            gateway_rx,
            chat.clone(),
            db.clone(),
            world.commands.clone(),
            shutdown.clone(),
        ));

        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
        let state = AppState::new(AppStateInner {
            db,
            keys,
            world,
            chat,
            config: Arc::new(config),
            metrics,
            game: game_tokens,
            shutdown,
            connections: TaskTracker::new(),
            land_lock: Arc::new(tokio::sync::Mutex::new(())),
        });
        Ok(Self { listener, udp_addr, state, world_thread, world_stop, writer, chat_tasks, chat_stop, gateway })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.config.http_addr)
    }

    /// The bound UDP address of the game server.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// Cancel it to shut the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    pub fn db(&self) -> &Db {
        &self.state.db
    }

    pub async fn run(self) -> anyhow::Result<()> {
        let Self { listener, udp_addr, state, world_thread, world_stop, writer, chat_tasks, chat_stop, gateway } = self;
        tracing::info!(
            "listening http={} udp={}",
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            udp_addr
        );
        let upkeep = {
            let metrics = state.metrics.clone();
            let stop = state.shutdown.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = every.tick() => metrics.run_upkeep(),
                    }
                }
            })
        };
        let shutdown = state.shutdown.clone();
        let connections = state.connections.clone();
        let db = state.db.clone();
        let chat = state.chat.clone();
        let router = api::router(state);
        // Connections are served through shared sockets that the chat WebSocket also writes to
        // directly (`api::socket`).
        let listener = SocketListener(listener);
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        if let Err(e) = &served {
            tracing::error!(error = %e, "HTTP server failed");
            shutdown.cancel();
        }
        tracing::info!("shutting down: closing connections");
        connections.close();
        if tokio::time::timeout(Duration::from_secs(10), connections.wait()).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
        // Messages accepted before the connections closed are committed before the database
        // closes; so are their idempotency keys (merged: nothing to read back at the next start).
        if tokio::time::timeout(Duration::from_secs(30), chat.merge_keys()).await.is_err() {
            tracing::error!("message writer did not drain in time");
        }
        // Game clients' tasks stopped with `shutdown`; their last disconnects reach the world
        // before it stops below.
        let _ = tokio::time::timeout(Duration::from_secs(5), gateway).await;
        chat_stop.cancel();
        let _ = chat_tasks.upkeep.await;
        let key_store = chat.key_store().clone();
        drop(chat);
        chat_tasks.writer.abort();
        // The fan-out's ack task ends with `chat_stop` (acking what is queued), its delivery
        // thread after it.
        if tokio::time::timeout(Duration::from_secs(5), chat_tasks.fanout).await.is_err() {
            tracing::warn!("the fan-out did not stop in time");
        }
        world_stop.cancel();
        match tokio::task::spawn_blocking(move || world_thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::error!("the world thread panicked"),
            // The runtime itself is going away (an embedding test ended): nothing to wait for.
            Err(e) => tracing::debug!(error = %e, "stopped waiting for the world thread"),
        }
        if tokio::time::timeout(Duration::from_secs(30), writer).await.is_err() {
            tracing::error!("position writer did not finish in time");
        }
        upkeep.abort();
        key_store.close().await;
        db.close().await;
        tracing::info!("shutdown complete");
        served.map_err(Into::into)
    }
}
