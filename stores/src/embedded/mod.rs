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
