//! Webhooks and emails from the outbox, on the built binary, to a receiver this test runs: every
//! delivery verifies with the receiver's own Standard Webhooks check, a receiver that fails
//! three times gets one accepted delivery per event under one `webhook-id`, a receiver that
//! hangs for a minute delays nothing in the pipeline, and customer emails land in the mail sink.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{App, checkout, token, write_catalog};

/// A secret in the specification's form (base64 of 24 bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Seen {
    id: String,
    verified: bool,
    body: Value,
    answered: u16,
}

/// The receiver: checks each request's signature, fails the first `failures` tries of each
/// message id with 500, and hangs while `down` is set.
#[derive(Clone)]
struct Receiver {
    seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
    failures: usize,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(failures: usize) -> (Receiver, String) {
        let receiver = Receiver {
            seen: Arc::default(),
            failures,
            down: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// Message ids answered 2xx, with how many times each was.
    fn accepted(&self) -> HashMap<String, usize> {
        let mut accepted = HashMap::new();
        for s in self.seen().iter().filter(|s| s.answered < 300) {
            *accepted.entry(s.id.clone()).or_insert(0) += 1;
        }
        accepted
    }

    async fn wait_for_accepted(&self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.accepted().len() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} messages accepted in time",
                self.accepted().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        // Down: the connection is taken and never answered (the sender's timeout ends it).
        std::future::pending::<()>().await;
    }
    let verified = standardwebhooks::Webhook::new(SECRET)
        .expect("secret")
        .verify(&body, &headers)
        .is_ok();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut seen = r.seen.lock();
    let tries = seen.iter().filter(|s| s.id == id).count();
    let answered = if tries < r.failures { 500 } else { 204 };
    seen.push(Seen {
        id,
        verified,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered,
    });
    StatusCode::from_u16(answered).expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_verify_retry_under_one_id_and_are_accepted_once_per_event() {
    let (receiver, url) = Receiver::start(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100)]);
    let mail = dir.path().join("mail");
    let app = App::start_with(
        &dir.path().join("data"),
        &catalog,
        &[
            ("ORDERFLOW_WEBHOOK_URL", url.as_str()),
            ("ORDERFLOW_WEBHOOK_SECRET", SECRET),
            ("ORDERFLOW_WEBHOOK_BACKOFF_BASE_MS", "100"),
            ("ORDERFLOW_WEBHOOK_BACKOFF_MAX_SECS", "1"),
            ("ORDERFLOW_OUTBOX_MAIL_DIR", mail.to_str().expect("utf-8")),
        ],
    );
    let customer = token("cust-hooks", "checkout orders:read");
    let admin = token("ops", "admin");
    let bodies: Vec<Value> = ["tok_visa"; 5]
        .into_iter()
        .chain(["tok_decline"; 2])
        .map(|payment| checkout(&[("SKU-A", 1)], payment))
        .collect();
    let ids = app.accept_all(&customer, bodies, 4).await;
    let views = app
        .await_terminal(&customer, &ids, Duration::from_secs(30))
        .await;
    let status_of: HashMap<String, String> = views
        .iter()
        .map(|v| {
            (
                v["order_id"].as_str().expect("id").to_owned(),
                v["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();

    receiver
        .wait_for_accepted(ids.len(), Duration::from_secs(30))
        .await;
    // Nothing more comes once each message was accepted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = receiver.seen();
    assert!(seen.iter().all(|s| s.verified), "every signature verifies");
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), ids.len(), "one message per order and event");
    assert!(
        accepted.values().all(|n| *n == 1),
        "each accepted exactly once: {accepted:?}"
    );
    let mut order_of_message: HashMap<String, String> = HashMap::new();
    for s in &seen {
        let order = s.body["data"]["order_id"].as_str().expect("order id");
        let event = s.body["type"].as_str().expect("type");
        let expected = format!("order.{}", status_of[order]);
        assert_eq!(event, expected, "{s:?}");
        assert_eq!(s.body["data"]["status"], status_of[order].as_str());
        // One webhook-id per event, the same on every retry.
        let known = order_of_message
            .entry(s.id.clone())
            .or_insert_with(|| order.to_owned());
        assert_eq!(known, order, "an id names one event");
    }
    for id in accepted.keys() {
        let tries = seen.iter().filter(|s| &s.id == id).count();
        assert_eq!(tries, 4, "three failures, then accepted, all under {id}");
    }
    let mut orders: Vec<&String> = order_of_message.values().collect();
    orders.sort();
    orders.dedup();
    assert_eq!(orders.len(), ids.len());

    // The admin list shows each delivery with its tries; emails sit beside them.
    let page: Value = app
        .client
        .get(app.url("/v1/admin/webhooks/deliveries?state=delivered&limit=500"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let deliveries = page["deliveries"].as_array().expect("deliveries");
    let hooks: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["destination"] == "default")
        .collect();
    assert_eq!(hooks.len(), ids.len(), "{page}");
    for d in &hooks {
        let attempts = d["attempts"].as_array().expect("attempts");
        let statuses: Vec<u64> = attempts
            .iter()
            .filter_map(|a| a["status"].as_u64())
            .collect();
        assert_eq!(statuses, [500, 500, 500, 204], "{d}");
        assert!(accepted.contains_key(d["id"].as_str().expect("id")));
    }
    let emails = deliveries
        .iter()
        .filter(|d| d["destination"] == "mail")
        .count();
    assert_eq!(emails, 5, "one confirmation per completed order");
    let files: Vec<String> = std::fs::read_dir(&mail)
        .expect("mail dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    assert_eq!(files.len(), 5);
    assert!(
        files
            .iter()
            .all(|f| f.contains("Subject: Your order ") && f.contains("Tracking number: "))
    );
    let shoppers = token("cust-hooks", "checkout orders:read");
    let refused = app
        .client
        .get(app.url("/v1/admin/webhooks/deliveries"))
        .bearer_auth(&shoppers)
        .send()
        .await
        .expect("list");
    assert_eq!(refused.status(), 403);

    // Sent again by hand: the same id, accepted again.
    let again = hooks[0]["id"].as_str().expect("id").to_owned();
    let retried = app
        .client
        .post(app.url(&format!("/v1/admin/webhooks/deliveries/{again}/retry")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("retry");
    assert_eq!(retried.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.accepted().get(&again) != Some(&2) {
        assert!(Instant::now() < deadline, "the retry was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = app
        .client
        .post(app.url("/v1/admin/webhooks/deliveries/msg_0123/retry"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("retry");
    assert_eq!(missing.status(), 404);
    let metrics = app.metrics().await;
    let delivered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("orderflow_outbox_deliveries_total{")
                && l.contains("channel=\"webhook\"")
                && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(delivered as usize, ids.len() + 1, "{metrics}");
}

/// Accept to completed, from the view's timeline, in ms.
fn lifetime_ms(view: &Value) -> i64 {
    let at = |status: &str| {
        view["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .find(|e| e["status"] == status)
            .and_then(|e| e["at"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .expect("timestamp")
    };
    (at("completed") - at("accepted")).num_milliseconds()
}

/// The `pct`th percentile (nearest rank) of `values`.
fn percentile(values: &[i64], pct: usize) -> i64 {
    let mut values = values.to_vec();
    values.sort_unstable();
    values[(values.len() * pct).div_ceil(100).saturating_sub(1)]
}

/// Checkouts at a steady 25/s for `seconds`; the completed orders' lifetimes.
async fn steady(app: &App, customer: &str, seconds: u64) -> (Vec<String>, Vec<i64>) {
    let mut ids = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    for _ in 0..seconds * 25 {
        tick.tick().await;
        let (status, body) = app
            .checkout(customer, &checkout(&[("SKU-A", 1)], "tok_visa"))
            .await
            .expect("checkout");
        assert_eq!(status, 202, "{body}");
        ids.push(body["order_id"].as_str().expect("id").to_owned());
    }
    let views = app
        .await_terminal(customer, &ids, Duration::from_secs(30))
        .await;
    assert!(views.iter().all(|v| v["status"] == "completed"));
    (ids, views.iter().map(lifetime_ms).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_delays_nothing_in_the_pipeline_and_gets_everything_after() {
    let (receiver, url) = Receiver::start(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 10_000)]);
    let app = App::start_with(
        &dir.path().join("data"),
        &catalog,
        &[
            ("ORDERFLOW_WEBHOOK_URL", url.as_str()),
            ("ORDERFLOW_WEBHOOK_SECRET", SECRET),
            ("ORDERFLOW_WEBHOOK_TIMEOUT_MS", "2000"),
            ("ORDERFLOW_WEBHOOK_BACKOFF_BASE_MS", "200"),
            ("ORDERFLOW_WEBHOOK_BACKOFF_MAX_SECS", "1"),
            ("ORDERFLOW_WEBHOOK_EVENTS", "order.completed"),
        ],
    );
    let customer = token("cust-hang", "checkout orders:read");
    // Warm up, then the same steady load with the receiver up and with it hanging.
    steady(&app, &customer, 1).await;
    let (mut ids, up) = steady(&app, &customer, 6).await;
    receiver.down.store(true, Ordering::SeqCst);
    // Down for a minute, orders flowing all the while.
    let (more, down) = steady(&app, &customer, 60).await;
    receiver.down.store(false, Ordering::SeqCst);
    ids.extend(more);
    let (up_p90, down_p90) = (percentile(&up, 90), percentile(&down, 90));
    let down_p99 = percentile(&down, 99);
    eprintln!(
        "accept→completed: receiver up p90 {up_p90} ms; hanging p90 {down_p90} ms, p99 {down_p99} ms"
    );
    // The bulk of orders is no slower with the receiver hanging. The p90, not the p99, is
    // compared: the hanging minute is ten times the up window, so on CI's two shared cores
    // it alone catches the odd stall of a few hundred ms, which says nothing about webhooks.
    assert!(
        down_p90 <= 2 * up_p90 + 100,
        "a hanging receiver slowed the pipeline: p90 {up_p90} ms → {down_p90} ms"
    );
    // And no order waited on the receiver: one that did would take its 2 s timeout at least.
    assert!(
        down_p99 < 1_000,
        "orders waited on a hanging receiver: p99 {down_p99} ms"
    );
    // Back up: every order's event arrives, once.
    receiver
        .wait_for_accepted(ids.len() + 25, Duration::from_secs(90))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let accepted = receiver.accepted();
    assert!(accepted.values().all(|n| *n == 1), "each accepted once");
    let orders: std::collections::HashSet<String> = receiver
        .seen()
        .iter()
        .filter(|s| s.answered < 300)
        .map(|s| s.body["data"]["order_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| orders.contains(id)),
        "every order's event arrived"
    );
}
