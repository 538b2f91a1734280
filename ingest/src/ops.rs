//! Liveness, readiness, metrics and the fallbacks: the routes every process serves, the API
//! and the stage workers alike ([`router`]); and `/openapi.json`, which only the API serves.

use crate::openapi::Unavailable;
use crate::{AppState, Problem};
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use orderflow_pipeline::Log;
use orderflow_stores::StockLedger;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the operational routes look at: the log, the stock ledger and the metrics.
#[derive(Clone)]
pub struct OpsState {
    /// The log; ready when it can take writes.
    pub log: Arc<dyn Log>,
    /// The stock ledger; ready when it can serve.
    pub ledger: Arc<dyn StockLedger>,
    /// Prometheus exposition of the process's metrics.
    pub metrics: Option<PrometheusHandle>,
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            log: state.log.clone(),
            ledger: state.ledger.clone(),
            metrics: state.metrics.clone(),
        }
    }
}

/// `/healthz`, `/readyz` and `/metrics` alone: what a stage or projector worker serves.
pub fn router(state: OpsState) -> Router {
    routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(track))
        .with_state(state)
}

/// Counts every request and times it, by route (the matched pattern, so an order id does not
/// make a series of its own), method and status: `orderflow_http_requests_total` and
/// `orderflow_http_request_duration_seconds`.
pub async fn track(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let route: Arc<str> = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| Arc::from("unmatched"), |p| Arc::from(p.as_str()));
    let method = method_label(request.method());
    let response = next.run(request).await;
    let (requests, duration) = http_handles(route, method, response.status().as_u16());
    requests.increment(1);
    duration.record(started.elapsed());
    response
}

/// A method as a label: the standard ones by name, anything else as `other` (a client may
/// send any token, and each label value would be a series kept for ever).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The counter and histogram of a route, method and status, registered once: looking a
/// labelled metric up costs allocations and hashing, on every request.
fn http_handles(
    route: Arc<str>,
    method: &'static str,
    status: u16,
) -> (metrics::Counter, metrics::Histogram) {
    type Handles =
        dashmap::DashMap<(Arc<str>, &'static str, u16), (metrics::Counter, metrics::Histogram)>;
    static HANDLES: std::sync::OnceLock<Handles> = std::sync::OnceLock::new();
    let handles = HANDLES.get_or_init(Handles::new);
    let key = (route, method, status);
    if let Some(found) = handles.get(&key) {
        return found.clone();
    }
    let labels = [
        ("route", key.0.to_string()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ];
    let made = (
        metrics::counter!("orderflow_http_requests_total", &labels),
        metrics::histogram!("orderflow_http_request_duration_seconds", &labels),
    );
    handles.insert(key, made.clone());
    made
}

/// The operational routes, to be given their state by the caller.
pub(crate) fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    OpsState: FromRef<S>,
{
    documented_routes().into()
}

/// [`routes`] with their OpenAPI descriptions.
pub(crate) fn documented_routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    OpsState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The answer of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The answer of `GET /readyz` when ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    pub status: String,
    /// Each dependency checked, with `ok`.
    pub checks: ReadyChecks,
}

/// The dependencies `/readyz` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadyChecks {
    /// The log takes appends.
    pub log: String,
    /// The stock ledger answers.
    pub ledger: String,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness: the process is up",
    responses((status = 200, description = "Up", body = Health)),
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: the log can take orders and the stock ledger can serve.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness: the log takes appends and the stock ledger answers",
    responses((status = 200, description = "Ready", body = Readiness), Unavailable),
)]
pub async fn readyz(State(state): State<OpsState>) -> Result<Json<Readiness>, Problem> {
    if let Err(e) = state.log.ready().await {
        return Err(Problem::unavailable(format!("log not ready: {e}")));
    }
    if let Err(e) = state.ledger.ready().await {
        return Err(Problem::unavailable(format!("stock ledger not ready: {e}")));
    }
    let ok = || String::from("ok");
    Ok(Json(Readiness {
        status: "ready".into(),
        checks: ReadyChecks {
            log: ok(),
            ledger: ok(),
        },
    }))
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics (`orderflow_*`)",
    responses((status = 200, description = "Text exposition format 0.0.4", body = String,
        content_type = "text/plain")),
)]
pub async fn metrics(State(state): State<OpsState>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `GET /openapi.json`: the document generated from the code ([`crate::openapi`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document (OpenAPI 3.1)",
    responses((status = 200, description = "The OpenAPI document", body = Object,
        content_type = "application/json")),
)]
pub async fn openapi() -> Response {
    let mut response = crate::openapi::json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Any unknown route.
pub async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

/// A known route with the wrong method.
pub async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}
