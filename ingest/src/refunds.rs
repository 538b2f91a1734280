//! `POST /v1/admin/orders/{id}/refunds`: give back part or all of an order's capture.
//!
//! The refund is counted against the capture in the [`RefundLedger`](orderflow_stores::RefundLedger)
//! (atomically, once per `Idempotency-Key`, never past the capture), then put on the log
//! (`refunds.requested`) for the refund step, which pays it through the provider once per
//! refund id and retries, dead-letters and replays like every stage.

use crate::body::parse_json;
use crate::cancel::{append, parse_id, visible_view};
use crate::openapi::{
    BadRequest, Edge, Forbidden, NotFound, OrderConflict, RefundUnprocessable, Unauthorized,
};
use crate::{AppState, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use orderflow_domain::{Money, OrderEvent, OrderId, Refund, RefundStatus, new_refund_id};
use orderflow_stores::{RefundAnswer, RefundClaim};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Longest refund reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The body of `POST /v1/admin/orders/{id}/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefundRequest, example = json!({"amount": {"currency": "USD", "minor": 500},
    "reason": "damaged in transit"}))]
pub struct RefundRequestBody {
    /// How much to give back, in the capture's currency; more than zero.
    #[serde(deserialize_with = "whole_amount")]
    pub amount: Money,
    /// Why (1 to 500 characters, not only white space); shown on the order.
    #[schema(min_length = 1, max_length = 500, pattern = "\\S")]
    pub reason: String,
}

/// An amount as a client built from the document may send it: `minor` a whole number, also
/// written `500.0` (JSON Schema counts that as an integer).
fn whole_amount<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
    #[derive(Deserialize)]
    struct Amount {
        #[serde(deserialize_with = "orderflow_domain::number::whole")]
        minor: i64,
        currency: orderflow_domain::Currency,
    }
    let amount = Amount::deserialize(d)?;
    Ok(Money::new(amount.minor, amount.currency))
}

/// The body of a `202` to a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefundAccepted)]
pub struct RefundAcceptedBody {
    /// The refund's id: the same for a repeat with the same `Idempotency-Key`.
    pub refund_id: String,
    /// The order.
    pub order_id: OrderId,
    /// How much is given back.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// Always `pending`: the refund step pays it; the order's `refunds` shows when.
    pub status: RefundStatus,
}

/// Refunds part or all of an order's capture.
#[utoipa::path(
    post,
    path = "/v1/admin/orders/{id}/refunds",
    operation_id = "createRefund",
    summary = "Refund part or all of an order's capture",
    description = "Scope `admin`, `Idempotency-Key` required: the same key and body again \
        answer the same `refund_id`; another body is `422`. Partial refunds add up; their sum \
        never exceeds the capture (`422` `/problems/refund-exceeds-capture`). The refund step \
        pays it; the order's `refunds` and `payment` show it.",
    params(
        ("id" = OrderId, Path, description = "The order id"),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255,
            pattern = "^[!-~]+$", description = "1 to 255 visible ASCII characters, per order"),
    ),
    request_body(content = RefundRequestBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Counted against the capture; the refund step pays it",
            body = RefundAcceptedBody),
        BadRequest, Unauthorized, Forbidden, NotFound, OrderConflict,
        crate::openapi::PayloadTooLarge, crate::openapi::UnsupportedMediaType,
        RefundUnprocessable, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn create_refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let claims = state.auth.require(&headers, "admin")?;
    let id = parse_id(&id)?;
    let key = crate::checkout::idempotency_key(&headers)?
        .ok_or_else(|| Problem::malformed("a refund needs an Idempotency-Key header"))?;
    let (request, _): (RefundRequestBody, _) =
        parse_json(&headers, body, state.settings.max_body_bytes)?;
    let view = visible_view(&state, &claims, id, Duration::ZERO)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no order {id}")))?;
    let Some(payment) = view.payment.clone() else {
        return Err(Problem::not_refundable(format!(
            "nothing was captured for the order (it is {})",
            view.status
        )));
    };
    let mut errors = Vec::new();
    if request.amount.minor <= 0 {
        errors.push("amount.minor: must be more than 0".to_owned());
    }
    if request.amount.currency != payment.amount.currency {
        errors.push(format!(
            "amount.currency: must be {}, the capture's",
            payment.amount.currency
        ));
    }
    let reason_chars = request.reason.chars().count();
    if request.reason.trim().is_empty() || reason_chars > MAX_REASON_CHARS {
        errors.push(format!(
            "reason: must be 1 to {MAX_REASON_CHARS} characters, not blank"
        ));
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(
            format!("the refund has {} problem(s)", errors.len()),
            errors,
        ));
    }
    let claim = RefundClaim {
        key,
        refund_id: new_refund_id(),
        amount: Some(request.amount),
        reason: request.reason.clone(),
        captured: payment.amount,
    };
    let answer = state.refunds.request(id, claim).await.map_err(|e| {
        tracing::warn!(error = %e, order_id = %id, "Cannot count a refund");
        Problem::unavailable("cannot take refunds now; retry")
    })?;
    let entry = match answer {
        RefundAnswer::Accepted(entry) => entry,
        RefundAnswer::Repeat(entry)
            if entry.amount == request.amount && entry.reason == request.reason =>
        {
            entry
        }
        RefundAnswer::Repeat(_) => {
            return Err(Problem::key_reused());
        }
        RefundAnswer::Exceeds { refunded } => {
            return Err(Problem::refund_exceeds_capture(format!(
                "{} more would take the refunds to more than the capture of {} ({} refunded \
                 or pending already)",
                request.amount, payment.amount, refunded
            )));
        }
        RefundAnswer::Nothing => {
            return Err(Problem::refund_exceeds_capture(format!(
                "all of the capture of {} is refunded already",
                payment.amount
            )));
        }
    };
    let refund = Refund {
        refund_id: entry.refund_id.clone(),
        amount: entry.amount,
        reason: entry.reason.clone(),
        status: RefundStatus::Pending,
        at: Utc::now(),
        detail: None,
    };
    let mut order = view.order();
    order.refunds = vec![refund];
    let event = OrderEvent {
        status: view.status,
        at: Utc::now(),
        order,
    };
    // Counted already: a retry of a failed append gets the same refund back and appends again;
    // the refund step pays each refund id once.
    let topic = &state.settings.refunds_topic;
    append(
        &state,
        topic,
        format!("{id}:refund:{}", entry.refund_id),
        event,
    )
    .await?;
    metrics::counter!("orderflow_refunds_accepted_total").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(RefundAcceptedBody {
            refund_id: entry.refund_id,
            order_id: id,
            amount: entry.amount,
            reason: entry.reason,
            status: RefundStatus::Pending,
        }),
    )
        .into_response())
}
