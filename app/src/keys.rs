//! Rotation of the JWT verifying keys: a [`Chore`] that checks the key file (`jwt.jwks_file`
//! or `jwt.public_key_file`) every `jwt.reload_secs` and, when it has changed, reads it and
//! swaps the API's keys at once. A new file that cannot be used is logged and counted, and the
//! keys in use stay: a half-written or wrong file must not lock every customer out.

use crate::supervisor::Chore;
use orderflow_ingest::Auth;
use orderflow_ingest::auth::KeyFile;
use std::sync::Arc;
use std::time::Duration;

/// Reloads to count: `orderflow_jwt_key_reloads_total{outcome="ok"|"failed"}`.
const RELOADS: &str = "orderflow_jwt_key_reloads_total";

/// Keys in use: `orderflow_jwt_keys`.
const KEYS: &str = "orderflow_jwt_keys";

/// The chore that swaps `auth`'s keys when `file` changes, checked `every` period. `file` is
/// the one the keys in use were read from, so an unchanged file is not read again.
pub fn reloader(auth: Arc<Auth>, file: KeyFile, every: Duration) -> Chore {
    metrics::gauge!(KEYS).set(auth.key_count() as f64);
    let mut file = file;
    Chore::new("jwt-key-reload", every, move || {
        reload_if_changed(&auth, &mut file);
        async { Ok(()) }
    })
}

/// Reads `file` into `auth` if it changed since it was last read; true if keys were swapped.
pub fn reload_if_changed(auth: &Auth, file: &mut KeyFile) -> bool {
    if !file.changed() {
        return false;
    }
    match file.load() {
        Ok(keys) => {
            let ids = keys.key_ids().join(" ");
            let count = keys.len();
            auth.replace_keys(keys);
            metrics::counter!(RELOADS, "outcome" => "ok").increment(1);
            metrics::gauge!(KEYS).set(count as f64);
            tracing::info!(file = %file.path().display(), keys = count, kids = %ids, "Reloaded the JWT keys");
            true
        }
        Err(e) => {
            metrics::counter!(RELOADS, "outcome" => "failed").increment(1);
            tracing::error!(
                file = %file.path().display(),
                error = %e,
                "Keeping the JWT keys in use: the changed key file cannot be used"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_ingest::auth::KeyFormat;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/jwt")
            .join(name)
    }

    #[test]
    fn a_changed_file_swaps_the_keys_and_a_bad_one_keeps_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        std::fs::copy(fixture("jwks-a.json"), &path).expect("copy");
        let mut file = KeyFile::new(&path, KeyFormat::Jwks);
        let auth = Auth::with_keys(file.load().expect("loads"));
        assert!(!reload_if_changed(&auth, &mut file), "unchanged");
        // A longer file: its length changes even where mtime is coarse.
        std::fs::copy(fixture("jwks-ab.json"), &path).expect("copy");
        assert!(reload_if_changed(&auth, &mut file), "swapped");
        assert_eq!(auth.key_count(), 2);
        std::fs::write(&path, "{\"keys\": [").expect("write");
        assert!(!reload_if_changed(&auth, &mut file), "kept");
        assert!(!reload_if_changed(&auth, &mut file), "reported once");
        std::fs::remove_file(&path).expect("remove");
        assert!(
            !reload_if_changed(&auth, &mut file),
            "a missing file keeps the keys"
        );
        std::fs::copy(fixture("jwks-b.json"), &path).expect("copy");
        assert!(reload_if_changed(&auth, &mut file), "back");
        assert_eq!(auth.key_count(), 1);
    }
}
