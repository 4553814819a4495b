//! Game clients over the real UDP game server (renet, netcode secure), next to WebSocket users:
//! connect tokens, moves through the world's validation, interest management (only avatars in
//! view, spawned and despawned at the edge), chat (land room, proximity, private), presence and
//! positions both ways with a WebSocket user in the same land room, refused tokens (forged,
//! expired, replayed from another address, another protocol), and garbage datagrams or malformed
//! messages that disturb nobody else.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Result, anyhow};
use base64::Engine;
use landworld_shared::limits::VIEW_RADIUS;
use landworld_shared::protocol::game::{
    ClientChannel, ClientMessage, PROTOCOL_ID, Replication, ServerMessage, encode_user_data,
};
use landworld_shared::protocol::ws::Status;
use landworld_shared::world::{TilePos, WorldMap};
use landworld_tests::game::GameBot;
use landworld_tests::{Backend, TestApp, TestUser, WAIT, WsClient, both_backends, default_world};
use renetcode::ConnectToken;
use serde_json::{Value, json};
use uuid::Uuid;

fn map() -> WorldMap {
    WorldMap::load(&default_world()).expect("default world loads")
}

/// A row where `o..=o+3` and `o+31..=o+33` are walkable (so that an avatar at `o+33` stands
/// just outside the view of one at `o`, and one step brings it in).
fn view_edge_row(map: &WorldMap) -> TilePos {
    let r = VIEW_RADIUS as i32;
    for y in 0..map.height as i32 {
        for x in 0..map.width as i32 - r - 2 {
            let ok = |dx: i32| map.is_walkable(TilePos::new(x + dx, y));
            if (0..=3).all(ok) && (r - 1..=r + 1).all(ok) {
                return TilePos::new(x, y);
            }
        }
    }
    panic!("no row with a view edge");
}

