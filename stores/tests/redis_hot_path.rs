//! What only the Redis adapters do: pipelining, script reloads, outages.

use orderflow_domain::OrderId;
use orderflow_stores::redis::{RedisConfig, RedisHot, RedisLedger};
use orderflow_stores::{ReserveOutcome, StockLedger, StoreError};
use orderflow_testkit::RedisServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(900);

async fn ledger(server: &RedisServer, timeout: Duration) -> RedisLedger {
    let mut config = RedisConfig::new(server.url());
    config.command_timeout = timeout;
    RedisLedger::new(RedisHot::connect(config).await.expect("connects"))
}

#[tokio::test]
async fn calls_arriving_together_leave_in_one_pipeline() {
    let server = RedisServer::start();
    let ledger = Arc::new(ledger(&server, Duration::from_secs(2)).await);
    ledger.seed(&[("P".into(), 1_000)]).await.expect("seed");
    let before = ledger.pipelines_sent();
    // A stage's batch: 200 reservations started at once.
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                ledger
                    .reserve(OrderId::new(), &[("P".into(), 1)], TTL)
                    .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.expect("joins").expect("reserve"),
            ReserveOutcome::Reserved
        );
    }
    let pipelines = ledger.pipelines_sent() - before;
    assert!(
        pipelines <= 20,
        "200 concurrent calls took {pipelines} round trips"
    );
    let level = ledger.level("P").await.expect("level").expect("exists");
    assert_eq!((level.available, level.reserved), (800, 200));
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_flush() {
    let server = RedisServer::start();
    let ledger = ledger(&server, Duration::from_secs(2)).await;
    ledger.seed(&[("F".into(), 5)]).await.expect("seed");
    // What a Redis restart or failover does to the script cache.
    assert!(server.command(&["SCRIPT", "FLUSH"]).starts_with("+OK"));
    assert_eq!(
        ledger
            .reserve(OrderId::new(), &[("F".into(), 2)], TTL)
            .await
            .expect("reserve after NOSCRIPT"),
        ReserveOutcome::Reserved
    );
    let level = ledger.level("F").await.expect("level").expect("exists");
    assert_eq!((level.available, level.reserved), (3, 2));
}

#[tokio::test]
async fn an_outage_is_unavailable_not_an_answer_and_passes() {
    let server = RedisServer::start();
    let ledger = ledger(&server, Duration::from_millis(500)).await;
    ledger.seed(&[("O".into(), 5)]).await.expect("seed");
    let order = OrderId::new();

    server.signal("STOP");
    let started = Instant::now();
    let during = ledger.reserve(order, &[("O".into(), 1)], TTL).await;
    assert!(
        matches!(during, Err(StoreError::Unavailable(_))),
        "{during:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    assert!(
        ledger.ready().await.is_err(),
        "readiness reports the outage"
    );
    server.signal("CONT");

    // Back: the same order is reserved once, whether or not the first try reached Redis.
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        match ledger.reserve(order, &[("O".into(), 1)], TTL).await {
            Ok(outcome) => break outcome,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("redis did not come back: {e}"),
        }
    };
    assert_eq!(outcome, ReserveOutcome::Reserved);
    ledger.ready().await.expect("ready again");
    let level = ledger.level("O").await.expect("level").expect("exists");
    assert_eq!((level.available, level.reserved), (4, 1));
}
