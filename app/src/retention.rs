//! Retention of the embedded stores: the views of settled orders and the settled stock holds
//! leave disk `store.retention_secs` after their order was accepted, delivered outbox messages
//! `outbox.retention_hours` after their delivery, `Idempotency-Key` entries when they expire,
//! so a data directory stays bounded at a steady rate. (The log has its own chore,
//! `log.retention_secs`.)

use crate::supervisor::Chore;
use orderflow_stores::embedded::{EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore};
use orderflow_stores::{Outbox, StoreError};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Rows removed in one write. Each write joins a group commit beside the stages' writes, which
/// wait for it: at about 15 µs a row (an outbox message is four B-tree removes) a write of 1,000
/// rows held every stage writing beside it for 15 ms, a few times a second.
const ROWS_A_WRITE: usize = 100;
/// Writes in one pass at most (50,000 rows, ten seconds' worth at 5,000 orders/s); what is left
/// goes at the next pass.
const WRITES_A_PASS: usize = 500;

/// How often the retention chores run: each pass removes a few seconds' orders rather than a
/// minute's in one burst the stages would queue behind.
const EVERY: Duration = Duration::from_secs(5);

/// Removes settled orders' views older than `retention` from the embedded order store.
pub fn views_chore(store: EmbeddedOrderStore, retention: Duration) -> Chore {
    Chore::new("view-retention", EVERY, move || {
        let store = store.clone();
        pass("views", retention, move |before| {
            let store = store.clone();
            async move { store.purge_settled(before, ROWS_A_WRITE).await }
        })
    })
}

/// Removes settled stock holds of orders older than `retention` from the embedded ledger.
pub fn holds_chore(ledger: EmbeddedLedger, retention: Duration) -> Chore {
    Chore::new("hold-retention", EVERY, move || {
        let ledger = ledger.clone();
        pass("holds", retention, move |before| {
            let ledger = ledger.clone();
            async move { ledger.purge_settled(before, ROWS_A_WRITE).await }
        })
    })
}

/// Removes outbox messages delivered more than `retention` ago, their keys with them.
pub fn outbox_chore(outbox: Arc<dyn Outbox>, retention: Duration) -> Chore {
    Chore::new("outbox-purge", EVERY, move || {
        let outbox = outbox.clone();
        pass("outbox", retention, move |before| {
            let outbox = outbox.clone();
            async move { outbox.purge_delivered(before, ROWS_A_WRITE).await }
        })
    })
}

/// Removes `Idempotency-Key` entries past their time (completed keys at the end of
/// `api.idempotency_ttl_secs`, lapsed claims a day later), by their expiry index.
pub fn idempotency_chore(store: EmbeddedIdempotency) -> Chore {
    Chore::new("idempotency-purge", EVERY, move || {
        let store = store.clone();
        // The entries carry their own expiry: the horizon is now.
        pass("idempotency", Duration::ZERO, move |now| {
            let store = store.clone();
            async move { store.purge_expired(now, ROWS_A_WRITE).await }
        })
    })
}

/// One pass: writes of up to [`ROWS_A_WRITE`] rows until fewer are left; a failure is logged
/// and the next pass tries again.
async fn pass<F, Fut>(what: &'static str, retention: Duration, purge: F) -> Result<(), String>
where
    F: Fn(chrono::DateTime<chrono::Utc>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, StoreError>> + Send,
{
    let before =
        chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut removed = 0;
    for _ in 0..WRITES_A_PASS {
        match purge(before).await {
            Ok(n) => {
                removed += n;
                if n < ROWS_A_WRITE {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "Cannot remove settled rows past their retention");
                break;
            }
        }
    }
    metrics::counter!("orderflow_store_retained_removed_total", "what" => what)
        .increment(removed as u64);
    if removed > 0 {
        tracing::debug!(what, removed, "Removed settled rows past their retention");
    }
    Ok(())
}
