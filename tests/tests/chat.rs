//! Chat end to end (SPEC §4), on SQLite and PostgreSQL: rooms, durable acked messages with
//! gapless seqs, idempotent retries, replay with `since_seq`, private/group/proximity rooms,
//! typing, read receipts, soft delete, history paging, encryption at rest, key rotation,
//! retention, slow consumers, and the error paths.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Result, anyhow};
use landworld_server::chat::crypto::{Keyring, Sealed, rotate_and_reseal};
use landworld_server::store::chat::Page;
use landworld_shared::world::{TilePos, WorldMap};
use landworld_tests::{TestApp, TestUser, WsClient, both_backends, default_world};
use serde_json::{Value, json};
use uuid::Uuid;

fn map() -> WorldMap {
    WorldMap::load(&default_world()).expect("default world loads")
}

/// A horizontal run of `len` walkable tiles outside every land: its left end.
fn open_run(map: &WorldMap, len: i32) -> TilePos {
    for y in 0..map.height as i32 {
        let mut run = 0;
        for x in 0..map.width as i32 {
            let p = TilePos::new(x, y);
            if map.is_walkable(p) && map.land_at(p).is_none() {
                run += 1;
                if run == len {
                    return TilePos::new(x - len + 1, y);
                }
            } else {
                run = 0;
            }
        }
    }
    panic!("no walkable run of {len} tiles outside lands");
}

async fn first_land(app: &TestApp, user: &TestUser) -> Result<String> {
    let (_, lands) = app.get("/api/v1/lands", Some(&user.token)).await?;
    Ok(lands["lands"][0]["id"].as_str().ok_or_else(|| anyhow!("no lands"))?.to_string())
}

/// A walkable tile outside every land (so land-room membership comes only from `join_room`).
fn off_land() -> TilePos {
    static AT: std::sync::OnceLock<TilePos> = std::sync::OnceLock::new();
    *AT.get_or_init(|| open_run(&map(), 1))
}

/// Connects from a tile outside every land and explicitly joins a land room; returns the socket
/// and the `joined_room` frame.
async fn joined(app: &TestApp, user: &TestUser, room: &str) -> Result<(WsClient, Value)> {
    let at = off_land();
    app.place(user, at.x, at.y).await?;
    let (mut ws, _) = app.ws(user).await?;
    ws.send(json!({"type": "join_room", "room_id": room})).await?;
    let j = ws.expect("joined_room").await?;
    Ok((ws, j))
}

/// `a` joins the first land's room by land id, then `b` by the session id from `a`'s
/// `joined_room`; returns the session id and both sockets.
/// `a` joins the first land's room: its id and `a`'s connection.
async fn alone_in_a_land_room(app: &TestApp, a: &TestUser) -> Result<(String, WsClient)> {
    let land = first_land(app, a).await?;
    let (wa, ja) = joined(app, a, &land).await?;
    let room = ja["room_id"].as_str().ok_or_else(|| anyhow!("joined_room without room_id: {ja}"))?.to_string();
    Ok((room, wa))
}

async fn both_in_a_land_room(app: &TestApp, a: &TestUser, b: &TestUser) -> Result<(String, WsClient, WsClient)> {
    let (room, wa) = alone_in_a_land_room(app, a).await?;
    let (wb, _) = joined(app, b, &room).await?;
    Ok((room, wa, wb))
}

async fn send(ws: &mut WsClient, room: &str, content: &str, cmid: &str) -> Result<Value> {
    ws.send(json!({"type": "send_message", "room_id": room, "content": content, "client_msg_id": cmid})).await?;
    ws.expect_where("message_ack", |f| f["client_msg_id"] == cmid).await
}

async fn history(app: &TestApp, user: &TestUser, room: &str, query: &str) -> Result<(u16, Value)> {
    app.get(&format!("/api/v1/chat/sessions/{room}/messages{query}"), Some(&user.token)).await
}

fn seqs(page: &Value) -> Vec<i64> {
    page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect()
}

both_backends!(land_room_message_is_acked_and_delivered_to_members, |app| {
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let land = first_land(&app, &alice).await?;
    let (mut wa, ja) = joined(&app, &alice, &land).await?;
    assert_eq!(ja["kind"], "land");
    let room = ja["room_id"].as_str().unwrap().to_string();
    assert_ne!(room, land, "the room id is the land's session id");
    assert_eq!(ja["last_seq"], 0);
    let (mut wb, jb) = joined(&app, &bob, &room).await?;
    assert_eq!(jb["room_id"], room.as_str(), "join by session id reaches the same room");
    let members: HashSet<String> =
        jb["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap().to_string()).collect();
    assert!(members.contains(&alice.id.to_string()) && members.contains(&bob.id.to_string()), "{jb}");
    wa.expect_where("user_joined", |f| f["user_id"] == bob.id.to_string()).await?;
    // Alice's second connection gets the message too.
    let (mut wa2, _) = app.ws(&alice).await?;

    let ack = send(&mut wa, &room, "hello land", "c-1").await?;
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["room_id"], room.as_str());
    let message_id = ack["message_id"].as_str().unwrap().to_string();
    for ws in [&mut wa, &mut wb, &mut wa2] {
        let m = ws.expect("message").await?;
        assert_eq!(m["message_id"], message_id.as_str());
        assert_eq!(m["content"], "hello land");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["sender_id"], alice.id.to_string());
        assert_eq!(m["sender_username"], alice.username.as_str());
        assert_eq!(m["client_msg_id"], "c-1");
    }
    // Acked means durable: the row is there, and REST history shows it.
    let (status, page) = history(&app, &bob, &room, "").await?;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["content"], "hello land");
    assert_eq!(page["last_seq"], 1);

    // Leaving stops delivery.
    wb.send(json!({"type": "leave_room", "room_id": room})).await?;
    wb.expect("left_room").await?;
    send(&mut wa, &room, "after bob left", "c-2").await?;
    let frames = wb.drain(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| f["type"] != "message"), "{frames:?}");
    Ok(())
});

