//! The world over the real WebSocket and REST API, on SQLite and PostgreSQL: connecting,
//! moving (and refused moves), proximity diffs both ways, land borders, presence, radius,
//! several connections per user, and positions surviving a restart.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Result, anyhow};
use futures_util::SinkExt;
use landworld_shared::world::{TileKind, TilePos, WorldMap};
use landworld_tests::{TestApp, TestUser, WsClient, both_backends, default_world};
use serde_json::{Value, json};

fn map() -> WorldMap {
    WorldMap::load(&default_world()).expect("default world loads")
}

/// A horizontal run of `len` walkable tiles: its left end.
fn walkable_run(map: &WorldMap, len: i32) -> TilePos {
    for y in 0..map.height as i32 {
        let mut run = 0;
        for x in 0..map.width as i32 {
            if map.is_walkable(TilePos::new(x, y)) {
                run += 1;
                if run == len {
                    return TilePos::new(x - len + 1, y);
                }
            } else {
                run = 0;
            }
        }
    }
    panic!("no walkable run of {len}");
}

/// A walkable tile next to a non-walkable tile of `kind`: (tile, blocked neighbour).
fn blocked_neighbour(map: &WorldMap, kind: TileKind) -> (TilePos, TilePos) {
    for y in 1..map.height as i32 - 1 {
        for x in 1..map.width as i32 - 1 {
            let p = TilePos::new(x, y);
            if !map.is_walkable(p) {
                continue;
            }
            for (dx, dy) in [(1, 0), (-1, 0), (0, 1), (0, -1)] {
                let q = TilePos::new(x + dx, y + dy);
                if !map.is_walkable(q) && map.kind(q) == Some(kind) {
                    return (p, q);
                }
            }
        }
    }
    panic!("no {kind:?} tile next to a walkable one");
}

