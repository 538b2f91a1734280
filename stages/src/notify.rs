//! notify: queue the customer's confirmation in the outbox, once per order.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{Notification, OrderEvent, OrderStatus};
use orderflow_pipeline::StageError;
use orderflow_stores::Outbox;
use std::sync::Arc;

/// Writes the confirmation to the outbox and completes the order.
pub struct Notify {
    outbox: Arc<dyn Outbox>,
}

impl Notify {
    /// Queues notifications in `outbox`.
    pub fn new(outbox: Arc<dyn Outbox>) -> Self {
        Self { outbox }
    }
}

#[async_trait]
impl OrderStage for Notify {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let order = &event.order;
        let payload = serde_json::json!({
            "template": "order_shipped",
            "order_id": order.id,
            "customer_id": order.customer_id,
            "total": order.pricing.as_ref().map(|p| p.total),
            "tracking_number": order.shipment.as_ref().map(|s| s.tracking_number.clone()),
        });
        let bytes =
            serde_json::to_vec(&payload).map_err(|e| StageError::permanent(e.to_string()))?;
        self.outbox
            .enqueue(order.id, "order_shipped", bytes)
            .await
            .map_err(crate::order_stage::store_error)?;
        event.order.notification = Some(Notification {
            channel: "email".into(),
            queued_at: Utc::now(),
        });
        Ok(Step::Advance(event.advance(OrderStatus::Completed)))
    }
}
