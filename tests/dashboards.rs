//! The Grafana dashboards, the Prometheus configuration and the alerting rules under
//! `dashboards/`: the committed JSON is what `dashboards/build.py` generates, and promtool
//! accepts the scrape configuration and the rules (and passes the rules' unit tests).

use std::path::Path;
use std::process::Command;

/// Runs `program args…` from the repository root and panics, with its output, unless it
/// succeeds; `missing` says how to install `program` when it cannot be started at all.
fn run(program: &str, args: &[&str], missing: &str) {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{command}`: {e}\n{missing}"));
    assert!(
        output.status.success(),
        "`{command}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn dashboards_are_generated_from_the_script() {
    run(
        "python3",
        &["dashboards/build.py", "--check"],
        "python3 is needed, with `python3 -m pip install -r dashboards/requirements.txt`",
    );
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let missing = "promtool is not installed: apt-get install prometheus \
                   (Debian/Ubuntu; it brings promtool, the service need not run)";
    for args in [
        ["check", "config", "dashboards/prometheus.yml"],
        ["check", "rules", "dashboards/alerts.yml"],
        ["test", "rules", "dashboards/alerts_test.yml"],
    ] {
        run("promtool", &args, missing);
    }
}