both_backends!(retries_with_the_same_client_msg_id_are_stored_once, |app| {
    let alice = app.user("alice").await?;
    let (room, mut wa) = alone_in_a_land_room(&app, &alice).await?;
    let first = send(&mut wa, &room, "once", "retry-1").await?;
    let again = send(&mut wa, &room, "once", "retry-1").await?;
    assert_eq!(first["message_id"], again["message_id"]);
    assert_eq!(first["seq"], again["seq"]);
    // The same key over REST (the fallback) is the same message too.
    let (status, rest) = app
        .post(
            &format!("/api/v1/chat/sessions/{room}/messages"),
            &json!({"content": "once", "client_msg_id": "retry-1"}),
            Some(&alice.token),
        )
        .await?;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["message_id"], first["message_id"]);
    let next = send(&mut wa, &room, "twice", "retry-2").await?;
    assert_eq!(next["seq"], 2, "no gap after retries");
    let (_, page) = history(&app, &alice, &room, "").await?;
    assert_eq!(seqs(&page), vec![1, 2]);
    // After a restart the key is still known (answered from the database).
    let app = app.restart().await?;
    let (mut wa, _) = joined(&app, &alice, &room).await?;
    let after = send(&mut wa, &room, "once", "retry-1").await?;
    assert_eq!(after["message_id"], first["message_id"]);
    let third = send(&mut wa, &room, "three", "retry-3").await?;
    assert_eq!(third["seq"], 3);
    Ok(())
});

// A retry the server no longer holds in memory (its key was merged into the key store at the
// graceful shutdown before a restart), in one commit batch with new messages: the key filter
// says the key may be stored, one lookup in the key store finds it, and the retry is acked with
// its original id and seq; the new messages get the next seqs without a gap, and every message
// is stored once.
both_backends!(
    a_forgotten_retry_shares_a_batch_with_new_messages,
    config = |c| {
        c.commit_window = Duration::from_millis(50);
    },
    |app| {
        let alice = app.user("alice").await?;
        let (room, mut wa) = alone_in_a_land_room(&app, &alice).await?;
        let one = send(&mut wa, &room, "one", "k-1").await?;
        let two = send(&mut wa, &room, "two", "k-2").await?;
        drop(wa);
        let app = app.restart().await?;
        let (mut wa, _) = joined(&app, &alice, &room).await?;
        // Sent back to back: with the 50 ms commit window they go into one batch.
        let sends = [("one", "k-1"), ("three", "k-3"), ("two", "k-2"), ("four", "k-4")];
        for (content, cmid) in sends {
            wa.send(json!({"type": "send_message", "room_id": room, "content": content, "client_msg_id": cmid}))
                .await?;
        }
        let mut acks = std::collections::HashMap::new();
        while acks.len() < sends.len() {
            let ack = wa.expect("message_ack").await?;
            acks.insert(ack["client_msg_id"].as_str().unwrap().to_string(), ack);
        }
        assert_eq!(acks["k-1"]["message_id"], one["message_id"]);
        assert_eq!(acks["k-1"]["seq"], 1);
        assert_eq!(acks["k-2"]["message_id"], two["message_id"]);
        assert_eq!(acks["k-2"]["seq"], 2);
        assert_eq!(acks["k-3"]["seq"], 3, "the retries used no seq");
        assert_eq!(acks["k-4"]["seq"], 4);
        let (_, page) = history(&app, &alice, &room, "").await?;
        assert_eq!(seqs(&page), vec![1, 2, 3, 4]);
        let contents: Vec<&str> =
            page["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(contents, ["one", "two", "three", "four"]);
        Ok(())
    }
);

/// SQLite's key store is never fsynced while the server runs; a copy left open before the
/// machine restarted (a power loss could have torn it) is rebuilt from `messages` at start, and
/// retries are still recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_recognised_after_the_key_store_is_rebuilt() -> Result<()> {
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite is always available");
    let alice = app.user("alice").await?;
    let (room, mut wa) = alone_in_a_land_room(&app, &alice).await?;
    let one = send(&mut wa, &room, "one", "k-1").await?;
    let two = send(&mut wa, &room, "two", "k-2").await?;
    drop(wa);
    let key_file = app.config.data_dir.join("landworld-keys.db");
    let mut app = app;
    app.stop().await?;
    assert!(key_file.exists(), "the key store lives next to the database");
    assert_eq!(std::fs::read_to_string(app.config.data_dir.join("landworld-keys.db.state"))?, "clean");
    // As if the machine had lost power with the store open: another boot, a torn file.
    std::fs::write(app.config.data_dir.join("landworld-keys.db.state"), "an earlier boot")?;
    std::fs::write(&key_file, b"torn")?;
    let app = app.restart().await?;
    let (mut wa, _) = joined(&app, &alice, &room).await?;
    let retry = send(&mut wa, &room, "one again", "k-1").await?;
    assert_eq!(retry["message_id"], one["message_id"]);
    let three = send(&mut wa, &room, "three", "k-3").await?;
    assert_eq!(three["seq"], 3);
    let retry = send(&mut wa, &room, "two again", "k-2").await?;
    assert_eq!(retry["message_id"], two["message_id"]);
    let (_, page) = history(&app, &alice, &room, "").await?;
    assert_eq!(seqs(&page), vec![1, 2, 3]);
    Ok(())
}

