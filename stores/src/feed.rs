//! The [`StatusFeed`] trait: live status changes for WebSocket followers.

use crate::StoreError;
use async_trait::async_trait;
use futures::stream::BoxStream;
use orderflow_domain::{OrderId, OrderStatus, OrderView};

/// What a feed announces: which order changed, to what status, and how many statuses its view
/// holds now. Followers read the view itself from the [`OrderStore`](crate::OrderStore).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusChange {
    /// The order that changed.
    pub order_id: OrderId,
    /// Its status now.
    pub status: OrderStatus,
    /// Its view's revision now ([`OrderView::revision`]: a view with a higher one is newer).
    pub version: usize,
}

impl StatusChange {
    /// The change `view` announces.
    pub fn of(view: &OrderView) -> Self {
        Self {
            order_id: view.order_id,
            status: view.status,
            version: view.revision(),
        }
    }
}

/// Announces changed order views to whoever follows an order. A feed is a notification
/// channel, not a record: followers read the [`OrderStore`](crate::OrderStore) for the truth and
/// use the feed to learn when to look again, so a missed message delays an update, never loses it.
#[async_trait]
pub trait StatusFeed: Send + Sync + 'static {
    /// Announces a view that changed.
    async fn publish(&self, view: &OrderView) -> Result<(), StoreError>;

    /// The changes of one order from now on.
    async fn subscribe(
        &self,
        order: OrderId,
    ) -> Result<BoxStream<'static, StatusChange>, StoreError>;

    /// Whether changes are announced after the projector's flush, once per order, rather than
    /// at each change: true where followers are in other processes and read the views the
    /// flush caches (announcing earlier would send them to a view that is not there yet).
    fn announce_after_flush(&self) -> bool {
        false
    }
}