fn nearby_ids(frame: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        frame["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn step(ws: &mut WsClient, x: i32, y: i32) -> Result<Value> {
    ws.send(json!({"type": "update_location", "x": x, "y": y})).await?;
    ws.expect("location_updated").await
}

async fn placed(app: &TestApp, prefix: &str, at: TilePos) -> Result<(TestUser, WsClient, Value)> {
    let user = app.user(prefix).await?;
    app.place(&user, at.x, at.y).await?;
    let (ws, connected) = app.ws(&user).await?;
    Ok((user, ws, connected))
}

both_backends!(connect_spawns_at_a_spawn_point_and_answers_ping, |app| {
    let map = map();
    let user = app.user("walker").await?;
    let (mut ws, connected) = app.ws(&user).await?;
    assert_eq!(connected["user_id"], user.id.to_string());
    assert_eq!(connected["username"], user.username.as_str());
    assert_eq!(connected["tick_hz"], 20);
    assert!(connected["connection_id"].is_string());
    assert!(connected["server_time"].is_string());
    let pos = TilePos::new(
        connected["position"]["x"].as_i64().unwrap() as i32,
        connected["position"]["y"].as_i64().unwrap() as i32,
    );
    assert!(map.spawns.contains(&pos), "spawned at {pos:?}, not a spawn point");
    ws.send(json!({"type": "ping"})).await?;
    let pong = ws.expect("pong").await?;
    assert!(pong["server_time"].is_string());
    Ok(())
});

both_backends!(bad_frames_get_errors_and_the_connection_stays_open, |app| {
    let user = app.user("sloppy").await?;
    let (mut ws, _) = app.ws(&user).await?;
    ws.send_text("{not json").await?;
    let e = ws.expect("error").await?;
    assert_eq!(e["code"], "invalid_frame");
    ws.send(json!({"type": "teleport", "x": 1})).await?;
    let e = ws.expect("error").await?;
    assert_eq!(e["code"], "unknown_type");
    assert_eq!(e["ref"], "teleport");
    ws.send(json!({"type": "update_location", "x": "left"})).await?;
    let e = ws.expect("error").await?;
    assert_eq!(e["code"], "invalid_frame");
    assert_eq!(e["ref"], "update_location");
    ws.send(json!({"type": "set_radius", "radius": 0})).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_radius");
    ws.send(json!({"type": "set_radius", "radius": 51})).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_radius");
    ws.send(json!({"type": "set_status", "status": "offline"})).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_status");
    ws.stream.send(tokio_tungstenite::tungstenite::Message::Binary(vec![1u8, 2, 3].into())).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_frame");
    // Still open and serving.
    ws.send(json!({"type": "ping"})).await?;
    ws.expect("pong").await?;
    Ok(())
});

both_backends!(moves_are_validated, |app| {
    let map = map();
    let (inside, wall) = blocked_neighbour(&map, TileKind::Wall);
    let (shore, water) = blocked_neighbour(&map, TileKind::Water);
    let (_u, mut ws, _) = placed(&app, "mover", inside).await?;
    // Into a wall.
    ws.send(json!({"type": "update_location", "x": wall.x, "y": wall.y})).await?;
    let e = ws.expect("error").await?;
    assert_eq!(e["code"], "invalid_position");
    assert_eq!(e["ref"], "update_location");
    // Into water.
    let (_s, mut swimmer, _) = placed(&app, "swimmer", shore).await?;
    swimmer.send(json!({"type": "update_location", "x": water.x, "y": water.y})).await?;
    assert_eq!(swimmer.expect("error").await?["code"], "invalid_position");
    let stays = step(&mut swimmer, shore.x, shore.y).await?;
    assert_eq!(stays["x"], shore.x);
    // Outside the map.
    ws.send(json!({"type": "update_location", "x": -1, "y": 0})).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_position");
    ws.send(json!({"type": "update_location", "x": 100000000000i64, "y": 0})).await?;
    assert_eq!(ws.expect("error").await?["code"], "invalid_position");
    // Too far in one tick.
    let run = walkable_run(&map, 6);
    let (_u2, mut ws2, _) = placed(&app, "jumper", run).await?;
    ws2.send(json!({"type": "update_location", "x": run.x + 3, "y": run.y})).await?;
    let e = ws2.expect("error").await?;
    assert_eq!(e["code"], "invalid_position");
    // A legal step is applied; the avatar stayed where it was after the refusals.
    let ok = step(&mut ws2, run.x + 1, run.y).await?;
    assert_eq!((ok["x"].as_i64(), ok["y"].as_i64()), (Some(i64::from(run.x + 1)), Some(i64::from(run.y))));
    let ok = step(&mut ws, inside.x, inside.y).await?;
    assert_eq!(ok["x"].as_i64(), Some(i64::from(inside.x)));
    Ok(())
});

both_backends!(two_users_approach_and_part_with_nearby_diffs, |app| {
    let map = map();
    let start = walkable_run(&map, 16);
    let (a, mut wa, _) = placed(&app, "alice", start).await?;
    let b_x = start.x + 9;
    let (b, mut wb, _) = placed(&app, "bob", TilePos::new(b_x, start.y)).await?;
    // Distance 9 > radius 5: nobody near. Initial lists are empty.
    let first_a = wa.expect("nearby_users").await?;
    assert!(nearby_ids(&first_a).is_empty(), "{first_a}");
    let first_b = wb.expect("nearby_users").await?;
    assert!(nearby_ids(&first_b).is_empty());
    // Bob walks toward Alice: at distance 5 both see each other, each with distance 5.
    let mut x = b_x;
    while x - start.x > 5 {
        x -= 1;
        step(&mut wb, x, start.y).await?;
    }
    let na = wa.expect_where("nearby_users", |f| !f["users"].as_array().unwrap().is_empty()).await?;
    assert_eq!(nearby_ids(&na), vec![b.id.to_string()]);
    assert_eq!(na["users"][0]["distance"], 5);
    assert_eq!(na["users"][0]["username"], b.username.as_str());
    assert_eq!(na["users"][0]["x"], x);
    let nb = wb.expect_where("nearby_users", |f| !f["users"].as_array().unwrap().is_empty()).await?;
    assert_eq!(nbids(&nb), vec![a.id.to_string()]);
    // Bob walks away: both lists empty again.
    x += 1;
    step(&mut wb, x, start.y).await?;
    let na = wa.expect("nearby_users").await?;
    assert!(nearby_ids(&na).is_empty(), "{na}");
    let nb = wb.expect("nearby_users").await?;
    assert!(nearby_ids(&nb).is_empty(), "{nb}");
    Ok(())
});

fn nbids(frame: &Value) -> Vec<String> {
    nearby_ids(frame)
}

both_backends!(radius_is_per_user_and_asymmetric, |app| {
    let map = map();
    let start = walkable_run(&map, 12);
    let (a, mut wa, _) = placed(&app, "eagle", start).await?;
    let (_b, mut wb, _) = placed(&app, "mole", TilePos::new(start.x + 8, start.y)).await?;
    wa.expect("nearby_users").await?;
    wb.expect("nearby_users").await?;
    wa.send(json!({"type": "set_radius", "radius": 10})).await?;
    let na = wa.expect_where("nearby_users", |f| f["radius"] == 10).await?;
    assert_eq!(nearby_ids(&na).len(), 1, "radius 10 sees the mole 8 tiles away: {na}");
    // The mole (radius 5) does not see the eagle: no non-empty list arrives.
    let frames = wb.drain(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| f["type"] != "nearby_users" || nearby_ids(f).is_empty()), "{frames:?}");
    let _ = a;
    Ok(())
});

