//! Retention: messages older than `--retention-days` are deleted by a background job (run by the
//! chat upkeep task at start and then periodically). Sessions keep their `last_seq`, so seqs stay
//! gapless for new messages after a purge.

use crate::store::keys::KeyStore;
use crate::store::{Db, now_ms};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Deletes messages older than `days` days, and their idempotency keys. Errors are logged; the
/// next run retries.
pub async fn purge(db: &Db, keys: &KeyStore, days: u32) -> u64 {
    let cutoff = now_ms() - i64::from(days) * DAY_MS;
    if let Err(e) = keys.purge_before(cutoff).await {
        tracing::error!(error = %e, "retention purge of idempotency keys failed");
    }
    match db.purge_messages_before(cutoff).await {
        Ok(n) => {
            if n > 0 {
                tracing::info!(purged = n, days, "retention purge");
                metrics::counter!("landworld_chat_messages_purged_total").increment(n);
            }
            n
        }
        Err(e) => {
            tracing::error!(error = %e, "retention purge failed");
            0
        }
    }
}
