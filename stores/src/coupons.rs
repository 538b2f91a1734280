//! The [`CouponLedger`] trait: how often each promotion code has been used, once per order.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::OrderId;

/// The answer to a redemption, the same on every repeat for one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redemption {
    /// The order uses the coupon; one use is counted.
    Redeemed,
    /// The coupon's uses ran out before this order.
    Exhausted,
}

/// Coupon-use counters, idempotent per order.
#[async_trait]
pub trait CouponLedger: Send + Sync + 'static {
    /// Counts one use of `code` by `order` if fewer than `limit` are counted. A repeat for the
    /// same order returns the first answer and counts nothing; after a
    /// [`restore`](Self::restore) the order may redeem again, if there is room.
    async fn redeem(
        &self,
        code: &str,
        order: OrderId,
        limit: u64,
    ) -> Result<Redemption, StoreError>;

    /// Gives `order`'s use of `code` back (the order was rejected after pricing). True if a
    /// use was given back by this call; a repeat gives nothing back twice.
    async fn restore(&self, code: &str, order: OrderId) -> Result<bool, StoreError>;

    /// How many uses of `code` are counted.
    async fn uses(&self, code: &str) -> Result<u64, StoreError>;
}
