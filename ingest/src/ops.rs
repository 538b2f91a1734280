//! Liveness, readiness, metrics and the fallbacks.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the log can take orders and the stock ledger can serve.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    if let Err(e) = state.log.ready().await {
        return Err(Problem::unavailable(format!("log not ready: {e}")));
    }
    if let Err(e) = state.ledger.ready().await {
        return Err(Problem::unavailable(format!("stock ledger not ready: {e}")));
    }
    Ok(Json(
        json!({ "status": "ready", "checks": { "log": "ok", "ledger": "ok" } }),
    ))
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
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

/// The OpenAPI 3.1 description of this API, checked against the router by the tests.
pub const OPENAPI: &str = include_str!("../api/openapi.json");

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
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
