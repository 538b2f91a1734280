//! Reservations per second through the Redis ledger adapter, against `redis-benchmark` running
//! the same reserve script by EVALSHA on the same server, alternating in one run.
//!
//! ```text
//! cargo run --release --example redis_reserve_bench -- [RESERVATIONS=200000] [CLIENTS=50] [ROUNDS=3]
//! ```
//! It starts its own `redis-server` on a free port (`redis-server` and `redis-benchmark` must be
//! on PATH). Both sides reserve one unit of one SKU per order for fresh order ids, with
//! `CLIENTS` requests in flight: `redis-benchmark -c CLIENTS` against `CLIENTS` concurrent
//! callers of `StockLedger::reserve` (pipelined on the adapter's shared connections).
//! `load-tests/redis-reserve.sh` builds and runs this.

use futures::StreamExt;
use orderflow_domain::OrderId;
use orderflow_stores::redis::{RedisConfig, RedisHot, RedisLedger, lua, sha1_of};
use orderflow_stores::{SkuQuantity, SkuStock, StockLedger};
use orderflow_testkit::RedisServer;
use std::process::Command;
use std::time::{Duration, Instant};

const SKU: &str = "SKU-BENCH";

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// `redis-benchmark` running the reserve script: returns requests per second.
fn redis_benchmark(port: u16, n: usize, clients: usize, pipeline: usize) -> f64 {
    let sha = sha1_of(lua::RESERVE);
    let expires = (chrono::Utc::now() + chrono::Duration::hours(1))
        .timestamp_millis()
        .to_string();
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-c",
            &clients.to_string(),
            "-n",
            &n.to_string(),
            "-P",
            &pipeline.to_string(),
            // Random 12-digit order ids: every call is a new reservation, not a repeat.
            "-r",
            "1000000000000",
            "--csv",
            "EVALSHA",
            &sha,
            "3",
            "{bench}:hold:__rand_int__",
            "{bench}:expiry",
            &format!("{{bench}}:stock:{SKU}"),
            "__rand_int__",
            &expires,
            "86400000",
            SKU,
            "1",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-benchmark (Debian redis-tools): {e}"));
    assert!(out.status.success(), "redis-benchmark failed");
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: a header line, then "EVALSHA …","RPS",…
    text.lines()
        .filter(|l| l.starts_with("\"EVALSHA"))
        .find_map(|l| {
            l.split("\",\"")
                .nth(1)
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output:\n{text}"))
}

/// The adapter: `clients` concurrent callers, `n` reservations in all; reservations per second.
async fn adapter(ledger: &RedisLedger, n: usize, clients: usize) -> f64 {
    let started = Instant::now();
    let reserved = futures::stream::iter(0..n)
        .map(|_| async {
            ledger
                .reserve(
                    OrderId::new(),
                    &[SkuQuantity::new(SKU, 1)],
                    Duration::from_secs(3600),
                )
                .await
        })
        .buffer_unordered(clients)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(reserved, n, "every reservation went through");
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let n = args.first().copied().unwrap_or(200_000);
    let clients = args.get(1).copied().unwrap_or(50);
    let rounds = args.get(2).copied().unwrap_or(3);

    let server = RedisServer::start();
    let mut config = RedisConfig::new(server.url());
    config.warehouse = "bench".into();
    let ledger = RedisLedger::new(RedisHot::connect(config).await?);
    ledger
        .seed(&[SkuStock::new(SKU, 1_000_000_000_000)])
        .await?;
    println!(
        "reserve script {} on redis-server :{}; {n} reservations per run, {clients} in flight, {rounds} rounds",
        sha1_of(lua::RESERVE),
        server.port()
    );

    // Warm up both paths once.
    adapter(&ledger, n / 10, clients).await;
    redis_benchmark(server.port(), n / 10, clients, 1);

    let (mut ours, mut theirs, mut pipelined) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = adapter(&ledger, n, clients).await;
        let b = redis_benchmark(server.port(), n, clients, 1);
        let p = redis_benchmark(server.port(), n, clients, 16);
        println!(
            "round {round}: adapter {a:>9.0}/s   redis-benchmark -c {clients} {b:>9.0}/s   (-P 16: {p:>9.0}/s)   ratio {:.2}",
            a / b
        );
        ours.push(a);
        theirs.push(b);
        pipelined.push(p);
    }
    let (a, b, p) = (median(ours), median(theirs), median(pipelined));
    println!(
        "median: adapter {a:.0}/s, redis-benchmark {b:.0}/s -> ratio {:.2} (target >= 0.6); against redis-benchmark -P 16 ({p:.0}/s): {:.2}",
        a / b,
        a / p
    );
    let level = ledger.level(SKU).await?.ok_or("no level")?;
    assert!(level.balanced(), "invariant holds after the run: {level:?}");
    Ok(())
}
