//! What only the Redis adapters do: pipelining, script reloads, outages, the hot view's order.

use orderflow_domain::{CheckoutRequest, Order, OrderEvent, OrderId, OrderStatus};
use orderflow_storage::kv::Engine;
use orderflow_stores::embedded::EmbeddedOrderStore;
use orderflow_stores::redis::{
    CachedOrderStore, RedisConfig, RedisHot, RedisLedger, RedisOrderCache,
};
use orderflow_stores::{OrderStore, ReserveOutcome, StockLedger, StoreError};
use orderflow_stores::{SkuQuantity, SkuStock};
use orderflow_testkit::RedisServer;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(900);

async fn ledger(server: &RedisServer, timeout: Duration) -> RedisLedger {
    let mut config = RedisConfig::new(server.url());
    config.command_timeout = timeout;
    RedisLedger::new(RedisHot::connect(config).await.expect("connects"))
}

/// Bytes waiting, unread, in the server's receive queues of established connections to `port`
/// (from `/proc/net/tcp`).
fn unread_bytes_at(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let established = fields.get(3)? == &"01";
            let rx_queue = fields.get(4)?.split(':').nth(1)?;
            (u16::from_str_radix(local_port, 16).ok()? == port && established)
                .then(|| u64::from_str_radix(rx_queue, 16).ok())
                .flatten()
        })
        .sum()
}

#[tokio::test]
async fn a_batch_of_calls_is_pipelined_not_sent_one_round_trip_at_a_time() {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.connections = 1;
    config.command_timeout = Duration::from_secs(20);
    let ledger = RedisLedger::new(RedisHot::connect(config).await.expect("connects"));
    ledger
        .seed(&[SkuStock::new("P", 1_000)])
        .await
        .expect("seed");
    // Redis stops reading: whatever the client sends without waiting for answers piles up in
    // the server's receive queue.
    server.signal("STOP");
    let line = [SkuQuantity::new("P", 1)];
    let ids: Vec<OrderId> = (0..200).map(|_| OrderId::new()).collect();
    // A stage's batch, as the runner drives it: 200 reservations polled together in one task.
    let batch = futures::future::join_all(ids.iter().map(|id| ledger.reserve(*id, &line, TTL)));
    let watch = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let queued = unread_bytes_at(server.port());
        server.signal("CONT");
        queued
    };
    let (outcomes, queued) = tokio::join!(batch, watch);
    // One reserve call is about 250 bytes on the wire; one at a time, only the first would
    // have left before its answer.
    assert!(
        queued > 150 * 200,
        "only {queued} bytes were sent while Redis was not answering: the batch was not pipelined"
    );
    for outcome in outcomes {
        assert_eq!(outcome.expect("reserve"), ReserveOutcome::Reserved);
    }
    let level = ledger.level("P").await.expect("level").expect("exists");
    assert_eq!((level.available, level.reserved), (800, 200));
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_flush() {
    let server = RedisServer::start();
    let ledger = ledger(&server, Duration::from_secs(2)).await;
    ledger.seed(&[SkuStock::new("F", 5)]).await.expect("seed");
    // What a Redis restart or failover does to the script cache.
    assert!(server.command(&["SCRIPT", "FLUSH"]).starts_with("+OK"));
    assert_eq!(
        ledger
            .reserve(OrderId::new(), &[SkuQuantity::new("F", 2)], TTL)
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
    ledger.seed(&[SkuStock::new("O", 5)]).await.expect("seed");
    let order = OrderId::new();

    server.signal("STOP");
    let started = Instant::now();
    let during = ledger
        .reserve(order, &[SkuQuantity::new("O", 1)], TTL)
        .await;
    assert!(
        matches!(&during, Err(e) if e.is_unavailable()),
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
        match ledger
            .reserve(order, &[SkuQuantity::new("O", 1)], TTL)
            .await
        {
            Ok(outcome) => break outcome,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => {
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

fn event(id: OrderId, status: OrderStatus) -> OrderEvent {
    let request: CheckoutRequest = serde_json::from_str(
        r#"{"currency":"USD","lines":[{"sku":"A","quantity":1}],"shipping_address":{"name":"Ada",
        "line1":"1 Main","city":"SF","postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
    )
    .expect("valid body");
    let at = chrono::Utc::now();
    OrderEvent {
        status,
        at,
        order: Order::from_checkout(id, "c1".into(), request, at),
    }
}

#[tokio::test]
async fn the_hot_view_is_never_older_than_the_durable_one() {
    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.command_timeout = Duration::from_millis(500);
    let hot = RedisHot::connect(config).await.expect("connects");
    let dir = tempfile::tempdir().expect("tempdir");
    let durable: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(
        Engine::open(dir.path()).expect("engine"),
    ));
    let cache = RedisOrderCache::new(hot.clone());
    let store = CachedOrderStore::new(RedisOrderCache::new(hot.clone()), Arc::clone(&durable));
    let id = OrderId::new();
    store
        .apply(&[
            event(id, OrderStatus::Accepted),
            event(id, OrderStatus::Validated),
        ])
        .await
        .expect("apply");
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Validated)
    );
    // Cached once, at the flush, after the durable write.
    assert!(cache.get(id).await.expect("hot get").is_none());
    assert_eq!(store.unflushed(), 1);
    store.flush().await.expect("flush");
    assert_eq!(
        cache.get(id).await.expect("hot get").map(|v| v.status),
        Some(OrderStatus::Validated)
    );

    // A projector that died after its durable write, before the cache write: the cache is
    // behind. Its records come again after the restart and must correct that.
    let reserved = event(id, OrderStatus::Reserved);
    durable
        .apply(std::slice::from_ref(&reserved))
        .await
        .expect("durable only");
    assert!(store.apply(&[reserved]).await.expect("replay").is_empty());
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Reserved),
        "the stale cached view is gone"
    );

    store.flush().await.expect("flush");

    // Redis away: the write is refused before the durable store moves, and reads still answer.
    server.signal("STOP");
    let priced = event(id, OrderStatus::Priced);
    assert!(matches!(
        store.apply(std::slice::from_ref(&priced)).await,
        Err(e) if e.is_unavailable()
    ));
    assert_eq!(
        durable.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Reserved)
    );
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Reserved)
    );
    server.signal("CONT");
    let mut applied = None;
    for _ in 0..50 {
        match store.apply(std::slice::from_ref(&priced)).await {
            Ok(changed) => {
                applied = Some(changed);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(applied.expect("redis is back").len(), 1);
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Priced)
    );

    // A crash between the durable and the hot write of a flush (Redis stops in between): the
    // durable store has the new view; the cache has none (it was dropped when the change was
    // applied) or, if the timed-out write still lands once Redis resumes, that same view —
    // never an older one. Every reader, this process or a restarted one, reads the newest.
    server.signal("STOP");
    assert!(store.flush().await.is_err(), "the cache write fails");
    assert_eq!(
        durable.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Priced)
    );
    // Until a flush succeeds, the order's next change must drop the cached view again (the
    // timed-out write may still land): with Redis away it is refused before the durable
    // store moves.
    assert!(
        store
            .apply(&[event(id, OrderStatus::Charged)])
            .await
            .is_err()
    );
    assert_eq!(
        durable.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Priced)
    );
    server.signal("CONT");
    let mut hot_view = Err(StoreError::Unavailable("not asked yet".into()));
    for _ in 0..50 {
        hot_view = cache.get(id).await;
        if hot_view.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let durable_view = durable.get(id).await.expect("get").expect("view");
    if let Some(cached) = hot_view.expect("redis is back") {
        assert!(
            cached.timeline.len() >= durable_view.timeline.len(),
            "a cached view older than the durable one: {:?} < {:?}",
            cached.status,
            durable_view.status
        );
    }
    let restarted = CachedOrderStore::new(RedisOrderCache::new(hot.clone()), Arc::clone(&durable));
    assert_eq!(
        restarted.get(id).await.expect("get").map(|v| v.status),
        Some(OrderStatus::Priced)
    );
    // The retried flush caches what it owed.
    store.flush().await.expect("flush after redis is back");
    assert_eq!(
        cache.get(id).await.expect("hot get").map(|v| v.status),
        Some(OrderStatus::Priced)
    );
}