fn nearby_ids(frame: &Value) -> Vec<String> {
    frame["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap().to_string()).collect()
}

async fn step(ws: &mut WsClient, at: TilePos) -> Result<Value> {
    ws.send(json!({"type": "update_location", "x": at.x, "y": at.y})).await?;
    ws.expect_where("location_updated", |f| f["x"] == at.x && f["y"] == at.y).await
}

async fn placed(app: &TestApp, prefix: &str, at: TilePos) -> Result<(TestUser, WsClient)> {
    let user = app.user(prefix).await?;
    app.place(&user, at.x, at.y).await?;
    let (ws, _) = app.ws(&user).await?;
    Ok((user, ws))
}

fn at(x: i32, y: i32) -> TilePos {
    TilePos::new(x, y)
}

both_backends!(game_client_connects_moves_and_sees_only_its_view, |app| {
    let map = map();
    let o = view_edge_row(&map);
    let r = VIEW_RADIUS as i32;
    let gamer = app.user("gamer").await?;
    app.place(&gamer, o.x, o.y).await?;
    let (near, mut near_ws) = placed(&app, "near", at(o.x + 2, o.y)).await?;
    let (far, mut far_ws) = placed(&app, "far", at(o.x + r + 1, o.y)).await?;

    let mut bot = GameBot::join(&app, &gamer).await?;
    assert_eq!(bot.welcome().await?, o, "spawned at the saved position");
    // In view: the near user, with its username; the far one (33 tiles) is not.
    let seen = bot.wait_for("the near user in view", WAIT, |s| s.sees(near.id)).await?;
    assert_eq!(seen, at(o.x + 2, o.y));
    assert!(bot.state().visible().iter().any(|s| s.username == near.username));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bot.state().sees(far.id), None, "33 tiles away is outside the view");
    assert_eq!(bot.state().view.avatars.len(), 1);

    // The far user steps to 32 tiles: spawned; steps back: despawned.
    step(&mut far_ws, at(o.x + r, o.y)).await?;
    let seen = bot.wait_for("the far user entering the view", WAIT, |s| s.sees(far.id)).await?;
    assert_eq!(seen, at(o.x + r, o.y));
    step(&mut far_ws, at(o.x + r + 1, o.y)).await?;
    bot.wait_for("the far user leaving the view", WAIT, |s| s.sees(far.id).is_none().then_some(())).await?;

    // The web user sees the game user in its proximity list.
    let gid = gamer.id.to_string();
    near_ws.expect_where("nearby_users", |f| nearby_ids(f).contains(&gid)).await?;

    // A game move goes through the world's rule: one step is applied, a jump is refused.
    bot.send(&ClientMessage::Move { x: o.x + 1, y: o.y });
    let moved = bot.expect("moved", |m| matches!(m, ServerMessage::Moved { .. })).await?;
    assert!(matches!(moved, ServerMessage::Moved { x, y, .. } if x == o.x + 1 && y == o.y), "{moved:?}");
    near_ws
        .expect_where("nearby_users", |f| {
            f["users"].as_array().unwrap().iter().any(|u| u["user_id"] == gid.as_str() && u["x"] == o.x + 1)
        })
        .await?;
    bot.send(&ClientMessage::Move { x: o.x + 9, y: o.y });
    let refused = bot.expect("a refused move", |m| matches!(m, ServerMessage::Error { .. })).await?;
    assert!(matches!(&refused, ServerMessage::Error { code, .. } if code == "invalid_position"), "{refused:?}");
    bot.send(&ClientMessage::Move { x: -5, y: o.y });
    let refused = bot.expect("a move off the map", |m| matches!(m, ServerMessage::Error { .. })).await?;
    assert!(matches!(&refused, ServerMessage::Error { code, .. } if code == "invalid_position"), "{refused:?}");
    assert_eq!(bot.state().pos, Some(at(o.x + 1, o.y)));

    // The web user moves: the game client's snapshot follows.
    step(&mut near_ws, at(o.x + 3, o.y)).await?;
    bot.wait_for("the near user's new position", WAIT, |s| (s.sees(near.id) == Some(at(o.x + 3, o.y))).then_some(()))
        .await?;
    assert!(bot.state().view.snapshots > 0);
    assert_eq!(bot.state().view.snapshot_errors, 0);

    // Full-state replication (the bandwidth comparison's baseline) carries the same view.
    bot.send(&ClientMessage::SetReplication { mode: Replication::FullState });
    let full = bot
        .wait_for("a full-state update", WAIT, |s| {
            s.full_state.iter().find(|a| a.user_id == near.id).map(|a| (a.x, a.y, a.username.clone()))
        })
        .await?;
    assert_eq!(full, (o.x + 3, o.y, near.username.clone()));
    Ok(())
});

/// A land with four walkable tiles in a row inside it: (land id, first tile).
async fn land_row(app: &TestApp, user: &TestUser, map: &WorldMap) -> Result<(String, TilePos)> {
    let (_, lands) = app.get("/api/v1/lands", Some(&user.token)).await?;
    for land in lands["lands"].as_array().unwrap() {
        let (lx, ly) = (land["x"].as_i64().unwrap() as i32, land["y"].as_i64().unwrap() as i32);
        let (w, h) = (land["width"].as_i64().unwrap() as i32, land["height"].as_i64().unwrap() as i32);
        for y in ly..ly + h {
            for x in lx..lx + w - 3 {
                if (0..4).all(|d| map.is_walkable(at(x + d, y))) {
                    return Ok((land["id"].as_str().unwrap().to_string(), at(x, y)));
                }
            }
        }
    }
    Err(anyhow!("no land with four walkable tiles in a row"))
}

