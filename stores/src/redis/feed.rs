//! The Redis [`StatusFeed`]: one pub/sub channel per order, so a process hears only about the
//! orders its WebSocket followers watch. A message is the change only (`STATUS|VERSION`), not
//! the view: followers read the view from the store.

use super::{RedisConfig, RedisHot, build, init, redis_error};
use crate::{StatusChange, StatusFeed, StoreError};
use async_trait::async_trait;
use dashmap::DashMap;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures::stream::{self, BoxStream, StreamExt};
use orderflow_domain::{OrderId, OrderStatus, OrderView};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast};

/// Status changes over Redis pub/sub, fanned out in-process to the followers of each order.
#[derive(Clone)]
pub struct RedisStatusFeed {
    hot: RedisHot,
    subscriber: SubscriberClient,
    followers: Arc<DashMap<OrderId, broadcast::Sender<StatusChange>>>,
    /// Serialises SUBSCRIBE and UNSUBSCRIBE, so a new follower is never unsubscribed by a
    /// clean-up of the previous one.
    changes: Arc<Mutex<()>>,
}

const CHANNEL: &str = "orderflow:status:";

/// The feed's two loops (hand messages to followers; unsubscribe from orders nobody follows),
/// for the caller to run — under its supervisor — until the feed is dropped.
pub type FeedTasks = futures::future::BoxFuture<'static, ()>;

impl RedisStatusFeed {
    /// Publishes through `hot` and listens on a subscriber connection of its own; the returned
    /// tasks must run for followers to hear anything.
    pub async fn connect(hot: RedisHot) -> Result<(Self, FeedTasks), StoreError> {
        let config: &RedisConfig = hot.config();
        let subscriber = build(config)?
            .build_subscriber_client()
            .map_err(redis_error)?;
        init(&subscriber, config).await?;
        // Re-subscribes to every channel after a reconnect.
        let _resubscribe = subscriber.manage_subscriptions();
        let feed = Self {
            hot,
            subscriber,
            followers: Arc::new(DashMap::new()),
            changes: Arc::new(Mutex::new(())),
        };
        // The tasks hold the followers weakly: they end once the feed is dropped.
        let tasks = futures::future::join(
            fan_out(feed.subscriber.clone(), Arc::downgrade(&feed.followers)),
            clean_up(
                feed.subscriber.clone(),
                Arc::clone(&feed.changes),
                Arc::downgrade(&feed.followers),
            ),
        );
        Ok((
            feed,
            Box::pin(async move {
                tasks.await;
            }),
        ))
    }
}

type Followers = DashMap<OrderId, broadcast::Sender<StatusChange>>;

/// Hands every message to the followers of its order.
async fn fan_out(subscriber: SubscriberClient, followers: Weak<Followers>) {
    let mut messages = subscriber.message_rx();
    loop {
        match messages.recv().await {
            Ok(message) => {
                let Some(followers) = followers.upgrade() else {
                    return;
                };
                let Some(id) = message
                    .channel
                    .strip_prefix(CHANNEL)
                    .and_then(|id| id.parse::<OrderId>().ok())
                else {
                    continue;
                };
                let Some(sender) = followers.get(&id) else {
                    continue;
                };
                match message
                    .value
                    .as_str()
                    .as_deref()
                    .and_then(|text| change_of(id, text))
                {
                    Some(change) => {
                        let _ = sender.send(change);
                    }
                    None => {
                        tracing::warn!(order_id = %id, "Ignoring an unreadable status message");
                    }
                }
            }
            // Missed messages are fine: followers re-read the store periodically.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The message `STATUS|VERSION` about `order`.
fn change_of(order: OrderId, text: &str) -> Option<StatusChange> {
    let (status, version) = text.split_once('|')?;
    Some(StatusChange {
        order_id: order,
        status: *OrderStatus::ALL.iter().find(|s| s.as_str() == status)?,
        version: version.parse().ok()?,
    })
}

/// Unsubscribes from orders nobody follows any more.
async fn clean_up(
    subscriber: SubscriberClient,
    changes: Arc<Mutex<()>>,
    followers: Weak<Followers>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(followers) = followers.upgrade() else {
            let _ = subscriber.quit().await;
            return;
        };
        let _guard = changes.lock().await;
        let mut idle = Vec::new();
        followers.retain(|id, sender| {
            let followed = sender.receiver_count() > 0;
            if !followed {
                idle.push(format!("{CHANNEL}{id}"));
            }
            followed
        });
        if !idle.is_empty()
            && let Err(e) = subscriber.unsubscribe(idle).await
        {
            tracing::warn!(error = %e, "Cannot unsubscribe from idle status channels");
        }
    }
}

#[async_trait]
impl StatusFeed for RedisStatusFeed {
    async fn publish(&self, view: &OrderView) -> Result<(), StoreError> {
        let change = StatusChange::of(view);
        let _: i64 = self
            .hot
            .client()
            .publish(
                format!("{CHANNEL}{}", view.order_id),
                format!("{}|{}", change.status.as_str(), change.version),
            )
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    fn announce_after_flush(&self) -> bool {
        true
    }

    async fn subscribe(
        &self,
        order: OrderId,
    ) -> Result<BoxStream<'static, StatusChange>, StoreError> {
        let receiver = {
            let _guard = self.changes.lock().await;
            let (receiver, new) = match self.followers.get(&order) {
                Some(sender) => (sender.subscribe(), false),
                None => {
                    let (sender, receiver) = broadcast::channel(64);
                    self.followers.insert(order, sender);
                    (receiver, true)
                }
            };
            if new && let Err(e) = self.subscriber.subscribe(format!("{CHANNEL}{order}")).await {
                // The next follower must try again, not find a channel that was never joined.
                self.followers.remove(&order);
                return Err(redis_error(e));
            }
            receiver
        };
        let updates = stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(change) => return Some((change, receiver)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(updates.boxed())
    }
}
