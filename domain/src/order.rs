//! The order as it travels the pipeline: what the customer asked for, then each stage's part.

use crate::{Cancellation, Currency, Money, OrderId, OrderStatus, PriceBreakdown, Refund};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most lines one order may carry.
pub const MAX_LINES: usize = 100;
/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1000;
/// Longest SKU, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// Longest line of a shipping address (name, street, city, postal code), in characters.
pub const MAX_ADDRESS_CHARS: usize = 200;
/// Most coupon codes on one checkout.
pub const MAX_COUPONS: usize = 10;
/// Longest coupon code, in characters.
pub const MAX_COUPON_CHARS: usize = 64;
/// Longest payment token, in characters.
pub const MAX_TOKEN_CHARS: usize = 255;

/// One line of a checkout: a SKU and how many units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// Catalog SKU, e.g. `SKU-0001`.
    #[schema(schema_with = crate::schema::sku)]
    pub sku: String,
    /// Units wanted, 1..=1000.
    #[serde(deserialize_with = "crate::number::whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
}

/// Where to ship the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Recipient name.
    #[schema(schema_with = crate::schema::address_line)]
    pub name: String,
    /// Street line.
    #[schema(schema_with = crate::schema::address_line)]
    pub line1: String,
    /// Second street line; absent or null when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    /// City.
    #[schema(schema_with = crate::schema::address_line)]
    pub city: String,
    /// Region or state code.
    #[serde(default)]
    pub region: String,
    /// Postal code.
    #[schema(schema_with = crate::schema::address_line)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code.
    #[schema(schema_with = crate::schema::country)]
    pub country: String,
}

/// How the customer pays: a token from the payment provider's client library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// Provider token such as `tok_visa`.
    #[schema(schema_with = crate::schema::payment_token)]
    pub token: String,
}

/// The body of `POST /v1/checkouts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "currency": "USD",
    "lines": [{"sku": "SKU-0001", "quantity": 2}],
    "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "San Francisco",
                         "region": "CA", "postal_code": "94107", "country": "US"},
    "coupon_codes": ["WELCOME10"],
    "payment": {"token": "tok_visa"}
}))]
pub struct CheckoutRequest {
    /// ISO 4217 currency of the order.
    #[schema(schema_with = crate::schema::currency)]
    pub currency: String,
    /// What to buy.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineItem>,
    /// Where to ship.
    pub shipping_address: Address,
    /// Promotion codes to apply.
    #[serde(default)]
    #[schema(schema_with = crate::schema::coupon_codes)]
    pub coupon_codes: Vec<String>,
    /// How to pay.
    pub payment: PaymentRequest,
}

impl CheckoutRequest {
    /// Checks the shape rules that need no catalog; returns every problem found, each naming
    /// the offending field. Lengths count characters, as the OpenAPI document's do; "blank"
    /// means only white space.
    pub fn structural_problems(&self) -> Vec<String> {
        let chars = |s: &str| s.chars().count();
        let mut problems = Vec::new();
        if Currency::parse(&self.currency).is_err() {
            problems.push("currency: must be a three-letter upper-case ISO 4217 code".to_owned());
        }
        if self.lines.is_empty() {
            problems.push("lines: at least one line is required".to_owned());
        }
        if self.lines.len() > MAX_LINES {
            problems.push(format!("lines: at most {MAX_LINES} lines are allowed"));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.sku.trim().is_empty() || chars(&line.sku) > MAX_SKU_CHARS {
                problems.push(format!(
                    "lines[{i}].sku: must be 1 to {MAX_SKU_CHARS} characters, not blank"
                ));
            }
            if line.quantity == 0 || line.quantity > MAX_QUANTITY {
                problems.push(format!("lines[{i}].quantity: must be 1 to {MAX_QUANTITY}"));
            }
        }
        let a = &self.shipping_address;
        for (field, value) in [
            ("name", &a.name),
            ("line1", &a.line1),
            ("city", &a.city),
            ("postal_code", &a.postal_code),
        ] {
            if value.trim().is_empty() || chars(value) > MAX_ADDRESS_CHARS {
                problems.push(format!(
                    "shipping_address.{field}: must be 1 to {MAX_ADDRESS_CHARS} characters, not blank"
                ));
            }
        }
        if a.country.len() != 2 || !a.country.bytes().all(|b| b.is_ascii_uppercase()) {
            problems
                .push("shipping_address.country: must be an ISO 3166-1 alpha-2 code".to_owned());
        }
        if self.coupon_codes.len() > MAX_COUPONS
            || self
                .coupon_codes
                .iter()
                .any(|c| chars(c) > MAX_COUPON_CHARS)
        {
            problems.push(format!(
                "coupon_codes: at most {MAX_COUPONS} codes of at most {MAX_COUPON_CHARS} characters"
            ));
        }
        if self.payment.token.trim().is_empty() || chars(&self.payment.token) > MAX_TOKEN_CHARS {
            problems.push(format!(
                "payment.token: must be 1 to {MAX_TOKEN_CHARS} characters, not blank"
            ));
        }
        problems
    }
}

