//! `GET /v1/orders/{id}`: the order view, to its owner or an admin.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use orderflow_domain::{OrderId, OrderView};
use serde_json::{Value, json};

/// Returns one order with its timeline.
pub async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let claims = state.auth.verify(&headers)?;
    let id: OrderId = id
        .parse()
        .map_err(|_| Problem::malformed(format!("{id:?} is not an order id")))?;
    let view = state.orders.get(id).await.map_err(|e| {
        tracing::warn!(error = %e, "Order store unavailable");
        Problem::unavailable("cannot read orders now; retry")
    })?;
    // Someone else's order is reported as missing, so ids cannot be probed.
    match view {
        Some(view) if view.customer_id == claims.sub || claims.has_scope("admin") => {
            Ok(Json(render(&view)))
        }
        _ => Err(Problem::not_found(format!(
            "no order {id} (it may still be on its way: retry in a moment)"
        ))),
    }
}

/// The API shape of a view (DESIGN.md's contract).
pub fn render(view: &OrderView) -> Value {
    let mut body = json!({
        "order_id": view.order_id,
        "status": view.status,
        "lines": view.lines,
        "timeline": view.timeline,
    });
    if let Some(totals) = &view.totals {
        body["totals"] = json!(totals);
    }
    if let Some(shipment) = &view.shipment {
        body["shipment"] = json!(shipment);
    }
    if let Some(rejection) = &view.rejection {
        body["rejection"] = json!({ "code": rejection.code, "detail": rejection.detail });
    }
    body
}
