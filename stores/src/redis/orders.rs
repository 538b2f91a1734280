//! The hot order view: each order's latest view in Redis with a TTL, written by the projector
//! after the durable store, read by the API before it.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{OrderStore, Page, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Order views in Redis, each kept `view_ttl` after its last change. A view only replaces an
/// older one (fewer timeline entries), so late writers never move an order backwards.
///
/// Each view is one string, `VERSION|JSON` under `hotview:ORDER`. Writes and drops go out as one
/// call per hash slot: on a single server one call for the whole flush, on a cluster one per
/// slot the orders land in.
#[derive(Clone)]
pub struct RedisOrderCache {
    hot: RedisHot,
}

/// The most keys one call carries, so no script holds Redis for long.
const KEYS_PER_CALL: usize = 256;

impl RedisOrderCache {
    /// Views kept on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    fn key(id: OrderId) -> String {
        format!("hotview:{id}")
    }

    /// Groups `items` by their key's hash slot (all in one group off a cluster), at most
    /// `KEYS_PER_CALL` each.
    fn by_slot<T>(&self, items: Vec<(String, T)>) -> Vec<Vec<(String, T)>> {
        let mut groups: Vec<Vec<(String, T)>> = Vec::new();
        if self.hot.client().is_clustered() {
            let mut slots: HashMap<u16, Vec<(String, T)>> = HashMap::new();
            for (key, item) in items {
                slots
                    .entry(fred::util::redis_keyslot(key.as_bytes()))
                    .or_default()
                    .push((key, item));
            }
            for group in slots.into_values() {
                groups.extend(chunks(group));
            }
        } else {
            groups.extend(chunks(items));
        }
        groups
    }

    /// Stores each of `views` unless a newer one is there.
    pub async fn put_all(&self, views: &[OrderView]) -> Result<(), StoreError> {
        let mut items = Vec::with_capacity(views.len());
        for view in views {
            let json =
                serde_json::to_string(view).map_err(|e| StoreError::decode("stored JSON", e))?;
            let version = view.revision().to_string();
            let value = format!("{version}|{json}");
            items.push((Self::key(view.order_id), (version, value)));
        }
        let ttl = ms(self.hot.config().view_ttl).to_string();
        // All in flight together: they leave in one write per connection.
        let calls = self.by_slot(items).into_iter().map(|group| {
            let mut keys = Vec::with_capacity(group.len());
            let mut args = Vec::with_capacity(1 + 2 * group.len());
            args.push(ttl.clone());
            for (key, (version, value)) in group {
                keys.push(key);
                args.push(version);
                args.push(value);
            }
            self.hot
                .scripts()
                .call::<i64>(ScriptName::ViewPut, keys, args)
        });
        for answer in futures::future::join_all(calls).await {
            answer?;
        }
        Ok(())
    }

    /// Drops the cached views of `ids`.
    pub async fn forget(&self, ids: Vec<OrderId>) -> Result<(), StoreError> {
        let items = ids.into_iter().map(|id| (Self::key(id), ())).collect();
        let deletes = self.by_slot(items).into_iter().map(|group| async move {
            let keys: Vec<String> = group.into_iter().map(|(key, ())| key).collect();
            let _: i64 = self.hot.client().del(keys).await?;
            Ok::<(), Error>(())
        });
        for answer in futures::future::join_all(deletes).await {
            answer.map_err(redis_error)?;
        }
        Ok(())
    }

    /// The cached view, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let value: Option<String> = self
            .hot
            .client()
            .get(Self::key(id))
            .await
            .map_err(redis_error)?;
        let Some(value) = value else {
            return Ok(None);
        };
        let Some((_version, json)) = value.split_once('|') else {
            return Err(StoreError::Corrupt(format!(
                "hot view of {id} has no version: {:?}",
                value.chars().take(40).collect::<String>()
            )));
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| StoreError::decode("stored JSON", e))
    }
}

/// `items` in runs of at most `KEYS_PER_CALL`.
fn chunks<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut items = items.into_iter().peekable();
    let mut runs = Vec::new();
    while items.peek().is_some() {
        runs.push(items.by_ref().take(KEYS_PER_CALL).collect());
    }
    runs
}

/// A durable [`OrderStore`] with the Redis hot view in front: reads try the cache, then the
/// durable store. A write first drops the cached views of the orders it touches (once per flush
/// window), then writes the durable store; [`flush`](OrderStore::flush) makes the durable
/// store durable, then caches each changed order's newest view once. Whatever fails or crashes
/// in between, the cache never holds a view older than the durable one: at worst it holds
/// none, and reads go to the durable store.
pub struct CachedOrderStore {
    hot: RedisOrderCache,
    durable: Arc<dyn OrderStore>,
    pending: parking_lot::Mutex<Pending>,
    drops: Arc<parking_lot::Mutex<Drops>>,
}

/// Drops of cached views asked for at once — the projector applies a batch's records
/// concurrently, one call each — gathered so they go out as one `DEL`.
#[derive(Default)]
struct Drops {
    queued: Vec<OrderId>,
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Whether a caller is sending the queue; the others wait for its answer.
    sending: bool,
}

/// Held by the caller sending the drops; if it is cancelled, the callers it had not answered
/// yet hear an error (and retry) instead of waiting for ever.
struct Sender {
    drops: Arc<parking_lot::Mutex<Drops>>,
    /// False once the sender finished normally.
    armed: bool,
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.armed {
            let mut drops = self.drops.lock();
            drops.sending = false;
            drops.queued.clear();
            drops.waiters.clear();
        }
    }
}

