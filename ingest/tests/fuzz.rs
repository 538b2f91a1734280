//! Fuzzing the two parsers every request from the internet reaches before anything else: the
//! checkout body decoder and the `Authorization` header. A proptest of 100,000 cases each (set
//! `FUZZ_CASES` to run more; the header against a JWKS verifier a twentieth of that): no input
//! panics, only the real token passes, a body over the limit is refused before it is decoded,
//! and decoding allocates memory bounded by the body limit, never by what the body claims
//! (deep nesting, huge numbers, long arrays).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use cap::Cap;
use jsonwebtoken::{Algorithm, EncodingKey};
use orderflow_domain::CheckoutRequest;
use orderflow_ingest::Auth;
use orderflow_ingest::auth::KeySet;
use orderflow_ingest::body::parse_json;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::alloc::System;
use std::sync::Mutex;
use std::time::Duration;

/// The API's default body limit (`api.max_body_bytes`).
const LIMIT: usize = 64 * 1024;

/// Memory a decode may hold at its peak, beyond the body itself: a small multiple of the
/// limit (decoded strings and vectors take more room than their JSON text).
const PEAK_BOUND: usize = 4 * LIMIT;

/// Every allocation of this test binary goes through a limit (the `cap` crate): while a body is
/// decoded the limit is what the process held before plus [`PEAK_BOUND`], so a decode that
/// wanted more would fail the allocation and abort the run.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// One test at a time: the limit is process-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `f` allowed at most `bound` bytes more than are held now.
fn within<T>(bound: usize, f: impl FnOnce() -> T) -> T {
    ALLOCATOR
        .set_limit(ALLOCATOR.allocated().saturating_add(bound))
        .expect("the limit is above what is held");
    let out = f();
    ALLOCATOR.set_limit(usize::MAX).expect("no limit");
    out
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn json_headers(declared: Option<usize>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(n) = declared {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    h
}

const VALID: &str = r#"{"currency":"USD","lines":[{"sku":"SKU-0001","quantity":2}],"shipping_address":{"name":"Ada","line1":"1 Main St","city":"SF","region":"CA","postal_code":"94107","country":"US"},"coupon_codes":["WELCOME10"],"payment":{"token":"tok_visa"}}"#;

/// Any JSON value, nested up to a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("currency".to_owned()),
                    Just("lines".to_owned()),
                    Just("sku".to_owned()),
                    Just("quantity".to_owned()),
                    Just("shipping_address".to_owned()),
                    Just("payment".to_owned()),
                    Just("token".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies: random bytes, random JSON, the valid body with one field replaced, cut or with
/// bytes flipped, and (one case in sixty, as they take longest) pathological shapes up to the
/// limit: deep nesting, escapes, huge exponents, thousands of lines.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let valid: serde_json::Value = serde_json::from_str(VALID).expect("valid json");
    let fields = [
        "currency",
        "lines",
        "shipping_address",
        "coupon_codes",
        "payment",
    ];
    prop_oneof![
        30 => prop::collection::vec(any::<u8>(), 0..2048),
        30 => json_value().prop_map(|v| v.to_string().into_bytes()),
        40 => (prop::sample::select(fields.to_vec()), json_value()).prop_map(move |(field, value)| {
            let mut body = valid.clone();
            body[field] = value;
            body.to_string().into_bytes()
        }),
        20 => (0..VALID.len(), any::<u8>(), any::<prop::sample::Index>()).prop_map(|(cut, byte, at)| {
            let mut body = VALID.as_bytes()[..cut].to_vec();
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] = byte;
            }
            body
        }),
        1 => (1usize..LIMIT, prop::sample::select(vec!["[", "{\"a\":", "\"\\u0000", "1e999999,", "{\"sku\":\"x\",\"quantity\":1},"]))
            .prop_map(|(n, unit)| unit.repeat(n / unit.len()).into_bytes()),
        1 => (0usize..60_000).prop_map(|n| format!(
                r#"{{"currency":"USD","lines":[{}{{"sku":"S","quantity":1}}],"shipping_address":{{}},"payment":{{}}}}"#,
                r#"{"sku":"S","quantity":1},"#.repeat(n / 25)
            ).into_bytes()),
    ]
}

