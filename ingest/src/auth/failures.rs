//! One test per way a token is refused, each run against every verifier: the HS256 secret, an
//! RSA and an EC public key from PEM files, and a JWKS holding both (tokens naming their key by
//! `kid`). The keys are the committed fixtures of `tests/fixtures/jwt/` (see its README).

use super::*;
use axum::http::HeaderValue;
use serde_json::json;

const RSA_A: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa-a.pem");
const RSA_A_PUB: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa-a.pub.pem");
const RSA_X: &[u8] = include_bytes!("../../../tests/fixtures/jwt/rsa-x.pem");
const EC_B: &[u8] = include_bytes!("../../../tests/fixtures/jwt/ec-b.pem");
const EC_B_PUB: &[u8] = include_bytes!("../../../tests/fixtures/jwt/ec-b.pub.pem");
const EC_X: &[u8] = include_bytes!("../../../tests/fixtures/jwt/ec-x.pem");
const JWKS_A: &[u8] = include_bytes!("../../../tests/fixtures/jwt/jwks-a.json");
const JWKS_B: &[u8] = include_bytes!("../../../tests/fixtures/jwt/jwks-b.json");
const JWKS_AB: &[u8] = include_bytes!("../../../tests/fixtures/jwt/jwks-ab.json");

const SECRET: &[u8] = b"a-test-secret-of-some-length";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "orderflow";

/// A verifier and how its tokens are signed.
struct Case {
    name: &'static str,
    auth: Auth,
    /// The key the verifier trusts, its algorithm and the `kid` tokens name.
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<&'static str>,
    /// A key of the same kind the verifier does not trust.
    other: EncodingKey,
    /// The public key as bytes: what an attacker would use as an HS256 secret.
    public: &'static [u8],
}

fn rsa(pem: &[u8]) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem).expect("RSA fixture")
}

fn ec(pem: &[u8]) -> EncodingKey {
    EncodingKey::from_ec_pem(pem).expect("EC fixture")
}

fn expecting(keys: Result<KeySet, KeyError>) -> Auth {
    Auth::with_keys(keys.expect("fixture keys")).expecting(Some(ISSUER), Some(AUDIENCE))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "HS256 secret",
            auth: Auth::new(SECRET).expecting(Some(ISSUER), Some(AUDIENCE)),
            key: EncodingKey::from_secret(SECRET),
            alg: Algorithm::HS256,
            kid: None,
            other: EncodingKey::from_secret(b"another-secret-of-some-length"),
            public: b"",
        },
        Case {
            name: "RS256 PEM",
            auth: expecting(KeySet::from_pem(RSA_A_PUB)),
            key: rsa(RSA_A),
            alg: Algorithm::RS256,
            kid: None,
            other: rsa(RSA_X),
            public: RSA_A_PUB,
        },
        Case {
            name: "ES256 PEM",
            auth: expecting(KeySet::from_pem(EC_B_PUB)),
            key: ec(EC_B),
            alg: Algorithm::ES256,
            kid: None,
            other: ec(EC_X),
            public: EC_B_PUB,
        },
        Case {
            name: "JWKS, RS256 key",
            auth: expecting(KeySet::from_jwks(JWKS_AB)),
            key: rsa(RSA_A),
            alg: Algorithm::RS256,
            kid: Some("rsa-a"),
            other: rsa(RSA_X),
            public: RSA_A_PUB,
        },
        Case {
            name: "JWKS, ES256 key",
            auth: expecting(KeySet::from_jwks(JWKS_AB)),
            key: ec(EC_B),
            alg: Algorithm::ES256,
            kid: Some("ec-b"),
            other: ec(EC_X),
            public: EC_B_PUB,
        },
    ]
}

fn now() -> u64 {
    chrono::Utc::now().timestamp() as u64
}

