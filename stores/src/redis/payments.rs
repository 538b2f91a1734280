//! The Redis [`PaymentJournal`]: one hash field per idempotency key, written once with `HSETNX`.
//!
//! Charge workers of several processes share it, so a charge redelivered to another worker
//! after a crash is answered with the first outcome instead of being captured again.

use super::{RedisHot, redis_error};
use crate::{PaymentJournal, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use std::collections::HashMap;

/// The simulated provider's captures in one Redis hash.
#[derive(Clone)]
pub struct RedisPaymentJournal {
    hot: RedisHot,
    key: String,
}

impl RedisPaymentJournal {
    /// A journal on `hot`'s server, under the hash `payments:journal`.
    pub fn new(hot: RedisHot) -> Self {
        Self {
            hot,
            key: "payments:journal".to_owned(),
        }
    }
}

#[async_trait]
impl PaymentJournal for RedisPaymentJournal {
    async fn record_once(&self, key: &str, outcome: &str) -> Result<String, StoreError> {
        let client = self.hot.client();
        let written: bool = client
            .hsetnx(&self.key, key, outcome)
            .await
            .map_err(redis_error)?;
        if written {
            return Ok(outcome.to_owned());
        }
        // Fields are never deleted, so the one that stopped ours is still there.
        let standing: Option<String> = client.hget(&self.key, key).await.map_err(redis_error)?;
        standing.ok_or_else(|| {
            StoreError::Corrupt(format!("payment journal lost the outcome of {key:?}"))
        })
    }

    async fn outcome(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.hot
            .client()
            .hget(&self.key, key)
            .await
            .map_err(redis_error)
    }

    async fn entries(&self) -> Result<Vec<(String, String)>, StoreError> {
        let all: HashMap<String, String> = self
            .hot
            .client()
            .hgetall(&self.key)
            .await
            .map_err(redis_error)?;
        let mut entries: Vec<_> = all.into_iter().collect();
        entries.sort();
        Ok(entries)
    }
}
