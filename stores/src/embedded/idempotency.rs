//! The embedded [`IdempotencyStore`]: claims in the engine, expired ones treated as absent.
//! Beside the keys, an index by the moment each entry may go, so the purge reads only what
//! is due instead of every key a day of checkouts left.

use super::now_ms;
use crate::{Claim, IdempotencyStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{
    self, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency_keys");
/// `(the moment the entry may be purged, key)`: one row per key, kept with its entry.
const GONE_AT: TableDefinition<(i64, &str), ()> = TableDefinition::new("idempotency_gone_at");

/// How long a lapsed pending claim is kept, so a late retry still reuses its order id.
const LAPSED_KEEP_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    fingerprint: String,
    order_id: OrderId,
    complete: bool,
    expires_at_ms: i64,
}

impl Entry {
    /// When the entry may be purged: a completed key at the end of its TTL, a pending claim
    /// [`LAPSED_KEEP_MS`] after it lapsed.
    fn gone_at(&self) -> i64 {
        if self.complete {
            self.expires_at_ms
        } else {
            self.expires_at_ms.saturating_add(LAPSED_KEEP_MS)
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The keys and their purge index, open in one write.
struct Tables<'t> {
    keys: Table<'t, &'static str, &'static [u8]>,
    gone_at: Table<'t, (i64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            keys: txn.open_table(KEYS)?,
            gone_at: txn.open_table(GONE_AT)?,
        })
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, redb::Error> {
        decode(key, self.keys.get(key)?.as_ref().map(|v| v.value()))
    }

    /// Writes `entry` under `key` in place of `old` (what [`get`](Self::get) returned), moving
    /// its index row.
    fn put(&mut self, key: &str, old: Option<&Entry>, entry: &Entry) -> Result<(), redb::Error> {
        let bytes = serde_json::to_vec(entry)
            .map_err(|e| redb::Error::Corrupted(format!("idempotency entry: {e}")))?;
        if let Some(old) = old {
            self.gone_at.remove((old.gone_at(), key))?;
        }
        self.keys.insert(key, bytes.as_slice())?;
        self.gone_at.insert((entry.gone_at(), key), ())?;
        Ok(())
    }

    /// Indexes every key, for a database written before the index existed: each write keeps
    /// one index row per key, so fewer rows than keys means keys from before.
    fn index_all(&mut self) -> Result<(), redb::Error> {
        if self.gone_at.len()? >= self.keys.len()? {
            return Ok(());
        }
        let mut rows = Vec::new();
        for row in self.keys.iter()? {
            let (k, v) = row?;
            // An unreadable entry is indexed as due now: the purge then removes it.
            let at = serde_json::from_slice::<Entry>(v.value()).map_or(i64::MIN, |e| e.gone_at());
            rows.push((at, k.value().to_owned()));
        }
        for (at, key) in &rows {
            self.gone_at.insert((*at, key.as_str()), ())?;
        }
        tracing::info!(keys = rows.len(), "Indexed the idempotency keys by expiry");
        Ok(())
    }
}

fn decode(key: &str, bytes: Option<&[u8]>) -> Result<Option<Entry>, redb::Error> {
    match bytes {
        // An unreadable entry fails this request (503) rather than being taken for a free key,
        // which could give a request that is already on the log a second order. The engine
        // fails such a write alone, not the writes committed beside it.
        Some(v) => serde_json::from_slice(v)
            .map(Some)
            .map_err(|e| redb::Error::Corrupted(format!("idempotency entry {key:?}: {e}"))),
        None => Ok(None),
    }
}

/// The embedded idempotency store.
#[derive(Clone)]
pub struct EmbeddedIdempotency {
    engine: Engine,
    /// Whether keys written before the purge index existed have been indexed.
    indexed: Arc<AtomicBool>,
}

impl EmbeddedIdempotency {
    /// An idempotency store on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            indexed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Removes at most `limit` of the completed keys past their TTL and the pending claims
    /// lapsed for a day, as of `now`, the longest gone first; returns how many. Fewer than
    /// `limit` means none is left. Called periodically by the binary.
    pub async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let now = now.timestamp_millis();
        if !self.indexed.load(Ordering::Relaxed) {
            self.engine
                .submit(|txn| Tables::open(txn)?.index_all())
                .await?;
            self.indexed.store(true, Ordering::Relaxed);
        }
        let removed = self
            .engine
            .submit(move |txn| {
                let mut t = Tables::open(txn)?;
                let mut due = Vec::new();
                for row in t.gone_at.range((i64::MIN, "")..=(now, "\u{10FFFF}"))? {
                    if due.len() >= limit {
                        break;
                    }
                    let (index, _) = row?;
                    let (at, key) = index.value();
                    due.push((at, key.to_owned()));
                }
                for (at, key) in &due {
                    t.gone_at.remove((*at, key.as_str()))?;
                    // An unreadable entry goes too; one that is not due keeps (or gets back)
                    // its own index row.
                    match t.get(key).unwrap_or(None) {
                        Some(e) if e.gone_at() > now => {
                            t.gone_at.insert((e.gone_at(), key.as_str()), ())?;
                        }
                        _ => {
                            t.keys.remove(key.as_str())?;
                        }
                    }
                }
                Ok(due.len())
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
                let mut t = Tables::open(txn)?;
                let now = now_ms();
                let old = t.get(&key)?;
                let id = match &old {
                    Some(e)
                        if e.expires_at_ms > now
                            || (!e.complete && e.fingerprint != fingerprint) =>
                    {
                        return Ok(Claim::Existing {
                            fingerprint: e.fingerprint.clone(),
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
                t.put(&key, old.as_ref(), &entry)?;
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
                let mut t = Tables::open(txn)?;
                if let Some(old) = t.get(&key)?.filter(|e| e.order_id == order_id) {
                    let entry = Entry {
                        complete: true,
                        expires_at_ms: now_ms() + ms(ttl),
                        ..old.clone()
                    };
                    t.put(&key, Some(&old), &entry)?;
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
                let mut t = Tables::open(txn)?;
                if let Some(old) = t
                    .get(&key)?
                    .filter(|e| e.order_id == order_id && !e.complete)
                {
                    let entry = Entry {
                        expires_at_ms: now_ms(),
                        ..old.clone()
                    };
                    t.put(&key, Some(&old), &entry)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}
