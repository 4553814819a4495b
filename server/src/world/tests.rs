//! Plugin tests: the world app driven tick by tick (`app.update()`), commands in, frames out,
//! without sockets.

use std::sync::Arc;
use std::time::Duration;

use landworld_shared::protocol::ws::{NearbyUser, ServerFrame};
use landworld_shared::world::{Rect, TilePos, WorldMap};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::conn::{ConnHandle, OutQueue};
use super::lands::LandInfo;
use super::persist::PersistMsg;
use super::*;
use crate::store::positions::SavedPosition;

struct Harness {
    app: App,
    handle: WorldHandle,
    persist_rx: mpsc::Receiver<PersistMsg>,
    land: Uuid,
}

/// A world where `nearby_users` goes out on every tick with a change (no coalescing), so tests
/// can follow each change; [`paced_harness`] has the server's default pacing.
fn harness() -> Harness {
    harness_with(Duration::ZERO)
}

fn paced_harness() -> Harness {
    harness_with(Duration::from_millis(landworld_shared::limits::NEARBY_INTERVAL_MS))
}

fn harness_with(nearby_interval: Duration) -> Harness {
    let map = Arc::new(WorldMap::open(64, 64));
    let (persist_tx, persist_rx) = mpsc::channel(64);
    let land = Uuid::new_v4();
    let parts = WorldParts {
        settings: WorldSettings {
            tick_hz: 20,
            max_step: 1,
            position_flush: Duration::from_secs(3600),
            nearby_interval,
            sim_bots: 0,
        },
        map,
        lands: vec![LandInfo { id: land, room_id: land, name: "Plot".into(), rect: Rect::new(10, 10, 5, 5) }],
        persist_tx,
        chat: None,
    };
    let (app, handle) = build_app(parts);
    Harness { app, handle, persist_rx, land }
}

struct Client {
    user_id: Uuid,
    conn: ConnHandle,
    rx: OutQueue,
}

impl Harness {
    fn connect(&mut self, x: i32, y: i32) -> Client {
        self.connect_with_radius(x, y, 5)
    }

    fn connect_with_radius(&mut self, x: i32, y: i32, radius: u32) -> Client {
        let user_id = Uuid::new_v4();
        let (conn, rx, _control) = ConnHandle::new(Uuid::new_v4());
        let saved = Some(SavedPosition { user_id, x, y, radius });
        self.send(WorldCommand::Connect {
            user_id,
            username: Arc::from(format!("u{x}_{y}")),
            conn: conn.clone(),
            saved,
        });
        Client { user_id, conn, rx }
    }

    fn send(&mut self, cmd: WorldCommand) {
        self.handle.commands.try_send(cmd).expect("queue has room");
    }

    fn tick(&mut self) {
        self.app.update();
    }

    fn move_to(&mut self, c: &Client, x: i32, y: i32) {
        self.send(WorldCommand::Move { user_id: c.user_id, conn_id: c.conn.conn_id, to: TilePos::new(x, y) });
    }
}

fn frames(c: &mut Client) -> Vec<ServerFrame> {
    let mut out = Vec::new();
    while let Ok(item) = c.rx.try_recv() {
        for f in item.frames() {
            out.push(serde_json::from_str(f.as_str()).expect("valid frame"));
        }
    }
    out
}

fn last_nearby(frames: &[ServerFrame]) -> Option<Vec<Uuid>> {
    frames.iter().rev().find_map(|f| match f {
        ServerFrame::NearbyUsers { users, .. } => Some(users.iter().map(|u| u.user_id).collect()),
        _ => None,
    })
}

#[test]
fn connect_sends_connected_presence_and_nearby() {
    let mut h = harness();
    let mut a = h.connect(3, 3);
    h.tick();
    let f = frames(&mut a);
    assert!(matches!(f[0], ServerFrame::Connected { position, .. } if position.x == 3 && position.y == 3));
    assert!(f.iter().any(|f| matches!(f, ServerFrame::PresenceUpdate { status, .. } if status.as_str() == "online")));
    assert_eq!(last_nearby(&f), Some(vec![]));
}

