//! The embedded [`PaymentJournal`].

use super::open_read;
use crate::{PaymentJournal, StoreError};
use async_trait::async_trait;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{ReadableTable, TableDefinition};

const PAYMENTS: TableDefinition<&str, &str> = TableDefinition::new("payment_journal");

/// The embedded payment journal.
#[derive(Clone)]
pub struct EmbeddedPaymentJournal {
    engine: Engine,
}

impl EmbeddedPaymentJournal {
    /// A journal on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl PaymentJournal for EmbeddedPaymentJournal {
    async fn record_once(&self, key: &str, outcome: &str) -> Result<String, StoreError> {
        let (key, outcome) = (key.to_owned(), outcome.to_owned());
        let standing = self
            .engine
            .submit(move |txn| {
                let mut t = txn.open_table(PAYMENTS)?;
                if let Some(earlier) = t.get(key.as_str())?.map(|v| v.value().to_owned()) {
                    return Ok(earlier);
                }
                t.insert(key.as_str(), outcome.as_str())?;
                Ok(outcome.clone())
            })
            .await?;
        Ok(standing)
    }

    async fn outcome(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.engine.read(|txn| {
            Ok(match open_read(txn, PAYMENTS)? {
                Some(t) => t.get(key)?.map(|v| v.value().to_owned()),
                None => None,
            })
        })?)
    }

    async fn entries(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.engine.read(|txn| {
            let mut out = Vec::new();
            if let Some(t) = open_read(txn, PAYMENTS)? {
                for row in t.iter()? {
                    let (k, v) = row?;
                    out.push((k.value().to_owned(), v.value().to_owned()));
                }
            }
            Ok(out)
        })?)
    }
}