#[test]
fn the_checkout_decoder_never_panics_and_its_memory_is_bounded_by_the_body_limit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&body(), |bytes| {
            let len = bytes.len();
            let bytes = Bytes::from(bytes);
            let headers = json_headers(Some(len));
            let answer = within(PEAK_BOUND, || {
                parse_json::<CheckoutRequest>(&headers, Ok(bytes.clone()), LIMIT)
                    .map(|(request, _)| request.structural_problems())
            });
            if len > LIMIT {
                prop_assert_eq!(answer.map_err(|p| p.status.as_u16()).err(), Some(413));
            } else if let Err(problem) = &answer {
                prop_assert_eq!(problem.status.as_u16(), 400, "{}", problem.detail);
            }
            Ok(())
        })
        .expect("no input panics, every answer is 400, 413 or a decoded checkout");
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let huge = Bytes::from(vec![b'['; 10 * LIMIT]);
    let headers = json_headers(Some(huge.len()));
    // A refusal needs next to nothing: the problem's own few strings.
    let answer = within(4096, || {
        parse_json::<CheckoutRequest>(&headers, Ok(huge.clone()), LIMIT)
    });
    assert_eq!(answer.map_err(|p| p.status.as_u16()).err(), Some(413));
    // A body larger than its declared length (or sent without one) is refused too.
    let headers = json_headers(None);
    let answer = within(4096, || {
        parse_json::<CheckoutRequest>(&headers, Ok(huge.clone()), LIMIT)
    });
    assert_eq!(answer.map_err(|p| p.status.as_u16()).err(), Some(413));
}

/// `Authorization` values: random bytes, schemes, JWT-shaped strings of random parts, `alg:
/// none`, the real token's claims and signature under another header (any `alg`, any `kid`),
/// and the real token with one character changed or cut.
fn authorization(real: String) -> impl Strategy<Value = Vec<u8>> {
    let b64 = "[A-Za-z0-9_-]{0,80}";
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let real2 = real.clone();
    let real3 = real.clone();
    let algs = vec![
        "HS256", "RS256", "ES256", "PS256", "ES384", "EdDSA", "none", "xx",
    ];
    let kids = prop_oneof![
        Just(None),
        prop::sample::select(vec!["ec-b", "rsa-a", "", "EC-B"]).prop_map(|k| Some(k.to_owned())),
        ".{0,200}".prop_map(Some),
    ];
    prop_oneof![
        2 => (prop::sample::select(algs), kids).prop_map(move |(alg, kid)| {
            use base64::Engine as _;
            let header = serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string();
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header);
            let rest = real3.split_once('.').map_or("", |(_, rest)| rest);
            format!("Bearer {header}.{rest}").into_bytes()
        }),
        2 => prop::collection::vec(any::<u8>(), 0..256),
        2 => (prop::sample::select(vec!["Bearer ", "bearer ", "Basic ", "", "Bearer  "]), b64, b64, b64)
            .prop_map(|(scheme, a, b, c)| format!("{scheme}{a}.{b}.{c}").into_bytes()),
        2 => (b64, json_value()).prop_map(move |(sig, claims)| {
            use base64::Engine as _;
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
            format!("Bearer {none_header}.{claims}.{sig}").into_bytes()
        }),
        3 => (any::<prop::sample::Index>(), "[A-Za-z0-9_.-]").prop_map(move |(at, c)| {
            let mut token = real.clone().into_bytes();
            let i = at.index(token.len());
            token[i] = c.as_bytes()[0];
            [b"Bearer ".as_slice(), &token].concat()
        }),
        1 => any::<prop::sample::Index>().prop_map(move |at| {
            let cut = at.index(real2.len());
            format!("Bearer {}", &real2[..cut]).into_bytes()
        }),
    ]
}

#[test]
fn the_authorization_header_never_panics_and_only_the_real_token_passes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let auth = Auth::new(b"fuzz-secret-0123456789");
    fuzz_header(&auth, cases());
}

#[test]
fn with_a_jwks_the_authorization_header_never_panics_and_only_the_real_token_passes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let keys = KeySet::from_jwks(include_bytes!("../../tests/fixtures/jwt/jwks-ab.json"))
        .expect("fixture key set");
    let signing = EncodingKey::from_ec_pem(include_bytes!("../../tests/fixtures/jwt/ec-b.pem"))
        .expect("fixture key");
    let auth = Auth::with_keys(keys).signing_with(signing, Algorithm::ES256, Some("ec-b".into()));
    // Public-key checks are slow in an unoptimised build: a twentieth of the cases, which still
    // reach the `kid` lookup and the algorithm check thousands of times.
    fuzz_header(&auth, (cases() / 20).max(1));
}

/// Runs `cases` generated `Authorization` headers against `auth`: none panics, and only its own
/// minted token passes.
fn fuzz_header(auth: &Auth, cases: u32) {
    let real = auth
        .mint("cust-fuzz", "checkout", Duration::from_secs(3600))
        .expect("mints");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&authorization(real.clone()), |value| {
            let Ok(value) = HeaderValue::from_bytes(&value) else {
                return Ok(()); // hyper refuses such bytes before any handler sees them
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.clone());
            match auth.verify(&headers) {
                // Only the real token itself (a flipped character may land on the same one).
                Ok(claims) => {
                    prop_assert_eq!(claims.sub.as_str(), "cust-fuzz");
                    let text = value.to_str().unwrap_or_default();
                    prop_assert!(text.trim().ends_with(real.as_str()), "{}", text);
                }
                Err(problem) => prop_assert_eq!(problem.status.as_u16(), 401),
            }
            Ok(())
        })
        .expect("no header panics; every one but the real token is 401");
}