#[test]
fn proximity_diffs_reach_both_sides_only_on_change() {
    let mut h = harness();
    let mut a = h.connect(0, 0);
    let mut b = h.connect(7, 0);
    h.tick();
    frames(&mut a);
    frames(&mut b);
    h.move_to(&b, 6, 0);
    h.tick();
    assert_eq!(last_nearby(&frames(&mut a)), None, "no change, no frame");
    h.move_to(&b, 5, 0);
    h.tick();
    assert_eq!(last_nearby(&frames(&mut a)), Some(vec![b.user_id]));
    assert_eq!(last_nearby(&frames(&mut b)), Some(vec![a.user_id]));
    h.move_to(&b, 6, 0);
    h.tick();
    assert_eq!(last_nearby(&frames(&mut a)), Some(vec![]));
    assert_eq!(last_nearby(&frames(&mut b)), Some(vec![]));
}

fn nearby_frames(frames: &[ServerFrame]) -> Vec<(Vec<NearbyUser>, Option<u32>)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::NearbyUsers { users, total, .. } => Some((users.clone(), *total)),
            _ => None,
        })
        .collect()
}

#[test]
fn nearby_changes_inside_the_interval_are_coalesced_into_one_frame_with_the_latest_state() {
    let mut h = paced_harness();
    let every = h.app.world().resource::<WorldSettings>().nearby_every_ticks();
    assert_eq!(every, 4, "200 ms at 20 Hz");
    let mut a = h.connect(0, 0);
    let mut b = h.connect(7, 0);
    h.tick();
    frames(&mut a);
    frames(&mut b);
    for _ in 0..every {
        h.tick();
    }
    // The first change after a quiet spell goes out on its own tick, to both sides.
    h.move_to(&b, 6, 0);
    h.tick();
    h.move_to(&b, 5, 0);
    h.tick();
    assert_eq!(last_nearby(&frames(&mut a)), Some(vec![b.user_id]));
    assert_eq!(last_nearby(&frames(&mut b)), Some(vec![a.user_id]));
    // Three changes in the next ticks (leave, enter, move within): held back...
    let mut held = Vec::new();
    for x in [6, 5, 4] {
        h.move_to(&b, x, 0);
        h.tick();
        held.extend(frames(&mut a));
    }
    assert!(nearby_frames(&held).is_empty(), "no frame inside the interval: {held:?}");
    assert_eq!(h.app.world().resource::<super::proximity::NearbyPacing>().deferred_len(), 2);
    // ...and sent once when it has passed, with the state at that time.
    h.tick();
    let sent = nearby_frames(&frames(&mut a));
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (users, total) = &sent[0];
    assert_eq!((users.len(), users[0].user_id, users[0].x, users[0].distance, *total), (1, b.user_id, 4, 4, None));
    assert_eq!(nearby_frames(&frames(&mut b)).len(), 1);
    // Nothing more without a change.
    for _ in 0..2 * every {
        h.tick();
    }
    assert!(nearby_frames(&frames(&mut a)).is_empty());
    assert_eq!(h.app.world().resource::<super::proximity::NearbyPacing>().deferred_len(), 0);
}

