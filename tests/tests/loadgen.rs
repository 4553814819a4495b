//! The load tool's logic (`landworld_tests::loadgen`) against an in-process server: a few
//! connections for a few seconds, asserting correctness only (nothing lost or duplicated, the
//! latencies were recorded). Throughput and latency figures belong in docs/performance.md.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use landworld_tests::loadgen::{self, Cred, LoadConfig, Users};
use landworld_tests::{Backend, TestApp, spawn_app};

async fn users(app: &TestApp, n: usize) -> anyhow::Result<Vec<Cred>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let u = app.user("lg").await?;
        out.push(Cred { user_id: u.id, username: u.username, token: u.token });
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_and_idle_connections() -> anyhow::Result<()> {
    let app = spawn_app(Backend::Sqlite).await?.expect("sqlite");
    let creds = users(&app, 20).await?;

    let mut cfg = LoadConfig::new(app.url(""), Users::Given(creds.clone()), 20);
    cfg.move_rate = 4.0;
    cfg.duration = Duration::from_secs(3);
    cfg.drain = Duration::from_secs(1);
    cfg.metrics_url = Some(app.url("/metrics"));
    let report = loadgen::run(&cfg).await?;
    println!("{report}");
    assert_eq!(report.connections_opened, 20, "{report}");
    assert_eq!(report.connections_failed, 0, "{report}");
    assert!(report.moves_sent >= 20, "{report}");
    assert!(report.moves_accepted > 0, "{report}");
    assert!(report.move_latency.count > 0, "{report}");
    assert_eq!((report.lost, report.duplicated, report.out_of_order), (0, 0, 0), "{report}");
    assert!(report.closes_by_code.is_empty(), "{report}");
    assert!(report.errors_by_code.keys().all(|c| c == "invalid_position"), "{report}");
    assert!(report.tick.as_ref().is_some_and(|t| t.ticks > 0), "{report}");

    // Idle: the same users hold their connections; the server is this process.
    let mut cfg = LoadConfig::new(app.url(""), Users::Given(creds), 20);
    cfg.idle = true;
    cfg.duration = Duration::from_millis(500);
    cfg.settle = Duration::from_millis(200);
    cfg.server_pid = Some(std::process::id());
    let report = loadgen::run(&cfg).await?;
    println!("{report}");
    assert_eq!(report.connections_opened, 20, "{report}");
    let server = report.server.as_ref().expect("server usage sampled");
    assert!(server.rss_growth_per_connection_bytes.is_some(), "{report}");
    assert!(report.closes_by_code.is_empty(), "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_in_one_land_room_loses_nothing() -> anyhow::Result<()> {
    let app = spawn_app(Backend::Sqlite).await?.expect("sqlite");
    let creds = users(&app, 20).await?;
    let mut cfg = LoadConfig::new(app.url(""), Users::Given(creds), 20);
    cfg.rooms = 1;
    cfg.msg_rate = 20.0;
    cfg.duration = Duration::from_secs(3);
    cfg.drain = Duration::from_secs(10);
    let report = loadgen::run(&cfg).await?;
    println!("{report}");
    assert_eq!(report.connections_opened, 20, "{report}");
    assert_eq!(report.bots_joined, 20, "{report}");
    assert!(report.messages_sent >= 40, "{report}");
    assert_eq!(report.messages_rejected, 0, "{report}");
    assert_eq!(report.deliveries_expected, report.messages_sent * 20, "{report}");
    assert_eq!((report.lost, report.duplicated, report.out_of_order), (0, 0, 0), "{report}");
    assert_eq!(report.missing_acks, 0, "{report}");
    assert_eq!(report.delivery_latency.count, report.deliveries_expected, "{report}");
    assert_eq!(report.ack_latency.count, report.messages_sent, "{report}");
    Ok(())
}
