//! `GET /v1/admin/webhooks/deliveries` and `POST /v1/admin/webhooks/deliveries/{id}/retry`:
//! the outbox's messages (webhooks, and customer emails with destination `mail`) with their
//! tries, and sending one again. Each process lists its own outbox: `serve`, or the `notify`
//! and `project` workers on their own `--listen`.

use crate::openapi::{BadRequest, Edge, Forbidden, NotFound, Unauthorized};
use crate::{AppState, Problem};
use axum::Json;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use orderflow_stores::{Delivery, DeliveryState, Listing, Outbox};
use serde::Serialize;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Messages per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 50;
/// The largest page.
const MAX_PAGE: usize = 500;

/// What the deliveries routes need; the `notify` and `project` workers serve them too.
#[derive(Clone)]
pub struct DeliveriesAdmin {
    /// Token verification (scope `admin`).
    pub auth: Arc<crate::Auth>,
    /// This process's outbox.
    pub outbox: Arc<dyn Outbox>,
}

impl FromRef<AppState> for DeliveriesAdmin {
    fn from_ref(state: &AppState) -> Self {
        Self {
            auth: state.auth.clone(),
            outbox: state.outbox.clone(),
        }
    }
}

/// The two deliveries routes alone, for a worker process.
pub fn admin_router(state: DeliveriesAdmin) -> axum::Router {
    axum::Router::<DeliveriesAdmin>::new()
        .route(
            "/v1/admin/webhooks/deliveries",
            axum::routing::get(list_deliveries),
        )
        .route(
            "/v1/admin/webhooks/deliveries/{id}/retry",
            axum::routing::post(retry_delivery),
        )
        .with_state(state)
}

/// One try at delivering a message.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryAttempt)]
pub struct AttemptBody {
    /// When it was made.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<u16>,
    /// What went wrong, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub millis: u64,
}

/// A message of the outbox and its delivery record.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryBody {
    /// The message id: the `webhook-id` header of every try.
    pub id: String,
    /// The order it is about.
    pub order_id: OrderId,
    /// `order.completed`, `order.rejected`, or the email's template.
    pub event: String,
    /// The endpoint's name, or `mail`.
    pub destination: String,
    /// `pending`, `delivered` or `failed` (given up; retry it by hand).
    #[schema(pattern = "^(pending|delivered|failed)$")]
    pub state: String,
    /// When it was written.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// When it is tried next.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, nullable = false)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = DateTime, nullable = false)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The tries so far, oldest first (the last 20).
    pub attempts: Vec<AttemptBody>,
    /// The body as sent.
    pub payload: String,
}

impl From<Delivery> for DeliveryBody {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            order_id: d.order_id,
            event: d.event,
            destination: d.destination,
            state: d.state.as_str().to_owned(),
            created_at: d.created_at,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            attempts: d
                .attempts
                .into_iter()
                .map(|a| AttemptBody {
                    at: a.at,
                    status: a.status,
                    error: a.error,
                    millis: a.millis,
                })
                .collect(),
            payload: d.payload,
        }
    }
}

/// One page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeliveryPage)]
pub struct DeliveryPage {
    /// Newest first.
    pub deliveries: Vec<DeliveryBody>,
    /// Pass it as `cursor` for the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The query of the deliveries list (read by hand, so each bad parameter is named).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only messages in this state.
    #[param(pattern = "^(pending|delivered|failed)$", nullable = false)]
    pub state: Option<String>,
    /// Only messages about this order.
    #[param(value_type = Option<OrderId>, nullable = false)]
    pub order_id: Option<String>,
    /// Messages per page.
    #[param(minimum = 1, maximum = 500, default = 50, nullable = false)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^msg_[0-9a-f]{32}$", nullable = false)]
    pub cursor: Option<String>,
}

