//! JWTs: verifying the customer's token and minting tokens for curl, k6 and tests.
//!
//! Tokens are verified with one HS256 secret, or with public keys ([`keys`]): an RSA or EC key
//! from a PEM file (RS256, ES256), or a JSON Web Key Set whose key the token's `kid` names.
//! Each key takes exactly one algorithm, so with public keys an HS256 token (or `alg: none`)
//! is refused rather than checked against a public key as if it were a secret. The keys can be
//! replaced while serving ([`Auth::replace_keys`], when the key file is rotated).

pub mod keys;

use crate::Problem;
use arc_swap::ArcSwap;
use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, decode, decode_header, encode};
use keys::NoKey;
pub use keys::{KeyError, KeyFile, KeyFormat, KeySet};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The scope a token needs to read orders (the routes under `/v1/orders`, the WebSocket).
pub const READ_SCOPE: &str = "orders:read";

/// The claims orderflow reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Customer id.
    pub sub: String,
    /// Space-separated scopes: `checkout`, `orders:read`, `admin`.
    #[serde(default)]
    pub scope: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer; checked when `jwt.issuer` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience; checked when `jwt.audience` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// A token's audience: one value or a list. RFC 7519 allows both, and identity providers send
/// either, so reading only one would refuse their tokens before any check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "orderflow"`.
    One(String),
    /// `"aud": ["orderflow", "another-api"]`.
    Many(Vec<String>),
}

impl From<&str> for Audience {
    fn from(audience: &str) -> Self {
        Self::One(audience.to_owned())
    }
}

impl Claims {
    /// Ok if the token may read orders: scope `orders:read`, or `admin`; 403 otherwise.
    pub fn may_read(&self) -> Result<(), Problem> {
        if self.has_scope(READ_SCOPE) || self.has_scope("admin") {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "reading orders needs scope {READ_SCOPE:?} (or admin); this token has {:?}",
                self.scope
            )))
        }
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split_whitespace().any(|s| s == scope)
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Tokens are verified with public keys and no private key was given to sign with.
    #[error("cannot mint token: no signing key (tokens are verified with public keys)")]
    NoSigningKey,
    /// Encoding or signing failed.
    #[error("cannot mint token: {0}")]
    Encode(#[source] jsonwebtoken::errors::Error),
}

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Most verified tokens remembered; when full the memory starts over.
const REMEMBERED: usize = 10_000;

/// The keys tokens are checked with now, and the tokens they verified. Replaced whole when the
/// keys change, so a token remembered under the old keys is never taken under the new ones.
struct Active {
    keys: KeySet,
    /// Tokens that verified, with their claims. A customer sends the same token with every
    /// checkout and every poll of its order; checking its signature once is enough, since the
    /// same bytes always verify the same way under the same keys. Expiry is checked on every
    /// use.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl Active {
    fn new(keys: KeySet) -> Self {
        Self {
            keys,
            verified: Mutex::new(HashMap::new()),
        }
    }
}

/// How minted tokens are signed.
struct Signer {
    key: EncodingKey,
    /// Algorithm and `kid`.
    header: Header,
}

/// Verifies tokens (and mints them, with a signing key).
pub struct Auth {
    /// Swapped atomically on rotation; requests read it without a lock.
    active: ArcSwap<Active>,
    signer: Option<Signer>,
    /// The claim rules; each key sets its one algorithm on a copy.
    validation: Validation,
    /// What minted tokens name as issuer and audience (those checked, if any).
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// Tokens signed with `secret` (HS256); minted tokens are signed with it too.
    pub fn new(secret: &[u8]) -> Self {
        Self::with_keys(KeySet::secret(secret)).signing_with(
            EncodingKey::from_secret(secret),
            Algorithm::HS256,
            None,
        )
    }

