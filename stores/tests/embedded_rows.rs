//! How the embedded stores keep their large rows: order views and outbox messages are stored
//! compressed, and rows written before compression (plain JSON) still read, purge and deliver.

use orderflow_domain::OrderStatus::{self, *};
use orderflow_domain::{OrderEvent, OrderId};
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::TableDefinition;
use orderflow_stores::embedded::{EmbeddedOrderStore, EmbeddedOutbox};
use orderflow_stores::{Attempt, DeliveryState, MAIL, NewMessage, Next, OrderStore, Outbox, Tried};

const VIEWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("order_views");
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox_messages");

fn event(id: OrderId, status: OrderStatus) -> OrderEvent {
    let request: orderflow_domain::CheckoutRequest = serde_json::from_str(
        r#"{"currency":"USD","lines":[{"sku":"SKU-0001","quantity":1},{"sku":"SKU-0002","quantity":2},
        {"sku":"SKU-0003","quantity":3}],"shipping_address":{"name":"Ada Lovelace","line1":"1 Main St",
        "city":"San Francisco","postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
    )
    .expect("valid body");
    let at = chrono::Utc::now();
    let order = orderflow_domain::Order::from_checkout(id, "ada".into(), request, at);
    OrderEvent { status, at, order }
}

/// The stored row of `key` in `table`, as bytes.
fn raw<K: orderflow_storage::kv::redb::Key + 'static>(
    engine: &Engine,
    table: TableDefinition<'static, K, &'static [u8]>,
    key: K::SelfType<'_>,
) -> Vec<u8> {
    engine
        .read(|txn| {
            let t = txn.open_table(table)?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        })
        .expect("read")
        .expect("row exists")
}

/// Writes `row` as the outbox message `id`, as it is (as a build before compression did).
async fn put_message(engine: &Engine, id: String, row: Vec<u8>) {
    engine
        .submit(move |txn| {
            txn.open_table(MESSAGES)?
                .insert(id.as_str(), row.as_slice())?;
            Ok(())
        })
        .await
        .expect("write");
}

/// Writes `row` as the view of `order`, as it is.
async fn put_view(engine: &Engine, order: OrderId, row: Vec<u8>) {
    engine
        .submit(move |txn| {
            txn.open_table(VIEWS)?
                .insert(order.as_bytes().as_slice(), row.as_slice())?;
            Ok(())
        })
        .await
        .expect("write");
}

#[tokio::test]
async fn views_are_stored_compressed_and_old_json_views_still_read_and_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store = EmbeddedOrderStore::new(engine.clone());
    let (new, old) = (OrderId::new(), OrderId::new());
    store
        .apply(&[
            event(new, Accepted),
            event(new, Completed),
            event(old, Accepted),
            event(old, Completed),
        ])
        .await
        .expect("apply");
    store.flush().await.expect("flush");
    let view = store.get(new).await.expect("get").expect("view");
    let json = serde_json::to_vec(&view).expect("encode");
    let row = raw(&engine, VIEWS, new.as_bytes().as_slice());
    assert_eq!(row[0], 0x01, "a view is stored compressed");
    assert!(
        row.len() < json.len(),
        "{} bytes stored for {} of JSON",
        row.len(),
        json.len()
    );

    // The other view as a build before compression wrote it: its JSON, plain.
    let old_view = store.get(old).await.expect("get").expect("view");
    let old_json = serde_json::to_vec(&old_view).expect("encode");
    put_view(&engine, old, old_json.clone()).await;
    drop(store);

    // A new process (nothing in memory) reads both from disk, and lists both.
    let store = EmbeddedOrderStore::new(engine.clone());
    assert_eq!(store.get(new).await.expect("get"), Some(view.clone()));
    assert_eq!(store.get(old).await.expect("get"), Some(old_view));
    assert_eq!(raw(&engine, VIEWS, old.as_bytes().as_slice()), old_json);
    let page = store
        .list_for_customer("ada", 10, None)
        .await
        .expect("list");
    assert_eq!(page.orders.len(), 2);

    // Retention reads both kinds of row to tell settled views: both go.
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.purge_settled(later, 100).await.expect("purge"), 2);
    assert_eq!(store.count().expect("count"), 0);
}

