//! `orderflow audit`: the stock invariant per SKU and the money per order.
//!
//! Stock: `initial = available + reserved + committed`. Money: for every order the payment
//! journal shows captured, what its refunds paid back never exceeds the capture, nor does what
//! the refund ledger counts; what the journal paid equals what the ledger counts once no refund
//! is pending (a pending one is counted and not yet paid: shown, not a breach); and a cancelled
//! order's capture is counted for refund whole.

use crate::backends;
use crate::config::Config;
use crate::error::AppError;
use orderflow_domain::OrderId;
use orderflow_stages::charge::SimulatedProvider;
use std::collections::BTreeMap;

/// One order's money as the books show it (minor units).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct OrderMoney {
    captured: i64,
    refunded: i64,
    counted: i64,
}

/// Prints the stock table and the money summary; `Ok(false)` on any breach.
pub async fn audit(config: &Config) -> Result<bool, AppError> {
    let books = backends::connect_books(config).await?;
    let stock_ok = stock(books.ledger.as_ref()).await?;
    let money_ok = money(&books).await?;
    Ok(stock_ok && money_ok)
}

async fn stock(ledger: &dyn orderflow_stores::StockLedger) -> Result<bool, AppError> {
    let levels = ledger.levels().await?;
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10}  ok",
        "sku", "initial", "available", "reserved", "committed"
    );
    let mut breaches = 0;
    for l in &levels {
        let ok = l.balanced();
        breaches += usize::from(!ok);
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}  {}",
            l.sku,
            l.initial,
            l.available,
            l.reserved,
            l.committed,
            if ok { "yes" } else { "BREACH" }
        );
    }
    if breaches > 0 {
        eprintln!(
            "orderflow: audit: {breaches} of {} SKUs break initial = available + reserved + committed",
            levels.len()
        );
        return Ok(false);
    }
    println!(
        "{} SKUs checked: initial = available + reserved + committed holds for all",
        levels.len()
    );
    Ok(true)
}

async fn money(books: &backends::Books) -> Result<bool, AppError> {
    let journal = SimulatedProvider::new(books.payments.clone());
    let mut orders: BTreeMap<OrderId, OrderMoney> = BTreeMap::new();
    let unreadable = |e| AppError::Usage(format!("cannot read the payment journal: {e}"));
    for (key, amount) in journal.captures().await.map_err(unreadable)? {
        if let Some(order) = key.strip_suffix(":charge").and_then(|o| o.parse().ok()) {
            orders.entry(order).or_default().captured += amount.minor;
        }
    }
    for (order, _, amount) in journal.refunds().await.map_err(unreadable)? {
        orders.entry(order).or_default().refunded += amount.minor;
    }
    for (order, counted) in books.refunds.totals().await? {
        orders.entry(order).or_default().counted += counted;
    }
    let (mut breaches, mut pending, mut refunded_orders) = (0, 0, 0);
    for (order, m) in &orders {
        refunded_orders += usize::from(m.counted > 0 || m.refunded > 0);
        let kept_after_cancel = m.captured > m.counted && books.ledger.cancelled(*order).await?;
        let breach = m.refunded > m.captured
            || m.counted > m.captured
            || m.refunded > m.counted
            || kept_after_cancel;
        if breach {
            breaches += 1;
            eprintln!(
                "orderflow: audit: order {order}: captured {}, refunds paid {}, counted {}: BREACH",
                m.captured, m.refunded, m.counted
            );
        } else if m.counted > m.refunded {
            pending += 1;
            println!(
                "order {order}: captured {}, refunds paid {}, counted {}: a refund is pending",
                m.captured, m.refunded, m.counted
            );
        }
    }
    println!(
        "{} orders with money checked ({refunded_orders} with refunds, {pending} with a refund pending): \
         captured - refunded >= 0, refunds paid = refunds counted, cancelled captures refunded {}",
        orders.len(),
        if breaches == 0 {
            "hold for all"
        } else {
            "BREACHED"
        }
    );
    if breaches > 0 {
        eprintln!("orderflow: audit: {breaches} orders break the money rules");
    }
    Ok(breaches == 0)
}
