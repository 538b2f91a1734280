//! `GET /v1/orders/{id}`: the order view, to its owner or an admin; `GET /v1/orders`: the
//! caller's orders, newest first, a page at a time.

use crate::openapi::{BadRequest, Edge, Forbidden, NotFound, Unauthorized};
use crate::poll::{self, IfNoneMatch};
use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use orderflow_domain::{
    LineItem, OrderId, OrderStatus, OrderView, PaymentSummary, PriceBreakdown, Refund,
    RejectionCode, Shipment, TimelineEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

/// Orders per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 20;
/// The largest page.
const MAX_PAGE: usize = 100;

/// An order as the API shows it (DESIGN.md's contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Order)]
pub struct OrderBody {
    /// The order's id.
    pub order_id: OrderId,
    /// Its latest status.
    pub status: OrderStatus,
    /// The lines as checked out.
    pub lines: Vec<LineItem>,
    /// The totals, once priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub totals: Option<PriceBreakdown>,
    /// The shipment, once shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub shipment: Option<Shipment>,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub rejection: Option<RejectionBody>,
    /// The coupon codes it carries (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coupon_codes: Vec<String>,
    /// What was captured and given back, once charged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub payment: Option<PaymentSummary>,
    /// Refunds of the capture by id: a cancellation's first, then the admins' in time order
    /// (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<Refund>,
    /// Every status reached in lifecycle order, each once, with `cancel_requested` and each
    /// refund's `refunded` or `refund_failed` placed among them by time.
    pub timeline: Vec<TimelineEntry>,
}

/// Why an order was refused, as customers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Rejection)]
pub struct RejectionBody {
    /// Stable machine-readable code.
    pub code: RejectionCode,
    /// What exactly was wrong.
    pub detail: String,
}

/// One page of the caller's orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = OrderPage)]
pub struct PageBody {
    /// Newest first.
    pub orders: Vec<OrderBody>,
    /// Pass it as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<OrderId>,
}

/// The query of `GET /v1/orders` (read by hand in [`list_orders`], so that every bad parameter
/// gets a problem naming it; this type describes it).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Orders per page.
    #[param(minimum = 1, maximum = 100, default = 20, nullable = false)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<OrderId>, nullable = false)]
    pub cursor: Option<String>,
    /// Another customer's id; scope `admin` only.
    #[param(min_length = 1, nullable = false)]
    pub customer: Option<String>,
}