/// What the next flush owes the cache.
#[derive(Default)]
struct Pending {
    /// The newest view of each order changed since the last flush, not cached yet.
    views: HashMap<OrderId, OrderView>,
    /// Orders whose cached view is already dropped in this window (no second `DEL`).
    dropped: HashSet<OrderId>,
}

impl CachedOrderStore {
    /// `durable` with `hot` in front.
    pub fn new(hot: RedisOrderCache, durable: Arc<dyn OrderStore>) -> Self {
        Self {
            hot,
            durable,
            pending: parking_lot::Mutex::new(Pending::default()),
            drops: Arc::default(),
        }
    }

    /// Drops the cached views of `ids`, together with whatever other calls ask for meanwhile.
    async fn drop_cached(&self, ids: Vec<OrderId>) -> Result<(), StoreError> {
        let (answer, heard) = oneshot::channel();
        let lead = {
            let mut drops = self.drops.lock();
            drops.queued.extend(ids);
            drops.waiters.push(answer);
            !std::mem::replace(&mut drops.sending, true)
        };
        if lead {
            let mut sender = Sender {
                drops: Arc::clone(&self.drops),
                armed: true,
            };
            // Once, so the other records of the batch, polled after this one, queue theirs.
            tokio::task::yield_now().await;
            loop {
                let (ids, waiters) = {
                    let mut drops = sender.drops.lock();
                    if drops.waiters.is_empty() {
                        // Under the same lock: a caller arriving now leads the next send.
                        drops.sending = false;
                        drop(drops);
                        sender.armed = false;
                        break;
                    }
                    (
                        std::mem::take(&mut drops.queued),
                        std::mem::take(&mut drops.waiters),
                    )
                };
                let result = self.hot.forget(ids).await;
                for waiter in waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
        heard.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the batched drop of cached views was cancelled".into(),
            ))
        })
    }

    /// How many orders' views wait for the next flush to be cached.
    pub fn unflushed(&self) -> usize {
        self.pending.lock().views.len()
    }
}

#[async_trait]
impl OrderStore for CachedOrderStore {
    async fn apply(&self, events: &[OrderEvent]) -> Result<Vec<OrderView>, StoreError> {
        let fresh: Vec<OrderId> = {
            let pending = self.pending.lock();
            let ids: HashSet<OrderId> = events.iter().map(|e| e.order.id).collect();
            ids.into_iter()
                .filter(|id| !pending.dropped.contains(id))
                .collect()
        };
        if !fresh.is_empty() {
            // While Redis is away this fails and the projector holds its records: the durable
            // store must not run ahead of a cache it cannot correct.
            self.drop_cached(fresh.clone()).await?;
            self.pending.lock().dropped.extend(fresh);
        }
        let changed = self.durable.apply(events).await?;
        let mut pending = self.pending.lock();
        for view in &changed {
            match pending.views.get(&view.order_id) {
                Some(held) if held.revision() >= view.revision() => {}
                _ => {
                    pending.views.insert(view.order_id, view.clone());
                }
            }
        }
        Ok(changed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // The durable write first: a view is cached only once the durable store has it.
        self.durable.flush().await?;
        let (mut views, unchanged): (Vec<OrderView>, Vec<OrderId>) = {
            let mut pending = self.pending.lock();
            let views: Vec<OrderView> = pending.views.drain().map(|(_, v)| v).collect();
            let changed: HashSet<OrderId> = views.iter().map(|v| v.order_id).collect();
            let unchanged = pending
                .dropped
                .iter()
                .filter(|id| !changed.contains(id))
                .copied()
                .collect();
            (views, unchanged)
        };
        // An order dropped by a change that changed nothing (a replay after a restart) gets
        // its durable view cached again, or it would be read from the durable store for good.
        for id in unchanged {
            if let Some(view) = self.durable.get(id).await? {
                views.push(view);
            }
        }
        if views.is_empty() {
            self.pending.lock().dropped.clear();
            return Ok(());
        }
        let put = self.hot.put_all(&views).await;
        let mut pending = self.pending.lock();
        if let Err(e) = put {
            // Each view is owed again. Its order's next change must drop the cached view
            // again: a put that timed out may still land, and must not outlive a newer
            // durable view.
            for view in views {
                pending.dropped.remove(&view.order_id);
                pending.views.entry(view.order_id).or_insert(view);
            }
            return Err(e);
        }
        // The cache holds each order's newest view now (or, for an order dropped without a
        // change, none): a later change must drop it again.
        let Pending { views, dropped } = &mut *pending;
        dropped.retain(|id| views.contains_key(id));
        Ok(())
    }

    async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        match self.hot.get(id).await {
            Ok(Some(view)) => return Ok(Some(view)),
            Ok(None) => {}
            // The durable store still answers while Redis is away.
            Err(e) => {
                tracing::debug!(error = %e, order_id = %id, "Hot view unavailable; reading the durable store")
            }
        }
        self.durable.get(id).await
    }

    async fn list_for_customer(
        &self,
        customer: &str,
        limit: usize,
        after: Option<OrderId>,
    ) -> Result<Page, StoreError> {
        // History comes from the durable store's by-customer index.
        self.durable.list_for_customer(customer, limit, after).await
    }
}