both_backends!(concurrent_senders_get_gapless_ordered_seqs, |app| {
    let watcher = app.user("watcher").await?;
    let land = first_land(&app, &watcher).await?;
    let (mut ww, jw) = joined(&app, &watcher, &land).await?;
    let room = jw["room_id"].as_str().unwrap().to_string();
    const SENDERS: usize = 5;
    const EACH: usize = 15;
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let user = app.user(&format!("s{s}")).await?;
        let (mut ws, _) = joined(&app, &user, &room).await?;
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..EACH {
                let cmid = format!("s{s}-{i}");
                ws.send(json!({"type": "send_message", "room_id": room, "content": cmid, "client_msg_id": cmid}))
                    .await?;
            }
            while acked.len() < EACH {
                let f = ws.expect("message_ack").await?;
                acked.push(f["seq"].as_i64().unwrap());
            }
            anyhow::Ok(acked)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    let expected: Vec<i64> = (1..=(SENDERS * EACH) as i64).collect();
    assert_eq!(all, expected, "acked seqs are 1..=N without gaps or repeats");
    // The watcher saw every message once, in seq order.
    let mut got = Vec::new();
    while got.len() < SENDERS * EACH {
        got.push(ww.expect("message").await?["seq"].as_i64().unwrap());
    }
    assert_eq!(got, expected);
    Ok(())
});

both_backends!(reconnecting_with_since_seq_recovers_exactly_what_was_missed, |app| {
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let (room, mut wa, mut wb) = both_in_a_land_room(&app, &alice, &bob).await?;
    for i in 1..=2 {
        send(&mut wa, &room, &format!("m{i}"), &format!("m{i}")).await?;
        wb.expect_where("message", |f| f["seq"] == i).await?;
    }
    drop(wb);
    for i in 3..=6 {
        send(&mut wa, &room, &format!("m{i}"), &format!("m{i}")).await?;
    }
    let (mut wb, _) = app.ws(&bob).await?;
    wb.send(json!({"type": "join_room", "room_id": room, "since_seq": 2})).await?;
    let j = wb.expect("joined_room").await?;
    assert_eq!(j["last_seq"], 6);
    // Live messages sent during the replay come after it, without duplicates.
    send(&mut wa, &room, "m7", "m7").await?;
    let mut got = Vec::new();
    while got.len() < 5 {
        let f = wb.next().await?;
        if f["type"] == "message" {
            got.push((f["seq"].as_i64().unwrap(), f["content"].as_str().unwrap().to_string()));
        }
    }
    let expected: Vec<(i64, String)> = (3..=7).map(|i| (i, format!("m{i}"))).collect();
    assert_eq!(got, expected);
    let extra = wb.drain(Duration::from_millis(300)).await;
    assert!(extra.iter().all(|f| f["type"] != "message"), "duplicates: {extra:?}");
    Ok(())
});

both_backends!(private_rooms_are_for_their_two_members_only, |app| {
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let eve = app.user("eve").await?;
    let (status, s1) = app.post("/api/v1/chat/private", &json!({"user_id": bob.id}), Some(&alice.token)).await?;
    assert_eq!(status, 200, "{s1}");
    assert_eq!(s1["kind"], "private");
    assert_eq!(s1["members"].as_array().unwrap().len(), 2);
    let (_, s2) = app.post("/api/v1/chat/private", &json!({"user_id": alice.id}), Some(&bob.token)).await?;
    assert_eq!(s1["id"], s2["id"], "created once, whoever asks");
    let room = s1["id"].as_str().unwrap().to_string();
    let (status, _) = app.post("/api/v1/chat/private", &json!({"user_id": alice.id}), Some(&alice.token)).await?;
    assert_eq!(status, 422);
    let (status, _) = app.post("/api/v1/chat/private", &json!({"user_id": Uuid::new_v4()}), Some(&alice.token)).await?;
    assert_eq!(status, 404);

    // Bob is online without joining: private messages reach him anyway.
    let (mut wb, _) = app.ws(&bob).await?;
    let (status, sent) = app
        .post(&format!("/api/v1/chat/sessions/{room}/messages"), &json!({"content": "psst"}), Some(&alice.token))
        .await?;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["seq"], 1);
    let m = wb.expect("message").await?;
    assert_eq!(m["content"], "psst");
    // Eve can neither read, write, nor join.
    let (status, body) = history(&app, &eve, &room, "").await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = app
        .post(&format!("/api/v1/chat/sessions/{room}/messages"), &json!({"content": "hi"}), Some(&eve.token))
        .await?;
    assert_eq!(status, 403);
    let (mut we, _) = app.ws(&eve).await?;
    we.send(json!({"type": "join_room", "room_id": room})).await?;
    let err = we.expect("error").await?;
    assert_eq!(err["code"], "forbidden");
    we.send(json!({"type": "send_message", "room_id": room, "content": "x", "client_msg_id": "e1"})).await?;
    let err = we.expect("error").await?;
    assert_eq!(err["code"], "forbidden");
    assert_eq!(err["ref"], "e1");
    // Sessions list the private room with Bob's unread count.
    let (_, list) = app.get("/api/v1/chat/sessions", Some(&bob.token)).await?;
    let s = list["sessions"].as_array().unwrap().iter().find(|s| s["id"] == room.as_str()).cloned().unwrap();
    assert_eq!(s["unread_count"], 1);
    Ok(())
});