/// `calls` of `command` in the server's `INFO commandstats` (0 if never called).
fn calls_of(server: &RedisServer, command: &str) -> u64 {
    let stats = server.command(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

#[tokio::test]
async fn a_flush_caches_its_views_in_one_call_per_slot() {
    for clustered in [false, true] {
        let server = if clustered {
            RedisServer::start_cluster()
        } else {
            RedisServer::start()
        };
        let url = if clustered {
            server.cluster_url()
        } else {
            server.url()
        };
        let hot = RedisHot::connect(RedisConfig::new(url))
            .await
            .expect("connects");
        let dir = tempfile::tempdir().expect("tempdir");
        let durable: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(
            Engine::open(dir.path()).expect("engine"),
        ));
        let store = CachedOrderStore::new(RedisOrderCache::new(hot.clone()), durable);
        let cache = RedisOrderCache::new(hot);
        let ids: Vec<OrderId> = (0..300).map(|_| OrderId::new()).collect();
        let _ = server.command(&["CONFIG", "RESETSTAT"]);
        store
            .apply(
                &ids.iter()
                    .map(|id| event(*id, OrderStatus::Accepted))
                    .collect::<Vec<_>>(),
            )
            .await
            .expect("apply");
        store.flush().await.expect("flush");
        for id in &ids {
            assert_eq!(
                cache.get(*id).await.expect("hot get").map(|v| v.status),
                Some(OrderStatus::Accepted),
                "clustered: {clustered}"
            );
        }
        if !clustered {
            // 300 orders, at most 256 keys a call: two drops and two script calls in all.
            assert_eq!(calls_of(&server, "del"), 2);
            assert_eq!(calls_of(&server, "evalsha"), 2);
            assert_eq!(calls_of(&server, "set"), 300);
            // The projector applies a batch one record per call, all at once: their drops
            // still go out together.
            let _ = server.command(&["CONFIG", "RESETSTAT"]);
            let validated: Vec<OrderEvent> = ids
                .iter()
                .map(|id| event(*id, OrderStatus::Validated))
                .collect();
            let applies = validated
                .iter()
                .map(|e| store.apply(std::slice::from_ref(e)));
            for changed in futures::future::join_all(applies).await {
                assert_eq!(changed.expect("apply").len(), 1);
            }
            let drops = calls_of(&server, "del");
            assert!(
                (2..=3).contains(&drops),
                "{drops} DEL calls for 300 concurrent applies"
            );
            for id in &ids {
                assert!(cache.get(*id).await.expect("hot get").is_none());
            }
            store.flush().await.expect("flush");
        }
        // A late writer of an older view changes nothing.
        let id = ids[0];
        store
            .apply(&[event(id, OrderStatus::Validated)])
            .await
            .expect("apply");
        store.flush().await.expect("flush");
        let older =
            EmbeddedOrderStore::new(Engine::open(&dir.path().join("late")).expect("engine"));
        let stale = older
            .apply(&[event(id, OrderStatus::Accepted)])
            .await
            .expect("apply");
        cache.put_all(&stale).await.expect("put");
        assert_eq!(
            cache.get(id).await.expect("hot get").map(|v| v.status),
            Some(OrderStatus::Validated),
            "clustered: {clustered}"
        );
    }
}
