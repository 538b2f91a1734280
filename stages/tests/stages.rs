//! The business rules of each stage, on real embedded stores.

use bytes::Bytes;
use chrono::Utc;
use orderflow_domain::{
    Address, Catalog, CatalogItem, CheckoutRequest, Currency, LineItem, Order, OrderEvent, OrderId,
    OrderStatus, PaymentRequest, RefundStatus, RejectionCode, decode_event,
};
use orderflow_pipeline::{ErrorKind, Outcome, Record, Stage};
use orderflow_stages::charge::{Charge, SimulatedProvider};
use orderflow_stages::price::Price;
use orderflow_stages::reserve::Reserve;
use orderflow_stages::validate::Validate;
use orderflow_stages::{OnOrders, OrderStage, Step, topology};
use orderflow_storage::kv::Engine;
use orderflow_stores::StockLedger;
use orderflow_stores::embedded::{EmbeddedLedger, EmbeddedPaymentJournal};
use orderflow_stores::{CancelOutcome, SkuStock};
use std::sync::Arc;
use std::time::Duration;

fn catalog() -> Arc<Catalog> {
    let item = |sku: &str, price| CatalogItem {
        sku: sku.into(),
        name: sku.into(),
        price_minor: price,
        category: "test".into(),
        weight_grams: 100,
        stock: 10,
    };
    Arc::new(
        Catalog::new(
            Currency::parse("USD").expect("valid"),
            vec![item("A", 3499), item("B", 100)],
        )
        .expect("catalog"),
    )
}

/// The tables of the tests: `promotions`, a US-wide tax of `tax_bps` and one shipping fee.
fn book(promotions: &str, tax_bps: u32, shipping_minor: i64) -> orderflow_domain::SharedPriceBook {
    use orderflow_domain::pricing::{ShippingTable, TaxTable};
    orderflow_domain::PriceBook::new(
        catalog(),
        orderflow_domain::Promotions::parse(promotions, "promotions").expect("promotions"),
        TaxTable::parse(
            &format!(r#"{{"jurisdictions":[{{"id":"US","country":"US","rate_bps":{tax_bps}}}]}}"#),
            "tax",
        )
        .expect("tax"),
        ShippingTable::parse(
            &format!(
                r#"{{"zones":[{{"id":"all","countries":["*"],"bands":[{{"fee_minor":{shipping_minor}}}]}}]}}"#
            ),
            "shipping",
        )
        .expect("shipping"),
        "test",
    )
    .shared()
}

/// No promotions.
const NO_PROMOTIONS: &str = r#"{"promotions":[]}"#;

fn event(lines: &[(&str, u32)], token: &str) -> OrderEvent {
    // Built the way the ingest builds it, from a checkout request.
    let request = CheckoutRequest {
        currency: "USD".into(),
        lines: lines
            .iter()
            .map(|(s, q)| LineItem {
                sku: (*s).into(),
                quantity: *q,
            })
            .collect(),
        shipping_address: Address {
            name: "Ada".into(),
            line1: "1 Main".into(),
            line2: None,
            city: "SF".into(),
            region: "CA".into(),
            postal_code: "94107".into(),
            country: "US".into(),
        },
        coupon_codes: vec![],
        payment: PaymentRequest {
            token: token.into(),
        },
    };
    let order = Order::from_checkout(OrderId::new(), "c1".into(), request, Utc::now());
    OrderEvent {
        status: OrderStatus::Accepted,
        at: Utc::now(),
        order,
    }
}

fn rejection(step: Step) -> RejectionCode {
    match step {
        Step::Reject(e) => e.order.rejection.expect("rejection set").code,
        Step::Advance(e) | Step::Cancel(e) => {
            panic!("expected a rejection, got {:?}", e.status)
        }
    }
}

async fn ledger() -> (tempfile::TempDir, Arc<dyn StockLedger>, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let ledger = EmbeddedLedger::open(engine.clone()).expect("ledger");
    ledger
        .seed(&[SkuStock::new("A", 10), SkuStock::new("B", 10)])
        .await
        .expect("seed");
    (dir, Arc::new(ledger), engine)
}

#[tokio::test]
async fn validate_applies_the_catalog_and_the_store_rules() {
    let v = Validate::new(catalog(), &["USD".into()], &["US".into()]);
    assert!(
        matches!(v.handle(event(&[("A", 1)], "tok_visa"), 1).await, Ok(Step::Advance(e)) if e.status == OrderStatus::Validated)
    );
    assert_eq!(
        rejection(
            v.handle(event(&[("A", 1), ("ZZZ", 1)], "tok_visa"), 1)
                .await
                .expect("ok")
        ),
        RejectionCode::UnknownSku
    );
    assert_eq!(
        rejection(
            v.handle(event(&[("A", 1001)], "tok_visa"), 1)
                .await
                .expect("ok")
        ),
        RejectionCode::Invalid
    );
    let mut eur = event(&[("A", 1)], "tok_visa");
    eur.order.currency = "EUR".into();
    assert_eq!(
        rejection(v.handle(eur, 1).await.expect("ok")),
        RejectionCode::Invalid
    );
    let mut abroad = event(&[("A", 1)], "tok_visa");
    abroad.order.shipping_address.country = "FR".into();
    assert_eq!(
        rejection(v.handle(abroad, 1).await.expect("ok")),
        RejectionCode::Invalid
    );
}

#[tokio::test]
async fn price_multiplies_adds_shipping_and_rounds_tax() {
    let (_dir, ledger, _engine) = ledger().await;
    let p = Price::new(book(NO_PROMOTIONS, 825, 500), ledger);
    let Ok(Step::Advance(priced)) = p.handle(event(&[("A", 2), ("B", 3)], "tok_visa"), 1).await
    else {
        panic!("priced")
    };
    let pricing = priced.order.pricing.expect("pricing");
    assert_eq!(pricing.subtotal.minor, 2 * 3499 + 3 * 100);
    assert_eq!(pricing.tax.minor, 602); // 8.25 % of 72.98 = 6.02085
    assert_eq!(pricing.total.minor, 7298 + 602 + 500);
    assert_eq!(priced.status, OrderStatus::Priced);
}

#[tokio::test]
async fn a_declined_charge_gives_the_stock_back_and_a_repeat_changes_nothing() {
    let (_dir, ledger, engine) = ledger().await;
    let reserve = Reserve::new(ledger.clone(), Duration::from_secs(60));
    let price = Price::new(book(NO_PROMOTIONS, 0, 0), ledger.clone());
    let charge = Charge::new(
        Arc::new(SimulatedProvider::new(Arc::new(
            EmbeddedPaymentJournal::new(engine),
        ))),
        ledger.clone(),
    );

    let Ok(Step::Advance(reserved)) = reserve.handle(event(&[("A", 4)], "tok_decline"), 1).await
    else {
        panic!("reserved")
    };
    assert_eq!(
        ledger.level("A").await.expect("level").map(|l| l.available),
        Some(6)
    );
    let Ok(Step::Advance(priced)) = price.handle(reserved, 1).await else {
        panic!("priced")
    };
    assert_eq!(
        rejection(charge.handle(priced.clone(), 1).await.expect("ok")),
        RejectionCode::PaymentDeclined
    );
    assert_eq!(
        rejection(charge.handle(priced, 2).await.expect("ok")),
        RejectionCode::PaymentDeclined
    );
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved), (10, 0));

    // Short stock rejects without holding anything.
    assert_eq!(
        rejection(
            reserve
                .handle(event(&[("A", 11)], "tok_visa"), 1)
                .await
                .expect("ok")
        ),
        RejectionCode::OutOfStock
    );
    assert_eq!(
        ledger.level("A").await.expect("level").map(|l| l.available),
        Some(10)
    );
}