both_backends!(groups_have_members_who_can_be_added_and_removed, |app| {
    let owner = app.user("owner").await?;
    let m1 = app.user("m1").await?;
    let m2 = app.user("m2").await?;
    let outsider = app.user("out").await?;
    let (status, g) = app
        .post("/api/v1/chat/groups", &json!({"name": "Builders", "member_ids": [m1.id]}), Some(&owner.token))
        .await?;
    assert_eq!(status, 201, "{g}");
    assert_eq!(g["kind"], "group");
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    let room = g["id"].as_str().unwrap().to_string();
    let (status, _) =
        app.post("/api/v1/chat/groups", &json!({"name": "", "member_ids": []}), Some(&owner.token)).await?;
    assert_eq!(status, 422);
    let (status, _) = app
        .post("/api/v1/chat/groups", &json!({"name": "x", "member_ids": [Uuid::new_v4()]}), Some(&owner.token))
        .await?;
    assert_eq!(status, 422);

    let (mut w1, _) = app.ws(&m1).await?;
    let path = format!("/api/v1/chat/groups/{room}/members");
    let (status, _) = app.post(&path, &json!({"user_id": m2.id}), Some(&outsider.token)).await?;
    assert_eq!(status, 403, "non-members cannot add");
    let (status, after) = app.post(&path, &json!({"user_id": m2.id}), Some(&m1.token)).await?;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["members"].as_array().unwrap().len(), 3);
    w1.expect_where("user_joined", |f| f["user_id"] == m2.id.to_string() && f["room_id"] == room.as_str()).await?;
    let (mut w2, _) = app.ws(&m2).await?;
    let (status, _) = app
        .post(&format!("/api/v1/chat/sessions/{room}/messages"), &json!({"content": "welcome"}), Some(&owner.token))
        .await?;
    assert_eq!(status, 201);
    assert_eq!(w2.expect("message").await?["content"], "welcome");
    // m1 may not remove m2; the owner may; m2 then reads nothing.
    let (status, _) = app.delete(&format!("{path}/{}", m2.id), None, Some(&m1.token)).await?;
    assert_eq!(status, 403);
    let (status, _) = app.delete(&path, Some(&json!({"user_id": m2.id})), Some(&owner.token)).await?;
    assert_eq!(status, 204);
    let (status, _) = history(&app, &m2, &room, "").await?;
    assert_eq!(status, 403);
    // Members may leave on their own.
    let (status, _) = app.delete(&format!("{path}/{}", m1.id), None, Some(&m1.token)).await?;
    assert_eq!(status, 204);
    let (status, _) = app.delete(&format!("{path}/{}", m1.id), None, Some(&owner.token)).await?;
    assert_eq!(status, 404);
    Ok(())
});

both_backends!(proximity_messages_reach_only_avatars_in_range, |app| {
    let map = map();
    let at = open_run(&map, 12);
    let near = TilePos::new(at.x + 3, at.y);
    let far = TilePos::new(at.x + 11, at.y);
    let (alice, bob, carol) = (app.user("alice").await?, app.user("bob").await?, app.user("carol").await?);
    app.place(&alice, at.x, at.y).await?;
    app.place(&bob, near.x, near.y).await?;
    app.place(&carol, far.x, far.y).await?;
    let (mut wa, _) = app.ws(&alice).await?;
    let (mut wb, _) = app.ws(&bob).await?;
    let (mut wc, _) = app.ws(&carol).await?;
    wa.expect_where("nearby_users", |f| f["users"].as_array().is_some_and(|u| u.len() == 1)).await?;
    wa.send(json!({"type": "join_room", "room_id": "proximity"})).await?;
    let j = wa.expect("joined_room").await?;
    assert_eq!(j["kind"], "proximity");
    let room = j["room_id"].as_str().unwrap().to_string();
    let ack = send(&mut wa, "proximity", "anyone around?", "p1").await?;
    assert_eq!(ack["room_id"], room.as_str());
    assert_eq!(wa.expect("message").await?["content"], "anyone around?");
    let m = wb.expect("message").await?;
    assert_eq!(m["content"], "anyone around?");
    let frames = wc.drain(Duration::from_millis(400)).await;
    assert!(frames.iter().all(|f| f["type"] != "message"), "carol is out of range: {frames:?}");
    // History: the recipients see it (with the sender's position), carol does not.
    let (_, hb) = history(&app, &bob, &room, "").await?;
    assert_eq!(hb["messages"].as_array().unwrap().len(), 1);
    assert_eq!(hb["messages"][0]["position"]["x"], at.x);
    let (status, hc) = history(&app, &carol, &room, "").await?;
    assert_eq!(status, 200);
    assert!(hc["messages"].as_array().unwrap().is_empty(), "{hc}");
    Ok(())
});

