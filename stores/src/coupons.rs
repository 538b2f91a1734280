//! The [`CouponLedger`] trait: how often each limited promotion has been used, in all and per
//! customer, counted once per order.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::{Cart, OrderId, PriceBook, Promotion};
use std::collections::BTreeSet;

/// The answer to a redemption, the same on every repeat for one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// The order uses the promotion; one use is counted, in all and for the customer.
    Redeemed,
    /// The promotion's uses, in all or the customer's, ran out before this order.
    Exhausted,
}

/// A promotion's use limits (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UseLimits {
    /// Orders that may use it in all.
    pub total: Option<u64>,
    /// Orders of one customer that may use it.
    pub per_customer: Option<u64>,
}

impl UseLimits {
    /// The limits a promotion's table entry sets.
    pub fn of(promotion: &Promotion) -> Self {
        Self {
            total: promotion.max_uses,
            per_customer: promotion.max_uses_per_customer,
        }
    }
}

/// Uses counted so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// By every customer.
    pub total: u64,
    /// By the customer asked about.
    pub customer: u64,
}

impl Usage {
    /// Whether one more use would break `limits`.
    pub fn exhausts(&self, limits: UseLimits) -> bool {
        limits.total.is_some_and(|l| self.total >= l)
            || limits.per_customer.is_some_and(|l| self.customer >= l)
    }
}

/// Promotion-use counters, idempotent per order.
#[async_trait]
pub trait CouponLedger: Send + Sync + 'static {
    /// Counts one use of `promotion` by `order` of `customer` if that stays within `limits`.
    /// A repeat for the same order returns the first answer and counts nothing; after a
    /// [`restore`](Self::restore) the order may redeem again, if there is room.
    async fn redeem(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
        limits: UseLimits,
    ) -> Result<Redemption, StoreError>;

    /// Gives `order`'s use of `promotion` back (the order was rejected after pricing), in all
    /// and for `customer`. True if a use was given back by this call; a repeat gives nothing
    /// back twice.
    async fn restore(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
    ) -> Result<bool, StoreError>;

    /// How many uses of `promotion` are counted, in all and by `customer`.
    async fn usage(&self, promotion: &str, customer: &str) -> Result<Usage, StoreError>;

    /// How many uses of `promotion` are counted in all.
    async fn uses(&self, promotion: &str) -> Result<u64, StoreError> {
        Ok(self.usage(promotion, "").await?.total)
    }
}

/// The limited promotions `cart` might use whose uses, in all or by `customer`, have run out
/// now: what [`PriceBook::price`] is told to leave out for a quote. Reads, never counts.
pub async fn used_up(
    coupons: &dyn CouponLedger,
    book: &PriceBook,
    cart: &Cart<'_>,
    customer: &str,
) -> Result<BTreeSet<String>, StoreError> {
    let mut out = BTreeSet::new();
    for p in book.limited_candidates(cart) {
        if coupons
            .usage(&p.id, customer)
            .await?
            .exhausts(UseLimits::of(p))
        {
            out.insert(p.id.clone());
        }
    }
    Ok(out)
}