both_backends!(crossing_a_land_border_switches_rooms, |app| {
    let map = map();
    let user = app.user("hiker").await?;
    let (_, lands) = app.get("/api/v1/lands", Some(&user.token)).await?;
    let lands = lands["lands"].as_array().unwrap().clone();
    // A land whose west border has walkable tiles on both sides, outside any land.
    let mut found = None;
    'outer: for land in &lands {
        let (lx, ly, h) = (
            land["x"].as_i64().unwrap() as i32,
            land["y"].as_i64().unwrap() as i32,
            land["height"].as_i64().unwrap() as i32,
        );
        for y in ly..ly + h {
            let out = TilePos::new(lx - 1, y);
            let inside = TilePos::new(lx, y);
            let in_other = lands.iter().any(|l| {
                let (x0, y0) = (l["x"].as_i64().unwrap() as i32, l["y"].as_i64().unwrap() as i32);
                let (w0, h0) = (l["width"].as_i64().unwrap() as i32, l["height"].as_i64().unwrap() as i32);
                out.x >= x0 && out.x < x0 + w0 && out.y >= y0 && out.y < y0 + h0
            });
            if map.is_walkable(out) && map.is_walkable(inside) && !in_other {
                found = Some((land.clone(), out, inside));
                break 'outer;
            }
        }
    }
    let (land, out, inside) = found.ok_or_else(|| anyhow!("no crossable land border"))?;
    let land_id = land["id"].as_str().unwrap().to_string();
    // Land-room frames carry the land's chat session id.
    let (status, session) =
        app.post(&format!("/api/v1/chat/land/{land_id}/session"), &json!({}), Some(&user.token)).await?;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["kind"], "land");
    assert_eq!(session["land_id"], land_id.as_str());
    let room_id = session["id"].as_str().unwrap().to_string();
    assert_ne!(room_id, land_id);
    // A second user already on the land sees the hiker join and leave.
    let (_, mut watcher, wc) = placed(&app, "local", inside).await?;
    assert_eq!(wc["position"]["land_id"], land_id.as_str());
    app.place(&user, out.x, out.y).await?;
    let (mut ws, connected) = app.ws(&user).await?;
    assert!(connected["position"]["land_id"].is_null());
    let moved = step(&mut ws, inside.x, inside.y).await?;
    assert_eq!(moved["land_id"], land_id.as_str());
    let joined = ws.expect("user_joined").await?;
    assert_eq!(joined["room_id"], room_id.as_str());
    assert_eq!(joined["user_id"], user.id.to_string());
    let seen = watcher.expect_where("user_joined", |f| f["user_id"] == user.id.to_string()).await?;
    assert_eq!(seen["room_id"], room_id.as_str());
    let back = step(&mut ws, out.x, out.y).await?;
    assert!(back["land_id"].is_null());
    let left = ws.expect("user_left").await?;
    assert_eq!(left["room_id"], room_id.as_str());
    watcher.expect_where("user_left", |f| f["user_id"] == user.id.to_string()).await?;
    Ok(())
});

