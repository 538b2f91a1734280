//! The Redis hot path (fred): the stock ledger in Lua scripts, `Idempotency-Key` claims, the
//! hot order view, the status feed over pub/sub, coupon-use counters and the ingest's rate
//! limit.
//!
//! Every key of one warehouse carries the same hash tag (`{wh}:stock:SKU`, `{wh}:hold:ORDER`,
//! …), so every script touches a single slot and stays valid on Redis Cluster. Scripts are
//! loaded once with `SCRIPT LOAD` and called by `EVALSHA`, reloaded when Redis answers
//! `NOSCRIPT` (after a restart or a `SCRIPT FLUSH`). Calls that arrive together — a stage
//! working through a batch of orders — leave in one write per connection and share one round
//! trip (see [`Scripts`]).

mod batch;
mod coupons;
mod feed;
mod idempotency;
mod ledger;
mod orders;
mod payments;
mod rate_limit;
mod refunds;

pub use batch::{Scripts, lua, sha1_of};
pub use coupons::RedisCoupons;
pub use feed::{FeedTasks, RedisStatusFeed};
pub use idempotency::RedisIdempotency;
pub use ledger::RedisLedger;
pub use orders::{CachedOrderStore, RedisOrderCache};
pub use payments::RedisPaymentJournal;
pub use rate_limit::RedisRateLimiter;
pub use refunds::RedisRefundLedger;

use crate::StoreError;
use fred::prelude::*;
use std::time::Duration;

/// How to reach Redis and how long to keep what.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// The warehouse: the hash tag every ledger key carries (`{main}:stock:SKU`).
    pub warehouse: String,
    /// How long a settled reservation (released, committed, refused) is remembered, so a
    /// redelivered or replayed stage message gets the first answer again.
    pub settled_retention: Duration,
    /// How long an order's coupon answer (redeemed, used up, given back) is remembered.
    pub coupon_retention: Duration,
    /// How long a command may take before the caller hears `Unavailable`.
    pub command_timeout: Duration,
    /// How long an order's hot view lives after its last change.
    pub view_ttl: Duration,
    /// Command connections; pipelines take turns on them, so Redis never waits for one
    /// connection's round trip.
    pub connections: usize,
}

impl RedisConfig {
    /// Defaults for `url`: warehouse `main`, settled reservations kept a week and coupon answers
    /// 30 days (dead letters must be replayed within that), 2 s commands, hot views kept an hour.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            warehouse: "main".into(),
            settled_retention: Duration::from_secs(7 * 24 * 3600),
            coupon_retention: Duration::from_secs(30 * 24 * 3600),
            command_timeout: Duration::from_secs(2),
            view_ttl: Duration::from_secs(3600),
            connections: 4,
        }
    }
}

/// One connection to Redis shared by every adapter, with the scripts loaded.
#[derive(Clone)]
pub struct RedisHot {
    pool: Pool,
    scripts: Scripts,
    config: RedisConfig,
}

impl RedisHot {
    /// Connects, checks the server answers and loads the scripts.
    pub async fn connect(config: RedisConfig) -> Result<Self, StoreError> {
        if config.warehouse.is_empty()
            || !config
                .warehouse
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(StoreError::Unavailable(format!(
                "invalid warehouse {:?}: use letters, digits, '-' and '_'",
                config.warehouse
            )));
        }
        let pool = build(&config)?
            .build_pool(config.connections.clamp(1, 64))
            .map_err(redis_error)?;
        init(&pool, &config).await?;
        let scripts = Scripts::load(pool.clone()).await?;
        Ok(Self {
            pool,
            scripts,
            config,
        })
    }

    /// A command connection (they take turns).
    pub fn client(&self) -> &Client {
        self.pool.next()
    }

    /// The loaded scripts and their call path.
    pub fn scripts(&self) -> &Scripts {
        &self.scripts
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// `{wh}:` — the prefix of every warehouse key.
    pub fn prefix(&self) -> String {
        format!("{{{}}}:", self.config.warehouse)
    }

    /// Whether Redis answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.client().ping(None).await.map_err(redis_error)?;
        if pong.eq_ignore_ascii_case("pong") {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "redis answered {pong:?} to PING"
            )))
        }
    }
}

/// A client builder for `config`: bounded command time, reconnecting for ever with backoff.
pub(crate) fn build(config: &RedisConfig) -> Result<Builder, StoreError> {
    let redis_config = Config::from_url(&config.url)
        .map_err(|e| StoreError::backend(format!("invalid redis URL {:?}", config.url), e))?;
    let mut builder = Builder::from_config(redis_config);
    let timeout = config.command_timeout;
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
        })
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            // A command is tried once per connection; the stages own retries and backoff.
            c.max_command_attempts = 1;
        })
        // 0 = retry for ever: Redis coming back must bring the process back without a restart.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// Starts the connection and waits for the first one, within the command timeout.
pub(crate) async fn init(client: &impl ClientLike, config: &RedisConfig) -> Result<(), StoreError> {
    let _task = client.init().await.map_err(|e| {
        StoreError::backend(format!("cannot connect to redis at {}", config.url), e)
    })?;
    Ok(())
}

/// A Redis failure as a store error: reply errors (a broken script, wrong key type) are data
/// problems; everything else may pass.
pub(crate) fn redis_error(e: Error) -> StoreError {
    // A script that meets a slot being migrated passes once the migration ends.
    let migrating = e.details().contains("non local key") || e.details().starts_with("TRYAGAIN");
    let reply_error =
        e.details().starts_with("ERR") && e.kind() == &ErrorKind::Unknown && !migrating;
    match e.kind() {
        ErrorKind::InvalidCommand | ErrorKind::InvalidArgument | ErrorKind::Parse => {
            StoreError::decode("redis", e)
        }
        _ if reply_error => StoreError::decode("redis", e),
        _ => StoreError::backend("redis", e),
    }
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A duration in whole milliseconds, at least 1 (Redis refuses `PX 0`).
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}