#[tokio::test]
async fn the_adapter_routes_stamps_headers_and_refuses_garbage() {
    let route = topology::route("validate").expect("route");
    let stage = OnOrders::new(
        route,
        Validate::new(catalog(), &["USD".into()], &["US".into()]),
    );
    let record = |e: &OrderEvent| Record {
        topic: route.input.into(),
        partition: 0,
        offset: 7,
        key: Bytes::from(e.order.id.to_string()),
        value: Bytes::from(orderflow_domain::encode_event(e).expect("encodes")),
        headers: vec![("traceparent".into(), "00-abc-def-01".into())],
        decoded: None,
    };
    let good = event(&[("A", 1)], "tok_visa");
    let Ok(Outcome::Emit(out)) = stage.process(&record(&good), 1).await else {
        panic!("emits")
    };
    assert_eq!(out[0].topic, topology::VALIDATED);
    assert_eq!(
        out[0].header("idempotency-key"),
        Some(format!("{}:validate", good.order.id).as_str())
    );
    assert_eq!(out[0].header("traceparent"), Some("00-abc-def-01"));
    assert_eq!(
        decode_event(&out[0].value).expect("decodes").status,
        OrderStatus::Validated
    );
    // The output carries the event decoded; it says what the bytes say.
    let carried = out[0]
        .decoded
        .as_ref()
        .and_then(|d| d.get::<OrderEvent>())
        .expect("decoded copy");
    assert_eq!(carried, &decode_event(&out[0].value).expect("decodes"));
    // A record that carries its event decoded is handled exactly like its bytes.
    let mut with_copy = record(&good);
    with_copy.decoded = Some(orderflow_pipeline::Decoded::new(good.clone()));
    let Ok(Outcome::Emit(again)) = stage.process(&with_copy, 1).await else {
        panic!("emits")
    };
    let (a, b) = (
        decode_event(&again[0].value).expect("decodes"),
        decode_event(&out[0].value).expect("decodes"),
    );
    assert_eq!((a.status, &a.order), (b.status, &b.order));
    // The decoded copy is what is used: unreadable bytes beside it do not matter…
    let mut copy_only = with_copy.clone();
    copy_only.value = Bytes::from_static(b"\xffnot json");
    let Ok(Outcome::Emit(from_copy)) = stage.process(&copy_only, 1).await else {
        panic!("emits from the decoded copy")
    };
    assert_eq!(
        decode_event(&from_copy[0].value).expect("decodes").order,
        b.order
    );
    // …and a copy of another type is ignored in favour of the bytes.
    let mut other_type = record(&good);
    other_type.decoded = Some(orderflow_pipeline::Decoded::new(42u32));
    let Ok(Outcome::Emit(from_bytes)) = stage.process(&other_type, 1).await else {
        panic!("emits from the bytes")
    };
    assert_eq!(
        decode_event(&from_bytes[0].value).expect("decodes").order,
        b.order
    );

    let bad = event(&[("NOPE", 1)], "tok_visa");
    let Ok(Outcome::Reject(message)) = stage.process(&record(&bad), 1).await else {
        panic!("rejects")
    };
    assert_eq!(message.topic, topology::REJECTED);

    let mut garbage = record(&good);
    garbage.value = Bytes::from_static(b"\xffnot json");
    let err = stage.process(&garbage, 1).await.expect_err("refused");
    assert_eq!(
        err.kind,
        ErrorKind::Permanent,
        "undecodable input is dead-lettered at once, never retried"
    );
}

