//! The [`IdempotencyStore`] trait: `Idempotency-Key` claims of the checkout API.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::OrderId;
use std::time::Duration;

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is now held for this request, which must use `order_id`: a fresh id, or the id
    /// of an earlier claim with the same body that lapsed or failed, so a request that may
    /// already be on the log is never given a second order.
    Claimed {
        /// The order id to append under.
        order_id: OrderId,
    },
    /// The key is held already.
    Existing {
        /// Fingerprint of the body that first used the key.
        fingerprint: String,
        /// The order id it was given.
        order_id: OrderId,
        /// False while the first request is still being appended.
        complete: bool,
    },
}

/// Idempotency keys with expiry.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request with body `fingerprint`, proposing `order_id` for a new order.
    /// A pending claim lapses after `pending_ttl` if it is neither completed nor abandoned.
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        order_id: OrderId,
        pending_ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// Marks the claim of `order_id` done (the order is on the log); it then lives `ttl`. A
    /// claim that another request has taken over since is left alone.
    async fn complete(&self, key: &str, order_id: OrderId, ttl: Duration)
    -> Result<(), StoreError>;

    /// Lets a retry of a failed request take the claim over at once, keeping `order_id`.
    async fn abandon(&self, key: &str, order_id: OrderId) -> Result<(), StoreError>;
}
