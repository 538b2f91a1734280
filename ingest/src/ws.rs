//! `GET /v1/orders/{id}/ws`: one JSON message per status change, closed after a terminal one.
//!
//! Each message is `{"order_id","status","at","order":{…the order view…}}`. Statuses come in
//! lifecycle order, each once, even when several were reached between two looks at the store:
//! they are read from the order's timeline.

use crate::orders::render;
use crate::{AppState, Claims, Problem};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use orderflow_domain::{OrderId, OrderStatus, OrderView, TimelineEntry};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// How long a follower waits for an order that is not projected yet.
const APPEAR_WITHIN: Duration = Duration::from_secs(10);
/// How often the store is re-read, in case a feed message was missed.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest a follower stays connected; it may reconnect.
const MAX_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// How often the server pings a follower.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Longest a single send may take before the follower counts as slow and is dropped (1013):
/// its messages would otherwise pile up in this process for a client that does not read.
const SEND_WITHIN: Duration = Duration::from_secs(5);
/// Close code for a follower that does not keep up ("try again later", RFC 6455 registry).
const CLOSE_SLOW: u16 = 1013;
/// Most bytes of unsent messages kept for one follower; past it a send fails and the follower
/// is dropped. A follower gets a handful of small messages, so only a client that stopped
/// reading reaches it.
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Bytes read or gathered for writing at a time per follower.
const IO_BUFFER: usize = 8 * 1024;
/// Largest message a follower may send (it has nothing to say beyond pings and close).
const MAX_INCOMING: usize = 4 * 1024;
/// Close code for an order that does not exist or is not the caller's.
const CLOSE_NOT_FOUND: u16 = 4404;

/// Query parameters: browsers cannot set headers on a WebSocket, so the token may come here.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// The bearer token, when not sent in `Authorization`.
    pub access_token: Option<String>,
}

/// Upgrades to a WebSocket that follows one order.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}/ws",
    operation_id = "followOrder",
    summary = "Follow an order over WebSocket",
    description = "A WebSocket upgrade (RFC 6455), not a plain GET: without the upgrade \
        headers the answer is 400. After `101 Switching Protocols` the server sends one text \
        message per status, `{\"order_id\",\"status\",\"at\",\"order\"}` with `order` \
        the order view, in lifecycle order and each once; it closes with 1000 after the \
        terminal status, with 4404 when the order is not the caller's or does not appear \
        within 10 s, with 1001 after 15 minutes (follow again), with 1013 when the client does \
        not read its messages fast enough (follow again) and with 1011 when the status feed \
        fails. Scope `orders:read` (or `admin`) is needed; browsers, which cannot set headers \
        on a WebSocket, send the token as `access_token`.",
    params(
        ("id" = OrderId, Path, description = "The order's id"),
        ("Connection" = String, Header, description = "`Upgrade`"),
        ("Upgrade" = String, Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = String, Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's nonce (RFC 6455)"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket is open",
            headers(("Sec-WebSocket-Accept" = String, description = "The server's answer to the key"))),
        crate::openapi::BadRequest,
        crate::openapi::Unauthorized,
        crate::openapi::Forbidden,
        crate::openapi::Edge,
    ),
    security(("bearer" = []), ("access_token" = [])),
)]
pub async fn follow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<WsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::malformed(format!("bad query: {e}")))?;
    let claims = match &query.access_token {
        Some(token) if !headers.contains_key(axum::http::header::AUTHORIZATION) => {
            state.auth.verify_token(token)?
        }
        _ => state.auth.verify(&headers)?,
    };
    claims.may_read()?;
    let id: OrderId = id
        .parse()
        .map_err(|_| Problem::malformed(format!("{id:?} is not an order id")))?;
    let upgrade = upgrade
        .map_err(|e| Problem::malformed(format!("this route needs a WebSocket upgrade: {e}")))?;
    // Small buffers: a follower receives a handful of small messages, and tungstenite's
    // defaults (128 KiB each way) would cost a thousand followers a quarter of a gigabyte.
    let upgrade = upgrade
        .read_buffer_size(IO_BUFFER)
        .write_buffer_size(IO_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING);
    Ok(upgrade.on_upgrade(move |socket| async move {
        let _open = OpenSocket::new();
        if let Err(e) = stream_order(state, claims, id, socket).await {
            tracing::debug!(order_id = %id, error = %e, "WebSocket follower ended");
        }
    }))
}

