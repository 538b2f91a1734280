//! `GET /v1/catalog`: what is for sale and how much is left.

use crate::openapi::Edge;
use crate::{AppState, Problem};
use axum::Json;
use axum::extract::State;
use orderflow_domain::{Currency, Money};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What is for sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Catalog)]
pub struct CatalogBody {
    /// The currency of every price.
    pub currency: Currency,
    /// Every SKU.
    pub items: Vec<CatalogEntry>,
}

/// One SKU of the catalog with its stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    /// Stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price.
    pub price: Money,
    /// Category.
    pub category: String,
    /// Shipping weight in grams.
    pub weight_grams: u32,
    /// Units free to reserve now.
    pub available: u64,
}

/// Lists every SKU with name, price, category, weight and available stock.
#[utoipa::path(
    get,
    path = "/v1/catalog",
    operation_id = "listCatalog",
    summary = "What is for sale, and how much is left",
    description = "No token needed.",
    responses((status = 200, description = "The catalog", body = CatalogBody), Edge),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<CatalogBody>, Problem> {
    let levels = state.ledger.levels().await.map_err(|e| {
        tracing::warn!(error = %e, "Stock ledger unavailable");
        Problem::unavailable("cannot read stock now; retry")
    })?;
    let available: std::collections::HashMap<&str, u64> = levels
        .iter()
        .map(|l| (l.sku.as_str(), l.available))
        .collect();
    // The prices in force: the pricing tables' catalog, swapped on reload.
    let book = state.pricing.book.load_full();
    let currency = book.catalog.currency();
    let items = book
        .catalog
        .items()
        .iter()
        .map(|item| CatalogEntry {
            sku: item.sku.clone(),
            name: item.name.clone(),
            price: Money::new(item.price_minor, currency),
            category: item.category.clone(),
            weight_grams: item.weight_grams,
            available: available.get(item.sku.as_str()).copied().unwrap_or(0),
        })
        .collect();
    Ok(Json(CatalogBody { currency, items }))
}
