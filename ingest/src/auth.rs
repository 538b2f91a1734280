//! HS256 JWTs: verifying the customer's token and minting tokens for curl, k6 and tests.

use crate::Problem;
use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

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
    pub aud: Option<String>,
}

impl Claims {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split_whitespace().any(|s| s == scope)
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mint token: {0}")]
pub struct MintError(#[source] jsonwebtoken::errors::Error);

/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Most verified tokens remembered; when full the memory starts over.
const REMEMBERED: usize = 10_000;

/// Verifies and mints tokens with one shared secret.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// What minted tokens name as issuer and audience (those checked, if any).
    issuer: Option<String>,
    audience: Option<String>,
    /// Tokens that verified, with their claims. A customer sends the same token with every
    /// checkout and every poll of its order; checking its signature once is enough, since the
    /// same bytes always verify the same way. Expiry is checked on every use.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

impl Auth {
    /// Tokens signed with `secret` (HS256).
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: None,
            audience: None,
            verified: Mutex::new(HashMap::new()),
        }
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
            aud: self.audience.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(MintError)
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
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let fresh = |claims: &Claims| claims.exp.saturating_add(self.validation.leeway) > now;
        if let Some(claims) = self.verified.lock().get(token).filter(|c| fresh(c)) {
            return Ok(claims.clone());
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Problem::unauthorized(format!("invalid token: {e}")))?;
        if data.claims.sub.is_empty() {
            return Err(Problem::unauthorized("the token has no subject"));
        }
        let mut verified = self.verified.lock();
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
            auth.verified.lock().contains_key(token.as_str()),
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
        auth.verified.lock().insert(stale.as_str().into(), claims);
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
