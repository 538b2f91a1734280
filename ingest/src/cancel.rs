//! `POST /v1/orders/{id}/cancel`: the customer (or an admin) stops an order before it ships.
//!
//! The stock ledger decides between the cancel and the ship step: whichever reaches it first
//! stands ([`StockLedger::cancel`](orderflow_stores::StockLedger::cancel)). A `202` means the
//! order will end `cancelled` — every stage after it finds the mark before its side effect and
//! gives back what the order held; a `409` means it shipped or was rejected first. The
//! accepted cancel is also put on the log (`orders.cancel_requested`) for the timeline.

use crate::openapi::{BadRequest, Edge, Forbidden, NotFound, OrderConflict, Unauthorized};
use crate::{AppState, Claims, Problem};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use orderflow_domain::{OrderEvent, OrderId, OrderStatus, OrderView, encode_event};
use orderflow_pipeline::{Decoded, Message, header as log_header};
use orderflow_stores::CancelOutcome;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// How long a cancel (or a refund) waits for an order accepted a moment ago to be projected.
const APPEAR_WITHIN: Duration = Duration::from_secs(2);

/// The body of a `202` to a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CancelRequested)]
pub struct CancelBody {
    /// The order.
    pub order_id: OrderId,
    /// Always `cancel_requested`: the order will end `cancelled`.
    pub status: OrderStatus,
    /// Where to read the order.
    pub status_url: String,
}

/// Cancels an order that has not shipped.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    operation_id = "cancelOrder",
    summary = "Cancel an order before it ships",
    description = "The owner (scope `checkout`) or scope `admin`. `202`: the order will end \
        `cancelled`, its stock, promotion uses and any capture given back, each once. A repeat \
        answers the same. `409` once it shipped, completed or was rejected. Someone else's \
        order is `404`, as is one not shown yet (the request waits up to 2 s for an order \
        accepted a moment ago; retry after that).",
    params(("id" = OrderId, Path, description = "The order id")),
    responses(
        (status = 202, description = "The order will end `cancelled`", body = CancelBody),
        BadRequest, Unauthorized, Forbidden, NotFound, OrderConflict, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let claims = state.auth.verify(&headers)?;
    if !(claims.has_scope("checkout") || claims.has_scope("admin")) {
        return Err(Problem::forbidden(
            "cancelling needs scope \"checkout\" (the owner) or \"admin\"",
        ));
    }
    let id = parse_id(&id)?;
    let view = visible_view(&state, &claims, id, appear_within(id))
        .await?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no order {id} (it may still be on its way: retry in a moment)"
            ))
        })?;
    if matches!(
        view.status,
        OrderStatus::Shipped | OrderStatus::Completed | OrderStatus::Rejected
    ) {
        return Err(Problem::not_cancellable(view.status.as_str()));
    }
    // The time the customer asked, taken before the decision: the stage that ends the order
    // cancelled stamps its time after it, so the timeline shows the two in that order.
    let requested_at = Utc::now();
    match decide(&state, id).await? {
        CancelOutcome::Cancelled => {}
        CancelOutcome::Shipped => return Err(Problem::not_cancellable("shipped")),
        CancelOutcome::Rejected => return Err(Problem::not_cancellable("rejected")),
    }
    let event = OrderEvent {
        status: OrderStatus::CancelRequested,
        at: requested_at,
        order: view.order(),
    };
    // The cancel is decided: the mark is for the timeline only, so a log that cannot take it
    // now does not turn the answer into a 503 (a repeat of the cancel appends it again, and
    // the view takes it once).
    let topic = &state.settings.cancel_requested_topic;
    if let Err(problem) = append(&state, topic, format!("{id}:cancel"), event).await {
        tracing::warn!(order_id = %id, detail = %problem.detail, "Cancel accepted; its timeline mark was not appended");
    }
    metrics::counter!("orderflow_cancels_accepted_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelBody {
            order_id: id,
            status: OrderStatus::CancelRequested,
            status_url: format!("/v1/orders/{id}"),
        }),
    )
        .into_response())
}

