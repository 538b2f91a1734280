//! price: list price × quantity, promotion codes, a flat tax rate on the discounted subtotal and
//! a flat shipping fee. Each coupon use is counted once per order in the [`CouponLedger`].

use crate::{OrderStage, Step};
use async_trait::async_trait;
use orderflow_domain::{
    Catalog, Money, MoneyError, OrderEvent, OrderStatus, PriceBreakdown, PricedLine, Promotion,
    Promotions, RejectionCode,
};
use orderflow_pipeline::StageError;
use orderflow_stores::{CouponLedger, Redemption, StockLedger};
use std::sync::Arc;

/// Computes the order's totals and redeems its coupons.
pub struct Price {
    catalog: Arc<Catalog>,
    ledger: Arc<dyn StockLedger>,
    tax_rate_bps: u32,
    shipping_minor: i64,
    promotions: Arc<Promotions>,
    coupons: Option<Arc<dyn CouponLedger>>,
}

impl Price {
    /// Prices from `catalog` with tax at `tax_rate_bps` / 10,000 and a flat shipping fee; the
    /// ledger releases the stock of an order that cannot be priced. No promotions until
    /// [`with_promotions`](Self::with_promotions).
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
            promotions: Arc::new(Promotions::default()),
            coupons: None,
        }
    }

    /// Applies `promotions`, counting their uses in `coupons`.
    pub fn with_promotions(
        mut self,
        promotions: Arc<Promotions>,
        coupons: Arc<dyn CouponLedger>,
    ) -> Self {
        self.promotions = promotions;
        self.coupons = Some(coupons);
        self
    }

    /// The order's promotions, each once (validate has refused unknown codes already).
    fn promotions_of(&self, event: &OrderEvent) -> Result<Vec<&Promotion>, String> {
        let mut found: Vec<&Promotion> = Vec::new();
        for code in &event.order.coupon_codes {
            let Some(promotion) = self.promotions.get(code) else {
                return Err(format!("unknown coupon code {code}"));
            };
            if !found.iter().any(|p| p.code == promotion.code) {
                found.push(promotion);
            }
        }
        Ok(found)
    }

    fn breakdown(
        &self,
        event: &OrderEvent,
        promotions: &[&Promotion],
    ) -> Result<Result<PriceBreakdown, String>, MoneyError> {
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
        // Codes stack; together they never take off more than the subtotal.
        let mut discount = Money::zero(currency);
        for promotion in promotions {
            discount = discount.checked_add(promotion.discount_on(subtotal)?)?;
        }
        if discount.minor > subtotal.minor {
            discount = subtotal;
        }
        let taxable = subtotal.checked_sub(discount)?;
        let tax = taxable.percent_bps(self.tax_rate_bps)?;
        let shipping = Money::new(self.shipping_minor, currency);
        let total = taxable.checked_add(tax)?.checked_add(shipping)?;
        Ok(Ok(PriceBreakdown {
            lines,
            subtotal,
            discount,
            tax,
            shipping,
            total,
        }))
    }

    /// Redeems every code for this order; on the first exhausted one, gives back the others.
    async fn redeem(
        &self,
        event: &OrderEvent,
        promotions: &[&Promotion],
    ) -> Result<Option<String>, StageError> {
        let Some(coupons) = &self.coupons else {
            return Ok(None);
        };
        let id = event.order.id;
        for (i, promotion) in promotions.iter().enumerate() {
            let redemption = coupons
                .redeem(&promotion.code, id, promotion.max_uses)
                .await
                .map_err(crate::order_stage::store_error)?;
            if redemption == Redemption::Exhausted {
                for earlier in &promotions[..i] {
                    coupons
                        .restore(&earlier.code, id)
                        .await
                        .map_err(crate::order_stage::store_error)?;
                }
                return Ok(Some(promotion.code.clone()));
            }
        }
        Ok(None)
    }
}

/// Gives back every coupon use of an order rejected after pricing (a decline, a failure).
pub async fn restore_coupons(
    coupons: &dyn CouponLedger,
    promotions: &Promotions,
    event: &OrderEvent,
) -> Result<(), StageError> {
    for code in &event.order.coupon_codes {
        if let Some(promotion) = promotions.get(code) {
            coupons
                .restore(&promotion.code, event.order.id)
                .await
                .map_err(crate::order_stage::store_error)?;
        }
    }
    Ok(())
}

#[async_trait]
impl OrderStage for Price {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let refusal = match self.promotions_of(&event) {
            Err(detail) => (RejectionCode::Invalid, detail),
            Ok(promotions) => match self.breakdown(&event, &promotions) {
                Ok(Ok(pricing)) => match self.redeem(&event, &promotions).await? {
                    None => {
                        event.order.pricing = Some(pricing);
                        return Ok(Step::Advance(event.advance(OrderStatus::Priced)));
                    }
                    Some(code) => (
                        RejectionCode::CouponExhausted,
                        format!("coupon {code} has been used up"),
                    ),
                },
                Ok(Err(detail)) => (RejectionCode::UnknownSku, detail),
                Err(e) => (
                    RejectionCode::Invalid,
                    format!("cannot price the order: {e}"),
                ),
            },
        };
        // Compensate before rejecting: the stock held for this order goes back on the shelf.
        self.ledger
            .release(event.order.id)
            .await
            .map_err(crate::order_stage::store_error)?;
        Ok(Step::Reject(event.reject("price", refusal.0, refusal.1)))
    }
}