#[test]
fn a_crowded_nearby_list_names_the_nearest_and_gives_the_total() {
    let mut h = paced_harness();
    let mut a = h.connect_with_radius(30, 30, 10);
    // 150 users within radius 10 of (30, 30), at distances 1..=10.
    let mut others = Vec::new();
    'place: for ring in 1..=10 {
        for dx in -ring..=ring {
            for dy in [-ring, ring] {
                if others.len() == 150 {
                    break 'place;
                }
                let (x, y) = (30 + dx, 30 + dy);
                others.push((h.connect(x, y), x, y));
            }
        }
    }
    h.tick();
    let sent = nearby_frames(&frames(&mut a));
    let (users, total) = sent.last().expect("a nearby_users frame");
    assert_eq!(users.len(), landworld_shared::limits::MAX_NEARBY_LISTED);
    assert_eq!(*total, Some(150));
    let mut want: Vec<u32> = others
        .iter()
        .map(|&(_, x, y)| landworld_shared::world::chebyshev(TilePos::new(30, 30), TilePos::new(x, y)))
        .collect();
    want.sort_unstable();
    want.truncate(users.len());
    let got: Vec<u32> = users.iter().map(|u| u.distance).collect();
    assert_eq!(got, want, "the nearest, nearest first");
    for u in users {
        let (_, x, y) = others.iter().find(|(c, _, _)| c.user_id == u.user_id).expect("a placed user");
        assert_eq!((u.x, u.y), (*x, *y));
    }
    // A small list is complete and has no total.
    let (users, total) = nearby_frames(&frames(&mut others[0].0)).pop().expect("frame");
    assert!(users.len() < landworld_shared::limits::MAX_NEARBY_LISTED && total.is_none());
}

#[test]
fn invalid_moves_are_refused_and_one_move_applies_per_tick() {
    let mut h = harness();
    let mut a = h.connect(5, 5);
    h.tick();
    frames(&mut a);
    h.move_to(&a, 7, 5);
    h.move_to(&a, 6, 5);
    h.move_to(&a, 7, 5);
    h.tick();
    let f = frames(&mut a);
    assert!(matches!(&f[0], ServerFrame::Error { code, .. } if code == "invalid_position"));
    h.tick();
    let f = frames(&mut a);
    assert!(matches!(f[0], ServerFrame::LocationUpdated { x: 6, y: 5, .. }), "{f:?}");
    h.tick();
    assert!(matches!(frames(&mut a)[0], ServerFrame::LocationUpdated { x: 7, y: 5, .. }));
    h.move_to(&a, 64, 5);
    h.tick();
    assert!(matches!(&frames(&mut a)[0], ServerFrame::Error { code, .. } if code == "invalid_position"));
}

#[test]
fn land_membership_follows_position() {
    let mut h = harness();
    let mut a = h.connect(9, 10);
    let mut b = h.connect(12, 12);
    h.tick();
    frames(&mut a);
    let fb = frames(&mut b);
    assert!(fb.iter().any(
        |f| matches!(f, ServerFrame::UserJoined { room_id, user_id, .. } if *room_id == h.land && *user_id == b.user_id)
    ));
    h.move_to(&a, 10, 10);
    h.tick();
    let fa = frames(&mut a);
    assert!(fa.iter().any(|f| matches!(f, ServerFrame::LocationUpdated { land_id: Some(l), .. } if *l == h.land)));
    assert!(fa.iter().any(|f| matches!(f, ServerFrame::UserJoined { user_id, .. } if *user_id == a.user_id)));
    assert!(
        frames(&mut b).iter().any(|f| matches!(f, ServerFrame::UserJoined { user_id, .. } if *user_id == a.user_id))
    );
    // Steps inside the land change nothing about membership.
    for x in [11, 10] {
        h.move_to(&a, x, 10);
        h.tick();
        let quiet = |f: &ServerFrame| !matches!(f, ServerFrame::UserJoined { .. } | ServerFrame::UserLeft { .. });
        assert!(frames(&mut a).iter().all(quiet));
        assert!(frames(&mut b).iter().all(quiet));
    }
    h.move_to(&a, 9, 10);
    h.tick();
    assert!(frames(&mut a).iter().any(|f| matches!(f, ServerFrame::UserLeft { user_id, .. } if *user_id == a.user_id)));
    assert!(frames(&mut b).iter().any(|f| matches!(f, ServerFrame::UserLeft { user_id, .. } if *user_id == a.user_id)));
}

