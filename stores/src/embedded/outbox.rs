//! The embedded [`Outbox`].

use super::open_read;
use crate::{Outbox, StoreError};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

/// `(order id, kind)` → payload.
const OUTBOX: TableDefinition<(&[u8], &str), &[u8]> = TableDefinition::new("outbox");

/// The embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    engine: Engine,
}

impl EmbeddedOutbox {
    /// An outbox on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl Outbox for EmbeddedOutbox {
    async fn enqueue(
        &self,
        order: OrderId,
        kind: &str,
        payload: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let kind = kind.to_owned();
        let fresh = self
            .engine
            .submit(move |txn| {
                let mut t = txn.open_table(OUTBOX)?;
                let key = (order.as_bytes().as_slice(), kind.as_str());
                if t.get(key)?.is_some() {
                    return Ok(false);
                }
                t.insert(key, payload.as_slice())?;
                Ok(true)
            })
            .await?;
        Ok(fresh)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.engine.read(|txn| {
            Ok(match open_read(txn, OUTBOX)? {
                Some(t) => t.len()?,
                None => 0,
            })
        })?)
    }
}
