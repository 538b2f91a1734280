//! price: the pricing engine ([`orderflow_domain::pricing`]) over the order's lines, codes and
//! destination at the time it was accepted, with the tables in force. Each limited
//! promotion's use is counted once per order in the [`CouponLedger`].

use crate::{OrderStage, Step};
use async_trait::async_trait;
use orderflow_domain::{
    CouponReason, OrderEvent, OrderStatus, PriceBook, PriceBreakdown, PriceError, RejectionCode,
    SharedPriceBook,
};
use orderflow_pipeline::StageError;
use orderflow_stores::{CouponLedger, Redemption, StockLedger, UseLimits};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Computes the order's totals and redeems its limited promotions.
pub struct Price {
    book: SharedPriceBook,
    ledger: Arc<dyn StockLedger>,
    coupons: Option<Arc<dyn CouponLedger>>,
}

impl Price {
    /// Prices with the tables of `book`; the ledger releases the stock of an order that
    /// cannot be priced. Uses are not counted until [`with_coupons`](Self::with_coupons).
    pub fn new(book: SharedPriceBook, ledger: Arc<dyn StockLedger>) -> Self {
        Self {
            book,
            ledger,
            coupons: None,
        }
    }

    /// Counts the uses of limited promotions in `coupons`.
    pub fn with_coupons(mut self, coupons: Arc<dyn CouponLedger>) -> Self {
        self.coupons = Some(coupons);
        self
    }

    /// Prices the order; an automatic promotion found used up while redeeming is left out
    /// and the order priced again, a code used up rejects it.
    async fn price(
        &self,
        book: &PriceBook,
        event: &OrderEvent,
    ) -> Result<Result<PriceBreakdown, (RejectionCode, String)>, StageError> {
        let order = &event.order;
        let cart = orderflow_domain::Cart::of(order);
        let mut used_up = BTreeSet::new();
        loop {
            let quote = match book.price(&cart, order.accepted_at, &used_up) {
                Ok(quote) => quote,
                Err(e @ PriceError::UnknownSku(_)) => {
                    return Ok(Err((RejectionCode::UnknownSku, e.to_string())));
                }
                Err(e) => return Ok(Err((RejectionCode::Invalid, e.to_string()))),
            };
            if let Some(refused) = quote.refusing_coupon() {
                let code = if refused.reason == CouponReason::UsedUp {
                    RejectionCode::CouponExhausted
                } else {
                    RejectionCode::Invalid
                };
                return Ok(Err((
                    code,
                    format!("coupon {} {}", refused.code, refused.reason.describe()),
                )));
            }
            let Some(coupons) = &self.coupons else {
                return Ok(Ok(quote.breakdown));
            };
            let counted: Vec<_> = quote
                .breakdown
                .promotions
                .iter()
                .filter(|p| p.counted)
                .filter_map(|p| book.promotions.by_id(&p.id))
                .collect();
            let mut exhausted = None;
            // The uses counted before a used-up one stay counted: pricing again redeems them
            // again, which changes nothing (one use per promotion and order), and `handle`
            // gives back whatever the final pricing does not keep. Giving them back here would
            // free places another order could take before they are redeemed again.
            for p in &counted {
                let answer = coupons
                    .redeem(&p.id, order.id, &order.customer_id, UseLimits::of(p))
                    .await
                    .map_err(crate::order_stage::store_error)?;
                if answer == Redemption::Exhausted {
                    exhausted = Some(*p);
                    break;
                }
            }
            match exhausted {
                None => return Ok(Ok(quote.breakdown)),
                Some(p) => match &p.code {
                    Some(code) => {
                        return Ok(Err((
                            RejectionCode::CouponExhausted,
                            format!("coupon {code} has been used up"),
                        )));
                    }
                    // Used up between the quote and now: priced again without it.
                    None => {
                        used_up.insert(p.id.clone());
                    }
                },
            }
        }
    }
}

/// Gives back every promotion use of an order rejected after pricing (a decline, a lapse).
pub async fn restore_coupons(
    coupons: &dyn CouponLedger,
    event: &OrderEvent,
) -> Result<(), StageError> {
    let order = &event.order;
    let Some(pricing) = &order.pricing else {
        return Ok(());
    };
    let mut ids: Vec<String> = pricing
        .promotions
        .iter()
        .filter(|p| p.counted)
        .map(|p| p.id.clone())
        .collect();
    // Priced before the pricing engine: each code counted under its own name, and never for
    // the customer, so no customer's counter is touched (the empty customer's stays at zero).
    let customer = if pricing.version.is_empty() {
        ids = order
            .coupon_codes
            .iter()
            .map(|c| orderflow_domain::pricing::normalize_code(c))
            .collect();
        ""
    } else {
        order.customer_id.as_str()
    };
    for id in ids {
        coupons
            .restore(&id, order.id, customer)
            .await
            .map_err(crate::order_stage::store_error)?;
    }
    Ok(())
}

impl Price {
    /// Gives back the uses of the cart's limited promotions that `kept` does not count. An
    /// earlier attempt at this order, priced with other tables (a reload, another worker), may
    /// have counted one this pricing leaves out; a restore where nothing was counted is a no-op.
    /// (A promotion since deleted from the tables cannot be named here: its use stays counted.)
    async fn give_back_others(
        &self,
        book: &PriceBook,
        event: &OrderEvent,
        kept: &BTreeSet<&str>,
    ) -> Result<(), StageError> {
        let Some(coupons) = &self.coupons else {
            return Ok(());
        };
        let order = &event.order;
        let cart = orderflow_domain::Cart::of(order);
        for p in book.limited_candidates(&cart) {
            if !kept.contains(p.id.as_str()) {
                coupons
                    .restore(&p.id, order.id, &order.customer_id)
                    .await
                    .map_err(crate::order_stage::store_error)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl OrderStage for Price {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let book = self.book.load_full();
        let (code, detail) = match self.price(&book, &event).await? {
            Ok(pricing) => {
                let kept: BTreeSet<&str> = pricing
                    .promotions
                    .iter()
                    .filter(|p| p.counted)
                    .map(|p| p.id.as_str())
                    .collect();
                self.give_back_others(&book, &event, &kept).await?;
                event.order.pricing = Some(pricing);
                return Ok(Step::Advance(event.advance(OrderStatus::Priced)));
            }
            Err(refusal) => refusal,
        };
        self.give_back_others(&book, &event, &BTreeSet::new())
            .await?;
        // Compensate before rejecting: the stock held for this order goes back on the shelf.
        self.ledger
            .release(event.order.id)
            .await
            .map_err(crate::order_stage::store_error)?;
        crate::order_stage::reject_unless_cancelled(
            self.ledger.as_ref(),
            event,
            "price",
            code,
            detail,
        )
        .await
    }
}
