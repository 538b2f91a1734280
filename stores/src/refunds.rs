//! The [`RefundLedger`] trait: what has been given back of each order's capture, so refunds
//! never add up to more than was captured.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::{Money, OrderId};

/// A refund to count against an order's capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundClaim {
    /// The idempotency key: a repeat with the same key gets the first refund back.
    pub key: String,
    /// The id the refund gets if it is new.
    pub refund_id: String,
    /// How much; `None` for all that is left (a cancellation's refund).
    pub amount: Option<Money>,
    /// Why.
    pub reason: String,
    /// What the order's charge captured.
    pub captured: Money,
}

/// A refund counted against a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundEntry {
    /// Its id.
    pub refund_id: String,
    /// Its amount.
    pub amount: Money,
    /// Why.
    pub reason: String,
}

/// The answer to a [`RefundClaim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundAnswer {
    /// Counted now.
    Accepted(RefundEntry),
    /// The key was seen before: its refund (whatever the claim says now).
    Repeat(RefundEntry),
    /// It would take the refunds past the capture; `refunded` counts already.
    Exceeds {
        /// What the refunds not failed add up to.
        refunded: Money,
    },
    /// All that is left was asked for, and nothing is.
    Nothing,
}

/// Refunds counted per order, atomically and once per key.
#[async_trait]
pub trait RefundLedger: Send + Sync + 'static {
    /// Counts `claim` against `order`'s capture unless its key is known or it would exceed
    /// the capture.
    async fn request(&self, order: OrderId, claim: RefundClaim)
    -> Result<RefundAnswer, StoreError>;

    /// A refund the provider refused for good no longer counts against the capture. True if
    /// this call gave it back; a repeat gives nothing back twice.
    async fn fail(&self, order: OrderId, refund_id: &str) -> Result<bool, StoreError>;

    /// Every order with refunds and what its refunds not failed add up to (minor units), for
    /// audits.
    async fn totals(&self) -> Result<Vec<(OrderId, i64)>, StoreError>;
}
