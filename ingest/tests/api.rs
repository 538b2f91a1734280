//! The API against real embedded backends, request by request (`oneshot`): every error class,
//! and proof that a refused request never reaches the log.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use orderflow_domain::pricing::{ShippingTable, TaxTable};
use orderflow_domain::{
    Catalog, CatalogItem, Currency, OrderEvent, OrderId, PriceBook, Promotions, TableError,
    decode_event,
};
use orderflow_ingest::limits::Backlog;
use orderflow_ingest::poll::HeldPolls;
use orderflow_ingest::pricing::{Pricing, Reload};
use orderflow_ingest::{ApiSettings, AppParts, AppState, Auth, app};
use orderflow_pipeline::{Log, SegmentLog};
use orderflow_storage::kv::Engine;
use orderflow_stores::SkuStock;
use orderflow_stores::embedded::{
    EmbeddedCoupons, EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore, EmbeddedOutbox,
    EmbeddedStatusFeed, LocalRateLimiter,
};
use orderflow_stores::{CouponLedger, OrderStore, Rate, StockLedger, UseLimits};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const TOPIC: &str = "orders.accepted";
const LIMIT: usize = 8192;

struct Harness {
    _dir: tempfile::TempDir,
    embedded_log: SegmentLog,
    router: Router,
    log: Arc<dyn Log>,
    orders: Arc<dyn OrderStore>,
    auth: Arc<Auth>,
    backlog: Arc<Backlog>,
    coupons: Arc<dyn CouponLedger>,
    promotions: Arc<parking_lot::Mutex<String>>,
    feed: Arc<EmbeddedStatusFeed>,
}

/// The harness's promotions: a code good once per customer, and 10 % off automatically from
/// 50.00.
const PROMOTIONS: &str = r#"{"promotions":[
    {"code":"ONCE","amount_off_minor":300,"max_uses_per_customer":1},
    {"id":"ten-from-50","percent_off_bps":1000,"min_subtotal_minor":5000}]}"#;
const TAX: &str = r#"{"jurisdictions":[
    {"id":"US-CA","country":"US","region":"CA","rate_bps":725},
    {"id":"DE","country":"DE","rate_bps":1900,"prices_include_tax":true}]}"#;
const SHIPPING: &str = r#"{"zones":[{"id":"all","countries":["*"],
    "bands":[{"up_to_grams":1000,"fee_minor":500},{"fee_minor":900}]}]}"#;

/// Tables read "again" from the promotions text the test holds, like a file edited in place.
struct Tables {
    catalog: Arc<Catalog>,
    promotions: Arc<parking_lot::Mutex<String>>,
}

impl Reload for Tables {
    fn load(&self) -> Result<PriceBook, TableError> {
        let text = self.promotions.lock().clone();
        Ok(PriceBook::new(
            self.catalog.clone(),
            Promotions::parse(&text, "promotions.json")?,
            TaxTable::parse(TAX, "tax.json")?,
            ShippingTable::parse(SHIPPING, "shipping.json")?,
            &format!("v{}", text.len()),
        ))
    }
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

/// A harness whose settings `adjust` changed from the tests' defaults (no limits).
async fn harness_with(adjust: impl FnOnce(&mut ApiSettings)) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path()).expect("engine");
    let embedded_log = SegmentLog::open(&dir.path().join("log"), 2).expect("log");
    let log: Arc<dyn Log> = Arc::new(embedded_log.clone());
    log.ensure_topics(&[TOPIC.to_owned()])
        .await
        .expect("topics");
    let ledger = Arc::new(EmbeddedLedger::open(engine.clone()).expect("ledger"));
    ledger
        .seed(&[SkuStock::new("SKU-0001", 10)])
        .await
        .expect("seed");
    let orders: Arc<dyn OrderStore> = Arc::new(EmbeddedOrderStore::new(engine.clone()));
    let item = CatalogItem {
        sku: "SKU-0001".into(),
        name: "Mug".into(),
        price_minor: 1299,
        category: "home".into(),
        weight_grams: 400,
        stock: 10,
    };
    let catalog =
        Catalog::new(Currency::parse("USD").expect("valid"), vec![item]).expect("catalog");
    let auth = Arc::new(Auth::new(b"test-secret"));
    let mut settings = ApiSettings {
        max_body_bytes: LIMIT,
        accepted_topic: TOPIC.into(),
        cancel_requested_topic: "orders.cancel_requested".into(),
        refunds_topic: "refunds.requested".into(),
        idempotency_ttl: Duration::from_secs(86_400),
        customer_limit: None,
        ip_limit: None,
        client_ip_header: None,
        max_backlog: None,
        cors_origins: vec!["https://shop.example".into()],
        max_in_flight: 64,
    };
    adjust(&mut settings);
    let backlog = Arc::new(Backlog::default());
    let catalog = Arc::new(catalog);
    let coupons: Arc<dyn CouponLedger> = Arc::new(EmbeddedCoupons::new(engine.clone()));
    let promotions = Arc::new(parking_lot::Mutex::new(PROMOTIONS.to_owned()));
    let tables = Tables {
        catalog: catalog.clone(),
        promotions: promotions.clone(),
    };
    let pricing = Arc::new(Pricing {
        book: tables.load().expect("tables").shared(),
        coupons: coupons.clone(),
        tables: Some(Arc::new(tables)),
        currencies: vec!["USD".into()],
        countries: vec!["US".into(), "DE".into()],
    });
    let feed = Arc::new(EmbeddedStatusFeed::new(64));
    let state = AppState::new(AppParts {
        log: log.clone(),
        ledger,
        refunds: Arc::new(orderflow_stores::embedded::EmbeddedRefundLedger::new(
            engine.clone(),
        )),
        idempotency: Arc::new(EmbeddedIdempotency::new(engine.clone())),
        orders: orders.clone(),
        limiter: Arc::new(LocalRateLimiter::new()),
        feed: feed.clone(),
        polls: Arc::new(HeldPolls::new(2)),
        outbox: Arc::new(EmbeddedOutbox::new(engine.clone())),
        catalog,
        pricing,
        auth: auth.clone(),
        metrics: None,
        backlog: backlog.clone(),
        settings: Arc::new(settings),
    });
    Harness {
        _dir: dir,
        embedded_log,
        router: app(state),
        log,
        orders,
        auth,
        backlog,
        coupons,
        promotions,
        feed,
    }
}

