//! Orders priced per second: a 3-line cart against 50 active promotions (every kind, scoped
//! and not, automatic and by code), to CA (two tax jurisdictions). `cargo bench -p
//! orderflow-domain --bench pricing`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orderflow_domain::{Cart, LineItem};
use std::collections::BTreeSet;
use std::hint::black_box;

/// 50 promotions: ten of each of five kinds, none exclusive, so every one is weighed.
fn promotions() -> String {
    let mut all = Vec::new();
    for i in 0..10 {
        all.push(format!(
            r#"{{"id":"pct{i}","percent_off_bps":{},"priority":{i}}}"#,
            50 + i
        ));
        all.push(format!(
            r#"{{"id":"cat{i}","categories":["home","apparel"],"amount_off_minor":{}}}"#,
            10 + i
        ));
        all.push(format!(
            r#"{{"id":"bxgy{i}","skus":["MUG","TEE"],"buy_x_get_y":{{"buy":{},"get":1,"percent_off_bps":500}}}}"#,
            2 + i
        ));
        all.push(format!(
            r#"{{"id":"tier{i}","spend_tiers":[{{"min_subtotal_minor":1000,"percent_off_bps":10}},{{"min_subtotal_minor":{},"amount_off_minor":5}}]}}"#,
            5000 + i
        ));
        all.push(format!(
            r#"{{"code":"CODE{i}","percent_off_bps":20,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2027-01-01T00:00:00Z","max_discount_minor":500}}"#
        ));
    }
    all.join(",")
}

fn bench(c: &mut Criterion) {
    let book = common::book(&promotions());
    assert_eq!(book.promotions.len(), 50);
    let lines = vec![
        LineItem {
            sku: "TEE".into(),
            quantity: 3,
        },
        LineItem {
            sku: "MUG".into(),
            quantity: 2,
        },
        LineItem {
            sku: "PEN".into(),
            quantity: 5,
        },
    ];
    let codes = vec!["CODE1".to_owned(), "CODE7".to_owned()];
    let cart = Cart {
        lines: &lines,
        country: "US",
        region: "CA",
        coupon_codes: &codes,
    };
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let used_up = BTreeSet::new();
    let quote = book.price(&cart, now, &used_up).expect("prices");
    // All but the 7 buy-X-get-Y needing more units and the 8 codes not given: 35 apply.
    assert_eq!(quote.breakdown.promotions.len(), 35);
    let mut group = c.benchmark_group("pricing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("3 lines, 50 promotions", |b| {
        b.iter(|| black_box(book.price(black_box(&cart), now, &used_up)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