#[tokio::test]
async fn lapsed_holds_are_released_and_their_orders_rejected_once() {
    use orderflow_pipeline::{Log, SegmentLog};
    use orderflow_stages::expiry::{ExpirySweeper, Sweep};
    use orderflow_stores::OrderStore;
    use orderflow_stores::embedded::EmbeddedOrderStore;

    let (dir, ledger, engine) = ledger().await;
    let log = SegmentLog::open(&dir.path().join("log"), 2).expect("log");
    log.ensure_topics(&topology::all_topics())
        .await
        .expect("topics");
    let log: Arc<dyn Log> = Arc::new(log);
    let orders: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(engine.clone()));
    let journal = Arc::new(EmbeddedPaymentJournal::new(engine));
    let provider = Arc::new(SimulatedProvider::new(journal));
    let lapsing = Reserve::new(ledger.clone(), Duration::from_millis(1));
    let price = Price::new(book(NO_PROMOTIONS, 0, 0), ledger.clone());
    let charge = Charge::new(provider.clone(), ledger.clone());

    // Three orders hold 2 units of A each, with holds that lapse at once. `stuck` is projected
    // and goes no further; `paying` is charged (pinned) in time; `unseen` is not projected yet.
    let mut reserved = Vec::new();
    for _ in 0..3 {
        let accepted = event(&[("A", 2)], "tok_visa");
        let Ok(Step::Advance(r)) = lapsing.handle(accepted.clone(), 1).await else {
            panic!("reserved")
        };
        reserved.push((accepted, r));
    }
    let [
        (stuck_accepted, stuck),
        (paying_accepted, paying),
        (unseen_accepted, unseen),
    ] = <[_; 3]>::try_from(reserved).expect("three");
    orders
        .apply(&[
            stuck_accepted,
            stuck.clone(),
            paying_accepted,
            paying.clone(),
        ])
        .await
        .expect("project");
    let Ok(Step::Advance(paying_priced)) = price.handle(paying, 1).await else {
        panic!("priced")
    };
    let Ok(Step::Advance(charged)) = charge.handle(paying_priced, 1).await else {
        panic!("charged: its hold was pinned before it could lapse")
    };
    assert_eq!(charged.status, OrderStatus::Charged);
    tokio::time::sleep(Duration::from_millis(10)).await;

    let sweeper = ExpirySweeper::new(ledger.clone(), orders.clone(), log.clone(), 100);
    assert_eq!(
        sweeper.sweep().await.expect("sweep"),
        Sweep {
            rejected: 1,
            already_terminal: 0,
            waiting: 1
        }
    );
    // stuck's and unseen's units are back; paying's stay held for shipping.
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!((a.available, a.reserved), (8, 2));
    let rejected = log.read(topology::REJECTED, 10).await.expect("read");
    assert_eq!(rejected.len(), 1);
    let announced = decode_event(&rejected[0].value).expect("decodes");
    assert_eq!(announced.order.id, stuck.order.id);
    assert_eq!(announced.order.customer_id, "c1");
    let why = announced.order.rejection.clone().expect("rejection");
    assert_eq!(
        (why.code, why.after),
        (RejectionCode::ReservationExpired, OrderStatus::Reserved)
    );
    orders.apply(&[announced]).await.expect("project");
    let view = orders
        .get(stuck.order.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(view.status, OrderStatus::Rejected);

    // Once the projector shows `unseen`, the next sweep announces it; then nothing is left.
    orders
        .apply(&[unseen_accepted, unseen.clone()])
        .await
        .expect("project");
    assert_eq!(sweeper.sweep().await.expect("sweep").rejected, 1);
    assert_eq!(sweeper.sweep().await.expect("sweep"), Sweep::default());
    assert_eq!(
        log.read(topology::REJECTED, 10).await.expect("read").len(),
        2
    );

    // If the stuck order reaches charge after all, it is rejected and never charged.
    let Ok(Step::Advance(late)) = price.handle(stuck, 1).await else {
        panic!("priced")
    };
    assert_eq!(
        rejection(charge.handle(late, 1).await.expect("ok")),
        RejectionCode::ReservationExpired
    );
    let captures = provider.captures().await.expect("captures");
    assert_eq!(captures.len(), 1, "only the paying order was captured");
    let a = ledger.level("A").await.expect("level").expect("exists");
    assert!(a.balanced());
}

