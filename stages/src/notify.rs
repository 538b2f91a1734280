//! notify: render the customer's shipping confirmation into the outbox, once per order (the
//! dispatcher in [`crate::deliver`] hands it to the mail sink).

use crate::deliver::mail::CONFIRMATION;
use crate::deliver::render_confirmation;
use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{Notification, OrderEvent, OrderStatus};
use orderflow_pipeline::StageError;
use orderflow_stores::{MAIL, NewMessage, Outbox};
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
        let email = NewMessage {
            key: format!("{}:{CONFIRMATION}:{MAIL}", order.id),
            order_id: order.id,
            event: CONFIRMATION.to_owned(),
            destination: MAIL.to_owned(),
            payload: render_confirmation(order, Utc::now()),
        };
        self.outbox
            .enqueue(vec![email])
            .await
            .map_err(crate::order_stage::store_error)?;
        event.order.notification = Some(Notification {
            channel: "email".into(),
            queued_at: Utc::now(),
        });
        Ok(Step::Advance(event.advance(OrderStatus::Completed)))
    }
}