both_backends!(typing_expires_and_read_receipts_reach_others, |app| {
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let (room, mut wa, mut wb) = both_in_a_land_room(&app, &alice, &bob).await?;
    wa.send(json!({"type": "typing", "room_id": room, "is_typing": true})).await?;
    let t = wb.expect("typing").await?;
    assert_eq!(t["is_typing"], true);
    assert_eq!(t["user_id"], alice.id.to_string());
    // No renewal: it expires after about 5 s.
    let started = std::time::Instant::now();
    let t = wb.expect_where("typing", |f| f["is_typing"] == false).await?;
    assert_eq!(t["user_id"], alice.id.to_string());
    assert!(started.elapsed() >= Duration::from_secs(3), "expired too early");

    for i in 1..=3 {
        send(&mut wa, &room, &format!("r{i}"), &format!("r{i}")).await?;
    }
    let (_, list) = app.get("/api/v1/chat/sessions", Some(&bob.token)).await?;
    let s = list["sessions"].as_array().unwrap().iter().find(|s| s["id"] == room.as_str()).cloned().unwrap();
    assert_eq!(s["unread_count"], 3, "{s}");
    wb.send(json!({"type": "mark_read", "room_id": room, "seq": 2})).await?;
    let r = wa.expect("read_receipt").await?;
    assert_eq!(r["user_id"], bob.id.to_string());
    assert_eq!(r["seq"], 2);
    let (_, list) = app.get("/api/v1/chat/sessions", Some(&bob.token)).await?;
    let s = list["sessions"].as_array().unwrap().iter().find(|s| s["id"] == room.as_str()).cloned().unwrap();
    assert_eq!(s["unread_count"], 1);
    wb.send(json!({"type": "mark_read", "room_id": room, "seq": 99})).await?;
    assert_eq!(wb.expect("error").await?["code"], "invalid_message");
    Ok(())
});

both_backends!(soft_delete_by_sender_or_admin_only, |app| {
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let admin = app.admin().await?;
    let (room, mut wa, mut wb) = both_in_a_land_room(&app, &alice, &bob).await?;
    let a1 = send(&mut wa, &room, "oops", "d1").await?;
    let a2 = send(&mut wa, &room, "fine", "d2").await?;
    let (id1, id2) = (a1["message_id"].as_str().unwrap(), a2["message_id"].as_str().unwrap());
    let path = |id: &str| format!("/api/v1/chat/sessions/{room}/messages/{id}");
    let (status, body) = app.delete(&path(id1), None, Some(&bob.token)).await?;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app.delete(&path(id1), None, Some(&alice.token)).await?;
    assert_eq!(status, 204);
    let d = wb.expect("message_deleted").await?;
    assert_eq!(d["message_id"], id1);
    let (status, _) = app.delete(&path(id2), None, Some(&admin.token)).await?;
    assert_eq!(status, 204);
    let (status, _) = app.delete(&path(&Uuid::new_v4().to_string()), None, Some(&alice.token)).await?;
    assert_eq!(status, 404);
    let (_, page) = history(&app, &bob, &room, "").await?;
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "deleted messages stay in history, marked");
    assert!(msgs.iter().all(|m| m["deleted"] == true && m["content"] == ""), "{page}");
    // A replay skips deleted messages.
    let (mut wb2, _) = app.ws(&bob).await?;
    wb2.send(json!({"type": "join_room", "room_id": room, "since_seq": 0})).await?;
    wb2.expect("joined_room").await?;
    let frames = wb2.drain(Duration::from_millis(300)).await;
    assert!(frames.iter().all(|f| f["type"] != "message"), "{frames:?}");
    Ok(())
});

both_backends!(history_pages_in_both_directions, |app| {
    let alice = app.user("alice").await?;
    let land = first_land(&app, &alice).await?;
    // The open connection keeps her in the room (explicit joins end with the last connection).
    let (_wa, ja) = joined(&app, &alice, &land).await?;
    let room = ja["room_id"].as_str().unwrap().to_string();
    for i in 1..=7 {
        let (status, _) = app
            .post(
                &format!("/api/v1/chat/sessions/{room}/messages"),
                &json!({"content": format!("h{i}")}),
                Some(&alice.token),
            )
            .await?;
        assert_eq!(status, 201);
    }
    let (_, p) = history(&app, &alice, &room, "?limit=3").await?;
    assert_eq!(seqs(&p), vec![5, 6, 7]);
    assert_eq!(p["has_more"], true);
    let (_, p) = history(&app, &alice, &room, "?limit=3&before_seq=5").await?;
    assert_eq!(seqs(&p), vec![2, 3, 4]);
    assert_eq!(p["has_more"], true);
    let (_, p) = history(&app, &alice, &room, "?limit=3&before_seq=2").await?;
    assert_eq!(seqs(&p), vec![1]);
    assert_eq!(p["has_more"], false);
    let (_, p) = history(&app, &alice, &room, "?limit=4&after_seq=2").await?;
    assert_eq!(seqs(&p), vec![3, 4, 5, 6]);
    assert_eq!(p["has_more"], true);
    let (_, p) = history(&app, &alice, &room, "?after_seq=6").await?;
    assert_eq!(seqs(&p), vec![7]);
    assert_eq!(p["has_more"], false);
    for (q, status) in
        [("?limit=0", 422), ("?limit=201", 422), ("?limit=abc", 400), ("?after_seq=-1", 422), ("?bogus=1", 400)]
    {
        assert_eq!(history(&app, &alice, &room, q).await?.0, status, "{q}");
    }
    let (status, _) = history(&app, &alice, &Uuid::new_v4().to_string(), "").await?;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/api/v1/chat/sessions/{room}/messages"), None).await?;
    assert_eq!(status, 401);
    Ok(())
});

