//! Refunds of an order's capture and the cancellation of an order, as events carry them.

use crate::{Money, OrderStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a refund stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Accepted and counted against the capture; the refund step has not paid it yet.
    Pending,
    /// Paid back by the provider.
    Succeeded,
    /// Refused by the provider for good; its amount no longer counts against the capture.
    Failed,
}

impl RefundStatus {
    /// Whether nothing more happens to the refund.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }
}

/// One refund of an order's capture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    /// `rf_` and 32 hex digits: a UUIDv7 for refunds asked by an admin, derived from the order
    /// for the one a cancellation makes. The provider refunds once per id.
    pub refund_id: String,
    /// How much is given back.
    pub amount: Money,
    /// Why, as the admin wrote it (`cancelled` for a cancellation's refund).
    pub reason: String,
    /// Where it stands.
    pub status: RefundStatus,
    /// When it reached that status.
    #[serde(with = "crate::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// The provider's reason, for a failed refund.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The refund id of a cancellation's refund: one per order, so a repeat is the same refund.
pub fn cancellation_refund_id(order: crate::OrderId) -> String {
    format!("rf_{}", order.0.simple())
}

/// A new refund id for a refund an admin asks for.
pub fn new_refund_id() -> String {
    format!("rf_{}", uuid::Uuid::now_v7().simple())
}

/// How an order was cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// The stage that found the cancel request and ended the order.
    pub stage: String,
    /// The last status the order had reached before it was cancelled.
    pub after: OrderStatus,
}

/// What an order's capture stands at: what was taken, what was given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentSummary {
    /// Captured at charge.
    pub captured: Money,
    /// Paid back by succeeded refunds.
    pub refunded: Money,
    /// `captured`, `partially_refunded` or `refunded`.
    pub status: PaymentStatus,
}

/// Where an order's payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing given back.
    Captured,
    /// Part of the capture given back.
    PartiallyRefunded,
    /// All of it given back.
    Refunded,
}

impl PaymentSummary {
    /// The summary of a capture and its refunds: only succeeded refunds count as given back.
    pub fn of(captured: Money, refunds: &[Refund]) -> Self {
        let refunded: i64 = refunds
            .iter()
            .filter(|r| {
                r.status == RefundStatus::Succeeded && r.amount.currency == captured.currency
            })
            .map(|r| r.amount.minor)
            .fold(0i64, i64::saturating_add);
        let status = if refunded <= 0 {
            PaymentStatus::Captured
        } else if refunded < captured.minor {
            PaymentStatus::PartiallyRefunded
        } else {
            PaymentStatus::Refunded
        };
        Self {
            captured,
            refunded: Money::new(refunded, captured.currency),
            status,
        }
    }
}
