//! The lifecycle of an order.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an order stands. The order of the variants is the order of the pipeline; `Rejected`
/// can follow any non-terminal status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Durably appended by the ingest.
    Accepted,
    /// Passed validation.
    Validated,
    /// Stock reserved for every line.
    Reserved,
    /// Totals computed.
    Priced,
    /// Payment captured.
    Charged,
    /// Handed to the carrier; reservation committed.
    Shipped,
    /// Customer notified; terminal.
    Completed,
    /// Refused with a reason; terminal.
    Rejected,
    /// Cancelled at the customer's request before it shipped; terminal (stock, promotion uses
    /// and any capture given back).
    Cancelled,
    /// A timeline mark, never an order's status: the customer asked to cancel.
    CancelRequested,
    /// A timeline mark, never an order's status: a refund was paid back (`refund_id` names it).
    Refunded,
    /// A timeline mark, never an order's status: the provider refused a refund for good.
    RefundFailed,
}

impl OrderStatus {
    /// All statuses in pipeline order, then the timeline marks.
    pub const ALL: [OrderStatus; 12] = [
        Self::Accepted,
        Self::Validated,
        Self::Reserved,
        Self::Priced,
        Self::Charged,
        Self::Shipped,
        Self::Completed,
        Self::Rejected,
        Self::Cancelled,
        Self::CancelRequested,
        Self::Refunded,
        Self::RefundFailed,
    ];

    /// True for `Completed`, `Rejected` and `Cancelled`: no status follows them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected | Self::Cancelled)
    }

    /// True for the marks that go on the timeline but never become an order's status.
    pub fn is_mark(self) -> bool {
        matches!(
            self,
            Self::CancelRequested | Self::Refunded | Self::RefundFailed
        )
    }

    /// Position in the lifecycle; a projection never moves an order to a lower rank.
    pub fn rank(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Validated => 1,
            Self::Reserved => 2,
            Self::Priced => 3,
            Self::Charged => 4,
            Self::Shipped => 5,
            Self::Completed | Self::Rejected | Self::Cancelled => 6,
            // Marks never become the status, so their rank only orders the timeline's ties.
            Self::CancelRequested | Self::Refunded | Self::RefundFailed => 7,
        }
    }

    /// The lower-case name used on the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Validated => "validated",
            Self::Reserved => "reserved",
            Self::Priced => "priced",
            Self::Charged => "charged",
            Self::Shipped => "shipped",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::CancelRequested => "cancel_requested",
            Self::Refunded => "refunded",
            Self::RefundFailed => "refund_failed",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_rejected_and_cancelled_are_terminal() {
        let terminal: Vec<_> = OrderStatus::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                &OrderStatus::Completed,
                &OrderStatus::Rejected,
                &OrderStatus::Cancelled
            ]
        );
        assert!(
            OrderStatus::ALL
                .iter()
                .all(|s| !(s.is_mark() && s.is_terminal()))
        );
    }

    #[test]
    fn ranks_follow_the_pipeline() {
        let ranks: Vec<u8> = OrderStatus::ALL.iter().map(|s| s.rank()).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            serde_json::to_string(&OrderStatus::Priced).expect("ser"),
            "\"priced\""
        );
    }
}
