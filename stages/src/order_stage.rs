//! [`OrderStage`]: a stage written in terms of order events, and [`OnOrders`], its adapter to
//! the pipeline.

use crate::topology::{self, Route};
use async_trait::async_trait;
use bytes::Bytes;
use orderflow_domain::{OrderEvent, RefundStatus, RejectionCode, decode_event, encode_event};
use orderflow_pipeline::{Decoded, Message, Outcome, Record, Stage, StageError, header};
use orderflow_stores::StockLedger;

/// What an order stage decided.
#[derive(Debug)]
pub enum Step {
    /// Pass the order on to the stage's output topic.
    Advance(OrderEvent),
    /// Refuse the order (after compensating); it goes to `orders.rejected`.
    Reject(OrderEvent),
    /// End the cancelled order (after giving back what it held); it goes to `orders.cancelled`,
    /// and to `refunds.requested` too when it carries a pending refund of its capture.
    Cancel(OrderEvent),
}

/// A business stage: one order event in, one step out.
#[async_trait]
pub trait OrderStage: Send + Sync + 'static {
    /// Handles one order. Side effects must be idempotent by `{order_id}:{stage}`.
    async fn handle(&self, event: OrderEvent, attempt: u32) -> Result<Step, StageError>;
}

/// Adapts an [`OrderStage`] to the pipeline on its [`Route`].
pub struct OnOrders<S> {
    route: Route,
    stage: S,
    /// `orderflow_stage_wait_seconds{stage}` (see [`stage_wait`]).
    wait: metrics::Histogram,
}

impl<S: OrderStage> OnOrders<S> {
    /// Runs `stage` on `route`.
    pub fn new(route: Route, stage: S) -> Self {
        Self {
            wait: stage_wait(route.stage),
            route,
            stage,
        }
    }

    fn message(
        &self,
        topic: &str,
        record: &Record,
        event: OrderEvent,
        attempt: u32,
    ) -> Result<Message, StageError> {
        let value = encode_event(&event).map_err(|e| StageError::permanent(e.to_string()))?;
        let mut headers = vec![
            (
                header::IDEMPOTENCY_KEY.to_owned(),
                format!("{}:{}", event.order.id, self.route.stage),
            ),
            (header::ATTEMPT.to_owned(), attempt.to_string()),
        ];
        if let Some(trace) = record.header(header::TRACEPARENT) {
            headers.push((header::TRACEPARENT.to_owned(), trace.to_owned()));
        }
        Ok(Message {
            topic: topic.to_owned(),
            key: record.key.clone(),
            value: Bytes::from(value),
            headers,
            decoded: Some(Decoded::new(event)),
        })
    }
}

#[async_trait]
impl<S: OrderStage> Stage for OnOrders<S> {
    fn name(&self) -> &str {
        self.route.stage
    }

    async fn process(&self, record: &Record, attempt: u32) -> Result<Outcome, StageError> {
        let event = event_of(record)?;
        let wait = fresh(record).then(|| waited(&event));
        let step = self.stage.handle(event, attempt).await?;
        // Once per record, by the try that handled it (after any retries or outage).
        if let Some(wait) = wait {
            self.wait.record(wait);
        }
        match step {
            Step::Advance(event) => Ok(Outcome::Emit(vec![self.message(
                self.route.output,
                record,
                event,
                attempt,
            )?])),
            Step::Reject(event) => {
                metrics_rejection(self.route.stage, &event);
                Ok(Outcome::Reject(self.message(
                    topology::REJECTED,
                    record,
                    event,
                    attempt,
                )?))
            }
            Step::Cancel(event) => {
                metrics::counter!("orderflow_orders_cancelled_total", "stage" => self.route.stage)
                    .increment(1);
                tracing::debug!(stage = self.route.stage, order_id = %event.order.id, "Order cancelled");
                let refund = event
                    .order
                    .refunds
                    .iter()
                    .any(|r| r.status == RefundStatus::Pending);
                let mut messages = Vec::with_capacity(2);
                if refund {
                    messages.push(self.message(
                        topology::REFUNDS_REQUESTED,
                        record,
                        event.clone(),
                        attempt,
                    )?);
                }
                messages.push(self.message(topology::CANCELLED, record, event, attempt)?);
                Ok(Outcome::Emit(messages))
            }
        }
    }
}

