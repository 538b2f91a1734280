//! The embedded [`OrderStore`]: one row per order, folded inside the writer's transaction so
//! concurrent projector batches never lose each other's updates.

use super::open_read;
use crate::{OrderStore, StoreError};
use async_trait::async_trait;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use orderflow_embedded::Engine;
use orderflow_embedded::redb::{self, ReadableTable, TableDefinition};

const ORDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("order_views");

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
                        None => OrderView::from_event(event),
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
}
