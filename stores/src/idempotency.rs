//! The [`IdempotencyStore`] trait: `Idempotency-Key` claims of the checkout API.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::OrderId;
use std::time::Duration;

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now held for this request.
    Claimed,
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
    /// Claims `key` for a request with body `fingerprint` that will create `order_id`; a pending
    /// claim lapses after `pending_ttl` if it is neither completed nor abandoned.
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        order_id: OrderId,
        pending_ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// Marks the claim done (the order is on the log); it then lives `ttl`.
    async fn complete(&self, key: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Drops a claim whose request failed, so a retry can proceed.
    async fn abandon(&self, key: &str) -> Result<(), StoreError>;
}
