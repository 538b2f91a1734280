//! The [`OrderStore`] trait: the projected view of every order.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::{OrderEvent, OrderId, OrderView};

/// One page of a customer's orders, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The orders on this page.
    pub orders: Vec<OrderView>,
    /// Where the next page starts (the last order of this one), if there may be more.
    pub next: Option<OrderId>,
}

/// Where the projector keeps order views and the API reads them.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Folds events into their orders' views atomically per order (see
    /// [`OrderView::apply`]); returns the views that changed. They are readable at once; a
    /// store may keep them in memory until [`flush`](Self::flush) makes them durable.
    async fn apply(&self, events: &[OrderEvent]) -> Result<Vec<OrderView>, StoreError>;

    /// Makes every view applied so far durable. The projector calls it before it commits its
    /// position on the log, so a crash never leaves a view behind the events it has read.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// One order's view.
    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError>;

    /// Up to `limit` of `customer`'s orders, newest first (by id: UUIDv7 ids order by time),
    /// starting after `after` (a page's `next`), or with the newest.
    async fn list_for_customer(
        &self,
        customer: &str,
        limit: usize,
        after: Option<OrderId>,
    ) -> Result<Page, StoreError>;
}