fn listing(query: Option<&str>) -> Result<Listing, Problem> {
    let mut listing = Listing {
        limit: DEFAULT_PAGE,
        ..Listing::default()
    };
    let mut seen = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.contains(&name) {
            return Err(Problem::malformed(format!("{name} is given twice")));
        }
        seen.push(name);
        match name {
            "state" => {
                listing.state = Some(match value {
                    "pending" => DeliveryState::Pending,
                    "delivered" => DeliveryState::Delivered,
                    "failed" => DeliveryState::Failed,
                    other => {
                        return Err(Problem::malformed(format!(
                            "state must be pending, delivered or failed, not {other:?}"
                        )));
                    }
                });
            }
            "order_id" => {
                listing.order_id = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|_| value.len() == 36)
                        .ok_or_else(|| {
                            Problem::malformed(format!("order_id {value:?} is not an order id"))
                        })?,
                );
            }
            "limit" => {
                listing.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Problem::malformed(format!("limit must be 1 to {MAX_PAGE}, not {value:?}"))
                    })?;
            }
            "cursor" => {
                let ok = value.len() == 36
                    && value.starts_with("msg_")
                    && value[4..]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(Problem::malformed(format!(
                        "cursor {value:?} is not one this API gave out"
                    )));
                }
                listing.before = Some(value.to_owned());
            }
            other => {
                return Err(Problem::malformed(format!(
                    "unknown query parameter {other:?} (state, order_id, limit, cursor)"
                )));
            }
        }
    }
    Ok(listing)
}

fn unavailable(e: orderflow_stores::StoreError) -> Problem {
    tracing::warn!(error = %e, "Outbox unavailable");
    Problem::unavailable("cannot read the outbox now; retry")
}

/// Lists this process's outbox, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/webhooks/deliveries",
    operation_id = "listDeliveries",
    summary = "Webhook and email deliveries, newest first",
    description = "Scope `admin`. Every message of the outbox of the process asked (`serve`; \
        in a split deployment the `project` worker holds the webhooks and the `notify` worker \
        the emails), with its state and tries. Delivered messages are removed after \
        `outbox.retention_hours`.",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "One page of deliveries", body = DeliveryPage),
        BadRequest, Unauthorized, Forbidden, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn list_deliveries(
    State(state): State<DeliveriesAdmin>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryPage>, Problem> {
    state.auth.require(&headers, "admin")?;
    let mut listing = listing(query.as_deref())?;
    let limit = listing.limit;
    // One more than the page says whether there is a next one.
    listing.limit += 1;
    let mut found = state.outbox.list(&listing).await.map_err(unavailable)?;
    let next_cursor = (found.len() > limit).then(|| {
        found.truncate(limit);
        found.last().map(|d| d.id.clone()).unwrap_or_default()
    });
    Ok(Json(DeliveryPage {
        deliveries: found.into_iter().map(DeliveryBody::from).collect(),
        next_cursor,
    }))
}

/// Makes a message due at once, whatever its state: it is sent again with the same id.
#[utoipa::path(
    post,
    path = "/v1/admin/webhooks/deliveries/{id}/retry",
    operation_id = "retryDelivery",
    summary = "Send a delivery again",
    description = "Scope `admin`. The message becomes `pending` and is sent at the \
        dispatcher's next round with the same `webhook-id` (receivers deduplicate on it).",
    params(("id" = String, Path, description = "The message id (`msg_…`)")),
    responses(
        (status = 202, description = "Queued again", body = DeliveryBody),
        BadRequest, Unauthorized, Forbidden, NotFound, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn retry_delivery(
    State(state): State<DeliveriesAdmin>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryBody>), Problem> {
    state.auth.require(&headers, "admin")?;
    match state
        .outbox
        .retry(&id, Utc::now())
        .await
        .map_err(unavailable)?
    {
        Some(d) => Ok((StatusCode::ACCEPTED, Json(DeliveryBody::from(d)))),
        None => Err(Problem::not_found(format!("no delivery {id:?}"))),
    }
}
