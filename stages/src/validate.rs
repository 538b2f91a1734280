//! validate: the order's rules against the catalog and what the store sells.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use orderflow_domain::order::{MAX_LINES, MAX_QUANTITY};
use orderflow_domain::{Catalog, OrderEvent, OrderStatus, RejectionCode, SharedPriceBook};
use orderflow_pipeline::StageError;
use orderflow_stores::StockLedger;
use std::collections::HashSet;
use std::sync::Arc;

/// Checks SKUs, quantities, line count, currency and destination country.
pub struct Validate {
    catalog: Arc<Catalog>,
    currencies: HashSet<String>,
    countries: HashSet<String>,
    promotions: Option<SharedPriceBook>,
    ledger: Option<Arc<dyn StockLedger>>,
}

impl Validate {
    /// A validator for `catalog`, selling in `currencies` to `countries`.
    pub fn new(catalog: Arc<Catalog>, currencies: &[String], countries: &[String]) -> Self {
        Self {
            catalog,
            currencies: currencies.iter().cloned().collect(),
            countries: countries.iter().cloned().collect(),
            promotions: None,
            ledger: None,
        }
    }

    /// Records each refusal in `ledger`, so a cancel after it is told the order was rejected
    /// (and an order cancelled first ends cancelled instead).
    pub fn with_ledger(mut self, ledger: Arc<dyn StockLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Accepts the coupon codes of the promotions in `book` (without it every code is
    /// unknown).
    pub fn with_promotions(mut self, book: SharedPriceBook) -> Self {
        self.promotions = Some(book);
        self
    }

    fn problems(&self, event: &OrderEvent) -> Option<(RejectionCode, String)> {
        let order = &event.order;
        if order.lines.is_empty() || order.lines.len() > MAX_LINES {
            return Some((
                RejectionCode::Invalid,
                format!("an order has 1 to {MAX_LINES} lines"),
            ));
        }
        if let Some(line) = order
            .lines
            .iter()
            .find(|l| l.quantity == 0 || l.quantity > MAX_QUANTITY)
        {
            return Some((
                RejectionCode::Invalid,
                format!("{}: quantity must be 1 to {MAX_QUANTITY}", line.sku),
            ));
        }
        if !self
            .catalog
            .sells_in(&order.currency, self.currencies.iter())
        {
            return Some((
                RejectionCode::Invalid,
                format!("currency {} is not supported", order.currency),
            ));
        }
        if !self.countries.contains(&order.shipping_address.country) {
            return Some((
                RejectionCode::Invalid,
                format!(
                    "shipping to {} is not supported",
                    order.shipping_address.country
                ),
            ));
        }
        let unknown: Vec<&str> = order
            .lines
            .iter()
            .filter(|l| self.catalog.get(&l.sku).is_none())
            .map(|l| l.sku.as_str())
            .collect();
        if !unknown.is_empty() {
            return Some((
                RejectionCode::UnknownSku,
                format!("unknown SKU: {}", unknown.join(", ")),
            ));
        }
        let book = self.promotions.as_ref().map(|b| b.load());
        let codes: Vec<&str> = order
            .coupon_codes
            .iter()
            .filter(|c| {
                book.as_ref()
                    .is_none_or(|b| b.promotions.by_code(c).is_none())
            })
            .map(String::as_str)
            .collect();
        if !codes.is_empty() {
            return Some((
                RejectionCode::Invalid,
                format!("unknown coupon code: {}", codes.join(", ")),
            ));
        }
        None
    }
}

#[async_trait]
impl OrderStage for Validate {
    async fn handle(&self, event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        match (self.problems(&event), &self.ledger) {
            (Some((code, detail)), Some(ledger)) => {
                crate::order_stage::refuse_unless_cancelled(
                    ledger.as_ref(),
                    event,
                    "validate",
                    code,
                    detail,
                )
                .await
            }
            (Some((code, detail)), None) => {
                Ok(Step::Reject(event.reject("validate", code, detail)))
            }
            (None, _) => Ok(Step::Advance(event.advance(OrderStatus::Validated))),
        }
    }
}