#[test]
fn last_disconnect_goes_offline_and_saves_position() {
    let mut h = harness();
    let mut a = h.connect(1, 1);
    let b = h.connect(2, 1);
    h.tick();
    frames(&mut a);
    h.send(WorldCommand::Disconnect { user_id: b.user_id, conn_id: b.conn.conn_id });
    h.tick();
    let f = frames(&mut a);
    assert!(f.iter().any(|f| matches!(f, ServerFrame::PresenceUpdate { user_id, status, .. } if *user_id == b.user_id && status.as_str() == "offline")));
    assert_eq!(last_nearby(&f), Some(vec![]));
    let mut saved = Vec::new();
    while let Ok(msg) = h.persist_rx.try_recv() {
        if let PersistMsg::Positions(batch) = msg {
            saved.extend(batch);
        }
    }
    assert!(saved.iter().any(|p| p.user_id == b.user_id && (p.x, p.y) == (2, 1)));
    assert_eq!(h.handle.snapshot.load().users.len(), 1);
}

#[test]
fn a_full_send_queue_closes_the_slow_consumer_only() {
    let mut h = harness();
    let mut a = h.connect(1, 1);
    let (conn, _rx_never_read, control) = ConnHandle::new(Uuid::new_v4());
    let slow = Uuid::new_v4();
    h.send(WorldCommand::Connect {
        user_id: slow,
        username: Arc::from("slow"),
        conn,
        saved: Some(SavedPosition { user_id: slow, x: 2, y: 1, radius: 5 }),
    });
    h.tick();
    for i in 0..(conn::SEND_QUEUE as i32 + 10) {
        let x = 1 + (i % 2);
        h.move_to(&a, x, 2);
        h.tick();
        frames(&mut a);
    }
    assert!(control.is_closed());
    assert_eq!(control.code(), 4008);
}

#[test]
fn bot_and_user_steps_reach_the_index_in_one_batch() {
    let map = Arc::new(WorldMap::open(32, 32));
    let (persist_tx, _persist_rx) = mpsc::channel(64);
    let parts = WorldParts {
        settings: WorldSettings {
            tick_hz: 20,
            max_step: 1,
            position_flush: Duration::from_secs(3600),
            nearby_interval: Duration::from_millis(200),
            sim_bots: 200,
        },
        map,
        lands: Vec::new(),
        persist_tx,
        chat: None,
    };
    let (app, handle) = build_app(parts);
    let mut h = Harness { app, handle, persist_rx: mpsc::channel(1).1, land: Uuid::new_v4() };
    let mut a = h.connect(16, 16);
    h.tick();
    frames(&mut a);
    for k in 0..20 {
        h.move_to(&a, 16 + (k + 1) % 2, 16);
        h.tick();
        // After every tick the index agrees with every avatar, bots and the user alike, and the
        // user's nearby list is exactly the avatars within its radius.
        let world = h.app.world_mut();
        let mut q = world.query::<&super::avatar::Avatar>();
        let avatars: Vec<(TilePos, u32)> = q.iter(world).map(|av| (av.pos, av.slot)).collect();
        let prox = world.resource::<super::avatar::Proximity>();
        assert_eq!(prox.index.len(), avatars.len());
        for &(pos, slot) in &avatars {
            assert_eq!(prox.index.position(slot), Some(pos), "slot {slot}");
        }
    }
    let user_slot = {
        let world = h.app.world_mut();
        let mut q = world.query::<&super::avatar::Avatar>();
        q.iter(world).find(|av| av.user_id == a.user_id).map(|av| (av.pos, av.slot))
    };
    let (pos, slot) = user_slot.expect("the user's avatar");
    let world = h.app.world_mut();
    let mut q = world.query::<&super::avatar::Avatar>();
    let mut want: Vec<u32> = q
        .iter(world)
        .filter(|av| av.slot != slot && landworld_shared::world::chebyshev(av.pos, pos) <= 5)
        .map(|av| av.slot)
        .collect();
    want.sort_unstable();
    let prox = world.resource::<super::avatar::Proximity>();
    let mut got = prox.index.nearby(slot).to_vec();
    got.sort_unstable();
    assert_eq!(got, want);
}
