//! project: fold every status event into the order view.

use crate::deliver::Endpoints;
use async_trait::async_trait;
use orderflow_domain::{OrderId, OrderView};
use orderflow_pipeline::{Outcome, Record, Stage, StageError};
use orderflow_stores::{NewMessage, OrderStore, Outbox, StatusFeed};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long the projector's position may stay uncommitted: its views are written once per
/// interval instead of once per status change, and a crash replays at most this much.
pub const PROJECTOR_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The status projector: reads every status topic, keeps the [`OrderStore`] current and
/// announces each change on the [`StatusFeed`]. The store may hold views in memory; the runner
/// flushes it before each commit (see [`PROJECTOR_COMMIT_INTERVAL`]). A feed whose followers
/// read what the flush writes ([`StatusFeed::announce_after_flush`]) hears of each changed
/// order once, after the flush; followers read the view and send every new status in order.
pub struct Project {
    store: Arc<dyn OrderStore>,
    feed: Arc<dyn StatusFeed>,
    /// Changed views to announce after the next flush, newest per order.
    unannounced: parking_lot::Mutex<HashMap<OrderId, OrderView>>,
    /// Where terminal statuses are announced to webhook endpoints, if any are configured.
    webhooks: Option<(Arc<dyn Outbox>, Endpoints)>,
    /// Webhook messages to write at the next flush, before the offsets are committed.
    unsent: parking_lot::Mutex<Vec<NewMessage>>,
    /// `orderflow_stage_wait_seconds{stage="project"}`.
    wait: metrics::Histogram,
}

impl Project {
    /// Projects into `store` and announces changes on `feed`.
    pub fn new(store: Arc<dyn OrderStore>, feed: Arc<dyn StatusFeed>) -> Self {
        Self {
            store,
            feed,
            unannounced: parking_lot::Mutex::new(HashMap::new()),
            webhooks: None,
            unsent: parking_lot::Mutex::new(Vec::new()),
            wait: crate::order_stage::stage_wait(crate::topology::PROJECTOR),
        }
    }

    /// Also writes a webhook message into `outbox` for each endpoint subscribed to an order's
    /// terminal status (nothing when `endpoints` is empty).
    pub fn with_webhooks(mut self, outbox: Arc<dyn Outbox>, endpoints: Endpoints) -> Self {
        self.webhooks = (!endpoints.is_empty()).then_some((outbox, endpoints));
        self
    }

    async fn announce(&self, view: &OrderView) {
        // The view is readable already; a feed hiccup only delays followers, who re-read.
        if let Err(e) = self.feed.publish(view).await {
            tracing::warn!(error = %e, order_id = %view.order_id, "Cannot publish a status change");
        }
    }
}

#[async_trait]
impl Stage for Project {
    fn name(&self) -> &str {
        crate::topology::PROJECTOR
    }

    async fn process(&self, record: &Record, _attempt: u32) -> Result<Outcome, StageError> {
        let event = crate::order_stage::event_in(record)?;
        // A paid refund's event keeps the order's stamp, not the refund's: no hop to time.
        let wait = (crate::order_stage::fresh(record)
            && record.topic != crate::topology::REFUNDS_COMPLETED)
            .then(|| crate::order_stage::waited(&event));
        let status = event.status;
        // Refunds this event says were paid: only the refund step's output says so.
        let paid: Vec<String> = if record.topic == crate::topology::REFUNDS_COMPLETED {
            event
                .order
                .refunds
                .iter()
                .filter(|r| r.status == orderflow_domain::RefundStatus::Succeeded)
                .map(|r| r.refund_id.clone())
                .collect()
        } else {
            Vec::new()
        };
        // Only an event of a terminal topic ends the order: a refund's event carries the
        // order's status, terminal or not, and must not announce or count the end again.
        let terminal = crate::topology::TERMINAL.contains(&record.topic.as_str());
        let order_id = event.order.id;
        // Accept to the moment the terminal status shows in the view a customer reads: the
        // end-to-end latency, including the last append and this projection.
        let lifetime = (chrono::Utc::now() - event.order.accepted_at)
            .to_std()
            .unwrap_or_default();
        let changed = self
            .store
            .apply(std::slice::from_ref(event.as_ref()))
            .await
            .map_err(crate::order_stage::store_error)?;
        if let Some((_, endpoints)) = &self.webhooks
            && (terminal || !paid.is_empty())
        {
            // A terminal status (or a refund) replayed after a crash changes nothing (its view
            // is durable already) but its messages may not have been written: they are made
            // again from the stored view, and the outbox keeps one per key.
            let view = match changed.iter().find(|v| v.order_id == order_id) {
                Some(view) => Some(view.clone()),
                None => self
                    .store
                    .get(order_id)
                    .await
                    .map_err(crate::order_stage::store_error)?,
            };
            if let Some(view) = view {
                let mut unsent = self.unsent.lock();
                if terminal && view.status.is_terminal() {
                    unsent.extend(endpoints.messages_for(&view));
                }
                for refund_id in &paid {
                    unsent.extend(endpoints.refund_messages(&view, refund_id));
                }
            }
        }
        let projected = !changed.is_empty();
        if self.feed.announce_after_flush() {
            let mut unannounced = self.unannounced.lock();
            // The views are this call's own: kept as they are, not copied.
            for view in changed {
                match unannounced.get(&view.order_id) {
                    Some(held) if held.revision() >= view.revision() => {}
                    _ => {
                        unannounced.insert(view.order_id, view);
                    }
                }
            }
        } else {
            for view in &changed {
                self.announce(view).await;
            }
        }
        if let Some(wait) = wait {
            self.wait.record(wait);
        }
        if projected {
            metrics::counter!("orderflow_orders_projected_total", "status" => status.as_str())
                .increment(1);
            if terminal {
                metrics::counter!("orderflow_orders_terminal_total", "status" => status.as_str())
                    .increment(1);
                metrics::histogram!("orderflow_order_lifetime_seconds", "status" => status.as_str())
                    .record(lifetime);
            }
        }
        Ok(Outcome::Nothing)
    }

    fn commit_interval(&self) -> Duration {
        PROJECTOR_COMMIT_INTERVAL
    }

    async fn flush(&self) -> Result<(), StageError> {
        // The messages first: once the views are written a replay no longer changes them, and
        // the offsets are committed only after both.
        if let Some((outbox, _)) = &self.webhooks {
            let messages = std::mem::take(&mut *self.unsent.lock());
            if !messages.is_empty()
                && let Err(e) = outbox.enqueue(messages.clone()).await
            {
                // Kept for the commit's retry: the offsets are not committed without them.
                self.unsent.lock().extend(messages);
                return Err(crate::order_stage::store_error(e));
            }
        }
        self.store
            .flush()
            .await
            .map_err(crate::order_stage::store_error)?;
        let views: Vec<OrderView> = self.unannounced.lock().drain().map(|(_, v)| v).collect();
        futures::future::join_all(views.iter().map(|view| self.announce(view))).await;
        Ok(())
    }
}
