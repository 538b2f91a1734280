//! Retention of the embedded stores: settled orders' views and settled stock holds leave disk
//! once their order is older than the retention; everything else stays. Live holds stay in
//! memory whatever their number; settled ones beyond the bound are evicted oldest first and
//! still answered from disk.

use orderflow_domain::OrderStatus::{self, *};
use orderflow_domain::{OrderEvent, OrderId};
use orderflow_storage::kv::Engine;
use orderflow_stores::embedded::{EmbeddedLedger, EmbeddedOrderStore};
use orderflow_stores::{CancelOutcome, OrderStore, ReserveOutcome, SkuQuantity, StockLedger};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;
const TTL: Duration = Duration::from_secs(900);

/// An order id minted `days_ago` days ago.
fn minted(days_ago: i64) -> OrderId {
    let ms = chrono::Utc::now().timestamp_millis() - days_ago * DAY_MS;
    let random: [u8; 10] = std::array::from_fn(|_| fastrand::u8(..));
    OrderId(uuid::Builder::from_unix_timestamp_millis(ms as u64, &random).into_uuid())
}

fn event(id: OrderId, status: OrderStatus, customer: &str) -> OrderEvent {
    let request: orderflow_domain::CheckoutRequest = serde_json::from_str(
        r#"{"currency":"USD","lines":[{"sku":"A","quantity":1}],"shipping_address":{"name":"Ada",
        "line1":"1 Main","city":"SF","postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
    )
    .expect("valid body");
    let at = chrono::Utc::now();
    let order = orderflow_domain::Order::from_checkout(id, customer.into(), request, at);
    OrderEvent { status, at, order }
}

#[tokio::test]
async fn settled_views_older_than_the_retention_leave_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedOrderStore::new(Engine::open(dir.path()).expect("engine"));
    let old_done: Vec<OrderId> = (0..7).map(|_| minted(10)).collect();
    let old_open = minted(10);
    let new_done = minted(1);
    let mut events = Vec::new();
    for (i, id) in old_done.iter().enumerate() {
        let end = if i % 2 == 0 { Completed } else { Rejected };
        events.push(event(*id, Accepted, "ada"));
        events.push(event(*id, end, "ada"));
    }
    events.push(event(old_open, Accepted, "ada"));
    events.push(event(old_open, Charged, "ada"));
    events.push(event(new_done, Completed, "ada"));
    store.apply(&events).await.expect("apply");
    store.flush().await.expect("flush");
    assert_eq!(store.count().expect("count"), 9);

    let before = chrono::Utc::now() - chrono::Duration::days(7);
    // Three at a time: the limit holds, and a second call goes on where the first stopped.
    assert_eq!(store.purge_settled(before, 3).await.expect("purge"), 3);
    assert_eq!(store.purge_settled(before, 100).await.expect("purge"), 4);
    assert_eq!(store.purge_settled(before, 100).await.expect("purge"), 0);
    assert_eq!(store.count().expect("count"), 2);
    for id in &old_done {
        assert!(store.get(*id).await.expect("get").is_none(), "{id} kept");
    }
    assert_eq!(
        store.get(old_open).await.expect("get").map(|v| v.status),
        Some(Charged),
        "an order still in flight is kept however old"
    );
    assert_eq!(
        store.get(new_done).await.expect("get").map(|v| v.status),
        Some(Completed),
        "a settled order inside the retention is kept"
    );
    // The customer's history lists what is left, and nothing removed.
    let page = store
        .list_for_customer("ada", 50, None)
        .await
        .expect("list");
    let mut listed: Vec<OrderId> = page.orders.iter().map(|v| v.order_id).collect();
    listed.sort();
    let mut kept = vec![old_open, new_done];
    kept.sort();
    assert_eq!(listed, kept);
}

fn one(sku: &str) -> Vec<SkuQuantity> {
    vec![SkuQuantity::new(sku, 1)]
}

#[tokio::test]
async fn settled_holds_older_than_the_retention_leave_disk_cancelled_ones_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let ledger = EmbeddedLedger::open(engine).expect("ledger");
    ledger.set_available("A", 100).await.expect("set");
    let (committed, released, cancelled, live, recent) =
        (minted(10), minted(10), minted(10), minted(10), minted(1));
    for order in [committed, released, cancelled, live, recent] {
        assert_eq!(
            ledger
                .reserve(order, &one("A"), TTL)
                .await
                .expect("reserve"),
            ReserveOutcome::Reserved
        );
    }
    assert!(ledger.commit(committed).await.expect("commit"));
    assert!(ledger.release(released).await.expect("release"));
    assert_eq!(
        ledger.cancel(cancelled).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert!(ledger.commit(recent).await.expect("commit"));
    assert_eq!(ledger.holds_on_disk().expect("count"), 5);

    let before = chrono::Utc::now() - chrono::Duration::days(7);
    assert_eq!(
        ledger.purge_settled(before, 100).await.expect("purge"),
        0,
        "holds in memory are left alone"
    );
    ledger.evict_settled(Duration::ZERO);
    assert_eq!(ledger.purge_settled(before, 100).await.expect("purge"), 2);
    assert_eq!(ledger.holds_on_disk().expect("count"), 3);
    // The cancelled order is still cancelled, the live hold still held, the recent commit
    // still answered.
    assert_eq!(
        ledger.cancel(cancelled).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    assert!(ledger.cancelled(cancelled).await.expect("cancelled"));
    assert!(ledger.commit(live).await.expect("commit the live hold"));
    assert!(ledger.commit(recent).await.expect("repeat"));
    let level = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!(
        (level.available, level.reserved, level.committed),
        (97, 0, 3),
        "removing settled records moves no stock"
    );
}

#[tokio::test]
async fn settled_holds_beyond_the_bound_leave_memory_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let ledger = EmbeddedLedger::open(engine).expect("ledger");
    ledger.set_available("A", 100).await.expect("set");
    // Ten settled (oldest first), three live, all minted inside the minute-long horizon.
    let settled: Vec<OrderId> = (0..10).map(|_| OrderId::new()).collect();
    let live: Vec<OrderId> = (0..3).map(|_| OrderId::new()).collect();
    for order in settled.iter().chain(&live) {
        ledger
            .reserve(*order, &one("A"), TTL)
            .await
            .expect("reserve");
    }
    for order in &settled {
        assert!(ledger.commit(*order).await.expect("commit"));
    }
    assert_eq!(ledger.holds_in_memory(), 13);
    assert_eq!(ledger.evict_settled(Duration::from_secs(60)), 0);
    assert_eq!(ledger.evict_beyond(5), 8);
    assert_eq!(
        ledger.holds_in_memory(),
        5,
        "three live and the two newest settled"
    );
    assert_eq!(
        ledger.evict_beyond(1),
        2,
        "live holds stay, whatever the bound"
    );
    assert_eq!(ledger.holds_in_memory(), 3);
    // Evicted holds are answered from disk.
    for order in &settled {
        assert!(ledger.commit(*order).await.expect("repeat"));
        assert_eq!(
            ledger
                .reserve(*order, &one("A"), TTL)
                .await
                .expect("repeat"),
            ReserveOutcome::Reserved
        );
    }
    for order in &live {
        assert!(ledger.release(*order).await.expect("release"));
    }
    let level = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!(
        (level.available, level.reserved, level.committed),
        (90, 0, 10)
    );
}
