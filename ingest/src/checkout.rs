//! `POST /v1/checkouts`: authenticate, validate the shape, append durably, answer 202.

use crate::body::parse_json;
use crate::{AppState, Problem, limits};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes as Payload;
use chrono::Utc;
use orderflow_domain::{CheckoutRequest, Order, OrderEvent, OrderId, OrderStatus, encode_event};
use orderflow_pipeline::{Decoded, Message, header as log_header};
use orderflow_stores::Claim;
use std::time::{Duration, Instant};

/// How long a claimed key may stay pending before another request may take it over.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// Accepts a checkout.
#[utoipa::path(
    post,
    path = "/v1/checkouts",
    operation_id = "createCheckout",
    summary = "Accept a checkout",
    description = "Answers 202 only once the order is durably on the log. Scope `checkout`.",
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
            pattern = "^[!-~]+$", nullable = false,
            description = "1 to 255 visible ASCII characters. The same key and body again: the \
                same order id (with `Idempotent-Replayed: true`); another body: 422. Per customer."),
    ),
    request_body(content = orderflow_domain::CheckoutRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "On the log; follow it at `status_url` or `events_url`",
            body = crate::openapi::AcceptedBody,
            headers(
                ("Location" = String, description = "The order's `status_url`"),
                ("Idempotent-Replayed" = String, description = "`true` on a repeat of an accepted key"),
            )),
        crate::openapi::BadRequest,
        crate::openapi::Unauthorized,
        crate::openapi::Forbidden,
        crate::openapi::Conflict,
        crate::openapi::PayloadTooLarge,
        crate::openapi::UnsupportedMediaType,
        crate::openapi::Unprocessable,
        crate::openapi::Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = accept(&state, &headers, body).await;
    // "accepted" is counted where the append succeeds: a client that hangs up after its order
    // is on the log still has an order in the pipeline.
    let outcome = match &result {
        Ok((_, true)) => Some("replayed"),
        Ok((_, false)) => None,
        Err(p) if p.slug == "overloaded" => Some("shed"),
        Err(p) if p.status.is_server_error() => Some("unavailable"),
        Err(p) if p.status == StatusCode::TOO_MANY_REQUESTS => Some("rate_limited"),
        Err(_) => Some("refused"),
    };
    if let Some(outcome) = outcome {
        metrics::counter!("orderflow_checkouts_total", "outcome" => outcome).increment(1);
    }
    if let Err(problem) = &result {
        // Why, by the problem's stable type: malformed, unauthorized, invalid, …
        metrics::counter!("orderflow_checkouts_refused_total", "reason" => problem.slug)
            .increment(1);
    }
    metrics::histogram!("orderflow_checkout_seconds").record(started.elapsed());
    match result {
        Ok((id, replayed)) => accepted(id, replayed),
        Err(problem) => problem.into_response(),
    }
}