both_backends!(bad_chat_frames_get_errors_and_the_connection_stays_open, |app| {
    let alice = app.user("alice").await?;
    let land = first_land(&app, &alice).await?;
    let at = off_land();
    app.place(&alice, at.x, at.y).await?;
    let (mut wa, _) = app.ws(&alice).await?;
    // Not on the land and not joined: sending is refused.
    wa.send(json!({"type": "send_message", "room_id": land, "content": "hi", "client_msg_id": "x1"})).await?;
    assert_eq!(wa.expect("error").await?["code"], "forbidden");
    wa.send(json!({"type": "join_room", "room_id": "no-such-room"})).await?;
    assert_eq!(wa.expect("error").await?["code"], "not_found");
    wa.send(json!({"type": "join_room", "room_id": Uuid::new_v4()})).await?;
    assert_eq!(wa.expect("error").await?["code"], "not_found");
    wa.send(json!({"type": "join_room", "room_id": land})).await?;
    let room = wa.expect("joined_room").await?["room_id"].as_str().unwrap().to_string();
    wa.send(json!({"type": "send_message", "room_id": room, "content": ""})).await?;
    assert_eq!(wa.expect("error").await?["code"], "invalid_message");
    wa.send(json!({"type": "send_message", "room_id": room, "content": "x".repeat(4097), "client_msg_id": "big"}))
        .await?;
    let e = wa.expect("error").await?;
    assert_eq!(e["code"], "invalid_message");
    assert_eq!(e["ref"], "big");
    let ok = send(&mut wa, &room, &"é".repeat(2048), "max").await?;
    assert_eq!(ok["seq"], 1, "4096 bytes of UTF-8 is allowed");
    wa.send(json!({"type": "send_message", "room_id": room})).await?;
    assert_eq!(wa.expect("error").await?["code"], "invalid_frame");
    wa.send(json!({"type": "ping"})).await?;
    wa.expect("pong").await?;
    // REST: the same rules.
    let (status, body) = app
        .post(&format!("/api/v1/chat/sessions/{room}/messages"), &json!({"content": ""}), Some(&alice.token))
        .await?;
    assert_eq!(status, 422, "{body}");
    let (status, _) =
        app.post(&format!("/api/v1/chat/sessions/{room}/messages"), &json!({"text": "x"}), Some(&alice.token)).await?;
    assert_eq!(status, 422);
    let (status, _) = app.get(&format!("/api/v1/chat/land/{land}/participants?radius=51"), Some(&alice.token)).await?;
    assert_eq!(status, 422);
    let (status, _) =
        app.get(&format!("/api/v1/chat/land/{}/participants", Uuid::new_v4()), Some(&alice.token)).await?;
    assert_eq!(status, 404);
    Ok(())
});

both_backends!(land_session_participants_and_stats, |app| {
    let map = map();
    let alice = app.user("alice").await?;
    let (_, lands) = app.get("/api/v1/lands", Some(&alice.token)).await?;
    let land = lands["lands"][0].clone();
    let land_id = land["id"].as_str().unwrap().to_string();
    let (lx, ly) = (land["x"].as_i64().unwrap() as i32, land["y"].as_i64().unwrap() as i32);
    let (lw, lh) = (land["width"].as_i64().unwrap() as i32, land["height"].as_i64().unwrap() as i32);
    let inside = (lx..lx + lw)
        .flat_map(|x| (ly..ly + lh).map(move |y| TilePos::new(x, y)))
        .find(|p| map.is_walkable(*p))
        .unwrap();
    app.place(&alice, inside.x, inside.y).await?;
    let (mut wa, c) = app.ws(&alice).await?;
    assert_eq!(c["position"]["land_id"], land_id.as_str());
    let (status, s) = app.post(&format!("/api/v1/chat/land/{land_id}/session"), &json!({}), Some(&alice.token)).await?;
    assert_eq!(status, 200);
    let room = s["id"].as_str().unwrap().to_string();
    let (_, again) = app.post(&format!("/api/v1/chat/land/{land_id}/session"), &json!({}), Some(&alice.token)).await?;
    assert_eq!(again["id"], room.as_str());
    // Standing on the land is membership: she may send without join_room.
    wa.expect_where("user_joined", |f| f["room_id"] == room.as_str()).await?;
    let ack = send(&mut wa, &room, "on my land", "l1").await?;
    assert_eq!(ack["seq"], 1);
    let (status, p) = app
        .eventually("alice listed as a participant", || async {
            let (status, p) = app.get(&format!("/api/v1/chat/land/{land_id}/participants"), Some(&alice.token)).await?;
            Ok((p["total"] == 1).then_some((status, p)))
        })
        .await?;
    assert_eq!(status, 200);
    assert_eq!(p["participants"][0]["user_id"], alice.id.to_string());
    assert_eq!(p["participants"][0]["on_land"], true);
    let (status, stats) = app.get("/api/v1/chat/stats", Some(&alice.token)).await?;
    assert_eq!(status, 200);
    assert!(stats["sessions"].as_i64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["messages"], 1);
    assert_eq!(stats["messages_today"], 1);
    assert!(stats["active_rooms"].as_i64().unwrap() >= 1);
    let (_, list) = app.get("/api/v1/chat/sessions", Some(&alice.token)).await?;
    let kinds: HashSet<String> =
        list["sessions"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap().to_string()).collect();
    assert!(kinds.contains("land") && kinds.contains("proximity"), "{list}");
    Ok(())
});

