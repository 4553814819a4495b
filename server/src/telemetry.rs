//! Logging (tracing) and metrics (a process-wide Prometheus recorder).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber once; later calls (tests) are no-ops.
///
/// `renetcode` logs every UDP packet it cannot authenticate at ERROR level, so anyone could
/// flood the log with junk datagrams: it is silenced unless the filter names it. (Our game
/// server logs what matters about game clients itself.)
pub fn init_logging(filter: &str) {
    let filter = if filter.contains("renetcode") { filter.to_string() } else { format!("{filter},renetcode=off") };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info,renetcode=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}

/// The process-wide metrics recorder. `metrics` macros write to one global recorder, so every
/// server in a process (tests start several) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let tick_buckets = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1,
                0.25,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("landworld_tick_duration_seconds".into()), &tick_buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder is installed (embedding): render an empty local one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!("landworld_ws_connections", "Open chat WebSocket connections");
    metrics::describe_gauge!("landworld_avatars", "Avatars in the world (users online)");
    metrics::describe_gauge!("landworld_users_online", "Users online, as last published");
    metrics::describe_histogram!("landworld_tick_duration_seconds", "Duration of one simulation tick");
    metrics::describe_histogram!(
        "landworld_chat_delivery_round_seconds",
        "Time the chat fan-out spends handing one delivery round to every recipient connection"
    );
    metrics::describe_counter!("landworld_moves_accepted_total", "Moves accepted");
    metrics::describe_counter!("landworld_moves_rejected_total", "Moves rejected");
    metrics::describe_counter!("landworld_ws_frames_in_total", "Text frames received on chat WebSockets");
    metrics::describe_gauge!("landworld_game_clients", "Connected game clients (UDP)");
    metrics::describe_counter!(
        "landworld_game_malformed_total",
        "Game clients disconnected for a message that did not decode"
    );
    metrics::gauge!("landworld_ws_connections").increment(0.0);
    metrics::gauge!("landworld_avatars").increment(0.0);
    metrics::counter!("landworld_moves_accepted_total").increment(0);
}
