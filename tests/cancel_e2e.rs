//! Cancels and refunds on the built binary: a cancel racing the pipeline ends in exactly one of
//! `cancelled` (202) or `completed` (409), with stock and money reconciled to the unit and the
//! cent; a cancel while the charge is retried captures nothing and followers see it; refunds
//! add up, never past the capture, and are paid once — also after a dead letter and a replay.

mod support;

use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use support::{App, audit, checkout, is_settled, run_command, token, write_catalog};

/// The money of a settled view: (captured, refunded, payment status).
fn money(view: &Value) -> (i64, i64, String) {
    let p = &view["payment"];
    (
        p["captured"]["minor"].as_i64().unwrap_or(0),
        p["refunded"]["minor"].as_i64().unwrap_or(0),
        p["status"].as_str().unwrap_or("none").to_owned(),
    )
}

fn statuses(view: &Value) -> Vec<String> {
    view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|t| t["status"].as_str().expect("status").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_the_pipeline_end_cancelled_or_completed_and_reconcile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[("SKU-A", 1000, 100_000), ("SKU-B", 250, 100_000)],
    );
    let data = dir.path().join("data");
    let app = App::start(&data, &catalog);
    let customer = token("cust-race", "checkout orders:read");
    let admin = token("ops", "admin");

    // 500 orders, each cancelled at its own moment: at once for some, up to 80 ms after its
    // 202 for the others (a spread, not a clock: the same moments every run).
    let answers: Vec<(String, u16, Value)> = futures::stream::iter(0..500u64)
        .map(|i| {
            let (app, customer) = (&app, &customer);
            async move {
                let (status, body) = app
                    .checkout(
                        customer,
                        &checkout(&[("SKU-A", 1), ("SKU-B", 2)], "tok_visa"),
                    )
                    .await
                    .expect("checkout");
                assert_eq!(status, 202, "{body}");
                let id = body["order_id"].as_str().expect("id").to_owned();
                let wait = if i % 4 == 0 { 0 } else { (i * 7919) % 80 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let (status, answer) = app.cancel(customer, &id).await;
                (id, status, answer)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ids: Vec<String> = answers.iter().map(|(id, _, _)| id.clone()).collect();
    let views = app
        .await_terminal(&customer, &ids, Duration::from_secs(120))
        .await;
    let by_id: std::collections::HashMap<String, Value> = views
        .into_iter()
        .map(|v| (v["order_id"].as_str().expect("id").to_owned(), v))
        .collect();
    let (mut cancelled, mut completed, mut refunded_cents) = (0u64, 0u64, 0i64);
    for (id, status, answer) in &answers {
        let view = &by_id[id];
        support::assert_one_terminal(view);
        match status {
            202 => {
                assert_eq!(answer["status"], "cancel_requested", "{answer}");
                assert_eq!(view["status"], "cancelled", "a 202 ends cancelled: {view}");
                assert!(
                    statuses(view).contains(&"cancel_requested".to_owned()),
                    "{view}"
                );
                let (captured, refunded, _) = money(view);
                assert_eq!(captured, refunded, "a capture is refunded whole: {view}");
                refunded_cents += refunded;
                cancelled += 1;
            }
            409 => {
                assert_eq!(
                    answer["type"], "/problems/order-not-cancellable",
                    "{answer}"
                );
                assert_eq!(view["status"], "completed", "a 409 ends completed: {view}");
                let total = view["totals"]["total"]["minor"].as_i64().expect("total");
                assert_eq!(money(view), (total, 0, "captured".to_owned()), "{view}");
                completed += 1;
            }
            other => panic!("cancel answered {other}: {answer}"),
        }
    }
    assert_eq!(cancelled + completed, 500);
    assert!(
        cancelled > 0 && completed > 0,
        "{cancelled} cancelled, {completed} completed"
    );
    // Stock to the unit: only the completed orders' units left the shelf.
    for (sku, per_order) in [("SKU-A", 1), ("SKU-B", 2)] {
        let level = app.stock(&admin, sku).await;
        assert_eq!(
            level["committed"],
            json!(completed * per_order),
            "{sku}: {level}"
        );
        assert_eq!(level["reserved"], json!(0), "{sku}: {level}");
        assert_eq!(
            level["available"],
            json!(100_000 - completed * per_order),
            "{sku}: {level}"
        );
    }
    eprintln!(
        "race: {cancelled} cancelled ({refunded_cents} cents refunded), {completed} completed"
    );
    drop(app);
    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "{report}");
    assert!(report.contains("0 with a refund pending"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_charge_is_retried_captures_nothing_and_followers_see_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100)]);
    // A flaky card's tries at least a second apart: the order waits at charge.
    let app = App::start_with(
        &dir.path().join("data"),
        &catalog,
        &[
            ("ORDERFLOW_RETRY_BASE_MS", "1500"),
            ("ORDERFLOW_RETRY_MAX_MS", "3000"),
        ],
    );
    let customer = token("cust-cancel", "checkout orders:read");
    let stranger = token("cust-other", "checkout orders:read");
    let admin = token("ops", "admin");
    let (_, body) = app
        .checkout(&customer, &checkout(&[("SKU-A", 3)], "tok_flaky"))
        .await
        .expect("checkout");
    let id = body["order_id"].as_str().expect("id").to_owned();
    let mut socket = support::follow_order(&app.base, &id, &customer).await;
    // Wait until the order is priced: its charge is being retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.view(&customer, &id).await["status"] != "priced" {
        assert!(std::time::Instant::now() < deadline, "never priced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.cancel(&stranger, &id).await.0,
        404,
        "someone else's order"
    );
    let (status, first) = app.cancel(&customer, &id).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        app.cancel(&customer, &id).await,
        (202, first.clone()),
        "a repeat"
    );

    let (messages, close) = support::read_follower(&mut socket, Duration::from_secs(30)).await;
    let seen: Vec<&str> = messages
        .iter()
        .map(|m| m["status"].as_str().expect("status"))
        .collect();
    assert_eq!(close, Some(1000));
    assert_eq!(
        seen,
        [
            "accepted",
            "validated",
            "reserved",
            "priced",
            "cancel_requested",
            "cancelled"
        ]
    );
    let view = app.view(&customer, &id).await;
    assert_eq!(view["status"], "cancelled");
    assert!(view.get("payment").is_none(), "nothing captured: {view}");
    let level = app.stock(&admin, "SKU-A").await;
    assert_eq!(
        (level["available"].clone(), level["reserved"].clone()),
        (json!(100), json!(0))
    );
    // After the end: refused, naming where it is; a completed order likewise.
    let (status, problem) = app.cancel(&customer, &id).await;
    assert_eq!(
        status, 202,
        "still the same answer once cancelled: {problem}"
    );
    let (done, _) = settled_order(&app, &customer, &[("SKU-A", 1)], "tok_visa").await;
    let (status, problem) = app.cancel(&customer, &done).await;
    assert_eq!(status, 409);
    assert_eq!(problem["type"], "/problems/order-not-cancellable");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("completed"),
        "{problem}"
    );
    let (status, _) = app.cancel(&token("reader", "orders:read"), &done).await;
    assert_eq!(status, 403, "a read-only token cannot cancel");
}

