//! The OpenAPI document against the built binary: schemathesis (PyPI `schemathesis`) reads
//! `/openapi.json` from a running `orderflow serve`, generates valid and invalid requests for
//! every operation and runs all its checks on the answers: no 5xx, every status, header, content
//! type and body as documented, valid requests accepted, invalid ones refused, authentication
//! enforced, 405 with `Allow` for undocumented methods. A missing schemathesis fails the test.
//! A failed run prints its seed: `SCHEMATHESIS_SEED=SEED cargo test --test schemathesis_e2e`
//! draws the same cases again.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{App, checkout, token, write_catalog};

/// Generated cases per operation and phase: about 20 s of requests on two cores, a few
/// thousand cases in all.
const MAX_EXAMPLES: &str = "150";

/// Longest the run may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(240);

/// The hooks module beside this file (see its docstring).
const HOOKS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");

/// The schemathesis command line on `PATH` (`st`, or its long name).
fn schemathesis() -> &'static str {
    ["st", "schemathesis"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "schemathesis is not installed (neither `st` nor `schemathesis` runs): \
                 `python3 -m pip install schemathesis` (.ci/run installs it)"
            )
        })
}

/// Places an order big enough to take every refund the run draws and waits for it to complete:
/// its id. A refund of a random order id can only be 404 and one of an uncaptured order only
/// 409, so without a captured order schemathesis would never see a refund accepted (and would
/// warn that the operation rejects what the document allows).
async fn refundable_order(app: &App) -> String {
    let customer = token("schemathesis-refunds", "checkout orders:read");
    let (status, body) = app
        .checkout(&customer, &checkout(&[("SKU-0001", 100)], "tok_visa"))
        .await
        .expect("checkout");
    assert_eq!(status, 202, "{body}");
    let id = body["order_id"].as_str().expect("order id").to_owned();
    let view = app
        .await_terminal(
            &customer,
            std::slice::from_ref(&id),
            Duration::from_secs(30),
        )
        .await
        .remove(0);
    assert_eq!(view["status"], "completed", "{view}");
    assert!(
        view["payment"]["captured"]["minor"].as_i64() >= Some(129_900),
        "{view}"
    );
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_mismatch_between_the_document_and_the_api() {
    let st = schemathesis();
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[("SKU-0001", 1299, 1_000_000), ("SKU-0002", 450, 1_000_000)],
    );
    let app = App::start(&dir.path().join("data"), &catalog);
    let refundable = refundable_order(&app).await;
    let bearer = token("schemathesis", "checkout orders:read admin");
    let output = dir.path().join("schemathesis.out");
    let log = std::fs::File::create(&output).expect("output file");
    let mut run = Command::new(st);
    run.arg("--config-file")
        .arg(Path::new(HOOKS_DIR).join("schemathesis.toml"))
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        .args(["--max-examples", MAX_EXAMPLES])
        // The WebSocket route answers a plain GET (all schemathesis sends) with 400: it is
        // documented as the upgrade it is, and tests/websocket_e2e.rs drives it.
        .args(["--exclude-operation-id", "followOrder"])
        // A drawn `GET /v1/orders/{id}?wait=N` with an `If-None-Match` that matches (`*`) is a
        // long poll the API holds for up to N seconds (at most 30, as documented) before its
        // 304: the client must wait longer than that (CI failed once on `wait=28` with 10 s).
        .args(["--request-timeout", "35", "--no-color"])
        // Its example database and cache land in the test's own directory.
        .current_dir(dir.path())
        .env("PYTHONPATH", HOOKS_DIR)
        .env("SCHEMATHESIS_HOOKS", "orderflow_hooks")
        .env("ORDERFLOW_REFUNDABLE_ORDER", &refundable)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::from(log.try_clone().expect("output file")))
        .stderr(Stdio::from(log));
    // A failing run prints its seed; `SCHEMATHESIS_SEED=…` replays it.
    if let Ok(seed) = std::env::var("SCHEMATHESIS_SEED") {
        run.args(["--seed", &seed]);
    }
    let mut child = run.spawn().expect("schemathesis starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {DEADLINE:?}:\n{}",
                read(&output)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = read(&output);
    println!("{report}");
    assert!(
        status.success(),
        "schemathesis found mismatches between /openapi.json and the API ({status}):\n{report}"
    );
    assert!(
        report.contains("No issues found"),
        "schemathesis exited 0 without its all-clear:\n{report}"
    );
    // The valid refunds reached the ledger (the hook points them at this order), so their 202
    // answers were checked against the document too.
    let view = app.view(&bearer, &refundable).await;
    let refunds = view["refunds"].as_array().map_or(0, Vec::len);
    assert!(refunds > 0, "no refund was accepted during the run: {view}");
    println!("{refunds} refunds accepted on {refundable}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
