//! Every store on the embedded engine: durable across restarts, no server needed.

mod coupons;
mod feed;
mod idempotency;
mod ledger;
mod orders;
mod outbox;
mod packed;
mod payments;
mod rate_limit;
mod refunds;

pub use coupons::EmbeddedCoupons;
pub use feed::EmbeddedStatusFeed;
pub use idempotency::EmbeddedIdempotency;
pub use ledger::EmbeddedLedger;
pub use orders::EmbeddedOrderStore;
pub use outbox::EmbeddedOutbox;
pub use payments::EmbeddedPaymentJournal;
pub use rate_limit::LocalRateLimiter;
pub use refunds::EmbeddedRefundLedger;

use orderflow_storage::kv::open_existing as open_read;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Gives back a map's table when it is over `room` entries and more than twice what `keep`
/// entries need: a backlog grows the in-memory maps, and a `HashMap` otherwise keeps the
/// largest table it ever had (BENCHMARKS.md, the soak's memory). `room` keeps the map from
/// shrinking and growing again in steady state.
fn shrink_after_backlog<K: Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
    keep: usize,
    room: usize,
) {
    let keep = keep.max(map.len());
    if map.capacity() > room && map.capacity() > 2 * keep {
        map.shrink_to(keep + keep / 8);
    }
}

/// The smallest UUIDv7 minted at `ms` (Unix milliseconds): every id minted earlier sorts below it
/// byte by byte, so a table keyed by order id can be cut at a moment by a range.
fn first_id_at(ms: i64) -> [u8; 16] {
    let ms = u64::try_from(ms).unwrap_or(0);
    *uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10])
        .into_uuid()
        .as_bytes()
}

/// How many rows `table` holds (none if it was never written).
fn rows<
    K: orderflow_storage::kv::redb::Key + 'static,
    V: orderflow_storage::kv::redb::Value + 'static,
>(
    engine: &orderflow_storage::kv::Engine,
    table: orderflow_storage::kv::redb::TableDefinition<'static, K, V>,
) -> Result<u64, crate::StoreError> {
    use orderflow_storage::kv::redb::ReadableTableMetadata;
    Ok(engine.read(|txn| {
        Ok(match open_read(txn, table)? {
            Some(t) => t.len()?,
            None => 0,
        })
    })?)
}

/// Runs a long read (a retention scan of thousands of rows) on a blocking thread, off the async
/// threads the stages run on.
async fn read_blocking<T: Send + 'static>(
    engine: &orderflow_storage::kv::Engine,
    read: impl FnOnce(&orderflow_storage::kv::Engine) -> Result<T, crate::StoreError> + Send + 'static,
) -> Result<T, crate::StoreError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || read(&engine))
        .await
        .map_err(|e| crate::StoreError::Unavailable(format!("a blocking read failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::shrink_after_backlog;
    use std::collections::HashMap;

    #[test]
    fn a_map_gives_back_what_a_backlog_grew_and_keeps_its_steady_state_table() {
        // The projector's views: thousands during a backlog, a few hundred after.
        let mut views: HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        views.retain(|k, _| *k < 300);
        let grown = views.capacity();
        let left = views.len();
        shrink_after_backlog(&mut views, 2 * left, 16_384);
        assert!(views.capacity() < 1024, "{grown} → {}", views.capacity());
        assert_eq!(views.len(), 300);
        // A steady table under the room stays as it is, so it is not regrown every flush.
        let mut steady: HashMap<u64, u8> = (0..3_000).map(|i| (i, 0)).collect();
        steady.retain(|k, _| *k < 100);
        let before = steady.capacity();
        let left = steady.len();
        shrink_after_backlog(&mut steady, 2 * left, 16_384);
        assert_eq!(steady.capacity(), before);

        // The ledger's holds: a burst past the bound doubled the table; back at the bound, it
        // returns to the table the bound needs.
        let most = 100_000;
        let mut holds: HashMap<u64, [u8; 32]> = (0..130_000).map(|i| (i, [0; 32])).collect();
        let doubled = holds.capacity();
        holds.retain(|k, _| *k < most as u64);
        shrink_after_backlog(&mut holds, most, most);
        assert!(
            holds.capacity() >= most && holds.capacity() < doubled,
            "{doubled} → {}",
            holds.capacity()
        );
        let settled = holds.capacity();
        shrink_after_backlog(&mut holds, most, most);
        assert_eq!(holds.capacity(), settled, "no churn at the bound");
    }
}
