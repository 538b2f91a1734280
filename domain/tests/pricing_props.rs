//! Invariants of the pricing engine over random carts, promotions and destinations.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::book;
use orderflow_domain::{Cart, LineItem};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Promotions drawn from: every kind, scoped and not, capped, windowed, exclusive, limited.
const POOL: [&str; 14] = [
    r#"{"code":"P10","percent_off_bps":1000}"#,
    r#"{"code":"P33","percent_off_bps":3333,"max_discount_minor":2500}"#,
    r#"{"code":"OFF5","amount_off_minor":500}"#,
    r#"{"code":"BIGOFF","amount_off_minor":100000}"#,
    r#"{"id":"home15","categories":["home"],"percent_off_bps":1500,"priority":3}"#,
    r#"{"id":"pens","skus":["PEN","CHIP"],"amount_off_minor":77}"#,
    r#"{"id":"b2g1","categories":["apparel"],"buy_x_get_y":{"buy":2,"get":1}}"#,
    r#"{"id":"b1g1h","skus":["MUG","CARD"],"buy_x_get_y":{"buy":1,"get":1,"percent_off_bps":5000},"priority":7}"#,
    r#"{"id":"tiers","spend_tiers":[{"min_subtotal_minor":3000,"percent_off_bps":500},{"min_subtotal_minor":8000,"amount_off_minor":1200}]}"#,
    r#"{"id":"fs","free_shipping":true,"min_subtotal_minor":4000}"#,
    r#"{"code":"VIP","percent_off_bps":2500,"exclusive":true,"priority":9}"#,
    r#"{"code":"WINDOW","percent_off_bps":2000,"starts_at":"2026-12-01T00:00:00Z","ends_at":"2026-12-10T00:00:00Z"}"#,
    r#"{"id":"limited","percent_off_bps":700,"max_uses":3}"#,
    r#"{"code":"SHIPCAP","free_shipping":true,"max_discount_minor":300,"priority":-1}"#,
];
const CODES: [&str; 7] = ["P10", "P33", "OFF5", "BIGOFF", "VIP", "WINDOW", "SHIPCAP"];
const SKUS: [&str; 8] = ["TEE", "SOCK", "MUG", "LAMP", "BOOK", "PEN", "CARD", "CHIP"];
const PLACES: [(&str, &str); 6] = [
    ("US", "CA"),
    ("US", "OR"),
    ("US", "NY"),
    ("US", "TX"),
    ("DE", ""),
    ("DE", "BY"),
];

#[derive(Debug, Clone)]
struct Input {
    promotions: Vec<usize>,
    lines: Vec<(usize, u32)>,
    place: usize,
    codes: Vec<usize>,
    used_up: bool,
    hours: i64,
}

fn input() -> impl Strategy<Value = Input> {
    (
        proptest::sample::subsequence((0..POOL.len()).collect::<Vec<_>>(), 0..=POOL.len()),
        proptest::collection::vec((0..SKUS.len(), 1u32..=40), 1..8),
        0..PLACES.len(),
        proptest::collection::vec(0..CODES.len(), 0..4),
        any::<bool>(),
        -400i64..400,
    )
        .prop_map(|(promotions, lines, place, codes, used_up, hours)| Input {
            promotions,
            lines,
            place,
            codes,
            used_up,
            hours,
        })
}

fn price(input: &Input, lines: &[LineItem]) -> orderflow_domain::Quote {
    let promotions: Vec<&str> = input.promotions.iter().map(|i| POOL[*i]).collect();
    let book = book(&promotions.join(","));
    let codes: Vec<String> = input.codes.iter().map(|i| CODES[*i].to_owned()).collect();
    let (country, region) = PLACES[input.place];
    let cart = Cart {
        lines,
        country,
        region,
        coupon_codes: &codes,
    };
    let used_up: BTreeSet<String> = if input.used_up {
        ["limited".to_owned(), "P10".to_owned()].into()
    } else {
        BTreeSet::new()
    };
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
        + Duration::hours(input.hours);
    book.price(&cart, now, &used_up)
        .expect("every cart here can be priced")
}

fn items(input: &Input) -> Vec<LineItem> {
    input
        .lines
        .iter()
        .map(|(sku, quantity)| LineItem {
            sku: SKUS[*sku].into(),
            quantity: *quantity,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn totals_add_up_and_nothing_goes_negative(input in input()) {
        let lines = items(&input);
        let quote = price(&input, &lines);
        let b = &quote.breakdown;
        let (subtotal, discount, shipping, tax, total) =
            (b.subtotal.minor, b.discount.minor, b.shipping.minor, b.tax.minor, b.total.minor);
        if b.prices_include_tax {
            prop_assert_eq!(total, subtotal - discount + shipping);
            prop_assert!(tax <= total - shipping);
        } else {
            prop_assert_eq!(total, subtotal - discount + shipping + tax);
        }
        // Lines sum to the order.
        let sum = |f: fn(&orderflow_domain::PricedLine) -> i64| b.lines.iter().map(f).sum::<i64>();
        prop_assert_eq!(sum(|l| l.line_total.minor), subtotal);
        prop_assert_eq!(sum(|l| l.discount.minor), discount);
        prop_assert_eq!(sum(|l| l.tax.minor), tax);
        prop_assert_eq!(sum(|l| l.total.minor) + shipping, total);
        prop_assert_eq!(b.tax_lines.iter().map(|t| t.amount.minor).sum::<i64>(), tax);
        prop_assert_eq!(
            b.promotions.iter().filter(|p| !p.free_shipping).map(|p| p.amount.minor).sum::<i64>(),
            discount
        );
        // Nothing negative; no discount above what it applies to.
        for l in &b.lines {
            prop_assert!(l.discount.minor >= 0 && l.tax.minor >= 0 && l.total.minor >= 0);
            prop_assert!(l.discount.minor <= l.line_total.minor);
            prop_assert_eq!(l.discounts.iter().map(|d| d.amount.minor).sum::<i64>(), l.discount.minor);
            prop_assert!(l.discounts.iter().all(|d| d.amount.minor > 0));
        }
        prop_assert!(shipping >= 0 && total >= 0 && discount <= subtotal);
        for p in &b.promotions {
            prop_assert!(p.amount.minor > 0);
            if p.free_shipping {
                prop_assert!(p.amount.minor <= 2500, "no fee is above 25.00");
            }
        }
    }

    #[test]
    fn line_order_does_not_change_the_price_and_repeats_agree(input in input(), seed in any::<u64>()) {
        let lines = items(&input);
        let first = price(&input, &lines);
        prop_assert_eq!(&price(&input, &lines), &first, "same input, same output");
        let mut shuffled = lines.clone();
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).expect("fits");
            shuffled.swap(i, j);
        }
        let other = price(&input, &shuffled);
        let (a, b) = (&first.breakdown, &other.breakdown);
        prop_assert_eq!(
            (a.subtotal, a.discount, a.shipping, a.tax, a.total),
            (b.subtotal, b.discount, b.shipping, b.tax, b.total)
        );
        prop_assert_eq!(&a.promotions, &b.promotions);
        prop_assert_eq!(&a.tax_lines, &b.tax_lines);
        let key = |l: &orderflow_domain::PricedLine| {
            (l.sku.clone(), l.quantity, l.discount.minor, l.tax.minor, l.total.minor)
        };
        let mut left: Vec<_> = a.lines.iter().map(key).collect();
        let mut right: Vec<_> = b.lines.iter().map(key).collect();
        left.sort();
        right.sort();
        prop_assert_eq!(left, right);
        prop_assert_eq!(&first.rejected_coupons, &other.rejected_coupons);
    }
}
