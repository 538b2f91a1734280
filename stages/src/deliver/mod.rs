//! Delivery from the outbox: merchant webhooks (Standard Webhooks, signed, retried with
//! exponential backoff for hours) and customer emails (rendered by notify, written to a mail
//! sink). The pipeline only writes the outbox; the [`Dispatcher`] sends from it on its own
//! schedule, so a dead endpoint never slows an order.

pub mod mail;
mod webhook;

pub use mail::{MailSink, render_confirmation};
pub use webhook::{Endpoint, EndpointError};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use orderflow_domain::{OrderStatus, OrderView, RefundStatus};
use orderflow_stores::{Attempt, Delivery, MAIL, NewMessage, Next, Outbox, StoreError, Tried};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The webhook event types orderflow sends.
pub const EVENTS: [&str; 4] = [
    "order.completed",
    "order.rejected",
    "order.cancelled",
    "order.refunded",
];

/// The event type of a refund paid back.
pub const REFUNDED: &str = "order.refunded";

/// The event type a terminal status is announced as, if any.
pub fn event_of(status: OrderStatus) -> Option<&'static str> {
    match status {
        OrderStatus::Completed => Some("order.completed"),
        OrderStatus::Rejected => Some("order.rejected"),
        OrderStatus::Cancelled => Some("order.cancelled"),
        _ => None,
    }
}

/// The configured webhook endpoints.
#[derive(Clone, Default)]
pub struct Endpoints(Vec<Arc<Endpoint>>);

impl Endpoints {
    /// The endpoints, in the configuration's order (names are unique).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self(endpoints.into_iter().map(Arc::new).collect())
    }

    /// Whether any endpoint is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The endpoint called `name`.
    pub fn named(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.0.iter().find(|e| e.name == name)
    }

    /// The messages announcing `view`'s terminal status to every endpoint subscribed to it: one
    /// per order, event and endpoint (the key), the body
    /// `{"type","timestamp","data":{…the order view…}}` with the status's own time, so writing
    /// it again gives the same bytes.
    pub fn messages_for(&self, view: &OrderView) -> Vec<NewMessage> {
        let Some(event) = event_of(view.status) else {
            return Vec::new();
        };
        let at = view
            .timeline
            .iter()
            .rev()
            .find(|e| e.status == view.status)
            .map_or_else(Utc::now, |e| e.at);
        self.announce(view, event, at, event)
    }

    /// The messages announcing that the refund `refund_id` of `view`'s order was paid, to every
    /// endpoint subscribed to `order.refunded`: one per refund and endpoint (the key
    /// `{order}:order.refunded:{refund_id}:{endpoint}`), with the refund's own time. Nothing if
    /// the view does not show it paid.
    pub fn refund_messages(&self, view: &OrderView, refund_id: &str) -> Vec<NewMessage> {
        let paid = view
            .refunds
            .iter()
            .find(|r| r.refund_id == refund_id && r.status == RefundStatus::Succeeded);
        match paid {
            Some(refund) => self.announce(
                view,
                REFUNDED,
                refund.at,
                &format!("{REFUNDED}:{refund_id}"),
            ),
            None => Vec::new(),
        }
    }

    /// One message per endpoint subscribed to `event`, keyed `{order}:{key}:{endpoint}`.
    fn announce(
        &self,
        view: &OrderView,
        event: &str,
        at: DateTime<Utc>,
        key: &str,
    ) -> Vec<NewMessage> {
        let subscribed: Vec<&Arc<Endpoint>> = self.0.iter().filter(|e| e.wants(event)).collect();
        if subscribed.is_empty() {
            return Vec::new();
        }
        let body = serde_json::json!({
            "type": event,
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": view,
        })
        .to_string();
        subscribed
            .into_iter()
            .map(|endpoint| NewMessage {
                key: format!("{}:{key}:{}", view.order_id, endpoint.name),
                order_id: view.order_id,
                event: event.to_owned(),
                destination: endpoint.name.clone(),
                payload: body.clone(),
            })
            .collect()
    }
}

