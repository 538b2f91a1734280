//! `GET /v1/orders/{id}/ws`: one JSON message per status change, closed after a terminal one.
//!
//! Each message is `{"order_id","status","at","order":{…the order view…}}`. Statuses come in
//! lifecycle order, each once, even when several were reached between two looks at the store:
//! they are read from the order's timeline.

use crate::orders::render;
use crate::{AppState, Claims, Problem};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::StreamExt;
use orderflow_domain::{OrderId, OrderStatus, OrderView};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

/// How long a follower waits for an order that is not projected yet.
const APPEAR_WITHIN: Duration = Duration::from_secs(10);
/// How often the store is re-read, in case a feed message was missed.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Close code for an order that does not exist or is not the caller's.
const CLOSE_NOT_FOUND: u16 = 4404;

/// Query parameters: browsers cannot set headers on a WebSocket, so the token may come here.
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// The bearer token, when not sent in `Authorization`.
    pub access_token: Option<String>,
}

/// Upgrades to a WebSocket that follows one order.
pub async fn follow(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let claims = match &query.access_token {
        Some(token) if !headers.contains_key(axum::http::header::AUTHORIZATION) => {
            state.auth.verify_token(token)?
        }
        _ => state.auth.verify(&headers)?,
    };
    let id: OrderId = id
        .parse()
        .map_err(|_| Problem::malformed(format!("{id:?} is not an order id")))?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        if let Err(e) = stream_order(state, claims, id, socket).await {
            tracing::debug!(order_id = %id, error = %e, "WebSocket follower ended");
        }
    }))
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
    let deadline = tokio::time::Instant::now() + APPEAR_WITHIN;
    let mut sent: HashSet<OrderStatus> = HashSet::new();
    loop {
        let current = state.orders.get(id).await.ok().flatten();
        match &current {
            Some(view) if !allowed(view) => {
                return close(socket, CLOSE_NOT_FOUND, "no such order").await;
            }
            Some(view) => {
                let order = render(view);
                for entry in &view.timeline {
                    if !sent.insert(entry.status) {
                        continue;
                    }
                    let message = json!({ "order_id": id, "status": entry.status, "at": entry.at, "order": order });
                    socket
                        .send(Message::Text(Utf8Bytes::from(message.to_string())))
                        .await?;
                }
                if view.status.is_terminal() {
                    return close(socket, 1000, "order is final").await;
                }
            }
            None if tokio::time::Instant::now() >= deadline => {
                return close(socket, CLOSE_NOT_FOUND, "no such order").await;
            }
            _ => {}
        }
        tokio::select! {
            // A change was announced: loop to read and send it.
            update = updates.next() => if update.is_none() {
                return close(socket, 1011, "status feed closed").await;
            },
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        })))
        .await
}
