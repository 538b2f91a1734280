//! price: list price × quantity, a flat shipping fee and a flat tax rate. Promotions and tax
//! tables come with the pricing engine.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use orderflow_domain::{
    Catalog, Money, MoneyError, OrderEvent, OrderStatus, PriceBreakdown, PricedLine, RejectionCode,
};
use orderflow_pipeline::StageError;
use orderflow_stores::StockLedger;
use std::sync::Arc;

/// Computes the order's totals.
pub struct Price {
    catalog: Arc<Catalog>,
    ledger: Arc<dyn StockLedger>,
    tax_rate_bps: u32,
    shipping_minor: i64,
}

impl Price {
    /// Prices from `catalog` with tax at `tax_rate_bps` / 10,000 and a flat shipping fee; the
    /// ledger releases the stock of an order that cannot be priced.
    pub fn new(
        catalog: Arc<Catalog>,
        ledger: Arc<dyn StockLedger>,
        tax_rate_bps: u32,
        shipping_minor: i64,
    ) -> Self {
        Self {
            catalog,
            ledger,
            tax_rate_bps,
            shipping_minor,
        }
    }

    fn breakdown(&self, event: &OrderEvent) -> Result<Result<PriceBreakdown, String>, MoneyError> {
        let currency = self.catalog.currency();
        let mut lines = Vec::with_capacity(event.order.lines.len());
        let mut subtotal = Money::zero(currency);
        for line in &event.order.lines {
            let Some(unit_price) = self.catalog.price(&line.sku) else {
                return Ok(Err(format!("{} is no longer in the catalog", line.sku)));
            };
            let line_total = unit_price.checked_mul(i64::from(line.quantity))?;
            subtotal = subtotal.checked_add(line_total)?;
            lines.push(PricedLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price,
                line_total,
            });
        }
        let discount = Money::zero(currency);
        let tax = subtotal.percent_bps(self.tax_rate_bps)?;
        let shipping = Money::new(self.shipping_minor, currency);
        let total = subtotal.checked_add(tax)?.checked_add(shipping)?;
        Ok(Ok(PriceBreakdown {
            lines,
            subtotal,
            discount,
            tax,
            shipping,
            total,
        }))
    }
}

#[async_trait]
impl OrderStage for Price {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let refusal = match self.breakdown(&event) {
            Ok(Ok(pricing)) => {
                event.order.pricing = Some(pricing);
                return Ok(Step::Advance(event.advance(OrderStatus::Priced)));
            }
            Ok(Err(detail)) => (RejectionCode::UnknownSku, detail),
            Err(e) => (
                RejectionCode::Invalid,
                format!("cannot price the order: {e}"),
            ),
        };
        // Compensate before rejecting: the stock held for this order goes back on the shelf.
        self.ledger
            .release(event.order.id)
            .await
            .map_err(crate::order_stage::store_error)?;
        Ok(Step::Reject(event.reject("price", refusal.0, refusal.1)))
    }
}
