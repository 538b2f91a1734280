//! The [`PaymentJournal`] trait: what a payment provider has answered, once per key.

use crate::StoreError;
use async_trait::async_trait;

/// The durable memory of a payment provider: one outcome per idempotency key, written once.
/// The simulated provider keeps its captures here, so a charge retried after a crash or a
/// restart is answered with the first outcome instead of being captured again, as a real
/// provider does.
#[async_trait]
pub trait PaymentJournal: Send + Sync + 'static {
    /// Records `outcome` for `key` unless one is recorded already; returns the outcome that
    /// stands (the earlier one, if any).
    async fn record_once(&self, key: &str, outcome: &str) -> Result<String, StoreError>;

    /// The outcome recorded for `key`, if any.
    async fn outcome(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Every recorded `(key, outcome)`, for audits and tests.
    async fn entries(&self) -> Result<Vec<(String, String)>, StoreError>;
}