/// Claims every verifier takes.
fn good() -> serde_json::Value {
    json!({
        "sub": "cust-1", "scope": "checkout orders:read", "exp": now() + 600, "iat": now(),
        "nbf": now() - 10, "iss": ISSUER, "aud": AUDIENCE,
    })
}

/// `good()` with `field` set to `value` (or removed, for `null`).
fn with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut claims = good();
    match value {
        serde_json::Value::Null => claims.as_object_mut().map(|c| c.remove(field)),
        value => claims
            .as_object_mut()
            .map(|c| c.insert(field.into(), value)),
    };
    claims
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        axum::http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("ascii"),
    );
    h
}

impl Case {
    /// `claims` signed with the trusted key, naming the case's `kid`.
    fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(claims, &self.key, self.alg, self.kid)
    }

    fn sign_as(
        &self,
        claims: &serde_json::Value,
        key: &EncodingKey,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("signs")
    }

    /// The problem `headers` get: its status and detail.
    fn answer(&self, headers: &HeaderMap) -> Option<(u16, String)> {
        self.auth
            .require(headers, "checkout")
            .err()
            .map(|p| (p.status.as_u16(), p.detail))
    }

    /// Asserts that `token` is refused with 401, with a detail that says `why`.
    fn refuses(&self, token: &str, why: &str) {
        match self.answer(&bearer(token)) {
            Some((401, detail)) => assert!(
                detail.contains(why),
                "{}: detail {detail:?} should say {why:?}",
                self.name
            ),
            other => panic!("{}: expected 401 ({why}), got {other:?}", self.name),
        }
    }
}

#[test]
fn good_tokens_verify_with_every_verifier() {
    for case in cases() {
        let claims = case
            .auth
            .verify(&bearer(&case.sign(&good())))
            .unwrap_or_else(|p| panic!("{}: {}", case.name, p.detail));
        assert_eq!(claims.sub, "cust-1", "{}", case.name);
        assert!(claims.has_scope("orders:read"), "{}", case.name);
    }
}

#[test]
fn a_missing_authorization_header_is_401() {
    for case in cases() {
        let answer = case.answer(&HeaderMap::new());
        assert_eq!(answer.map(|a| a.0), Some(401), "{}", case.name);
        let mut basic = HeaderMap::new();
        basic.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(case.answer(&basic).map(|a| a.0), Some(401), "{}", case.name);
    }
}

#[test]
fn a_malformed_token_is_401() {
    for case in cases() {
        for token in ["garbage", "a.b.c", "", "..", "eyJhbGciOiJSUzI1NiJ9.e30"] {
            case.refuses(token, "invalid token");
        }
    }
}

#[test]
fn an_expired_token_is_401() {
    for case in cases() {
        case.refuses(
            &case.sign(&with("exp", json!(now() - 3600))),
            "expired (exp)",
        );
    }
}

#[test]
fn a_token_that_never_expires_is_401() {
    for case in cases() {
        // Claims without `exp` do not even read as claims: "missing field `exp`".
        case.refuses(&case.sign(&with("exp", json!(null))), "`exp`");
    }
}

#[test]
fn a_token_not_yet_valid_is_401() {
    for case in cases() {
        case.refuses(
            &case.sign(&with("nbf", json!(now() + 3600))),
            "not valid yet (nbf)",
        );
    }
}

#[test]
fn a_wrong_or_missing_issuer_is_401() {
    for case in cases() {
        let evil = with("iss", json!("https://evil.example"));
        case.refuses(&case.sign(&evil), "issuer (iss)");
        case.refuses(&case.sign(&with("iss", json!(null))), "no iss claim");
    }
}

#[test]
fn a_wrong_or_missing_audience_is_401() {
    for case in cases() {
        case.refuses(
            &case.sign(&with("aud", json!("someone-else"))),
            "audience (aud)",
        );
        case.refuses(&case.sign(&with("aud", json!(null))), "no aud claim");
        case.refuses(
            &case.sign(&with("aud", json!(["someone-else", "another"]))),
            "audience (aud)",
        );
    }
}