both_backends!(presence_follows_connections_and_status, |app| {
    let map = map();
    let start = walkable_run(&map, 4);
    let (a, mut wa, _) = placed(&app, "host", start).await?;
    let own = wa.expect("presence_update").await?;
    assert_eq!(own["status"], "online");
    let guest = app.user("guest").await?;
    app.place(&guest, start.x + 2, start.y).await?;
    let (mut wg, _) = app.ws(&guest).await?;
    // The host has the guest in proximity: sees it come online.
    let p = wa.expect_where("presence_update", |f| f["user_id"] == guest.id.to_string()).await?;
    assert_eq!(p["status"], "online");
    assert_eq!(p["username"], guest.username.as_str());
    wg.send(json!({"type": "set_status", "status": "busy"})).await?;
    let p = wa.expect_where("presence_update", |f| f["user_id"] == guest.id.to_string()).await?;
    assert_eq!(p["status"], "busy");
    let mine = wg.expect_where("presence_update", |f| f["status"] == "busy").await?;
    assert_eq!(mine["user_id"], guest.id.to_string());
    // Online users show the status; then the guest leaves: offline with last_seen.
    let (_, online) = app.get("/api/v1/ws/online-users", Some(&a.token)).await?;
    assert!(online["users"].as_array().unwrap().iter().any(|u| u["user_id"] == guest.id.to_string()));
    drop(wg);
    let p = wa
        .expect_where("presence_update", |f| f["user_id"] == guest.id.to_string() && f["status"] == "offline")
        .await?;
    assert!(p["last_seen"].is_string());
    let near = wa.expect("nearby_users").await?;
    assert!(nearby_ids(&near).is_empty());
    let _ = a;
    Ok(())
});

both_backends!(one_avatar_for_two_connections, |app| {
    let map = map();
    let start = walkable_run(&map, 4);
    let user = app.user("twin").await?;
    app.place(&user, start.x, start.y).await?;
    let (mut w1, c1) = app.ws(&user).await?;
    let (mut w2, c2) = app.ws(&user).await?;
    assert_ne!(c1["connection_id"], c2["connection_id"]);
    assert_eq!(c1["position"], c2["position"]);
    let online = app
        .eventually("two connections listed", || async {
            let (_, body) = app.get("/api/v1/ws/online-users", Some(&user.token)).await?;
            let me = body["users"].as_array().unwrap().iter().find(|u| u["user_id"] == user.id.to_string()).cloned();
            Ok(me.filter(|u| u["connection_count"] == 2))
        })
        .await?;
    assert_eq!(online["position"]["x"], start.x);
    // A move from one connection reaches both.
    step(&mut w1, start.x + 1, start.y).await?;
    let other = w2.expect("location_updated").await?;
    assert_eq!(other["x"], start.x + 1);
    // Closing one keeps the user online.
    drop(w1);
    app.eventually("one connection left", || async {
        let (_, body) = app.get("/api/v1/ws/online-users", Some(&user.token)).await?;
        let me = body["users"].as_array().unwrap().iter().find(|u| u["user_id"] == user.id.to_string()).cloned();
        Ok(me.filter(|u| u["connection_count"] == 1))
    })
    .await?;
    w2.send(json!({"type": "ping"})).await?;
    w2.expect("pong").await?;
    let (_, stats) = app.get("/api/v1/ws/stats", Some(&user.token)).await?;
    assert!(stats["connections"].as_u64().unwrap() >= 1);
    assert!(stats["users_online"].as_u64().unwrap() >= 1);
    Ok(())
});

both_backends!(positions_survive_disconnect_and_restart, |app| {
    let map = map();
    let start = walkable_run(&map, 6);
    let user = app.user("homebody").await?;
    app.place(&user, start.x, start.y).await?;
    let (mut ws, _) = app.ws(&user).await?;
    step(&mut ws, start.x + 1, start.y).await?;
    step(&mut ws, start.x + 2, start.y).await?;
    ws.send(json!({"type": "set_radius", "radius": 9})).await?;
    ws.expect_where("nearby_users", |f| f["radius"] == 9).await?;
    // Still connected when the server stops: the shutdown flush saves the position.
    let app = app.restart().await?;
    let (_, again) = app.ws(&user).await?;
    assert_eq!(again["position"]["x"], start.x + 2);
    assert_eq!(again["position"]["y"], start.y);
    drop(again);
    // Disconnect saves too.
    let (mut ws, _) = app.ws(&user).await?;
    step(&mut ws, start.x + 3, start.y).await?;
    drop(ws);
    let app2 = app;
    let pos = app2
        .eventually("position saved on disconnect", || async {
            Ok(app2.db().load_position(user.id).await?.filter(|p| p.x == start.x + 3))
        })
        .await?;
    assert_eq!(pos.radius, 9);
    Ok(())
});