both_backends!(game_and_web_users_share_a_land_room_both_ways, |app| {
    let map = map();
    let web = app.user("webber").await?;
    let (land_id, p) = land_row(&app, &web, &map).await?;
    let (status, session) =
        app.post(&format!("/api/v1/chat/land/{land_id}/session"), &json!({}), Some(&web.token)).await?;
    assert_eq!(status, 200, "{session}");
    let room_id: Uuid = session["id"].as_str().unwrap().parse()?;
    app.place(&web, p.x, p.y).await?;
    let (mut ws, connected) = app.ws(&web).await?;
    assert_eq!(connected["position"]["land_id"], land_id.as_str());
    let gamer = app.user("player").await?;
    app.place(&gamer, p.x + 2, p.y).await?;
    let mut bot = GameBot::join(&app, &gamer).await?;
    bot.welcome().await?;

    // Both are members of the land room: each sees the game user join it.
    let gid = gamer.id.to_string();
    ws.expect_where("user_joined", |f| f["user_id"] == gid.as_str() && f["room_id"] == room_id.to_string()).await?;
    bot.expect(
        "own land join",
        |m| matches!(m, ServerMessage::UserJoined { room_id: r, user_id, .. } if *r == room_id && *user_id == gamer.id),
    )
    .await?;

    // Game → web.
    bot.send(&ClientMessage::SendChat {
        room: room_id.to_string(),
        content: "hello from the game".into(),
        client_msg_id: Some("g1".into()),
    });
    let ack = bot.expect("chat ack", |m| matches!(m, ServerMessage::ChatAck { .. })).await?;
    assert!(
        matches!(&ack, ServerMessage::ChatAck { client_msg_id: Some(c), room_id: r, .. } if c == "g1" && *r == room_id)
    );
    let got = ws.expect_where("message", |f| f["content"] == "hello from the game").await?;
    assert_eq!(got["sender_id"], gid.as_str());
    assert_eq!(got["sender_username"], gamer.username.as_str());
    assert_eq!(got["room_id"], room_id.to_string());

    // Web → game.
    ws.send(json!({"type": "send_message", "room_id": room_id.to_string(), "content": "hello from the web"})).await?;
    let got = bot
        .expect("web message", |m| matches!(m, ServerMessage::Chat { content, .. } if content == "hello from the web"))
        .await?;
    assert!(
        matches!(&got, ServerMessage::Chat { sender_id, sender_username, room_id: r, .. }
            if *sender_id == web.id && *sender_username == web.username && *r == room_id),
        "{got:?}"
    );

    // Proximity chat from the game reaches the web user two tiles away.
    bot.send(&ClientMessage::SendChat { room: "proximity".into(), content: "psst".into(), client_msg_id: None });
    let got = ws.expect_where("message", |f| f["content"] == "psst").await?;
    assert_eq!(got["sender_id"], gid.as_str());

    // A private room between the two: both directions.
    let (status, private) = app.post("/api/v1/chat/private", &json!({"user_id": gamer.id}), Some(&web.token)).await?;
    assert_eq!(status, 200, "{private}");
    let private_id: Uuid = private["id"].as_str().unwrap().parse()?;
    bot.send(&ClientMessage::SendChat { room: private_id.to_string(), content: "just us".into(), client_msg_id: None });
    let got = ws.expect_where("message", |f| f["content"] == "just us").await?;
    assert_eq!(got["room_id"], private_id.to_string());
    ws.send(json!({"type": "send_message", "room_id": private_id.to_string(), "content": "indeed"})).await?;
    let got = bot
        .expect("private reply", |m| matches!(m, ServerMessage::Chat { content, .. } if content == "indeed"))
        .await?;
    assert!(
        matches!(&got, ServerMessage::Chat { room_id, sender_id, .. } if *room_id == private_id && *sender_id == web.id)
    );

    // Positions both ways.
    assert_eq!(bot.wait_for("the web user in view", WAIT, |s| s.sees(web.id)).await?, p);
    bot.send(&ClientMessage::Move { x: p.x + 3, y: p.y });
    ws.expect_where("nearby_users", |f| {
        f["users"].as_array().unwrap().iter().any(|u| u["user_id"] == gid.as_str() && u["x"] == p.x + 3)
    })
    .await?;
    step(&mut ws, at(p.x + 1, p.y)).await?;
    bot.wait_for("the web user's step", WAIT, |s| (s.sees(web.id) == Some(at(p.x + 1, p.y))).then_some(())).await?;

    // Presence both ways.
    ws.send(json!({"type": "set_status", "status": "busy"})).await?;
    bot.expect(
        "web user busy",
        |m| matches!(m, ServerMessage::Presence { user_id, status: Status::Busy, .. } if *user_id == web.id),
    )
    .await?;
    bot.send(&ClientMessage::SetStatus { status: Status::Away });
    ws.expect_where("presence_update", |f| f["user_id"] == gid.as_str() && f["status"] == "away").await?;

    // The game user leaves: the web user sees it go offline and leave the room.
    drop(bot);
    ws.expect_where("presence_update", |f| f["user_id"] == gid.as_str() && f["status"] == "offline").await?;
    ws.expect_where("user_left", |f| f["user_id"] == gid.as_str()).await?;
    Ok(())
});

