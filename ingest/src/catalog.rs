//! `GET /v1/catalog`: what is for sale and how much is left.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// Lists every SKU with name, price, category, weight and available stock.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let levels = state.ledger.levels().await.map_err(|e| {
        tracing::warn!(error = %e, "Stock ledger unavailable");
        Problem::unavailable("cannot read stock now; retry")
    })?;
    let available: std::collections::HashMap<&str, u64> = levels
        .iter()
        .map(|l| (l.sku.as_str(), l.available))
        .collect();
    let currency = state.catalog.currency();
    let items: Vec<Value> = state
        .catalog
        .items()
        .iter()
        .map(|item| {
            json!({
                "sku": item.sku,
                "name": item.name,
                "price": { "minor": item.price_minor, "currency": currency },
                "category": item.category,
                "weight_grams": item.weight_grams,
                "available": available.get(item.sku.as_str()).copied().unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({ "currency": currency, "items": items })))
}
