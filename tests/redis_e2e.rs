//! The built binary with `--redis`: stock, idempotency keys, hot views and the status feed in
//! a real `redis-server`, which is paused mid-stream. Nothing is lost, nothing is oversold, and
//! `/readyz` tells the outage.

mod support;

use futures::StreamExt;
use orderflow_testkit::RedisServer;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{App, assert_one_terminal, audit_redis, checkout, token, write_catalog};
use tokio_tungstenite::tungstenite::Message;

/// Posts the plan's checkouts, 64 at a time, each of which must be accepted; each order's kind
/// and id.
async fn accept_plan(
    app: &App,
    customer: &str,
    plan: Vec<(&'static str, Value)>,
) -> Vec<(&'static str, String)> {
    let (kinds, bodies): (Vec<&'static str>, Vec<Value>) = plan.into_iter().unzip();
    kinds
        .into_iter()
        .zip(app.accept_all(customer, bodies, 64).await)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_hot_path_survives_an_outage_without_losing_or_overselling() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[
            ("SKU-A", 1999, 300),
            ("SKU-C", 1250, 1000),
            ("SKU-D", 899, 1000),
        ],
    );
    let promotions = dir.path().join("promotions.json");
    std::fs::write(
        &promotions,
        r#"{"promotions":[{"code":"E2E50","percent_off_bps":5000,"max_uses":50}]}"#,
    )
    .expect("promotions");
    let app = App::start_with(
        &dir.path().join("data"),
        &catalog,
        &[
            ("ORDERFLOW_REDIS", redis.url().as_str()),
            ("ORDERFLOW_PROMOTIONS", promotions.to_str().expect("utf-8")),
            // Limits nobody reaches: every request asks Redis (per address, and per customer
            // on checkouts), and while Redis is paused the limiter must let requests through
            // instead of failing them.
            ("ORDERFLOW_LIMITS_CUSTOMER_PER_SECOND", "1000000"),
            ("ORDERFLOW_LIMITS_CUSTOMER_BURST", "1000000"),
            ("ORDERFLOW_LIMITS_IP_PER_SECOND", "1000000"),
            ("ORDERFLOW_LIMITS_IP_BURST", "1000000"),
        ],
    );
    let customer = token("cust-redis", "checkout orders:read");
    let admin = token("ops", "admin");

    // Stock was seeded into Redis, not the embedded ledger.
    assert_eq!(
        redis
            .command(&["HGET", "{main}:stock:SKU-A", "available"])
            .lines()
            .nth(1),
        Some("300"),
        "SKU-A seeded in Redis"
    );

    // A follower over the Redis feed sees its order through to completion.
    let (status, first) = app
        .checkout(&customer, &checkout(&[("SKU-C", 1)], "tok_visa"))
        .await
        .expect("checkout");
    assert_eq!(status, 202);
    let followed = first["order_id"].as_str().expect("id").to_owned();
    let url = format!(
        "{}/v1/orders/{followed}/ws?access_token={customer}",
        app.base.replacen("http://", "ws://", 1)
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let mut seen = Vec::new();
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout(Duration::from_secs(30), socket.next()).await
    {
        match frame {
            Message::Text(text) => {
                let m: Value = serde_json::from_str(text.as_str()).expect("json");
                seen.push(m["status"].as_str().unwrap_or_default().to_owned());
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(
        seen.last().map(String::as_str),
        Some("completed"),
        "{seen:?}"
    );

    // An Idempotency-Key replay gets the same order from Redis.
    let keyed = |key: &str| {
        app.client
            .post(app.url("/v1/checkouts"))
            .bearer_auth(&customer)
            .header("idempotency-key", key)
            .json(&checkout(&[("SKU-C", 1)], "tok_visa"))
            .send()
    };
    let one: Value = keyed("k-1")
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let two: Value = keyed("k-1")
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(one["order_id"], two["order_id"]);
    assert!(redis.command(&["KEYS", "idem:*"]).contains("k-1"));

    // 400 orders for 300 units of A, 100 declines, 100 multi-line with a coupon good for 50
    // orders; Redis is paused for 3 s after the first half has been accepted.
    let mut plan = Vec::new();
    for i in 0..600 {
        plan.push(match i % 6 {
            0..=3 => ("hot", checkout(&[("SKU-A", 1)], "tok_visa")),
            4 => ("declined", checkout(&[("SKU-C", 2)], "tok_decline")),
            _ => {
                let mut body = checkout(&[("SKU-C", 1), ("SKU-D", 1)], "tok_visa");
                body["coupon_codes"] = serde_json::json!(["E2E50"]);
                ("multi", body)
            }
        });
    }
    let second_half = plan.split_off(300);
    let mut accepted = accept_plan(&app, &customer, plan).await;

    redis.signal("STOP");
    let paused = Instant::now();
    // Checkouts without an Idempotency-Key do not need Redis: they are still accepted.
    let during = accept_plan(&app, &customer, second_half).await;
    accepted.extend(during);
    let mut saw_not_ready = false;
    while paused.elapsed() < Duration::from_secs(3) {
        let ready = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if ready.status().as_u16() == 503 {
            saw_not_ready = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    redis.signal("CONT");
    assert!(saw_not_ready, "/readyz reported the Redis outage");

    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    let kinds: HashMap<&str, &str> = accepted.iter().map(|(k, id)| (id.as_str(), *k)).collect();
    let views = app
        .await_terminal(&customer, &ids, Duration::from_secs(180))
        .await;
    assert_eq!(views.len(), 600);
    let mut outcomes: HashMap<(&str, String), usize> = HashMap::new();
    for view in &views {
        assert_one_terminal(view);
        let outcome = match view["status"].as_str() {
            Some("completed") => "completed".to_owned(),
            _ => view["rejection"]["code"].as_str().expect("code").to_owned(),
        };
        *outcomes
            .entry((kinds[view["order_id"].as_str().expect("id")], outcome))
            .or_default() += 1;
    }
    let count = |kind: &'static str, outcome: &str| {
        outcomes
            .get(&(kind, outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (count("hot", "completed"), count("hot", "out_of_stock")),
        (300, 100),
        "{outcomes:?}"
    );
    assert_eq!(count("declined", "payment_declined"), 100, "{outcomes:?}");
    assert_eq!(
        (
            count("multi", "completed"),
            count("multi", "coupon_exhausted")
        ),
        (50, 50),
        "{outcomes:?}"
    );
    for view in views
        .iter()
        .filter(|v| kinds[v["order_id"].as_str().expect("id")] == "multi")
    {
        if view["status"] == "completed" {
            // Half off 12.50 + 8.99 = 21.49: 10.745 → 10.74, half to even.
            assert_eq!(view["totals"]["discount"]["minor"], 1074, "{view}");
        }
    }
    // RESP bulk string: "$2\r\n50\r\n".
    assert_eq!(
        redis
            .command(&["GET", "{coupon:E2E50}:uses"])
            .lines()
            .nth(1),
        Some("50")
    );

    // C: 1 followed + 1 keyed + 50 multi-line units committed; declines and coupon refusals
    // gave theirs back.
    let a = app.stock(&admin, "SKU-A").await;
    assert_eq!(
        (
            a["available"].as_u64(),
            a["reserved"].as_u64(),
            a["committed"].as_u64()
        ),
        (Some(0), Some(0), Some(300)),
        "{a}"
    );
    let c = app.stock(&admin, "SKU-C").await;
    assert_eq!(
        (
            c["available"].as_u64(),
            c["reserved"].as_u64(),
            c["committed"].as_u64()
        ),
        (Some(948), Some(0), Some(52)),
        "{c}"
    );
    let d = app.stock(&admin, "SKU-D").await;
    assert_eq!(d["committed"].as_u64(), Some(50), "{d}");

    // The audit reads Redis directly, beside the running process.
    let (ok, report) = audit_redis(&redis.url());
    assert!(ok, "audit failed:\n{report}");
    assert!(report.contains("SKU-A"), "{report}");
    // And it fails loudly on a breach.
    redis.command(&["HINCRBY", "{main}:stock:SKU-A", "available", "1"]);
    let (ok, report) = audit_redis(&redis.url());
    assert!(!ok, "a breach must fail the audit:\n{report}");
}
