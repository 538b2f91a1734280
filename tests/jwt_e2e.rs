//! Public keys verify tokens in the built binary: `serve` with a JWKS file takes tokens of its
//! key and refuses HS256 ones; the file rotated while serving is reloaded within
//! `jwt.reload_secs`, after which the new key's tokens work and the old key's are refused; a bad
//! new file is counted and the keys in use stay. `orderflow token` refuses to sign with the
//! secret there and signs with `--private-key`.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{App, checkout, run_command, write_catalog};

/// A committed test key or key set (tests/fixtures/jwt/README.md).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

/// A token for `sub` signed with the fixture private key `pem`, naming `kid`.
fn sign(pem: &str, alg: Algorithm, kid: &str) -> String {
    let bytes = std::fs::read(fixture(pem)).expect("fixture key");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&bytes),
        _ => EncodingKey::from_ec_pem(&bytes),
    }
    .expect("private key");
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"sub": format!("cust-{kid}"), "scope": "checkout orders:read",
                        "iat": now, "exp": now + 600});
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, &claims, &key).expect("signs")
}

/// `GET /v1/orders` with `token`: the status and the body.
async fn orders(app: &App, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url("/v1/orders"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The value of the counter `orderflow_jwt_key_reloads_total` with `outcome` (0 if absent).
async fn reloads(app: &App, outcome: &str) -> f64 {
    let text = app.metrics().await;
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("orderflow_jwt_key_reloads_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Replaces `path` with `contents` the way deploy tools do: write beside it, then rename.
fn replace(path: &Path, contents: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, contents).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// Waits up to `within` for `check` to hold.
async fn eventually<F: std::future::Future<Output = bool>>(
    within: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_jwks_file_is_reloaded_and_the_old_key_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = write_catalog(dir.path(), &[("SKU-A", 500, 100)]);
    let jwks = dir.path().join("jwks.json");
    std::fs::copy(fixture("jwks-a.json"), &jwks).expect("copy");
    let jwks_var = jwks.to_str().expect("utf-8 path");
    let env = [
        ("ORDERFLOW_JWT_JWKS_FILE", jwks_var),
        ("ORDERFLOW_JWT_RELOAD_SECS", "1"),
    ];
    let app = App::start_with(&dir.path().join("data"), &catalog, &env);
    let a = sign("rsa-a.pem", Algorithm::RS256, "rsa-a");
    let b = sign("ec-b.pem", Algorithm::ES256, "ec-b");

    // Key A verifies; B is unknown; the HS256 secret the test harness passes verifies nothing.
    assert_eq!(orders(&app, &a).await.0, 200);
    let (status, body) = app
        .checkout(&a, &checkout(&[("SKU-A", 1)], "tok_visa"))
        .await
        .expect("answers");
    assert_eq!(status, 202, "{body}");
    let (status, body) = orders(&app, &b).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["type"], "/problems/unauthorized", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"ec-b\" is not one of the configured keys")),
        "{body}"
    );
    let hs256 = support::token("cust-hs", "checkout orders:read");
    let (status, body) = orders(&app, &hs256).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["detail"].to_string().contains("HS256"), "{body}");

    // Rotation: the file now holds B only.
    replace(&jwks, &std::fs::read(fixture("jwks-b.json")).expect("B"));
    assert!(
        eventually(Duration::from_secs(15), || async {
            orders(&app, &b).await.0 == 200
        })
        .await,
        "B's tokens not taken within 15 s of the rotation"
    );
    let (status, body) = orders(&app, &a).await;
    assert_eq!(status, 401, "A's token after the rotation: {body}");
    assert!(body["detail"].to_string().contains("rsa-a"), "{body}");
    assert!(reloads(&app, "ok").await >= 1.0);

    // A broken file is counted and logged; B still verifies.
    replace(&jwks, b"{\"keys\": [");
    assert!(
        eventually(Duration::from_secs(15), || async {
            reloads(&app, "failed").await >= 1.0
        })
        .await,
        "the broken key file was not reported"
    );
    assert_eq!(orders(&app, &b).await.0, 200, "B still verifies");
    let log = std::fs::read_to_string(dir.path().join("data.stderr.log")).unwrap_or_default();
    assert!(log.contains("Keeping the JWT keys in use"), "{log}");

    // `orderflow token` will not sign with the secret a JWKS server refuses, and signs with
    // the identity provider's key instead.
    replace(&jwks, &std::fs::read(fixture("jwks-b.json")).expect("B"));
    let data = dir.path().join("data");
    let (ok, out) = run_command(&data, &catalog, &env, &["token", "--sub", "cust-cli"]);
    assert!(!ok && out.contains("--private-key"), "{out}");
    let key = fixture("ec-b.pem");
    let key = key.to_str().expect("utf-8 path");
    let args = [
        "token",
        "--sub",
        "cust-cli",
        "--private-key",
        key,
        "--kid",
        "ec-b",
    ];
    let (ok, out) = run_command(&data, &catalog, &env, &args);
    assert!(ok, "{out}");
    let minted = out.lines().next().unwrap_or_default().trim().to_owned();
    assert!(
        eventually(Duration::from_secs(15), || async {
            orders(&app, &minted).await.0 == 200
        })
        .await,
        "the minted token is refused: {:?}",
        orders(&app, &minted).await
    );
    let (ok, out) = run_command(
        &data,
        &catalog,
        &env,
        &["token", "--sub", "c", "--private-key", key, "--kid", "ec-z"],
    );
    assert!(
        !ok && out.contains("\"ec-z\""),
        "a kid the key set lacks: {out}"
    );
}