/// One open WebSocket in `orderflow_websockets_open`, counted down however the follower ends.
struct OpenSocket(metrics::Gauge);

impl OpenSocket {
    fn new() -> Self {
        let gauge = metrics::gauge!("orderflow_websockets_open");
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

async fn stream_order(
    state: AppState,
    claims: Claims,
    id: OrderId,
    mut socket: WebSocket,
) -> Result<(), axum::Error> {
    // Subscribe before the first read, so no change between the two is missed.
    let mut updates = match state.feed.subscribe(id).await {
        Ok(updates) => updates,
        Err(e) => return close(socket, 1011, &format!("status feed unavailable: {e}")).await,
    };
    let allowed = |view: &OrderView| view.customer_id == claims.sub || claims.has_scope("admin");
    let started = tokio::time::Instant::now();
    let mut sent: HashSet<(OrderStatus, Option<String>)> = HashSet::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        match state.orders.get(id).await {
            Ok(Some(view)) if !allowed(&view) => {
                return close(socket, CLOSE_NOT_FOUND, "no such order").await;
            }
            Ok(Some(view)) => {
                let ready = sendable(&view);
                let fresh: Vec<&TimelineEntry> = ready
                    .into_iter()
                    .filter(|e| !sent.contains(&(e.status, e.refund_id.clone())))
                    .collect();
                if !fresh.is_empty() {
                    let order = render(&view);
                    for entry in fresh {
                        let mut message = json!({ "order_id": id, "status": entry.status, "at": entry.at, "order": order });
                        if let Some(refund_id) = &entry.refund_id {
                            message["refund_id"] = json!(refund_id);
                        }
                        send(
                            &mut socket,
                            Message::Text(Utf8Bytes::from(message.to_string())),
                        )
                        .await?;
                        sent.insert((entry.status, entry.refund_id.clone()));
                    }
                }
                // Final once its terminal status is sent and no refund is still to be paid.
                let terminal_sent = sent.iter().any(|(status, _)| status.is_terminal());
                if terminal_sent && view.is_settled() {
                    return close(socket, 1000, "order is final").await;
                }
            }
            Ok(None) if started.elapsed() >= APPEAR_WITHIN => {
                return close(socket, CLOSE_NOT_FOUND, "no such order").await;
            }
            Ok(None) => {}
            // A store hiccup is not "no such order": look again at the next tick.
            Err(e) => {
                tracing::debug!(order_id = %id, error = %e, "Order store unavailable for a follower")
            }
        }
        if started.elapsed() >= MAX_LIFETIME {
            return close(socket, 1001, "follow again to continue").await;
        }
        tokio::select! {
            // A change was announced: loop to read and send it.
            update = updates.next() => if update.is_none() {
                return close(socket, 1011, "status feed closed").await;
            },
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
            // Pings find half-open connections, whose sends then fail and end the follower.
            _ = ping.tick() => send(&mut socket, Message::Ping(Default::default())).await?,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The timeline entries that may be sent, in timeline order: the longest run of statuses in
/// lifecycle order with none missing, and every mark (cancel requested, refunds). A status
/// projected late waits for the ones before it, so followers see statuses in order, each once;
/// a rejection or a cancellation follows the statuses reached before it.
fn sendable(view: &OrderView) -> Vec<&TimelineEntry> {
    let find = |status: OrderStatus| view.timeline.iter().find(|e| e.status == status);
    let mut ready: Vec<&TimelineEntry> = Vec::new();
    for status in OrderStatus::ALL {
        if status == OrderStatus::Rejected {
            break;
        }
        match find(status) {
            Some(entry) => ready.push(entry),
            None => break,
        }
    }
    let ending = [
        (
            OrderStatus::Rejected,
            view.rejection.as_ref().map(|r| r.after),
        ),
        (
            OrderStatus::Cancelled,
            view.cancellation.as_ref().map(|c| c.after),
        ),
    ];
    for (status, after) in ending {
        if let Some(entry) = find(status) {
            let reached = after.map_or(1, |a| usize::from(a.rank()) + 1);
            if ready.len() >= reached {
                ready.truncate(reached);
                ready.push(entry);
            }
        }
    }
    view.timeline
        .iter()
        .filter(|e| e.status.is_mark() || ready.iter().any(|r| std::ptr::eq(*r, *e)))
        .collect()
}

/// Sends one message; a follower that does not take it within [`SEND_WITHIN`] (or whose buffer
/// is full) is told 1013 and dropped, so it never holds messages or a task for long.
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), axum::Error> {
    let counted = matches!(message, Message::Text(_));
    match tokio::time::timeout(SEND_WITHIN, socket.send(message)).await {
        Ok(Ok(())) => {
            if counted {
                metrics::counter!("orderflow_websocket_messages_total").increment(1);
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            metrics::counter!("orderflow_websocket_slow_dropped_total").increment(1);
            let frame = CloseFrame {
                code: CLOSE_SLOW,
                reason: Utf8Bytes::from_static("too slow to read; follow again"),
            };
            // Best effort: a client this slow may not take the close either.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                socket.send(Message::Close(Some(frame))),
            )
            .await;
            Err(axum::Error::new("the follower stopped reading"))
        }
    }
}

/// Registers the WebSocket series at zero, so dashboards see them from the start.
pub fn register_metrics() {
    metrics::gauge!("orderflow_websockets_open").set(0.0);
    metrics::counter!("orderflow_websocket_messages_total").absolute(0);
    metrics::counter!("orderflow_websocket_slow_dropped_total").absolute(0);
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    };
    send(&mut socket, Message::Close(Some(frame))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use orderflow_domain::{Rejection, RejectionCode};

    fn view(statuses: &[OrderStatus], rejected_after: Option<OrderStatus>) -> OrderView {
        OrderView {
            order_id: OrderId::new(),
            customer_id: "c".into(),
            status: *statuses.last().expect("one status"),
            lines: vec![],
            totals: None,
            shipment: None,
            notification: None,
            coupon_codes: vec![],
            rejection: rejected_after.map(|after| Rejection {
                code: RejectionCode::PaymentDeclined,
                detail: String::new(),
                stage: "test".into(),
                after,
            }),
            payment: None,
            cancellation: None,
            refunds: vec![],
            timeline: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    TimelineEntry::new(*s, Utc.timestamp_opt(i as i64, 0).single().expect("valid"))
                })
                .collect(),
        }
    }

    #[test]
    fn a_cancellation_follows_the_statuses_before_it_and_marks_go_at_once() {
        use OrderStatus::*;
        let mut cancelled = view(&[Accepted, CancelRequested, Validated, Cancelled], None);
        cancelled.cancellation = Some(orderflow_domain::Cancellation {
            stage: "price".into(),
            after: Reserved,
        });
        // Reserved is not projected yet: the cancellation waits for it, the mark does not.
        assert_eq!(
            names(sendable(&cancelled)),
            ["accepted", "cancel_requested", "validated"]
        );
        let at = Utc.timestamp_opt(9, 0).single().expect("valid");
        cancelled
            .timeline
            .insert(3, TimelineEntry::new(Reserved, at));
        assert_eq!(
            names(sendable(&cancelled)),
            [
                "accepted",
                "cancel_requested",
                "validated",
                "reserved",
                "cancelled"
            ]
        );
    }

    fn names(entries: Vec<&TimelineEntry>) -> Vec<&'static str> {
        entries.iter().map(|e| e.status.as_str()).collect()
    }

    #[test]
    fn only_gapless_prefixes_are_sent() {
        use OrderStatus::*;
        assert_eq!(
            names(sendable(&view(&[Accepted, Validated, Priced], None))),
            ["accepted", "validated"]
        );
        assert_eq!(
            names(sendable(&view(
                &[Accepted, Validated, Reserved, Priced],
                None
            ))),
            ["accepted", "validated", "reserved", "priced"]
        );
        // Rejected at charge: waits until priced is in, then follows it.
        assert_eq!(
            names(sendable(&view(
                &[Accepted, Validated, Rejected],
                Some(Priced)
            ))),
            ["accepted", "validated"]
        );
        assert_eq!(
            names(sendable(&view(
                &[Accepted, Validated, Reserved, Priced, Rejected],
                Some(Priced)
            ))),
            ["accepted", "validated", "reserved", "priced", "rejected"]
        );
        assert_eq!(
            names(sendable(&view(&[Accepted, Rejected], Some(Accepted)))),
            ["accepted", "rejected"]
        );
    }
}
