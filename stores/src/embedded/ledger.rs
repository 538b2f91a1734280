//! The embedded [`StockLedger`]: levels and reservations in memory, every change made durable
//! through the engine before the caller hears of it.
//!
//! A change is applied to memory under one lock and queued to the engine's FIFO writer before
//! the lock is released, so the disk sees changes in the order memory did; the call returns
//! only once its change is on disk.

use super::{now_ms, open_read};
use crate::{ReserveOutcome, Shortage, StockLedger, StockLevel, StoreError};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_embedded::Engine;
use orderflow_embedded::redb::{ReadableTable, TableDefinition};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

const STOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("stock_levels");
const RESERVATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stock_reservations");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum HoldState {
    Held,
    Released,
    Committed,
    /// The first answer was a shortage; nothing is held.
    Refused,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hold {
    lines: Vec<(String, u64)>,
    state: HoldState,
    outcome: ReserveOutcome,
    expires_at_ms: i64,
}

#[derive(Default)]
struct State {
    levels: BTreeMap<String, StockLevel>,
    holds: HashMap<OrderId, Hold>,
}

/// The embedded stock ledger.
#[derive(Clone)]
pub struct EmbeddedLedger {
    engine: Engine,
    state: Arc<Mutex<State>>,
}

/// Rows to write for one change.
struct Change {
    levels: Vec<StockLevel>,
    hold: Option<(OrderId, Hold)>,
}

