//! The reservation expiry sweeper: releases stock holds that lapsed before their order was
//! charged and rejects those orders with `reservation_expired`.
//!
//! An order whose hold lapses is stuck somewhere between reserve and charge (a slow stage, or a
//! dead letter of validate, reserve or price; charge pins the hold before it calls the provider,
//! so an order dead-lettered there keeps its stock until it is replayed). Its stock goes back
//! on the shelf at once and its coupon uses are given back; its rejection is built from the
//! order view (the sweeper has no event in hand) and appended to `orders.rejected`. If the order
//! does reach charge later, the pin there fails, nothing is charged, the coupon uses are given
//! back again (a no-op) and it is rejected again: the first terminal status stands. Expiries are
//! acknowledged only once their rejection is on the log.

use crate::topology;
use chrono::Utc;
use orderflow_domain::{OrderEvent, OrderStatus, OrderView, RejectionCode, encode_event};
use orderflow_pipeline::{Decoded, Log, Message, header};
use orderflow_stores::{CouponLedger, OrderStore, StockLedger};
use std::sync::Arc;

/// The sweeper: one pass per [`sweep`](Self::sweep); the application runs it periodically beside
/// the projector.
pub struct ExpirySweeper {
    ledger: Arc<dyn StockLedger>,
    orders: Arc<dyn OrderStore>,
    log: Arc<dyn Log>,
    batch: usize,
    coupons: Option<Arc<dyn CouponLedger>>,
}

/// Why a sweep stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The ledger or the order store failed.
    #[error(transparent)]
    Store(#[from] orderflow_stores::StoreError),
    /// The log did not take the rejections.
    #[error(transparent)]
    Log(#[from] orderflow_pipeline::LogError),
    /// A rejection could not be encoded.
    #[error("cannot encode a rejection: {0}")]
    Encode(String),
    /// Coupon uses could not be given back.
    #[error("cannot give coupon uses back: {0}")]
    Coupons(String),
}

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Orders rejected with `reservation_expired` by this sweep.
    pub rejected: usize,
    /// Expired orders that were terminal already (nothing to announce).
    pub already_terminal: usize,
    /// Expired orders not projected yet; tried again next sweep.
    pub waiting: usize,
}

impl ExpirySweeper {
    /// A sweeper over `ledger`, reading views from `orders` and appending to `log`, at most
    /// `batch` orders per sweep.
    pub fn new(
        ledger: Arc<dyn StockLedger>,
        orders: Arc<dyn OrderStore>,
        log: Arc<dyn Log>,
        batch: usize,
    ) -> Self {
        Self {
            ledger,
            orders,
            log,
            batch: batch.max(1),
            coupons: None,
        }
    }

    /// Gives the coupon uses of expired orders back in `coupons`.
    pub fn with_coupons(mut self, coupons: Arc<dyn CouponLedger>) -> Self {
        self.coupons = Some(coupons);
        self
    }

    /// Expires what is due and announces every unannounced expiry.
    pub async fn sweep(&self) -> Result<Sweep, SweepError> {
        let expired = self.ledger.expire_due(Utc::now(), self.batch).await?;
        let mut outcome = Sweep::default();
        let mut messages = Vec::new();
        let mut announced = Vec::new();
        for id in expired {
            match self.orders.get(id).await? {
                Some(view) if view.status.is_terminal() => {
                    outcome.already_terminal += 1;
                    announced.push(id);
                }
                Some(view) => {
                    let event = rejection(&view);
                    if let Some(coupons) = &self.coupons {
                        crate::price::restore_coupons(coupons.as_ref(), &event)
                            .await
                            .map_err(|e| SweepError::Coupons(e.to_string()))?;
                    }
                    messages.push(message(&event)?);
                    announced.push(id);
                }
                None => outcome.waiting += 1,
            }
        }
        outcome.rejected = messages.len();
        if !messages.is_empty() {
            self.log.append(messages).await?;
        }
        self.ledger.acknowledge_expired(&announced).await?;
        // Counted even when nothing expired, so the series exists (at 0) from the first sweep.
        metrics::counter!("orderflow_reservations_expired_total")
            .increment(outcome.rejected as u64);
        if outcome.rejected > 0 {
            tracing::info!(
                rejected = outcome.rejected,
                already_terminal = outcome.already_terminal,
                "Released lapsed stock holds and rejected their orders"
            );
        }
        if outcome.waiting > 0 {
            tracing::warn!(
                waiting = outcome.waiting,
                "Lapsed stock holds of orders the projector has not shown yet; retrying"
            );
        }
        Ok(outcome)
    }
}

/// The `reservation_expired` rejection of an order, rebuilt from its view
/// ([`OrderView::order`]).
fn rejection(view: &OrderView) -> OrderEvent {
    let event = OrderEvent {
        status: view.status,
        at: Utc::now(),
        order: view.order(),
    }
    .reject(
        "expiry",
        RejectionCode::ReservationExpired,
        "the stock hold lapsed before the order was charged",
    );
    debug_assert_eq!(event.status, OrderStatus::Rejected);
    event
}

/// The log message of a rejection.
fn message(event: &OrderEvent) -> Result<Message, SweepError> {
    let view_id = event.order.id;
    let value = encode_event(event).map_err(|e| SweepError::Encode(e.to_string()))?;
    Ok(Message {
        topic: topology::REJECTED.to_owned(),
        key: view_id.to_string().into_bytes().into(),
        value: value.into(),
        headers: vec![
            (
                header::IDEMPOTENCY_KEY.to_owned(),
                format!("{view_id}:expiry"),
            ),
            (header::ATTEMPT.to_owned(), "1".to_owned()),
        ],
        decoded: Some(Decoded::new(event.clone())),
    })
}
