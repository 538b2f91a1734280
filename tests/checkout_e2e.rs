//! 1,000 concurrent checkouts through the built binary on embedded backends: every order ends
//! in exactly one terminal state, scarce stock is sold exactly once, declines give stock back.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use support::{App, assert_one_terminal, checkout, token, write_catalog};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    HotA,
    HotB,
    Declined,
    Flaky,
    MultiLine,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_checkouts_settle_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[
            ("SKU-A", 1999, 300),
            ("SKU-B", 500, 250),
            ("SKU-C", 1250, 1000),
            ("SKU-D", 899, 5000),
        ],
    );
    let data = dir.path().join("data");
    // Zero retention: the log is trimmed every second while the orders flow, so trimming runs
    // concurrently with every stage.
    let app = App::start_with(&data, &catalog, &[("ORDERFLOW_LOG_RETENTION_SECS", "0")]);
    let customer = token("cust-e2e", "checkout orders:read");
    let admin = token("ops", "admin");

    // 400 orders for A (300 in stock), 400 for B (250), 100 declined, 50 flaky, 50 multi-line.
    let mut plan = Vec::with_capacity(1000);
    for i in 0..1000 {
        let kind = match i % 20 {
            0..=7 => Kind::HotA,
            8..=15 => Kind::HotB,
            16 | 17 => Kind::Declined,
            18 => Kind::Flaky,
            _ => Kind::MultiLine,
        };
        let body = match kind {
            Kind::HotA => checkout(&[("SKU-A", 1)], "tok_visa"),
            Kind::HotB => checkout(&[("SKU-B", 1)], "tok_visa"),
            Kind::Declined => checkout(&[("SKU-C", 2)], "tok_decline"),
            Kind::Flaky => checkout(&[("SKU-C", 1)], "tok_flaky"),
            Kind::MultiLine => checkout(&[("SKU-C", 1), ("SKU-D", 3)], "tok_visa"),
        };
        plan.push((kind, body));
    }

    let (plan_kinds, bodies): (Vec<Kind>, Vec<Value>) = plan.into_iter().unzip();
    let accepted: Vec<(Kind, String)> = plan_kinds
        .into_iter()
        .zip(app.accept_all(&customer, bodies, 200).await)
        .collect();
    assert_eq!(accepted.len(), 1000);

    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    let kinds: HashMap<&str, Kind> = accepted.iter().map(|(k, id)| (id.as_str(), *k)).collect();
    let views = app
        .await_terminal(&customer, &ids, Duration::from_secs(180))
        .await;
    assert_eq!(views.len(), 1000);

    let mut outcomes: HashMap<(Kind, String), usize> = HashMap::new();
    for view in &views {
        assert_one_terminal(view);
        let outcome = match view["status"].as_str() {
            Some("completed") => {
                assert!(view["shipment"]["tracking_number"].is_string(), "{view}");
                assert!(
                    view["totals"]["total"]["minor"]
                        .as_i64()
                        .is_some_and(|t| t > 0),
                    "{view}"
                );
                "completed".to_owned()
            }
            _ => view["rejection"]["code"]
                .as_str()
                .expect("rejection code")
                .to_owned(),
        };
        let kind = kinds[view["order_id"].as_str().expect("id")];
        *outcomes.entry((kind, outcome)).or_default() += 1;
    }
    let count = |kind, outcome: &str| {
        outcomes
            .get(&(kind, outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (
            count(Kind::HotA, "completed"),
            count(Kind::HotA, "out_of_stock")
        ),
        (300, 100),
        "{outcomes:?}"
    );
    assert_eq!(
        (
            count(Kind::HotB, "completed"),
            count(Kind::HotB, "out_of_stock")
        ),
        (250, 150),
        "{outcomes:?}"
    );
    assert_eq!(
        count(Kind::Declined, "payment_declined"),
        100,
        "{outcomes:?}"
    );
    assert_eq!(
        count(Kind::Flaky, "completed"),
        50,
        "tok_flaky completes after retries: {outcomes:?}"
    );
    assert_eq!(count(Kind::MultiLine, "completed"), 50, "{outcomes:?}");

    // Stock: scarce SKUs sold out exactly, declined orders' units back on the shelf.
    let expect = [
        ("SKU-A", 300, 0, 300),
        ("SKU-B", 250, 0, 250),
        ("SKU-C", 1000, 900, 100),
        ("SKU-D", 5000, 4850, 150),
    ];
    for (sku, initial, available, committed) in expect {
        let level: Value = app.stock(&admin, sku).await;
        assert_eq!(level["initial"], initial, "{sku}: {level}");
        assert_eq!(level["available"], available, "{sku}: {level}");
        assert_eq!(level["reserved"], 0, "{sku}: {level}");
        assert_eq!(level["committed"], committed, "{sku}: {level}");
    }

    // Trimming ran during the test (its counter is exported) and took nothing still needed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = app.metrics().await;
        let trimmed: f64 = metrics
            .lines()
            // `orderflow_log_trimmed_total{role="serve"} N`
            .filter(|l| l.starts_with("orderflow_log_trimmed_total"))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        if trimmed > 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never trimmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
