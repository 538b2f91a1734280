//! `orderflow price --cart cart.json [--customer ID] [--at TIME]`: prices a cart with the
//! configured tables and prints the breakdown as a table, so a merchant can check the tables
//! before a sale.

use crate::backends;
use crate::config::Config;
use crate::error::AppError;
use crate::tables::PriceTables;
use chrono::{DateTime, Utc};
use comfy_table::{Cell, CellAlignment, Table, presets};
use orderflow_domain::{Cart, Money, PriceError, Quote};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The cart file: a checkout body; its `payment`, if any, is ignored.
#[derive(Deserialize)]
struct CartFile {
    lines: Vec<orderflow_domain::LineItem>,
    shipping_address: orderflow_domain::Address,
    #[serde(default)]
    coupon_codes: Vec<String>,
}

/// What to price and as whom.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The cart file.
    pub cart: &'a Path,
    /// The customer whose promotion uses count (read from Redis when it is configured).
    pub customer: Option<&'a str>,
    /// The time to price at (promotion windows); `None`: now.
    pub at: Option<&'a str>,
}

/// Prices the cart and prints the table; false when the order would be rejected for a
/// coupon (unknown, expired, not yet valid, used up).
pub async fn price(config: &Config, request: Request<'_>) -> Result<bool, AppError> {
    let (book, _) = PriceTables::new(config).load()?;
    let text = std::fs::read_to_string(request.cart)
        .map_err(|e| AppError::Usage(format!("cannot read {}: {e}", request.cart.display())))?;
    let cart: CartFile = serde_json::from_str(&text).map_err(|e| {
        AppError::Usage(format!(
            "{} is not a checkout body: {e}",
            request.cart.display()
        ))
    })?;
    let now = match request.at {
        None => Utc::now(),
        Some(at) => DateTime::parse_from_rfc3339(at)
            .map_err(|_| AppError::Usage(format!("--at {at:?}: give an RFC 3339 time")))?
            .with_timezone(&Utc),
    };
    let priced = Cart {
        lines: &cart.lines,
        country: &cart.shipping_address.country,
        region: &cart.shipping_address.region,
        coupon_codes: &cart.coupon_codes,
    };
    let mut used_up = BTreeSet::new();
    let mut uses_note = "promotion uses not checked (give --customer, with redis.url set)";
    if let Some(customer) = request.customer
        && let Some(coupons) = backends::connect_coupons(config).await?
    {
        uses_note = "promotion uses as counted in Redis";
        used_up = orderflow_stores::used_up(coupons.as_ref(), &book, &priced, customer).await?;
    }
    let quote = book.price(&priced, now, &used_up).map_err(|e| match e {
        PriceError::UnknownSku(_) | PriceError::Shipping(_) | PriceError::Money(_) => {
            AppError::Usage(format!("cannot price the cart: {e}"))
        }
    })?;
    println!(
        "Pricing tables {} at {}, to {}{}; {uses_note}",
        book.version,
        now.format("%Y-%m-%dT%H:%M:%SZ"),
        cart.shipping_address.country,
        if cart.shipping_address.region.is_empty() {
            String::new()
        } else {
            format!("-{}", cart.shipping_address.region)
        },
    );
    print!("{}", render(&quote));
    Ok(quote.refusing_coupon().is_none())
}

fn amount(m: Money) -> String {
    let sign = if m.minor < 0 { "-" } else { "" };
    let abs = m.minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// The breakdown as text: one table of lines, then the order's totals, tax lines, promotions
/// and refused codes.
pub fn render(quote: &Quote) -> String {
    let b = &quote.breakdown;
    let mut lines = Table::new();
    lines.load_preset(presets::ASCII_MARKDOWN).set_header(vec![
        "sku",
        "qty",
        "unit",
        "line",
        "discount",
        "tax",
        "total",
        "promotions",
    ]);
    for l in &b.lines {
        let promotions: Vec<String> = l
            .discounts
            .iter()
            .map(|d| format!("{} {}", d.promotion_id, amount(d.amount)))
            .collect();
        lines.add_row(vec![
            Cell::new(&l.sku),
            right(l.quantity.to_string()),
            right(amount(l.unit_price)),
            right(amount(l.line_total)),
            right(amount(l.discount)),
            right(amount(l.tax)),
            right(amount(l.total)),
            Cell::new(promotions.join(", ")),
        ]);
    }
    let mut totals = Table::new();
    totals.load_preset(presets::ASCII_MARKDOWN);
    let currency = b.total.currency.to_string();
    let tax_label = if b.prices_include_tax {
        "tax (included)"
    } else {
        "tax"
    };
    for (label, value) in [
        ("subtotal", b.subtotal),
        ("discount", b.discount),
        ("shipping", b.shipping),
        (tax_label, b.tax),
        ("total", b.total),
    ] {
        totals.add_row(vec![
            Cell::new(label),
            right(amount(value)),
            Cell::new(&currency),
        ]);
    }
    let mut out = format!("{lines}\n\n{totals}\n");
    for t in &b.tax_lines {
        out.push_str(&format!(
            "tax line   {} ({}, {}.{:02} %): {}\n",
            t.jurisdiction,
            t.name,
            t.rate_bps / 100,
            t.rate_bps % 100,
            amount(t.amount)
        ));
    }
    for p in &b.promotions {
        let what = if p.free_shipping {
            "shipping waived"
        } else {
            "off"
        };
        out.push_str(&format!(
            "promotion  {} ({}): {} {what}\n",
            p.id,
            p.name,
            amount(p.amount)
        ));
    }
    for c in &quote.rejected_coupons {
        let outcome = if c.reason.rejects_order() {
            "the order would be rejected"
        } else {
            "not applied"
        };
        out.push_str(&format!(
            "coupon     {} {}: {outcome}\n",
            c.code,
            c.reason.describe()
        ));
    }
    out
}