both_backends!(contents_are_encrypted_at_rest_and_survive_key_rotation, |app| {
    let alice = app.user("alice").await?;
    let (room_s, mut wa) = alone_in_a_land_room(&app, &alice).await?;
    let room: Uuid = room_s.parse()?;
    let secret_a = "the treasure is under the old oak";
    let secret_b = "meet me at the harbour at dawn";
    send(&mut wa, &room_s, secret_a, "e1").await?;
    send(&mut wa, &room_s, secret_b, "e2").await?;
    let (rows, _) = app.db().history(room, None, Page::latest(10)).await?;
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for secret in [secret_a, secret_b] {
            assert!(!r.ciphertext.windows(secret.len()).any(|w| w == secret.as_bytes()), "plaintext at rest");
        }
        assert_eq!(r.nonce.len(), 12);
        assert_eq!(r.key_id, 1);
    }
    assert_ne!(rows[0].nonce, rows[1].nonce);
    // The keyring the server uses opens the rows; swapped ciphertexts or a flipped bit do not.
    let ring = Keyring::load_or_create(None, &app.config.data_dir)?;
    let sealed = |r: &landworld_server::store::chat::MessageRow| Sealed {
        key_id: r.key_id,
        nonce: r.nonce.clone(),
        ciphertext: r.ciphertext.clone(),
    };
    assert_eq!(ring.open_text(rows[0].id, room, &sealed(&rows[0]))?, secret_a);
    assert!(ring.open(rows[1].id, room, &sealed(&rows[0])).is_err(), "a ciphertext moved to another row");
    let mut flipped = sealed(&rows[1]);
    flipped.ciphertext[3] ^= 0x10;
    assert!(ring.open(rows[1].id, room, &flipped).is_err());

    // Rotation while the server runs: a new current key, old rows re-sealed, all readable.
    let rotation = rotate_and_reseal(app.db(), &ring).await?;
    assert_eq!(rotation.key_id, 2);
    assert_eq!(rotation.resealed, 2);
    let (rows, _) = app.db().history(room, None, Page::latest(10)).await?;
    assert!(rows.iter().all(|r| r.key_id == 2));
    let (_, page) = history(&app, &alice, &room_s, "").await?;
    assert_eq!(page["messages"][0]["content"], secret_a);
    assert_eq!(page["messages"][1]["content"], secret_b);
    // After a restart new messages use the new key.
    let app = app.restart().await?;
    let (mut wa, _) = joined(&app, &alice, &room_s).await?;
    send(&mut wa, &room_s, "fresh", "e3").await?;
    let (rows, _) = app.db().history(room, None, Page::latest(10)).await?;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.key_id == 2));
    let (_, page) = history(&app, &alice, &room_s, "").await?;
    assert_eq!(page["messages"][2]["content"], "fresh");
    Ok(())
});

both_backends!(
    retention,
    config = |c| {
        c.retention_days = Some(2);
        c.retention_interval = Duration::from_millis(200);
    },
    |app| {
        let alice = app.user("alice").await?;
        let (room_s, mut wa) = alone_in_a_land_room(&app, &alice).await?;
        let room: Uuid = room_s.parse()?;
        send(&mut wa, &room_s, "old news", "o1").await?;
        send(&mut wa, &room_s, "older news", "o2").await?;
        // Age both rows by three days, straight in the database.
        let (rows, _) = app.db().history(room, None, Page::latest(10)).await?;
        let three_days = 3 * 24 * 3600 * 1000;
        for r in &rows {
            app.db().backdate_message(r.id, r.created_at - three_days).await?;
        }
        app.eventually("the purge", || async {
            let (_, page) = history(&app, &alice, &room_s, "").await?;
            Ok(page["messages"].as_array().unwrap().is_empty().then_some(()))
        })
        .await?;
        let next = send(&mut wa, &room_s, "new", "o3").await?;
        assert_eq!(next["seq"], 3, "seqs continue after a purge");
        Ok(())
    }
);

both_backends!(a_stalled_reader_is_disconnected_while_others_keep_flowing, |app| {
    let sender = app.user("sender").await?;
    let fast = app.user("fast").await?;
    let stalled = app.user("stalled").await?;
    let (status, g) = app
        .post(
            "/api/v1/chat/groups",
            &json!({"name": "firehose", "member_ids": [fast.id, stalled.id]}),
            Some(&sender.token),
        )
        .await?;
    assert_eq!(status, 201, "{g}");
    let room = g["id"].as_str().unwrap().to_string();
    let (mut wf, _) = app.ws(&fast).await?;
    let (ws_stalled, _) = app.ws(&stalled).await?;
    // The stalled client stops reading. Big messages over REST fill its queue and socket.
    let big = "z".repeat(4000);
    let total = 3000;
    let mut seen = 0;
    let mut sends = Vec::new();
    for i in 0..total {
        let (app_http, url, token, body) = (
            app.http.clone(),
            app.url(&format!("/api/v1/chat/sessions/{room}/messages")),
            sender.token.clone(),
            json!({"content": format!("{i} {big}")}),
        );
        sends.push(tokio::spawn(async move {
            app_http.post(url).bearer_auth(token).json(&body).send().await.map(|r| r.status().as_u16())
        }));
        if sends.len() >= 32 {
            for s in sends.drain(..) {
                assert_eq!(s.await??, 201);
            }
            // The fast reader keeps up.
            while let Ok(f) = wf.next_within(Duration::from_millis(1)).await {
                if f["type"] == "message" {
                    seen += 1;
                }
            }
        }
    }
    for s in sends.drain(..) {
        assert_eq!(s.await??, 201);
    }
    while seen < total {
        let f = wf.next().await?;
        if f["type"] == "message" {
            seen += 1;
        }
    }
    // The server dropped the stalled connection: it is no longer counted.
    app.eventually("the stalled connection to be dropped", || async {
        let (_, online) = app.get("/api/v1/ws/online-users", Some(&sender.token)).await?;
        let still = online["users"].as_array().unwrap().iter().any(|u| u["user_id"] == stalled.id.to_string());
        Ok((!still).then_some(()))
    })
    .await?;
    drop(ws_stalled);
    Ok(())
});