/// A completed order's id and its total.
async fn completed_order(app: &App, customer: &str, card: &str) -> (String, i64) {
    let (id, view) = settled_order(app, customer, &[("SKU-A", 2)], card).await;
    (id, money(&view).0)
}

/// Places an order of `lines` paid with `card` and waits for it to settle: its id and view.
async fn settled_order(
    app: &App,
    customer: &str,
    lines: &[(&str, u32)],
    card: &str,
) -> (String, Value) {
    let (status, body) = app
        .checkout(customer, &checkout(lines, card))
        .await
        .expect("checkout");
    assert_eq!(status, 202, "{body}");
    let id = body["order_id"].as_str().expect("id").to_owned();
    let view = settled(app, customer, &id).await;
    (id, view)
}

/// Order `id`'s view once it is terminal with no refund pending.
async fn settled(app: &App, customer: &str, id: &str) -> Value {
    app.await_terminal(customer, &[id.to_owned()], Duration::from_secs(30))
        .await
        .remove(0)
}

/// Order `id`'s view once refund `refund_id` shows a final status (`succeeded` or `failed`): a
/// view read before the refund is projected would look settled without it.
async fn refund_final(app: &App, customer: &str, id: &str, refund_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = app.view(customer, id).await;
        let done = view["refunds"].as_array().is_some_and(|refunds| {
            refunds
                .iter()
                .any(|r| r["refund_id"] == refund_id && r["status"] != "pending")
        });
        if done {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refund {refund_id} never final: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn amount(minor: i64) -> Value {
    json!({"amount": {"currency": "USD", "minor": minor}, "reason": "damaged in transit"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_add_up_never_past_the_capture_and_are_paid_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100)]);
    let data = dir.path().join("data");
    let app = App::start(&data, &catalog);
    let customer = token("cust-refund", "checkout orders:read");
    let admin = token("ops", "admin");
    let (id, captured) = completed_order(&app, &customer, "tok_visa").await;
    assert!(captured > 3998, "two units, shipping and tax: {captured}");

    let third = captured / 3;
    let (status, first) = app.refund(&admin, &id, "r-1", &amount(third)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "pending");
    let refund_id = first["refund_id"].as_str().expect("refund id").to_owned();
    assert!(refund_id.starts_with("rf_"), "{first}");
    // The same key and body: the same refund. Another body: refused.
    assert_eq!(
        app.refund(&admin, &id, "r-1", &amount(third)).await,
        (202, first.clone())
    );
    let (status, problem) = app.refund(&admin, &id, "r-1", &amount(third + 1)).await;
    assert_eq!(
        (status, problem["type"].clone()),
        (422, json!("/problems/idempotency-key-reused"))
    );
    // Past the capture: refused, naming it; nothing counted.
    let (status, problem) = app
        .refund(&admin, &id, "r-2", &amount(captured - third + 1))
        .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (422, json!("/problems/refund-exceeds-capture"))
    );
    // Bad requests.
    let bad = json!({"amount": {"currency": "EUR", "minor": 0}, "reason": " "});
    let (status, problem) = app.refund(&admin, &id, "r-3", &bad).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(3),
        "{problem}"
    );
    let no_key = app
        .client
        .post(app.url(&format!("/v1/admin/orders/{id}/refunds")))
        .bearer_auth(&admin)
        .json(&amount(1))
        .send()
        .await
        .expect("post");
    assert_eq!(no_key.status().as_u16(), 400);
    assert_eq!(app.refund(&customer, &id, "r-4", &amount(1)).await.0, 403);
    // The rest: the capture is refunded whole, and not a cent more.
    let (status, rest) = app
        .refund(&admin, &id, "r-5", &amount(captured - third))
        .await;
    assert_eq!(status, 202, "{rest}");
    let (status, problem) = app.refund(&admin, &id, "r-6", &amount(1)).await;
    assert_eq!(
        (status, problem["type"].clone()),
        (422, json!("/problems/refund-exceeds-capture"))
    );

    let last = rest["refund_id"].as_str().expect("refund id");
    refund_final(&app, &customer, &id, &refund_id).await;
    let view = refund_final(&app, &customer, &id, last).await;
    assert_eq!(
        money(&view),
        (captured, captured, "refunded".to_owned()),
        "{view}"
    );
    let refunds = view["refunds"].as_array().expect("refunds");
    assert_eq!(refunds.len(), 2, "{view}");
    assert!(refunds.iter().all(|r| r["status"] == "succeeded"), "{view}");
    assert_eq!(
        statuses(&view).iter().filter(|s| *s == "refunded").count(),
        2,
        "{view}"
    );

    // A declined order captured nothing: not refundable.
    let (declined, _) = settled_order(&app, &customer, &[("SKU-A", 1)], "tok_decline").await;
    let (status, problem) = app.refund(&admin, &declined, "r-7", &amount(1)).await;
    assert_eq!(
        (status, problem["type"].clone()),
        (409, json!("/problems/order-not-refundable"))
    );

    // A refund the provider refuses for good: shown failed, and its amount can be asked again.
    let (closed, captured) = completed_order(&app, &customer, "tok_norefund").await;
    let (status, refused) = app.refund(&admin, &closed, "n-1", &amount(captured)).await;
    assert_eq!(status, 202);
    let refused = refused["refund_id"].as_str().expect("refund id");
    let view = refund_final(&app, &customer, &closed, refused).await;
    assert_eq!(view["refunds"][0]["status"], "failed", "{view}");
    assert_eq!(money(&view), (captured, 0, "captured".to_owned()), "{view}");
    assert!(
        statuses(&view).contains(&"refund_failed".to_owned()),
        "{view}"
    );
    assert_eq!(
        app.refund(&admin, &closed, "n-2", &amount(captured))
            .await
            .0,
        202
    );
    drop(app);
    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_that_keeps_failing_is_dead_lettered_then_replayed_and_paid_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100)]);
    let data = dir.path().join("data");
    let customer = token("cust-dlq", "checkout orders:read");
    let admin = token("ops", "admin");
    // A flaky card: its charge goes through on the third try; its refunds fail three times.
    let app = App::start(&data, &catalog);
    let (id, captured) = completed_order(&app, &customer, "tok_flaky").await;
    drop(app);
    // Two tries a record: the refund is dead-lettered.
    let app = App::start_with(&data, &catalog, &[("ORDERFLOW_RETRY_MAX_ATTEMPTS", "2")]);
    let (status, refund) = app.refund(&admin, &id, "k-1", &amount(captured)).await;
    assert_eq!(status, 202, "{refund}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The counter is exported at 0 from the start: wait for it to move.
    while !app.metrics().await.lines().any(|l| {
        l.starts_with("orderflow_stage_dead_lettered_total{")
            && l.contains("stage=\"refund\"")
            && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(1.0)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the refund was never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = app.view(&customer, &id).await;
    assert_eq!(view["refunds"][0]["status"], "pending", "{view}");
    assert!(!is_settled(&view));
    drop(app);
    let (ok, out) = run_command(
        &data,
        &catalog,
        &[],
        &["dlq", "replay", "refunds.requested"],
    );
    assert!(ok, "{out}");
    // Replayed, with room for the card's three failures: paid, once.
    let app = App::start(&data, &catalog);
    // At the start the view may not show the refund yet (the projector reads the log again
    // from its last commit): wait for it to be paid.
    let refund_id = refund["refund_id"].as_str().expect("refund id");
    let view = refund_final(&app, &customer, &id, refund_id).await;
    assert_eq!(
        money(&view),
        (captured, captured, "refunded".to_owned()),
        "{view}"
    );
    assert_eq!(view["refunds"][0]["refund_id"], refund["refund_id"]);
    drop(app);
    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "{report}");
    assert!(report.contains("0 with a refund pending"), "{report}");
}
