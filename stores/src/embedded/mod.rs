//! Every store on the embedded engine: durable across restarts, no server needed.

mod coupons;
mod feed;
mod idempotency;
mod ledger;
mod orders;
mod outbox;
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
