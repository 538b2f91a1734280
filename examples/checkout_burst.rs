//! Sends a burst of checkouts to a running orderflow and reports how long the whole burst takes
//! to reach terminal states: accepted/s, orders/s end to end, and accept→terminal percentiles
//! computed from each order's own timeline.
//!
//! ```text
//! cargo run --release --example checkout_burst -- URL TOKEN [ORDERS] [CONCURRENCY]
//! ```
//! `load-tests/burst.sh` starts the server, mints the token and runs this.

use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: checkout_burst URL TOKEN [ORDERS=10000] [CONCURRENCY=128]");
        std::process::exit(2);
    }
    let (base, token) = (args[1].trim_end_matches('/').to_owned(), args[2].clone());
    let orders: usize = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let concurrency: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;

    let catalog: Value = client
        .get(format!("{base}/v1/catalog"))
        .send()
        .await?
        .json()
        .await?;
    let skus: Vec<String> = catalog["items"]
        .as_array()
        .ok_or("no catalog")?
        .iter()
        .filter_map(|i| i["sku"].as_str().map(str::to_owned))
        .collect();

    eprintln!("Sending {orders} checkouts with {concurrency} in flight to {base}");
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let ids: Vec<String> = futures::stream::iter(0..orders)
        .map(|i| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            let sku = skus[(i * 7) % skus.len()].clone();
            async move {
                let payment = if i % 50 == 0 { "tok_decline" } else { "tok_visa" };
                let body = json!({
                    "currency": "USD",
                    "lines": [{"sku": sku, "quantity": 1 + (i % 3)}],
                    "shipping_address": {"name": "Load Test", "line1": "1 Main St", "city": "SF", "region": "CA",
                                         "postal_code": "94107", "country": "US"},
                    "payment": {"token": payment}
                });
                let response = client.post(format!("{base}/v1/checkouts")).bearer_auth(&token).json(&body).send().await.ok()?;
                if response.status().as_u16() != 202 {
                    return None;
                }
                let body: Value = response.json().await.ok()?;
                body["order_id"].as_str().map(str::to_owned)
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|id| async move { id })
        .collect()
        .await;
    let accept_time = started.elapsed();
    eprintln!(
        "Accepted {} of {orders} in {:.2} s ({:.0}/s); waiting for terminal states",
        ids.len(),
        accept_time.as_secs_f64(),
        ids.len() as f64 / accept_time.as_secs_f64()
    );

    let mut latencies_ms = Vec::with_capacity(ids.len());
    let mut pending = ids.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_terminal_at = None;
    while !pending.is_empty() && Instant::now() < deadline {
        let views: Vec<(String, Option<Value>)> = futures::stream::iter(pending.clone())
            .map(|id| {
                let (client, base, token) = (client.clone(), base.clone(), token.clone());
                async move {
                    let view = match client
                        .get(format!("{base}/v1/orders/{id}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    (id, view)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        pending.clear();
        for (id, view) in views {
            match view.filter(|v| v["status"] == "completed" || v["status"] == "rejected") {
                Some(v) => {
                    let times: Vec<chrono::DateTime<chrono::Utc>> = v["timeline"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["at"].as_str()?.parse().ok())
                        .collect();
                    if let (Some(first), Some(last)) = (times.first(), times.last()) {
                        latencies_ms
                            .push((*last - *first).num_microseconds().unwrap_or(0) as f64 / 1e3);
                        last_terminal_at = Some(
                            last_terminal_at
                                .map_or(*last, |l: chrono::DateTime<chrono::Utc>| l.max(*last)),
                        );
                    }
                }
                None => pending.push(id),
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if !pending.is_empty() {
        return Err(format!("{} orders not terminal after 600 s", pending.len()).into());
    }
    latencies_ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies_ms[((latencies_ms.len() as f64 - 1.0) * p).round() as usize];
    let wall = last_terminal_at.map_or(0.0, |l| (l - started_at).num_milliseconds() as f64 / 1e3);
    println!(
        "orders={} accept_wall_s={:.2} accepted_per_s={:.0} all_terminal_wall_s={:.2} end_to_end_per_s={:.0} accept_to_terminal_ms p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        ids.len(),
        accept_time.as_secs_f64(),
        ids.len() as f64 / accept_time.as_secs_f64(),
        wall,
        ids.len() as f64 / wall,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}