fn checkout_body() -> Value {
    json!({
        "currency": "USD",
        "lines": [{"sku": "SKU-0001", "quantity": 2}],
        "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "SF", "region": "CA",
                             "postal_code": "94107", "country": "US"},
        "coupon_codes": [],
        "payment": {"token": "tok_visa"}
    })
}

impl Harness {
    fn token(&self, sub: &str, scope: &str) -> String {
        self.auth
            .mint(sub, scope, Duration::from_secs(300))
            .expect("mints")
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("responds");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, headers, body)
    }

    async fn post(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<Body>,
        key: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::post("/v1/checkouts").header(header::CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request.body(body.into()).expect("request")).await
    }

    async fn appended(&self) -> Vec<OrderEvent> {
        let records = self.log.read(TOPIC, 1000).await.expect("read");
        records
            .iter()
            .map(|r| decode_event(&r.value).expect("decodes"))
            .collect()
    }
}

fn assert_problem(
    status: StatusCode,
    headers: &axum::http::HeaderMap,
    body: &Value,
    expected: u16,
    slug: &str,
) {
    assert_eq!(status.as_u16(), expected, "body: {body}");
    assert_eq!(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert_eq!(body["type"], format!("/problems/{slug}"), "body: {body}");
    assert_eq!(body["status"], expected);
    assert!(body["title"].is_string() && body["detail"].is_string());
}

#[tokio::test]
async fn every_bad_input_class_gets_its_problem_and_nothing_is_appended() {
    let h = harness().await;
    let good = h.token("cust-1", "checkout");
    let body = checkout_body().to_string();

    // 401: no token, garbage token, token signed with another key.
    let foreign = Auth::new(b"other")
        .mint("cust-1", "checkout", Duration::from_secs(60))
        .expect("mints");
    for token in [None, Some("garbage"), Some(foreign.as_str())] {
        let (s, hd, b) = h.post(token, "application/json", body.clone(), None).await;
        assert_problem(s, &hd, &b, 401, "unauthorized");
        assert_eq!(
            hd.get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    // 403: valid token without the checkout scope.
    let (s, hd, b) = h
        .post(
            Some(&h.token("cust-1", "orders:read")),
            "application/json",
            body.clone(),
            None,
        )
        .await;
    assert_problem(s, &hd, &b, 403, "forbidden");
    // 415: not JSON.
    let (s, hd, b) = h.post(Some(&good), "text/plain", body.clone(), None).await;
    assert_problem(s, &hd, &b, 415, "unsupported-media-type");
    // 413: larger than the limit.
    let mut big = checkout_body();
    big["shipping_address"]["line1"] = json!("x".repeat(LIMIT));
    let (s, hd, b) = h
        .post(Some(&good), "application/json", big.to_string(), None)
        .await;
    assert_problem(s, &hd, &b, 413, "payload-too-large");
    // 400: not JSON at all, and JSON of the wrong shape.
    let (s, hd, b) = h
        .post(Some(&good), "application/json", "{\"currency\":", None)
        .await;
    assert_problem(s, &hd, &b, 400, "malformed-request");
    let mut wrong = checkout_body();
    wrong["lines"][0]["quantity"] = json!("two");
    let (s, hd, b) = h
        .post(Some(&good), "application/json", wrong.to_string(), None)
        .await;
    assert_problem(s, &hd, &b, 400, "malformed-request");
    // 400: an Idempotency-Key over 255 characters.
    let (s, hd, b) = h
        .post(
            Some(&good),
            "application/json",
            body.clone(),
            Some(&"k".repeat(256)),
        )
        .await;
    assert_problem(s, &hd, &b, 400, "malformed-request");
    // 422: readable but unacceptable values, each named.
    let mut bad = checkout_body();
    bad["lines"][0]["quantity"] = json!(0);
    bad["currency"] = json!("dollars");
    let (s, hd, b) = h
        .post(Some(&good), "application/json", bad.to_string(), None)
        .await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    let errors = b["errors"].as_array().expect("errors listed");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| {
        e.as_str()
            .is_some_and(|e| e.starts_with("lines[0].quantity"))
    }));
    let mut many = checkout_body();
    many["lines"] = json!(vec![json!({"sku": "SKU-0001", "quantity": 1}); 101]);
    let (s, hd, b) = h
        .post(Some(&good), "application/json", many.to_string(), None)
        .await;
    assert_problem(s, &hd, &b, 422, "invalid-request");

    assert!(
        h.appended().await.is_empty(),
        "a refused request reached the log"
    );
}

#[tokio::test]
async fn a_checkout_is_appended_once_and_idempotency_keys_replay() {
    let h = harness().await;
    let token = h.token("cust-1", "checkout");
    let body = checkout_body().to_string();

    let (s, hd, b) = h
        .post(
            Some(&token),
            "application/json; charset=utf-8",
            body.clone(),
            Some("key-1"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["status_url"], format!("/v1/orders/{id}"));
    assert_eq!(b["events_url"], format!("/v1/orders/{id}/ws"));
    assert_eq!(
        hd.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/v1/orders/{id}").as_str())
    );

    let appended = h.appended().await;
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].order.id.to_string(), id);
    assert_eq!(appended[0].order.customer_id, "cust-1");

    // Same key, same meaning (other formatting): the same order, not a new one, at once.
    let reformatted = serde_json::to_string_pretty(&checkout_body()).expect("json");
    let (s, hd, b) = h
        .post(Some(&token), "application/json", reformatted, Some("key-1"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["order_id"], id.as_str());
    assert_eq!(
        hd.get("idempotent-replayed").and_then(|v| v.to_str().ok()),
        Some("true")
    );

    // Same key, another body: 422. Another customer may use the same key freely.
    let mut other = checkout_body();
    other["lines"][0]["quantity"] = json!(3);
    let (s, hd, b) = h
        .post(
            Some(&token),
            "application/json",
            other.to_string(),
            Some("key-1"),
        )
        .await;
    assert_problem(s, &hd, &b, 422, "idempotency-key-reused");
    let (s, _, b) = h
        .post(
            Some(&h.token("cust-2", "checkout")),
            "application/json",
            body,
            Some("key-1"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_ne!(b["order_id"], id.as_str());

    assert_eq!(h.appended().await.len(), 2);
}

#[tokio::test]
async fn orders_are_visible_to_their_owner_and_admins_only() {
    let h = harness().await;
    let (s, _, b) = h
        .post(
            Some(&h.token("cust-1", "checkout")),
            "application/json",
            checkout_body().to_string(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let id = b["order_id"].as_str().expect("id").to_owned();
    let get = |token: String, id: String| {
        Request::get(format!("/v1/orders/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request")
    };

    let (s, hd, b) = h
        .send(get(h.token("cust-1", "orders:read"), id.clone()))
        .await;
    assert_problem(s, &hd, &b, 404, "not-found");

    h.orders.apply(&h.appended().await).await.expect("projects");
    let (s, _, b) = h
        .send(get(h.token("cust-1", "orders:read"), id.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "accepted");
    assert_eq!(b["timeline"][0]["status"], "accepted");
    assert_eq!(b["lines"][0]["sku"], "SKU-0001");

    let (s, hd, b) = h
        .send(get(h.token("cust-2", "orders:read"), id.clone()))
        .await;
    assert_problem(s, &hd, &b, 404, "not-found");
    let (s, _, _) = h.send(get(h.token("ops", "admin"), id.clone())).await;
    assert_eq!(s, StatusCode::OK);
    // Reading needs scope orders:read (or admin), even for the owner.
    let (s, hd, b) = h.send(get(h.token("cust-1", "checkout"), id.clone())).await;
    assert_problem(s, &hd, &b, 403, "forbidden");
    let (s, hd, b) = h
        .send(get(h.token("cust-1", "orders:read"), "not-an-id".into()))
        .await;
    assert_problem(s, &hd, &b, 400, "malformed-request");
    let unauthenticated = Request::get(format!("/v1/orders/{id}"))
        .body(Body::empty())
        .expect("request");
    let (s, hd, b) = h.send(unauthenticated).await;
    assert_problem(s, &hd, &b, 401, "unauthorized");
}

#[tokio::test]
async fn admins_read_and_set_stock_and_the_catalog_shows_it() {
    let h = harness().await;
    let admin = h.token("ops", "admin");
    let put = |token: &str, sku: &str, body: &str| {
        Request::put(format!("/v1/admin/stock/{sku}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    let (s, hd, b) = h
        .send(put(
            &h.token("cust-1", "checkout"),
            "SKU-0001",
            "{\"available\":5}",
        ))
        .await;
    assert_problem(s, &hd, &b, 403, "forbidden");
    let (s, _, b) = h.send(put(&admin, "SKU-0001", "{\"available\":25}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["available"].as_u64(), b["initial"].as_u64()),
        (Some(25), Some(25))
    );
    let (s, hd, b) = h.send(put(&admin, "SKU-0001", "{\"available\":-1}")).await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    let (s, hd, b) = h.send(put(&admin, "SKU-9999", "{\"available\":1}")).await;
    assert_problem(s, &hd, &b, 404, "not-found");

    let get = Request::get("/v1/admin/stock/SKU-0001")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::empty())
        .expect("request");
    let (s, _, b) = h.send(get).await;
    assert_eq!((s, b["available"].as_u64()), (StatusCode::OK, Some(25)));

    let audit = Request::get("/v1/admin/audit")
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .body(Body::empty())
        .expect("request");
    let (s, _, b) = h.send(audit).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["ok"].as_bool(), b["skus"].as_u64()),
        (Some(true), Some(1)),
        "{b}"
    );
    assert_eq!(b["breaches"].as_array().map(Vec::len), Some(0));
    let not_admin = Request::get("/v1/admin/audit")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", h.token("cust-1", "checkout")),
        )
        .body(Body::empty())
        .expect("request");
    let (s, hd, b) = h.send(not_admin).await;
    assert_problem(s, &hd, &b, 403, "forbidden");

    let (s, _, b) = h
        .send(
            Request::get("/v1/catalog")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"][0]["sku"], "SKU-0001");
    assert_eq!(b["items"][0]["available"], 25);
    assert_eq!(b["items"][0]["price"]["minor"], 1299);

    let (s, _, b) = h
        .send(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, hd, b) = h
        .send(Request::get("/nope").body(Body::empty()).expect("request"))
        .await;
    assert_problem(s, &hd, &b, 404, "not-found");
    let (s, hd, b) = h
        .send(
            Request::delete("/v1/catalog")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_problem(s, &hd, &b, 405, "method-not-allowed");
}

#[tokio::test]
async fn a_log_that_cannot_append_gets_503_with_retry_after_never_202() {
    let h = harness().await;
    let token = h.token("cust-1", "checkout");
    h.embedded_log.close();
    for key in [None, Some("key-503")] {
        let (s, hd, b) = h
            .post(
                Some(&token),
                "application/json",
                checkout_body().to_string(),
                key,
            )
            .await;
        assert_problem(s, &hd, &b, 503, "unavailable");
        assert_eq!(
            hd.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    let (s, hd, b) = h
        .send(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_problem(s, &hd, &b, 503, "unavailable");
    assert!(h.appended().await.is_empty());
}

/// The document is generated from the handlers (`orderflow_ingest::openapi`); this checks it
/// against the router: every route `app` serves is documented and every documented route is
/// served, and what each answers without a token is among its documented answers.
#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let h = harness().await;
    let (s, _, doc) = h
        .send(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let routes = [
        ("/v1/checkouts", "post"),
        ("/v1/quotes", "post"),
        ("/v1/orders", "get"),
        ("/v1/orders/{id}", "get"),
        ("/v1/orders/{id}/ws", "get"),
        ("/v1/catalog", "get"),
        ("/v1/admin/stock/{sku}", "get"),
        ("/v1/admin/stock/{sku}", "put"),
        ("/v1/admin/audit", "get"),
        ("/v1/admin/pricing", "get"),
        ("/v1/admin/pricing/reload", "post"),
        ("/v1/admin/webhooks/deliveries", "get"),
        ("/v1/admin/webhooks/deliveries/{id}/retry", "post"),
        ("/v1/orders/{id}/cancel", "post"),
        ("/v1/admin/orders/{id}/refunds", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    for (path, method) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
        // And every documented route is served (not the 404 fallback).
        let uri = path
            .replace("{id}", "0190a0e2-0000-7000-8000-000000000000")
            .replace("{sku}", "SKU-0001");
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let (status, _, body) = h.send(request).await;
        assert_ne!(
            body["detail"], "no such route",
            "{method} {path} is documented but not routed"
        );
        let documented = paths[path][method]["responses"]
            .as_object()
            .expect("responses");
        assert!(
            documented.contains_key(status.as_str()),
            "{method} {path} answers {status} without a token, which it does not document"
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed"
        );
        // Without a token or an upgrade, each route still answers with problem+json or its body.
        if path == "/v1/orders/{id}/ws" {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "a plain GET without a token: {body}"
            );
        }
    }
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().map_or(0, |m| m.len()))
            .sum::<usize>(),
        routes.len(),
        "undocumented extras in the document"
    );
}

/// The 202 body is written by hand for speed; it must still be the documented `Accepted`, and
/// an order's view the documented `Order`.
#[tokio::test]
async fn answers_have_the_documented_shapes() {
    let h = harness().await;
    let token = h.token("alice", "checkout orders:read");
    let (status, _, body) = h
        .post(
            Some(&token),
            "application/json",
            checkout_body().to_string(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let accepted: orderflow_ingest::openapi::AcceptedBody =
        serde_json::from_value(body.clone()).expect("the documented Accepted shape");
    assert_eq!(
        accepted.status_url,
        format!("/v1/orders/{}", accepted.order_id)
    );
    assert_eq!(accepted.events_url, format!("{}/ws", accepted.status_url));
    let (status, _, problem) = h
        .post(None, "application/json", checkout_body().to_string(), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let _: orderflow_ingest::problem::ProblemBody =
        serde_json::from_value(problem).expect("the documented Problem shape");
}

#[tokio::test]
async fn a_customer_over_its_budget_gets_429_with_retry_after_and_nothing_is_appended() {
    let h = harness_with(|s| {
        s.customer_limit = Some(Rate {
            per_second: 1,
            burst: 2,
        })
    })
    .await;
    let alice = h.token("alice", "checkout");
    let body = checkout_body().to_string();
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let (status, headers, problem) = h
            .post(Some(&alice), "application/json", body.clone(), None)
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((status, headers.clone(), problem.clone()));
        }
        statuses.push(status);
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    // The burst and the steady token (a slow machine may earn one more).
    assert!((2..=4).contains(&accepted), "{statuses:?}");
    let (status, headers, problem) = refused.expect("some were refused");
    assert_problem(status, &headers, &problem, 429, "rate-limited");
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        h.appended().await.len(),
        accepted,
        "refused checkouts never reach the log"
    );
    // Budgets are per customer.
    let bob = h.token("bob", "checkout");
    let (status, _, first) = h
        .post(Some(&bob), "application/json", body.clone(), Some("bob-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Over budget, a retry of an accepted checkout still gets its 202 and order id back; a
    // new one is refused.
    for _ in 0..3 {
        let (status, _, again) = h
            .post(Some(&bob), "application/json", body.clone(), Some("bob-1"))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(again["order_id"], first["order_id"]);
    }
    let mut statuses = Vec::new();
    for i in 0..4 {
        let key = format!("bob-new-{i}");
        let (status, _, _) = h
            .post(Some(&bob), "application/json", body.clone(), Some(&key))
            .await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn order_history_pages_newest_first_and_shows_only_the_callers_orders() {
    use orderflow_domain::{CheckoutRequest, Order, OrderId, OrderStatus};
    let h = harness().await;
    let request: CheckoutRequest = serde_json::from_value(checkout_body()).expect("body");
    let mut alice = Vec::new();
    let mut events = Vec::new();
    for i in 0..280 {
        let id = OrderId::new();
        // Bob's orders are minted in between Alice's.
        let customer = if i % 10 == 7 || alice.len() == 250 {
            "bob"
        } else {
            alice.push(id.to_string());
            "alice"
        };
        let now = chrono::Utc::now();
        events.push(OrderEvent {
            status: OrderStatus::Accepted,
            at: now,
            order: Order::from_checkout(id, customer.into(), request.clone(), now),
        });
    }
    h.orders.apply(&events).await.expect("project");
    assert_eq!(alice.len(), 250);
    let get = |token: String, query: String| {
        let h = &h;
        async move {
            h.send(
                Request::get(format!("/v1/orders{query}"))
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
        }
    };
    let token = h.token("alice", "checkout orders:read");
    let mut seen: Vec<String> = Vec::new();
    let mut query = "?limit=100".to_owned();
    let mut pages = 0;
    loop {
        let (status, _, page) = get(token.clone(), query.clone()).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for order in page["orders"].as_array().expect("orders") {
            seen.push(order["order_id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=100&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10);
    }
    alice.reverse();
    assert_eq!(pages, 3);
    assert_eq!(seen, alice, "newest first, every order once, none of bob's");

    // The default page is 20; bob sees his own only.
    let (_, _, page) = get(h.token("bob", "checkout orders:read"), String::new()).await;
    let orders = page["orders"].as_array().expect("orders");
    assert_eq!(orders.len(), 20);
    assert!(
        orders
            .iter()
            .all(|o| !alice.contains(&o["order_id"].as_str().unwrap_or_default().to_owned()))
    );

    // A token without orders:read (or admin) lists nothing.
    let (status, headers, problem) = get(h.token("bob", "checkout"), String::new()).await;
    assert_problem(status, &headers, &problem, 403, "forbidden");

    // Another customer's history: admins only.
    let (status, headers, problem) =
        get(h.token("bob", "orders:read"), "?customer=alice".into()).await;
    assert_problem(status, &headers, &problem, 403, "forbidden");
    let (status, _, page) = get(h.token("ops", "admin"), "?customer=alice&limit=5".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["orders"][0]["order_id"], alice[0].as_str());

    // Bad parameters name themselves.
    for (query, word) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=x", "limit"),
        ("?cursor=nope", "cursor"),
        ("?page=2", "page"),
        ("?limit=5&limit=6", "twice"),
        ("?cursor=%zz", "percent"),
    ] {
        let (status, headers, problem) = get(token.clone(), query.into()).await;
        assert_problem(status, &headers, &problem, 400, "malformed-request");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(word),
            "{query}: {problem}"
        );
    }
    let (status, headers, problem) = h
        .send(
            Request::get("/v1/orders")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_problem(status, &headers, &problem, 401, "unauthorized");
}

#[tokio::test]
async fn storefront_origins_get_cors_and_every_answer_carries_a_request_id_and_safe_headers() {
    let h = harness().await;
    let preflight = |origin: &str| {
        Request::options("/v1/checkouts")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type,idempotency-key",
            )
            .body(Body::empty())
            .expect("request")
    };
    // A configured storefront's preflight is answered: the browser may post the checkout.
    let (s, hd, _) = h.send(preflight("https://shop.example")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().expect("text")),
        Some("https://shop.example")
    );
    let allowed = |name: header::HeaderName| {
        hd.get(name)
            .map(|v| v.to_str().expect("text").to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert!(allowed(header::ACCESS_CONTROL_ALLOW_METHODS).contains("post"));
    assert!(allowed(header::ACCESS_CONTROL_ALLOW_HEADERS).contains("idempotency-key"));
    assert!(hd.contains_key("x-request-id"), "{hd:?}");
    // Any other origin learns nothing: no allow-origin, so its browser refuses.
    let (_, hd, _) = h.send(preflight("https://evil.example")).await;
    assert!(
        !hd.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{hd:?}"
    );

    // The checkout itself, from the storefront: the browser may read the request id.
    let token = h.token("cust-cors", "checkout orders:read");
    let request = Request::post("/v1/checkouts")
        .header(header::ORIGIN, "https://shop.example")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "storefront-42:a.b_c")
        .body(Body::from(checkout_body().to_string()))
        .expect("request");
    let (s, hd, b) = h.send(request).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        hd.get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().expect("text")),
        Some("https://shop.example")
    );
    assert!(
        hd.get(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            .map(|v| v.to_str().expect("text").to_ascii_lowercase())
            .is_some_and(|v| v.contains("x-request-id")),
        "{hd:?}"
    );
    // A well-formed caller id is kept.
    assert_eq!(
        hd.get("x-request-id").map(|v| v.to_str().expect("text")),
        Some("storefront-42:a.b_c")
    );
    assert_eq!(
        hd.get(header::X_CONTENT_TYPE_OPTIONS)
            .map(|v| v.to_str().expect("text")),
        Some("nosniff")
    );

    // Order data is never cached; an id that could smuggle text into logs is replaced.
    let id = b["order_id"].as_str().expect("id").to_owned();
    h.orders.apply(&h.appended().await).await.expect("projects");
    let request = Request::get(format!("/v1/orders/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "two words\tand a tab")
        .body(Body::empty())
        .expect("request");
    let (s, hd, _) = h.send(request).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        hd.get(header::CACHE_CONTROL)
            .map(|v| v.to_str().expect("text")),
        Some("no-store")
    );
    let fresh = hd
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id");
    assert!(uuid::Uuid::parse_str(fresh).is_ok(), "{fresh}");

    // Errors carry them too; only order data is marked no-store.
    let (s, hd, _) = h
        .send(
            Request::get("/nowhere")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(hd.contains_key("x-request-id"));
    assert_eq!(
        hd.get(header::X_CONTENT_TYPE_OPTIONS)
            .map(|v| v.to_str().expect("text")),
        Some("nosniff")
    );
    assert!(!hd.contains_key(header::CACHE_CONTROL));
}

/// A checkout from `peer` (the address the server puts on each request), with `forwarded` as
/// `x-forwarded-for` if given.
fn from_peer(token: &str, peer: &str, forwarded: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/v1/checkouts")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let mut request = request
        .body(Body::from(checkout_body().to_string()))
        .expect("request");
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        peer.parse::<std::net::SocketAddr>().expect("addr"),
    ));
    request
}

#[tokio::test]
async fn a_client_address_over_its_budget_gets_429_whoever_the_customer() {
    let h = harness_with(|s| {
        s.ip_limit = Some(Rate {
            per_second: 1,
            burst: 3,
        })
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        // A new customer each time: the budget is the address's, not the customer's.
        let token = h.token(&format!("cust-{i}"), "checkout");
        let (status, headers, body) = h.send(from_peer(&token, "198.51.100.7:4000", None)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_problem(status, &headers, &body, 429, "rate-limited");
            assert!(headers.contains_key(header::RETRY_AFTER));
        }
        statuses.push(status);
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert!((3..=4).contains(&accepted), "{statuses:?}");
    assert_eq!(h.appended().await.len(), accepted);
    // Another address has its own budget; reads from the first address are refused too.
    let token = h.token("cust-x", "checkout orders:read");
    let (status, _, _) = h.send(from_peer(&token, "198.51.100.8:4000", None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut read = Request::get("/v1/orders")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .expect("request");
    read.extensions_mut().insert(axum::extract::ConnectInfo(
        "198.51.100.7:4001"
            .parse::<std::net::SocketAddr>()
            .expect("addr"),
    ));
    let (status, _, _) = h.send(read).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Health checks are never limited, even from the address over its budget.
    let mut health = Request::get("/healthz")
        .body(Body::empty())
        .expect("request");
    health.extensions_mut().insert(axum::extract::ConnectInfo(
        "198.51.100.7:4002"
            .parse::<std::net::SocketAddr>()
            .expect("addr"),
    ));
    let (status, _, _) = h.send(health).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let h = harness_with(|s| {
        s.ip_limit = Some(Rate {
            per_second: 1,
            burst: 1,
        });
        s.client_ip_header = Some(header::HeaderName::from_static("x-forwarded-for"));
    })
    .await;
    let token = h.token("alice", "checkout");
    // Every request comes through one proxy address; the clients behind it differ.
    let proxy = "10.0.0.2:80";
    let (a, _, _) = h.send(from_peer(&token, proxy, Some("203.0.113.1"))).await;
    let (b, _, _) = h
        .send(from_peer(&token, proxy, Some("spoofed, 203.0.113.2")))
        .await;
    let (again, _, _) = h.send(from_peer(&token, proxy, Some("203.0.113.1"))).await;
    assert_eq!(
        (a, b, again),
        (
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        )
    );
}

#[tokio::test]
async fn over_the_backlog_bound_checkouts_get_503_and_reads_still_work() {
    let h = harness_with(|s| s.max_backlog = Some(100)).await;
    let token = h.token("alice", "checkout orders:read");
    let body = checkout_body().to_string();
    h.backlog.set(100);
    let (status, _, first) = h
        .post(Some(&token), "application/json", body.clone(), Some("k-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "at the bound is fine");
    h.backlog.set(101);
    let (status, headers, problem) = h
        .post(Some(&token), "application/json", body.clone(), None)
        .await;
    assert_problem(status, &headers, &problem, 503, "overloaded");
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    assert_eq!(
        h.appended().await.len(),
        1,
        "the refused one never reached the log"
    );
    // A retry of the accepted checkout still gets its 202 and its order id.
    let (status, _, again) = h
        .post(Some(&token), "application/json", body.clone(), Some("k-1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["order_id"], first["order_id"]);
    let (status, _, _) = h
        .send(
            Request::get("/v1/orders")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    h.backlog.set(0);
    let (status, _, _) = h.post(Some(&token), "application/json", body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(request.body(body).expect("request")).await
    }
}

fn cart(quantity: u32, codes: &[&str], country: &str) -> Value {
    let mut body = checkout_body();
    body["lines"][0]["quantity"] = json!(quantity);
    body["coupon_codes"] = json!(codes);
    body["shipping_address"]["country"] = json!(country);
    body.as_object_mut().expect("object").remove("payment");
    body
}

#[tokio::test]
async fn a_quote_prices_the_cart_and_reserves_and_counts_nothing() {
    let h = harness().await;
    let ann = h.token("ann", "checkout");

    // 4 mugs at 12.99 = 51.96, over 50.00. Same priority, so by id: ONCE takes 3.00 (48.96
    // left), then 10 % of 48.96 = 4.896 → 4.90: 44.06 left. CA tax 7.25 % of 44.06 = 3.194
    // → 3.19. 1,600 g: 9.00 shipping. 44.06 + 3.19 + 9.00 = 56.25.
    let (s, _, q) = h
        .call("POST", "/v1/quotes", &ann, Some(cart(4, &["once"], "US")))
        .await;
    assert_eq!(s, StatusCode::OK, "{q}");
    assert_eq!(q["subtotal"]["minor"], 5196);
    assert_eq!(q["discount"]["minor"], 790);
    assert_eq!(q["tax"]["minor"], 319);
    assert_eq!(q["shipping"]["minor"], 900);
    assert_eq!(q["total"]["minor"], 5625);
    assert_eq!(q["promotions"][0]["id"], "ONCE");
    assert_eq!(q["promotions"][1]["id"], "ten-from-50");
    assert_eq!(q["tax_lines"][0]["jurisdiction"], "US-CA");
    assert_eq!(q["lines"][0]["total"]["minor"], 4406 + 319);
    assert_eq!(q["rejected_coupons"], json!([]));
    assert_eq!(q["version"], format!("v{}", PROMOTIONS.len()));
    // Nothing reached the log, nothing was counted.
    assert!(h.appended().await.is_empty());
    assert_eq!(h.coupons.uses("ONCE").await.expect("uses"), 0);

    // Once ann has used ONCE, her quote says so; bob's does not.
    let limits = UseLimits {
        total: None,
        per_customer: Some(1),
    };
    h.coupons
        .redeem("ONCE", OrderId::new(), "ann", limits)
        .await
        .expect("redeem");
    let (_, _, q) = h
        .call(
            "POST",
            "/v1/quotes",
            &ann,
            Some(cart(1, &["ONCE", "NOPE"], "US")),
        )
        .await;
    assert_eq!(
        q["rejected_coupons"],
        json!([{"code": "NOPE", "reason": "unknown"}, {"code": "ONCE", "reason": "used_up"}])
    );
    assert_eq!(q["discount"]["minor"], 0);
    let bob = h.token("bob", "checkout");
    let (_, _, q) = h
        .call("POST", "/v1/quotes", &bob, Some(cart(1, &["ONCE"], "US")))
        .await;
    assert_eq!(q["rejected_coupons"], json!([]));
    assert_eq!(q["discount"]["minor"], 300);

    // Germany: prices include 19 % VAT. 12.99: tax 12.99 × 19/119 = 2.074 → 2.07, and the
    // total is the price plus shipping (no tax on top).
    let (_, _, q) = h
        .call("POST", "/v1/quotes", &bob, Some(cart(1, &[], "DE")))
        .await;
    assert_eq!(q["prices_include_tax"], true);
    assert_eq!(q["tax"]["minor"], 207);
    assert_eq!(q["total"]["minor"], 1299 + 500);

    // Bad carts are 422 naming the field; the scope is checkout.
    let mut unknown = cart(1, &[], "US");
    unknown["lines"][0]["sku"] = json!("SKU-404");
    let (s, hd, b) = h.call("POST", "/v1/quotes", &bob, Some(unknown)).await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    assert!(b["errors"][0].as_str().expect("error").contains("SKU-404"));
    let (s, hd, b) = h
        .call("POST", "/v1/quotes", &bob, Some(cart(1, &[], "FR")))
        .await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    assert!(b["errors"][0].as_str().expect("error").contains("country"));
    let (s, hd, b) = h
        .call("POST", "/v1/quotes", &bob, Some(cart(0, &[], "US")))
        .await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    let reader = h.token("bob", "orders:read");
    let (s, hd, b) = h
        .call("POST", "/v1/quotes", &reader, Some(cart(1, &[], "US")))
        .await;
    assert_problem(s, &hd, &b, 403, "forbidden");
}

#[tokio::test]
async fn the_pricing_tables_reload_whole_or_not_at_all() {
    let h = harness().await;
    let admin = h.token("ops", "admin");
    let shopper = h.token("ann", "checkout");
    let (s, _, before) = h.call("GET", "/v1/admin/pricing", &admin, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(before["promotions"], 2);
    assert_eq!(before["jurisdictions"], 2);
    let (s, hd, b) = h
        .call("POST", "/v1/admin/pricing/reload", &shopper, None)
        .await;
    assert_problem(s, &hd, &b, 403, "forbidden");

    // A broken table is refused naming the entry; the old tables stay in force.
    *h.promotions.lock() = r#"{"promotions":[{"id":"half","percent_off_bps":20000}]}"#.into();
    let (s, hd, b) = h
        .call("POST", "/v1/admin/pricing/reload", &admin, None)
        .await;
    assert_problem(s, &hd, &b, 422, "invalid-request");
    let why = b["errors"][0].as_str().expect("error");
    assert!(
        why.contains("promotion half") && why.contains("percent_off_bps"),
        "{why}"
    );
    let (_, _, now) = h.call("GET", "/v1/admin/pricing", &admin, None).await;
    assert_eq!(now["version"], before["version"]);

    // A good one is swapped in: the next quote uses it and records its version.
    *h.promotions.lock() = r#"{"promotions":[{"id":"half","percent_off_bps":5000}]}"#.into();
    let (s, _, after) = h
        .call("POST", "/v1/admin/pricing/reload", &admin, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(after["promotions"], 1);
    assert_ne!(after["version"], before["version"]);
    let (_, _, q) = h
        .call("POST", "/v1/quotes", &shopper, Some(cart(2, &[], "US")))
        .await;
    assert_eq!(q["discount"]["minor"], 1299);
    assert_eq!(q["version"], after["version"]);
}

/// A GET of one order, with `If-None-Match` when `etag` is given.
fn get_order(token: &str, id: &str, query: &str, etag: Option<&str>) -> Request<Body> {
    let mut request = Request::get(format!("/v1/orders/{id}{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    request.body(Body::empty()).expect("request")
}

/// Checks out one order and projects its acceptance; its id.
async fn accepted_order(h: &Harness, customer: &str) -> String {
    let (s, _, b) = h
        .post(
            Some(&h.token(customer, "checkout")),
            "application/json",
            checkout_body().to_string(),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    h.orders.apply(&h.appended().await).await.expect("projects");
    b["order_id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn an_unchanged_order_answers_304_and_a_changed_one_200_with_a_new_etag() {
    let h = harness().await;
    let id = accepted_order(&h, "ann").await;
    let reader = h.token("ann", "orders:read");
    let (s, hd, body) = h.send(get_order(&reader, &id, "", None)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let etag = hd
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .expect("an ETag")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    // The same view, read again: the same tag; sent back, 304 with no body.
    let (s, hd, _) = h.send(get_order(&reader, &id, "", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(hd[header::ETAG], etag.as_str());
    let (s, hd, body) = h.send(get_order(&reader, &id, "", Some(&etag))).await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(body, Value::Null);
    assert_eq!(hd[header::ETAG], etag.as_str());
    // A list holding it, a weak form of it and `*` match too; another tag does not.
    for header_value in [format!("\"x\", {etag}"), format!("W/{etag}"), "*".into()] {
        let (s, _, _) = h
            .send(get_order(&reader, &id, "", Some(&header_value)))
            .await;
        assert_eq!(s, StatusCode::NOT_MODIFIED, "{header_value}");
    }
    let (s, _, _) = h.send(get_order(&reader, &id, "", Some("\"other\""))).await;
    assert_eq!(s, StatusCode::OK);
    // A malformed tag matches nothing: the full answer.
    let (s, _, b) = h.send(get_order(&reader, &id, "", Some("no-quotes"))).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // The order moves on: the old tag no longer matches.
    let mut events = h.appended().await;
    let validated = events
        .remove(0)
        .advance(orderflow_domain::OrderStatus::Validated);
    h.orders.apply(&[validated]).await.expect("projects");
    let (s, hd, body) = h.send(get_order(&reader, &id, "", Some(&etag))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "validated");
    assert_ne!(hd[header::ETAG], etag.as_str());

    // Bad waits and unknown parameters are 400s naming them.
    for (query, word) in [
        ("?wait=0", "wait"),
        ("?wait=31", "wait"),
        ("?wait=soon", "wait"),
        ("?since=1", "since"),
    ] {
        let (s, hd, b) = h.send(get_order(&reader, &id, query, None)).await;
        assert_problem(s, &hd, &b, 400, "malformed-request");
        assert!(
            b["detail"].as_str().unwrap_or_default().contains(word),
            "{query}: {b}"
        );
    }
}

#[tokio::test]
async fn a_long_poll_answers_within_100_ms_of_the_change_or_304_when_the_time_is_up() {
    let h = harness().await;
    let id = accepted_order(&h, "ann").await;
    let reader = h.token("ann", "orders:read");
    let (_, hd, _) = h.send(get_order(&reader, &id, "", None)).await;
    let etag = hd[header::ETAG].to_str().expect("ascii").to_owned();

    // Nothing changes: a 304 after the wait, not before.
    let started = std::time::Instant::now();
    let (s, hd, _) = h
        .send(get_order(&reader, &id, "?wait=1", Some(&etag)))
        .await;
    let took = started.elapsed();
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(hd[header::ETAG], etag.as_str());
    assert!(took >= Duration::from_millis(990), "held {took:?}");
    assert!(took < Duration::from_secs(3), "held {took:?}");

    // A wait with a tag that is not current answers at once.
    let started = std::time::Instant::now();
    let (s, _, _) = h
        .send(get_order(&reader, &id, "?wait=30", Some("\"old\"")))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));

    // The order changes 300 ms into a 10 s wait: the answer comes within 100 ms of it.
    let router = h.router.clone();
    let request = get_order(&reader, &id, "?wait=10", Some(&etag));
    let poll = tokio::spawn(async move {
        let response = router.oneshot(request).await.expect("responds");
        (response.status(), std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut events = h.appended().await;
    let validated = events
        .remove(0)
        .advance(orderflow_domain::OrderStatus::Validated);
    let changed = h.orders.apply(&[validated]).await.expect("projects");
    let announced = std::time::Instant::now();
    use orderflow_stores::StatusFeed;
    for view in &changed {
        h.feed.publish(view).await.expect("publishes");
    }
    let (status, answered) = poll.await.expect("joins");
    assert_eq!(status, StatusCode::OK);
    let lag = answered.saturating_duration_since(announced);
    assert!(
        lag < Duration::from_millis(100),
        "answered {lag:?} after the change"
    );
}

#[tokio::test]
async fn held_long_polls_are_bounded_and_reads_need_orders_read() {
    // The harness holds two long-polls at most.
    let h = harness().await;
    let id = accepted_order(&h, "ann").await;
    let reader = h.token("ann", "orders:read");
    let (_, hd, _) = h.send(get_order(&reader, &id, "", None)).await;
    let etag = hd[header::ETAG].to_str().expect("ascii").to_owned();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let router = h.router.clone();
            let request = get_order(&reader, &id, "?wait=2", Some(&etag));
            tokio::spawn(async move { router.oneshot(request).await.expect("responds").status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, hd, b) = h
        .send(get_order(&reader, &id, "?wait=2", Some(&etag)))
        .await;
    assert_problem(s, &hd, &b, 503, "unavailable");
    assert!(hd.contains_key(header::RETRY_AFTER));
    // A plain read is not held, so it still answers.
    let (s, _, _) = h.send(get_order(&reader, &id, "", None)).await;
    assert_eq!(s, StatusCode::OK);
    for poll in held {
        assert_eq!(poll.await.expect("joins"), StatusCode::NOT_MODIFIED);
    }
    // Room again once they answered.
    let (s, _, _) = h
        .send(get_order(&reader, &id, "?wait=1", Some(&etag)))
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // Every read route refuses a token without orders:read or admin; admin may read.
    let shopper = h.token("ann", "checkout");
    for uri in [
        format!("/v1/orders/{id}"),
        "/v1/orders".to_owned(),
        format!("/v1/orders/{id}/ws"),
    ] {
        let request = Request::get(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {shopper}"))
            .body(Body::empty())
            .expect("request");
        let (s, hd, b) = h.send(request).await;
        assert_problem(s, &hd, &b, 403, "forbidden");
        assert!(
            b["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("orders:read"),
            "{uri}: {b}"
        );
    }
    let (s, _, _) = h
        .send(get_order(&h.token("ops", "admin"), &id, "", None))
        .await;
    assert_eq!(s, StatusCode::OK);
}
