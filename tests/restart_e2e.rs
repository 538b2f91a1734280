//! `kill -9` in the middle of a stream of checkouts, then a restart on the same data directory:
//! every order that got its 202 continues and ends in exactly one terminal state, and the stock
//! ledger balances. Also: `dlq replay` on the embedded log between two runs.

mod support;

use orderflow_domain::decode_event;
use orderflow_pipeline::SegmentLog;
use orderflow_storage::kv::Engine;
use orderflow_stores::PaymentJournal;
use orderflow_stores::embedded::EmbeddedPaymentJournal;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::{App, Load, assert_one_terminal, audit, checkout, run_command, token, write_catalog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_orders_survive_kill_9_and_finish_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[("SKU-A", 1999, 700), ("SKU-C", 1250, 100_000)],
    );
    let data = dir.path().join("data");
    let customer = token("cust-restart", "checkout orders:read");

    let mut app = App::start(&data, &catalog);
    let bodies = (0..4000)
        .map(|i| match i % 4 {
            0 => checkout(&[("SKU-A", 1)], "tok_visa"),
            1 => checkout(&[("SKU-C", 2)], "tok_decline"),
            2 => checkout(&[("SKU-C", 1)], "tok_flaky"),
            _ => checkout(&[("SKU-A", 1), ("SKU-C", 1)], "tok_visa"),
        })
        .collect();
    // After the kill, requests fail to connect: those orders were never accepted.
    let sender = Load::spawn(&app, &customer, bodies, 64);

    // Kill mid-stream: orders are being accepted and processed at every stage right now.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sender.accepted() < 1200 {
        assert!(
            std::time::Instant::now() < deadline,
            "1,200 checkouts were not accepted within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.kill();
    let mut accepted = sender.finish().await;
    assert!(
        accepted.len() >= 1200 && accepted.len() < 4000,
        "killed mid-stream: {} accepted",
        accepted.len()
    );

    let mut app = App::start(&data, &catalog);
    // The restarted process takes new orders too, behind the recovered ones.
    for i in 0..200 {
        let body = if i % 2 == 0 {
            checkout(&[("SKU-C", 1)], "tok_visa")
        } else {
            checkout(&[("SKU-A", 1)], "tok_visa")
        };
        let (status, body) = app
            .checkout(&customer, &body)
            .await
            .expect("checkout after restart");
        assert_eq!(status, 202, "{body}");
        accepted.push(body["order_id"].as_str().expect("id").to_owned());
    }
    let views = app
        .await_terminal(&customer, &accepted, Duration::from_secs(180))
        .await;
    assert_eq!(views.len(), accepted.len());
    for view in &views {
        assert_one_terminal(view);
    }
    app.stop();

    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "stock audit failed after the restart:\n{report}");

    // The log itself: every accepted order has exactly one terminal record, none has two.
    // The log has its own database under data/log, the stores theirs in data.
    let engine = Engine::open(&data).expect("the stopped app released the database");
    let log = SegmentLog::open(&data.join("log"), 4).expect("the stopped app released the log");

    let mut terminal: HashMap<String, usize> = HashMap::new();
    for topic in ["orders.completed", "orders.rejected"] {
        for record in log.read(topic, usize::MAX).await.expect("read") {
            let event = decode_event(&record.value).expect("decodes");
            *terminal.entry(event.order.id.to_string()).or_default() += 1;
        }
    }
    // Payments: exactly one capture per completed order (also those whose 202 the client never
    // saw because of the kill), of its total, and none for any other order.
    let mut completed: HashMap<String, i64> = HashMap::new();
    for record in log
        .read("orders.completed", usize::MAX)
        .await
        .expect("read")
    {
        let event = decode_event(&record.value).expect("decodes");
        let total = event
            .order
            .pricing
            .as_ref()
            .map(|p| p.total.minor)
            .expect("a completed order is priced");
        completed.insert(format!("{}:charge", event.order.id), total);
    }
    let captured: HashMap<String, i64> = EmbeddedPaymentJournal::new(engine)
        .entries()
        .await
        .expect("journal")
        .into_iter()
        .filter(|(_, outcome)| outcome.starts_with("approved|"))
        .map(|(key, outcome)| {
            let minor = outcome
                .split('|')
                .nth(2)
                .and_then(|m| m.parse().ok())
                .expect("amount");
            (key, minor)
        })
        .collect();
    let uncaptured: Vec<_> = completed
        .iter()
        .filter(|(k, t)| captured.get(*k) != Some(t))
        .take(5)
        .collect();
    let unexplained: Vec<_> = captured
        .iter()
        .filter(|(k, t)| completed.get(*k) != Some(t))
        .take(5)
        .collect();
    assert!(
        uncaptured.is_empty(),
        "completed without a matching capture: {uncaptured:?}"
    );
    assert!(
        unexplained.is_empty(),
        "captured without completing: {unexplained:?}"
    );

    let duplicated: Vec<_> = terminal.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "orders with more than one terminal record: {duplicated:?}"
    );
    let accepted: HashSet<&String> = accepted.iter().collect();
    assert!(
        accepted.iter().all(|id| terminal.contains_key(*id)),
        "an accepted order has no terminal record"
    );
    for dlq in orderflow_stages::topology::all_topics()
        .iter()
        .filter(|t| t.ends_with(".dlq"))
    {
        assert!(
            log.read(dlq.as_str(), 10).await.expect("read").is_empty(),
            "{dlq} is not empty"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_on_the_embedded_log_completes_a_dead_lettered_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1000, 100)]);
    let data = dir.path().join("data");
    let customer = token("cust-replay", "checkout orders:read");
    // Two attempts: tok_flaky fails twice per process, so its charge is dead-lettered.
    let mut app = App::start_with(&data, &catalog, &[("ORDERFLOW_RETRY_MAX_ATTEMPTS", "2")]);
    let (status, answer) = app
        .checkout(&customer, &checkout(&[("SKU-A", 3)], "tok_flaky"))
        .await
        .expect("checkout");
    assert_eq!(status, 202);
    let id = answer["order_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = app.view(&customer, &id).await;
        if view["status"] == "priced" {
            break;
        }
        assert!(Instant::now() < deadline, "not parked at charge: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop();
    // The embedded log is one process's: replay with the server stopped.
    let (ok, listed) = run_command(&data, &catalog, &[], &["dlq", "list", "orders.priced"]);
    assert!(
        ok && listed.contains("1 record(s)") && listed.contains("stage=charge"),
        "{listed}"
    );
    let (ok, replayed) = run_command(&data, &catalog, &[], &["dlq", "replay", "orders.priced"]);
    assert!(
        ok && replayed.contains("Replayed 1 record(s)"),
        "{replayed}"
    );
    let (ok, again) = run_command(&data, &catalog, &[], &["dlq", "replay", "orders.priced"]);
    assert!(ok && again.contains("Replayed 0 record(s)"), "{again}");
    // After the fix (here: a larger retry budget), the replayed charge completes, once.
    let mut app = App::start_with(&data, &catalog, &[("ORDERFLOW_RETRY_MAX_ATTEMPTS", "3")]);
    let views = app
        .await_terminal(
            &customer,
            std::slice::from_ref(&id),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(views[0]["status"], "completed", "{}", views[0]);
    app.stop();
    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "{report}");
    assert!(report.contains("SKU-A"), "{report}");
}
