//! What every answer of the public edge carries: CORS for the configured storefront origins, a
//! request id on every response and log line, and headers that keep browsers and caches from
//! misusing order data; and the cap on API requests in flight.

use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

/// The request id header, taken from the caller when valid and set on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest caller-given request id kept.
const REQUEST_ID_MAX: usize = 128;

/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer for storefronts at `origins` (`*` alone: any origin); `None` for an empty
/// list, which leaves cross-origin browser calls refused. The origins are checked at start
/// (`api.cors_origins`); one that is not a header value is skipped.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                REQUEST_ID,
            ])
            .expose_headers([REQUEST_ID, header::RETRY_AFTER, header::LOCATION])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// The caller's request id if it is 1 to 128 letters, digits, `-`, `_`, `.` or `:`; otherwise
/// a new UUIDv7. Anything else could smuggle text into logs.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            (1..=REQUEST_ID_MAX).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
        })
}

/// Middleware: the request id on the request (for handlers), on its log span and on the
/// response; `x-content-type-options: nosniff` everywhere; `cache-control: no-store` on order
/// data, which is personal and changes from one second to the next.
pub async fn headers(mut request: Request, next: Next) -> Response {
    let id = request_id(request.headers());
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let orders = request.uri().path().starts_with("/v1/orders");
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, id);
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if orders {
        headers
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

/// The cap on API requests in flight (`api.max_in_flight`), shared by every route.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    /// Room for `max` requests at once.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(
            max.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }
}

/// Middleware: an API request over the cap on requests in flight is answered `503` with
/// `Retry-After` at once, instead of waiting in a queue that only grows under overload.
/// Long-polls (`GET /v1/orders/{id}?wait=…`) are bounded by `api.max_long_polls` instead.
pub async fn in_flight(State(cap): State<InFlight>, request: Request, next: Next) -> Response {
    if is_long_poll(&request) {
        return next.run(request).await;
    }
    match cap.0.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => {
            metrics::counter!("orderflow_http_requests_shed_total").increment(1);
            Problem::unavailable("too many requests in flight; retry shortly").into_response()
        }
    }
}

/// Whether a request may be held as a long-poll of one order.
fn is_long_poll(request: &Request) -> bool {
    request.method() == Method::GET
        && request.uri().path().starts_with("/v1/orders/")
        && request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("wait=")))
}
