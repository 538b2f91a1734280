//! The state the stages and the API keep beside the log, behind one trait per concern.
//!
//! - [`StockLedger`]: all-or-nothing multi-line reservations keyed by order id, release, commit,
//!   and the `initial = available + reserved + committed` invariant.
//! - [`IdempotencyStore`]: `Idempotency-Key` claims of the checkout API.
//! - [`OrderStore`]: the projected [`OrderView`](orderflow_domain::OrderView) of every order.
//! - [`Outbox`]: messages to deliver (customer emails, merchant webhooks), one per order, event
//!   and destination, with their delivery records.
//! - [`StatusFeed`]: live status changes for WebSocket followers.
//! - [`PaymentJournal`]: the simulated payment provider's durable memory, one outcome per key.
//!
//! - [`RefundLedger`]: refunds counted against each order's capture, once per key, never past it.
//! - [`CouponLedger`]: promotion-code uses, once per order, within each code's limit.
//! - [`RateLimiter`]: per-customer request budgets for the ingest.
//!
//! [`embedded`] implements all of them on the embedded engine; [`redis`] implements the hot
//! path (ledger, idempotency keys, hot view, feed, coupons, rate limits) on Redis.

pub mod coupons;
pub mod embedded;
pub mod error;
pub mod feed;
pub mod idempotency;
pub mod ledger;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod rate_limit;
pub mod redis;
pub mod refunds;
pub mod scylla;

pub use coupons::{CouponLedger, Redemption, Usage, UseLimits, used_up};
pub use error::StoreError;
pub use feed::{StatusChange, StatusFeed};
pub use idempotency::{Claim, IdempotencyStore};
pub use ledger::{
    CancelOutcome, PinOutcome, ReserveOutcome, Shortage, SkuQuantity, SkuStock, StockLedger,
    StockLevel,
};
pub use orders::{OrderStore, Page};
pub use outbox::{
    Attempt, Delivery, DeliveryState, Listing, MAIL, NewMessage, Next, Outbox, Tried, message_id,
};
pub use payments::PaymentJournal;
pub use rate_limit::{Rate, RateLimiter};
pub use refunds::{RefundAnswer, RefundClaim, RefundEntry, RefundLedger};
