//! The client's own plugins, headless (no window, no GPU), against the real server started
//! in-process: an arrow key walks the avatar (predicted at once, then confirmed by the server and
//! seen by a web user), and text typed into the chat box reaches that web user's land room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::input::ButtonState;
use bevy::input::keyboard::{Key, KeyboardInput};
use bevy::prelude::*;
use landworld_shared::world::{TilePos, WorldMap};
use landworld_tests::{Backend, TestApp, TestUser, default_world};
use serde_json::json;

use crate::app::World;
use crate::cli::ServerLogin;
use crate::game::movement::Prediction;
use crate::net::{Connection, Net};
use crate::ui::chat::{ChatInput, ChatState};

fn headless(app: &TestApp, user: &TestUser, map: WorldMap) -> App {
    let mut client = App::new();
    client
        .add_plugins((MinimalPlugins, bevy::input::InputPlugin))
        .insert_resource(World(Arc::new(map)))
        .insert_resource(ServerLogin {
            server: Some(app.url("")),
            username: Some(user.username.clone()),
            password: Some(user.password.clone()),
            register: false,
        })
        .init_resource::<Net>()
        .add_plugins((crate::net::plugin, crate::game::plugin, crate::ui::plugin));
    client
}

/// Runs frames until `done` holds (or fails after 20 s).
async fn run_until(client: &mut App, what: &str, done: impl Fn(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        client.update();
        if done(client) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

fn key(client: &mut App, logical_key: Key, key_code: KeyCode) {
    let text = match &logical_key {
        Key::Character(c) => Some(c.clone()),
        _ => None,
    };
    for state in [ButtonState::Pressed, ButtonState::Released] {
        client.world_mut().write_message(KeyboardInput {
            key_code,
            logical_key: logical_key.clone(),
            state,
            text: text.clone(),
            repeat: false,
            window: Entity::PLACEHOLDER,
        });
    }
    client.update();
}

/// A tile inside a land with two walkable tiles east of it.
fn land_tile(map: &WorldMap) -> TilePos {
    for land in &map.lands {
        let r = land.rect;
        for y in r.y + 1..r.y + r.height as i32 - 1 {
            for x in r.x + 1..r.x + r.width as i32 - 3 {
                if (0..3).all(|d| map.is_walkable(TilePos::new(x + d, y))) {
                    return TilePos::new(x, y);
                }
            }
        }
    }
    panic!("no land with three walkable tiles in a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_walk_with_prediction_and_typed_chat_reaches_a_web_user() -> anyhow::Result<()> {
    let Some(app) = landworld_tests::spawn_app(Backend::Sqlite).await? else {
        anyhow::bail!("SQLite is always available");
    };
    let map = WorldMap::load(&default_world())?;
    let p = land_tile(&map);
    let (player, web) = (app.user("walker").await?, app.user("watcher").await?);
    app.place(&player, p.x, p.y).await?;
    app.place(&web, p.x + 2, p.y).await?;
    let (mut ws, _) = app.ws(&web).await?;
    let mut client = headless(&app, &player, map);

    run_until(&mut client, "welcome and the land room's history", |c| {
        let w = c.world();
        let chat = w.resource::<ChatState>();
        w.resource::<Connection>().is_connected()
            && chat.land_room().and_then(|r| chat.rooms.get(&r)).is_some_and(|r| r.history_loaded)
    })
    .await;
    assert_eq!(client.world().resource::<Prediction>().predicted, Some(p));

    // One step east: shown at once, confirmed by the server afterwards.
    client.world_mut().resource_mut::<ButtonInput<KeyCode>>().press(KeyCode::ArrowRight);
    client.update();
    client.world_mut().resource_mut::<ButtonInput<KeyCode>>().release(KeyCode::ArrowRight);
    let east = TilePos::new(p.x + 1, p.y);
    let prediction = client.world().resource::<Prediction>();
    assert_eq!((prediction.predicted, prediction.confirmed), (Some(east), Some(p)), "predicted before any answer");
    run_until(&mut client, "the server's confirmation", |c| c.world().resource::<Prediction>().confirmed == Some(east))
        .await;
    let pid = player.id.to_string();
    ws.expect_where("nearby_users", |f| {
        f["users"].as_array().is_some_and(|u| u.iter().any(|u| u["user_id"] == pid.as_str() && u["x"] == east.x))
    })
    .await?;

    // Typing: Enter opens the box (keys then type, not walk), Enter sends to the land room.
    key(&mut client, Key::Enter, KeyCode::Enter);
    assert!(client.world().resource::<ChatInput>().focused);
    for (c, code) in [("h", KeyCode::KeyH), ("i", KeyCode::KeyI), (" ", KeyCode::Space), ("d", KeyCode::KeyD)] {
        let logical = if c == " " { Key::Space } else { Key::Character(c.into()) };
        key(&mut client, logical, code);
    }
    assert_eq!(client.world().resource::<ChatInput>().text, "hi d");
    // Holding a movement key while typing does not walk.
    client.world_mut().resource_mut::<ButtonInput<KeyCode>>().press(KeyCode::KeyD);
    client.update();
    client.world_mut().resource_mut::<ButtonInput<KeyCode>>().release(KeyCode::KeyD);
    assert_eq!(client.world().resource::<Prediction>().predicted, Some(east), "typing does not walk");
    key(&mut client, Key::Enter, KeyCode::Enter);
    let got = ws.expect_where("message", |f| f["content"] == "hi d").await?;
    assert_eq!(got["sender_id"], pid.as_str());
    run_until(&mut client, "the own line after the ack", |c| {
        let chat = c.world().resource::<ChatState>();
        chat.lines(crate::ui::chat::Tab::Land).iter().any(|(_, l)| l.content == "hi d")
    })
    .await;

    // And the other way: the web user's message shows up live.
    let room = got["room_id"].as_str().unwrap_or_default().to_string();
    ws.send(json!({"type": "send_message", "room_id": room, "content": "welcome!"})).await?;
    run_until(&mut client, "the web user's message", |c| {
        let chat = c.world().resource::<ChatState>();
        chat.lines(crate::ui::chat::Tab::Land).iter().any(|(_, l)| l.content == "welcome!" && l.sender == web.username)
    })
    .await;
    Ok(())
}
