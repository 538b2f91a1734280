//! The [`OrderStore`] trait: the projected view of every order.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::{OrderEvent, OrderId, OrderView};

/// Where the projector keeps order views and the API reads them.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Folds events into their orders' views atomically per order (see
    /// [`OrderView::apply`]); returns the views that changed.
    async fn apply(&self, events: Vec<OrderEvent>) -> Result<Vec<OrderView>, StoreError>;

    /// One order's view.
    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError>;
}