/// Lists the caller's orders (an admin may name another `customer`), newest first:
/// `?limit=1..100&cursor=NEXT_CURSOR`.
#[utoipa::path(
    get,
    path = "/v1/orders",
    operation_id = "listOrders",
    summary = "The caller's orders, newest first",
    description = "A page at a time: pass the answer's `next_cursor` as `cursor` for the next \
        page. Scope `admin` may name another `customer`. Scope `orders:read` (or `admin`) is needed.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of orders", body = PageBody),
        BadRequest, Unauthorized, Forbidden, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn list_orders(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<PageBody>, Problem> {
    let claims = state.auth.reader(&headers)?;
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
    // Only the hyphenated form this API gives out (the document's `format: uuid`), not every
    // form the UUID parser would take.
    let after: Option<OrderId> = match params.get("cursor") {
        None => None,
        Some(raw) => Some(
            raw.parse()
                .ok()
                .filter(|_| raw.len() == 36)
                .ok_or_else(|| {
                    Problem::malformed(format!("cursor {raw:?} is not one this API gave out"))
                })?,
        ),
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
    Ok(Json(PageBody {
        orders: page.orders.iter().map(render).collect(),
        next_cursor: page.next,
    }))
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
/// The query and headers of `GET /v1/orders/{id}` (read by hand in [`get_order`]; this type
/// describes them).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// With `If-None-Match`: hold the request up to this many seconds until the order changes.
    #[param(minimum = 1, maximum = 30, nullable = false)]
    pub wait: Option<u32>,
}

/// Returns one order with its timeline; conditional on `If-None-Match`, long-polled with `?wait=`.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    operation_id = "getOrder",
    summary = "One order with its timeline",
    description = "Its owner (scope `orders:read`), or scope `admin`. Someone else's order is \
        404, as is one not projected yet (retry in a moment). Every answer carries a strong \
        `ETag`; sent back in `If-None-Match`, an unchanged order answers 304. With \
        `?wait=1..30` as well, the request is held until the order changes (200 with the new \
        view) or the time is up (304): a long-poll, woken by the status feed. Past the \
        process's bound on held requests, 503 with `Retry-After`.",
    params(
        ("id" = OrderId, Path, description = "The order's id"),
        GetQuery,
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the view the client has"),
    ),
    responses(
        (status = 200, description = "The order", body = OrderBody,
            headers(("ETag" = String, description = "The view's strong entity tag"))),
        (status = 304, description = "Not modified: the order is still the one `If-None-Match` names",
            headers(("ETag" = String, description = "The view's strong entity tag"))),
        BadRequest, Unauthorized, Forbidden, NotFound, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn get_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let claims = state.auth.reader(&headers)?;
    let id: OrderId = id
        .parse()
        .map_err(|_| Problem::malformed(format!("{id:?} is not an order id")))?;
    let wait = poll::wait_of(query.as_deref())?;
    let known = IfNoneMatch::of(&headers);
    // A long-poll subscribes before its first read, so no change between the two is missed;
    // it holds a place among the process's held requests until it answers.
    let (mut updates, _held) = match (wait, &known) {
        (Some(_), Some(_)) => {
            let held = state.polls.hold()?;
            let updates = state.feed.subscribe(id).await.map_err(|e| {
                tracing::warn!(error = %e, "Status feed unavailable for a long-poll");
                Problem::unavailable("cannot follow orders now; retry")
            })?;
            (Some(updates), Some(held))
        }
        _ => (None, None),
    };
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    loop {
        let view = state.orders.get(id).await.map_err(|e| {
            tracing::warn!(error = %e, "Order store unavailable");
            Problem::unavailable("cannot read orders now; retry")
        })?;
        // Someone else's order is reported as missing, so ids cannot be probed.
        let view = match view {
            Some(view) if view.customer_id == claims.sub || claims.has_scope("admin") => view,
            _ => {
                return Err(Problem::not_found(format!(
                    "no order {id} (it may still be on its way: retry in a moment)"
                )));
            }
        };
        // Plain data: serialising cannot fail.
        let body = serde_json::to_vec(&render(&view)).map_err(|_| Problem::internal())?;
        let etag = poll::etag_of(&body);
        let unchanged = known.as_ref().is_some_and(|k| k.matches(&etag));
        if !unchanged {
            if updates.is_some() {
                poll::outcome("changed");
            }
            return Ok(answer(StatusCode::OK, &etag, body));
        }
        let (Some(feed), Some(deadline)) = (updates.as_mut(), deadline) else {
            return Ok(answer(StatusCode::NOT_MODIFIED, &etag, Vec::new()));
        };
        // Wait for the feed to announce a change of this order, then read it again; a feed
        // that ends or a time that is up answers what the client has.
        match tokio::time::timeout_at(deadline, feed.next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                poll::outcome("timeout");
                return Ok(answer(StatusCode::NOT_MODIFIED, &etag, Vec::new()));
            }
        }
    }
}

/// A 200 with the view's JSON, or a bodiless 304, both with the `ETag`.
fn answer(status: StatusCode, etag: &str, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

/// The API shape of a view (DESIGN.md's contract).
pub fn render(view: &OrderView) -> OrderBody {
    OrderBody {
        order_id: view.order_id,
        status: view.status,
        lines: view.lines.clone(),
        totals: view.totals.clone(),
        shipment: view.shipment.clone(),
        rejection: view.rejection.as_ref().map(|r| RejectionBody {
            code: r.code,
            detail: r.detail.clone(),
        }),
        coupon_codes: view.coupon_codes.clone(),
        payment: view
            .payment
            .as_ref()
            .map(|p| PaymentSummary::of(p.amount, &view.refunds)),
        refunds: view.refunds.clone(),
        timeline: view.timeline.clone(),
    }
}