/// How the dispatcher paces and retries.
#[derive(Debug, Clone)]
pub struct DispatchPolicy {
    /// The wait after the first failed try; doubles with each failure.
    pub backoff_base: Duration,
    /// The longest wait between two tries.
    pub backoff_max: Duration,
    /// How long after it was written a message is tried before it is given up (`failed`).
    pub give_up_after: Duration,
    /// Messages sent at once.
    pub concurrency: usize,
    /// Most messages taken per round.
    pub batch: usize,
}

impl Default for DispatchPolicy {
    fn default() -> Self {
        Self {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            concurrency: 16,
            batch: 1_024,
        }
    }
}

impl DispatchPolicy {
    /// When to try again after `failures` failed tries of a message written at `created`, or
    /// `None` to give up: `base × 2^(failures−1)`, capped, ±20 % jitter.
    pub fn next_try(
        &self,
        failures: usize,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let shift = u32::try_from(failures.saturating_sub(1).min(20)).unwrap_or(20);
        let wait = self
            .backoff_base
            .saturating_mul(1u32 << shift)
            .min(self.backoff_max)
            .mul_f64(0.8 + 0.4 * fastrand::f64());
        let at = now + chrono::Duration::from_std(wait).ok()?;
        let deadline = created + chrono::Duration::from_std(self.give_up_after).ok()?;
        (at <= deadline).then_some(at)
    }
}

/// Sends what the outbox holds: webhooks to their endpoints, emails to the mail sink.
pub struct Dispatcher {
    outbox: Arc<dyn Outbox>,
    endpoints: Endpoints,
    mail: Option<MailSink>,
    client: reqwest::Client,
    policy: DispatchPolicy,
}

impl Dispatcher {
    /// A dispatcher over `outbox`; requests time out after `timeout`.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        endpoints: Endpoints,
        mail: Option<MailSink>,
        policy: DispatchPolicy,
        timeout: Duration,
    ) -> Result<Self, EndpointError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A receiver answers where it was configured; a redirect is a failed try.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orderflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(EndpointError::Client)?;
        Ok(Self {
            outbox,
            endpoints,
            mail,
            client,
            policy,
        })
    }

    /// One round: every message due now, sent (webhooks a few at once, the round's emails
    /// in one write) and the outcomes recorded together; returns how many were tried.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let due = self.outbox.due(Utc::now(), self.policy.batch).await?;
        let count = due.len();
        let (mail, hooks): (Vec<Delivery>, Vec<Delivery>) =
            due.into_iter().partition(|m| m.destination == MAIL);
        let at = Utc::now();
        let mut tried = Vec::with_capacity(count);
        if !mail.is_empty() {
            let started = Instant::now();
            let written = match &self.mail {
                Some(sink) => sink.write_all(&mail).await,
                None => vec![Err("no mail sink is configured".to_owned()); mail.len()],
            };
            let elapsed = started.elapsed();
            for (message, result) in mail.iter().zip(written) {
                tried.push(self.settle(
                    message,
                    at,
                    elapsed,
                    result.map(|()| None).map_err(|e| (None, e)),
                ));
            }
        }
        let sent: Vec<Tried> = futures::stream::iter(hooks)
            .map(|message| self.send_hook(message, at))
            .buffer_unordered(self.policy.concurrency.max(1))
            .collect()
            .await;
        tried.extend(sent);
        self.outbox.record(tried).await?;
        Ok(count)
    }

    /// One webhook's try.
    async fn send_hook(&self, message: Delivery, at: DateTime<Utc>) -> Tried {
        let started = Instant::now();
        let result = match self.endpoints.named(&message.destination) {
            Some(endpoint) => endpoint.send(&self.client, &message, at).await.map(Some),
            None => Err((
                None,
                format!("no endpoint {:?} is configured", message.destination),
            )),
        };
        self.settle(&message, at, started.elapsed(), result)
    }

    /// Rounds back to back while each finds a full batch, for at most `budget`; how many
    /// messages were tried. A backlog (a sale's confirmations) then goes out at the sinks'
    /// speed instead of one batch per poll, which a busy store outgrows.
    pub async fn deliver_backlog(&self, budget: Duration) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut tried = 0;
        loop {
            let round = self.deliver_due().await?;
            tried += round;
            if round < self.policy.batch || started.elapsed() >= budget {
                return Ok(tried);
            }
        }
    }

    /// What a try of `message` at `at` led to (the receiver's status, or the status if any and
    /// what went wrong), counted in the metrics.
    fn settle(
        &self,
        message: &Delivery,
        at: DateTime<Utc>,
        elapsed: Duration,
        result: Result<Option<u16>, (Option<u16>, String)>,
    ) -> Tried {
        let channel = if message.destination == MAIL {
            "mail"
        } else {
            "webhook"
        };
        let millis = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let (status, error, next) = match result {
            Ok(status) => (status, None, Next::Delivered),
            Err((status, error)) => {
                let failures = message.attempts.len() + 1;
                let next = self
                    .policy
                    .next_try(failures, message.created_at, at)
                    .map_or(Next::GiveUp, Next::RetryAt);
                if next == Next::GiveUp {
                    tracing::warn!(id = %message.id, destination = %message.destination, %error, failures, "Giving up a delivery");
                } else {
                    tracing::debug!(id = %message.id, destination = %message.destination, %error, failures, "Delivery failed");
                }
                (status, Some(error), next)
            }
        };
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "failed",
            Next::GiveUp => "given_up",
        };
        metrics::counter!("orderflow_outbox_deliveries_total", "channel" => channel, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("orderflow_outbox_delivery_seconds", "channel" => channel)
            .record(elapsed);
        Tried {
            id: message.id.clone(),
            attempt: Attempt {
                at,
                status,
                error,
                millis,
            },
            next,
        }
    }
}