/// `orderflow_stage_wait_seconds{stage}`: from the moment the order's status was stamped (by
/// the stage before, or the API) to `stage` taking it up: the hop's queueing (that stage's
/// append and commit, the poll, the batch), which the stages' own timings do not show. Across
/// processes it also holds the difference of their clocks.
pub fn stage_wait(stage: &'static str) -> metrics::Histogram {
    metrics::histogram!("orderflow_stage_wait_seconds", "stage" => stage)
}

/// How long ago `event`'s status was stamped (zero for a clock that went back).
pub fn waited(event: &OrderEvent) -> std::time::Duration {
    (chrono::Utc::now() - event.at).to_std().unwrap_or_default()
}

/// Whether `record` is on its first way through the pipeline: a replayed dead letter carries
/// a status stamped long ago, which says nothing about the hop.
pub fn fresh(record: &Record) -> bool {
    record.header(header::REPLAYED_FROM).is_none()
}

/// How a stage ends an order it refuses after giving back what the order held: rejected, unless
/// the customer's cancel reached the ledger first; then cancelled, since a cancel answered 202
/// must end the order cancelled. The stock is released before this is asked, so the answer is
/// final.
pub async fn reject_unless_cancelled(
    ledger: &dyn StockLedger,
    event: OrderEvent,
    stage: &str,
    code: RejectionCode,
    detail: impl Into<String>,
) -> Result<Step, StageError> {
    if ledger
        .cancelled(event.order.id)
        .await
        .map_err(store_error)?
    {
        Ok(Step::Cancel(event.cancel(stage)))
    } else {
        Ok(Step::Reject(event.reject(stage, code, detail)))
    }
}

/// [`reject_unless_cancelled`] for an order that holds no stock: the refusal is recorded in the
/// ledger first, so a cancel after it is told the order was rejected.
pub async fn refuse_unless_cancelled(
    ledger: &dyn StockLedger,
    event: OrderEvent,
    stage: &str,
    code: RejectionCode,
    detail: impl Into<String>,
) -> Result<Step, StageError> {
    if ledger.refuse(event.order.id).await.map_err(store_error)? {
        Ok(Step::Reject(event.reject(stage, code, detail)))
    } else {
        Ok(Step::Cancel(event.cancel(stage)))
    }
}

/// The order event of a record: the copy the writing stage kept beside the bytes when it is in
/// this process, else the bytes decoded. Undecodable bytes are a permanent failure.
pub fn event_of(record: &Record) -> Result<OrderEvent, StageError> {
    event_in(record).map(std::borrow::Cow::into_owned)
}

/// [`event_of`] for a reader that only looks: the writer's copy is borrowed, not cloned.
pub fn event_in(record: &Record) -> Result<std::borrow::Cow<'_, OrderEvent>, StageError> {
    match record.decoded.as_ref().and_then(|d| d.get::<OrderEvent>()) {
        Some(event) => Ok(std::borrow::Cow::Borrowed(event)),
        None => decode_event(&record.value)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| StageError::permanent(e.to_string())),
    }
}

fn metrics_rejection(stage: &str, event: &OrderEvent) {
    let code = event
        .order
        .rejection
        .as_ref()
        .map_or("unknown", |r| r.code.as_str());
    metrics::counter!("orderflow_orders_rejected_total", "stage" => stage.to_owned(), "code" => code).increment(1);
    tracing::debug!(stage, order_id = %event.order.id, code, "Order rejected");
}

/// How a stage reports a store failure: a store that is down holds the record until it is back
/// (never a dead letter for that); corrupt stored data is a bug to look at.
pub fn store_error(e: orderflow_stores::StoreError) -> StageError {
    if e.is_corrupt() {
        StageError::permanent(e.to_string())
    } else {
        StageError::unavailable(e.to_string())
    }
}
