//! The [`RateLimiter`] trait: a per-key request budget for the ingest.

use crate::StoreError;
use async_trait::async_trait;
use std::time::Duration;

/// A steady rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may arrive at once (the bucket's size).
    pub burst: u32,
}

impl Rate {
    /// Microseconds between two requests at the steady rate.
    pub fn interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.per_second.max(1))
    }
}

/// Request budgets (GCRA): shared by every ingest replica when kept in Redis.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `key`'s budget: `None` if allowed, else how long to wait.
    async fn acquire(&self, key: &str, rate: Rate) -> Result<Option<Duration>, StoreError>;
}
