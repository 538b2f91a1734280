//! One conformance body per store trait, run by one test per trait on every backend of that
//! trait's matrix: embedded (on an engine of its own), Redis on a `redis-server` of the test's
//! own, Redis on a one-node Redis Cluster of the test's own (which refuses any call whose keys
//! hash to two slots, so the suites show every script's keys share a hash tag), and ScyllaDB for
//! the order store when `SCYLLA_URI` is set. Each backend starts on fresh state and a failure
//! names it (`backend = NAME`). Checks of one backend alone set up the state they check.

use futures::FutureExt;
use orderflow_domain::OrderId;
use orderflow_domain::{Currency, Money};
use orderflow_storage::kv::Engine;
use orderflow_stores::embedded::{
    EmbeddedCoupons, EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore, EmbeddedOutbox,
    EmbeddedPaymentJournal, EmbeddedRefundLedger, EmbeddedStatusFeed, LocalRateLimiter,
};
use orderflow_stores::redis::{
    CachedOrderStore, RedisConfig, RedisCoupons, RedisHot, RedisIdempotency, RedisLedger,
    RedisOrderCache, RedisPaymentJournal, RedisRateLimiter, RedisRefundLedger, RedisStatusFeed,
};
use orderflow_stores::scylla::{ScyllaConfig, ScyllaOrderStore};
use orderflow_stores::{CancelOutcome, RefundAnswer, RefundClaim, RefundLedger};
use orderflow_stores::{
    Claim, CouponLedger, IdempotencyStore, OrderStore, Outbox, PaymentJournal, PinOutcome, Rate,
    RateLimiter, Redemption, ReserveOutcome, StatusFeed, StockLedger, Usage, UseLimits,
};
use orderflow_stores::{SkuQuantity, SkuStock};
use orderflow_testkit::RedisServer;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(900);

fn lines(items: &[(&str, u32)]) -> Vec<SkuQuantity> {
    items
        .iter()
        .map(|(s, q)| SkuQuantity::new(*s, *q))
        .collect()
}

async fn assert_balanced(ledger: &dyn StockLedger) {
    for level in ledger.levels().await.expect("levels") {
        assert!(level.balanced(), "invariant broken: {level:?}");
    }
}

/// Where one matrix's backends keep their state: a temporary directory with an engine of its
/// own for each embedded backend, and a `redis-server` and a one-node Redis Cluster of the
/// test's own, each started when first asked for. A new fixture is fresh state for every
/// backend; a matrix has at most one backend on each server.
struct Fixture {
    dir: tempfile::TempDir,
    engines: AtomicUsize,
    redis: OnceLock<RedisServer>,
    cluster: OnceLock<RedisServer>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            engines: AtomicUsize::new(0),
            redis: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// An embedded engine on a directory nothing else uses.
    fn engine(&self) -> Engine {
        let n = self.engines.fetch_add(1, Ordering::Relaxed);
        Engine::open(&self.dir.path().join(format!("engine-{n}"))).expect("engine")
    }

    /// A new connection to the test's own `redis-server`.
    async fn redis(&self) -> RedisHot {
        let server = self.redis.get_or_init(RedisServer::start);
        RedisHot::connect(RedisConfig::new(server.url()))
            .await
            .expect("connects to the test's redis-server")
    }

    /// A new connection to the test's own one-node Redis Cluster. Redis Cluster refuses a call
    /// whose keys hash to two slots (CROSSSLOT): a suite passing on it shows the keys of every
    /// call share their hash tag. The keys a script derives itself (a hold's stock keys) are
    /// built from the same `{wh}:` prefix.
    async fn cluster(&self) -> RedisHot {
        let server = self.cluster.get_or_init(RedisServer::start_cluster);
        RedisHot::connect(RedisConfig::new(server.cluster_url()))
            .await
            .expect("connects to the one-node cluster")
    }
}

