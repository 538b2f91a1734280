//! Followers at scale and across replicas, on the built binary:
//! - 1,000 WebSocket followers of 1,000 orders all see their terminal status; afterwards the
//!   open-socket gauge is back to 0 and the process's memory near where it started;
//! - two `orderflow ingest` replicas on one real Redis (the log on a real Kafka-protocol broker,
//!   the stages in a worker): a follower on one sees every status of an order placed through the
//!   other, in order, and a long-poll on one wakes when the order changes.

mod support;

use orderflow_testkit::{KafkaBroker, RedisServer};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{App, Worker, checkout, token, write_catalog};

/// Every status message of one follower, and its close code.
async fn follow(base: &str, id: &str, token: &str) -> (Vec<String>, Option<u16>) {
    let mut socket = support::follow_order(base, id, token).await;
    let (messages, close) = support::read_follower(&mut socket, Duration::from_secs(60)).await;
    let statuses = messages
        .iter()
        .map(|m| m["status"].as_str().expect("status").to_owned())
        .collect();
    (statuses, close)
}

/// The process's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The sum of a metric's samples in a `/metrics` text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_followers_see_their_terminal_status_and_leave_nothing_behind() {
    const ORDERS: usize = 1_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100_000)]);
    let app = App::start(&dir.path().join("data"), &catalog);
    let customer = token("cust-many", "checkout orders:read");
    // Warm up (allocator, caches), then note where memory stands.
    let warm: Vec<Value> = (0..200)
        .map(|_| checkout(&[("SKU-A", 1)], "tok_visa"))
        .collect();
    let ids = app.accept_all(&customer, warm, 16).await;
    app.await_terminal(&customer, &ids, Duration::from_secs(60))
        .await;
    let before = rss_kib(app.pid());

    let bodies: Vec<Value> = (0..ORDERS)
        .map(|_| checkout(&[("SKU-A", 1)], "tok_visa"))
        .collect();
    let ids = app.accept_all(&customer, bodies, 32).await;
    let base = app.base.clone();
    let followers: Vec<_> = ids
        .iter()
        .map(|id| {
            let (base, id, customer) = (base.clone(), id.clone(), customer.clone());
            tokio::spawn(async move { follow(&base, &id, &customer).await })
        })
        .collect();
    let mut open_seen = 0.0f64;
    let mut finished = Vec::new();
    for follower in followers {
        if open_seen == 0.0 {
            open_seen = sample(&app.metrics().await, "orderflow_websockets_open");
        }
        finished.push(follower.await.expect("joins"));
    }
    for (statuses, close) in &finished {
        assert_eq!(
            statuses.last().map(String::as_str),
            Some("completed"),
            "{statuses:?}"
        );
        assert_eq!(statuses.first().map(String::as_str), Some("accepted"));
        assert_eq!(*close, Some(1000));
    }
    let sent = sample(&app.metrics().await, "orderflow_websocket_messages_total");
    assert!(sent >= (ORDERS * 7) as f64, "{sent} messages sent");

    // Every socket closed and counted down; memory back near its start.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = sample(&app.metrics().await, "orderflow_websockets_open");
        if open == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} sockets still counted open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(app.pid());
    eprintln!(
        "RSS before {before} KiB, after 1,000 followers {after} KiB; {open_seen} open at the first look"
    );
    assert!(
        after <= before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_one_replica_sees_every_status_of_an_order_placed_through_another() {
    let broker = KafkaBroker::start();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let catalog = write_catalog(d, &[("SKU-A", 1000, 1000)]);
    let (url, redis_url) = (broker.url(), redis.url());
    let env = [
        ("ORDERFLOW_LOG", url.as_str()),
        ("ORDERFLOW_REDIS", redis_url.as_str()),
        ("ORDERFLOW_LOG_PARTITIONS", "1"),
    ];
    let replica =
        |name: &str| App::start_command(&d.join(name), &catalog, &env, &["--log", &url, "ingest"]);
    let (a, b) = (replica("ingest-a"), replica("ingest-b"));
    let _workers = Worker::start(
        &d.join("workers"),
        &catalog,
        &env,
        &[
            "--log", &url, "stage", "validate", "reserve", "price", "charge", "ship", "notify",
            "project",
        ],
    );
    let customer = token("cust-replicas", "checkout orders:read");
    // Until the groups have joined, orders wait: the first one completes when they have.
    let warm = a
        .accept_all(&customer, vec![checkout(&[("SKU-A", 1)], "tok_visa")], 1)
        .await;
    a.await_terminal(&customer, &warm, Duration::from_secs(90))
        .await;

    for payment in ["tok_flaky", "tok_decline"] {
        let (status, body) = a
            .checkout(&customer, &checkout(&[("SKU-A", 1)], payment))
            .await
            .expect("checkout");
        assert_eq!(status, 202, "{body}");
        let id = body["order_id"].as_str().expect("id").to_owned();
        let (statuses, close) = follow(&b.base, &id, &customer).await;
        let expected: Vec<&str> = if payment == "tok_decline" {
            vec!["accepted", "validated", "reserved", "priced", "rejected"]
        } else {
            vec![
                "accepted",
                "validated",
                "reserved",
                "priced",
                "charged",
                "shipped",
                "completed",
            ]
        };
        assert_eq!(
            statuses, expected,
            "{payment}: every status, in order, once"
        );
        assert_eq!(close, Some(1000));
    }

    // A long-poll on B, holding the ETag of an order just placed through A, wakes when it
    // changes: well before its 30 s are up.
    let (_, body) = a
        .checkout(&customer, &checkout(&[("SKU-A", 1)], "tok_flaky"))
        .await
        .expect("checkout");
    let id = body["order_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (etag, status) = loop {
        let response = b
            .client
            .get(b.url(&format!("/v1/orders/{id}")))
            .bearer_auth(&customer)
            .send()
            .await
            .expect("get");
        if response.status() == 200 {
            let etag = response.headers()["etag"]
                .to_str()
                .expect("ascii")
                .to_owned();
            let view: Value = response.json().await.expect("json");
            break (etag, view["status"].as_str().unwrap_or_default().to_owned());
        }
        assert!(Instant::now() < deadline, "the order never showed on B");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if status != "completed" {
        let started = Instant::now();
        let response = b
            .client
            .get(b.url(&format!("/v1/orders/{id}?wait=30")))
            .bearer_auth(&customer)
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("long-poll");
        assert_eq!(response.status(), 200);
        assert_ne!(response.headers()["etag"].to_str().expect("ascii"), etag);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
