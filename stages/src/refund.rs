//! refund: pay back a refund counted against an order's capture, through the
//! [`PaymentProvider`], once per refund id. A refund the provider refuses for good is given
//! back to the capture in the [`RefundLedger`] and shown failed; one that fails for a while is
//! retried, then dead-lettered and replayable like every stage's records.

use crate::charge::{PaymentProvider, RefundResult};
use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{OrderEvent, RefundStatus};
use orderflow_pipeline::StageError;
use orderflow_stores::RefundLedger;
use std::sync::Arc;

/// Pays the pending refund an event carries.
pub struct RefundStep {
    provider: Arc<dyn PaymentProvider>,
    refunds: Arc<dyn RefundLedger>,
}

impl RefundStep {
    /// Refunds through `provider`; failed refunds are given back in `refunds`.
    pub fn new(provider: Arc<dyn PaymentProvider>, refunds: Arc<dyn RefundLedger>) -> Self {
        Self { provider, refunds }
    }
}

#[async_trait]
impl OrderStage for RefundStep {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let order = event.order.id;
        let Some(payment) = event.order.payment.clone() else {
            return Err(StageError::permanent(format!(
                "order {order}: a refund of an order with no capture"
            )));
        };
        let Some(mut refund) = event
            .order
            .refunds
            .iter()
            .find(|r| r.status == RefundStatus::Pending)
            .cloned()
        else {
            return Err(StageError::permanent(format!(
                "order {order}: a refund request with no pending refund"
            )));
        };
        let result = self
            .provider
            .refund(order, &refund.refund_id, &payment.payment_id, refund.amount)
            .await
            .map_err(|e| StageError::retryable(e.to_string()))?;
        match result {
            RefundResult::Refunded => refund.status = RefundStatus::Succeeded,
            RefundResult::Declined(reason) => {
                self.refunds
                    .fail(order, &refund.refund_id)
                    .await
                    .map_err(crate::order_stage::store_error)?;
                refund.status = RefundStatus::Failed;
                refund.detail = Some(reason);
            }
        }
        refund.at = Utc::now();
        metrics::counter!("orderflow_refunds_total", "outcome" => match refund.status {
            RefundStatus::Succeeded => "refunded",
            _ => "failed",
        })
        .increment(1);
        event.order.refunds = vec![refund];
        Ok(Step::Advance(event))
    }
}
