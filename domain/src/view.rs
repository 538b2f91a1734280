//! The order view that customers read, and how events fold into it.

use crate::{
    Cancellation, LineItem, Notification, OrderEvent, OrderId, OrderStatus, Payment,
    PriceBreakdown, Refund, Rejection, Shipment,
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
    /// The refund a `refunded` or `refund_failed` entry is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub refund_id: Option<String>,
}

impl TimelineEntry {
    /// An entry for `status` reached at `at`.
    pub fn new(status: OrderStatus, at: DateTime<Utc>) -> Self {
        Self {
            status,
            at,
            refund_id: None,
        }
    }
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
    /// The capture, once charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    /// How it was cancelled, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    /// Refunds of the capture by id (a cancellation's, whose id is the order's, first; then the
    /// admins', in time order), each at its latest status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// Every status reached in lifecycle order, each once, with the marks (cancel requested,
    /// refunds) placed among them by time.
    pub timeline: Vec<TimelineEntry>,
}

impl OrderView {
    /// The view of an order that has seen only `event`.
    pub fn from_event(event: &OrderEvent) -> Self {
        let o = &event.order;
        let mut view = Self {
            order_id: o.id,
            customer_id: o.customer_id.clone(),
            // A mark is never the status: a view begun from one (its event folded before the
            // order's first status) starts at the first status, which every order has reached.
            status: if event.status.is_mark() {
                OrderStatus::Accepted
            } else {
                event.status
            },
            lines: o.lines.clone(),
            totals: None,
            shipment: None,
            notification: None,
            rejection: None,
            coupon_codes: o.coupon_codes.clone(),
            payment: None,
            cancellation: None,
            refunds: Vec::new(),
            timeline: Vec::new(),
        };
        view.apply(event);
        view
    }

    /// Folds an event in. Idempotent and insensitive to order: a duplicate changes nothing,
    /// a late event adds its timeline entry but never moves the status backwards, the first
    /// terminal status stays, marks never become the status, and a refund only moves from
    /// pending to its final status.
    pub fn apply(&mut self, event: &OrderEvent) -> bool {
        let mut changed = self.enter(TimelineEntry::new(event.status, event.at));
        if !event.status.is_mark()
            && !self.status.is_terminal()
            && event.status.rank() > self.status.rank()
        {
            self.status = event.status;
            changed = true;
        }
        let o = &event.order;
        // Each stage's part is filled once, from whichever event brings it first.
        changed |= fill(&mut self.totals, &o.pricing);
        changed |= fill(&mut self.shipment, &o.shipment);
        changed |= fill(&mut self.notification, &o.notification);
        changed |= fill(&mut self.payment, &o.payment);
        match self.status {
            OrderStatus::Rejected => changed |= fill(&mut self.rejection, &o.rejection),
            OrderStatus::Cancelled => changed |= fill(&mut self.cancellation, &o.cancellation),
            _ => {}
        }
        for refund in &o.refunds {
            changed |= self.merge_refund(refund);
        }
        changed
    }

    /// Adds a timeline entry unless it is there (by status and refund) or it would be a second
    /// terminal status; true if it was added.
    fn enter(&mut self, entry: TimelineEntry) -> bool {
        let present = self
            .timeline
            .iter()
            .any(|t| t.status == entry.status && t.refund_id == entry.refund_id);
        let second_terminal =
            entry.status.is_terminal() && self.timeline.iter().any(|t| t.status.is_terminal());
        if present || second_terminal {
            return false;
        }
        let marks = entry.status.is_mark() || self.timeline.iter().any(|t| t.status.is_mark());
        self.timeline.push(entry);
        if !marks {
            // The common case, on the projector's path for every status: no mark to place.
            self.timeline
                .sort_by(|a, b| a.status.rank().cmp(&b.status.rank()).then(a.at.cmp(&b.at)));
            return true;
        }
        // Statuses by lifecycle rank (clocks of different processes may disagree), each mark
        // before the first status reached after it.
        let (mut statuses, mut marks): (Vec<_>, Vec<_>) =
            self.timeline.drain(..).partition(|t| !t.status.is_mark());
        statuses.sort_by(|a, b| a.status.rank().cmp(&b.status.rank()).then(a.at.cmp(&b.at)));
        marks.sort_by(|a, b| {
            a.at.cmp(&b.at)
                .then(a.status.rank().cmp(&b.status.rank()))
                .then(a.refund_id.cmp(&b.refund_id))
        });
        let mut marks = marks.into_iter().peekable();
        for status in statuses {
            while let Some(mark) = marks.next_if(|m| m.at < status.at) {
                self.timeline.push(mark);
            }
            self.timeline.push(status);
        }
        self.timeline.extend(marks);
        true
    }

    /// Takes in a refund: a new one is added, a pending one takes its final status; a final
    /// one adds its `refunded` or `refund_failed` mark to the timeline.
    fn merge_refund(&mut self, refund: &Refund) -> bool {
        let changed = match self
            .refunds
            .iter_mut()
            .find(|r| r.refund_id == refund.refund_id)
        {
            None => {
                self.refunds.push(refund.clone());
                // Ids are time-ordered (UUIDv7, or the order's own for a cancellation's).
                self.refunds.sort_by(|a, b| a.refund_id.cmp(&b.refund_id));
                true
            }
            Some(known) if !known.status.is_final() && refund.status.is_final() => {
                *known = refund.clone();
                true
            }
            Some(_) => false,
        };
        let mark = match refund.status {
            crate::RefundStatus::Pending => return changed,
            crate::RefundStatus::Succeeded => OrderStatus::Refunded,
            crate::RefundStatus::Failed => OrderStatus::RefundFailed,
        };
        let entered = self.enter(TimelineEntry {
            status: mark,
            at: refund.at,
            refund_id: Some(refund.refund_id.clone()),
        });
        changed || entered
    }

