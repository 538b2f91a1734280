//! `GET /v1/orders/{id}`: the order view, to its owner or an admin; `GET /v1/orders`: the
//! caller's orders, newest first, a page at a time.

use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use std::collections::HashMap;

/// Orders per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 20;
/// The largest page.
const MAX_PAGE: usize = 100;

/// Lists the caller's orders (an admin may name another `customer`), newest first:
/// `?limit=1..100&cursor=NEXT_CURSOR`.
pub async fn list_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, Problem> {
    let claims = state.auth.verify(&headers)?;
    // Parsed by hand so that every bad parameter gets a problem+json answer naming it.
    let mut params: HashMap<String, String> = HashMap::new();
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !matches!(name, "limit" | "cursor" | "customer") {
            return Err(Problem::malformed(format!(
                "unknown query parameter {name:?} (limit, cursor, customer)"
            )));
        }
        let value = percent_decode(value)
            .ok_or_else(|| Problem::malformed(format!("{name}: not valid percent-encoding")))?;
        if params.insert(name.to_owned(), value).is_some() {
            return Err(Problem::malformed(format!("{name} is given twice")));
        }
    }
    let limit = match params.get("limit") {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Problem::malformed(format!("limit must be 1 to {MAX_PAGE}, not {raw:?}"))
            })?,
    };
    let after: Option<OrderId> = match params.get("cursor") {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            Problem::malformed(format!("cursor {raw:?} is not one this API gave out"))
        })?),
    };
    let customer = match params.get("customer") {
        Some(empty) if empty.is_empty() => {
            return Err(Problem::malformed("customer must not be empty"));
        }
        Some(other) if *other != claims.sub => {
            if !claims.has_scope("admin") {
                return Err(Problem::forbidden(
                    "only scope admin may list another customer's orders",
                ));
            }
            other.clone()
        }
        _ => claims.sub.clone(),
    };
    let page = state
        .orders
        .list_for_customer(&customer, limit, after)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Order store unavailable");
            Problem::unavailable("cannot read orders now; retry")
        })?;
    Ok(Json(json!({
        "orders": page.orders.iter().map(render).collect::<Vec<_>>(),
        "next_cursor": page.next.map(|id| id.to_string()),
    })))
}

/// Decodes `%XX` escapes and `+` (a space in a query string).
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
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
    if !view.coupon_codes.is_empty() {
        body["coupon_codes"] = json!(view.coupon_codes);
    }
    body
}
