//! The one-shot commands: `seed`, `token` and `dlq list|replay` (`audit` is in
//! [`crate::audit`]). Each prints its
//! report to stdout (progress to stderr) and says through its result whether it succeeded.

use crate::backends::Backends;
use crate::config::Config;
use crate::error::AppError;
use crate::process::warn_dev_secret;
use orderflow_pipeline::dlq;
use orderflow_stages::topology;
use std::path::Path;
use std::time::Duration;

/// Creates the topics and seeds the catalog's stock where a SKU has none yet.
pub async fn seed(config: &Config) -> Result<(), AppError> {
    let (backends, _) = Backends::connect(config).await?;
    let seeded = backends.prepare().await?;
    println!(
        "Seeded {seeded} SKUs ({} in the catalog)",
        backends.catalog.items().len()
    );
    Ok(())
}

/// How `orderflow token` signs: the configured secret (HS256), or a private key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signing<'a> {
    /// A PEM private key (RSA: RS256, EC P-256: ES256); `None`: `jwt.secret`.
    pub private_key: Option<&'a Path>,
    /// The `kid` the token names (the key's id in `jwt.jwks_file`).
    pub kid: Option<&'a str>,
}

/// Prints a token signed with the configured secret, or with `signing.private_key`. With public
/// keys configured, a token signed by the secret would be refused, so that is an error; a
/// token signed by a private key must verify against the configured keys.
pub fn token(
    config: &Config,
    sub: &str,
    scope: &str,
    ttl: Duration,
    signing: Signing<'_>,
) -> Result<(), AppError> {
    let auth = config.jwt.auth()?;
    let verifier = config.jwt.key_file();
    let auth = match (signing.private_key, &verifier) {
        (Some(path), _) => {
            let what = || format!("the private key {}", path.display());
            let pem =
                std::fs::read(path).map_err(|e| AppError::backend(what(), "--private-key", e))?;
            let (key, algorithm) = orderflow_ingest::auth::keys::signing_key(&pem)
                .map_err(|e| AppError::backend(what(), "--private-key", e))?;
            auth.signing_with(key, algorithm, signing.kid.map(str::to_owned))
        }
        (None, Some((key, file))) => {
            return Err(AppError::Usage(format!(
                "tokens are verified with {key} ({}), so a token signed with jwt.secret would \
                 be refused; sign with the identity provider's private key instead: orderflow \
                 token --sub ID --private-key KEY.pem --kid KID",
                file.path().display()
            )));
        }
        (None, None) => {
            if config.uses_dev_secret() {
                warn_dev_secret();
            }
            auth
        }
    };
    let token = auth.mint(sub, scope, ttl).map_err(AppError::Mint)?;
    // Whatever signed it, a token the configured keys (or secret) refuse is of no use.
    let against = verifier.map_or("jwt.secret", |(key, _)| key);
    auth.verify_token(&token).map_err(|refused| {
        AppError::Usage(format!(
            "the token would be refused by {against}: {}",
            refused.detail
        ))
    })?;
    println!("{token}");
    Ok(())
}

/// The dead-letter topic named by `topic` (a source topic or its `.dlq`), if it is one of ours.
fn dlq_of(topic: &str) -> Result<String, AppError> {
    let dlq = if topic.ends_with(".dlq") {
        topic.to_owned()
    } else {
        dlq::dlq_topic(topic)
    };
    if !topology::all_topics().contains(&dlq) {
        return Err(AppError::Usage(format!(
            "unknown topic {topic:?}; dead-letter topics sit beside {}",
            topology::PROJECTOR_INPUTS.join(", ")
        )));
    }
    Ok(dlq)
}

/// Lists up to `limit` dead letters of `topic`.
pub async fn dlq_list(config: &Config, topic: &str, limit: usize) -> Result<(), AppError> {
    let dlq = dlq_of(topic)?;
    let (backends, _) = Backends::connect(config).await?;
    let letters = dlq::list(backends.log.as_ref(), &dlq, limit).await?;
    println!("{} record(s) in {dlq}", letters.len());
    for letter in letters {
        println!("{}", letter.summary());
    }
    Ok(())
}

/// Puts up to `limit` dead letters of `topic` back on the topics they came from.
pub async fn dlq_replay(config: &Config, topic: &str, limit: usize) -> Result<(), AppError> {
    let dlq = dlq_of(topic)?;
    let (backends, _) = Backends::connect(config).await?;
    let sources = topology::all_topics();
    backends.log.ensure_topics(&sources).await?;
    let mut progress = |n: usize| eprintln!("replayed {n} record(s) from {dlq} so far");
    let report = dlq::replay(backends.log.as_ref(), &dlq, &sources, limit, &mut progress).await?;
    for skipped in &report.skipped {
        eprintln!("skipping {skipped}");
    }
    println!(
        "Replayed {} record(s) from {dlq}; skipped {}",
        report.replayed,
        report.skipped.len()
    );
    Ok(())
}

/// Asks a running process whether it is ready (`GET /readyz`), for container health checks:
/// `url` (`http://HOST:PORT/readyz`), or the configured `api.listen` (an unspecified address
/// such as 0.0.0.0 is asked on loopback). `Ok(true)` when it answers 200 within 3 s.
pub async fn healthcheck(config: &Config, url: Option<&str>) -> Result<bool, AppError> {
    let (authority, path) = match url {
        Some(url) => {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                AppError::Usage(format!("--url {url:?}: expected http://HOST:PORT/PATH"))
            })?;
            match rest.split_once('/') {
                Some((authority, path)) => (authority.to_owned(), format!("/{path}")),
                None => (rest.to_owned(), "/readyz".to_owned()),
            }
        }
        None => {
            let mut addr = config.api.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            (addr.to_string(), "/readyz".to_owned())
        }
    };
    let ask = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&authority).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        // The status line, however the answer is split into reads.
        let mut head = Vec::with_capacity(64);
        let mut chunk = [0u8; 64];
        while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), ask).await {
        Ok(Ok(head)) => {
            let ready = head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200");
            if !ready {
                eprintln!("{authority}{path}: {}", head.lines().next().unwrap_or(""));
            }
            Ok(ready)
        }
        Ok(Err(e)) => {
            eprintln!("{authority}{path}: {e}");
            Ok(false)
        }
        Err(_) => {
            eprintln!("{authority}{path}: no answer within 3 s");
            Ok(false)
        }
    }
}
