//! The order view that customers read, and how events fold into it.

use crate::{
    LineItem, Notification, OrderEvent, OrderId, OrderStatus, PriceBreakdown, Rejection, Shipment,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One step of an order's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// The status reached.
    pub status: OrderStatus,
    /// When.
    #[serde(with = "crate::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
}

/// The projected state of an order, as `GET /v1/orders/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Order id.
    pub order_id: OrderId,
    /// Owner.
    pub customer_id: String,
    /// Latest status.
    pub status: OrderStatus,
    /// Requested lines.
    pub lines: Vec<LineItem>,
    /// Totals, once priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<PriceBreakdown>,
    /// Shipment, once shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    /// Notification, once queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Coupon codes the order carries (their uses are given back if it is rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coupon_codes: Vec<String>,
    /// Every status reached, in lifecycle order, each once.
    pub timeline: Vec<TimelineEntry>,
}

impl OrderView {
    /// The view of an order that has seen only `event`.
    pub fn from_event(event: &OrderEvent) -> Self {
        let o = &event.order;
        let mut view = Self {
            order_id: o.id,
            customer_id: o.customer_id.clone(),
            status: event.status,
            lines: o.lines.clone(),
            totals: None,
            shipment: None,
            notification: None,
            rejection: None,
            coupon_codes: o.coupon_codes.clone(),
            timeline: Vec::new(),
        };
        view.apply(event);
        view
    }

    /// Folds an event in. Idempotent and insensitive to order: a duplicate changes nothing,
    /// a late event adds its timeline entry but never moves the status backwards, and the first
    /// terminal status stays.
    pub fn apply(&mut self, event: &OrderEvent) -> bool {
        let mut changed = false;
        if !self.timeline.iter().any(|t| t.status == event.status) {
            let terminal_already = self.timeline.iter().any(|t| t.status.is_terminal());
            if !(event.status.is_terminal() && terminal_already) {
                self.timeline.push(TimelineEntry {
                    status: event.status,
                    at: event.at,
                });
                self.timeline
                    .sort_by(|a, b| a.status.rank().cmp(&b.status.rank()).then(a.at.cmp(&b.at)));
                changed = true;
            }
        }
        if !self.status.is_terminal() && event.status.rank() > self.status.rank() {
            self.status = event.status;
            changed = true;
        }
        let o = &event.order;
        // Each stage's part is filled once, from whichever event brings it first.
        changed |= fill(&mut self.totals, &o.pricing);
        changed |= fill(&mut self.shipment, &o.shipment);
        changed |= fill(&mut self.notification, &o.notification);
        if self.status == OrderStatus::Rejected {
            changed |= fill(&mut self.rejection, &o.rejection);
        }
        changed
    }
}

/// Sets `slot` from `value` if it is empty and `value` is not; true if it did.
fn fill<T: Clone>(slot: &mut Option<T>, value: &Option<T>) -> bool {
    if slot.is_none() && value.is_some() {
        slot.clone_from(value);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckoutRequest, Order, RejectionCode};
    use chrono::Duration;

    fn accepted() -> OrderEvent {
        let request: CheckoutRequest = serde_json::from_str(
            r#"{"currency":"USD","lines":[{"sku":"SKU-0001","quantity":2}],
            "shipping_address":{"name":"Ada","line1":"1 Main St","city":"SF","region":"CA",
            "postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
        )
        .expect("valid");
        let at = Utc::now();
        let order = Order::from_checkout(OrderId::new(), "c1".into(), request, at);
        OrderEvent {
            status: OrderStatus::Accepted,
            at,
            order,
        }
    }

    fn chain() -> Vec<OrderEvent> {
        let mut events = vec![accepted()];
        for (i, status) in OrderStatus::ALL[1..7].iter().enumerate() {
            let mut next = events[events.len() - 1].clone();
            next.status = *status;
            next.at += Duration::milliseconds(i as i64 + 1);
            events.push(next);
        }
        events
    }

    fn fold(events: &[OrderEvent]) -> OrderView {
        let mut view = OrderView::from_event(&events[0]);
        for e in &events[1..] {
            view.apply(e);
        }
        view
    }

    #[test]
    fn shuffled_duplicated_and_late_events_give_the_same_view() {
        let events = chain();
        let expected = fold(&events);
        assert_eq!(expected.status, OrderStatus::Completed);
        assert_eq!(expected.timeline.len(), 7);
        // Deterministic permutations with duplicates: reverse, rotate, interleave.
        let mut reversed = events.clone();
        reversed.reverse();
        let mut rotated = events.clone();
        rotated.rotate_left(3);
        let doubled: Vec<_> = events.iter().chain(events.iter().rev()).cloned().collect();
        for variant in [reversed, rotated, doubled] {
            assert_eq!(fold(&variant), expected);
        }
    }

    #[test]
    fn the_first_terminal_status_wins() {
        let events = chain();
        let rejected =
            events[2]
                .clone()
                .reject("charge", RejectionCode::PaymentDeclined, "declined");
        let mut view = fold(&events[..3]);
        assert!(view.apply(&rejected));
        assert_eq!(view.status, OrderStatus::Rejected);
        assert_eq!(
            view.rejection.as_ref().map(|r| r.code),
            Some(RejectionCode::PaymentDeclined)
        );
        // A stray completion after the rejection does not flip the outcome or add a terminal entry.
        view.apply(&events[6]);
        assert_eq!(view.status, OrderStatus::Rejected);
        assert_eq!(
            view.timeline
                .iter()
                .filter(|t| t.status.is_terminal())
                .count(),
            1
        );
        assert!(!view.apply(&rejected), "a duplicate changes nothing");
    }
}
