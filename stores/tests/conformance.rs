//! One conformance body per store trait, run against every backend. Redis and ScyllaDB join
//! these with their adapters.

use orderflow_domain::OrderId;
use orderflow_embedded::Engine;
use orderflow_stores::embedded::{EmbeddedIdempotency, EmbeddedLedger};
use orderflow_stores::{Claim, IdempotencyStore, ReserveOutcome, StockLedger};
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(900);

fn lines(items: &[(&str, u32)]) -> Vec<(String, u32)> {
    items.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect()
}

async fn assert_balanced(ledger: &dyn StockLedger) {
    for level in ledger.levels().await.expect("levels") {
        assert!(level.balanced(), "invariant broken: {level:?}");
    }
}

/// The behaviour every [`StockLedger`] must have.
async fn ledger_conformance(ledger: Arc<dyn StockLedger>) {
    let seeded = ledger
        .seed(&[("A".into(), 10), ("B".into(), 2)])
        .await
        .expect("seed");
    assert_eq!(seeded, 2);
    assert_eq!(
        ledger
            .seed(&[("A".into(), 99), ("C".into(), 5)])
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

#[tokio::test]
async fn embedded_ledger_conforms_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let engine = Engine::open(dir.path()).expect("engine");
        ledger_conformance(Arc::new(EmbeddedLedger::open(engine).expect("ledger"))).await;
    }
    let engine = reopen(dir.path()).await;
    let ledger = EmbeddedLedger::open(engine).expect("ledger");
    let hot = ledger
        .level("HOT")
        .await
        .expect("level")
        .expect("persisted");
    assert_eq!((hot.available, hot.reserved), (0, 50));
    let b = ledger.level("B").await.expect("level").expect("persisted");
    assert_eq!((b.initial, b.available, b.committed), (7, 5, 2));
    assert_balanced(&ledger).await;
}

#[tokio::test]
async fn embedded_idempotency_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store = EmbeddedIdempotency::new(engine);
    idempotency_conformance(Arc::new(store.clone())).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        store.purge_expired().await.expect("purge"),
        0,
        "live keys are kept"
    );
}

/// Opens the engine again once the previous writer has let go of the file.
async fn reopen(dir: &std::path::Path) -> Engine {
    for _ in 0..200 {
        if let Ok(engine) = Engine::open(dir) {
            return engine;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("could not reopen the database");
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
        ledger.seed(&[("A".into(), 10)]).await.expect("seed");
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
    let ledger = EmbeddedLedger::open(reopen(dir.path()).await).expect("ledger");
    assert_eq!(ledger.holds_in_memory(), 1);
    assert!(ledger.commit(o1).await.expect("commit"));
    assert!(ledger.release(o2).await.expect("release"));
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved, a.committed), (8, 0, 2));
    assert_balanced(&ledger).await;
}