/// Stock held for an order by the reserve stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// When the hold lapses unless the order ships.
    #[serde(with = "crate::timestamp")]
    pub expires_at: DateTime<Utc>,
}

/// The result of a successful charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Provider's id of the captured payment.
    pub payment_id: String,
    /// Amount captured.
    pub amount: Money,
    /// When it was captured.
    #[serde(with = "crate::timestamp")]
    pub captured_at: DateTime<Utc>,
}

/// The hand-off to the carrier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shipment {
    /// Carrier name.
    pub carrier: String,
    /// Tracking number.
    pub tracking_number: String,
    /// When the parcel was handed over.
    #[serde(with = "crate::timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub shipped_at: DateTime<Utc>,
}

/// The customer notification queued by the notify stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Channel, e.g. `email`.
    pub channel: String,
    /// When it was queued in the outbox.
    #[serde(with = "crate::timestamp")]
    pub queued_at: DateTime<Utc>,
}

/// Why an order was refused. These are business outcomes, not errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// The order breaks a rule (quantity, currency, country, line count).
    Invalid,
    /// A SKU is not in the catalog.
    UnknownSku,
    /// Not enough stock for some line.
    OutOfStock,
    /// The payment provider declined.
    PaymentDeclined,
    /// The stock hold lapsed before the order was charged.
    ReservationExpired,
    /// A coupon's uses ran out before this order.
    CouponExhausted,
}

impl RejectionCode {
    /// The snake-case code used on the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::UnknownSku => "unknown_sku",
            Self::OutOfStock => "out_of_stock",
            Self::PaymentDeclined => "payment_declined",
            Self::ReservationExpired => "reservation_expired",
            Self::CouponExhausted => "coupon_exhausted",
        }
    }
}

/// A rejection: the code and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable machine-readable code.
    pub code: RejectionCode,
    /// What exactly was wrong.
    pub detail: String,
    /// The stage that rejected.
    pub stage: String,
    /// The last status the order had reached before the rejection.
    pub after: OrderStatus,
}

/// The whole order as known so far: the fat payload of every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Order id.
    pub id: OrderId,
    /// Customer id (the JWT `sub`).
    pub customer_id: String,
    /// Currency as requested (validated by the validate stage).
    pub currency: String,
    /// Requested lines.
    pub lines: Vec<LineItem>,
    /// Shipping address.
    pub shipping_address: Address,
    /// Requested promotion codes.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
    /// Payment token.
    pub payment_token: String,
    /// When the ingest accepted it.
    #[serde(with = "crate::timestamp")]
    pub accepted_at: DateTime<Utc>,
    /// Set by reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
    /// Set by price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PriceBreakdown>,
    /// Set by charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    /// Set by ship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    /// Set by notify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// Set by whichever stage rejected the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Set by the stage that cancelled the order at the customer's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    /// Refunds of the capture this event knows of (a refund event carries its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
}