/// The ledger's decision on a cancel. A change of the order that is still being written (the
/// embedded ledger answers only from what is durable) is asked about again, for up to a second,
/// rather than bounced to the client.
async fn decide(state: &AppState, id: OrderId) -> Result<CancelOutcome, Problem> {
    let mut tries = 0;
    loop {
        match state.ledger.cancel(id).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_unavailable() && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, order_id = %id, "Cannot record a cancel");
                return Err(Problem::unavailable("cannot cancel orders now; retry"));
            }
        }
    }
}

/// How long to wait for `id` to be projected: [`APPEAR_WITHIN`] for an id minted (UUIDv7) in the
/// last minute, nothing for any other, which will not appear by waiting.
fn appear_within(id: OrderId) -> Duration {
    let minted_ms = id.0.get_timestamp().map(|ts| {
        let (secs, nanos) = ts.to_unix();
        i128::from(secs) * 1000 + i128::from(nanos / 1_000_000)
    });
    let now_ms = i128::from(Utc::now().timestamp_millis());
    match minted_ms {
        Some(ms) if (now_ms - 60_000..=now_ms + 5_000).contains(&ms) => APPEAR_WITHIN,
        _ => Duration::ZERO,
    }
}

/// An order id from the path, or 400 naming it.
pub(crate) fn parse_id(id: &str) -> Result<OrderId, Problem> {
    id.parse()
        .map_err(|_| Problem::malformed(format!("{id:?} is not an order id")))
}

/// The view of an order the caller may see, waiting up to `within` for one accepted a moment
/// ago to be projected. Only an order not there at the first read is followed on the status
/// feed (subscribed before the read that follows, so its projection is not missed). `None` when
/// there is no such order or it is another customer's and the caller is no admin, so ids
/// cannot be probed.
pub(crate) async fn visible_view(
    state: &AppState,
    claims: &Claims,
    id: OrderId,
    within: Duration,
) -> Result<Option<OrderView>, Problem> {
    let unavailable = |e: orderflow_stores::StoreError| {
        tracing::warn!(error = %e, "Order store unavailable");
        Problem::unavailable("cannot read orders now; retry")
    };
    let visible = |view: OrderView| {
        let allowed = view.customer_id == claims.sub || claims.has_scope("admin");
        allowed.then_some(view)
    };
    if let Some(view) = state.orders.get(id).await.map_err(unavailable)? {
        return Ok(visible(view));
    }
    if within.is_zero() {
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + within;
    let mut updates = state.feed.subscribe(id).await.map_err(unavailable)?;
    loop {
        if let Some(view) = state.orders.get(id).await.map_err(unavailable)? {
            return Ok(visible(view));
        }
        match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Ok(None),
        }
    }
}

/// Appends one event about `event.order` to `topic` with the `idempotency-key` header `key`,
/// durably, in a task of its own (a client that hangs up does not cancel an append under way);
/// 503 if the log does not take it.
pub(crate) async fn append(
    state: &AppState,
    topic: &str,
    key: String,
    event: OrderEvent,
) -> Result<(), Problem> {
    let order_id = event.order.id;
    let value = encode_event(&event).map_err(|_| Problem::internal())?;
    let message = Message {
        topic: topic.to_owned(),
        key: Bytes::from(order_id.to_string()),
        value: Bytes::from(value),
        headers: vec![
            (log_header::IDEMPOTENCY_KEY.to_owned(), key),
            (log_header::ATTEMPT.to_owned(), "1".to_owned()),
        ],
        decoded: Some(Decoded::new(event)),
    };
    let log = state.log.clone();
    match tokio::spawn(async move { log.append(vec![message]).await }).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %order_id, "Log append failed; answering 503");
            Err(Problem::unavailable("the log cannot take it now; retry"))
        }
        Err(e) => {
            tracing::error!(error = %e, %order_id, "The append task failed");
            Err(Problem::internal())
        }
    }
}
