//! Durable message throughput: the chat service's group-commit writer on a real SQLite file
//! (WAL, `synchronous=FULL`) or PostgreSQL, driven at a fixed offered rate through the same
//! `Chat::send` path the WebSocket and REST use (validation, membership, idempotency keys,
//! sealing, one transaction per batch, fan-out). Reports sustained acks/s and the
//! send→ack latency distribution.
//!
//! Latencies are reported twice: over every message, and over the messages sent after the first
//! `--warmup-secs` (default 1; the database file, the log and the caches start empty), and with
//! `--per-second`, for the messages sent in each second of the run.
//!
//! `cargo bench -p landworld-server --bench chat_write -- --rate 50000 --secs 10 [--database-url postgres://…]`
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a short smoke pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use landworld_server::chat::crypto::Keyring;
use landworld_server::chat::{Chat, ChatSettings};
use landworld_server::store::users::UserRow;
use landworld_server::store::{Db, now_ms};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SENDERS: usize = 64;

// The allocator the server binary runs with (src/main.rs), so the bench measures the same code.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let rate: u64 = arg("--rate").map(|r| r.parse()).transpose()?.unwrap_or(if full { 50_000 } else { 2_000 });
    let secs: f64 = arg("--secs").map(|r| r.parse()).transpose()?.unwrap_or(if full { 10.0 } else { 0.5 });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let commit_window = Duration::from_millis(arg("--commit-window-ms").map(|r| r.parse()).transpose()?.unwrap_or(0));
    let warmup: f64 = arg("--warmup-secs").map(|r| r.parse()).transpose()?.unwrap_or(if full { 1.0 } else { 0.0 });
    runtime.block_on(run(rate, secs, Duration::from_secs_f64(warmup), commit_window, arg("--database-url")))
}

async fn run(
    rate: u64,
    secs: f64,
    warmup: Duration,
    commit_window: Duration,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    let mut users = Vec::new();
    for i in 0..SENDERS {
        let id = Uuid::new_v4();
        let username = format!("bench{i}_{}", &id.simple().to_string()[..6]);
        db.insert_user(&UserRow {
            id,
            username: username.clone(),
            display_name: None,
            password_hash: "$argon2id$unused".into(),
            role: "user".into(),
            created_at: now_ms(),
            last_seen: None,
        })
        .await?;
        users.push((id, Arc::<str>::from(username.as_str())));
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.0).collect();
    let group = db.create_group("bench", ids[0], &ids, now_ms()).await?;
    let stop = CancellationToken::new();
    let (chat, _tasks) = Chat::start(
        db.clone(),
        Keyring::single([7; 32]),
        ChatSettings { max_content_bytes: 4096, commit_window, delivery_window: Duration::ZERO },
        &[],
        None,
        Duration::from_secs(3600),
        stop.clone(),
    )
    .await?;
    let room = group.id.to_string();
    let content = "a typical chat line of about sixty bytes, give or take a few".to_string();

    // Offered load: every millisecond, each sender task sends its share.
    let total = (rate as f64 * secs) as u64;
    let per_sender_per_ms = rate as f64 / SENDERS as f64 / 1000.0;
    let started = Instant::now();
    let mut handles = Vec::new();
    for (s, (user_id, username)) in users.iter().cloned().enumerate() {
        let chat = chat.clone();
        let room = room.clone();
        let content = content.clone();
        // Each sender's acks are awaited in send order by a collector task of its own, so an
        // ack's latency is taken when it arrives, not when the sender next looks.
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, oneshot::Receiver<_>)>();
        let collector = tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some((at, rx)) = ack_rx.recv().await {
                if let Ok(Ok(_)) = rx.await {
                    let since_start = at.duration_since(started);
                    latencies.push((since_start >= warmup, since_start.as_secs(), at.elapsed()));
                }
            }
            latencies
        });
        handles.push(tokio::spawn(async move {
            let mut owed = 0.0f64;
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let quota = total / SENDERS as u64;
            while n < quota {
                tick.tick().await;
                owed += per_sender_per_ms;
                while owed >= 1.0 && n < quota {
                    owed -= 1.0;
                    let (tx, rx) = oneshot::channel();
                    let cmid = format!("b{s}-{n}");
                    let sent_at = Instant::now();
                    chat.send(
                        user_id,
                        username.clone(),
                        &room,
                        content.clone(),
                        Some(cmid),
                        landworld_server::chat::writer::Reply::Rest(tx),
                    )
                    .await?;
                    let _ = ack_tx.send((sent_at, rx));
                    n += 1;
                }
            }
            drop(ack_tx);
            anyhow::Ok(collector.await?)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await??);
    }
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = all.iter().map(|(_, _, l)| *l).collect();
    let mut steady: Vec<Duration> = all.iter().filter(|(after, _, _)| *after).map(|(_, _, l)| *l).collect();
    latencies.sort_unstable();
    steady.sort_unstable();
    let acked = latencies.len() as u64;
    let sent = total / SENDERS as u64 * SENDERS as u64;
    println!(
        "chat_write backend={} offered={rate}/s for {secs}s: sent {sent}, acked {acked} in {:.2}s = {:.0} acks/s; \
         ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; after the first {:.1}s ({} acks): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        db.backend(),
        elapsed.as_secs_f64(),
        acked as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        warmup.as_secs_f64(),
        steady.len(),
        percentile(&steady, 0.5).as_secs_f64() * 1e3,
        percentile(&steady, 0.99).as_secs_f64() * 1e3,
        steady.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if std::env::args().any(|a| a == "--per-second") {
        // One pass into per-second buckets (not one scan of every latency per second).
        let seconds = all.iter().map(|(_, s, _)| *s).max().unwrap_or(0);
        let mut buckets: Vec<Vec<Duration>> = vec![Vec::new(); usize::try_from(seconds)? + 1];
        for (_, s, l) in &all {
            if let Some(b) = usize::try_from(*s).ok().and_then(|s| buckets.get_mut(s)) {
                b.push(*l);
            }
        }
        for (second, mut sent_then) in buckets.into_iter().enumerate() {
            sent_then.sort_unstable();
            println!(
                "  sent in second {second}: {} acks, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                sent_then.len(),
                percentile(&sent_then, 0.5).as_secs_f64() * 1e3,
                percentile(&sent_then, 0.99).as_secs_f64() * 1e3,
                sent_then.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            );
        }
    }
    let stored = db.history(group.id, None, landworld_server::store::chat::Page::latest(1)).await?.0;
    anyhow::ensure!(acked == sent, "{} messages were not acked", sent - acked);
    anyhow::ensure!(stored.first().map(|m| m.seq) == Some(sent as i64), "last seq is not {sent}");
    stop.cancel();
    chat.flush().await;
    db.close().await;
    Ok(())
}
