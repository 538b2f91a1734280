//! The hot order view: each order's latest view in Redis with a TTL, written by the projector
//! after the durable store, read by the API before it.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{OrderStore, Page, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use std::collections::HashSet;
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
/// durable store. A write first drops the cached views of the orders it touches, then writes
/// the durable store, then caches the views that changed. Whatever fails or crashes in between,
/// the cache never holds a view older than the durable one: at worst it holds none, and reads
/// go to the durable store.
pub struct CachedOrderStore {
    hot: RedisOrderCache,
    durable: Arc<dyn OrderStore>,
}

impl CachedOrderStore {
    /// `durable` with `hot` in front.
    pub fn new(hot: RedisOrderCache, durable: Arc<dyn OrderStore>) -> Self {
        Self { hot, durable }
    }
}

#[async_trait]
impl OrderStore for CachedOrderStore {
    async fn apply(&self, events: Vec<OrderEvent>) -> Result<Vec<OrderView>, StoreError> {
        let ids: HashSet<OrderId> = events.iter().map(|e| e.order.id).collect();
        // While Redis is away this fails and the projector holds its records: the durable
        // store must not run ahead of a cache it cannot correct.
        self.hot.forget(ids.into_iter().collect()).await?;
        let changed = self.durable.apply(events).await?;
        let puts = futures::future::join_all(changed.iter().map(|view| self.hot.put(view))).await;
        // A view that could not be cached stays uncached: reads find the durable one.
        puts.into_iter().collect::<Result<Vec<()>, _>>()?;
        Ok(changed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.durable.flush().await
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