#[tokio::test]
async fn coupons_discount_count_once_per_order_run_out_and_come_back_on_a_decline() {
    use orderflow_stores::CouponLedger;
    use orderflow_stores::embedded::EmbeddedCoupons;

    let (_dir, ledger, engine) = ledger().await;
    let promotions = book(
        r#"{"promotions":[{"code":"WELCOME10","percent_off_bps":1000,"max_uses":100},
            {"code":"ONCE","amount_off_minor":1000,"max_uses":1}]}"#,
        1000,
        0,
    );
    let coupons: Arc<dyn CouponLedger> = Arc::new(EmbeddedCoupons::new(engine.clone()));
    let validate = Validate::new(catalog(), &["USD".into()], &["US".into()])
        .with_promotions(promotions.clone());
    let reserve = Reserve::new(ledger.clone(), Duration::from_secs(60));
    let price = Price::new(promotions.clone(), ledger.clone()).with_coupons(coupons.clone());
    let charge = Charge::new(
        Arc::new(SimulatedProvider::new(Arc::new(
            EmbeddedPaymentJournal::new(engine),
        ))),
        ledger.clone(),
    )
    .with_coupons(coupons.clone());
    let with_codes = |codes: &[&str], token: &str| {
        let mut e = event(&[("A", 1)], token);
        e.order.coupon_codes = codes.iter().map(|c| (*c).to_owned()).collect();
        e
    };
    let priced = |e: OrderEvent| async {
        let Ok(Step::Advance(v)) = validate.handle(e, 1).await else {
            panic!("validated")
        };
        let Ok(Step::Advance(r)) = reserve.handle(v, 1).await else {
            panic!("reserved")
        };
        price.handle(r, 1).await.expect("ok")
    };

    // By id, ONCE takes 10.00 off 34.99 first, then WELCOME10 10 % of 24.99 (2.499 → 2.50):
    // 22.49 left; the 10 % tax on that is 2.249 → 2.25; 22.49 + 2.25 = 24.74.
    let Step::Advance(first) = priced(with_codes(&["welcome10", "ONCE"], "tok_visa")).await else {
        panic!("priced")
    };
    let totals = first.order.pricing.clone().expect("pricing");
    assert_eq!(
        (
            totals.subtotal.minor,
            totals.discount.minor,
            totals.tax.minor,
            totals.total.minor
        ),
        (3499, 1250, 225, 2474)
    );
    assert_eq!(coupons.uses("ONCE").await.expect("uses"), 1);
    // A repeat of the same order counts nothing more.
    let Ok(Step::Advance(_)) = price
        .handle(first.clone().advance(OrderStatus::Reserved), 2)
        .await
    else {
        panic!("priced again")
    };
    assert_eq!(coupons.uses("ONCE").await.expect("uses"), 1);

    // ONCE is used up: the next order is refused, its stock and its WELCOME10 use come back.
    let before = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!(
        rejection(priced(with_codes(&["WELCOME10", "ONCE"], "tok_visa")).await),
        RejectionCode::CouponExhausted
    );
    let after = ledger.level("A").await.expect("level").expect("exists");
    assert_eq!(
        after.available, before.available,
        "the refused order's hold is released"
    );
    assert_eq!(coupons.uses("WELCOME10").await.expect("uses"), 1);

    // A decline gives the coupon back.
    let Step::Advance(declining) = priced(with_codes(&["WELCOME10"], "tok_decline")).await else {
        panic!("priced")
    };
    assert_eq!(coupons.uses("WELCOME10").await.expect("uses"), 2);
    assert_eq!(
        rejection(charge.handle(declining, 1).await.expect("ok")),
        RejectionCode::PaymentDeclined
    );
    assert_eq!(coupons.uses("WELCOME10").await.expect("uses"), 1);

    // Unknown codes are refused by validate, before any stock is held.
    assert_eq!(
        rejection(
            validate
                .handle(with_codes(&["FREE100"], "tok_visa"), 1)
                .await
                .expect("ok")
        ),
        RejectionCode::Invalid
    );
}

#[tokio::test]
async fn a_lapsed_hold_gives_its_coupon_uses_back_once() {
    use orderflow_pipeline::{Log, SegmentLog};
    use orderflow_stages::expiry::ExpirySweeper;
    use orderflow_stores::embedded::{EmbeddedCoupons, EmbeddedOrderStore};
    use orderflow_stores::{CouponLedger, OrderStore};

    let (dir, ledger, engine) = ledger().await;
    let log = SegmentLog::open(&dir.path().join("log"), 2).expect("log");
    log.ensure_topics(&topology::all_topics())
        .await
        .expect("topics");
    let log: Arc<dyn Log> = Arc::new(log);
    let orders: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(engine.clone()));
    let promotions = book(
        r#"{"promotions":[{"code":"VIP","percent_off_bps":2500,"max_uses":5}]}"#,
        0,
        0,
    );
    let coupons: Arc<dyn CouponLedger> = Arc::new(EmbeddedCoupons::new(engine.clone()));
    let lapsing = Reserve::new(ledger.clone(), Duration::from_millis(1));
    let price = Price::new(promotions.clone(), ledger.clone()).with_coupons(coupons.clone());
    let charge = Charge::new(
        Arc::new(SimulatedProvider::new(Arc::new(
            EmbeddedPaymentJournal::new(engine),
        ))),
        ledger.clone(),
    )
    .with_coupons(coupons.clone());

    let mut accepted = event(&[("A", 1)], "tok_visa");
    accepted.order.coupon_codes = vec!["VIP".into()];
    let Ok(Step::Advance(reserved)) = lapsing.handle(accepted.clone(), 1).await else {
        panic!("reserved")
    };
    let Ok(Step::Advance(priced)) = price.handle(reserved.clone(), 1).await else {
        panic!("priced")
    };
    assert_eq!(coupons.uses("VIP").await.expect("uses"), 1);
    orders
        .apply(&[accepted, reserved, priced.clone()])
        .await
        .expect("project");
    tokio::time::sleep(Duration::from_millis(10)).await;

    let sweeper =
        ExpirySweeper::new(ledger.clone(), orders, log.clone(), 100).with_coupons(coupons.clone());
    assert_eq!(sweeper.sweep().await.expect("sweep").rejected, 1);
    assert_eq!(
        coupons.uses("VIP").await.expect("uses"),
        0,
        "the use came back"
    );
    let rejected = log.read(topology::REJECTED, 10).await.expect("read");
    let announced = decode_event(&rejected[0].value).expect("decodes");
    assert_eq!(announced.order.coupon_codes, vec!["VIP".to_owned()]);

    // The order reaches charge after all: not charged, and the use is not given back twice.
    assert_eq!(
        rejection(charge.handle(priced, 1).await.expect("ok")),
        RejectionCode::ReservationExpired
    );
    assert_eq!(coupons.uses("VIP").await.expect("uses"), 0);
}

