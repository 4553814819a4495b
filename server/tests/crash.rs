//! Crash safety with the real binary: clients send numbered messages, the server is killed with
//! SIGKILL at a random moment, restarted on the same database, and then every acked message is
//! in history exactly once, in per-room order without gaps; retries of unacked messages are
//! stored once; and `join_room {since_seq}` recovers exactly the missed messages.
//! Runs on SQLite and on a fresh PostgreSQL database (mandatory under CI).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_landworld-server");
const CLIENTS: usize = 4;
const IN_FLIGHT: usize = 8;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    child: Child,
    http: String,
}

fn start(data_dir: &std::path::Path, database_url: Option<&str>) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--http-addr", "127.0.0.1:0", "--udp-addr", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    let mut child =
        cmd.env("LANDWORLD_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("server starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let http = loop {
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("a listening line within 60 s");
        if let Some(rest) = line.split("listening http=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    Server { child, http }
}

async fn register(http: &str, username: &str) -> String {
    let client = reqwest::Client::new();
    let body = json!({"username": username, "password": "correct horse battery"});
    let res = client.post(format!("http://{http}/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let res: Value =
        client.post(format!("http://{http}/api/v1/auth/login")).json(&body).send().await.unwrap().json().await.unwrap();
    res["access_token"].as_str().unwrap().to_string()
}

async fn login(http: &str, username: &str) -> String {
    let body = json!({"username": username, "password": "correct horse battery"});
    let res: Value = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    res["access_token"].as_str().unwrap().to_string()
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

async fn connect_and_join(http: &str, token: &str, room: &str, since: Option<i64>) -> (Ws, Value) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{http}/api/v1/ws/connect?token={token}")).await.unwrap();
    let mut join = json!({"type": "join_room", "room_id": room});
    if let Some(s) = since {
        join["since_seq"] = json!(s);
    }
    ws.send(Message::Text(join.to_string().into())).await.unwrap();
    loop {
        let f = next_json(&mut ws).await.expect("joined_room");
        if f["type"] == "joined_room" {
            return (ws, f);
        }
    }
}

/// Sends numbered messages until the connection dies; returns acks by client_msg_id and the
/// highest `message` seq this client saw.
async fn sender(http: String, token: String, room: String, who: usize) -> (HashMap<String, (String, i64)>, i64) {
    let (mut ws, _) = connect_and_join(&http, &token, &room, None).await;
    let mut acked = HashMap::new();
    let mut seen = 0i64;
    let mut next = 0usize;
    let mut in_flight = 0usize;
    // Within the per-connection message rate (20/s): one send every 50 ms, at most IN_FLIGHT
    // unacked.
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        let frame = tokio::select! {
            _ = every.tick() => {
                if in_flight < IN_FLIGHT {
                    let cmid = format!("c{who}-{next}");
                    let frame = json!({"type": "send_message", "room_id": room, "content": format!("msg {cmid}"), "client_msg_id": cmid});
                    if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return (acked, seen);
                    }
                    next += 1;
                    in_flight += 1;
                }
                continue;
            }
            f = next_json(&mut ws) => f,
        };
        let Some(f) = frame else { return (acked, seen) };
        match f["type"].as_str() {
            Some("message_ack") => {
                in_flight -= 1;
                let cmid = f["client_msg_id"].as_str().unwrap().to_string();
                acked.insert(cmid, (f["message_id"].as_str().unwrap().to_string(), f["seq"].as_i64().unwrap()));
            }
            Some("message") => seen = seen.max(f["seq"].as_i64().unwrap()),
            Some("error") => in_flight = in_flight.saturating_sub(1),
            _ => {}
        }
    }
}

async fn full_history(http: &str, token: &str, room: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = reqwest::Client::new()
            .get(format!("http://{http}/api/v1/chat/sessions/{room}/messages?limit=200&after_seq={after}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let msgs = page["messages"].as_array().unwrap().clone();
        if let Some(last) = msgs.last() {
            after = last["seq"].as_i64().unwrap();
        }
        out.extend(msgs);
        if page["has_more"] != true {
            return out;
        }
    }
}

async fn crash_and_recover(database_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), database_url.as_deref());
    let http = server.http.clone();
    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        tokens.push(register(&http, &format!("crash{i}")).await);
    }
    let lands: Value = reqwest::Client::new()
        .get(format!("http://{http}/api/v1/lands"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let land = lands["lands"][0]["id"].as_str().unwrap().to_string();
    let (_, joined) = connect_and_join(&http, &tokens[0], &land, None).await;
    let room = joined["room_id"].as_str().unwrap().to_string();

    let tasks: Vec<_> =
        (0..CLIENTS).map(|i| tokio::spawn(sender(http.clone(), tokens[i].clone(), room.clone(), i))).collect();
    let wait = rand::rng().random_range(400..1500);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    server.child.kill().unwrap(); // SIGKILL
    let _ = server.child.wait();
    let mut acked: HashMap<String, (String, i64)> = HashMap::new();
    let mut seen = Vec::new();
    for t in tasks {
        let (a, s) = t.await.unwrap();
        acked.extend(a);
        seen.push(s);
    }
    assert!(!acked.is_empty(), "no message was acked before the kill ({wait} ms)");

    let server = start(dir.path(), database_url.as_deref());
    let http = server.http.clone();
    let token = login(&http, "crash0").await;
    let history = full_history(&http, &token, &room).await;
    // Per-room order without gaps, and each client_msg_id at most once.
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seqs are gapless and ordered");
    let mut by_cmid: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for m in &history {
        by_cmid.entry(m["client_msg_id"].as_str().unwrap().to_string()).or_default().push(m);
    }
    assert!(by_cmid.values().all(|v| v.len() == 1), "a message stored twice");
    for (cmid, (id, seq)) in &acked {
        let m = by_cmid.get(cmid).unwrap_or_else(|| panic!("acked message {cmid} lost in the crash"));
        assert_eq!(m[0]["message_id"], id.as_str());
        assert_eq!(m[0]["seq"], *seq);
        assert_eq!(m[0]["content"], format!("msg {cmid}"));
    }
    let last = *seqs.last().unwrap();

    // Recovery: a client that saw up to `k` gets exactly k+1..=last, in order.
    let k = seen[1].min(last);
    let token1 = login(&http, "crash1").await;
    let (mut ws, j) = connect_and_join(&http, &token1, &room, Some(k)).await;
    assert_eq!(j["last_seq"], last);
    let mut got = Vec::new();
    while got.len() < (last - k) as usize {
        let f = next_json(&mut ws).await.expect("replayed message");
        if f["type"] == "message" {
            got.push(f["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(got, (k + 1..=last).collect::<Vec<_>>());

    // Retrying a message that was already stored (acked or not) is answered with the original.
    let (cmid, (id, seq)) = acked.iter().next().unwrap();
    let who: usize = cmid[1..cmid.find('-').unwrap()].parse().unwrap();
    let tok = login(&http, &format!("crash{who}")).await;
    let (mut ws, _) = connect_and_join(&http, &tok, &room, None).await;
    let frame =
        json!({"type": "send_message", "room_id": room, "content": format!("msg {cmid}"), "client_msg_id": cmid});
    ws.send(Message::Text(frame.to_string().into())).await.unwrap();
    loop {
        let f = next_json(&mut ws).await.expect("ack of the retry");
        if f["type"] == "message_ack" {
            assert_eq!(f["message_id"], id.as_str());
            assert_eq!(f["seq"], *seq);
            break;
        }
    }
    assert_eq!(full_history(&http, &token, &room).await.len(), history.len(), "the retry was not stored again");
    let mut server = server;
    let _ = server.child.kill();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_messages_survive_sigkill_sqlite() {
    crash_and_recover(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_messages_survive_sigkill_postgres() {
    let required = matches!(std::env::var("LANDWORLD_REQUIRE_POSTGRES").as_deref(), Ok("1") | Ok("true"))
        || matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"));
    let admin =
        std::env::var("LANDWORLD_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if !required => {
            eprintln!("SKIP: PostgreSQL unreachable at {admin}: {e}");
            return;
        }
        Err(e) => panic!("PostgreSQL is required but unreachable at {admin}: {e}"),
    };
    let name = format!("landworld_crash_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    crash_and_recover(Some(format!("{base}/{name}"))).await;
}
