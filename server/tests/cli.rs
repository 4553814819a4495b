//! The real `landworld-server` binary: the `listening` line, SIGTERM shutdown (WebSockets
//! closed with 1001, positions flushed, exit 0), `migrate`, `create-admin`, and logs that never
//! contain tokens.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_landworld-server");

struct Server {
    child: Child,
    http: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

fn start(data_dir: &std::path::Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--http-addr", "127.0.0.1:0", "--udp-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("LANDWORLD_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server starts");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        for line in s.lines() {
            let _ = tx2.send(line.to_string());
        }
    });
    let mut log = Vec::new();
    let http = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("a listening line within 60 s");
        log.push(line.clone());
        if let Some(rest) = line.split("listening http=").nth(1) {
            let mut parts = rest.split_whitespace();
            let http = parts.next().unwrap().to_string();
            let udp = parts.next().unwrap();
            assert!(udp.starts_with("udp=127.0.0.1:"), "{line}");
            assert!(!udp.ends_with(":0"), "{line}");
            break http;
        }
    };
    Server { child, http, lines: rx, log }
}

impl Server {
    fn collect_log(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Logs in and returns the response body.
async fn login(http: &str, username: &str, password: &str) -> Value {
    reqwest::Client::new()
        .post(format!("http://{http}/api/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The first text frame of a WebSocket, as JSON.
async fn first_json_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            _ => continue,
        }
    }
}

async fn register_and_login(http: &str, username: &str) -> (String, String) {
    let client = reqwest::Client::new();
    let res = client
        .post(format!("http://{http}/api/v1/auth/register"))
        .json(&json!({"username": username, "password": "long enough pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let user: Value = res.json().await.unwrap();
    let body = login(http, username, "long enough pw").await;
    (user["id"].as_str().unwrap().to_string(), body["access_token"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_1001_flushes_positions_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let health: Value = reqwest::get(format!("http://{}/health", server.http)).await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let (_id, token) = register_and_login(&server.http, "signal_user").await;
    let url = format!("ws://{}/api/v1/ws/connect?token={token}", server.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let connected = first_json_frame(&mut ws).await;
    let (x, y) = (connected["position"]["x"].as_i64().unwrap(), connected["position"]["y"].as_i64().unwrap());

    sigterm(&server.child);
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("close within 20 s") {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1001);
    let status = wait_exit(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    server.collect_log();
    let log = server.log.join("\n");
    assert!(log.contains("positions flushed"), "{log}");
    assert!(!log.contains(&token), "the token leaked into the logs:\n{log}");

    // The position was saved: a restart spawns the avatar where it stood.
    let mut server = start(dir.path());
    let token =
        login(&server.http, "signal_user", "long enough pw").await["access_token"].as_str().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws/connect?token={token}", server.http))
        .await
        .unwrap();
    let again = first_json_frame(&mut ws).await;
    assert_eq!((again["position"]["x"].as_i64().unwrap(), again["position"]["y"].as_i64().unwrap()), (x, y));
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(30)).success());
}

#[test]
fn migrate_and_create_admin() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("migrate").arg("--data-dir").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("landworld.db").exists());
    let out = Command::new(BIN)
        .args(["create-admin", "--username", "root_admin", "--password", "admin password"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("admin root_admin created"));
    // A bad password is refused with a clear message and a failing exit code.
    let out = Command::new(BIN)
        .args(["create-admin", "--username", "other_admin", "--password", "short"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    // The admin can log in and create lands.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut server = start(dir.path());
        let body = login(&server.http, "root_admin", "admin password").await;
        assert_eq!(body["user"]["role"], "admin");
        sigterm(&server.child);
        assert!(wait_exit(&mut server.child, Duration::from_secs(30)).success());
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("jwt.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn help_lists_the_commands_and_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "migrate",
        "create-admin",
        "--http-addr",
        "--udp-addr",
        "--data-dir",
        "--database-url",
        "--world",
        "--tick-hz",
        "--retention-days",
        "--allowed-origins",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn load_users_writes_tokens_that_open_the_websocket_and_reruns_reuse_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tokens.jsonl");
    let run = || {
        Command::new(BIN)
            .args(["load-users", "--count", "3", "--prefix", "lt_", "--scatter", "--out"])
            .arg(&out)
            .arg("--data-dir")
            .arg(dir.path())
            .env("LANDWORLD_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stderr).contains("3 created, 0 reused"));
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let lines = read();
    let names: Vec<&str> = lines.iter().map(|l| l["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["lt_0000", "lt_0001", "lt_0002"]);

    // Idempotent: the same accounts again, none created.
    let second = run();
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(String::from_utf8_lossy(&second.stderr).contains("0 created, 3 reused"));
    let again = read();
    let ids = |v: &[Value]| v.iter().map(|l| l["user_id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&lines), ids(&again));

    // A server on the same data directory accepts the tokens.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut server = start(dir.path());
        for line in &again {
            let url = format!("ws://{}/api/v1/ws/connect?token={}", server.http, line["token"].as_str().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let frame = first_json_frame(&mut ws).await;
            assert_eq!(frame["type"], "connected", "{frame}");
            assert_eq!(frame["user_id"], line["user_id"]);
            assert_eq!(frame["username"], line["username"]);
        }
        // The shared password works for REST login too.
        let body = login(&server.http, "lt_0001", "load-test-password").await;
        assert!(body["access_token"].is_string(), "{body}");
        sigterm(&server.child);
        assert!(wait_exit(&mut server.child, Duration::from_secs(30)).success());
    });
}
