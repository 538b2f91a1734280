//! The embedded [`StatusFeed`]: in-process broadcast channels, one per followed order, so a
//! change wakes only the followers of its own order (a thousand followers cost a publish one
//! lookup, not a thousand wake-ups).

use crate::{StatusChange, StatusFeed, StoreError};
use async_trait::async_trait;
use dashmap::DashMap;
use futures::stream::{self, BoxStream, StreamExt};
use orderflow_domain::{OrderId, OrderView};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::broadcast;

/// Subscriptions between two sweeps of channels nobody listens to any more.
const SWEEP_EVERY: usize = 1024;

/// Status changes of this process, fanned out to the followers of each order.
#[derive(Clone)]
pub struct EmbeddedStatusFeed {
    followers: Arc<DashMap<OrderId, broadcast::Sender<StatusChange>>>,
    capacity: usize,
    subscribed: Arc<AtomicUsize>,
}

impl EmbeddedStatusFeed {
    /// A feed that buffers up to `capacity` changes per order for a slow follower before it
    /// skips ahead (an order has a handful of statuses: a small number does).
    pub fn new(capacity: usize) -> Self {
        Self {
            followers: Arc::new(DashMap::new()),
            capacity: capacity.max(1),
            subscribed: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// One follower's subscription; the last follower of an order to leave removes its channel.
struct Follow {
    receiver: Option<broadcast::Receiver<StatusChange>>,
    order: OrderId,
    followers: Weak<DashMap<OrderId, broadcast::Sender<StatusChange>>>,
}

impl Drop for Follow {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Some(followers) = self.followers.upgrade() {
            followers.remove_if(&self.order, |_, sender| sender.receiver_count() == 0);
        }
    }
}

#[async_trait]
impl StatusFeed for EmbeddedStatusFeed {
    async fn publish(&self, view: &OrderView) -> Result<(), StoreError> {
        // No follower is not an error: most orders are polled, not followed.
        let idle = match self.followers.get(&view.order_id) {
            None => return Ok(()),
            Some(sender) => sender.send(StatusChange::of(view)).is_err(),
        };
        if idle {
            self.followers
                .remove_if(&view.order_id, |_, sender| sender.receiver_count() == 0);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        order: OrderId,
    ) -> Result<BoxStream<'static, StatusChange>, StoreError> {
        if self.subscribed.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Orders whose followers left and that never changed again.
            self.followers
                .retain(|_, sender| sender.receiver_count() > 0);
        }
        let receiver = self
            .followers
            .entry(order)
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        let follow = Follow {
            receiver: Some(receiver),
            order,
            followers: Arc::downgrade(&self.followers),
        };
        let updates = stream::unfold(follow, |mut follow| async move {
            let receiver = follow.receiver.as_mut()?;
            loop {
                match receiver.recv().await {
                    Ok(change) => return Some((change, follow)),
                    // Skipped messages are fine: followers re-read the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(updates.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_orders_followers_hear_of_it_and_idle_channels_go() {
        let feed = EmbeddedStatusFeed::new(4);
        let view = |id| OrderView {
            order_id: id,
            customer_id: "c".into(),
            status: orderflow_domain::OrderStatus::Accepted,
            lines: vec![],
            totals: None,
            shipment: None,
            notification: None,
            coupon_codes: vec![],
            rejection: None,
            payment: None,
            cancellation: None,
            refunds: vec![],
            timeline: vec![],
        };
        let (a, b) = (OrderId::new(), OrderId::new());
        let mut follows_a = feed.subscribe(a).await.expect("subscribes");
        let follows_b = feed.subscribe(b).await.expect("subscribes");
        feed.publish(&view(a)).await.expect("publishes");
        assert_eq!(follows_a.next().await.map(|c| c.order_id), Some(a));
        drop(follows_b);
        feed.publish(&view(b)).await.expect("publishes");
        assert!(
            !feed.followers.contains_key(&b),
            "dropped once nobody follows"
        );
        assert!(feed.followers.contains_key(&a));
    }
}
