//! The embedded [`StockLedger`]: levels and reservations in memory, every change made durable
//! through the engine before the caller hears of it.
//!
//! A change is applied to memory under one lock and queued to the engine's FIFO writer before
//! the lock is released, so the disk sees changes in the order memory did; the call returns
//! only once its change is on disk.
//!
//! Settled holds (released, committed, refused) leave memory once they are durable and older
//! than a minute ([`EmbeddedLedger::evict_settled`], run by the binary), so memory follows the orders in
//! flight, not the day's total. A repeat for an evicted order is answered from disk: order ids
//! are UUIDv7, so only an order older than the eviction horizon needs that look-up.

mod calls;

use super::{now_ms, open_read};
use crate::{PinOutcome, ReserveOutcome, Shortage, StockLedger, StockLevel, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{ReadableTable, TableDefinition};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

const STOCK: TableDefinition<&str, &[u8]> = TableDefinition::new("stock_levels");
const RESERVATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("stock_reservations");
/// `"seq"` → the ledger's write sequence.
const META: TableDefinition<&str, u64> = TableDefinition::new("stock_meta");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum HoldState {
    Held,
    Released,
    Committed,
    /// The first answer was a shortage; nothing is held.
    Refused,
    /// The hold lapsed before the order was charged; its stock went back on the shelf.
    Expired,
    /// The order was cancelled; any stock it held went back on the shelf.
    Cancelled,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hold {
    lines: Vec<(String, u64)>,
    state: HoldState,
    outcome: ReserveOutcome,
    expires_at_ms: i64,
    /// Set just before the charge: a pinned hold never expires.
    #[serde(default)]
    pinned: bool,
    /// Set once an expired hold's rejection is on the log.
    #[serde(default)]
    announced: bool,
}

impl Hold {
    /// Whether this hold must stay in memory whatever its age: it is live, or its expiry still
    /// has to be announced.
    fn pending(&self) -> bool {
        self.state == HoldState::Held || (self.state == HoldState::Expired && !self.announced)
    }
}

/// A boxed durable write, awaited after the state lock is released.
type Write = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// What settling a hold needs.
enum Settle {
    /// Nothing to write; the answer.
    Done(bool),
    /// Await this write, then answer true.
    Write(Write),
}

/// A hold in memory, with how far its changes are on disk.
struct Slot {
    hold: Hold,
    /// Bumped by every change.
    version: u64,
    /// The highest version known to be durable.
    durable: u64,
}

#[derive(Default)]
struct State {
    levels: BTreeMap<String, StockLevel>,
    holds: HashMap<OrderId, Slot>,
    /// Orders whose id is older than this (ms since the epoch) may have a hold on disk only.
    evicted_before_ms: i64,
    /// Set when a write failed: every call is refused until the process restarts.
    failed: bool,
    /// Sequence number of the last change queued.
    seq: u64,
}

impl State {
    /// The (before, after) sequence pair for the next queued change.
    fn next_seq(&mut self) -> (u64, u64) {
        self.seq += 1;
        (self.seq - 1, self.seq)
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.failed {
            Err(StoreError::Unavailable(
                "the stock ledger stopped after a storage failure; restart orderflow".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// A repeat that arrives while the first call's change is still being written must not answer
/// before that change is durable.
fn not_yet_durable() -> StoreError {
    StoreError::Unavailable("this order's reservation is still being written; retry".into())
}

/// The embedded stock ledger.
#[derive(Clone)]
pub struct EmbeddedLedger {
    engine: Engine,
    state: Arc<Mutex<State>>,
}

/// Rows to write for one change, and the hold version they make durable.
struct Change {
    levels: Vec<StockLevel>,
    hold: Option<(OrderId, Hold, u64)>,
    /// The ledger's write sequence before and after this change: a write applies only on top
    /// of its predecessor, so after one failed write every later one fails too and the disk
    /// stays a consistent prefix of what memory did.
    seq: (u64, u64),
}

/// Milliseconds since the epoch at which an order id was minted (0 if it is not a UUIDv7).
fn minted_ms(order: OrderId) -> i64 {
    order.0.get_timestamp().map_or(0, |ts| {
        let (secs, nanos) = ts.to_unix();
        i64::try_from(secs).unwrap_or(i64::MAX / 2_000) * 1000 + i64::from(nanos / 1_000_000)
    })
}

impl EmbeddedLedger {
    /// Most holds kept in memory once settled ones are evicted by count (live holds always
    /// stay): at 7,000 orders a second the minute-long horizon alone kept 400,000.
    pub const MOST_IN_MEMORY: usize = 100_000;

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
                serde_json::from_slice(&bytes).map_err(|e| StoreError::decode("stored JSON", e))?;
            state.levels.insert(level.sku.clone(), level);
        }
        for (key, bytes) in rows.1 {
            let id = uuid_from(&key)?;
            let hold: Hold =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::decode("stored JSON", e))?;
            if hold.pending() {
                state.holds.insert(
                    id,
                    Slot {
                        hold,
                        version: 0,
                        durable: 0,
                    },
                );
            }
        }
        // Settled holds stay on disk; any order minted before now may have one there.
        state.evicted_before_ms = now_ms();
        state.seq = engine.read(|txn| {
            Ok(match open_read(txn, META)? {
                Some(t) => t.get("seq")?.map_or(0, |v| v.value()),
                None => 0,
            })
        })?;
        Ok(state)
    }

    /// Queues the change's rows; call with the state lock held, await after releasing it.
    fn persist(
        &self,
        change: Change,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let written = change.hold.as_ref().map(|(id, _, v)| (*id, *v));
        let shared = Arc::clone(&self.state);
        // The bookkeeping after the write runs on the writer thread, as part of the write: a
        // caller that is cancelled mid-await must not leave a durable change marked as pending
        // forever.
        let settled = move |outcome: &Result<(), orderflow_storage::kv::EngineError>| match outcome
        {
            Ok(()) => {
                if let Some((id, version)) = written
                    && let Some(slot) = shared.lock().holds.get_mut(&id)
                {
                    slot.durable = slot.durable.max(version);
                }
            }
            Err(e) => {
                // Memory ran ahead of a write that failed, and later changes may already be
                // queued on top of it: no reload can be trusted while the process runs. Stop
                // serving; a restart rebuilds memory from disk, which is consistent.
                tracing::error!(error = %e, "Stock ledger write failed; the ledger stops until restart");
                shared.lock().failed = true;
            }
        };
        let write = self.engine.submit_then(
            move |txn| {
                let mut meta = txn.open_table(META)?;
                let stored = meta.get("seq")?.map_or(0, |v| v.value());
                if stored != change.seq.0 {
                    return Err(orderflow_storage::kv::redb::Error::Corrupted(format!(
                        "stock ledger write {} out of sequence (disk is at {stored}): an earlier write failed",
                        change.seq.1
                    )));
                }
                meta.insert("seq", change.seq.1)?;
                let mut stock = txn.open_table(STOCK)?;
                for level in &change.levels {
                    let bytes = serde_json::to_vec(level)
                        .map_err(|e| orderflow_storage::kv::redb::Error::Corrupted(e.to_string()))?;
                    stock.insert(level.sku.as_str(), bytes.as_slice())?;
                }
                if let Some((id, hold, _)) = &change.hold {
                    let mut holds = txn.open_table(RESERVATIONS)?;
                    let bytes = serde_json::to_vec(hold)
                        .map_err(|e| orderflow_storage::kv::redb::Error::Corrupted(e.to_string()))?;
                    holds.insert(id.as_bytes().as_slice(), bytes.as_slice())?;
                }
                Ok(())
            },
            settled,
        );
        let state = Arc::clone(&self.state);
        async move {
            write.await.map_err(|e| {
                // A write the engine refused outright never reached `settled`.
                state.lock().failed = true;
                StoreError::from(e)
            })
        }
    }

    /// Makes sure an order's hold is in memory if it exists at all: one minted before the
    /// eviction horizon may be on disk only. Call with the state lock held.
    fn load_evicted(&self, state: &mut State, order: OrderId) -> Result<(), StoreError> {
        if state.holds.contains_key(&order) || minted_ms(order) >= state.evicted_before_ms {
            return Ok(());
        }
        let bytes = self.engine.read(|txn| {
            Ok(match open_read(txn, RESERVATIONS)? {
                Some(t) => t
                    .get(order.as_bytes().as_slice())?
                    .map(|v| v.value().to_vec()),
                None => None,
            })
        })?;
        if let Some(bytes) = bytes {
            let hold: Hold =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::decode("stored JSON", e))?;
            state.holds.insert(
                order,
                Slot {
                    hold,
                    version: 0,
                    durable: 0,
                },
            );
        }
        Ok(())
    }

    /// Moves a held order's units from `reserved` to `available` (released, expired) or
    /// `committed`.
    async fn settle(&self, order: OrderId, to: HoldState) -> Result<bool, StoreError> {
        let step = {
            let mut state = self.state.lock();
            state.usable()?;
            self.load_evicted(&mut state, order)?;
            self.settle_in(&mut state, order, to)?
        };
        match step {
            Settle::Done(answer) => Ok(answer),
            Settle::Write(write) => {
                write.await?;
                Ok(true)
            }
        }
    }

    /// The body of [`settle`](Self::settle); call with the state lock held.
    fn settle_in(
        &self,
        state: &mut State,
        order: OrderId,
        to: HoldState,
    ) -> Result<Settle, StoreError> {
        let State {
            levels, holds, seq, ..
        } = state;
        let Some(slot) = holds.get_mut(&order) else {
            return Ok(Settle::Done(false));
        };
        // An expired or cancelled hold counts as released: its stock is back either way.
        let done = slot.hold.state == to
            || (to == HoldState::Released
                && matches!(slot.hold.state, HoldState::Expired | HoldState::Cancelled));
        match slot.hold.state {
            _ if done && slot.durable < slot.version => return Err(not_yet_durable()),
            _ if done => return Ok(Settle::Done(true)),
            HoldState::Held => {}
            _ => return Ok(Settle::Done(false)),
        }
        let mut touched = Vec::with_capacity(slot.hold.lines.len());
        for (sku, qty) in &slot.hold.lines {
            if let Some(level) = levels.get_mut(sku) {
                level.reserved = level.reserved.saturating_sub(*qty);
                match to {
                    HoldState::Committed => level.committed += qty,
                    _ => level.available += qty,
                }
                touched.push(level.clone());
            }
        }
        slot.hold.state = to;
        slot.version += 1;
        *seq += 1;
        Ok(Settle::Write(Box::pin(self.persist(Change {
            levels: touched,
            hold: Some((order, slot.hold.clone(), slot.version)),
            seq: (*seq - 1, *seq),
        }))))
    }

    /// Records an order's first hold (with the levels it moved) in memory and queues its
    /// write; call with the state lock held, await after releasing it.
    fn first_hold(
        &self,
        state: &mut State,
        order: OrderId,
        hold: Hold,
        levels: Vec<StockLevel>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        state.holds.insert(
            order,
            Slot {
                hold: hold.clone(),
                version: 1,
                durable: 0,
            },
        );
        let seq = state.next_seq();
        self.persist(Change {
            levels,
            hold: Some((order, hold, 1)),
            seq,
        })
    }

    /// Writes the first record of an order that has no hold: a cancel or a refusal before
    /// any reservation. Call with the state lock held.
    fn mark_unreserved(&self, state: &mut State, order: OrderId, to: HoldState) -> Write {
        let outcome = match to {
            HoldState::Cancelled => ReserveOutcome::Cancelled,
            _ => ReserveOutcome::Short(Vec::new()),
        };
        let hold = Hold {
            lines: Vec::new(),
            state: to,
            outcome,
            expires_at_ms: 0,
            pinned: false,
            announced: false,
        };
        Box::pin(self.first_hold(state, order, hold, Vec::new()))
    }

    /// Rewrites one hold's record after `change` edits it (no level moves); call with the
    /// state lock held. `None` if the order has no hold in memory.
    fn touch_hold(
        &self,
        state: &mut State,
        order: OrderId,
        change: impl FnOnce(&mut Hold),
    ) -> Option<Write> {
        if !state.holds.contains_key(&order) {
            return None;
        }
        // The sequence moves only when a write is certainly queued: a gap would stop the ledger.
        let (before, after) = state.next_seq();
        let slot = state.holds.get_mut(&order)?;
        change(&mut slot.hold);
        slot.version += 1;
        Some(Box::pin(self.persist(Change {
            levels: Vec::new(),
            hold: Some((order, slot.hold.clone(), slot.version)),
            seq: (before, after),
        })))
    }

    /// Drops from memory the settled holds that are durable and whose order was minted more
    /// than `min_age` ago; returns how many. They stay on disk for repeats.
    pub fn evict_settled(&self, min_age: Duration) -> usize {
        let horizon = now_ms() - i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX / 2);
        let mut state = self.state.lock();
        let before = state.holds.len();
        state.holds.retain(|id, slot| {
            slot.hold.pending() || slot.durable < slot.version || minted_ms(*id) >= horizon
        });
        state.evicted_before_ms = state.evicted_before_ms.max(horizon);
        before - state.holds.len()
    }

    /// Drops settled durable holds from memory, oldest order first, until at most `most` holds
    /// are left (live ones always stay); returns how many went. Orders minted up to the newest
    /// one dropped are looked up on disk from then on.
    pub fn evict_beyond(&self, most: usize) -> usize {
        let mut state = self.state.lock();
        let over = state.holds.len().saturating_sub(most);
        if over == 0 {
            return 0;
        }
        let mut settled: Vec<(i64, OrderId)> = state
            .holds
            .iter()
            .filter(|(_, slot)| !slot.hold.pending() && slot.durable >= slot.version)
            .map(|(id, _)| (minted_ms(*id), *id))
            .collect();
        // The `over` oldest, without sorting them all under the lock.
        if over < settled.len() {
            settled.select_nth_unstable(over - 1);
            settled.truncate(over);
        }
        let Some(newest) = settled.iter().map(|(minted, _)| *minted).max() else {
            return 0;
        };
        // Everything minted up to `newest` may now be on disk only; holds in memory minted
        // before it stay valid (memory is still read first).
        for (_, id) in &settled {
            state.holds.remove(id);
        }
        state.evicted_before_ms = state.evicted_before_ms.max(newest + 1);
        settled.len()
    }

    /// Removes from disk the settled holds (released, committed, refused, expired and announced)
    /// of orders minted before `before`, at most `limit` in one call; returns how many went.
    /// Cancelled holds stay: a cancelled order replayed any time later must still find itself
    /// cancelled (as on Redis). Holds in memory are left alone.
    pub async fn purge_settled(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let end = super::first_id_at(before.timestamp_millis());
        let purgeable = |bytes: &[u8]| {
            serde_json::from_slice::<Hold>(bytes)
                .is_ok_and(|hold| !hold.pending() && hold.state != HoldState::Cancelled)
        };
        let found: Vec<[u8; 16]> = super::read_blocking(&self.engine, move |engine| {
            Ok(engine.read(|txn| {
                let mut out = Vec::new();
                let Some(t) = open_read(txn, RESERVATIONS)? else {
                    return Ok(out);
                };
                for row in t.range(..end.as_slice())? {
                    let (key, value) = row?;
                    if let Ok(id) = <[u8; 16]>::try_from(key.value())
                        && purgeable(value.value())
                    {
                        out.push(id);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
                Ok(out)
            })?)
        })
        .await?;
        let found: Vec<[u8; 16]> = {
            let state = self.state.lock();
            found
                .into_iter()
                .filter(|id| {
                    !state
                        .holds
                        .contains_key(&OrderId(uuid::Uuid::from_bytes(*id)))
                })
                .collect()
        };
        if found.is_empty() {
            return Ok(0);
        }
        let removed = self
            .engine
            .submit(move |txn| {
                let mut holds = txn.open_table(RESERVATIONS)?;
                let mut removed = 0;
                for id in &found {
                    // Read again in the write: a call may have changed the hold since.
                    let settled = holds
                        .get(id.as_slice())?
                        .is_some_and(|row| purgeable(row.value()));
                    if settled {
                        holds.remove(id.as_slice())?;
                        removed += 1;
                    }
                }
                Ok(removed)
            })
            .await?;
        Ok(removed)
    }

    /// How many holds are on disk (for audits and tests).
    pub fn holds_on_disk(&self) -> Result<u64, StoreError> {
        super::rows(&self.engine, RESERVATIONS)
    }

    /// How many holds are in memory.
    pub fn holds_in_memory(&self) -> usize {
        self.state.lock().holds.len()
    }

    /// Evicts settled holds older than `min_age`, then the oldest settled ones beyond `most`,
    /// and reports how many stay in memory; the supervisor calls it every few seconds.
    pub fn evict_and_report(&self, min_age: Duration, most: usize) {
        let evicted = self.evict_settled(min_age) + self.evict_beyond(most);
        let held = {
            let mut state = self.state.lock();
            super::shrink_after_backlog(&mut state.holds, most, most);
            state.holds.len()
        };
        metrics::gauge!("orderflow_ledger_holds_in_memory").set(held as f64);
        tracing::debug!(evicted, held, "Evicted settled stock holds from memory");
    }
}

fn uuid_from(key: &[u8]) -> Result<OrderId, StoreError> {
    let bytes: [u8; 16] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("reservation key is not 16 bytes".into()))?;
    Ok(OrderId(uuid::Uuid::from_bytes(bytes)))
}