#[tokio::test]
async fn outbox_messages_are_stored_compressed_and_old_rows_still_deliver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let outbox = EmbeddedOutbox::new(engine.clone());
    let email = |order: OrderId| NewMessage {
        key: format!("{order}:mail"),
        order_id: order,
        event: "order.completed".into(),
        destination: MAIL.into(),
        payload: format!(
            "To: ada@example.com\r\nSubject: Your order {order}\r\n\r\n{}",
            "Thank you for your order. It is on its way.\r\n".repeat(12)
        ),
    };
    let (a, b) = (OrderId::new(), OrderId::new());
    assert_eq!(
        outbox
            .enqueue(vec![email(a), email(b)])
            .await
            .expect("enqueue"),
        2
    );
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);
    let due = outbox.due(now, 10).await.expect("due");
    assert_eq!(due.len(), 2);
    let (first, second) = (due[0].clone(), due[1].clone());
    let row = raw(&engine, MESSAGES, first.id.as_str());
    assert_eq!(row[0], 0x01, "a message is stored compressed");
    assert!(
        row.len() < first.payload.len(),
        "{} bytes stored",
        row.len()
    );

    // The second as a build before compression wrote it: the record's JSON, a newline, the payload.
    let stored = raw(&engine, MESSAGES, second.id.as_str());
    let plain = lz4_flex::block::decompress_size_prepended(&stored[1..]).expect("decompress");
    assert_eq!(plain[0], b'{');
    put_message(&engine, second.id.clone(), plain).await;

    let again = outbox.due(now, 10).await.expect("due");
    assert_eq!(again.len(), 2);
    for d in [&first, &second] {
        let read = outbox.get(&d.id).await.expect("get").expect("message");
        assert_eq!(read.payload, d.payload);
        assert_eq!(read.key, d.key);
    }

    // Delivering rewrites each row (the plain one compare-and-swapped against its plain
    // bytes), and the purge reads each kind of row for its index entries.
    let tries = [&first, &second]
        .iter()
        .map(|d| Tried {
            id: d.id.clone(),
            attempt: Attempt {
                at: chrono::Utc::now(),
                status: None,
                error: None,
                millis: 1,
            },
            next: Next::Delivered,
        })
        .collect();
    assert_eq!(outbox.record(tries).await.expect("record"), 2);
    for d in [&first, &second] {
        let read = outbox.get(&d.id).await.expect("get").expect("message");
        assert_eq!(read.state, DeliveryState::Delivered);
        assert_eq!(read.payload, d.payload);
    }
    assert!(outbox.due(now, 10).await.expect("due").is_empty());
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(outbox.purge_delivered(later, 100).await.expect("purge"), 2);
    assert_eq!(outbox.count().await.expect("count"), 0);
    // The key index went with them: the same keys may be written again.
    assert_eq!(
        outbox
            .enqueue(vec![email(a), email(b)])
            .await
            .expect("enqueue"),
        2
    );
}

#[tokio::test]
async fn a_damaged_view_row_is_an_error_to_readers_and_left_alone_by_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store = EmbeddedOrderStore::new(engine.clone());
    let id = OrderId::new();
    store
        .apply(&[event(id, Accepted), event(id, Completed)])
        .await
        .expect("apply");
    store.flush().await.expect("flush");
    drop(store);
    // A compressed row whose body was cut short.
    let mut row = raw(&engine, VIEWS, id.as_bytes().as_slice());
    row.truncate(row.len() / 2);
    put_view(&engine, id, row).await;

    let store = EmbeddedOrderStore::new(engine.clone());
    let err = store
        .get(id)
        .await
        .expect_err("a damaged row does not read");
    assert!(err.is_corrupt(), "{err}");
    assert!(store.list_for_customer("ada", 10, None).await.is_err());
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    assert_eq!(store.purge_settled(later, 100).await.expect("purge"), 0);
    assert_eq!(store.count().expect("count"), 1);
}
