//! What pricing produces: the order's totals with every line, discount and tax line, as the
//! price stage records them on the order and `GET /v1/orders/{id}` shows them in `totals`.

use crate::Money;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One discount on one line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineDiscount {
    /// The promotion it comes from.
    pub promotion_id: String,
    /// What it takes off the line.
    pub amount: Money,
}

/// One priced line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(from = "PricedLineWire")]
pub struct PricedLine {
    /// SKU of the line.
    pub sku: String,
    /// Units.
    pub quantity: u32,
    /// Catalog price of one unit.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub line_total: Money,
    /// Each promotion's share of the line, in the order they were applied (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discounts: Vec<LineDiscount>,
    /// The discounts summed.
    pub discount: Money,
    /// Tax on the discounted line (included in it when prices include tax).
    pub tax: Money,
    /// What the line costs: `line_total − discount`, plus `tax` unless prices include tax.
    pub total: Money,
}

/// A [`PricedLine`] as read: lines priced before the pricing engine carry no discounts or tax.
#[derive(Deserialize)]
struct PricedLineWire {
    sku: String,
    quantity: u32,
    unit_price: Money,
    line_total: Money,
    #[serde(default)]
    discounts: Vec<LineDiscount>,
    discount: Option<Money>,
    tax: Option<Money>,
    total: Option<Money>,
}

impl From<PricedLineWire> for PricedLine {
    fn from(w: PricedLineWire) -> Self {
        let zero = Money::zero(w.line_total.currency);
        Self {
            discount: w.discount.unwrap_or(zero),
            tax: w.tax.unwrap_or(zero),
            total: w.total.unwrap_or(w.line_total),
            sku: w.sku,
            quantity: w.quantity,
            unit_price: w.unit_price,
            line_total: w.line_total,
            discounts: w.discounts,
        }
    }
}

/// The tax of one jurisdiction over the whole order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaxLine {
    /// The jurisdiction's id in the tax table (`US-CA`, `DE`).
    pub jurisdiction: String,
    /// Its name for receipts.
    pub name: String,
    /// Its standard rate in basis points (a category may have its own).
    pub rate_bps: u32,
    /// Its tax summed over the lines.
    pub amount: Money,
}

/// A promotion that took something off the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppliedPromotion {
    /// Its id in the promotion table.
    pub id: String,
    /// The code the customer gave; absent for automatic promotions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Its name for receipts.
    #[serde(default)]
    pub name: String,
    /// What it took off: summed over the lines, or the shipping fee it waived.
    pub amount: Money,
    /// Whether it waived the shipping fee (its `amount` is then the fee).
    #[serde(default)]
    pub free_shipping: bool,
    /// Whether its uses are counted (it has a total or per-customer limit), so a rejection
    /// after pricing gives the use back.
    #[serde(default)]
    pub counted: bool,
}

/// The totals computed by the price stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PriceBreakdown {
    /// Each line with its price, discounts and tax.
    pub lines: Vec<PricedLine>,
    /// Sum of the line totals before discounts.
    pub subtotal: Money,
    /// Sum of the lines' discounts (a waived shipping fee is not in it: `shipping` is zero).
    pub discount: Money,
    /// Sum of the lines' tax; with `prices_include_tax` it is part of the prices already.
    pub tax: Money,
    /// Shipping fee, after any free-shipping promotion.
    pub shipping: Money,
    /// What the customer pays: `subtotal − discount + shipping + tax`, or without `+ tax`
    /// when prices include tax.
    pub total: Money,
    /// Whether the destination's prices include tax (VAT style).
    #[serde(default)]
    pub prices_include_tax: bool,
    /// Tax per jurisdiction; they sum to `tax` (absent: the destination is not taxed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tax_lines: Vec<TaxLine>,
    /// The promotions applied, in the order they were applied (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<AppliedPromotion>,
    /// The version of the pricing tables that priced the order.
    #[serde(default)]
    pub version: String,
}

/// Why a coupon code the customer gave takes nothing off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponReason {
    /// No promotion has this code.
    Unknown,
    /// Its validity window has ended.
    Expired,
    /// Its validity window has not begun.
    NotYetValid,
    /// Its uses in all, or this customer's, have run out.
    UsedUp,
    /// The order is below the promotion's minimum subtotal.
    MinimumNotMet,
    /// Nothing in the order is something it applies to.
    NotApplicable,
    /// An exclusive promotion applied, so it could not be combined.
    NotCombinable,
}

impl CouponReason {
    /// Whether an order giving this code is rejected rather than priced without it: a code
    /// that cannot be used at all, as opposed to one that does not apply to this cart.
    pub fn rejects_order(self) -> bool {
        matches!(
            self,
            Self::Unknown | Self::Expired | Self::NotYetValid | Self::UsedUp
        )
    }

    /// The reason as a sentence ending, for rejection details.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unknown => "is unknown",
            Self::Expired => "has expired",
            Self::NotYetValid => "is not valid yet",
            Self::UsedUp => "has been used up",
            Self::MinimumNotMet => "needs a larger order",
            Self::NotApplicable => "applies to nothing in the order",
            Self::NotCombinable => "cannot be combined with another promotion of the order",
        }
    }
}

/// A coupon code that took nothing off, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RejectedCoupon {
    /// The code as given, upper-cased.
    pub code: String,
    /// Why.
    pub reason: CouponReason,
}