/// `--commit-window-ms`: messages sent within the window after a batch's first message are
/// committed together — one transaction, so they carry the same `created_at` — and each is
/// still acked and delivered once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_window_gathers_the_messages_sent_within_it_into_one_commit() -> Result<()> {
    let app = landworld_tests::spawn_app_with(landworld_tests::Backend::Sqlite, |c| {
        c.commit_window = Duration::from_millis(400);
    })
    .await?
    .expect("sqlite is always available");
    let alice = app.user("alice").await?;
    let (room, mut wa) = alone_in_a_land_room(&app, &alice).await?;
    for i in 0..4 {
        wa.send(json!({"type": "send_message", "room_id": room, "content": format!("w{i}"), "client_msg_id": format!("w-{i}")}))
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut acks = Vec::new();
    let mut delivered = Vec::new();
    while acks.len() < 4 || delivered.len() < 4 {
        let f = wa.next().await?;
        match f["type"].as_str() {
            Some("message_ack") => acks.push(f),
            Some("message") => delivered.push(f["content"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    let seqs: Vec<i64> = acks.iter().map(|a| a["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert!(acks.iter().all(|a| a["created_at"] == acks[0]["created_at"]), "one commit: {acks:?}");
    assert_eq!(delivered, ["w0", "w1", "w2", "w3"]);
    Ok(())
}

async fn windowed_app(delivery_ms: u64) -> Result<TestApp> {
    landworld_tests::spawn_app_with(landworld_tests::Backend::Sqlite, |c| {
        c.delivery_window = Duration::from_millis(delivery_ms);
    })
    .await?
    .ok_or_else(|| anyhow!("sqlite is always available"))
}

/// `--delivery-window-ms`: acks go out at commit; deliveries are gathered for the window, so
/// messages sent within it reach members together (here: every ack before the first delivery),
/// each once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_window_acks_at_once_and_delivers_the_gathered_messages_together() -> Result<()> {
    let app = windowed_app(400).await?;
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let (room, mut wa, mut wb) = both_in_a_land_room(&app, &alice, &bob).await?;
    for i in 0..3 {
        wa.send(json!({"type": "send_message", "room_id": room, "content": format!("d{i}"), "client_msg_id": format!("d-{i}")}))
            .await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut order = Vec::new();
    while order.iter().filter(|k: &&String| k.starts_with("message:")).count() < 3 {
        let f = wa.next().await?;
        match f["type"].as_str() {
            Some("message_ack") => order.push(format!("ack:{}", f["seq"])),
            Some("message") => order.push(format!("message:{}", f["seq"])),
            _ => {}
        }
    }
    assert_eq!(order, ["ack:1", "ack:2", "ack:3", "message:1", "message:2", "message:3"]);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = wb.expect("message").await?;
        seen.push(m["content"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["d0", "d1", "d2"]);
    Ok(())
}

/// A deletion right after the ack, while the delivery is still being gathered, reaches the
/// other members after the message it deletes, never before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_never_overtakes_the_message_it_deletes() -> Result<()> {
    let app = windowed_app(400).await?;
    let alice = app.user("alice").await?;
    let bob = app.user("bob").await?;
    let (room, mut wa, mut wb) = both_in_a_land_room(&app, &alice, &bob).await?;
    let ack = send(&mut wa, &room, "regret", "r1").await?;
    let id = ack["message_id"].as_str().unwrap().to_string();
    let (status, _) =
        app.delete(&format!("/api/v1/chat/sessions/{room}/messages/{id}"), None, Some(&alice.token)).await?;
    assert_eq!(status, 204);
    let mut order = Vec::new();
    while !order.iter().any(|k| k == "message_deleted") {
        let f = wb.next().await?;
        if let Some(kind @ ("message" | "message_deleted")) = f["type"].as_str() {
            assert_eq!(f["message_id"], id.as_str());
            order.push(kind.to_string());
        }
    }
    assert_eq!(order, ["message", "message_deleted"]);
    Ok(())
}

/// On the wire, frame by frame (the load tool's client, which shows every frame): a client
/// that closes gets exactly one close frame back — the protocol layer's answer goes through the
/// connection's ordered output, and the writer then sends no second one — and then the end of
/// the stream; the frames before it arrive whole and in order, written straight to the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_exactly_one_close_frame() -> Result<()> {
    use landworld_tests::loadgen::wire::{Event, RawWs};
    let app = landworld_tests::spawn_app(landworld_tests::Backend::Sqlite).await?.expect("sqlite");
    let user = app.user("wire").await?;
    let mut ws = RawWs::connect(&app.ws_url(&user.token)).await?;
    let first = match ws.next().await {
        Some(Ok(Event::Text(t))) => serde_json::from_slice::<Value>(&t)?,
        other => return Err(anyhow!("expected the connected frame, got {other:?}")),
    };
    assert_eq!(first["type"], "connected");
    ws.send_text(&json!({"type": "ping"}).to_string()).await?;
    ws.send_close(1000).await?;
    let mut texts = Vec::new();
    let mut closes = Vec::new();
    let read_all = async {
        while let Some(event) = ws.next().await {
            match event? {
                Event::Text(t) => texts.push(serde_json::from_slice::<Value>(&t)?),
                Event::Close(code) => closes.push(code),
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), read_all).await.map_err(|_| anyhow!("no end of stream"))??;
    assert!(texts.iter().any(|t| t["type"] == "pong"), "the ping was answered before the close: {texts:?}");
    assert_eq!(closes, [Some(1000)], "one close frame, then the end of the stream");
    Ok(())
}
