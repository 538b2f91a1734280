//! The embedded [`IdempotencyStore`]: claims in the engine, expired ones treated as absent.

use super::{now_ms, open_read};
use crate::{Claim, IdempotencyStore, StoreError};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{self, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");

/// How long a lapsed pending claim is kept, so a late retry still reuses its order id.
const LAPSED_KEEP_MS: i64 = 24 * 3600 * 1000;

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

fn get(t: &Table<&str, &[u8]>, key: &str) -> Result<Option<Entry>, redb::Error> {
    match t.get(key)? {
        // An unreadable entry fails this request (503) rather than being taken for a free key,
        // which could give a request that is already on the log a second order. The engine
        // fails such a write alone, not the writes committed beside it.
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| redb::Error::Corrupted(format!("idempotency entry {key:?}: {e}"))),
        None => Ok(None),
    }
}

fn put(t: &mut Table<&str, &[u8]>, key: &str, entry: &Entry) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(entry)
        .map_err(|e| redb::Error::Corrupted(format!("idempotency entry: {e}")))?;
    t.insert(key, bytes.as_slice())?;
    Ok(())
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

    /// Removes completed keys past their TTL and pending claims lapsed for a day; returns how
    /// many. Called periodically by the binary.
    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        let gone = |e: &Entry, now: i64| {
            if e.complete {
                e.expires_at_ms <= now
            } else {
                e.expires_at_ms.saturating_add(LAPSED_KEEP_MS) <= now
            }
        };
        let now = now_ms();
        let expired = self.engine.read(|txn| {
            let mut out = Vec::new();
            if let Some(t) = open_read(txn, KEYS)? {
                for row in t.iter()? {
                    let (k, v) = row?;
                    let stale =
                        serde_json::from_slice::<Entry>(v.value()).map_or(true, |e| gone(&e, now));
                    if stale {
                        out.push(k.value().to_owned());
                    }
                }
            }
            Ok(out)
        })?;
        let removed = self
            .engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                let mut removed = 0;
                for key in &expired {
                    // Re-check: the key may have been claimed again since the scan.
                    if get(&t, key).ok().flatten().is_some_and(|e| gone(&e, now)) {
                        t.remove(key.as_str())?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await?;
        Ok(removed)
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
                let id = match get(&t, &key)? {
                    Some(e)
                        if e.expires_at_ms > now
                            || (!e.complete && e.fingerprint != fingerprint) =>
                    {
                        return Ok(Claim::Existing {
                            fingerprint: e.fingerprint,
                            order_id: e.order_id,
                            complete: e.complete,
                        });
                    }
                    // A lapsed or abandoned claim of the same request: it may be on the log
                    // already, so the retry carries the same order id.
                    Some(e) if !e.complete => e.order_id,
                    _ => order_id,
                };
                let entry = Entry {
                    fingerprint: fingerprint.clone(),
                    order_id: id,
                    complete: false,
                    expires_at_ms: now + ms(pending_ttl),
                };
                put(&mut t, &key, &entry)?;
                Ok(Claim::Claimed { order_id: id })
            })
            .await?;
        Ok(claim)
    }

    async fn complete(
        &self,
        key: &str,
        order_id: OrderId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                if let Some(mut entry) = get(&t, &key)?.filter(|e| e.order_id == order_id) {
                    entry.complete = true;
                    entry.expires_at_ms = now_ms() + ms(ttl);
                    put(&mut t, &key, &entry)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    async fn abandon(&self, key: &str, order_id: OrderId) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.engine
            .submit(move |txn| {
                let mut t = txn.open_table(KEYS)?;
                if let Some(mut entry) =
                    get(&t, &key)?.filter(|e| e.order_id == order_id && !e.complete)
                {
                    entry.expires_at_ms = now_ms();
                    put(&mut t, &key, &entry)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}