async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(OrderId, bool), Problem> {
    let claims = state.auth.require(headers, "checkout")?;
    let key = idempotency_key(headers)?;
    if key.is_none() {
        // No retry to honour: refuse before reading the body, as cheaply as possible, since
        // under overload most requests end here.
        limits::check_backlog(state)?;
    }
    let (request, _raw): (CheckoutRequest, _) =
        parse_json(headers, body, state.settings.max_body_bytes)?;
    let problems = request.structural_problems();
    if !problems.is_empty() {
        return Err(Problem::invalid(
            format!("the checkout has {} problem(s)", problems.len()),
            problems,
        ));
    }

    let mut order_id = OrderId::new();
    // Keys are per customer: two customers may pick the same key.
    let scoped_key = key.map(|k| format!("{}:{}:{}", claims.sub.len(), claims.sub, k));
    if let Some(scoped) = &scoped_key {
        let fingerprint = fingerprint(&request)?;
        match state
            .idempotency
            .claim(scoped, &fingerprint, order_id, PENDING_TTL)
            .await
        {
            Ok(Claim::Claimed { order_id: claimed }) => order_id = claimed,
            Ok(Claim::Existing {
                fingerprint: first,
                order_id,
                complete,
            }) => {
                return if first != fingerprint {
                    Err(Problem::key_reused())
                } else if complete {
                    Ok((order_id, true))
                } else {
                    Err(Problem::in_progress())
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "Idempotency store unavailable");
                return Err(Problem::unavailable(
                    "cannot record the Idempotency-Key now; retry",
                ));
            }
        }
    }

    // After the key check: a retry of an accepted checkout gets its 202 again, never a 429
    // for its customer's budget nor a 503 for the backlog.
    let refusal = match limits::customer_over_budget(state, &claims.sub).await {
        Some(wait) => Some(Problem::rate_limited(wait)),
        // Without a key the backlog was checked before the body was read.
        None if scoped_key.is_some() => limits::check_backlog(state).err(),
        None => None,
    };
    if let Some(refusal) = refusal {
        if let Some(scoped) = &scoped_key
            && let Err(e) = state.idempotency.abandon(scoped, order_id).await
        {
            tracing::warn!(error = %e, %order_id, "Cannot abandon an idempotency claim");
        }
        return Err(refusal);
    }

    let now = Utc::now();
    let order = Order::from_checkout(order_id, claims.sub, request, now);
    let event = OrderEvent {
        status: OrderStatus::Accepted,
        at: now,
        order,
    };
    let value = encode_event(&event).map_err(|e| {
        tracing::error!(error = %e, "Cannot encode an accepted order");
        Problem::internal()
    })?;
    let mut message_headers = vec![
        (
            log_header::IDEMPOTENCY_KEY.to_owned(),
            format!("{order_id}:ingest"),
        ),
        (log_header::ATTEMPT.to_owned(), "1".to_owned()),
    ];
    // Only a well-formed W3C traceparent travels with the order; anything else is dropped.
    if let Some(trace) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| is_traceparent(t))
    {
        message_headers.push((log_header::TRACEPARENT.to_owned(), trace.to_owned()));
    }
    let message = Message {
        topic: state.settings.accepted_topic.clone(),
        key: Payload::from(order_id.to_string()),
        value: Payload::from(value),
        headers: message_headers,
        decoded: Some(Decoded::new(event)),
    };

    // The append and the claim's outcome run in their own task: a client that hangs up
    // mid-request cancels this handler, never the bookkeeping of an append that went through.
    let log = state.log.clone();
    let idempotency = state.idempotency.clone();
    let ttl = state.settings.idempotency_ttl;
    let settled = tokio::spawn(async move {
        let appended = Instant::now();
        let result = log.append(vec![message]).await;
        metrics::histogram!("orderflow_checkout_append_seconds").record(appended.elapsed());
        if result.is_ok() {
            metrics::counter!("orderflow_checkouts_total", "outcome" => "accepted").increment(1);
        }
        if let Some(scoped) = scoped_key {
            let outcome = match &result {
                Ok(_) => idempotency.complete(&scoped, order_id, ttl).await,
                Err(_) => idempotency.abandon(&scoped, order_id).await,
            };
            if let Err(e) = outcome {
                // The claim lapses on its own; a retry then reuses this order id.
                tracing::warn!(error = %e, %order_id, "Cannot record the outcome of an idempotency claim");
            }
        }
        result
    })
    .await;
    match settled {
        Ok(Ok(_)) => Ok((order_id, false)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, %order_id, "Log append failed; answering 503");
            Err(Problem::unavailable(
                "the order log cannot take the order now; retry",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, %order_id, "The append task failed");
            Err(Problem::internal())
        }
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, the W3C trace-context form.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, part)| part.len() == *len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Idempotency-Key` header if there is one, or 400 naming what is wrong with it.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| Problem::malformed("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(Problem::malformed(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// A fingerprint of the request's meaning (not its bytes): the same checkout with other
/// whitespace or key order is the same request.
fn fingerprint(request: &CheckoutRequest) -> Result<String, Problem> {
    let canonical = serde_json::to_vec(request).map_err(|_| Problem::internal())?;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for byte in &canonical {
        a = (a ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(*byte))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    Ok(format!("{a:016x}{b:016x}{:x}", canonical.len()))
}

fn accepted(order_id: OrderId, replayed: bool) -> Response {
    let status_url = format!("/v1/orders/{order_id}");
    // Written out rather than built as a `serde_json::Value`: every field is an id or a fixed
    // word, so nothing needs escaping, and this runs once per checkout.
    let body = format!(
        r#"{{"order_id":"{order_id}","status":"accepted","status_url":"{status_url}","events_url":"{status_url}/ws"}}"#
    );
    let mut response = (
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
