//! `GET|PUT /v1/admin/stock/{sku}`: read and set a SKU's available stock (scope `admin`).

use crate::body::parse_json;
use crate::openapi::{
    BadRequest, Edge, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unprocessable,
    UnsupportedMediaType,
};
use crate::{AppState, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use orderflow_stores::StockLevel;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest `available` an admin may set.
pub const MAX_AVAILABLE: i64 = 1_000_000_000_000;

/// Body of `PUT /v1/admin/stock/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// New available quantity; a whole number, also when written `25.0`.
    #[serde(deserialize_with = "orderflow_domain::number::whole")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub available: i64,
}

/// A SKU's stock: `initial = available + reserved + committed` while the ledger is sound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = StockLevel)]
pub struct StockBody {
    /// The SKU.
    pub sku: String,
    /// Units ever put on the shelf (seeded, plus admin adjustments).
    pub initial: u64,
    /// Units free to reserve.
    pub available: u64,
    /// Units held for orders not yet shipped.
    pub reserved: u64,
    /// Units shipped.
    pub committed: u64,
}

impl From<StockLevel> for StockBody {
    fn from(l: StockLevel) -> Self {
        Self {
            sku: l.sku,
            initial: l.initial,
            available: l.available,
            reserved: l.reserved,
            committed: l.committed,
        }
    }
}

/// The ledger audit of the running process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Audit)]
pub struct AuditBody {
    /// Whether every SKU balances.
    pub ok: bool,
    /// SKUs checked.
    pub skus: usize,
    /// The SKUs that do not balance.
    pub breaches: Vec<StockBody>,
}

/// The stock level of a catalog SKU.
#[utoipa::path(
    get,
    path = "/v1/admin/stock/{sku}",
    operation_id = "getStock",
    summary = "A SKU's stock level",
    description = "Scope `admin`.",
    params(("sku" = String, Path, description = "A SKU of the catalog")),
    responses(
        (status = 200, description = "The stock level", body = StockBody),
        Unauthorized, Forbidden, NotFound, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn get_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> Result<Json<StockBody>, Problem> {
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
    Ok(Json(level.into()))
}

/// Sets the available stock of a catalog SKU.
#[utoipa::path(
    put,
    path = "/v1/admin/stock/{sku}",
    operation_id = "setStock",
    summary = "Set a SKU's available stock",
    description = "Scope `admin`. `initial` moves with it, so the ledger still balances.",
    params(("sku" = String, Path, description = "A SKU of the catalog")),
    request_body(content = SetStock, content_type = "application/json"),
    responses(
        (status = 200, description = "The new stock level", body = StockBody),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType,
        Unprocessable, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn put_stock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<StockBody>, Problem> {
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
    Ok(Json(level.into()))
}

/// `GET /v1/admin/audit`: checks `initial = available + reserved + committed` for every SKU of
/// the running process (the `orderflow audit` command does the same on a stopped one).
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    operation_id = "audit",
    summary = "Check initial = available + reserved + committed for every SKU",
    description = "Scope `admin`.",
    responses(
        (status = 200, description = "The audit", body = AuditBody),
        Unauthorized, Forbidden, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AuditBody>, Problem> {
    state.auth.require(&headers, "admin")?;
    let levels = state.ledger.levels().await.map_err(unavailable)?;
    let skus = levels.len();
    let breaches: Vec<StockBody> = levels
        .into_iter()
        .filter(|l| !l.balanced())
        .map(StockBody::from)
        .collect();
    Ok(Json(AuditBody {
        ok: breaches.is_empty(),
        skus,
        breaches,
    }))
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
