//! reserve: hold the stock of every line, all or nothing.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use orderflow_domain::{OrderEvent, OrderStatus, RejectionCode, Reservation};
use orderflow_pipeline::StageError;
use orderflow_stores::{ReserveOutcome, SkuQuantity, StockLedger};
use std::sync::Arc;
use std::time::Duration;

/// Reserves stock through the ledger; a shortage rejects the order with `out_of_stock`.
pub struct Reserve {
    ledger: Arc<dyn StockLedger>,
    ttl: Duration,
}

impl Reserve {
    /// Holds stock for `ttl`; a hold not charged by then is released by the expiry sweeper.
    pub fn new(ledger: Arc<dyn StockLedger>, ttl: Duration) -> Self {
        Self { ledger, ttl }
    }
}

#[async_trait]
impl OrderStage for Reserve {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let lines: Vec<SkuQuantity> = event
            .order
            .lines
            .iter()
            .map(|l| SkuQuantity::new(l.sku.clone(), l.quantity))
            .collect();
        let outcome = self
            .ledger
            .reserve(event.order.id, &lines, self.ttl)
            .await
            .map_err(crate::order_stage::store_error)?;
        Ok(match outcome {
            ReserveOutcome::Reserved => {
                let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
                let expires_at = Utc::now()
                    .checked_add_signed(ttl)
                    .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
                event.order.reservation = Some(Reservation { expires_at });
                Step::Advance(event.advance(OrderStatus::Reserved))
            }
            ReserveOutcome::Cancelled => Step::Cancel(event.cancel("reserve")),
            ReserveOutcome::Short(short) => {
                let detail = short
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: requested {}, available {}",
                            s.sku, s.requested, s.available
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Step::Reject(event.reject("reserve", RejectionCode::OutOfStock, detail))
            }
        })
    }
}