#[tokio::test]
async fn the_projector_gives_the_same_views_whatever_the_order_and_repeats() {
    use orderflow_domain::{OrderView, encode_event};
    use orderflow_stages::project::Project;
    use orderflow_stores::OrderStore;
    use orderflow_stores::embedded::{EmbeddedOrderStore, EmbeddedStatusFeed};

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(engine));
    let project = Project::new(store.clone(), Arc::new(EmbeddedStatusFeed::new(16)));

    // 30 orders: most complete, every third is declined after pricing.
    let mut expected = Vec::new();
    let mut records = Vec::new();
    for i in 0..30 {
        let mut e = event(&[("A", 1)], "tok_visa");
        let mut chain = vec![e.clone()];
        for status in [
            OrderStatus::Validated,
            OrderStatus::Reserved,
            OrderStatus::Priced,
        ] {
            e = e.advance(status);
            chain.push(e.clone());
        }
        if i % 3 == 0 {
            chain.push(e.reject("charge", RejectionCode::PaymentDeclined, "card declined"));
        } else {
            for status in [
                OrderStatus::Charged,
                OrderStatus::Shipped,
                OrderStatus::Completed,
            ] {
                e = e.advance(status);
                chain.push(e.clone());
            }
        }
        let mut in_order = OrderView::from_event(&chain[0]);
        for later in &chain[1..] {
            in_order.apply(later);
        }
        expected.push(in_order);
        records.extend(chain);
    }
    // Shuffled, a third of them twice, and some arriving late after everything else.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut delivered: Vec<OrderEvent> = records.clone();
    delivered.extend(records.iter().filter(|_| rng.u8(0..3) == 0).cloned());
    rng.shuffle(&mut delivered);
    delivered.extend(records.iter().step_by(7).cloned());
    for (offset, e) in delivered.iter().enumerate() {
        let record = Record {
            topic: topology::PROJECTOR_INPUTS[0].into(),
            partition: 0,
            offset: offset as u64,
            key: Bytes::from(e.order.id.to_string()),
            value: Bytes::from(encode_event(e).expect("encodes")),
            headers: vec![],
            decoded: None,
        };
        project.process(&record, 1).await.expect("projects");
    }
    for want in expected {
        let got = store
            .get(want.order_id)
            .await
            .expect("get")
            .expect("projected");
        assert_eq!(got, want, "same view and timeline as in order");
        assert_eq!(
            got.timeline
                .iter()
                .filter(|t| t.status.is_terminal())
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn a_retry_priced_with_reloaded_tables_gives_back_a_use_it_no_longer_counts() {
    use orderflow_stores::CouponLedger;
    use orderflow_stores::embedded::EmbeddedCoupons;

    let (_dir, ledger, engine) = ledger().await;
    let coupons: Arc<dyn CouponLedger> = Arc::new(EmbeddedCoupons::new(engine));
    let prices = book(
        r#"{"promotions":[{"code":"ONCE","amount_off_minor":100,"max_uses_per_customer":1}]}"#,
        0,
        0,
    );
    let price = Price::new(prices.clone(), ledger.clone()).with_coupons(coupons.clone());
    let mut order = event(&[("A", 1)], "tok_visa");
    order.order.coupon_codes = vec!["ONCE".into()];
    let Ok(Step::Advance(first)) = price.handle(order.clone(), 1).await else {
        panic!("priced")
    };
    assert_eq!(first.order.pricing.expect("pricing").discount.minor, 100);
    assert_eq!(coupons.uses("ONCE").await.expect("uses"), 1);

    // The first attempt's output was lost; before the retry the tables were reloaded and ONCE
    // now needs 100.00: the retry prices without it, and its use comes back.
    let reloaded = book(
        r#"{"promotions":[{"code":"ONCE","amount_off_minor":100,"max_uses_per_customer":1,
            "min_subtotal_minor":10000}]}"#,
        0,
        0,
    );
    prices.store(reloaded.load_full());
    let Ok(Step::Advance(retried)) = price.handle(order, 2).await else {
        panic!("priced again")
    };
    assert_eq!(retried.order.pricing.expect("pricing").discount.minor, 0);
    assert_eq!(
        coupons.usage("ONCE", "c1").await.expect("usage"),
        orderflow_stores::Usage {
            total: 0,
            customer: 0
        },
        "the use counted by the first attempt is given back"
    );
}