/// The backends of one trait, by name.
type Matrix<T> = Vec<(&'static str, Arc<T>)>;

/// Runs `body` on every backend of `matrix`, one after the other and each to its end, then fails
/// naming every backend that failed (`backend = NAME`) with its panic message.
async fn on_each<T, F, Fut>(suite: &str, matrix: Matrix<T>, body: F)
where
    T: ?Sized,
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    assert!(!matrix.is_empty(), "{suite}: no backend to run on");
    let mut failed = Vec::new();
    for (name, backend) in matrix {
        eprintln!("{suite}: backend = {name}");
        if let Err(panic) = AssertUnwindSafe(body(backend)).catch_unwind().await {
            failed.push(format!(
                "backend = {name}: {}",
                panic_message(panic.as_ref())
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{suite} failed on {} backend(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)")
}

/// Every [`StockLedger`]: embedded, Redis, Redis Cluster.
async fn ledgers(fx: &Fixture) -> Matrix<dyn StockLedger> {
    vec![
        (
            "embedded",
            Arc::new(EmbeddedLedger::open(fx.engine()).expect("ledger")),
        ),
        ("redis", Arc::new(RedisLedger::new(fx.redis().await))),
        (
            "redis-cluster",
            Arc::new(RedisLedger::new(fx.cluster().await)),
        ),
    ]
}

/// Every [`IdempotencyStore`]: embedded, Redis, Redis Cluster.
async fn idempotency_stores(fx: &Fixture) -> Matrix<dyn IdempotencyStore> {
    vec![
        ("embedded", Arc::new(EmbeddedIdempotency::new(fx.engine()))),
        ("redis", Arc::new(RedisIdempotency::new(fx.redis().await))),
        (
            "redis-cluster",
            Arc::new(RedisIdempotency::new(fx.cluster().await)),
        ),
    ]
}

/// Every [`OrderStore`]: embedded, Redis (server and cluster) hot views over an embedded store,
/// and ScyllaDB when `SCYLLA_URI` is set.
async fn order_stores(fx: &Fixture) -> Matrix<dyn OrderStore> {
    let mut matrix: Matrix<dyn OrderStore> = vec![
        ("embedded", Arc::new(EmbeddedOrderStore::new(fx.engine()))),
        (
            "redis-cached",
            Arc::new(CachedOrderStore::new(
                RedisOrderCache::new(fx.redis().await),
                Arc::new(EmbeddedOrderStore::new(fx.engine())),
            )),
        ),
        (
            "redis-cluster-cached",
            Arc::new(CachedOrderStore::new(
                RedisOrderCache::new(fx.cluster().await),
                Arc::new(EmbeddedOrderStore::new(fx.engine())),
            )),
        ),
    ];
    if let Some(config) = scylla_config() {
        let store = ScyllaOrderStore::connect(&config).await.expect("connects");
        matrix.push(("scylla", Arc::new(store)));
    }
    matrix
}

/// A keyspace of its own on the ScyllaDB at `SCYLLA_URI`, if that is set. No ScyllaDB can be
/// installed on the development machines; the suites run wherever one is reachable:
/// `SCYLLA_URI=scylla://127.0.0.1:9042 cargo test -p orderflow-stores --test conformance -- order_store scylla`
fn scylla_config() -> Option<ScyllaConfig> {
    let Ok(uri) = std::env::var("SCYLLA_URI") else {
        eprintln!(
            "SKIPPED ScyllaDB: SCYLLA_URI is not set (start one with \
             `docker run -p 9042:9042 scylladb/scylla --smp 1 --developer-mode 1`)"
        );
        return None;
    };
    // A fresh keyspace per call.
    let base = uri.split('/').take(3).collect::<Vec<_>>().join("/");
    let keyspace = format!("orderflow_test_{}", OrderId::new().0.simple());
    Some(ScyllaConfig::from_url(&format!("{base}/{keyspace}")).expect("valid URI"))
}

/// Every [`Outbox`]: embedded.
fn outboxes(fx: &Fixture) -> Matrix<dyn Outbox> {
    vec![("embedded", Arc::new(EmbeddedOutbox::new(fx.engine())))]
}

/// Every [`PaymentJournal`]: embedded, Redis, Redis Cluster.
async fn payment_journals(fx: &Fixture) -> Matrix<dyn PaymentJournal> {
    vec![
        (
            "embedded",
            Arc::new(EmbeddedPaymentJournal::new(fx.engine())),
        ),
        (
            "redis",
            Arc::new(RedisPaymentJournal::new(fx.redis().await)),
        ),
        (
            "redis-cluster",
            Arc::new(RedisPaymentJournal::new(fx.cluster().await)),
        ),
    ]
}

/// Every [`StatusFeed`]: embedded, Redis.
async fn status_feeds(fx: &Fixture) -> Matrix<dyn StatusFeed> {
    vec![
        ("embedded", Arc::new(EmbeddedStatusFeed::new(16))),
        ("redis", {
            let (feed, tasks) = RedisStatusFeed::connect(fx.redis().await)
                .await
                .expect("feed");
            tokio::spawn(tasks);
            Arc::new(feed)
        }),
    ]
}

/// Every [`CouponLedger`]: embedded, Redis, Redis Cluster.
async fn coupon_ledgers(fx: &Fixture) -> Matrix<dyn CouponLedger> {
    vec![
        ("embedded", Arc::new(EmbeddedCoupons::new(fx.engine()))),
        ("redis", Arc::new(RedisCoupons::new(fx.redis().await))),
        (
            "redis-cluster",
            Arc::new(RedisCoupons::new(fx.cluster().await)),
        ),
    ]
}

/// Every [`RateLimiter`]: in-process, Redis, Redis Cluster.
async fn rate_limiters(fx: &Fixture) -> Matrix<dyn RateLimiter> {
    vec![
        ("local", Arc::new(LocalRateLimiter::new())),
        ("redis", Arc::new(RedisRateLimiter::new(fx.redis().await))),
        (
            "redis-cluster",
            Arc::new(RedisRateLimiter::new(fx.cluster().await)),
        ),
    ]
}

#[tokio::test]
async fn every_ledger_conforms() {
    let fx = Fixture::new();
    on_each("ledger_conformance", ledgers(&fx).await, ledger_conformance).await;
}

#[tokio::test]
async fn every_ledger_decides_cancels_once() {
    let fx = Fixture::new();
    on_each("cancel_conformance", ledgers(&fx).await, cancel_conformance).await;
}

/// Every [`RefundLedger`]: embedded, Redis, Redis Cluster.
async fn refund_ledgers(fx: &Fixture) -> Matrix<dyn RefundLedger> {
    vec![
        ("embedded", Arc::new(EmbeddedRefundLedger::new(fx.engine()))),
        ("redis", Arc::new(RedisRefundLedger::new(fx.redis().await))),
        (
            "redis-cluster",
            Arc::new(RedisRefundLedger::new(fx.cluster().await)),
        ),
    ]
}

#[tokio::test]
async fn every_refund_ledger_conforms() {
    let fx = Fixture::new();
    on_each(
        "refund_conformance",
        refund_ledgers(&fx).await,
        refund_conformance,
    )
    .await;
}

/// A cancel and the ship step (or a refusal) are decided by the ledger: the first stands, a
/// cancel releases held stock once, and every later step sees it.
async fn cancel_conformance(ledger: Arc<dyn StockLedger>) {
    ledger
        .seed(&[SkuStock::new("K", 10), SkuStock::new("R", 40)])
        .await
        .expect("seed");
    let level = |l: Arc<dyn StockLedger>| async move {
        let k = l.level("K").await.expect("level").expect("exists");
        (k.available, k.reserved, k.committed)
    };
    // Before any reservation: marked; the reservation is refused and holds nothing.
    let early = OrderId::new();
    assert_eq!(
        ledger.cancel(early).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        ledger.cancel(early).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert!(ledger.cancelled(early).await.expect("cancelled"));
    assert_eq!(
        ledger
            .reserve(early, &lines(&[("K", 2)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Cancelled
    );
    assert!(
        !ledger.refuse(early).await.expect("refuse"),
        "cancelled first"
    );
    assert_eq!(level(ledger.clone()).await, (10, 0, 0));

    // Held, pinned (a charge under way): the cancel releases the stock once.
    let held = OrderId::new();
    ledger
        .reserve(held, &lines(&[("K", 3)]), TTL)
        .await
        .expect("reserve");
    assert_eq!(ledger.pin(held).await.expect("pin"), PinOutcome::Pinned);
    assert_eq!(level(ledger.clone()).await, (7, 3, 0));
    assert_eq!(
        ledger.cancel(held).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        ledger.cancel(held).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert_eq!(level(ledger.clone()).await, (10, 0, 0));
    assert_eq!(ledger.pin(held).await.expect("pin"), PinOutcome::Cancelled);
    assert!(
        !ledger.commit(held).await.expect("commit"),
        "a cancelled order never ships"
    );
    assert!(
        ledger.release(held).await.expect("release"),
        "its stock is back"
    );
    assert_eq!(
        ledger
            .reserve(held, &lines(&[("K", 3)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Cancelled
    );
    assert!(ledger.cancelled(held).await.expect("cancelled"));
    assert_eq!(level(ledger.clone()).await, (10, 0, 0));

    // Shipped first: too late.
    let shipped = OrderId::new();
    ledger
        .reserve(shipped, &lines(&[("K", 1)]), TTL)
        .await
        .expect("reserve");
    assert!(ledger.commit(shipped).await.expect("commit"));
    assert_eq!(
        ledger.cancel(shipped).await.expect("cancel"),
        CancelOutcome::Shipped
    );
    assert!(!ledger.cancelled(shipped).await.expect("cancelled"));
    assert_eq!(level(ledger.clone()).await, (9, 0, 1));

    // Refused first: short of stock, released by a rejection, or refused before reserving.
    let short = OrderId::new();
    assert!(matches!(
        ledger
            .reserve(short, &lines(&[("K", 99)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Short(_)
    ));
    let declined = OrderId::new();
    ledger
        .reserve(declined, &lines(&[("K", 1)]), TTL)
        .await
        .expect("reserve");
    assert!(ledger.release(declined).await.expect("release"));
    let invalid = OrderId::new();
    assert!(ledger.refuse(invalid).await.expect("refuse"));
    assert!(ledger.refuse(invalid).await.expect("refuse"), "a repeat");
    for order in [short, declined, invalid] {
        assert_eq!(
            ledger.cancel(order).await.expect("cancel"),
            CancelOutcome::Rejected
        );
        assert!(!ledger.cancelled(order).await.expect("cancelled"));
    }
    assert_eq!(level(ledger.clone()).await, (9, 0, 1));

    // Racing: each order is decided once, either way, and the stock adds up.
    let racing: Vec<OrderId> = (0..40).map(|_| OrderId::new()).collect();
    for order in &racing {
        ledger
            .reserve(*order, &lines(&[("R", 1)]), TTL)
            .await
            .expect("reserve");
    }
    let tasks: Vec<_> = racing
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let (ledger, order) = (ledger.clone(), *order);
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let shipped = ledger.commit(order).await.expect("commit");
                    let cancel = ledger.cancel(order).await.expect("cancel");
                    (shipped, cancel)
                } else {
                    let cancel = ledger.cancel(order).await.expect("cancel");
                    let shipped = ledger.commit(order).await.expect("commit");
                    (shipped, cancel)
                }
            })
        })
        .collect();
    let mut shipped_count = 0;
    for task in tasks {
        let (shipped, cancel) = task.await.expect("joins");
        assert_ne!(
            shipped,
            cancel == CancelOutcome::Cancelled,
            "exactly one of the two"
        );
        shipped_count += u64::from(shipped);
    }
    let r = ledger.level("R").await.expect("level").expect("exists");
    assert_eq!(
        (r.available, r.reserved, r.committed),
        (40 - shipped_count, 0, shipped_count)
    );
}

/// Refunds count against the capture once per key and never past it; a failed one is given
/// back once.
async fn refund_conformance(refunds: Arc<dyn RefundLedger>) {
    let usd = Currency::parse("USD").expect("valid");
    let order = OrderId::new();
    let claim = |key: &str, amount: Option<i64>| RefundClaim {
        key: key.to_owned(),
        refund_id: format!("rf_{key}"),
        amount: amount.map(|m| Money::new(m, usd)),
        reason: "test".to_owned(),
        captured: Money::new(1000, usd),
    };
    let accepted = |answer: RefundAnswer| match answer {
        RefundAnswer::Accepted(entry) => entry,
        other => panic!("expected an accepted refund, got {other:?}"),
    };
    let first = accepted(
        refunds
            .request(order, claim("a", Some(300)))
            .await
            .expect("request"),
    );
    assert_eq!(
        (first.refund_id.as_str(), first.amount.minor),
        ("rf_a", 300)
    );
    // The same key again, whatever it says now: the first refund.
    assert_eq!(
        refunds
            .request(order, claim("a", Some(999)))
            .await
            .expect("request"),
        RefundAnswer::Repeat(first.clone())
    );
    accepted(
        refunds
            .request(order, claim("b", Some(600)))
            .await
            .expect("request"),
    );
    assert_eq!(
        refunds
            .request(order, claim("c", Some(101)))
            .await
            .expect("request"),
        RefundAnswer::Exceeds {
            refunded: Money::new(900, usd)
        }
    );
    // The rest, for a cancellation: what is left.
    let rest = accepted(
        refunds
            .request(order, claim("cancel", None))
            .await
            .expect("request"),
    );
    assert_eq!(rest.amount.minor, 100);
    assert_eq!(
        refunds
            .request(order, claim("again", None))
            .await
            .expect("request"),
        RefundAnswer::Nothing
    );
    // A refused refund gives its amount back, once; it can then be asked for again.
    assert!(refunds.fail(order, "rf_b").await.expect("fail"));
    assert!(!refunds.fail(order, "rf_b").await.expect("fail"));
    assert!(!refunds.fail(order, "rf_unknown").await.expect("fail"));
    accepted(
        refunds
            .request(order, claim("d", Some(600)))
            .await
            .expect("request"),
    );
    let other = OrderId::new();
    accepted(
        refunds
            .request(other, claim("a", Some(1000)))
            .await
            .expect("request"),
    );
    let totals = refunds.totals().await.expect("totals");
    assert!(totals.contains(&(order, 1000)), "{totals:?}");
    assert!(totals.contains(&(other, 1000)), "{totals:?}");
    // Racing claims of one order never pass the capture together.
    let racer = OrderId::new();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let refunds = refunds.clone();
            let claim = claim(&format!("r{i}"), Some(100));
            tokio::spawn(async move { refunds.request(racer, claim).await.expect("request") })
        })
        .collect();
    let mut counted = 0;
    for task in tasks {
        if matches!(task.await.expect("joins"), RefundAnswer::Accepted(_)) {
            counted += 1;
        }
    }
    assert_eq!(counted, 10, "ten of 100 fill a capture of 1000");
}

#[tokio::test]
async fn every_idempotency_store_conforms() {
    let fx = Fixture::new();
    on_each(
        "idempotency_conformance",
        idempotency_stores(&fx).await,
        idempotency_conformance,
    )
    .await;
}

#[tokio::test]
async fn every_order_store_conforms() {
    // Each body on fresh backends: the history pages must not meet the fold's order.
    let fx = Fixture::new();
    on_each(
        "order_store_conformance",
        order_stores(&fx).await,
        order_store_conformance,
    )
    .await;
    let fx = Fixture::new();
    on_each(
        "history_conformance",
        order_stores(&fx).await,
        history_conformance,
    )
    .await;
}

#[tokio::test]
async fn every_outbox_conforms() {
    let fx = Fixture::new();
    on_each("outbox_conformance", outboxes(&fx), outbox_conformance).await;
}

#[tokio::test]
async fn every_payment_journal_conforms() {
    let fx = Fixture::new();
    on_each(
        "payment_journal_conformance",
        payment_journals(&fx).await,
        payment_journal_conformance,
    )
    .await;
}

#[tokio::test]
async fn every_status_feed_conforms() {
    let fx = Fixture::new();
    on_each(
        "status_feed_conformance",
        status_feeds(&fx).await,
        status_feed_conformance,
    )
    .await;
}

#[tokio::test]
async fn every_coupon_ledger_conforms() {
    let fx = Fixture::new();
    on_each(
        "coupon_conformance",
        coupon_ledgers(&fx).await,
        coupon_conformance,
    )
    .await;
}

#[tokio::test]
async fn every_rate_limiter_conforms() {
    let fx = Fixture::new();
    on_each(
        "rate_limit_conformance",
        rate_limiters(&fx).await,
        rate_limit_conformance,
    )
    .await;
}

/// The behaviour every [`StockLedger`] must have.
async fn ledger_conformance(ledger: Arc<dyn StockLedger>) {
    let seeded = ledger
        .seed(&[SkuStock::new("A", 10), SkuStock::new("B", 2)])
        .await
        .expect("seed");
    assert_eq!(seeded, 2);
    assert_eq!(
        ledger
            .seed(&[SkuStock::new("A", 99), SkuStock::new("C", 5)])
            .await
            .expect("seed"),
        1,
        "existing SKUs keep their levels"
    );
    assert_eq!(
        ledger.level("A").await.expect("level").map(|l| l.available),
        Some(10)
    );

    // All or nothing: B is short, so A is not touched either.
    let o1 = OrderId::new();
    let outcome = ledger
        .reserve(o1, &lines(&[("A", 3), ("B", 3)]), TTL)
        .await
        .expect("reserve");
    let ReserveOutcome::Short(short) = outcome.clone() else {
        panic!("expected a shortage, got {outcome:?}")
    };
    assert_eq!(short.len(), 1);
    assert_eq!(
        (
            short[0].sku.as_str(),
            short[0].requested,
            short[0].available
        ),
        ("B", 3, 2)
    );
    assert_eq!(
        ledger.level("A").await.expect("level").map(|l| l.available),
        Some(10)
    );
    assert_eq!(
        ledger
            .reserve(o1, &lines(&[("A", 1)]), TTL)
            .await
            .expect("reserve"),
        outcome,
        "a repeat returns the first answer"
    );

    // Unknown SKUs are short with zero available.
    let unknown = ledger
        .reserve(OrderId::new(), &lines(&[("NOPE", 1)]), TTL)
        .await
        .expect("reserve");
    assert!(matches!(unknown, ReserveOutcome::Short(ref s) if s[0].available == 0));

    // Lines of one SKU add up; a repeat changes nothing.
    let o2 = OrderId::new();
    assert_eq!(
        ledger
            .reserve(o2, &lines(&[("A", 2), ("A", 2), ("B", 2)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    assert_eq!(
        ledger
            .reserve(o2, &lines(&[("A", 2), ("A", 2), ("B", 2)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved, a.committed), (6, 4, 0));
    assert_balanced(ledger.as_ref()).await;

    // Release is idempotent and returns the stock; a released hold cannot be committed.
    assert!(ledger.release(o2).await.expect("release"));
    assert!(ledger.release(o2).await.expect("release"));
    assert!(!ledger.commit(o2).await.expect("commit"));
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved), (10, 0));

    // Commit is idempotent; a committed hold cannot be released.
    let o3 = OrderId::new();
    assert_eq!(
        ledger
            .reserve(o3, &lines(&[("B", 2)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    assert!(ledger.commit(o3).await.expect("commit"));
    assert!(ledger.commit(o3).await.expect("commit"));
    assert!(!ledger.release(o3).await.expect("release"));
    let b = ledger.level("B").await.expect("level").expect("exists");
    assert_eq!((b.available, b.reserved, b.committed), (0, 0, 2));
    assert!(
        !ledger.release(OrderId::new()).await.expect("release"),
        "no hold, nothing to release"
    );

    // Admin restock keeps the invariant.
    let b = ledger.set_available("B", 5).await.expect("set");
    assert_eq!((b.initial, b.available, b.committed), (7, 5, 2));
    assert_balanced(ledger.as_ref()).await;

    // No oversell under concurrency: 500 single-unit orders for 50 units.
    ledger.set_available("HOT", 50).await.expect("set");
    let attempts = (0..500).map(|_| {
        let ledger = Arc::clone(&ledger);
        tokio::spawn(async move {
            ledger
                .reserve(OrderId::new(), &lines(&[("HOT", 1)]), TTL)
                .await
        })
    });
    let mut reserved = 0;
    for attempt in attempts {
        if attempt.await.expect("joins").expect("reserve") == ReserveOutcome::Reserved {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 50);
    let hot = ledger.level("HOT").await.expect("level").expect("exists");
    assert_eq!((hot.available, hot.reserved), (0, 50));
    assert_balanced(ledger.as_ref()).await;

    // Multi-line orders never half-reserve: 100 two-line orders and 50 one-line orders race for
    // 30 units of each SKU.
    ledger.set_available("M1", 30).await.expect("set");
    ledger.set_available("M2", 30).await.expect("set");
    let attempts = (0..150).map(|i| {
        let ledger = Arc::clone(&ledger);
        let order_lines = if i % 3 == 2 {
            lines(&[("M1", 1)])
        } else {
            lines(&[("M2", 1), ("M1", 1)])
        };
        tokio::spawn(async move {
            let outcome = ledger.reserve(OrderId::new(), &order_lines, TTL).await;
            (order_lines.len(), outcome)
        })
    });
    let (mut pairs, mut singles) = (0, 0);
    for attempt in attempts {
        let (len, outcome) = attempt.await.expect("joins");
        if outcome.expect("reserve") == ReserveOutcome::Reserved {
            if len == 2 {
                pairs += 1;
            } else {
                singles += 1;
            }
        }
    }
    let m1 = ledger.level("M1").await.expect("level").expect("exists");
    let m2 = ledger.level("M2").await.expect("level").expect("exists");
    assert_eq!(m1.reserved, pairs + singles);
    assert_eq!(m2.reserved, pairs);
    assert_eq!(m1.available, 0, "M1 is the scarcer SKU and must sell out");
    assert_balanced(ledger.as_ref()).await;

    expiry_conformance(ledger.as_ref()).await;
}

/// Expiry and pinning, part of every [`StockLedger`]'s behaviour.
async fn expiry_conformance(ledger: &dyn StockLedger) {
    ledger.set_available("E", 10).await.expect("set");
    let now = chrono::Utc::now();
    let lapsing = Duration::from_millis(1);
    let (due, pinned, shipped, fresh) = (
        OrderId::new(),
        OrderId::new(),
        OrderId::new(),
        OrderId::new(),
    );
    for order in [due, pinned, shipped] {
        assert_eq!(
            ledger
                .reserve(order, &lines(&[("E", 1)]), lapsing)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }
    assert_eq!(
        ledger
            .reserve(fresh, &lines(&[("E", 1)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    assert_eq!(ledger.pin(pinned).await.expect("pin"), PinOutcome::Pinned);
    assert_eq!(ledger.pin(pinned).await.expect("pin"), PinOutcome::Pinned);
    assert!(ledger.commit(shipped).await.expect("commit"));
    assert_eq!(ledger.pin(shipped).await.expect("pin"), PinOutcome::Pinned);
    assert_eq!(
        ledger.pin(OrderId::new()).await.expect("pin"),
        PinOutcome::Missing
    );
    // Pinned, then released (a declined charge): a repeat learns a charge was decided.
    let declined = OrderId::new();
    ledger
        .reserve(declined, &lines(&[("E", 1)]), lapsing)
        .await
        .expect("reserve");
    assert_eq!(ledger.pin(declined).await.expect("pin"), PinOutcome::Pinned);
    assert!(ledger.release(declined).await.expect("release"));
    assert_eq!(
        ledger.pin(declined).await.expect("pin"),
        PinOutcome::Released
    );
    // Released without a pin (compensation before the charge): nothing was decided.
    let unpriced = OrderId::new();
    ledger
        .reserve(unpriced, &lines(&[("E", 1)]), TTL)
        .await
        .expect("reserve");
    assert!(ledger.release(unpriced).await.expect("release"));
    assert_eq!(
        ledger.pin(unpriced).await.expect("pin"),
        PinOutcome::Missing
    );

    let soon = now + chrono::Duration::seconds(1);
    assert_eq!(
        ledger.expire_due(soon, 100).await.expect("expire"),
        vec![due]
    );
    let e = ledger.level("E").await.expect("level").expect("exists");
    assert_eq!((e.available, e.reserved, e.committed), (7, 2, 1));
    // Until acknowledged, the expiry is reported again (a crashed sweeper must not lose it);
    // nothing is released twice.
    assert_eq!(
        ledger.expire_due(soon, 100).await.expect("expire"),
        vec![due]
    );
    assert_eq!(ledger.level("E").await.expect("level"), Some(e.clone()));
    assert_eq!(ledger.pin(due).await.expect("pin"), PinOutcome::Expired);
    assert!(
        ledger.release(due).await.expect("release"),
        "expired is released"
    );
    assert!(!ledger.commit(due).await.expect("commit"));
    assert_eq!(
        ledger
            .reserve(due, &lines(&[("E", 1)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved,
        "a redelivered reserve gets the first answer and holds nothing again"
    );
    assert_eq!(ledger.level("E").await.expect("level"), Some(e));
    ledger.acknowledge_expired(&[due]).await.expect("ack");
    assert!(
        ledger
            .expire_due(soon, 100)
            .await
            .expect("expire")
            .is_empty()
    );

    // Far enough ahead every unpinned hold lapses (the earlier sections' too); pinned and
    // committed holds never do.
    let later = now + chrono::Duration::days(1);
    let lapsed = ledger.expire_due(later, 1000).await.expect("expire");
    assert!(lapsed.contains(&fresh));
    assert!(!lapsed.contains(&pinned) && !lapsed.contains(&shipped));
    ledger.acknowledge_expired(&lapsed).await.expect("ack");
    assert!(
        ledger
            .expire_due(later, 1000)
            .await
            .expect("expire")
            .is_empty()
    );
    for sku in ["HOT", "M1", "M2"] {
        let level = ledger.level(sku).await.expect("level").expect("exists");
        assert_eq!(level.reserved, 0, "{sku}: every hold lapsed");
    }
    let e = ledger.level("E").await.expect("level").expect("exists");
    assert_eq!((e.available, e.reserved, e.committed), (8, 1, 1));
    assert!(ledger.commit(pinned).await.expect("commit"));
    assert_balanced(ledger).await;

    // A zero-unit line holds nothing and breaks nothing (Lua must not send HINCRBY "-0").
    let before = ledger.level("E").await.expect("level");
    let nothing = OrderId::new();
    assert_eq!(
        ledger
            .reserve(nothing, &lines(&[("E", 0)]), TTL)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    assert!(ledger.release(nothing).await.expect("release"));
    assert_eq!(ledger.level("E").await.expect("level"), before);
}

/// The behaviour every [`IdempotencyStore`] must have.
async fn idempotency_conformance(store: Arc<dyn IdempotencyStore>) {
    let pending = Duration::from_secs(30);
    let id = OrderId::new();
    assert_eq!(
        store.claim("k1", "fp", id, pending).await.expect("claim"),
        Claim::Claimed { order_id: id }
    );
    let again = store
        .claim("k1", "other", OrderId::new(), pending)
        .await
        .expect("claim");
    assert_eq!(
        again,
        Claim::Existing {
            fingerprint: "fp".into(),
            order_id: id,
            complete: false
        }
    );
    // Completing with another order id (a stale request) changes nothing.
    store
        .complete("k1", OrderId::new(), Duration::from_secs(60))
        .await
        .expect("complete");
    assert!(matches!(
        store
            .claim("k1", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Existing {
            complete: false,
            ..
        }
    ));
    store
        .complete("k1", id, Duration::from_secs(60))
        .await
        .expect("complete");
    let done = store
        .claim("k1", "fp", OrderId::new(), pending)
        .await
        .expect("claim");
    assert_eq!(
        done,
        Claim::Existing {
            fingerprint: "fp".into(),
            order_id: id,
            complete: true
        }
    );

    // An abandoned claim is taken over at once by the same request, with the same order id;
    // another body still may not use the key.
    let id2 = OrderId::new();
    assert_eq!(
        store.claim("k2", "fp", id2, pending).await.expect("claim"),
        Claim::Claimed { order_id: id2 }
    );
    store.abandon("k2", id2).await.expect("abandon");
    assert!(matches!(
        store
            .claim("k2", "other", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Existing { .. }
    ));
    assert_eq!(
        store
            .claim("k2", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: id2 }
    );

    // A lapsed pending claim is taken over with its own order id too.
    let id3 = OrderId::new();
    assert_eq!(
        store
            .claim("k3", "fp", id3, Duration::from_millis(20))
            .await
            .expect("claim"),
        Claim::Claimed { order_id: id3 }
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        store
            .claim("k3", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: id3 }
    );

    // A completed key past its TTL is free for a new order.
    let id4 = OrderId::new();
    store.claim("k4", "fp", id4, pending).await.expect("claim");
    store
        .complete("k4", id4, Duration::from_millis(20))
        .await
        .expect("complete");
    tokio::time::sleep(Duration::from_millis(40)).await;
    let fresh = OrderId::new();
    assert_eq!(
        store
            .claim("k4", "fp", fresh, pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: fresh }
    );
}

fn event(
    id: OrderId,
    status: orderflow_domain::OrderStatus,
    ms: i64,
) -> orderflow_domain::OrderEvent {
    let request: orderflow_domain::CheckoutRequest = serde_json::from_str(
        r#"{"currency":"USD","lines":[{"sku":"A","quantity":1}],"shipping_address":{"name":"Ada",
        "line1":"1 Main","city":"SF","postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
    )
    .expect("valid body");
    let at = chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + ms).expect("valid time");
    let order = orderflow_domain::Order::from_checkout(id, "c1".into(), request, at);
    orderflow_domain::OrderEvent { status, at, order }
}

/// The behaviour every [`OrderStore`] must have: an idempotent, order-insensitive fold.
async fn order_store_conformance(store: Arc<dyn OrderStore>) {
    use orderflow_domain::OrderStatus::*;
    let id = OrderId::new();
    let chain: Vec<_> = [
        Accepted, Validated, Reserved, Priced, Charged, Shipped, Completed,
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| event(id, *s, i as i64))
    .collect();
    // Late, shuffled and duplicated: the same final view as in order.
    let mut shuffled = chain.clone();
    shuffled.reverse();
    shuffled.extend(chain.iter().cloned());
    assert_eq!(
        store
            .apply(&shuffled)
            .await
            .expect("apply")
            .last()
            .map(|v| v.status),
        Some(Completed)
    );
    let view = store.get(id).await.expect("get").expect("exists");
    assert_eq!(view.status, Completed);
    assert_eq!(view.timeline.len(), 7);
    assert!(
        store.apply(&chain).await.expect("apply").is_empty(),
        "duplicates change nothing"
    );
    assert!(store.get(OrderId::new()).await.expect("get").is_none());
    store.flush().await.expect("flush");
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(Completed),
        "a flush changes nothing a reader sees"
    );
}

/// Paging through one customer's history: newest first, no gaps or repeats, nobody else's.
async fn history_conformance(store: Arc<dyn OrderStore>) {
    use orderflow_domain::OrderStatus::Accepted;
    let mut mine = Vec::new();
    let mut batch = Vec::new();
    for i in 0..290 {
        let id = OrderId::new();
        let mut e = event(id, Accepted, i);
        // Another customer's orders are minted in between.
        e.order.customer_id = if i % 9 == 4 || mine.len() == 250 {
            "someone-else".into()
        } else {
            mine.push(id);
            "pager".into()
        };
        batch.push(e);
    }
    // Projected out of order, in a few writes; the first two flushed, the rest maybe only in
    // memory (a store that buffers must page through both).
    batch.reverse();
    for (i, chunk) in batch.chunks(70).enumerate() {
        store.apply(chunk).await.expect("apply");
        if i == 1 {
            store.flush().await.expect("flush");
        }
    }
    assert_eq!(mine.len(), 250);
    page_through(store.as_ref(), &mine).await;
    store.flush().await.expect("flush");
    page_through(store.as_ref(), &mine).await;
}

/// Pages through `pager`'s orders (`mine`) by 100 and checks every one comes once, newest first.
async fn page_through(store: &dyn OrderStore, mine: &[OrderId]) {
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_for_customer("pager", 100, after)
            .await
            .expect("page");
        pages += 1;
        assert!(page.orders.len() <= 100);
        assert!(page.orders.iter().all(|v| v.customer_id == "pager"));
        seen.extend(page.orders.iter().map(|v| v.order_id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3, "pages of 100, 100 and 50");
    let mut newest_first = mine.to_vec();
    newest_first.sort_by_key(|id| std::cmp::Reverse(id.0));
    assert_eq!(seen, newest_first, "every order once, newest first");
    assert!(
        store
            .list_for_customer("nobody", 100, None)
            .await
            .expect("page")
            .orders
            .is_empty()
    );
    let exact = store
        .list_for_customer("pager", 250, None)
        .await
        .expect("page");
    assert_eq!((exact.orders.len(), exact.next), (250, None));
}

/// The behaviour every [`Outbox`] must have: one message per key, due at once, retried when
/// told, delivered ones purged after their time, listed newest first.
async fn outbox_conformance(outbox: Arc<dyn Outbox>) {
    use chrono::{Duration as Span, Utc};
    use orderflow_stores::{Attempt, DeliveryState, Listing, NewMessage, Next, Tried};
    let (a, b) = (OrderId::new(), OrderId::new());
    let message = |order: OrderId, event: &str, to: &str| NewMessage {
        key: format!("{order}:{event}:{to}"),
        order_id: order,
        event: event.into(),
        destination: to.into(),
        payload: format!("{{\"order\":\"{order}\"}}"),
    };
    let written = outbox
        .enqueue(vec![
            message(a, "order.completed", "shop"),
            message(a, "order.completed", "shop"),
            message(a, "order_shipped", "mail"),
        ])
        .await
        .expect("enqueue");
    assert_eq!(written, 2, "one message per key, within a batch too");
    assert_eq!(
        outbox
            .enqueue(vec![
                message(a, "order.completed", "shop"),
                message(b, "order.rejected", "shop")
            ])
            .await
            .expect("enqueue"),
        1,
        "and across batches"
    );
    assert_eq!(outbox.count().await.expect("count"), 3);

    let now = Utc::now();
    let due = outbox.due(now + Span::seconds(1), 10).await.expect("due");
    assert_eq!(due.len(), 3);
    assert!(
        due.iter()
            .all(|d| d.state == DeliveryState::Pending && d.id.starts_with("msg_"))
    );
    assert_eq!(
        outbox
            .due(now + Span::seconds(1), 2)
            .await
            .expect("due")
            .len(),
        2
    );
    let first = due
        .iter()
        .find(|d| d.order_id == a && d.destination == "shop")
        .expect("a's webhook");

    // A failed try moves it later; a delivery takes it off the due list for good.
    let attempt = |status: Option<u16>| Attempt {
        at: now,
        status,
        error: None,
        millis: 3,
    };
    let tried = |id: &str, attempt: Attempt, next: Next| {
        vec![Tried {
            id: id.to_owned(),
            attempt,
            next,
        }]
    };
    assert_eq!(
        outbox
            .record(tried(
                &first.id,
                attempt(Some(500)),
                Next::RetryAt(now + Span::minutes(5))
            ))
            .await
            .expect("record"),
        1
    );
    let soon = outbox.due(now + Span::seconds(1), 10).await.expect("due");
    assert!(
        soon.iter().all(|d| d.id != first.id),
        "not due before its retry"
    );
    let later = outbox.due(now + Span::minutes(6), 10).await.expect("due");
    assert!(later.iter().any(|d| d.id == first.id));
    outbox
        .record(tried(&first.id, attempt(Some(204)), Next::Delivered))
        .await
        .expect("record");
    let got = outbox.get(&first.id).await.expect("get").expect("kept");
    assert_eq!(got.state, DeliveryState::Delivered);
    assert_eq!(got.attempts.len(), 2);
    assert_eq!(got.attempts[0].status, Some(500));
    assert_eq!(got.delivered_at, Some(now));
    assert!(
        outbox
            .due(now + Span::days(1), 10)
            .await
            .expect("due")
            .iter()
            .all(|d| d.id != first.id)
    );
    assert_eq!(
        outbox
            .record(tried("msg_none", attempt(None), Next::GiveUp))
            .await
            .expect("record"),
        0
    );

    // Given up: listed as failed; a retry makes it pending and due again.
    let other = due.iter().find(|d| d.order_id == b).expect("b's webhook");
    outbox
        .record(tried(&other.id, attempt(None), Next::GiveUp))
        .await
        .expect("record");
    let failed = outbox
        .list(&Listing {
            state: Some(DeliveryState::Failed),
            limit: 10,
            ..Listing::default()
        })
        .await
        .expect("list");
    assert_eq!(
        failed.iter().map(|d| &d.id).collect::<Vec<_>>(),
        [&other.id]
    );
    let retried = outbox
        .retry(&other.id, now)
        .await
        .expect("retry")
        .expect("found");
    assert_eq!(retried.state, DeliveryState::Pending);
    assert!(
        outbox
            .due(now, 10)
            .await
            .expect("due")
            .iter()
            .any(|d| d.id == other.id)
    );
    assert_eq!(outbox.retry("msg_none", now).await.expect("retry"), None);

    // Newest first, a page at a time, by order.
    let all = outbox
        .list(&Listing {
            limit: 10,
            ..Listing::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let page = outbox
        .list(&Listing {
            limit: 10,
            before: Some(all[0].id.clone()),
            ..Listing::default()
        })
        .await
        .expect("list");
    assert_eq!(page, all[1..]);
    let of_b = outbox
        .list(&Listing {
            order_id: Some(b),
            limit: 10,
            ..Listing::default()
        })
        .await
        .expect("list");
    assert_eq!(of_b.len(), 1);

    // Delivered messages go after their retention, keys with them; the rest stay.
    assert_eq!(
        outbox
            .purge_delivered(now - Span::seconds(1), 10)
            .await
            .expect("purge"),
        0
    );
    assert_eq!(
        outbox
            .purge_delivered(now + Span::seconds(1), 10)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(outbox.count().await.expect("count"), 2);
    assert_eq!(outbox.get(&first.id).await.expect("get"), None);
    // A pass takes at most its limit, the longest delivered first.
    let mail = due
        .iter()
        .find(|d| d.destination == "mail")
        .expect("a's email");
    for (id, after) in [(&other.id, 2), (&mail.id, 3)] {
        let delivered = Attempt {
            at: now + Span::seconds(after),
            status: None,
            error: None,
            millis: 1,
        };
        outbox
            .record(tried(id, delivered, Next::Delivered))
            .await
            .expect("record");
    }
    let horizon = now + Span::seconds(4);
    assert_eq!(outbox.purge_delivered(horizon, 1).await.expect("purge"), 1);
    assert_eq!(outbox.get(&other.id).await.expect("get"), None);
    assert!(outbox.get(&mail.id).await.expect("get").is_some());
    assert_eq!(outbox.purge_delivered(horizon, 1).await.expect("purge"), 1);
    assert_eq!(outbox.purge_delivered(horizon, 1).await.expect("purge"), 0);
    assert_eq!(outbox.count().await.expect("count"), 0);
    // The keys went with their messages, and no index kept them: the same messages can be
    // written again, and only they are due.
    assert_eq!(
        outbox
            .enqueue(vec![
                message(a, "order.completed", "shop"),
                message(a, "order_shipped", "mail"),
                message(b, "order.rejected", "shop"),
            ])
            .await
            .expect("enqueue"),
        3
    );
    let again = outbox
        .due(Utc::now() + Span::seconds(10), 10)
        .await
        .expect("due");
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| d.attempts.is_empty()));
}

/// The behaviour every [`PaymentJournal`] must have: the first outcome per key stands.
async fn payment_journal_conformance(journal: Arc<dyn PaymentJournal>) {
    assert_eq!(
        journal
            .record_once("o1:charge", "approved|p1|100|USD")
            .await
            .expect("record"),
        "approved|p1|100|USD"
    );
    assert_eq!(
        journal
            .record_once("o1:charge", "declined|late")
            .await
            .expect("record"),
        "approved|p1|100|USD"
    );
    assert_eq!(
        journal
            .record_once("o2:charge", "declined|card")
            .await
            .expect("record"),
        "declined|card"
    );
    assert_eq!(journal.entries().await.expect("entries").len(), 2);
}

/// The behaviour every [`StatusFeed`] must have: a follower sees its order's changes only.
async fn status_feed_conformance(feed: Arc<dyn StatusFeed>) {
    use futures::StreamExt;
    use orderflow_domain::{OrderStatus, OrderView};
    let (mine, other) = (OrderId::new(), OrderId::new());
    let mut updates = feed.subscribe(mine).await.expect("subscribe");
    feed.publish(&OrderView::from_event(&event(
        other,
        OrderStatus::Accepted,
        0,
    )))
    .await
    .expect("publish");
    feed.publish(&OrderView::from_event(&event(
        mine,
        OrderStatus::Validated,
        1,
    )))
    .await
    .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("in time")
        .expect("an update");
    assert_eq!((got.order_id, got.status), (mine, OrderStatus::Validated));
}

/// The behaviour every [`CouponLedger`] must have: within the limits, in all and per customer,
/// once per order.
async fn coupon_conformance(coupons: Arc<dyn CouponLedger>) {
    let two = UseLimits {
        total: Some(2),
        per_customer: None,
    };
    let (a, b, c) = (OrderId::new(), OrderId::new(), OrderId::new());
    assert_eq!(
        coupons.redeem("SAVE", a, "ann", two).await.expect("redeem"),
        Redemption::Redeemed
    );
    assert_eq!(
        coupons.redeem("SAVE", a, "ann", two).await.expect("redeem"),
        Redemption::Redeemed,
        "a repeat counts nothing"
    );
    assert_eq!(
        coupons.redeem("SAVE", b, "bob", two).await.expect("redeem"),
        Redemption::Redeemed
    );
    assert_eq!(
        coupons.redeem("SAVE", c, "cat", two).await.expect("redeem"),
        Redemption::Exhausted
    );
    assert_eq!(coupons.uses("SAVE").await.expect("uses"), 2);
    assert_eq!(
        coupons.usage("SAVE", "ann").await.expect("usage"),
        Usage {
            total: 2,
            customer: 1
        }
    );
    assert!(coupons.restore("SAVE", a, "ann").await.expect("restore"));
    assert!(
        !coupons.restore("SAVE", a, "ann").await.expect("restore"),
        "once only"
    );
    assert!(
        !coupons.restore("SAVE", c, "cat").await.expect("restore"),
        "c never used it"
    );
    assert_eq!(
        coupons.usage("SAVE", "ann").await.expect("usage"),
        Usage {
            total: 1,
            customer: 0
        },
        "given back in all and for the customer"
    );
    assert_eq!(
        coupons.redeem("SAVE", c, "cat", two).await.expect("redeem"),
        Redemption::Exhausted,
        "c's first answer stands"
    );
    assert_eq!(coupons.uses("OTHER").await.expect("uses"), 0);

    // Per customer: one each, however many orders; no total limit.
    let once_each = UseLimits {
        total: None,
        per_customer: Some(1),
    };
    let (d, e, f) = (OrderId::new(), OrderId::new(), OrderId::new());
    assert_eq!(
        coupons
            .redeem("FIRST", d, "dan", once_each)
            .await
            .expect("redeem"),
        Redemption::Redeemed
    );
    assert_eq!(
        coupons
            .redeem("FIRST", e, "dan", once_each)
            .await
            .expect("redeem"),
        Redemption::Exhausted,
        "dan's second order"
    );
    assert_eq!(
        coupons
            .redeem("FIRST", f, "eve", once_each)
            .await
            .expect("redeem"),
        Redemption::Redeemed,
        "eve's first"
    );
    // dan's first order is rejected later: his use comes back, and a new order may take it.
    assert!(coupons.restore("FIRST", d, "dan").await.expect("restore"));
    assert_eq!(
        coupons
            .redeem("FIRST", OrderId::new(), "dan", once_each)
            .await
            .expect("redeem"),
        Redemption::Redeemed
    );
    assert_eq!(
        coupons.usage("FIRST", "dan").await.expect("usage"),
        Usage {
            total: 2,
            customer: 1
        }
    );

    // Concurrent redemptions never pass the limits.
    let limits = UseLimits {
        total: Some(25),
        per_customer: Some(10),
    };
    let tries = (0..100).map(|i| {
        let coupons = Arc::clone(&coupons);
        let customer = if i % 2 == 0 { "many" } else { "others" };
        let customer = if i % 2 == 1 {
            format!("c{i}")
        } else {
            customer.to_owned()
        };
        tokio::spawn(async move {
            coupons
                .redeem("RUSH", OrderId::new(), &customer, limits)
                .await
        })
    });
    let mut redeemed = 0;
    for t in tries {
        if t.await.expect("joins").expect("redeem") == Redemption::Redeemed {
            redeemed += 1;
        }
    }
    assert_eq!(redeemed, 25);
    assert_eq!(coupons.uses("RUSH").await.expect("uses"), 25);
    assert!(coupons.usage("RUSH", "many").await.expect("usage").customer <= 10);
}

/// The behaviour every [`RateLimiter`] must have: the burst passes, then the steady rate.
async fn rate_limit_conformance(limiter: Arc<dyn RateLimiter>) {
    let rate = Rate {
        per_second: 10,
        burst: 5,
    };
    let mut allowed = 0;
    let mut wait = None;
    for _ in 0..20 {
        match limiter.acquire("alice", rate).await.expect("acquire") {
            None => allowed += 1,
            Some(w) => wait = Some(w),
        }
    }
    // The burst plus the one steady token; a few more if the loop was slow.
    assert!((5..=8).contains(&allowed), "allowed {allowed} of 20");
    let wait = wait.expect("some were refused");
    assert!(wait <= Duration::from_millis(100), "wait {wait:?}");
    assert_eq!(
        limiter.acquire("bob", rate).await.expect("acquire"),
        None,
        "budgets are per key"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        limiter.acquire("alice", rate).await.expect("acquire"),
        None,
        "the budget refills at the steady rate"
    );
}

#[tokio::test]
async fn embedded_ledger_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let lapsing = Duration::from_millis(1);
    let held = OrderId::new();
    {
        let engine = Engine::open(dir.path()).expect("engine");
        let ledger = EmbeddedLedger::open(engine).expect("ledger");
        // B: sold out by a commit, then restocked.
        assert_eq!(
            ledger.seed(&[SkuStock::new("B", 2)]).await.expect("seed"),
            1
        );
        let sold = OrderId::new();
        assert_eq!(
            ledger
                .reserve(sold, &lines(&[("B", 2)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert!(ledger.commit(sold).await.expect("commit"));
        ledger.set_available("B", 5).await.expect("set");
        // HOT: every hold lapses. E: one committed at once, one pinned then committed, one
        // lapses.
        ledger.set_available("HOT", 50).await.expect("set");
        ledger.set_available("E", 10).await.expect("set");
        let mut lapsed = Vec::new();
        for sku in ["HOT", "HOT", "HOT", "HOT", "HOT", "E"] {
            let order = OrderId::new();
            assert_eq!(
                ledger
                    .reserve(order, &lines(&[(sku, 1)]), lapsing)
                    .await
                    .expect("reserve"),
                ReserveOutcome::Reserved
            );
            lapsed.push(order);
        }
        let (shipped, pinned) = (OrderId::new(), OrderId::new());
        assert_eq!(
            ledger
                .reserve(shipped, &lines(&[("E", 1)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert!(ledger.commit(shipped).await.expect("commit"));
        assert_eq!(
            ledger
                .reserve(pinned, &lines(&[("E", 1)]), lapsing)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert_eq!(ledger.pin(pinned).await.expect("pin"), PinOutcome::Pinned);
        let mut expired = ledger.expire_due(later, 1000).await.expect("expire");
        expired.sort_by_key(|id| id.0);
        lapsed.sort_by_key(|id| id.0);
        assert_eq!(expired, lapsed, "the unpinned holds lapse");
        ledger.acknowledge_expired(&expired).await.expect("ack");
        assert!(ledger.commit(pinned).await.expect("commit"));
        // H: a hold still live when the ledger closes.
        ledger.set_available("H", 3).await.expect("set");
        assert_eq!(
            ledger
                .reserve(held, &lines(&[("H", 1)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }
    let engine = Engine::open(dir.path()).expect("reopens");
    let ledger = EmbeddedLedger::open(engine).expect("ledger");
    let hot = ledger
        .level("HOT")
        .await
        .expect("level")
        .expect("persisted");
    // Every unpinned hold lapsed; E kept one committed and one pinned, since committed.
    assert_eq!((hot.available, hot.reserved), (50, 0));
    let e = ledger.level("E").await.expect("level").expect("persisted");
    assert_eq!((e.available, e.reserved, e.committed), (8, 0, 2));
    let b = ledger.level("B").await.expect("level").expect("persisted");
    assert_eq!((b.initial, b.available, b.committed), (7, 5, 2));
    assert_balanced(&ledger).await;
    // The live hold is still held and commits; the acknowledged expiries stay acknowledged.
    let h = ledger.level("H").await.expect("level").expect("persisted");
    assert_eq!((h.available, h.reserved), (2, 1));
    assert!(ledger.commit(held).await.expect("commit"));
    assert!(
        ledger
            .expire_due(later, 1000)
            .await
            .expect("expire")
            .is_empty()
    );
    assert_balanced(&ledger).await;
}

#[tokio::test]
async fn embedded_idempotency_purges_only_expired_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store = EmbeddedIdempotency::new(engine);
    let pending = Duration::from_secs(30);
    // Live keys: completed within its TTL, pending, abandoned and taken over, lapsed and taken
    // over, and completed past its TTL then given a fresh claim.
    let completed = OrderId::new();
    store
        .claim("k1", "fp", completed, pending)
        .await
        .expect("claim");
    store
        .complete("k1", completed, Duration::from_secs(60))
        .await
        .expect("complete");
    let waiting = OrderId::new();
    assert_eq!(
        store
            .claim("k2", "fp", waiting, pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: waiting }
    );
    let abandoned = OrderId::new();
    store
        .claim("k3", "fp", abandoned, pending)
        .await
        .expect("claim");
    store.abandon("k3", abandoned).await.expect("abandon");
    assert_eq!(
        store
            .claim("k3", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Claimed {
            order_id: abandoned
        }
    );
    let lapsing = OrderId::new();
    store
        .claim("k4", "fp", lapsing, Duration::from_millis(20))
        .await
        .expect("claim");
    let stale = OrderId::new();
    store
        .claim("k5", "fp", stale, pending)
        .await
        .expect("claim");
    store
        .complete("k5", stale, Duration::from_millis(20))
        .await
        .expect("complete");
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        store
            .claim("k4", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: lapsing }
    );
    let fresh = OrderId::new();
    assert_eq!(
        store
            .claim("k5", "fp", fresh, pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: fresh }
    );
    // k5 was given a fresh claim: nothing is past its time yet.
    assert_eq!(
        store
            .purge_expired(chrono::Utc::now(), 100)
            .await
            .expect("purge"),
        0,
        "live keys are kept"
    );
    // A completed key past its TTL is purged; a lapsed pending claim is kept for a day, so a late
    // retry still reuses its order id.
    let done = OrderId::new();
    store
        .claim("p1", "fp", done, Duration::from_secs(30))
        .await
        .expect("claim");
    store
        .complete("p1", done, Duration::from_millis(10))
        .await
        .expect("complete");
    let lapsed = OrderId::new();
    store
        .claim("p2", "fp", lapsed, Duration::from_millis(10))
        .await
        .expect("claim");
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        store
            .purge_expired(chrono::Utc::now(), 100)
            .await
            .expect("purge"),
        1
    );
    assert_eq!(
        store
            .claim("p2", "fp", OrderId::new(), Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Claimed { order_id: lapsed }
    );
    let fresh = OrderId::new();
    assert_eq!(
        store
            .claim("p1", "fp", fresh, Duration::from_secs(30))
            .await
            .expect("claim"),
        Claim::Claimed { order_id: fresh }
    );
}

#[tokio::test]
async fn embedded_idempotency_purges_by_expiry_a_limit_at_a_time_and_indexes_older_files() {
    use orderflow_storage::kv::redb::TableDefinition;
    const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    // A file written before the expiry index: three keys long expired, one live.
    let now = chrono::Utc::now().timestamp_millis();
    let live = OrderId::new();
    let rows: Vec<(String, Vec<u8>)> = [
        ("old-1", -60_000, None),
        ("old-2", -50_000, None),
        ("old-3", -40_000, None),
        ("live", 60_000, Some(live)),
    ]
    .into_iter()
    .map(|(key, offset, id)| {
        let entry = serde_json::json!({
            "fingerprint": "fp",
            "order_id": id.unwrap_or_else(OrderId::new),
            "complete": true,
            "expires_at_ms": now + offset,
        });
        (key.to_owned(), serde_json::to_vec(&entry).expect("json"))
    })
    .collect();
    engine
        .submit(move |txn| {
            let mut t = txn.open_table(KEYS)?;
            for (key, bytes) in &rows {
                t.insert(key.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
        .await
        .expect("older file");
    let store = EmbeddedIdempotency::new(engine.clone());
    // A key completed with a short TTL and then claimed afresh: its index row moved with it.
    let first = OrderId::new();
    let pending = Duration::from_secs(30);
    store
        .claim("again", "fp", first, pending)
        .await
        .expect("claim");
    store
        .complete("again", first, Duration::from_millis(10))
        .await
        .expect("complete");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let second = OrderId::new();
    assert_eq!(
        store
            .claim("again", "fp", second, pending)
            .await
            .expect("claim"),
        Claim::Claimed { order_id: second }
    );
    let purge = |limit| store.purge_expired(chrono::Utc::now(), limit);
    assert_eq!(
        purge(2).await.expect("purge"),
        2,
        "a pass takes at most its limit"
    );
    assert_eq!(purge(2).await.expect("purge"), 1, "then what is left");
    assert_eq!(purge(2).await.expect("purge"), 0);
    let left: Vec<String> = engine
        .read(|txn| {
            let t = txn.open_table(KEYS)?;
            let mut keys = Vec::new();
            for row in orderflow_storage::kv::redb::ReadableTable::iter(&t)? {
                keys.push(row?.0.value().to_owned());
            }
            Ok(keys)
        })
        .expect("read");
    assert_eq!(left, ["again", "live"], "only the expired keys went");
    assert_eq!(
        store
            .claim("live", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Existing {
            fingerprint: "fp".into(),
            order_id: live,
            complete: true
        }
    );
    assert_eq!(
        store
            .claim("again", "fp", OrderId::new(), pending)
            .await
            .expect("claim"),
        Claim::Existing {
            fingerprint: "fp".into(),
            order_id: second,
            complete: false
        }
    );
}

#[tokio::test]
async fn embedded_ledger_evicts_settled_holds_and_still_answers_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (o1, o2, o3, o4) = (
        OrderId::new(),
        OrderId::new(),
        OrderId::new(),
        OrderId::new(),
    );
    {
        let ledger =
            EmbeddedLedger::open(Engine::open(dir.path()).expect("engine")).expect("ledger");
        ledger.seed(&[SkuStock::new("A", 10)]).await.expect("seed");
        assert_eq!(
            ledger
                .reserve(o1, &lines(&[("A", 2)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert!(ledger.commit(o1).await.expect("commit"));
        assert_eq!(
            ledger
                .reserve(o2, &lines(&[("A", 3)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        let short = ledger
            .reserve(o3, &lines(&[("A", 20)]), TTL)
            .await
            .expect("reserve");
        assert!(matches!(short, ReserveOutcome::Short(_)));
        assert_eq!(
            ledger
                .reserve(o4, &lines(&[("A", 1)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert!(ledger.release(o4).await.expect("release"));

        assert_eq!(
            ledger.evict_settled(Duration::from_secs(3600)),
            0,
            "recent orders stay in memory"
        );
        assert_eq!(
            ledger.evict_settled(Duration::ZERO),
            3,
            "committed, refused and released holds leave memory"
        );
        assert_eq!(ledger.holds_in_memory(), 1, "the held order stays");

        // Repeats are answered from disk and change nothing.
        assert_eq!(
            ledger
                .reserve(o1, &lines(&[("A", 2)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
        assert!(ledger.commit(o1).await.expect("commit"));
        assert!(!ledger.release(o1).await.expect("release"));
        assert_eq!(
            ledger
                .reserve(o3, &lines(&[("A", 20)]), TTL)
                .await
                .expect("reserve"),
            short
        );
        assert!(ledger.release(o4).await.expect("release"));
        assert!(!ledger.commit(o4).await.expect("commit"));
        let a = ledger.level("A").await.expect("level").expect("exists");
        assert_eq!((a.available, a.reserved, a.committed), (5, 3, 2));
    }
    // After a restart only the held order is loaded; the rest is still answered.
    let ledger = EmbeddedLedger::open(Engine::open(dir.path()).expect("reopens")).expect("ledger");
    assert_eq!(ledger.holds_in_memory(), 1);
    assert!(ledger.commit(o1).await.expect("commit"));
    assert!(ledger.release(o2).await.expect("release"));
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved, a.committed), (8, 0, 2));
    assert_balanced(&ledger).await;
}

#[tokio::test]
async fn embedded_views_are_readable_at_once_and_durable_after_a_flush() {
    use orderflow_domain::OrderStatus::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store = EmbeddedOrderStore::new(engine.clone());
    let id = OrderId::new();
    store.apply(&[event(id, Accepted, 0)]).await.expect("apply");
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(Accepted)
    );
    store.flush().await.expect("flush");
    store
        .apply(&[event(id, Validated, 1)])
        .await
        .expect("apply");
    // Another store on the same database sees what was flushed; this one sees the newest.
    let other = EmbeddedOrderStore::new(engine.clone());
    assert_eq!(
        other.get(id).await.expect("get").map(|v| v.status),
        Some(Accepted)
    );
    assert_eq!(
        store.get(id).await.expect("get").map(|v| v.status),
        Some(Validated)
    );
    store.flush().await.expect("flush");
    let view = other.get(id).await.expect("get").expect("durable");
    assert_eq!((view.status, view.timeline.len()), (Validated, 2));
    assert_eq!(other.count().expect("count"), 1);
    let page = other.list_for_customer("c1", 10, None).await.expect("page");
    assert_eq!(
        page.orders.len(),
        1,
        "the customer index was written with the view"
    );
}

#[tokio::test]
async fn redis_ledger_state_lives_in_redis_not_in_the_connection() {
    let fx = Fixture::new();
    let first = RedisLedger::new(fx.redis().await);
    first.set_available("E", 10).await.expect("set");
    let (shipped, held, released) = (OrderId::new(), OrderId::new(), OrderId::new());
    for order in [shipped, held, released] {
        assert_eq!(
            first
                .reserve(order, &lines(&[("E", 1)]), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }
    assert!(first.commit(shipped).await.expect("commit"));
    assert!(first.release(released).await.expect("release"));
    drop(first);
    // The same state through a second connection: nothing lived in the first one.
    let again = RedisLedger::new(fx.redis().await);
    assert!(
        again.commit(held).await.expect("commit"),
        "a hold taken through one connection commits through another"
    );
    assert!(
        !again.commit(released).await.expect("commit"),
        "the release was kept"
    );
    let e = again.level("E").await.expect("level").expect("kept");
    assert_eq!((e.available, e.reserved, e.committed), (8, 0, 2));
    assert_balanced(&again).await;
}

/// The `redis-cluster` backends of the matrices show that every Redis script stays in one
/// cluster slot because the one-node cluster refuses a call whose keys hash to two slots; this
/// checks that it does, and that keys sharing a hash tag pass.
#[tokio::test]
async fn the_one_node_cluster_refuses_a_call_across_slots() {
    let server = RedisServer::start_cluster();
    let script = "redis.call('SET', KEYS[1], '1') redis.call('SET', KEYS[2], '2') return 1";
    let across = server.command(&["EVAL", script, "2", "{a}:x", "{b}:y"]);
    assert!(across.starts_with("-CROSSSLOT"), "two slots: {across}");
    let tagged = server.command(&["EVAL", script, "2", "{wh}:x", "{wh}:y"]);
    assert_eq!(tagged, ":1\r\n", "one hash tag");
}

#[tokio::test]
async fn scylla_keeps_views_and_schema_across_connections_when_scylla_uri_is_set() {
    use orderflow_domain::OrderStatus::Accepted;
    let Some(config) = scylla_config() else {
        return;
    };
    let store = ScyllaOrderStore::connect(&config).await.expect("connects");
    let id = OrderId::new();
    store.apply(&[event(id, Accepted, 0)]).await.expect("apply");
    store.flush().await.expect("flush");
    drop(store);
    // Connecting again finds the schema migrated and changes nothing.
    let again = ScyllaOrderStore::connect(&config)
        .await
        .expect("reconnects");
    assert_eq!(
        again.get(id).await.expect("get").map(|v| v.status),
        Some(Accepted)
    );
}

#[test]
fn scylla_urls_parse_and_bad_ones_are_refused() {
    use orderflow_stores::scylla::ScyllaConfig;
    let c = ScyllaConfig::from_url("scylla://db1:9042,db2/shop").expect("valid");
    assert_eq!(c.nodes, ["db1:9042", "db2:9042"]);
    assert_eq!(c.keyspace, "shop");
    assert_eq!(
        ScyllaConfig::from_url("scylla://db1")
            .expect("valid")
            .keyspace,
        "orderflow"
    );
    for bad in [
        "scylla://",
        "cassandra://db1",
        "scylla://db1/1bad",
        "scylla://db1/no-dash",
    ] {
        assert!(ScyllaConfig::from_url(bad).is_err(), "{bad}");
    }
}
