//! The OpenAPI document against the built binary: schemathesis (PyPI `schemathesis`) reads
//! `/openapi.json` from a running `orderflow serve`, generates valid and invalid requests for
//! every operation and runs all its checks on the answers: no 5xx, every status, header, content
//! type and body as documented, valid requests accepted, invalid ones refused, authentication
//! enforced, 405 with `Allow` for undocumented methods. A missing schemathesis fails the test.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{App, token, write_catalog};

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

#[test]
fn schemathesis_finds_no_mismatch_between_the_document_and_the_api() {
    let st = schemathesis();
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(
        dir.path(),
        &[("SKU-0001", 1299, 1_000_000), ("SKU-0002", 450, 1_000_000)],
    );
    let app = App::start(&dir.path().join("data"), &catalog);
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
        .args(["--request-timeout", "10", "--no-color"])
        // Its example database and cache land in the test's own directory.
        .current_dir(dir.path())
        .env("PYTHONPATH", HOOKS_DIR)
        .env("SCHEMATHESIS_HOOKS", "orderflow_hooks")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::from(log.try_clone().expect("output file")))
        .stderr(Stdio::from(log));
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
        std::thread::sleep(Duration::from_millis(200));
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
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
