//! The hot order view: each order's latest view in Redis with a TTL, written by the projector
//! after the durable store, read by the API before it.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{OrderStore, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::{OrderEvent, OrderId, OrderView};
use parking_lot::Mutex;
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
        let json = serde_json::to_string(view).map_err(|e| StoreError::Corrupt(e.to_string()))?;
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

    /// The cached view, if any.
    pub async fn get(&self, id: OrderId) -> Result<Option<OrderView>, StoreError> {
        let json: Option<String> = self
            .hot
            .client()
            .hget(self.key(id), "view")
            .await
            .map_err(redis_error)?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }
}

/// A durable [`OrderStore`] with the Redis hot view in front: writes go to the durable store
/// first, then to the cache; reads try the cache, then the durable store.
pub struct CachedOrderStore {
    hot: RedisOrderCache,
    durable: Arc<dyn OrderStore>,
    /// Orders whose cached view may be behind the durable one (a cache write failed); they are
    /// refreshed from the durable store before anything else is applied.
    dirty: Mutex<HashSet<OrderId>>,
}

impl CachedOrderStore {
    /// `durable` with `hot` in front.
    pub fn new(hot: RedisOrderCache, durable: Arc<dyn OrderStore>) -> Self {
        Self {
            hot,
            durable,
            dirty: Mutex::new(HashSet::new()),
        }
    }

    async fn refresh_dirty(&self) -> Result<(), StoreError> {
        let dirty: Vec<OrderId> = self.dirty.lock().iter().copied().collect();
        for id in dirty {
            if let Some(view) = self.durable.get(id).await? {
                self.hot.put(&view).await?;
            }
            self.dirty.lock().remove(&id);
        }
        Ok(())
    }
}

#[async_trait]
impl OrderStore for CachedOrderStore {
    async fn apply(&self, events: Vec<OrderEvent>) -> Result<Vec<OrderView>, StoreError> {
        self.refresh_dirty().await?;
        let changed = self.durable.apply(events).await?;
        let mut failure = None;
        for view in &changed {
            if let Err(e) = self.hot.put(view).await {
                // The durable view is ahead now, and a retry of these events would change
                // nothing there: remember the order so the cache catches up before anything else.
                self.dirty.lock().insert(view.order_id);
                failure = Some(e);
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(changed),
        }
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
}
