//! Quotes against orders through the built binary: a quote and the order placed from the same
//! cart end with the same totals; a per-customer code quoted as used up is refused at checkout;
//! the tables reload without a restart and new orders record the new version; `orderflow
//! price` prints the same total for the same cart.

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::{App, checkout, run_command, token, write_catalog};

const PROMOTIONS: &str = r#"{"promotions":[
    {"id":"ten-from-30","name":"10 % from 30.00","percent_off_bps":1000,"min_subtotal_minor":3000},
    {"code":"ONCE","amount_off_minor":300,"max_uses_per_customer":1},
    {"id":"ship-free-50","free_shipping":true,"min_subtotal_minor":5000}]}"#;
const TAX: &str = r#"{"jurisdictions":[
    {"id":"US-CA","country":"US","region":"CA","rate_bps":725},
    {"id":"DE","country":"DE","rate_bps":1900,"prices_include_tax":true}]}"#;
const SHIPPING: &str = r#"{"zones":[{"id":"all","countries":["*"],
    "bands":[{"up_to_grams":500,"fee_minor":500},{"fee_minor":900}]}]}"#;

fn tables(dir: &Path) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, text) in [
        ("promotions", PROMOTIONS),
        ("tax", TAX),
        ("shipping", SHIPPING),
    ] {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text).expect("write table");
        env.push((
            format!("ORDERFLOW_{}_FILE", name.to_uppercase()),
            path.display().to_string(),
        ));
    }
    env
}

fn cart(lines: &[(&str, u32)], codes: &[&str], country: &str) -> Value {
    let mut body = checkout(lines, "tok_visa");
    body["coupon_codes"] = json!(codes);
    body["shipping_address"]["country"] = json!(country);
    if country != "US" {
        body["shipping_address"]["region"] = json!("");
    }
    body
}

async fn quote(app: &App, token: &str, body: &Value) -> Value {
    let mut body = body.clone();
    body.as_object_mut().expect("object").remove("payment");
    let r = app
        .client
        .post(app.url("/v1/quotes"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("quote");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

async fn place(app: &App, token: &str, body: &Value) -> Value {
    let (status, answer) = app.checkout(token, body).await.expect("checkout");
    assert_eq!(status, 202, "{answer}");
    let id = answer["order_id"].as_str().expect("id").to_owned();
    let views = app
        .await_terminal(token, &[id], Duration::from_secs(30))
        .await;
    views.into_iter().next().expect("view")
}

/// The quote's breakdown without what only a quote has.
fn totals_of(mut quote: Value) -> Value {
    quote
        .as_object_mut()
        .expect("object")
        .remove("rejected_coupons");
    quote
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_and_orders_agree_and_tables_reload_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 2000, 100), ("SKU-B", 500, 100)]);
    let env = tables(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = dir.path().join("data");
    let app = App::start_with(&data, &catalog, &env);
    let ann = token("ann", "checkout orders:read");
    let admin = token("ops", "admin");

    // 2 × 20.00 + 1 × 5.00 = 45.00: 10 % (4.50) and ONCE (3.00); CA tax; 300 g: 5.00.
    // To Germany, 3 × 20.00 = 60.00: VAT inside, 10 % off, shipping free from 50.00.
    for (body, who) in [
        (
            cart(&[("SKU-A", 2), ("SKU-B", 1)], &["ONCE"], "US"),
            "CA with a code",
        ),
        (cart(&[("SKU-A", 3)], &[], "DE"), "DE, VAT included"),
        (cart(&[("SKU-B", 1)], &[], "US"), "a small order"),
    ] {
        let quoted = quote(&app, &ann, &body).await;
        assert_eq!(quoted["rejected_coupons"], json!([]), "{who}: {quoted}");
        let view = place(&app, &ann, &body).await;
        assert_eq!(view["status"], "completed", "{who}: {view}");
        assert_eq!(view["totals"]["total"], quoted["total"], "{who}");
        assert_eq!(
            view["totals"],
            totals_of(quoted),
            "{who}: the whole breakdown"
        );
    }
    let first = quote(&app, &ann, &cart(&[("SKU-A", 2), ("SKU-B", 1)], &[], "US")).await;
    // 45.00 − 4.50 = 40.50; tax 7.25 % = 2.93625 → 2.94; + 5.00 = 48.44.
    assert_eq!(first["total"]["minor"], 4844);

    // ann has used ONCE: the quote says so, and an order with it is refused, not overcharged.
    let again = cart(&[("SKU-B", 1)], &["once"], "US");
    let quoted = quote(&app, &ann, &again).await;
    assert_eq!(
        quoted["rejected_coupons"],
        json!([{"code": "ONCE", "reason": "used_up"}])
    );
    let view = place(&app, &ann, &again).await;
    assert_eq!(view["status"], "rejected");
    assert_eq!(view["rejection"]["code"], "coupon_exhausted", "{view}");

    // New tables: 25 % off everything. Reloaded without a restart; quotes and new orders use
    // them and record their version.
    let version = first["version"].clone();
    std::fs::write(
        dir.path().join("promotions.json"),
        r#"{"promotions":[{"id":"quarter","percent_off_bps":2500}]}"#,
    )
    .expect("write");
    let reloaded: Value = app
        .client
        .post(app.url("/v1/admin/pricing/reload"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("reload")
        .json()
        .await
        .expect("json");
    assert_ne!(reloaded["version"], version);
    let body = cart(&[("SKU-A", 1)], &[], "US");
    let quoted = quote(&app, &ann, &body).await;
    // 20.00 − 5.00 = 15.00; tax 1.0875 → 1.09; + 5.00 = 21.09.
    assert_eq!(quoted["total"]["minor"], 2109);
    assert_eq!(quoted["version"], reloaded["version"]);
    let view = place(&app, &ann, &body).await;
    assert_eq!(view["totals"], totals_of(quoted));

    // The merchant's check before a sale prints the same total.
    let cart_file = dir.path().join("cart.json");
    std::fs::write(&cart_file, body.to_string()).expect("write cart");
    let env_ref: Vec<(&str, &str)> = env.clone();
    let (ok, out) = run_command(
        &dir.path().join("unused"),
        &catalog,
        &env_ref,
        &["price", "--cart", cart_file.to_str().expect("utf-8")],
    );
    assert!(ok, "{out}");
    assert!(out.contains("21.09"), "{out}");
    assert!(out.contains("quarter"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_worker_follows_its_table_files_and_reloads_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 2000, 100)]);
    let env = tables(dir.path());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let worker = support::Worker::start(
        &dir.path().join("data"),
        &catalog,
        &env,
        &["stage", "price"],
    );
    let admin = token("ops", "admin");
    let client = reqwest::Client::new();
    let get = |token: Option<String>| {
        let mut request = client.get(format!("{}/v1/admin/pricing", worker.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.expect("get").status(), 401);
    let before: Value = get(Some(admin.clone()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(before["promotions"], 3);

    // The files change: the worker's own `pricing-reload` chore swaps them in, unasked.
    std::fs::write(dir.path().join("promotions.json"), r#"{"promotions":[]}"#).expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now: Value = get(Some(admin.clone()))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if now["promotions"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chore did not pick the change up: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the route still answers with the tables in force.
    let reloaded = client
        .post(format!("{}/v1/admin/pricing/reload", worker.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let after: Value = reloaded.json().await.expect("json");
    assert_eq!(after["promotions"], 0);
    assert_ne!(after["version"], before["version"]);
}