    /// Tokens verified with `keys`; nothing is minted until [`signing_with`](Self::signing_with).
    pub fn with_keys(keys: KeySet) -> Self {
        // The algorithm is set per key at each check.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        Self {
            active: ArcSwap::from_pointee(Active::new(keys)),
            signer: None,
            validation,
            issuer: None,
            audience: None,
        }
    }

    /// Mints tokens signed with `key` for `algorithm`, naming `kid` in their header.
    pub fn signing_with(
        mut self,
        key: EncodingKey,
        algorithm: Algorithm,
        kid: Option<String>,
    ) -> Self {
        let mut header = Header::new(algorithm);
        header.kid = kid;
        self.signer = Some(Signer { key, header });
        self
    }

    /// Verifies tokens with `keys` from now on (a rotated key file); tokens verified under the
    /// old keys are checked again.
    pub fn replace_keys(&self, keys: KeySet) {
        self.active.store(Arc::new(Active::new(keys)));
    }

    /// Whether tokens are verified with a shared secret (HS256) rather than public keys.
    pub fn uses_secret(&self) -> bool {
        self.active.load().keys.is_secret()
    }

    /// How many keys verify tokens now.
    pub fn key_count(&self) -> usize {
        self.active.load().keys.len()
    }

    /// Also requires tokens to name `issuer` (`iss`) and `audience` (`aud`), each when given,
    /// as an identity provider's tokens do; minted tokens name them.
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut required: Vec<&str> = vec!["exp"];
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            required.push("aud");
        }
        self.validation.set_required_spec_claims(&required);
        self.issuer = issuer.map(str::to_owned);
        self.audience = audience.map(str::to_owned);
        self
    }

    /// A token for `sub` with `scope`, valid for `ttl`.
    pub fn mint(&self, sub: &str, scope: &str, ttl: Duration) -> Result<String, MintError> {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            scope: scope.to_owned(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
        };
        let signer = self.signer.as_ref().ok_or(MintError::NoSigningKey)?;
        encode(&signer.header, &claims, &signer.key).map_err(MintError::Encode)
    }

    /// The verified claims of the request's `Authorization: Bearer` token.
    pub fn verify(&self, headers: &HeaderMap) -> Result<Claims, Problem> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <token>"))?;
        let value = value
            .to_str()
            .map_err(|_| Problem::unauthorized("the Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| Problem::unauthorized("the Authorization scheme must be Bearer"))?;
        self.verify_token(token)
    }

    /// The verified claims of a bare token.
    pub fn verify_token(&self, token: &str) -> Result<Claims, Problem> {
        let token = token.trim();
        let active = self.active.load();
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let fresh = |claims: &Claims| claims.exp.saturating_add(self.validation.leeway) > now;
        if let Some(claims) = active.verified.lock().get(token).filter(|c| fresh(c)) {
            return Ok(claims.clone());
        }
        // `alg: none` and unknown algorithms fail here: the header does not parse.
        let header = decode_header(token)
            .map_err(|e| Problem::unauthorized(format!("invalid token: {e}")))?;
        // Each key takes one algorithm: an HS256 token is never checked against a public key.
        let wrong_algorithm = |takes: &[Algorithm]| {
            Problem::unauthorized(format!(
                "invalid token: signed with {:?}, but tokens here are signed with {takes:?}",
                header.alg
            ))
        };
        let key = active.keys.find(header.kid.as_deref()).map_err(|no_key| {
            // A token naming no key may not be meant for public keys at all: say which.
            let takes = active.keys.algorithms();
            match no_key {
                NoKey::MissingKeyId if !takes.contains(&header.alg) => wrong_algorithm(&takes),
                no_key => Problem::unauthorized(no_key.to_string()),
            }
        })?;
        if header.alg != key.algorithm {
            return Err(wrong_algorithm(&[key.algorithm]));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let data = decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| Problem::unauthorized(refusal(&e)))?;
        if data.claims.sub.is_empty() {
            return Err(Problem::unauthorized("the token has no subject"));
        }
        let mut verified = active.verified.lock();
        if verified.len() >= REMEMBERED {
            // Expired tokens go first; only a memory full of live ones starts over.
            verified.retain(|_, c| fresh(c));
            if verified.len() >= REMEMBERED {
                verified.clear();
            }
        }
        verified.insert(token.into(), data.claims.clone());
        Ok(data.claims)
    }

    /// Verified claims of a token that may read orders (scope `orders:read` or `admin`); 403
    /// otherwise.
    pub fn reader(&self, headers: &HeaderMap) -> Result<Claims, Problem> {
        let claims = self.verify(headers)?;
        claims.may_read()?;
        Ok(claims)
    }

    /// Verified claims that carry `scope`; 403 otherwise.
    pub fn require(&self, headers: &HeaderMap, scope: &str) -> Result<Claims, Problem> {
        let claims = self.verify(headers)?;
        if claims.has_scope(scope) {
            Ok(claims)
        } else {
            Err(Problem::forbidden(format!(
                "the token lacks scope {scope:?}"
            )))
        }
    }
}

/// What a client is told about a token that failed its checks.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let why = match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one expected".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not this API".to_owned(),
        ErrorKind::InvalidSignature => "the signature does not match the key".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::Json(e) => format!("the token's claims cannot be read: {e}"),
        _ => e.to_string(),
    };
    format!("invalid token: {why}")
}

