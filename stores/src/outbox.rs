//! The [`Outbox`] trait: notifications to send, recorded once per order and kind.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::OrderId;

/// Customer notifications waiting for a sender.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Records a notification; true if new, false if this order already has one of this kind.
    async fn enqueue(
        &self,
        order: OrderId,
        kind: &str,
        payload: Vec<u8>,
    ) -> Result<bool, StoreError>;

    /// How many notifications are recorded (for tests and audits).
    async fn count(&self) -> Result<u64, StoreError>;
}