fn token(
    now_offset_secs: i64,
    expire_secs: u64,
    key: &[u8; 32],
    protocol: u64,
    user: &TestUser,
    app: &TestApp,
) -> ConnectToken {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let now = if now_offset_secs < 0 {
        now - Duration::from_secs(now_offset_secs.unsigned_abs())
    } else {
        now + Duration::from_secs(now_offset_secs as u64)
    };
    let data = encode_user_data(user.id, &user.username).unwrap();
    ConnectToken::generate(now, protocol, expire_secs, rand_id(), 2, vec![app.udp_addr], Some(&data), key).unwrap()
}

fn rand_id() -> u64 {
    Uuid::new_v4().as_u64_pair().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_replayed_tokens_are_refused() -> Result<()> {
    let key = [9u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let app = landworld_tests::spawn_app_with(Backend::Sqlite, |c| c.netcode_key = Some(b64)).await?.expect("sqlite");
    let user = app.user("holder").await?;

    // The API's token works.
    let mut first = GameBot::join(&app, &user).await?;
    first.welcome().await?;
    // A token made here with the server's key works too; the same token from a second address
    // does not.
    let made = token(0, 30, &key, PROTOCOL_ID, &user, &app);
    let mut control = GameBot::connect(made.clone())?;
    control.welcome().await?;
    let replayed = GameBot::connect(made)?;
    // Sealed with another key; expired (issued two minutes ago for one minute); another protocol.
    let forged = GameBot::connect(token(0, 30, &[1u8; 32], PROTOCOL_ID, &user, &app))?;
    let expired = GameBot::connect(token(-120, 60, &key, PROTOCOL_ID, &user, &app))?;
    let other_game = GameBot::connect(token(0, 30, &key, PROTOCOL_ID ^ 1, &user, &app))?;

    // Each refused client gives up when its 2 s connection timeout passes, never connected.
    for (what, bot) in
        [("replayed", &replayed), ("forged", &forged), ("expired", &expired), ("other protocol", &other_game)]
    {
        let reason = bot.wait_for(what, Duration::from_secs(8), |s| s.disconnect_reason.clone()).await?;
        assert!(reason.contains("TimedOut"), "{what}: {reason}");
        assert!(!bot.state().connected, "{what} connected");
        assert!(bot.state().user_id.is_none(), "{what} was welcomed");
    }
    assert!(first.state().connected && control.state().connected);
    // Two game connections for the user, nothing else.
    let online = app
        .eventually("two connections", || async {
            let (_, body) = app.get("/api/v1/ws/online-users", Some(&user.token)).await?;
            let me = body["users"].as_array().unwrap().iter().find(|u| u["user_id"] == user.id.to_string()).cloned();
            Ok(me.filter(|u| u["connection_count"] == 2))
        })
        .await?;
    assert_eq!(online["connection_count"], 2);
    // The route needs a bearer token.
    let (status, body) = app.post("/api/v1/game/connect-token", &json!({}), None).await?;
    assert_eq!(status, 401, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_and_malformed_messages_disturb_no_one_else() -> Result<()> {
    let mut app = landworld_tests::spawn_app(Backend::Sqlite).await?.expect("sqlite");
    let map = map();
    let o = view_edge_row(&map);
    let (a, b) = (app.user("steady").await?, app.user("rogue").await?);
    app.place(&a, o.x, o.y).await?;
    app.place(&b, o.x + 1, o.y).await?;
    let mut steady = GameBot::join(&app, &a).await?;
    steady.welcome().await?;
    let mut rogue = GameBot::join(&app, &b).await?;
    rogue.welcome().await?;
    steady.wait_for("the rogue in view", WAIT, |s| s.sees(b.id)).await?;

    // Junk from a raw socket: empty, tiny, netcode-looking prefixes, oversized.
    let raw = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..3000usize {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = [0, 1, 2, 17, 18, 19, 64, 300, 1199, 1200, 1400, 2000][i % 12];
        let mut junk: Vec<u8> = (0..len).map(|k| (seed >> (k % 8 * 8)) as u8 ^ k as u8).collect();
        if let Some(first) = junk.first_mut() {
            *first = (i % 8) as u8; // every netcode packet type
        }
        let _ = raw.send_to(&junk, app.udp_addr);
    }
    // An authenticated client sending bytes that are no message: disconnected by the server.
    rogue.send_raw(ClientChannel::Reliable, vec![0xff, 0xff, 0xff]);
    let reason = rogue.wait_for("the rogue's disconnect", WAIT, |s| s.disconnect_reason.clone()).await?;
    assert!(reason.contains("DisconnectedByServer"), "{reason}");
    // The other client never noticed: still connected, moving, and it saw the rogue leave.
    steady.send(&ClientMessage::Move { x: o.x + 1, y: o.y });
    steady.expect("moved", |m| matches!(m, ServerMessage::Moved { .. })).await?;
    steady.wait_for("the rogue's avatar gone", WAIT, |s| s.sees(b.id).is_none().then_some(())).await?;
    // Bad but well-formed requests are answered with errors; the connection stays.
    steady.send(&ClientMessage::SendChat { room: "r".repeat(5000), content: "hi".into(), client_msg_id: None });
    let e = steady.expect("an error", |m| matches!(m, ServerMessage::Error { .. })).await?;
    assert!(
        matches!(&e, ServerMessage::Error { code, reference: Some(r), .. } if code == "not_found" && r == "send_chat")
    );
    steady.send(&ClientMessage::SendChat { room: "proximity".into(), content: String::new(), client_msg_id: None });
    let e = steady.expect("an error", |m| matches!(m, ServerMessage::Error { .. })).await?;
    assert!(matches!(&e, ServerMessage::Error { code, .. } if code == "invalid_message"), "{e:?}");
    steady.send(&ClientMessage::SetStatus { status: Status::Offline });
    let e = steady.expect("an error", |m| matches!(m, ServerMessage::Error { .. })).await?;
    assert!(matches!(&e, ServerMessage::Error { code, .. } if code == "invalid_status"), "{e:?}");
    assert!(steady.state().connected && steady.is_running());
    // New clients still connect, the rogue included, and HTTP is fine.
    let mut again = GameBot::join(&app, &b).await?;
    again.welcome().await?;
    let (status, _) = app.get("/health", None).await?;
    assert_eq!(status, 200);
    // Shutdown tells connected game clients at once.
    drop((steady, rogue));
    app.stop().await?;
    let reason = again.wait_for("the shutdown disconnect", WAIT, |s| s.disconnect_reason.clone()).await?;
    assert!(reason.contains("DisconnectedByServer"), "{reason}");
    Ok(())
}
