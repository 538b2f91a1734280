//! `GET|PUT /v1/admin/stock/{sku}`: read and set a SKU's available stock (scope `admin`).

use crate::body::parse_json;
use crate::{AppState, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use orderflow_stores::StockLevel;
use serde::Deserialize;

/// Largest `available` an admin may set.
pub const MAX_AVAILABLE: i64 = 1_000_000_000_000;

/// Body of `PUT /v1/admin/stock/{sku}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// New available quantity.
    pub available: i64,
}

/// The stock level of a catalog SKU.
pub async fn get_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> Result<Json<StockLevel>, Problem> {
    state.auth.require(&headers, "admin")?;
    known(&state, &sku)?;
    let level = state.ledger.level(&sku).await.map_err(unavailable)?;
    let level = level.unwrap_or(StockLevel {
        sku,
        initial: 0,
        available: 0,
        reserved: 0,
        committed: 0,
    });
    Ok(Json(level))
}

/// Sets the available stock of a catalog SKU.
pub async fn put_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StockLevel>, Problem> {
    state.auth.require(&headers, "admin")?;
    known(&state, &sku)?;
    let (request, _): (SetStock, _) = parse_json(&headers, body, state.settings.max_body_bytes)?;
    // A bound far above any shelf keeps the ledger's sums far from overflow.
    if request.available > MAX_AVAILABLE {
        return Err(Problem::invalid(
            "available is too large",
            vec![format!("available: must be at most {MAX_AVAILABLE}")],
        ));
    }
    let available = u64::try_from(request.available).map_err(|_| {
        Problem::invalid(
            "available must not be negative",
            vec!["available: must be ≥ 0".into()],
        )
    })?;
    let level = state
        .ledger
        .set_available(&sku, available)
        .await
        .map_err(unavailable)?;
    tracing::info!(sku = %level.sku, available = level.available, "Stock set by admin");
    Ok(Json(level))
}

/// `GET /v1/admin/audit`: checks `initial = available + reserved + committed` for every SKU of
/// the running process (the `orderflow audit` command does the same on a stopped one).
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Problem> {
    state.auth.require(&headers, "admin")?;
    let levels = state.ledger.levels().await.map_err(unavailable)?;
    let breaches: Vec<&StockLevel> = levels.iter().filter(|l| !l.balanced()).collect();
    Ok(Json(
        serde_json::json!({ "ok": breaches.is_empty(), "skus": levels.len(), "breaches": breaches }),
    ))
}

fn known(state: &AppState, sku: &str) -> Result<(), Problem> {
    match state.catalog.get(sku) {
        Some(_) => Ok(()),
        None => Err(Problem::not_found(format!("no SKU {sku:?} in the catalog"))),
    }
}

fn unavailable(e: orderflow_stores::StoreError) -> Problem {
    tracing::warn!(error = %e, "Stock ledger unavailable");
    Problem::unavailable("cannot reach the stock ledger now; retry")
}
