//! Plugin tests: the world app driven tick by tick (`app.update()`), commands in, frames out,
//! without sockets.

use std::sync::Arc;
use std::time::Duration;

use landworld_shared::protocol::ws::ServerFrame;
use landworld_shared::world::{Rect, TilePos, WorldMap};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::conn::{ConnHandle, OutFrame};
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

fn harness() -> Harness {
    let map = Arc::new(WorldMap::open(64, 64));
    let (persist_tx, persist_rx) = mpsc::channel(64);
    let land = Uuid::new_v4();
    let parts = WorldParts {
        settings: WorldSettings { tick_hz: 20, max_step: 1, position_flush: Duration::from_secs(3600), sim_bots: 0 },
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
    rx: mpsc::Receiver<OutFrame>,
}

impl Harness {
    fn connect(&mut self, x: i32, y: i32) -> Client {
        let user_id = Uuid::new_v4();
        let (conn, rx, _control) = ConnHandle::new(Uuid::new_v4());
        let saved = Some(SavedPosition { user_id, x, y, radius: 5 });
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
    while let Ok(f) = c.rx.try_recv() {
        out.push(serde_json::from_str(f.as_str()).expect("valid frame"));
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
