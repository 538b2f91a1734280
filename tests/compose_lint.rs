//! `compose.yaml` (README, "The distributed stack") against the Compose specification's schema
//! and dclint's rules (configured in `.dclintrc.yaml`). No Docker engine runs where the tests
//! do, so the stack is linted here, not started.

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

#[test]
fn compose_file_passes_the_compose_spec_linter() {
    let output = match Command::new("dclint")
        .args(["compose.yaml", "--no-color"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("dclint, the Docker Compose linter, is not installed: npm install -g dclint")
        }
        Err(e) => panic!("cannot run `dclint compose.yaml`: {e}"),
    };
    assert!(
        output.status.success(),
        "`dclint compose.yaml` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
