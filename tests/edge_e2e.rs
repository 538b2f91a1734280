//! The public edge against a client that misbehaves: requests whose headers never finish are
//! closed at the header deadline while real checkouts go through, connections over the cap are
//! told 503 with `Retry-After`, requests over the in-flight cap too (and nothing accepted is
//! lost), and HTTP/2 (cleartext) and HTTP/1.1 both serve the API.

mod support;

use std::time::{Duration, Instant};
use support::{App, checkout, token, write_catalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `orderflow serve` on a catalog of one SKU, with `env` set; the directory lives as long as
/// the caller keeps it.
fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 500, 10_000)]);
    let app = App::start_with(&dir.path().join("data"), &catalog, env);
    (dir, app)
}

/// The `host:port` of `app`.
fn addr(app: &App) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Opens a connection and sends the start of a request whose headers never end.
async fn half_sent(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream
        .write_all(b"POST /v1/checkouts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("writes");
    stream
}

/// Whether the server closed `stream` (reading gives end of file or an error) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    matches!(
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    // A 408 or similar before the close is fine.
                    Ok(_) => {}
                }
            }
        })
        .await,
        Ok(())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_at_the_header_deadline_while_checkouts_go_through() {
    let (_dir, app) = start(&[("ORDERFLOW_API_HEADER_READ_TIMEOUT_MS", "2000")]);
    let addr = addr(&app);
    let customer = token("cust-edge", "checkout orders:read");

    // 2,000 connections that never finish their headers.
    let mut attackers = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        attackers.push(half_sent(&addr).await);
    }
    // Real customers still get their 202, quickly.
    let started = Instant::now();
    let (status, body) = app
        .checkout(&customer, &checkout(&[("SKU-A", 1)], "tok_visa"))
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a checkout during the attack took {:?}",
        started.elapsed()
    );

    // Every half-sent request is closed by the deadline (2 s, with slack for a busy machine).
    let deadline = Duration::from_secs(8);
    let checking = Instant::now();
    let mut open = 0;
    for stream in &mut attackers {
        let left = deadline.saturating_sub(checking.elapsed());
        if !closed_within(stream, left.max(Duration::from_millis(10))).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 2,000 half-sent requests still open after {deadline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_and_both_http_versions_serve() {
    let (_dir, app) = start(&[("ORDERFLOW_API_MAX_CONNECTIONS", "20")]);
    let addr = addr(&app);

    // HTTP/2 with prior knowledge (what a proxy speaks in cleartext) and HTTP/1.1.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("h2 answers");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let h1 = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");
    let response = h1
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("h1 answers");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    drop((h1, h2));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Twenty idle connections take every place.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&addr).await.expect("connects"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next one is told to come back, not left hanging.
    let mut extra = TcpStream::connect(&addr).await.expect("connects");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("reads");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("/problems/unavailable"), "{answer}");

    // Places free up as connections close.
    drop(held);
    let client = reqwest::Client::new();
    let mut status = 0;
    for _ in 0..50 {
        if let Ok(response) = client.get(app.url("/healthz")).send().await {
            status = response.status().as_u16();
            if status == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_cap_get_503_and_nothing_accepted_is_lost() {
    let (_dir, app) = start(&[("ORDERFLOW_API_MAX_IN_FLIGHT", "4")]);
    let customer = token("cust-shed", "checkout orders:read");
    let bodies = (0..400)
        .map(|_| checkout(&[("SKU-A", 1)], "tok_visa"))
        .collect();
    let answers = app.post_all(&customer, bodies, 128).await;
    let mut accepted = Vec::new();
    let mut shed = 0;
    for (status, body) in &answers {
        match status {
            202 => accepted.push(body["order_id"].as_str().expect("order id").to_owned()),
            503 => {
                assert_eq!(body["type"], "/problems/unavailable", "{body}");
                shed += 1;
            }
            other => panic!("answered {other}: {body}"),
        }
    }
    assert!(
        shed > 0,
        "128 requests at once against a cap of 4: none shed"
    );
    assert!(!accepted.is_empty(), "nothing accepted");
    // Health checks stay outside the cap.
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 200);
    // Every accepted order finishes, once.
    let views = app
        .await_terminal(&customer, &accepted, Duration::from_secs(60))
        .await;
    assert_eq!(views.len(), accepted.len());
    for view in &views {
        support::assert_one_terminal(view);
    }
}

#[test]
fn production_refuses_to_start_with_cors_for_any_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 500, 10)]);
    let (ok, output) = support::run_command(
        &dir.path().join("data"),
        &catalog,
        &[("ORDERFLOW_API_CORS_ORIGINS", "*")],
        &["serve", "--production", "--listen", "127.0.0.1:0"],
    );
    assert!(!ok, "started: {output}");
    assert!(output.contains("api.cors_origins"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_over_its_budget_gets_429_whoever_it_claims_to_be() {
    let (_dir, app) = start(&[
        ("ORDERFLOW_LIMITS_IP_PER_SECOND", "1"),
        ("ORDERFLOW_LIMITS_IP_BURST", "5"),
    ]);
    let mut statuses = Vec::new();
    for i in 0..15 {
        // A different customer every time: the budget is the connection's address's.
        let customer = token(&format!("cust-ip-{i}"), "checkout");
        let response = app
            .client
            .post(app.url("/v1/checkouts"))
            .bearer_auth(&customer)
            .json(&checkout(&[("SKU-A", 1)], "tok_visa"))
            .send()
            .await
            .expect("answers");
        let status = response.status().as_u16();
        if status == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["type"], "/problems/rate-limited", "{body}");
        }
        statuses.push(status);
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!((5..=7).contains(&accepted), "{statuses:?}");
    assert_eq!(
        accepted + statuses.iter().filter(|s| **s == 429).count(),
        15
    );
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("answers");
    assert_eq!(health.status(), 200, "probes are never limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_are_refused_503_while_the_pipeline_is_too_far_behind() {
    // The API alone: no stage runs, so every checkout adds to the backlog.
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 500, 10_000)]);
    let app = App::start_command(
        &dir.path().join("data"),
        &catalog,
        &[
            ("ORDERFLOW_LIMITS_MAX_BACKLOG", "3"),
            ("ORDERFLOW_LIMITS_BACKLOG_CHECK_MS", "50"),
        ],
        &["ingest"],
    );
    let customer = token("cust-backlog", "checkout orders:read");
    // Past the reader's interval, so each answer follows the backlog.
    let answers = app
        .checkouts_spaced(&customer, 12, Duration::from_millis(150))
        .await;
    support::assert_shed_after(&answers, 4);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("orderflow_ingest_backlog{") && l.ends_with("} 4")),
        "{metrics}"
    );
}