impl EmbeddedLedger {
    /// Loads the ledger from the engine.
    pub fn open(engine: Engine) -> Result<Self, StoreError> {
        let state = Self::load(&engine)?;
        Ok(Self {
            engine,
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn load(engine: &Engine) -> Result<State, StoreError> {
        let rows = engine.read(|txn| {
            let mut levels = Vec::new();
            if let Some(t) = open_read(txn, STOCK)? {
                for row in t.iter()? {
                    let (_, v) = row?;
                    levels.push(v.value().to_vec());
                }
            }
            let mut holds = Vec::new();
            if let Some(t) = open_read(txn, RESERVATIONS)? {
                for row in t.iter()? {
                    let (k, v) = row?;
                    holds.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            Ok((levels, holds))
        })?;
        let mut state = State::default();
        for bytes in rows.0 {
            let level: StockLevel =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            state.levels.insert(level.sku.clone(), level);
        }
        for (key, bytes) in rows.1 {
            let id = uuid_from(&key)?;
            let hold: Hold =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            state.holds.insert(id, hold);
        }
        Ok(state)
    }

    /// Queues the change's rows; call with the state lock held, await after releasing it.
    fn persist(
        &self,
        change: Change,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let write = self.engine.submit(move |txn| {
            let mut stock = txn.open_table(STOCK)?;
            for level in &change.levels {
                let bytes = serde_json::to_vec(level)
                    .map_err(|e| orderflow_embedded::redb::Error::Corrupted(e.to_string()))?;
                stock.insert(level.sku.as_str(), bytes.as_slice())?;
            }
            if let Some((id, hold)) = &change.hold {
                let mut holds = txn.open_table(RESERVATIONS)?;
                let bytes = serde_json::to_vec(hold)
                    .map_err(|e| orderflow_embedded::redb::Error::Corrupted(e.to_string()))?;
                holds.insert(id.as_bytes().as_slice(), bytes.as_slice())?;
            }
            Ok(())
        });
        let state = Arc::clone(&self.state);
        let engine = self.engine.clone();
        async move {
            match write.await {
                Ok(()) => Ok(()),
                Err(e) => {
                    // Memory ran ahead of a write that failed: go back to what is on disk.
                    tracing::error!(error = %e, "Stock ledger write failed; reloading from disk");
                    if let Ok(reloaded) = Self::load(&engine) {
                        *state.lock() = reloaded;
                    }
                    Err(e.into())
                }
            }
        }
    }

    /// Moves a held order's units from `reserved` to `available` or `committed`.
    async fn settle(&self, order: OrderId, to: HoldState) -> Result<bool, StoreError> {
        let pending = {
            let mut state = self.state.lock();
            let State { levels, holds } = &mut *state;
            let Some(hold) = holds.get_mut(&order) else {
                return Ok(false);
            };
            match hold.state {
                s if s == to => return Ok(true),
                HoldState::Held => {}
                _ => return Ok(false),
            }
            let mut touched = Vec::with_capacity(hold.lines.len());
            for (sku, qty) in &hold.lines {
                if let Some(level) = levels.get_mut(sku) {
                    level.reserved = level.reserved.saturating_sub(*qty);
                    match to {
                        HoldState::Released => level.available += qty,
                        _ => level.committed += qty,
                    }
                    touched.push(level.clone());
                }
            }
            hold.state = to;
            self.persist(Change {
                levels: touched,
                hold: Some((order, hold.clone())),
            })
        };
        pending.await?;
        Ok(true)
    }
}

fn uuid_from(key: &[u8]) -> Result<OrderId, StoreError> {
    let bytes: [u8; 16] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("reservation key is not 16 bytes".into()))?;
    Ok(OrderId(uuid::Uuid::from_bytes(bytes)))
}

#[async_trait]
impl StockLedger for EmbeddedLedger {
    async fn seed(&self, items: &[(String, u64)]) -> Result<usize, StoreError> {
        let (count, pending) = {
            let mut state = self.state.lock();
            let mut created = Vec::new();
            for (sku, stock) in items {
                if !state.levels.contains_key(sku) {
                    let level = StockLevel {
                        sku: sku.clone(),
                        initial: *stock,
                        available: *stock,
                        reserved: 0,
                        committed: 0,
                    };
                    state.levels.insert(sku.clone(), level.clone());
                    created.push(level);
                }
            }
            (
                created.len(),
                self.persist(Change {
                    levels: created,
                    hold: None,
                }),
            )
        };
        pending.await?;
        Ok(count)
    }

    async fn reserve(
        &self,
        order: OrderId,
        lines: &[(String, u32)],
        ttl: Duration,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
        for (sku, qty) in lines {
            *wanted.entry(sku.as_str()).or_default() += u64::from(*qty);
        }
        let (outcome, pending) = {
            let mut state = self.state.lock();
            if let Some(hold) = state.holds.get(&order) {
                return Ok(hold.outcome.clone());
            }
            let shortages: Vec<Shortage> = wanted
                .iter()
                .filter_map(|(sku, qty)| {
                    let available = state.levels.get(*sku).map_or(0, |l| l.available);
                    (available < *qty).then(|| Shortage {
                        sku: (*sku).to_owned(),
                        requested: *qty,
                        available,
                    })
                })
                .collect();
            let expires_at_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
            let lines: Vec<(String, u64)> =
                wanted.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect();
            let (outcome, hold_state, touched) = if shortages.is_empty() {
                let mut touched = Vec::with_capacity(wanted.len());
                for (sku, qty) in &wanted {
                    if let Some(level) = state.levels.get_mut(*sku) {
                        level.available -= qty;
                        level.reserved += qty;
                        touched.push(level.clone());
                    }
                }
                (ReserveOutcome::Reserved, HoldState::Held, touched)
            } else {
                (
                    ReserveOutcome::Short(shortages),
                    HoldState::Refused,
                    Vec::new(),
                )
            };
            let hold = Hold {
                lines,
                state: hold_state,
                outcome: outcome.clone(),
                expires_at_ms,
            };
            state.holds.insert(order, hold.clone());
            (
                outcome,
                self.persist(Change {
                    levels: touched,
                    hold: Some((order, hold)),
                }),
            )
        };
        pending.await?;
        Ok(outcome)
    }

    async fn release(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(order, HoldState::Released).await
    }

    async fn commit(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(order, HoldState::Committed).await
    }

    async fn level(&self, sku: &str) -> Result<Option<StockLevel>, StoreError> {
        Ok(self.state.lock().levels.get(sku).cloned())
    }

    async fn levels(&self) -> Result<Vec<StockLevel>, StoreError> {
        Ok(self.state.lock().levels.values().cloned().collect())
    }

    async fn set_available(&self, sku: &str, available: u64) -> Result<StockLevel, StoreError> {
        let (level, pending) = {
            let mut state = self.state.lock();
            let level = state
                .levels
                .entry(sku.to_owned())
                .or_insert_with(|| StockLevel {
                    sku: sku.to_owned(),
                    initial: 0,
                    available: 0,
                    reserved: 0,
                    committed: 0,
                });
            level.initial = level.initial - level.available + available;
            level.available = available;
            let level = level.clone();
            (
                level.clone(),
                self.persist(Change {
                    levels: vec![level],
                    hold: None,
                }),
            )
        };
        pending.await?;
        Ok(level)
    }
}
