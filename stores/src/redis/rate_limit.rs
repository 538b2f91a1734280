//! The Redis [`RateLimiter`]: one GCRA script call per request, shared by every ingest replica.

use super::RedisHot;
use super::batch::ScriptName;
use crate::{Rate, RateLimiter, StoreError};
use async_trait::async_trait;
use std::time::Duration;

/// Request budgets in Redis, keyed `{rl:KEY}`.
#[derive(Clone)]
pub struct RedisRateLimiter {
    hot: RedisHot,
}

impl RedisRateLimiter {
    /// Budgets on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn acquire(&self, key: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        let wait_ms: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::RateLimit,
                vec![format!("{{rl:{key}}}")],
                vec![rate.interval_us().to_string(), rate.burst.to_string()],
            )
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1))))
    }
}
