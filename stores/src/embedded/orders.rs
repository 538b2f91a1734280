//! The embedded [`OrderStore`]: one row per order in the engine, with the views of orders in
//! flight held in memory in front of it.
//!
//! An order's status changes several times within a fraction of a second. Folding each event
//! into memory and writing the views of a flush interval in one transaction writes each order
//! once or twice instead of once per status, and readers see every change at once. The
//! projector commits its position on the log only after a flush, so what memory held when a
//! crash came is rebuilt from the log. A written view stays in memory until its order is
//! terminal (or idle for [`IDLE`]), so its next status does not read it back from disk.

use super::open_read;
use crate::{OrderStore, Page, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::TableDefinition;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

const ORDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("order_views");
/// `customer length (u16, big-endian) | customer | order id` → nothing: each customer's orders
/// in id order, which for UUIDv7 is time order.
const BY_CUSTOMER: TableDefinition<&[u8], ()> = TableDefinition::new("order_views_by_customer");

/// Most views in memory; beyond it `apply` refuses (the projector then holds its records) until
/// a flush gets through.
const MAX_PENDING: usize = 200_000;
/// A written view of an order that has not changed for this long leaves memory.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

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

/// A stored view retention removes: its row's key and its customer-index key.
type Doomed = (Vec<u8>, Vec<u8>);

/// A view from its stored row (compressed, or plain JSON from before).
fn decode_view(row: &[u8]) -> Result<OrderView, StoreError> {
    let json =
        super::packed::unpack(row).map_err(|e| StoreError::decode("stored order view", e))?;
    serde_json::from_slice(&json).map_err(|e| StoreError::decode("stored JSON", e))
}

/// The fields of a stored view that retention reads: decoding only these skips the rest of
/// the view's JSON without building it.
#[derive(serde::Deserialize)]
struct Settling {
    customer_id: String,
    status: orderflow_domain::OrderStatus,
    #[serde(default)]
    refunds: Vec<SettlingRefund>,
}

#[derive(serde::Deserialize)]
struct SettlingRefund {
    status: orderflow_domain::RefundStatus,
}

impl Settling {
    /// As [`OrderView::is_settled`]: terminal, and no refund still pending.
    fn settled(&self) -> bool {
        self.status.is_terminal() && self.refunds.iter().all(|r| r.status.is_final())
    }
}

/// A view in memory.
struct Pending {
    view: OrderView,
    /// Bumped by every change.
    version: u64,
    /// The version on disk: the view is waiting to be written while they differ.
    written: u64,
    /// Not on disk at all yet: its customer index entry is still to be written.
    new: bool,
    /// Last change.
    touched: std::time::Instant,
}

impl Pending {
    fn dirty(&self) -> bool {
        self.version != self.written
    }
}

/// The embedded order store.
#[derive(Clone)]
pub struct EmbeddedOrderStore {
    engine: Engine,
    pending: Arc<Mutex<HashMap<OrderId, Pending>>>,
}

impl EmbeddedOrderStore {
    /// An order store on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// How many orders have a durable view (for audits and tests).
    pub fn count(&self) -> Result<u64, StoreError> {
        super::rows(&self.engine, ORDERS)
    }

    /// Removes the stored views of settled orders (terminal, no refund pending) accepted before
    /// `before`, at most `limit` in one call; returns how many went. Order ids are UUIDv7, so
    /// the rows are cut by key. Orders with a view in memory are left for a later call.
    pub async fn purge_settled(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let end = super::first_id_at(before.timestamp_millis());
        let in_memory: HashSet<OrderId> = self.pending.lock().keys().copied().collect();
        let found = super::read_blocking(&self.engine, move |engine| {
            Self::settled_before(engine, &end, &in_memory, limit)
        })
        .await?;
        if found.is_empty() {
            return Ok(0);
        }
        let removed = found.len();
        self.engine
            .submit(move |txn| {
                let mut views = txn.open_table(ORDERS)?;
                let mut by_customer = txn.open_table(BY_CUSTOMER)?;
                for (id, listed) in &found {
                    views.remove(id.as_slice())?;
                    by_customer.remove(listed.as_slice())?;
                }
                Ok(())
            })
            .await?;
        Ok(removed)
    }

    /// Up to `limit` settled views stored under ids below `end` and not in memory: each row's
    /// key and its customer-index key.
    fn settled_before(
        engine: &Engine,
        end: &[u8; 16],
        in_memory: &HashSet<OrderId>,
        limit: usize,
    ) -> Result<Vec<Doomed>, StoreError> {
        Ok(engine.read(|txn| {
            let mut out = Vec::new();
            let Some(t) = open_read(txn, ORDERS)? else {
                return Ok(out);
            };
            for row in t.range(..end.as_slice())? {
                let (key, value) = row?;
                let Ok(bytes) = <[u8; 16]>::try_from(key.value()) else {
                    continue;
                };
                let id = OrderId(uuid::Uuid::from_bytes(bytes));
                // A view that does not decode is left where it is, for someone to look at.
                let Some(view) = super::packed::unpack(value.value())
                    .ok()
                    .and_then(|row| serde_json::from_slice::<Settling>(&row).ok())
                else {
                    continue;
                };
                if view.settled() && !in_memory.contains(&id) {
                    out.push((bytes.to_vec(), customer_key(&view.customer_id, Some(id))));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })?)
    }

    /// The durable views of `ids`, where they exist.
    fn read_durable(&self, ids: &[OrderId]) -> Result<Vec<(OrderId, OrderView)>, StoreError> {
        let rows = self.engine.read(|txn| {
            let mut out = Vec::new();
            if let Some(t) = open_read(txn, ORDERS)? {
                for id in ids {
                    if let Some(v) = t.get(id.as_bytes().as_slice())? {
                        out.push((*id, v.value().to_vec()));
                    }
                }
            }
            Ok(out)
        })?;
        rows.into_iter()
            .map(|(id, bytes)| decode_view(&bytes).map(|view| (id, view)))
            .collect()
    }
}

#[async_trait]
impl OrderStore for EmbeddedOrderStore {
    async fn apply(&self, events: &[OrderEvent]) -> Result<Vec<OrderView>, StoreError> {
        // Memory full of views waiting to be written (the runner's flushes have been failing):
        // write them now rather than wait for the next commit, which this batch holds up.
        let full = self.pending.lock().len() >= MAX_PENDING;
        if full {
            self.flush().await?;
            let left = self.pending.lock().len();
            if left >= MAX_PENDING {
                return Err(StoreError::Unavailable(format!(
                    "{left} order views are in memory waiting to be written; holding new events \
                     until a flush succeeds"
                )));
            }
        }
        let missing: Vec<OrderId> = {
            let pending = self.pending.lock();
            let mut missing: Vec<OrderId> = events
                .iter()
                .map(|e| e.order.id)
                .filter(|id| !pending.contains_key(id))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        let mut durable: HashMap<OrderId, OrderView> = if missing.is_empty() {
            HashMap::new()
        } else {
            self.read_durable(&missing)?.into_iter().collect()
        };
        let mut pending = self.pending.lock();
        let mut changed: Vec<OrderId> = Vec::new();
        let now = std::time::Instant::now();
        for event in events {
            let id = event.order.id;
            // Another apply may have brought the view into memory meanwhile: folding into that
            // copy is right, since folding is order-insensitive and idempotent.
            let (entry, created) = match pending.entry(id) {
                std::collections::hash_map::Entry::Occupied(e) => (e.into_mut(), false),
                std::collections::hash_map::Entry::Vacant(e) => {
                    // Read from disk above; or in memory then and evicted by a flush since (only
                    // written views are evicted), so read now.
                    let stored = match durable.remove(&id) {
                        Some(view) => Some(view),
                        None if missing.binary_search(&id).is_ok() => None,
                        None => self.read_durable(&[id])?.pop().map(|(_, view)| view),
                    };
                    match stored {
                        Some(view) => (
                            e.insert(Pending {
                                view,
                                version: 0,
                                written: 0,
                                new: false,
                                touched: now,
                            }),
                            false,
                        ),
                        None => (
                            e.insert(Pending {
                                view: OrderView::from_event(event),
                                version: 1,
                                written: 0,
                                new: true,
                                touched: now,
                            }),
                            true,
                        ),
                    }
                }
            };
            if created || entry.view.apply(event) {
                if !created {
                    entry.version += 1;
                }
                entry.touched = now;
                if !changed.contains(&id) {
                    changed.push(id);
                }
            }
        }
        let views = changed
            .iter()
            .filter_map(|id| pending.get(id).map(|p| p.view.clone()))
            .collect();
        Ok(views)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let batch: Vec<(OrderId, OrderView, u64, bool)> = {
            let pending = self.pending.lock();
            pending
                .iter()
                .filter(|(_, p)| p.dirty())
                .map(|(id, p)| (*id, p.view.clone(), p.version, p.new))
                .collect()
        };
        if !batch.is_empty() {
            let written: Vec<(OrderId, u64)> =
                batch.iter().map(|(id, _, v, _)| (*id, *v)).collect();
            // Encoded here, not inside the transaction: the writer thread is shared by every
            // store, and a view's JSON needs nothing from it.
            let rows = batch
                .iter()
                .map(|(id, view, _, new)| {
                    let listed = new.then(|| customer_key(&view.customer_id, Some(*id)));
                    serde_json::to_vec(view)
                        .map(|bytes| (*id, super::packed::pack(bytes), listed))
                        .map_err(|e| StoreError::Corrupt(format!("order view: {e}")))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            self.engine
                .submit(move |txn| {
                    let mut t = txn.open_table(ORDERS)?;
                    let mut by_customer = txn.open_table(BY_CUSTOMER)?;
                    for (id, bytes, listed) in &rows {
                        if let Some(key) = listed {
                            by_customer.insert(key.as_slice(), ())?;
                        }
                        t.insert(id.as_bytes().as_slice(), bytes.as_slice())?;
                    }
                    Ok(())
                })
                .await?;
            let mut pending = self.pending.lock();
            for (id, version) in written {
                if let Some(p) = pending.get_mut(&id) {
                    p.written = p.written.max(version);
                    p.new = false;
                }
            }
        }
        // Terminal views change no more, and idle ones rarely: they are read from disk now,
        // as is every written view when memory is full.
        let mut pending = self.pending.lock();
        let full = pending.len() >= MAX_PENDING / 2;
        pending.retain(|_, p| {
            p.dirty() || !(full || p.view.status.is_terminal() || p.touched.elapsed() >= IDLE)
        });
        // A few thousand views is the steady state at thousands of orders a second; room for
        // twice what is left, so a table that varies between flushes is not rebuilt at each.
        let left = pending.len();
        super::shrink_after_backlog(&mut pending, 2 * left, 16_384);
        metrics::gauge!("orderflow_order_views_in_memory").set(pending.len() as f64);
        Ok(())
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        if let Some(p) = self.pending.lock().get(&id) {
            return Ok(Some(p.view.clone()));
        }
        Ok(self.read_durable(&[id])?.pop().map(|(_, view)| view))
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
        let mut orders = rows
            .iter()
            .map(|b| decode_view(b))
            .collect::<Result<Vec<OrderView>, _>>()?;
        let id_of = |bytes: &[u8]| {
            <[u8; 16]>::try_from(bytes)
                .map(|b| OrderId(uuid::Uuid::from_bytes(b)))
                .map_err(|_| StoreError::Corrupt("order index key".into()))
        };
        // The cursor is the last id scanned, so a missing view never ends the paging early.
        let mut next = match (more, last) {
            (true, Some(id)) => Some(id_of(&id)?),
            _ => None,
        };
        // Memory holds fresher copies of views in flight, and views not in the index yet.
        let unwritten: Vec<OrderView> = {
            let pending = self.pending.lock();
            for view in orders.iter_mut() {
                if let Some(p) = pending.get(&view.order_id) {
                    view.clone_from(&p.view);
                }
            }
            // A flush that just wrote a view may not have cleared its `new` mark yet: the index
            // found it already.
            pending
                .values()
                .filter(|p| p.new && p.view.customer_id == customer)
                .filter(|p| !orders.iter().any(|v| v.order_id == p.view.order_id))
                .filter(|p| after.is_none_or(|a| p.view.order_id.0 < a.0))
                .filter(|p| next.is_none_or(|n| p.view.order_id.0 > n.0))
                .map(|p| p.view.clone())
                .collect()
        };
        if !unwritten.is_empty() {
            orders.extend(unwritten);
            orders.sort_by_key(|v| std::cmp::Reverse(v.order_id.0));
            if orders.len() > limit {
                orders.truncate(limit);
                next = orders.last().map(|v| v.order_id);
            }
        }
        Ok(Page { orders, next })
    }
}