#[tokio::test]
async fn the_projector_writes_one_webhook_per_terminal_status_also_when_replayed_after_a_crash() {
    use orderflow_domain::encode_event;
    use orderflow_stages::deliver::{Endpoint, Endpoints};
    use orderflow_stages::project::Project;
    use orderflow_stores::embedded::{EmbeddedOrderStore, EmbeddedOutbox, EmbeddedStatusFeed};
    use orderflow_stores::{Listing, OrderStore, Outbox};

    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let store: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(engine.clone()));
    let outbox: Arc<dyn Outbox> = Arc::new(EmbeddedOutbox::new(engine));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let endpoints = || {
        Endpoints::new(vec![
            Endpoint::new("all", "http://127.0.0.1:9/hooks", secret, &[]).expect("valid"),
            Endpoint::new(
                "rejections",
                "http://127.0.0.1:9/r",
                secret,
                &["order.rejected".into()],
            )
            .expect("valid"),
        ])
    };
    // Each event from its status's topic: only the terminal topics end an order.
    let record = |e: &OrderEvent, offset: u64| Record {
        topic: match e.status {
            OrderStatus::Completed => topology::COMPLETED,
            OrderStatus::Rejected => topology::REJECTED,
            _ => topology::ACCEPTED,
        }
        .into(),
        partition: 0,
        offset,
        key: Bytes::from(e.order.id.to_string()),
        value: Bytes::from(encode_event(e).expect("encodes")),
        headers: vec![],
        decoded: None,
    };
    let accepted = event(&[("A", 1)], "tok_visa");
    let completed = accepted.clone().advance(OrderStatus::Completed);
    let declined = event(&[("A", 1)], "tok_decline");
    let rejected =
        declined
            .clone()
            .reject("charge", RejectionCode::PaymentDeclined, "card declined");

    // The views reach the store, but the process dies before the messages are written: the
    // store already has both orders' terminal views when the events come again.
    store
        .apply(&[
            accepted.clone(),
            completed.clone(),
            declined.clone(),
            rejected.clone(),
        ])
        .await
        .expect("applies");
    store.flush().await.expect("flushes");

    let project = Project::new(store.clone(), Arc::new(EmbeddedStatusFeed::new(16)))
        .with_webhooks(outbox.clone(), endpoints());
    for (offset, e) in [&accepted, &completed, &declined, &rejected, &completed]
        .into_iter()
        .enumerate()
    {
        project
            .process(&record(e, offset as u64), 1)
            .await
            .expect("projects");
    }
    project.flush().await.expect("flushes");
    // The outbox's messages and their (event, endpoint), sorted.
    let kinds_in = |outbox: Arc<dyn Outbox>| async move {
        let messages = outbox
            .list(&Listing {
                limit: 10,
                ..Listing::default()
            })
            .await
            .expect("lists");
        let mut kinds: Vec<(String, String)> = messages
            .iter()
            .map(|d| (d.event.clone(), d.destination.clone()))
            .collect();
        kinds.sort();
        (messages, kinds)
    };
    let (written, seen) = kinds_in(outbox.clone()).await;
    assert_eq!(
        seen,
        [
            ("order.completed".to_owned(), "all".to_owned()),
            ("order.rejected".to_owned(), "all".to_owned()),
            ("order.rejected".to_owned(), "rejections".to_owned()),
        ],
        "one per terminal status and subscribed endpoint, the repeat included once"
    );
    // A refund of the completed order, long after (its delivered message purged: a new outbox
    // here) carries the order's terminal status but is no ending: nothing is announced again.
    let later: Arc<dyn Outbox> = Arc::new(EmbeddedOutbox::new(
        Engine::open(&dir.path().join("later")).expect("engine"),
    ));
    let refunding = Project::new(store.clone(), Arc::new(EmbeddedStatusFeed::new(16)))
        .with_webhooks(later.clone(), endpoints());
    let mut refund = completed.clone();
    refund.order.refunds = vec![orderflow_domain::Refund {
        refund_id: "rf_1".into(),
        amount: orderflow_domain::Money::new(100, Currency::parse("USD").expect("valid")),
        reason: "test".into(),
        status: RefundStatus::Pending,
        at: Utc::now(),
        detail: None,
    }];
    let mut refund_record = record(&refund, 9);
    refund_record.topic = topology::REFUNDS_REQUESTED.into();
    refunding
        .process(&refund_record, 1)
        .await
        .expect("projects");
    refunding.flush().await.expect("flushes");
    assert_eq!(
        later.count().await.expect("counts"),
        0,
        "no ending announced again"
    );
    // Paid: one `order.refunded` per refund and subscribed endpoint, once however often.
    let mut paid = refund.clone();
    paid.order.refunds[0].status = RefundStatus::Succeeded;
    let mut paid_record = record(&paid, 10);
    paid_record.topic = topology::REFUNDS_COMPLETED.into();
    for _ in 0..2 {
        refunding.process(&paid_record, 1).await.expect("projects");
        refunding.flush().await.expect("flushes");
    }
    let (_, announced) = kinds_in(later.clone()).await;
    assert_eq!(announced, [("order.refunded".to_owned(), "all".to_owned())]);
    assert_eq!(
        store
            .get(completed.order.id)
            .await
            .expect("reads")
            .map(|v| v.refunds.len()),
        Some(1)
    );
    let body: serde_json::Value =
        serde_json::from_str(&written[0].payload).expect("the body is JSON");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("order."))
    );
    assert!(body["data"]["order_id"].is_string() && body["timestamp"].is_string());
}

/// The stores one cancel test runs on.
struct Books {
    ledger: Arc<dyn StockLedger>,
    coupons: Arc<dyn orderflow_stores::CouponLedger>,
    refunds: Arc<dyn orderflow_stores::RefundLedger>,
    provider: Arc<SimulatedProvider>,
}

