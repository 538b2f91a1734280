//! The in-process [`RateLimiter`]: budgets in memory, for one ingest process.

use crate::{Rate, RateLimiter, StoreError};
use async_trait::async_trait;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Calls between two looks at the map's size: `DashMap::len` locks every shard, too dear for
/// every request.
const SWEEP_EVERY: u64 = 4096;

/// Keys kept before those with a full budget are forgotten.
const MAX_KEYS: usize = 100_000;

/// Per-key budgets of this process (GCRA over a monotonic clock).
#[derive(Clone)]
pub struct LocalRateLimiter {
    /// Key → theoretical arrival time of the next request, in µs since `epoch`.
    next: Arc<DashMap<String, u64>>,
    epoch: Instant,
    calls: Arc<AtomicU64>,
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self {
            next: Arc::new(DashMap::new()),
            epoch: Instant::now(),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LocalRateLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn acquire(&self, key: &str, rate: Rate) -> Result<Option<Duration>, StoreError> {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let interval = rate.interval_us();
        let allowance = interval.saturating_mul(u64::from(rate.burst));
        // Keys whose budget is full again carry no information: forget them so memory follows
        // the active callers.
        if self
            .calls
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
            && self.next.len() > MAX_KEYS
        {
            self.next.retain(|_, tat| *tat > now);
        }
        // A known key (the common case: a caller sends more than one request) needs no copy.
        let mut tat = match self.next.get_mut(key) {
            Some(tat) => tat,
            None => self.next.entry(key.to_owned()).or_insert(now),
        };
        let next = (*tat).max(now).saturating_add(interval);
        if next - now > allowance {
            return Ok(Some(Duration::from_micros(next - now - allowance)));
        }
        *tat = next;
        Ok(None)
    }
}
