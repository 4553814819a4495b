//! End-to-end test harness: [`spawn_app`] starts the real server in-process on port 0 (HTTP and
//! UDP) against a fresh database — a SQLite file in a temp dir, or a fresh PostgreSQL database
//! on the local server — and returns a [`TestApp`] with HTTP and WebSocket helpers.
//!
//! PostgreSQL: `LANDWORLD_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names an admin connection used to create a database per test. When it is unreachable the
//! PostgreSQL variant of a test prints why and passes, unless `LANDWORLD_REQUIRE_POSTGRES=1`
//! (set by CI), which makes it fail.
//!
//! [`loadgen`] is the load tool behind the `landworld-loadgen` binary (and its test); [`game`]
//! is a headless game client (renet over netcode UDP) for the game tests and the bandwidth
//! measurement.
#![allow(clippy::unwrap_used)]

pub mod game;
pub mod loadgen;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use landworld_server::Application;
pub use landworld_server::Config;
use landworld_server::store::positions::SavedPosition;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long a test waits for an expected frame or state before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub udp_addr: SocketAddr,
    pub http: reqwest::Client,
    pub config: Config,
    pub backend: Backend,
    shutdown: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    db: landworld_server::store::Db,
    _data_dir: Option<tempfile::TempDir>,
}

/// A registered, logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: Uuid,
    pub username: String,
    pub password: String,
    pub token: String,
}

fn pg_admin_url() -> String {
    std::env::var("LANDWORLD_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn pg_required() -> bool {
    matches!(std::env::var("LANDWORLD_REQUIRE_POSTGRES").as_deref(), Ok("1") | Ok("true"))
        || matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Creates a fresh PostgreSQL database; `Ok(None)` (with a printed reason) when PostgreSQL is
/// unreachable and not required.
pub async fn fresh_pg_database() -> Result<Option<String>> {
    let admin = pg_admin_url();
    let mut conn = match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) if !pg_required() => {
            eprintln!(
                "SKIP: PostgreSQL unreachable at {admin}: {e} (set LANDWORLD_REQUIRE_POSTGRES=1 to fail instead)"
            );
            return Ok(None);
        }
        Err(_) if !pg_required() => {
            eprintln!("SKIP: PostgreSQL at {admin} did not answer (set LANDWORLD_REQUIRE_POSTGRES=1 to fail instead)");
            return Ok(None);
        }
        Ok(Err(e)) => bail!("PostgreSQL is required but unreachable at {admin}: {e}"),
        Err(_) => bail!("PostgreSQL is required but did not answer at {admin}"),
    };
    let name = format!("landworld_test_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
    Ok(Some(format!("{base}/{name}")))
}

/// Starts a server with a fresh database of the given backend. `None` when the backend is
/// unavailable and not required (the reason is printed).
pub async fn spawn_app(backend: Backend) -> Result<Option<TestApp>> {
    spawn_app_with(backend, |_| {}).await
}

/// Like [`spawn_app`], with a hook to adjust the config.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Result<Option<TestApp>> {
    landworld_server::telemetry::init_logging(&std::env::var("LANDWORLD_TEST_LOG").unwrap_or_else(|_| "warn".into()));
    let dir = tempfile::tempdir()?;
    let mut config = Config::for_tests(dir.path());
    if backend == Backend::Postgres {
        match fresh_pg_database().await? {
            Some(url) => config.database_url = url,
            None => return Ok(None),
        }
    }
    tweak(&mut config);
    let mut app = TestApp::start(config, backend).await?;
    app._data_dir = Some(dir);
    Ok(Some(app))
}