#[test]
fn an_audience_list_naming_this_api_verifies() {
    for case in cases() {
        let token = case.sign(&with("aud", json!(["another-api", AUDIENCE])));
        assert_eq!(case.answer(&bearer(&token)), None, "{}", case.name);
    }
    // Without `jwt.audience` a list is read and not checked.
    let auth = Auth::new(SECRET);
    let token = encode(
        &Header::new(Algorithm::HS256),
        &with("aud", json!(["a", "b"])),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("signs");
    assert!(auth.verify(&bearer(&token)).is_ok());
}

#[test]
fn a_token_signed_by_another_key_is_401() {
    for case in cases() {
        let forged = case.sign_as(&good(), &case.other, case.alg, case.kid);
        case.refuses(&forged, "signature does not match");
    }
}

#[test]
fn an_unknown_or_missing_key_id_is_401_with_a_clear_detail() {
    for case in cases().into_iter().filter(|c| c.kid.is_some()) {
        let unknown = case.sign_as(&good(), &case.key, case.alg, Some("retired-2019"));
        case.refuses(
            &unknown,
            "the token's key id \"retired-2019\" is not one of the configured keys",
        );
        let unnamed = case.sign_as(&good(), &case.key, case.alg, None);
        case.refuses(&unnamed, "no key id (kid)");
    }
    // One key from a PEM file checks every token, whatever its `kid` names.
    for case in cases().into_iter().filter(|c| c.kid.is_none()) {
        let named = case.sign_as(&good(), &case.key, case.alg, Some("any"));
        assert!(case.auth.verify(&bearer(&named)).is_ok(), "{}", case.name);
    }
}

#[test]
fn alg_none_is_401() {
    for case in cases() {
        let header = match case.kid {
            Some(kid) => json!({"alg": "none", "typ": "JWT", "kid": kid}),
            None => json!({"alg": "none", "typ": "JWT"}),
        };
        let unsigned = format!(
            "{}.{}.",
            base64_url(&header.to_string()),
            base64_url(&good().to_string())
        );
        case.refuses(&unsigned, "invalid token");
    }
}

/// Base64url without padding, as JWTs encode their parts.
fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

#[test]
fn an_hs256_token_is_refused_where_public_keys_verify() {
    // The classic confusion: an HS256 token whose "secret" is the server's public key.
    for case in cases().into_iter().filter(|c| c.alg != Algorithm::HS256) {
        let confused = case.sign_as(
            &good(),
            &EncodingKey::from_secret(case.public),
            Algorithm::HS256,
            case.kid,
        );
        case.refuses(&confused, "signed with HS256");
        let unnamed = case.sign_as(
            &good(),
            &EncodingKey::from_secret(case.public),
            Algorithm::HS256,
            None,
        );
        case.refuses(&unnamed, "signed with HS256");
    }
    // And the other way round: RS256 where the secret verifies.
    let hs = &cases()[0];
    let rs = hs.sign_as(&good(), &rsa(RSA_A), Algorithm::RS256, None);
    hs.refuses(&rs, "signed with RS256");
}

#[test]
fn a_missing_scope_is_403() {
    for case in cases() {
        let token = case.sign(&with("scope", json!("orders:read")));
        assert!(case.auth.verify(&bearer(&token)).is_ok(), "{}", case.name);
        let answer = case.answer(&bearer(&token));
        assert_eq!(answer.map(|a| a.0), Some(403), "{}", case.name);
    }
}

#[test]
fn replaced_keys_verify_and_tokens_of_the_old_ones_are_refused() {
    let auth = Auth::with_keys(KeySet::from_jwks(JWKS_A).expect("A"));
    let sign = |key: &EncodingKey, alg, kid: &str| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, &good(), key).expect("signs")
    };
    let a = sign(&rsa(RSA_A), Algorithm::RS256, "rsa-a");
    let b = sign(&ec(EC_B), Algorithm::ES256, "ec-b");
    assert!(
        auth.verify_token(&a).is_ok(),
        "A verifies (and is remembered)"
    );
    assert!(auth.verify_token(&b).is_err(), "B is not known yet");
    auth.replace_keys(KeySet::from_jwks(JWKS_B).expect("B"));
    assert!(auth.verify_token(&b).is_ok(), "B verifies after the swap");
    let refused = auth
        .verify_token(&a)
        .expect_err("A is refused, remembered or not");
    assert!(refused.detail.contains("\"rsa-a\""), "{}", refused.detail);
}

