//! Following an order over WebSocket on the built binary: one message per status change, in
//! lifecycle order, closed after the terminal one; strangers and bad tokens are refused.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::{App, checkout, token, write_catalog};

const ORDER: [&str; 7] = [
    "accepted",
    "validated",
    "reserved",
    "priced",
    "charged",
    "shipped",
    "completed",
];

async fn follow(app: &App, id: &str, token: &str) -> (Vec<Value>, Option<u16>) {
    let mut socket = support::follow_order(&app.base, id, token).await;
    support::read_follower(&mut socket, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_see_each_status_once_in_order_then_the_socket_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 1999, 100)]);
    let app = App::start(&dir.path().join("data"), &catalog);
    let customer = token("cust-ws", "checkout orders:read");

    for payment in ["tok_flaky", "tok_visa", "tok_decline"] {
        let (status, body) = app
            .checkout(&customer, &checkout(&[("SKU-A", 1)], payment))
            .await
            .expect("checkout");
        assert_eq!(status, 202);
        let id = body["order_id"].as_str().expect("id").to_owned();
        let (messages, close) = follow(&app, &id, &customer).await;
        assert!(!messages.is_empty(), "{payment}: no message");
        let statuses: Vec<&str> = messages
            .iter()
            .map(|m| m["status"].as_str().expect("status"))
            .collect();
        let expected: Vec<&str> = if payment == "tok_decline" {
            ORDER[..4].iter().copied().chain(["rejected"]).collect()
        } else {
            ORDER.to_vec()
        };
        assert_eq!(
            statuses, expected,
            "{payment}: one message per status change, in order"
        );
        let last = messages.last().expect("last");
        assert_eq!(last["order_id"], id.as_str());
        assert_eq!(
            last["order"]["status"],
            expected[expected.len() - 1],
            "{payment}: {last}"
        );
        assert!(messages.iter().all(|m| m["at"].is_string()));
        assert_eq!(
            close,
            Some(1000),
            "{payment}: closed normally after the terminal status"
        );
    }

    // Someone else's order: closed as not found. A bad token: refused before the upgrade.
    let (_, body) = app
        .checkout(&customer, &checkout(&[("SKU-A", 1)], "tok_visa"))
        .await
        .expect("checkout");
    let id = body["order_id"].as_str().expect("id").to_owned();
    let (messages, close) = follow(&app, &id, &token("stranger", "orders:read")).await;
    assert!(messages.is_empty());
    assert_eq!(close, Some(4404));
    let url = format!(
        "{}/v1/orders/{id}/ws?access_token=garbage",
        app.base.replacen("http://", "ws://", 1)
    );
    let refused = tokio_tungstenite::connect_async(url)
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("401"), "{refused}");
}
