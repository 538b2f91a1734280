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

/// Order views in Redis, each kept `view_ttl` after its last change. A view only replaces an
/// older one (fewer timeline entries), so late writers never move an order backwards.
#[derive(Clone)]
pub struct RedisOrderCache {
    hot: RedisHot,
}

impl RedisOrderCache {
    /// Views kept on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    fn key(&self, id: OrderId) -> String {
        format!("view:{id}")
    }

    /// Stores `view` unless a newer one is there.
    pub async fn put(&self, view: &OrderView) -> Result<(), StoreError> {
        let json = serde_json::to_string(view).map_err(|e| StoreError::decode("stored JSON", e))?;
        let _: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::ViewPut,
                vec![self.key(view.order_id)],
                vec![
                    view.timeline.len().to_string(),
                    json,
                    ms(self.hot.config().view_ttl).to_string(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Drops the cached views of `ids`.
    pub async fn forget(&self, ids: Vec<OrderId>) -> Result<(), StoreError> {
        // One key per command: views of different orders live in different cluster slots.
        let deletes = futures::future::join_all(ids.iter().map(|id| async move {
            let _: i64 = self.hot.client().del(self.key(*id)).await?;
            Ok::<(), Error>(())
        }))
        .await;
        deletes
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map_err(redis_error)?;
        Ok(())
    }

    /// The cached view, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let json: Option<String> = self
            .hot
            .client()
            .hget(self.key(id), "view")
            .await
            .map_err(redis_error)?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::decode("stored JSON", e)))
            .transpose()
    }
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
        }
    }

    /// How many orders' views wait for the next flush to be cached.
    pub fn unflushed(&self) -> usize {
        self.pending.lock().views.len()
    }
}

#[async_trait]
impl OrderStore for CachedOrderStore {
    async fn apply(&self, events: Vec<OrderEvent>) -> Result<Vec<OrderView>, StoreError> {
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
            self.hot.forget(fresh.clone()).await?;
            self.pending.lock().dropped.extend(fresh);
        }
        let changed = self.durable.apply(events).await?;
        let mut pending = self.pending.lock();
        for view in &changed {
            match pending.views.get(&view.order_id) {
                Some(held) if held.timeline.len() >= view.timeline.len() => {}
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
        // One call per order, all in flight together (they leave in one write per connection).
        let puts = futures::future::join_all(views.iter().map(|view| self.hot.put(view))).await;
        let mut pending = self.pending.lock();
        if let Some(Err(e)) = puts.into_iter().find(Result::is_err) {
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