#[cfg(test)]
mod failures;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"),
        );
        h
    }

    #[test]
    fn minted_tokens_verify_and_carry_scopes() {
        let auth = Auth::new(b"secret");
        let token = auth
            .mint("cust-1", "checkout orders:read", Duration::from_secs(60))
            .expect("mints");
        let claims = auth.verify(&bearer(&token)).expect("verifies");
        assert_eq!(claims.sub, "cust-1");
        assert!(claims.has_scope("checkout") && !claims.has_scope("admin"));
        assert_eq!(
            auth.require(&bearer(&token), "admin")
                .map_err(|p| p.status.as_u16())
                .err(),
            Some(403)
        );
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let auth = Auth::new(b"secret");
        let token = auth
            .mint("cust-1", "checkout", Duration::from_secs(60))
            .expect("mints");
        assert!(auth.verify(&bearer(&token)).is_ok());
        assert!(
            auth.active
                .load()
                .verified
                .lock()
                .contains_key(token.as_str()),
            "remembered"
        );
        // A token that verified an hour ago and expired since: its memory is not used, and
        // the token itself is refused.
        let now = chrono::Utc::now().timestamp() as u64;
        let claims = Claims {
            sub: "cust-2".into(),
            scope: "checkout".into(),
            exp: now - 3600,
            iat: now - 7200,
            nbf: None,
            iss: None,
            aud: None,
        };
        let stale = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .expect("encodes");
        auth.active
            .load()
            .verified
            .lock()
            .insert(stale.as_str().into(), claims);
        assert_eq!(
            auth.verify(&bearer(&stale))
                .map_err(|p| p.status.as_u16())
                .err(),
            Some(401)
        );
    }

    #[test]
    fn bad_tokens_are_401() {
        let auth = Auth::new(b"secret");
        let other = Auth::new(b"other")
            .mint("c", "checkout", Duration::from_secs(60))
            .expect("mints");
        for headers in [HeaderMap::new(), bearer("garbage"), bearer(&other)] {
            assert_eq!(
                auth.verify(&headers).map_err(|p| p.status.as_u16()).err(),
                Some(401)
            );
        }
        let expired = {
            let now = chrono::Utc::now().timestamp() as u64;
            let claims = Claims {
                sub: "c".into(),
                scope: "checkout".into(),
                exp: now - 3600,
                iat: now - 7200,
                nbf: None,
                iss: None,
                aud: None,
            };
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"secret"),
            )
            .expect("encodes")
        };
        assert_eq!(
            auth.verify(&bearer(&expired))
                .map_err(|p| p.status.as_u16())
                .err(),
            Some(401)
        );
    }

    /// A token signed with `secret` carrying `claims`.
    fn signed(claims: &Claims) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .expect("encodes")
    }

    #[test]
    fn issuer_audience_and_not_before_are_checked() {
        let auth = Auth::new(b"secret").expecting(Some("https://id.example"), Some("orderflow"));
        let minted = auth
            .mint("c", "checkout", Duration::from_secs(60))
            .expect("mints");
        assert!(
            auth.verify(&bearer(&minted)).is_ok(),
            "minted tokens name both"
        );
        let now = chrono::Utc::now().timestamp() as u64;
        let good = Claims {
            sub: "c".into(),
            scope: "checkout".into(),
            exp: now + 600,
            iat: now,
            nbf: Some(now - 10),
            iss: Some("https://id.example".into()),
            aud: Some("orderflow".into()),
        };
        assert!(auth.verify(&bearer(&signed(&good))).is_ok());
        let refused = |claims: Claims, why: &str| {
            let answer = auth.verify(&bearer(&signed(&claims)));
            assert_eq!(
                answer.map_err(|p| p.status.as_u16()).err(),
                Some(401),
                "{why}"
            );
        };
        refused(
            Claims {
                iss: Some("https://evil.example".into()),
                ..good.clone()
            },
            "wrong issuer",
        );
        refused(
            Claims {
                iss: None,
                ..good.clone()
            },
            "no issuer",
        );
        refused(
            Claims {
                aud: Some("someone-else".into()),
                ..good.clone()
            },
            "wrong audience",
        );
        refused(
            Claims {
                aud: None,
                ..good.clone()
            },
            "no audience",
        );
        refused(
            Claims {
                nbf: Some(now + 3600),
                ..good.clone()
            },
            "not yet valid",
        );
        // Within the leeway, a clock a little ahead of ours is fine.
        assert!(
            auth.verify(&bearer(&signed(&Claims {
                nbf: Some(now + 5),
                ..good.clone()
            })))
            .is_ok()
        );
        // Without them configured, neither is asked for.
        assert!(
            Auth::new(b"secret")
                .verify(&bearer(&signed(&Claims {
                    iss: None,
                    aud: None,
                    ..good
                })))
                .is_ok()
        );
    }
}