/// Each order stage in pipeline order, and the refund step.
struct Pipeline {
    stages: Vec<(&'static str, Box<dyn OrderStage>)>,
    refund: orderflow_stages::refund::RefundStep,
}

fn pipeline(books: &Books, engine: Engine) -> Pipeline {
    use orderflow_stages::notify::Notify;
    use orderflow_stages::ship::Ship;
    let promotions = book(
        r#"{"promotions":[{"code":"SAVE5","amount_off_minor":500,"max_uses":10}]}"#,
        0,
        0,
    );
    let stages: Vec<(&'static str, Box<dyn OrderStage>)> = vec![
        (
            "validate",
            Box::new(
                Validate::new(catalog(), &["USD".into()], &["US".into()])
                    .with_promotions(promotions.clone())
                    .with_ledger(books.ledger.clone()),
            ),
        ),
        (
            "reserve",
            Box::new(Reserve::new(books.ledger.clone(), Duration::from_secs(60))),
        ),
        (
            "price",
            Box::new(
                Price::new(promotions, books.ledger.clone()).with_coupons(books.coupons.clone()),
            ),
        ),
        (
            "charge",
            Box::new(
                Charge::new(books.provider.clone(), books.ledger.clone())
                    .with_coupons(books.coupons.clone())
                    .with_refunds(books.refunds.clone()),
            ),
        ),
        (
            "ship",
            Box::new(
                Ship::new(books.ledger.clone(), "SimPost")
                    .with_compensation(books.coupons.clone(), books.refunds.clone()),
            ),
        ),
        (
            "notify",
            Box::new(Notify::new(Arc::new(
                orderflow_stores::embedded::EmbeddedOutbox::new(engine),
            ))),
        ),
    ];
    Pipeline {
        stages,
        refund: orderflow_stages::refund::RefundStep::new(
            books.provider.clone(),
            books.refunds.clone(),
        ),
    }
}

/// Runs `event` through the stages from `from` to its end; a retryable failure (a flaky
/// provider) is tried again, as the runner would. The last event and how it ended.
async fn run_from(p: &Pipeline, mut event: OrderEvent, from: usize) -> (OrderEvent, &'static str) {
    for (name, stage) in &p.stages[from..] {
        let step = loop {
            match stage.handle(event.clone(), 1).await {
                Ok(step) => break step,
                Err(e) if e.kind == ErrorKind::Retryable => continue,
                Err(e) => panic!("{name}: {e:?}"),
            }
        };
        match step {
            Step::Advance(next) => event = next,
            Step::Reject(last) => return (last, "rejected"),
            Step::Cancel(last) => return (last, "cancelled"),
        }
    }
    (event, "completed")
}

/// The whole lifecycle with a cancel before each stage in turn, and while a flaky provider is
/// being retried: every cancel accepted before the shipment ends `cancelled` with the stock,
/// the promotion use and any capture given back, each once; after it, the cancel is refused.
async fn cancel_at_every_point(books: Books, engine: Engine) {
    let p = pipeline(&books, engine);
    books
        .ledger
        .seed(&[SkuStock::new("A", 100)])
        .await
        .expect("seed");
    let order_with = |token: &str| {
        let mut e = event(&[("A", 2)], token);
        e.order.coupon_codes = vec!["SAVE5".into()];
        e
    };
    let stock = || async {
        let a = books
            .ledger
            .level("A")
            .await
            .expect("level")
            .expect("exists");
        (a.initial - a.available, a.reserved, a.committed)
    };
    for before in 0..=p.stages.len() {
        let mut event = order_with("tok_visa");
        let id = event.order.id;
        if before > 0 {
            let (reached, how) = run_from_to(&p, event, before).await;
            assert_eq!(how, "advanced", "before stage {before}");
            event = reached;
        }
        let answer = books.ledger.cancel(id).await.expect("cancel");
        let shipped = before > 4;
        assert_eq!(
            answer,
            if shipped {
                CancelOutcome::Shipped
            } else {
                CancelOutcome::Cancelled
            },
            "cancel before stage {before}"
        );
        if shipped {
            // The capture stands; a shipped order is refunded by an admin instead.
            let (_, how) = run_from(&p, event, before).await;
            assert_eq!(how, "completed");
            continue;
        }
        {
            let (last, how) = run_from(&p, event, before).await;
            assert_eq!(how, "cancelled", "cancel before stage {before}");
            assert_eq!(last.status, OrderStatus::Cancelled);
            let captured = last.order.payment.as_ref().map_or(0, |p| p.amount.minor);
            let pending: Vec<_> = last.order.refunds.clone();
            if captured > 0 {
                assert_eq!(pending.len(), 1, "one refund of the capture");
                assert_eq!(pending[0].amount.minor, captured);
                let Ok(Step::Advance(paid)) = p.refund.handle(last.clone(), 1).await else {
                    panic!("refunded")
                };
                assert_eq!(paid.order.refunds[0].status, RefundStatus::Succeeded);
                // The stage again (a redelivery): the same refund, paid once.
                let (again, _) = run_from(&p, last.clone(), before.max(4)).await;
                let ids = |r: &[orderflow_domain::Refund]| {
                    r.iter()
                        .map(|r| (r.refund_id.clone(), r.amount))
                        .collect::<Vec<_>>()
                };
                assert_eq!(ids(&again.order.refunds), ids(&pending));
                let Ok(Step::Advance(_)) = p.refund.handle(again, 1).await else {
                    panic!("refunded")
                };
            } else {
                assert!(pending.is_empty(), "nothing captured, nothing to refund");
            }
        }
        assert_money_and_stock(&books, id).await;
        assert_eq!(books.coupons.uses("SAVE5").await.expect("uses"), 0);
    }
    // Stock and promotion uses: only the two orders that shipped (a cancel before notify and
    // after it) keep theirs.
    assert_eq!(stock().await, (4, 0, 4));
    assert_eq!(books.coupons.uses("SAVE5").await.expect("uses"), 2);

    // A charge that captured and died before passing the order on: the cancel lands, the
    // redelivered charge finds the capture (without charging again) and refunds it whole.
    let event = order_with("tok_visa");
    let id = event.order.id;
    let (priced, _) = run_from_to(&p, event, 3).await;
    let Ok(Step::Advance(_lost)) = p.stages[3].1.handle(priced.clone(), 1).await else {
        panic!("charged")
    };
    assert_eq!(
        books.ledger.cancel(id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let (last, how) = run_from(&p, priced, 3).await;
    assert_eq!(how, "cancelled");
    let captured = last
        .order
        .payment
        .as_ref()
        .expect("the capture found")
        .amount;
    assert_eq!(last.order.refunds.len(), 1);
    assert_eq!(last.order.refunds[0].amount, captured);
    let Ok(Step::Advance(_)) = p.refund.handle(last, 1).await else {
        panic!("refunded")
    };
    assert_money_and_stock(&books, id).await;
    assert_eq!(stock().await, (4, 0, 4));
    assert_eq!(books.coupons.uses("SAVE5").await.expect("uses"), 2);

    // A flaky provider being retried at charge: the cancel lands between two tries.
    let event = order_with("tok_flaky");
    let id = event.order.id;
    let (priced, _) = run_from_to(&p, event, 3).await;
    let charge = &p.stages[3].1;
    assert!(
        charge.handle(priced.clone(), 1).await.is_err(),
        "first try fails"
    );
    assert_eq!(
        books.ledger.cancel(id).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let (last, how) = run_from(&p, priced, 3).await;
    assert_eq!((how, last.order.payment.is_none()), ("cancelled", true));
    assert_money_and_stock(&books, id).await;
    assert_eq!(stock().await, (4, 0, 4));
    assert_eq!(books.coupons.uses("SAVE5").await.expect("uses"), 2);
}

/// Runs `event` through the stages before `to`; "advanced" if it got there.
async fn run_from_to(p: &Pipeline, mut event: OrderEvent, to: usize) -> (OrderEvent, &'static str) {
    for (name, stage) in &p.stages[..to] {
        match stage
            .handle(event, 1)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
        {
            Step::Advance(next) => event = next,
            Step::Reject(last) => return (last, "rejected"),
            Step::Cancel(last) => return (last, "cancelled"),
        }
    }
    (event, "advanced")
}

/// The order was captured at most once, and what its refunds paid equals the capture (both 0
/// when nothing was captured).
async fn assert_money_and_stock(books: &Books, id: OrderId) {
    let captures = books.provider.captures().await.expect("captures");
    let captured: Vec<_> = captures
        .iter()
        .filter(|(key, _)| key.starts_with(&id.to_string()))
        .collect();
    assert!(captured.len() <= 1, "captured once at most");
    let refunds = books.provider.refunds().await.expect("refunds");
    let refunded: i64 = refunds
        .iter()
        .filter(|(order, _, _)| *order == id)
        .map(|(_, _, m)| m.minor)
        .sum();
    assert_eq!(
        refunded,
        captured.first().map_or(0, |(_, m)| m.minor),
        "refunded exactly the capture"
    );
    let a = books
        .ledger
        .level("A")
        .await
        .expect("level")
        .expect("exists");
    assert!(a.balanced());
}

#[tokio::test]
async fn a_cancel_at_every_point_ends_cancelled_with_everything_given_back_embedded() {
    use orderflow_stores::embedded::{EmbeddedCoupons, EmbeddedRefundLedger};
    let (_dir, ledger, engine) = ledger().await;
    let books = Books {
        ledger,
        coupons: Arc::new(EmbeddedCoupons::new(engine.clone())),
        refunds: Arc::new(EmbeddedRefundLedger::new(engine.clone())),
        provider: Arc::new(SimulatedProvider::new(Arc::new(
            EmbeddedPaymentJournal::new(engine.clone()),
        ))),
    };
    cancel_at_every_point(books, engine).await;
}

#[tokio::test]
async fn a_cancel_at_every_point_ends_cancelled_with_everything_given_back_on_redis() {
    use orderflow_stores::redis::{
        RedisConfig, RedisCoupons, RedisHot, RedisLedger, RedisPaymentJournal, RedisRefundLedger,
    };
    let server = orderflow_testkit::RedisServer::start();
    let hot = RedisHot::connect(RedisConfig::new(server.url()))
        .await
        .expect("redis");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let books = Books {
        ledger: Arc::new(RedisLedger::new(hot.clone())),
        coupons: Arc::new(RedisCoupons::new(hot.clone())),
        refunds: Arc::new(RedisRefundLedger::new(hot.clone())),
        provider: Arc::new(SimulatedProvider::new(Arc::new(RedisPaymentJournal::new(
            hot,
        )))),
    };
    cancel_at_every_point(books, engine).await;
}