    /// The order as far as its view knows it, for an event made without one in hand (an
    /// expiry's rejection, a cancel request, an admin's refund): customer, lines, coupon codes,
    /// totals and capture; the address and payment token, which nothing after them needs, are
    /// left empty.
    pub fn order(&self) -> crate::Order {
        let accepted_at = self
            .timeline
            .first()
            .map_or_else(Utc::now, |entry| entry.at);
        crate::Order {
            id: self.order_id,
            customer_id: self.customer_id.clone(),
            currency: self
                .totals
                .as_ref()
                .map(|t| t.total.currency.to_string())
                .unwrap_or_default(),
            lines: self.lines.clone(),
            shipping_address: crate::Address {
                name: String::new(),
                line1: String::new(),
                line2: None,
                city: String::new(),
                region: String::new(),
                postal_code: String::new(),
                country: String::new(),
            },
            coupon_codes: self.coupon_codes.clone(),
            payment_token: String::new(),
            accepted_at,
            reservation: None,
            pricing: self.totals.clone(),
            payment: self.payment.clone(),
            shipment: None,
            notification: None,
            rejection: None,
            cancellation: None,
            refunds: Vec::new(),
        }
    }

    /// How far the view has come: it grows with every change the fold makes (a status or a mark
    /// on the timeline, a new refund, a refund's final status), so of two views of one order the
    /// one with the higher revision is the newer.
    pub fn revision(&self) -> usize {
        let settled = self.refunds.iter().filter(|r| r.status.is_final()).count();
        self.timeline.len() + self.refunds.len() + settled
    }

    /// Whether nothing more will change: a terminal status and no refund still pending.
    pub fn is_settled(&self) -> bool {
        self.status.is_terminal() && self.refunds.iter().all(|r| r.status.is_final())
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

    #[test]
    fn cancels_and_refunds_fold_in_any_order_and_marks_never_become_the_status() {
        use crate::{Money, Payment, Refund, RefundStatus};
        let events = chain();
        let usd = crate::Currency::parse("USD").expect("valid");
        let mut charged = events[4].clone();
        charged.order.payment = Some(Payment {
            payment_id: "pay_1".into(),
            amount: Money::new(1000, usd),
            captured_at: charged.at,
        });
        let mut requested = events[2].clone();
        requested.status = OrderStatus::CancelRequested;
        requested.at = events[3].at + Duration::microseconds(1);
        let refund = |status, at| Refund {
            refund_id: "rf_1".into(),
            amount: Money::new(1000, usd),
            reason: "cancelled".into(),
            status,
            at,
            detail: None,
        };
        let mut cancelled = charged.clone().cancel("ship");
        cancelled.order.refunds = vec![refund(RefundStatus::Pending, cancelled.at)];
        let mut paid = cancelled.clone();
        paid.order.refunds = vec![refund(
            RefundStatus::Succeeded,
            cancelled.at + Duration::seconds(1),
        )];
        let history = [
            &events[0], &events[1], &events[2], &events[3], &requested, &charged, &cancelled, &paid,
        ];
        let expected = fold(&history.iter().map(|e| (*e).clone()).collect::<Vec<_>>());
        assert_eq!(expected.status, OrderStatus::Cancelled);
        assert_eq!(
            expected
                .timeline
                .iter()
                .map(|t| t.status.as_str())
                .collect::<Vec<_>>(),
            [
                "accepted",
                "validated",
                "reserved",
                "priced",
                "cancel_requested",
                "charged",
                "cancelled",
                "refunded"
            ]
        );
        assert_eq!(expected.refunds[0].status, RefundStatus::Succeeded);
        assert!(expected.is_settled());
        let mut reversed: Vec<OrderEvent> = history.iter().map(|e| (*e).clone()).collect();
        reversed.reverse();
        assert_eq!(
            fold(&reversed),
            expected,
            "a paid refund is not taken back by its request"
        );
        // A completion after the cancellation changes nothing; a mark alone moves no status.
        let mut view = expected.clone();
        assert!(!view.apply(&events[6]));
        let mut early = fold(&events[..2]);
        early.apply(&requested);
        assert_eq!(early.status, OrderStatus::Validated);
        assert!(!early.is_settled());
        // The mark folded first (its topic read before the order's): the view still moves on.
        let mut marked_first = OrderView::from_event(&requested);
        assert_eq!(marked_first.status, OrderStatus::Accepted);
        for e in [&events[0], &cancelled] {
            marked_first.apply(e);
        }
        assert_eq!(marked_first.status, OrderStatus::Cancelled);
        // Every change moves the revision on, a pending refund and its payment too.
        assert!(fold(&reversed).revision() == expected.revision());
        let mut pending = fold(
            &history[..7]
                .iter()
                .map(|e| (*e).clone())
                .collect::<Vec<_>>(),
        );
        let before = pending.revision();
        assert!(pending.apply(&paid));
        assert!(pending.revision() > before);
    }
}
