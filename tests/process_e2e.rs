//! The process as an operator runs it: started from any directory with no file at all it
//! serves the built-in demo store; SIGTERM under load drains and exits 0 within 10 s, and a
//! restart on the same data finishes every accepted order exactly once.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{App, BIN, Load, SECRET, assert_one_terminal, audit, checkout, token, write_catalog};

/// Sends SIGTERM to `pid`.
fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_an_empty_directory_serves_the_demo_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file");
    let work = dir.path().join("empty");
    std::fs::create_dir(&work).expect("empty dir");
    let mut cmd = Command::new(BIN);
    cmd.current_dir(&work)
        .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORDERFLOW_")) {
        cmd.env_remove(key);
    }
    let mut child = cmd.spawn().expect("orderflow starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("orderflow listening on ") {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let Ok(base) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        panic!("orderflow did not start from an empty directory; stderr:\n{log}");
    };
    let client = reqwest::Client::new();
    let catalog: Value = client
        .get(format!("{base}/v1/catalog"))
        .send()
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    let skus: Vec<&str> = catalog["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["sku"].as_str())
        .collect();
    assert!(skus.contains(&"SKU-0001"), "the demo catalog: {catalog}");

    let customer = token("cust-anywhere", "checkout orders:read");
    let body = checkout(&[("SKU-0001", 1)], "tok_visa");
    let answer: Value = client
        .post(format!("{base}/v1/checkouts"))
        .bearer_auth(&customer)
        .json(&body)
        .send()
        .await
        .expect("checkout")
        .json()
        .await
        .expect("json");
    let id = answer["order_id"].as_str().expect("order id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view: Value = client
            .get(format!("{base}/v1/orders/{id}"))
            .bearer_auth(&customer)
            .send()
            .await
            .expect("view")
            .json()
            .await
            .expect("json");
        if view["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "not completed in time: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sigterm(child.id());
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status}");
    assert!(
        work.join("data").join("log").is_dir(),
        "the default data directory is ./data under the working directory"
    );
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).expect("stderr");
    assert!(
        log.contains("built-in demo"),
        "says where the catalog came from:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes when stderr is a file:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_within_10_s_and_a_restart_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[("SKU-A", 1999, 100_000), ("SKU-C", 1250, 100_000)],
    );
    let data = dir.path().join("data");
    let customer = token("cust-sigterm", "checkout orders:read");
    let mut app = App::start(&data, &catalog);
    let bodies = (0..3000)
        .map(|i| match i % 3 {
            0 => checkout(&[("SKU-A", 1)], "tok_visa"),
            1 => checkout(&[("SKU-C", 2)], "tok_decline"),
            _ => checkout(&[("SKU-A", 1), ("SKU-C", 1)], "tok_flaky"),
        })
        .collect();
    // Once the server stops, requests are refused: never accepted.
    let sender = Load::spawn(&app, &customer, bodies, 64);
    let deadline = Instant::now() + Duration::from_secs(120);
    while sender.accepted() < 800 {
        assert!(
            Instant::now() < deadline,
            "800 checkouts not accepted in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = Instant::now();
    app.stop();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM under load took {took:?} to exit"
    );
    let accepted = sender.finish().await;
    assert!(
        accepted.len() >= 800,
        "stopped mid-stream: {} accepted",
        accepted.len()
    );

    let mut app = App::start(&data, &catalog);
    let views = app
        .await_terminal(&customer, &accepted, Duration::from_secs(180))
        .await;
    assert_eq!(views.len(), accepted.len());
    for view in &views {
        assert_one_terminal(view);
    }
    app.stop();
    let (ok, report) = audit(&data, &catalog);
    assert!(ok, "stock audit failed after the restart:\n{report}");
}