impl TestApp {
    async fn start(config: Config, backend: Backend) -> Result<Self> {
        let app = Application::build(config.clone()).await?;
        let addr = app.http_addr();
        let udp_addr = app.udp_addr();
        let shutdown = app.shutdown_token();
        let db = app.db().clone();
        let task = tokio::spawn(app.run());
        Ok(Self {
            addr,
            udp_addr,
            http: reqwest::Client::new(),
            config,
            backend,
            shutdown,
            task: Some(task),
            db,
            _data_dir: None,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/api/v1/ws/connect?token={}", self.addr, token)
    }

    /// The server's database handle (to place avatars before they connect, inspect rows).
    pub fn db(&self) -> &landworld_server::store::Db {
        &self.db
    }

    /// Graceful shutdown; returns the server's result.
    pub async fn stop(&mut self) -> Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(60), task).await.context("shutdown timed out")??,
            None => Ok(()),
        }
    }

    /// Stops the server and starts a new one on the same data directory and database.
    pub async fn restart(mut self) -> Result<Self> {
        self.stop().await?;
        let dir = self._data_dir.take();
        let mut next = Self::start(self.config.clone(), self.backend).await?;
        next._data_dir = dir;
        Ok(next)
    }

    /// Stops the server and starts a new one on the same data directory, database and
    /// addresses (HTTP and UDP), as a restarted server comes back for its clients.
    pub async fn restart_in_place(mut self) -> Result<Self> {
        self.stop().await?;
        let dir = self._data_dir.take();
        let mut config = self.config.clone();
        config.http_addr = self.addr;
        config.udp_addr = self.udp_addr;
        let mut next = Self::start(config, self.backend).await?;
        next._data_dir = dir;
        Ok(next)
    }

    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        Ok((res.status().as_u16(), res.json().await.unwrap_or(Value::Null)))
    }

    pub async fn patch(&self, path: &str, body: &Value, token: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.patch(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        Ok((res.status().as_u16(), res.json().await.unwrap_or(Value::Null)))
    }

    pub async fn delete(&self, path: &str, body: Option<&Value>, token: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.delete(self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        Ok((res.status().as_u16(), res.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await?;
        Ok((res.status().as_u16(), res.json().await.unwrap_or(Value::Null)))
    }

    /// Registers and logs in a user with a unique name derived from `prefix`.
    pub async fn user(&self, prefix: &str) -> Result<TestUser> {
        let username = format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..8]);
        let password = "correct horse battery".to_string();
        let (status, body) =
            self.post("/api/v1/auth/register", &json!({"username": username, "password": password}), None).await?;
        if status != 201 {
            bail!("register {username}: {status} {body}");
        }
        let id: Uuid = serde_json::from_value(body["id"].clone())?;
        let (status, body) =
            self.post("/api/v1/auth/login", &json!({"username": username, "password": password}), None).await?;
        if status != 200 {
            bail!("login {username}: {status} {body}");
        }
        let token = body["access_token"].as_str().ok_or_else(|| anyhow!("no token"))?.to_string();
        Ok(TestUser { id, username, password, token })
    }

    /// A user with the admin role (promoted directly in the database, as `create-admin` does).
    pub async fn admin(&self) -> Result<TestUser> {
        let user = self.user("admin").await?;
        self.db.set_user_role(user.id, "admin").await?;
        let (_, body) = self
            .post("/api/v1/auth/login", &json!({"username": user.username, "password": user.password}), None)
            .await?;
        let token = body["access_token"].as_str().ok_or_else(|| anyhow!("no token"))?.to_string();
        Ok(TestUser { token, ..user })
    }

    /// Saves a position for a user who is not online, so their avatar spawns there.
    pub async fn place(&self, user: &TestUser, x: i32, y: i32) -> Result<()> {
        let pos = SavedPosition { user_id: user.id, x, y, radius: landworld_shared::limits::DEFAULT_RADIUS };
        self.db.save_positions(&[pos], 0).await?;
        Ok(())
    }

    /// Opens a chat WebSocket and waits for `connected`.
    pub async fn ws(&self, user: &TestUser) -> Result<(WsClient, Value)> {
        let mut ws = WsClient::connect(&self.ws_url(&user.token)).await?;
        let connected = ws.expect("connected").await?;
        Ok((ws, connected))
    }

    /// Polls `f` until it returns `Some`, or fails after [`WAIT`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(v) = f().await? {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A WebSocket client that reads JSON frames.
pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    NoCode,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<Self> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { stream })
    }

    pub async fn send(&mut self, frame: Value) -> Result<()> {
        self.stream.send(Message::Text(frame.to_string().into())).await?;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.stream.send(Message::Text(text.to_string().into())).await?;
        Ok(())
    }

    /// The next JSON frame, or an error on close/timeout.
    pub async fn next(&mut self) -> Result<Value> {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, wait: Duration) -> Result<Value> {
        loop {
            let msg = tokio::time::timeout(wait, self.stream.next()).await.context("no frame in time")?;
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
                Some(Ok(Message::Close(c))) => bail!("connection closed: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// Skips frames until one of type `kind` arrives.
    pub async fn expect(&mut self, kind: &str) -> Result<Value> {
        self.expect_where(kind, |_| true).await
    }

    /// Skips frames until one of type `kind` satisfying `pred` arrives.
    pub async fn expect_where(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_within(left).await.with_context(|| format!("waiting for {kind}"))?;
            if frame["type"] == kind && pred(&frame) {
                return Ok(frame);
            }
        }
    }

    /// Collects every frame that arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(v) = self.next_within(wait).await {
            out.push(v);
        }
        out
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> Result<Closed> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next()).await.context("no close in time")?;
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => return Ok(Closed::Code(u16::from(frame.code))),
                Some(Ok(Message::Close(None))) | None => return Ok(Closed::NoCode),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("websocket error before close: {e}"),
            }
        }
    }
}

/// `CloseCode` → number, for assertions.
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// Path of the default world map.
pub fn default_world() -> PathBuf {
    landworld_server::config::default_world_path()
}

/// Runs `body` against SQLite and against PostgreSQL (skipped with a printed reason when
/// PostgreSQL is unreachable and not required). With `config = |c| { … }` both servers start
/// with that change to the test configuration.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, |$app:ident| $body:block) => {
        $crate::both_backends!($name, config = |_c| {}, |$app| $body);
    };
    ($name:ident, config = |$c:ident| $config:block, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($app: $crate::TestApp) -> anyhow::Result<()> $body

            fn configure($c: &mut $crate::Config) $config

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> anyhow::Result<()> {
                let app = $crate::spawn_app_with($crate::Backend::Sqlite, configure)
                    .await?
                    .expect("sqlite is always available");
                run(app).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> anyhow::Result<()> {
                match $crate::spawn_app_with($crate::Backend::Postgres, configure).await? {
                    Some(app) => run(app).await,
                    None => Ok(()),
                }
            }
        }
    };
}
