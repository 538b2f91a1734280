//! The embedded [`StatusFeed`]: an in-process broadcast channel.

use crate::{StatusChange, StatusFeed, StoreError};
use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use orderflow_domain::{OrderId, OrderView};
use tokio::sync::broadcast;

/// Status changes of this process, fanned out to its WebSocket followers.
#[derive(Clone)]
pub struct EmbeddedStatusFeed {
    sender: broadcast::Sender<StatusChange>,
}

impl EmbeddedStatusFeed {
    /// A feed that buffers up to `capacity` changes for a slow follower before it skips ahead.
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }
}

#[async_trait]
impl StatusFeed for EmbeddedStatusFeed {
    async fn publish(&self, view: &OrderView) -> Result<(), StoreError> {
        // No follower is not an error: most orders are polled, not followed.
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(StatusChange::of(view));
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        order: OrderId,
    ) -> Result<BoxStream<'static, StatusChange>, StoreError> {
        let receiver = self.sender.subscribe();
        let updates = stream::unfold(receiver, move |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(change) if change.order_id == order => return Some((change, receiver)),
                    Ok(_) => {}
                    // Skipped messages are fine: the follower re-reads the store periodically.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(updates.boxed())
    }
}