impl Order {
    /// Builds the accepted order from a checkout request.
    pub fn from_checkout(
        id: OrderId,
        customer_id: String,
        request: CheckoutRequest,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            customer_id,
            currency: request.currency,
            lines: request.lines,
            shipping_address: request.shipping_address,
            coupon_codes: request.coupon_codes,
            payment_token: request.payment.token,
            accepted_at: at,
            reservation: None,
            pricing: None,
            payment: None,
            shipment: None,
            notification: None,
            rejection: None,
            cancellation: None,
            refunds: Vec::new(),
        }
    }
}

/// One message on the log: the order and the status it just reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The status this event announces.
    pub status: OrderStatus,
    /// When the status was reached.
    #[serde(with = "crate::timestamp")]
    pub at: DateTime<Utc>,
    /// The whole order so far.
    pub order: Order,
}

impl OrderEvent {
    /// The next event: the same order at a later status, now.
    pub fn advance(mut self, status: OrderStatus) -> Self {
        self.status = status;
        self.at = Utc::now();
        self
    }

    /// The rejection event for this order.
    pub fn reject(mut self, stage: &str, code: RejectionCode, detail: impl Into<String>) -> Self {
        self.order.rejection = Some(Rejection {
            code,
            detail: detail.into(),
            stage: stage.to_owned(),
            after: self.status,
        });
        self.advance(OrderStatus::Rejected)
    }

    /// The cancellation of this order by `stage`, which has given back what the order held.
    pub fn cancel(mut self, stage: &str) -> Self {
        self.order.cancellation = Some(Cancellation {
            stage: stage.to_owned(),
            after: self.status,
        });
        self.advance(OrderStatus::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn request() -> CheckoutRequest {
        serde_json::from_str(
            r#"{"currency":"USD","lines":[{"sku":"SKU-0001","quantity":2}],
            "shipping_address":{"name":"Ada","line1":"1 Main St","city":"SF","region":"CA",
            "postal_code":"94107","country":"US"},"coupon_codes":["WELCOME10"],
            "payment":{"token":"tok_visa"}}"#,
        )
        .expect("the contract's example body parses")
    }

    #[test]
    fn the_contract_example_is_structurally_valid() {
        assert!(request().structural_problems().is_empty());
    }

    #[test]
    fn structural_problems_name_their_field() {
        let mut r = request();
        r.currency = "usd".into();
        r.lines[0].quantity = 0;
        r.shipping_address.country = "USA".into();
        let problems = r.structural_problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("currency"));
        assert!(problems[1].starts_with("lines[0].quantity"));
        assert!(problems[2].starts_with("shipping_address.country"));

        let mut r = request();
        r.lines = vec![
            LineItem {
                sku: "SKU-0001".into(),
                quantity: 1
            };
            MAX_LINES + 1
        ];
        assert_eq!(r.structural_problems().len(), 1);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let body = r#"{"currency":"USD","lines":[],"shipping_address":{"name":"a","line1":"b",
            "city":"c","postal_code":"d","country":"US"},"payment":{"token":"t"},"extra":1}"#;
        assert!(serde_json::from_str::<CheckoutRequest>(body).is_err());
    }

    #[test]
    fn reject_sets_the_reason_and_the_terminal_status() {
        let order = Order::from_checkout(OrderId::new(), "c1".into(), request(), Utc::now());
        let event = OrderEvent {
            status: OrderStatus::Accepted,
            at: Utc::now(),
            order,
        };
        let rejected = event.reject("reserve", RejectionCode::OutOfStock, "SKU-0001 short by 1");
        assert_eq!(rejected.status, OrderStatus::Rejected);
        let rejection = rejected.order.rejection.expect("set");
        assert_eq!(rejection.code, RejectionCode::OutOfStock);
        assert_eq!(rejection.stage, "reserve");
        assert_eq!(
            rejection.after,
            OrderStatus::Accepted,
            "the status reached before the rejection"
        );
    }
}
