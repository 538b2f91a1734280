//! ship: hand the parcel to the carrier and commit the reservation — or, when the customer's
//! cancel reached the ledger first, end the order cancelled and ask for its capture back.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{
    OrderEvent, OrderStatus, Refund, RefundStatus, Shipment, cancellation_refund_id,
};
use orderflow_pipeline::StageError;
use orderflow_stores::{CouponLedger, RefundAnswer, RefundClaim, RefundLedger, StockLedger};
use std::sync::Arc;

/// Commits the held stock and records a shipment with a tracking number.
pub struct Ship {
    ledger: Arc<dyn StockLedger>,
    carrier: String,
    coupons: Option<Arc<dyn CouponLedger>>,
    refunds: Option<Arc<dyn RefundLedger>>,
}

impl Ship {
    /// Ships with `carrier`, committing stock in `ledger`.
    pub fn new(ledger: Arc<dyn StockLedger>, carrier: impl Into<String>) -> Self {
        Self {
            ledger,
            carrier: carrier.into(),
            coupons: None,
            refunds: None,
        }
    }

    /// Gives a cancelled order's promotion uses back in `coupons` and counts the refund of its
    /// capture in `refunds`.
    pub fn with_compensation(
        mut self,
        coupons: Arc<dyn CouponLedger>,
        refunds: Arc<dyn RefundLedger>,
    ) -> Self {
        self.coupons = Some(coupons);
        self.refunds = Some(refunds);
        self
    }

    /// Ends an order cancelled after its charge: promotion uses back, and a refund of what is
    /// left of the capture (counted once, by the key `{order}:cancel`), which the refund step
    /// pays. The stock went back with the cancel.
    async fn cancel(&self, mut event: OrderEvent) -> Result<Step, StageError> {
        if let Some(coupons) = &self.coupons {
            crate::price::restore_coupons(coupons.as_ref(), &event).await?;
        }
        let order = event.order.id;
        if let (Some(refunds), Some(payment)) = (&self.refunds, &event.order.payment) {
            let claim = RefundClaim {
                key: format!("{order}:cancel"),
                refund_id: cancellation_refund_id(order),
                amount: None,
                reason: "cancelled".to_owned(),
                captured: payment.amount,
            };
            let answer = refunds
                .request(order, claim)
                .await
                .map_err(crate::order_stage::store_error)?;
            if let RefundAnswer::Accepted(entry) | RefundAnswer::Repeat(entry) = answer {
                event.order.refunds = vec![Refund {
                    refund_id: entry.refund_id,
                    amount: entry.amount,
                    reason: entry.reason,
                    status: RefundStatus::Pending,
                    at: Utc::now(),
                    detail: None,
                }];
            }
        }
        Ok(Step::Cancel(event.cancel("ship")))
    }
}

/// The tracking number of an order: derived from its id, so a repeat gives the same one.
pub fn tracking_number(event: &OrderEvent) -> String {
    let hex = event.order.id.0.simple().to_string().to_ascii_uppercase();
    format!("OF{}", &hex[hex.len() - 16..])
}

#[async_trait]
impl OrderStage for Ship {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let committed = self
            .ledger
            .commit(event.order.id)
            .await
            .map_err(crate::order_stage::store_error)?;
        if !committed {
            // The ledger decides between a cancel and the shipment: the first one stands.
            if self
                .ledger
                .cancelled(event.order.id)
                .await
                .map_err(crate::order_stage::store_error)?
            {
                return self.cancel(event).await;
            }
            // A charged order must hold its stock; anything else is a bug to look at, not retry.
            return Err(StageError::permanent(format!(
                "order {} has no held reservation to commit",
                event.order.id
            )));
        }
        event.order.shipment = Some(Shipment {
            carrier: self.carrier.clone(),
            tracking_number: tracking_number(&event),
            shipped_at: Utc::now(),
        });
        Ok(Step::Advance(event.advance(OrderStatus::Shipped)))
    }
}