/// Exports the delivery series at zero, so dashboards see them before the first message.
pub fn register_metrics() {
    for channel in ["webhook", "mail"] {
        for outcome in ["delivered", "failed", "given_up"] {
            metrics::counter!("orderflow_outbox_deliveries_total", "channel" => channel, "outcome" => outcome)
                .absolute(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_domain::OrderId;
    use orderflow_stores::embedded::EmbeddedOutbox;
    use orderflow_stores::{DeliveryState, Listing};

    #[tokio::test]
    async fn a_backlog_goes_out_round_after_round_in_one_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = orderflow_storage::kv::Engine::open(&dir.path().join("db")).expect("engine");
        let outbox: Arc<dyn Outbox> = Arc::new(EmbeddedOutbox::new(engine));
        let emails = (0..10)
            .map(|i| NewMessage {
                key: format!("k{i}"),
                order_id: OrderId::new(),
                event: "order.completed".into(),
                destination: MAIL.into(),
                payload: format!("Subject: order {i}\r\n\r\nThanks.\r\n"),
            })
            .collect();
        assert_eq!(outbox.enqueue(emails).await.expect("enqueue"), 10);
        let mail = dir.path().join("mail");
        let dispatcher = Dispatcher::new(
            outbox.clone(),
            Endpoints::new(Vec::new()),
            Some(MailSink::new(&mail)),
            DispatchPolicy {
                batch: 3,
                ..DispatchPolicy::default()
            },
            Duration::from_secs(5),
        )
        .expect("dispatcher");
        // Four rounds of at most three: the last one, not full, ends the run.
        assert_eq!(
            dispatcher
                .deliver_backlog(Duration::from_secs(30))
                .await
                .expect("delivered"),
            10
        );
        let files = std::fs::read_dir(&mail).expect("mail dir").count();
        assert_eq!(files, 10, "every email is in the sink");
        let listed = outbox
            .list(&Listing {
                limit: 100,
                ..Listing::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.len(), 10);
        assert!(listed.iter().all(|d| d.state == DeliveryState::Delivered));
        // Nothing left: the next run is one empty round.
        assert_eq!(
            dispatcher
                .deliver_backlog(Duration::from_secs(30))
                .await
                .expect("delivered"),
            0
        );
    }

    #[test]
    fn retries_back_off_and_give_up_after_their_time() {
        let policy = DispatchPolicy {
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            ..DispatchPolicy::default()
        };
        let created = Utc::now();
        let wait = |failures| {
            (policy
                .next_try(failures, created, created)
                .expect("retried")
                - created)
                .num_milliseconds()
        };
        assert!((4_000..=6_000).contains(&wait(1)));
        assert!((8_000..=12_000).contains(&wait(2)));
        assert!(
            (2_880_000..=4_320_000).contains(&wait(30)),
            "capped at an hour"
        );
        let late = created + chrono::Duration::hours(24);
        assert_eq!(policy.next_try(3, created, late), None);
    }
}
