//! The embedded [`RefundLedger`]: one row per order, changed by one write transaction at a time
//! on the engine's writer thread, so the check against the capture and the count are atomic.

use super::open_read;
use crate::{RefundAnswer, RefundClaim, RefundEntry, RefundLedger, StoreError};
use async_trait::async_trait;
use orderflow_domain::{Money, OrderId};
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{self, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const REFUNDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("refunds");

/// One order's refunds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Row {
    /// Minor units of the refunds not failed.
    total: i64,
    entries: Vec<Stored>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    key: String,
    refund_id: String,
    amount: Money,
    reason: String,
    #[serde(default)]
    failed: bool,
}

impl Stored {
    fn entry(&self) -> RefundEntry {
        RefundEntry {
            refund_id: self.refund_id.clone(),
            amount: self.amount,
            reason: self.reason.clone(),
        }
    }
}

fn corrupt(e: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(format!("refunds row: {e}"))
}

/// The embedded refund ledger.
#[derive(Clone)]
pub struct EmbeddedRefundLedger {
    engine: Engine,
}

impl EmbeddedRefundLedger {
    /// A ledger on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Reads, changes and writes one order's row in one transaction; `change` answers.
    async fn change<T: Send + 'static>(
        &self,
        order: OrderId,
        change: impl Fn(&mut Row) -> (T, bool) + Send + 'static,
    ) -> Result<T, StoreError> {
        Ok(self
            .engine
            .submit(move |txn| {
                let mut table = txn.open_table(REFUNDS)?;
                let key = order.as_bytes().to_vec();
                let mut row: Row = match table.get(key.as_slice())? {
                    Some(bytes) => serde_json::from_slice(bytes.value()).map_err(corrupt)?,
                    None => Row::default(),
                };
                let (answer, write) = change(&mut row);
                if write {
                    let bytes = serde_json::to_vec(&row).map_err(corrupt)?;
                    table.insert(key.as_slice(), bytes.as_slice())?;
                }
                Ok(answer)
            })
            .await?)
    }
}

#[async_trait]
impl RefundLedger for EmbeddedRefundLedger {
    async fn request(
        &self,
        order: OrderId,
        claim: RefundClaim,
    ) -> Result<RefundAnswer, StoreError> {
        self.change(order, move |row| {
            if let Some(known) = row.entries.iter().find(|e| e.key == claim.key) {
                return (RefundAnswer::Repeat(known.entry()), false);
            }
            let currency = claim.captured.currency;
            let refunded = Money::new(row.total, currency);
            let minor = match claim.amount {
                Some(amount) => amount.minor,
                None if claim.captured.minor > row.total => claim.captured.minor - row.total,
                None => return (RefundAnswer::Nothing, false),
            };
            if row.total.saturating_add(minor) > claim.captured.minor {
                return (RefundAnswer::Exceeds { refunded }, false);
            }
            let stored = Stored {
                key: claim.key.clone(),
                refund_id: claim.refund_id.clone(),
                amount: Money::new(minor, currency),
                reason: claim.reason.clone(),
                failed: false,
            };
            let entry = stored.entry();
            row.total += minor;
            row.entries.push(stored);
            (RefundAnswer::Accepted(entry), true)
        })
        .await
    }

    async fn fail(&self, order: OrderId, refund_id: &str) -> Result<bool, StoreError> {
        let refund_id = refund_id.to_owned();
        self.change(order, move |row| {
            match row
                .entries
                .iter_mut()
                .find(|e| e.refund_id == refund_id && !e.failed)
            {
                Some(entry) => {
                    entry.failed = true;
                    row.total -= entry.amount.minor;
                    (true, true)
                }
                None => (false, false),
            }
        })
        .await
    }

    async fn totals(&self) -> Result<Vec<(OrderId, i64)>, StoreError> {
        let rows = self.engine.read(|txn| {
            let mut out = Vec::new();
            if let Some(t) = open_read(txn, REFUNDS)? {
                for row in t.iter()? {
                    let (k, v) = row?;
                    out.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            Ok(out)
        })?;
        rows.into_iter()
            .map(|(key, bytes)| {
                let id: [u8; 16] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("refunds key is not 16 bytes".into()))?;
                let row: Row = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::decode("stored JSON", e))?;
                Ok((OrderId(uuid::Uuid::from_bytes(id)), row.total))
            })
            .collect()
    }
}
