//! The embedded [`OrderStore`]: one row per order, folded inside the writer's transaction so
//! concurrent projector batches never lose each other's updates.

use super::open_read;
use crate::{OrderStore, Page, StoreError};
use async_trait::async_trait;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use orderflow_embedded::Engine;
use orderflow_embedded::redb::{self, ReadableTable, TableDefinition};

const ORDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("order_views");
/// `customer length (u16, big-endian) | customer | order id` → nothing: each customer's orders
/// in id order, which for UUIDv7 is time order.
const BY_CUSTOMER: TableDefinition<&[u8], ()> = TableDefinition::new("order_views_by_customer");

/// The index key of one order of one customer; with `None`, the customer's prefix.
fn customer_key(customer: &str, order: Option<OrderId>) -> Vec<u8> {
    let name = customer.as_bytes();
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + name.len() + 16);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&name[..usize::from(len)]);
    if let Some(order) = order {
        key.extend_from_slice(order.as_bytes());
    }
    key
}

fn corrupt(e: serde_json::Error) -> redb::Error {
    redb::Error::Corrupted(format!("order view: {e}"))
}

/// The embedded order store.
#[derive(Clone)]
pub struct EmbeddedOrderStore {
    engine: Engine,
}

impl EmbeddedOrderStore {
    /// An order store on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// How many orders have a view (for audits and tests).
    pub fn count(&self) -> Result<u64, StoreError> {
        use orderflow_embedded::redb::ReadableTableMetadata;
        Ok(self.engine.read(|txn| {
            Ok(match open_read(txn, ORDERS)? {
                Some(t) => t.len()?,
                None => 0,
            })
        })?)
    }
}

#[async_trait]
impl OrderStore for EmbeddedOrderStore {
    async fn apply(&self, events: Vec<OrderEvent>) -> Result<Vec<OrderView>, StoreError> {
        let changed = self
            .engine
            .submit(move |txn| {
                let mut t = txn.open_table(ORDERS)?;
                let mut by_customer = txn.open_table(BY_CUSTOMER)?;
                let mut changed = Vec::new();
                for event in &events {
                    let key = event.order.id.as_bytes().as_slice();
                    let current = match t.get(key)? {
                        Some(v) => {
                            Some(serde_json::from_slice::<OrderView>(v.value()).map_err(corrupt)?)
                        }
                        None => None,
                    };
                    let view = match current {
                        Some(mut view) => {
                            if !view.apply(event) {
                                continue;
                            }
                            view
                        }
                        None => {
                            let view = OrderView::from_event(event);
                            by_customer.insert(
                                customer_key(&view.customer_id, Some(view.order_id)).as_slice(),
                                (),
                            )?;
                            view
                        }
                    };
                    let bytes = serde_json::to_vec(&view).map_err(corrupt)?;
                    t.insert(key, bytes.as_slice())?;
                    changed.push(view);
                }
                Ok(changed)
            })
            .await?;
        Ok(changed)
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let bytes = self.engine.read(|txn| {
            Ok(match open_read(txn, ORDERS)? {
                Some(t) => t.get(id.as_bytes().as_slice())?.map(|v| v.value().to_vec()),
                None => None,
            })
        })?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn list_for_customer(
        &self,
        customer: &str,
        limit: usize,
        after: Option<OrderId>,
    ) -> Result<Page, StoreError> {
        let limit = limit.max(1);
        let prefix = customer_key(customer, None);
        let start = customer_key(customer, Some(OrderId(uuid::Uuid::nil())));
        let end = match after {
            Some(after) => customer_key(customer, Some(after)),
            None => customer_key(customer, Some(OrderId(uuid::Uuid::max()))),
        };
        let rows = self.engine.read(|txn| {
            let (Some(index), Some(views)) =
                (open_read(txn, BY_CUSTOMER)?, open_read(txn, ORDERS)?)
            else {
                return Ok((Vec::new(), None, false));
            };
            let mut rows = Vec::with_capacity(limit + 1);
            let mut scanned = 0;
            let mut last = None;
            // Newest first: walk the customer's ids backwards from the cursor (exclusive).
            let range = if after.is_some() {
                index.range(start.as_slice()..end.as_slice())?
            } else {
                index.range(start.as_slice()..=end.as_slice())?
            };
            for row in range.rev() {
                let (key, _) = row?;
                let key = key.value();
                let Some(id) = key.strip_prefix(prefix.as_slice()) else {
                    break;
                };
                scanned += 1;
                if scanned > limit {
                    // One id more than asked says another page follows.
                    return Ok((rows, last, true));
                }
                last = Some(id.to_vec());
                if let Some(view) = views.get(id)? {
                    rows.push(view.value().to_vec());
                }
            }
            Ok((rows, last, false))
        })?;
        let (rows, last, more) = rows;
        let orders = rows
            .iter()
            .map(|b| serde_json::from_slice(b).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect::<Result<Vec<OrderView>, _>>()?;
        // The cursor is the last id scanned, so a missing view never ends the paging early.
        let next = match (more, last) {
            (true, Some(id)) => Some(OrderId(uuid::Uuid::from_bytes(
                <[u8; 16]>::try_from(id.as_slice())
                    .map_err(|_| StoreError::Corrupt("order index key".into()))?,
            ))),
            _ => None,
        };
        Ok(Page { orders, next })
    }
}