#[test]
fn public_keys_mint_nothing_without_a_private_key() {
    let auth = expecting(KeySet::from_jwks(JWKS_AB));
    assert!(matches!(
        auth.mint("c", "checkout", Duration::from_secs(60)),
        Err(MintError::NoSigningKey)
    ));
    let (key, alg) = keys::signing_key(EC_B).expect("an EC private key");
    let auth = auth.signing_with(key, alg, Some("ec-b".into()));
    let token = auth
        .mint("c", "checkout", Duration::from_secs(60))
        .expect("mints");
    assert!(
        auth.verify_token(&token).is_ok(),
        "names issuer, audience and kid"
    );
    assert_eq!(
        keys::signing_key(RSA_A).map(|k| k.1).ok(),
        Some(Algorithm::RS256)
    );
    assert!(
        keys::signing_key(RSA_A_PUB).is_err(),
        "a public key signs nothing"
    );
}

#[test]
fn key_sets_that_cannot_verify_are_refused_by_name() {
    let refused = |json: &str| {
        KeySet::from_jwks(json.as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(refused("{\"keys\": []}").contains("no keys"));
    assert!(refused("[1, 2]").contains("JSON Web Key Set"));
    assert!(
        refused(r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#).contains("symmetric")
    );
    let a: serde_json::Value = serde_json::from_slice(JWKS_A).expect("json");
    let rsa_a = &a["keys"][0];
    let twice = json!({"keys": [rsa_a, rsa_a]}).to_string();
    assert!(refused(&twice).contains("two keys"));
    let mut unnamed = rsa_a.clone();
    unnamed.as_object_mut().map(|k| k.remove("kid"));
    assert!(refused(&json!({"keys": [unnamed]}).to_string()).contains("no \"kid\""));
    let mut es = rsa_a.clone();
    es["alg"] = json!("ES256");
    assert!(refused(&json!({"keys": [es]}).to_string()).contains("not an RSA signature"));
    // Encryption keys of a provider's set are left out, never taken to check signatures.
    let mut for_encryption = rsa_a.clone();
    for_encryption["use"] = json!("enc");
    assert!(refused(&json!({"keys": [for_encryption.clone()]}).to_string()).contains("no keys"));
    let mut sign_only = rsa_a.clone();
    sign_only["key_ops"] = json!(["sign"]);
    assert!(refused(&json!({"keys": [sign_only]}).to_string()).contains("no keys"));
    let b_key =
        serde_json::from_slice::<serde_json::Value>(JWKS_B).expect("json")["keys"][0].clone();
    let mixed = KeySet::from_jwks(
        json!({"keys": [for_encryption, b_key]})
            .to_string()
            .as_bytes(),
    )
    .expect("the signing key is kept");
    assert_eq!(mixed.len(), 1);
    // A point that is not on the curve: found at load, not on every token.
    let b: serde_json::Value = serde_json::from_slice(JWKS_B).expect("json");
    let mut off_curve = b["keys"][0].clone();
    off_curve["y"] = off_curve["x"].clone();
    assert!(refused(&json!({"keys": [off_curve]}).to_string()).contains("\"ec-b\""));
    assert!(KeySet::from_pem(b"not a key").is_err());
    assert!(
        KeySet::from_pem(RSA_A).is_err(),
        "a private key is not a public key"
    );
}
