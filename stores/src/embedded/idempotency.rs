//! The embedded [`IdempotencyStore`]: claims in the engine, expired ones treated as absent.

use super::{now_ms, open_read};
use crate::{Claim, IdempotencyStore, StoreError};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_embedded::Engine;
use orderflow_embedded::redb::{self, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");

#[derive(Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    order_id: OrderId,
    complete: bool,
    expires_at_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn corrupt(e: serde_json::Error) -> redb::Error {
    redb::Error::Corrupted(format!("idempotency entry: {e}"))
}

/// The embedded idempotency store.
#[derive(Clone)]
pub struct EmbeddedIdempotency {
    engine: Engine,
}

impl EmbeddedIdempotency {
    /// An idempotency store on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }

    /// Removes expired keys; returns how many. Called periodically by the binary.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let expired = self.engine.read(|txn| {
            let mut out = Vec::new();
            if let Some(t) = open_read(txn, KEYS)? {
                for row in t.iter()? {
                    let (k, v) = row?;
                    let entry: Entry = serde_json::from_slice(v.value()).map_err(corrupt)?;
                    if entry.expires_at_ms <= now {
                        out.push(k.value().to_owned());
                    }
                }
            }
            Ok(out)
        })?;
        let count = expired.len();
        self.engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                for key in &expired {
                    // Re-check: the key may have been claimed again since the scan.
                    let still_expired = match t.get(key.as_str())? {
                        Some(v) => {
                            serde_json::from_slice::<Entry>(v.value())
                                .map_err(corrupt)?
                                .expires_at_ms
                                <= now
                        }
                        None => false,
                    };
                    if still_expired {
                        t.remove(key.as_str())?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(count)
    }
}

#[async_trait]
impl IdempotencyStore for EmbeddedIdempotency {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        order_id: OrderId,
        pending_ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let key = key.to_owned();
        let fingerprint = fingerprint.to_owned();
        let claim = self
            .engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                let now = now_ms();
                let existing = match t.get(key.as_str())? {
                    Some(v) => {
                        let entry: Entry = serde_json::from_slice(v.value()).map_err(corrupt)?;
                        (entry.expires_at_ms > now).then_some(entry)
                    }
                    None => None,
                };
                if let Some(e) = existing {
                    return Ok(Claim::Existing {
                        fingerprint: e.fingerprint,
                        order_id: e.order_id,
                        complete: e.complete,
                    });
                }
                let entry = Entry {
                    fingerprint,
                    order_id,
                    complete: false,
                    expires_at_ms: now + ms(pending_ttl),
                };
                let bytes = serde_json::to_vec(&entry).map_err(corrupt)?;
                t.insert(key.as_str(), bytes.as_slice())?;
                Ok(Claim::Claimed)
            })
            .await?;
        Ok(claim)
    }

    async fn complete(&self, key: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                let entry = match t.get(key.as_str())? {
                    Some(v) => Some(serde_json::from_slice::<Entry>(v.value()).map_err(corrupt)?),
                    None => None,
                };
                if let Some(mut entry) = entry {
                    entry.complete = true;
                    entry.expires_at_ms = now_ms() + ms(ttl);
                    let bytes = serde_json::to_vec(&entry).map_err(corrupt)?;
                    t.insert(key.as_str(), bytes.as_slice())?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.engine
            .submit(move |txn| {
                txn.open_table(KEYS)?.remove(key.as_str())?;
                Ok(())
            })
            .await?;
        Ok(())
    }
}
