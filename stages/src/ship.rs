//! ship: hand the parcel to the carrier and commit the reservation — or, when the customer's
//! cancel reached the ledger first, end the order cancelled and ask for its capture back.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{OrderEvent, OrderStatus, Shipment};
use orderflow_pipeline::StageError;
use orderflow_stores::{CouponLedger, RefundLedger, StockLedger};
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
                // The stock went back with the cancel; the promotion uses and the capture now.
                if let Some(coupons) = &self.coupons {
                    crate::price::restore_coupons(coupons.as_ref(), &event).await?;
                }
                return crate::cancel::cancelled(self.refunds.as_deref(), event, "ship").await;
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
