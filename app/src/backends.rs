//! Backends chosen by the configuration's URLs, connected once per process: every store and
//! the log as trait objects, with the periodic upkeep ([`Chore`]s) the chosen adapters need.

use crate::config::{Config, LogUrl, RedisUrl, StoreUrl};
use crate::error::AppError;
use crate::supervisor::Chore;
use crate::tables;
use orderflow_domain::{Catalog, SharedPriceBook};
use orderflow_pipeline::{KafkaConfig, KafkaLog, Log, SegmentLog, SegmentLogOptions};
use orderflow_stages::charge::{PaymentProvider, SimulatedProvider};
use orderflow_stages::deliver::Endpoints;
use orderflow_stages::expiry::ExpirySweeper;
use orderflow_stages::topology::{self, StageDeps};
use orderflow_storage::kv::{DB_FILE, Engine};
use orderflow_storage::segment::{GroupPartition, legacy};
use orderflow_stores::embedded::{
    EmbeddedCoupons, EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore, EmbeddedOutbox,
    EmbeddedPaymentJournal, EmbeddedRefundLedger, EmbeddedStatusFeed, LocalRateLimiter,
};
use orderflow_stores::redis::{
    CachedOrderStore, RedisConfig, RedisCoupons, RedisHot, RedisIdempotency, RedisLedger,
    RedisOrderCache, RedisPaymentJournal, RedisRateLimiter, RedisRefundLedger, RedisStatusFeed,
};
use orderflow_stores::scylla::{ScyllaConfig, ScyllaOrderStore};
use orderflow_stores::{
    CouponLedger, IdempotencyStore, OrderStore, Outbox, PaymentJournal, RateLimiter, RefundLedger,
    SkuStock, StatusFeed, StockLedger,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every backend a process uses, as trait objects.
#[derive(Clone)]
pub struct Backends {
    /// The order log.
    pub log: Arc<dyn Log>,
    /// Stock levels and holds.
    pub ledger: Arc<dyn StockLedger>,
    /// `Idempotency-Key` claims.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Order views (with the Redis hot view in front when Redis is configured).
    pub orders: Arc<dyn OrderStore>,
    /// Per-customer checkout budgets.
    pub limiter: Arc<dyn RateLimiter>,
    /// Coupon-use counters.
    pub coupons: Arc<dyn CouponLedger>,
    /// Refunds counted against each order's capture.
    pub refunds: Arc<dyn RefundLedger>,
    /// The simulated provider's journal of charges and refunds (the money audit reads it).
    pub payments: Arc<dyn PaymentJournal>,
    /// Live status changes.
    pub feed: Arc<dyn StatusFeed>,
    /// Messages to deliver (emails, webhooks).
    pub outbox: Arc<dyn Outbox>,
    /// The webhook endpoints (`[webhook]`).
    pub webhooks: Endpoints,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The pricing tables in force (the API's quotes and the price stage share them).
    pub prices: SharedPriceBook,
    /// Where the pricing tables are read from again on reload.
    pub tables: tables::PriceTables,
}

/// Opens each embedded directory once, so everything in one directory shares one engine (and
/// one group commit).
struct Engines {
    open: HashMap<PathBuf, Engine>,
    cache_bytes: usize,
}

impl Engines {
    fn new(config: &Config) -> Self {
        Self {
            open: HashMap::new(),
            cache_bytes: config.store.cache_mib * 1024 * 1024,
        }
    }

    fn get(&mut self, dir: PathBuf) -> Result<Engine, AppError> {
        if let Some(engine) = self.open.get(&dir) {
            return Ok(engine.clone());
        }
        let engine = Engine::open_with_cache(&dir, self.cache_bytes).map_err(|source| {
            AppError::Storage {
                dir: dir.clone(),
                source,
            }
        })?;
        self.open.insert(dir, engine.clone());
        Ok(engine)
    }
}

impl Backends {
    /// Connects every backend the configuration names; returns them with the chores their
    /// adapters need (for the supervisor to run).
    pub async fn connect(config: &Config) -> Result<(Self, Vec<Chore>), AppError> {
        let tables = tables::PriceTables::new(config);
        let (book, from) = tables.load()?;
        for (table, source) in [
            ("catalog", &from.catalog),
            ("promotions", &from.promotions),
            ("tax", &from.tax),
            ("shipping", &from.shipping),
        ] {
            warn_if_demo(config, source, table);
        }
        tracing::info!(
            catalog = %from.catalog,
            skus = book.catalog.items().len(),
            promotions = %from.promotions,
            tax = %from.tax,
            shipping = %from.shipping,
            version = %book.version,
            "Pricing tables loaded"
        );
        let catalog = book.catalog.clone();
        let prices = book.shared();
        let store_dir = config.store_dir();
        let mut engines = Engines::new(config);
        let mut chores = Vec::new();

        let log: Arc<dyn Log> = match &config.log.url {
            LogUrl::Embedded(dir) => {
                let dir = embedded_log_dir(dir.clone(), &store_dir);
                let mut options = SegmentLogOptions::new(config.log.partitions);
                options.cache_bytes = config.log.cache_mib * 1024 * 1024;
                let log = SegmentLog::open_with(&dir, options).map_err(|e| {
                    AppError::backend(
                        format!("the embedded log in {}", dir.display()),
                        "log.url",
                        e,
                    )
                })?;
                move_earlier_log(&log, &dir, &store_dir, &mut engines).await?;
                chores.extend(log_chores(&log, config.log.retention()));
                Arc::new(log)
            }
            LogUrl::Kafka(_) => {
                let kafka = KafkaLog::connect(kafka_config(config)?).map_err(|e| {
                    AppError::backend(format!("Kafka at {}", config.log.url), "log.url", e)
                })?;
                tracing::info!(log = %config.log.url, exactly_once = config.kafka.exactly_once, "Log on Kafka");
                Arc::new(kafka)
            }
        };
        let engine = engines.get(store_dir)?;
        let durable_orders: Arc<dyn OrderStore> =
            match &config.store.url {
                StoreUrl::Scylla(url) => {
                    let mut scylla = ScyllaConfig::from_url(url)
                        .map_err(|e| AppError::backend(url.clone(), "store.url", e))?;
                    scylla.replication_factor = config.scylla.replication_factor;
                    Arc::new(ScyllaOrderStore::connect(&scylla).await.map_err(|e| {
                        AppError::backend(format!("ScyllaDB at {url}"), "store.url", e)
                    })?)
                }
                StoreUrl::Embedded(_) => {
                    let store = EmbeddedOrderStore::new(engine.clone());
                    chores.push(crate::retention::views_chore(
                        store.clone(),
                        config.store.retention(),
                    ));
                    Arc::new(store)
                }
            };
        let outbox = Arc::new(EmbeddedOutbox::new(engine.clone()));
        let webhooks = config.webhook.endpoints()?;
        let backends = match connect_redis(config).await? {
            Some(hot) => {
                // Shared by every charge worker: a charge redelivered to another process is
                // answered from here, never captured twice.
                let payments: Arc<dyn PaymentJournal> =
                    Arc::new(RedisPaymentJournal::new(hot.clone()));
                Self {
                    log,
                    provider: Arc::new(SimulatedProvider::new(payments.clone())),
                    payments,
                    refunds: Arc::new(RedisRefundLedger::new(hot.clone())),
                    ledger: Arc::new(RedisLedger::new(hot.clone())),
                    idempotency: Arc::new(RedisIdempotency::new(hot.clone())),
                    orders: Arc::new(CachedOrderStore::new(
                        RedisOrderCache::new(hot.clone()),
                        durable_orders,
                    )),
                    limiter: Arc::new(RedisRateLimiter::new(hot.clone())),
                    coupons: Arc::new(RedisCoupons::new(hot.clone())),
                    feed: {
                        let (feed, tasks) = RedisStatusFeed::connect(hot).await.map_err(|e| {
                            AppError::backend("Redis for status changes", "redis.url", e)
                        })?;
                        chores.push(Chore::task("redis-status-feed", tasks));
                        Arc::new(feed)
                    },
                    outbox,
                    webhooks,
                    catalog,
                    prices,
                    tables,
                }
            }
            None => {
                let idempotency = EmbeddedIdempotency::new(engine.clone());
                let ledger = EmbeddedLedger::open(engine.clone())?;
                chores.extend(ledger_chores(&ledger));
                chores.push(crate::retention::holds_chore(
                    ledger.clone(),
                    config.store.retention(),
                ));
                chores.push(crate::retention::idempotency_chore(idempotency.clone()));
                let payments: Arc<dyn PaymentJournal> =
                    Arc::new(EmbeddedPaymentJournal::new(engine.clone()));
                Self {
                    log,
                    provider: Arc::new(SimulatedProvider::new(payments.clone())),
                    payments,
                    refunds: Arc::new(EmbeddedRefundLedger::new(engine.clone())),
                    ledger: Arc::new(ledger),
                    idempotency: Arc::new(idempotency),
                    orders: durable_orders,
                    limiter: Arc::new(LocalRateLimiter::new()),
                    coupons: Arc::new(EmbeddedCoupons::new(engine)),
                    feed: Arc::new(EmbeddedStatusFeed::new(64)),
                    outbox,
                    webhooks,
                    catalog,
                    prices,
                    tables,
                }
            }
        };
        Ok((backends, chores))
    }

    /// What the stages are built from.
    pub fn stage_deps(&self, config: &Config) -> StageDeps {
        StageDeps {
            catalog: self.catalog.clone(),
            prices: self.prices.clone(),
            ledger: self.ledger.clone(),
            coupons: self.coupons.clone(),
            refunds: self.refunds.clone(),
            provider: self.provider.clone(),
            outbox: self.outbox.clone(),
            webhooks: self.webhooks.clone(),
            orders: self.orders.clone(),
            feed: self.feed.clone(),
            currencies: config.stages.currencies.clone(),
            countries: config.stages.countries.clone(),
            reservation_ttl: config.stages.reservation_ttl(),
        }
    }

    /// The reservation expiry sweeper over these backends.
    pub fn sweeper(&self) -> ExpirySweeper {
        ExpirySweeper::new(
            self.ledger.clone(),
            self.orders.clone(),
            self.log.clone(),
            500,
        )
        .with_coupons(self.coupons.clone())
    }

    /// Creates the topics and seeds the catalog's stock for SKUs that have none yet; returns
    /// how many were seeded. A log that is not reachable yet (a broker still starting) is
    /// waited for, up to a minute.
    pub async fn prepare(&self) -> Result<usize, AppError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.log.ensure_topics(&topology::all_topics()).await {
                Ok(()) => break,
                Err(e) if e.is_unavailable() && std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "The log is not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    return Err(AppError::backend(
                        "the log to create the topics",
                        "log.url",
                        e,
                    ));
                }
            }
        }
        let items: Vec<SkuStock> = self
            .catalog
            .items()
            .iter()
            .map(|i| SkuStock::new(i.sku.clone(), i.stock))
            .collect();
        Ok(self.ledger.seed(&items).await?)
    }
}

/// The demo tables are for a laptop: processes that share Redis or Kafka must share one catalog
/// and one set of codes, and a process started in the wrong directory would silently use the
/// demo's. Say so loudly.
fn warn_if_demo(config: &Config, from: &tables::Source, table: &str) {
    let shared = config.redis.url.is_some() || matches!(config.log.url, LogUrl::Kafka(_));
    if shared && *from == tables::Source::BuiltIn {
        tracing::warn!(
            table,
            "Using the built-in demo table with shared backends; give every process the same \
             file ({table}.file)"
        );
    }
}

/// Retention and the consumer-lag gauges of the embedded log.
fn log_chores(log: &SegmentLog, retention: Duration) -> Vec<Chore> {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let trimmed = log.clone();
    let gauged = log.clone();
    vec![
        Chore::new("log-retention", every, move || {
            let log = trimmed.clone();
            async move {
                log.retention_pass(retention).await;
                Ok(())
            }
        }),
        Chore::new("log-lag", Duration::from_secs(5), move || {
            let lag = gauged.record_lag();
            record_dlq_depth(&gauged, &lag);
            async { Ok(()) }
        }),
    ]
}

/// `orderflow_dlq_depth{topic}`: dead letters not yet replayed, per dead-letter topic — what
/// the replay group has not committed past, or everything kept if it never ran.
fn record_dlq_depth(log: &SegmentLog, lag: &std::collections::BTreeMap<GroupPartition, u64>) {
    let kept = log.kept_records();
    let mut depth: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (at, records) in kept {
        if !at.topic.ends_with(".dlq") {
            continue;
        }
        let behind = lag
            .iter()
            .find(|(g, _)| g.group == orderflow_pipeline::dlq::REPLAY_GROUP && g.partition == at)
            .map_or(records, |(_, behind)| (*behind).min(records));
        *depth.entry(at.topic).or_default() += behind;
    }
    for (topic, records) in depth {
        metrics::gauge!("orderflow_dlq_depth", "topic" => topic).set(records as f64);
    }
}

/// The embedded ledger's upkeep: settled holds leave memory a minute after their order was
/// minted (repeats after that are answered from disk), and a ledger that refuses calls after a
/// failed write stops the process (a restart rebuilds it from disk). A Redis ledger that is
/// away is waited for instead: stages hold their records and `/readyz` says so.
fn ledger_chores(ledger: &EmbeddedLedger) -> Vec<Chore> {
    let evicted = ledger.clone();
    let watched = ledger.clone();
    vec![
        Chore::new("ledger-eviction", Duration::from_secs(10), move || {
            evicted.evict_and_report(Duration::from_secs(60), EmbeddedLedger::MOST_IN_MEMORY);
            async { Ok(()) }
        }),
        Chore::new("ledger-health", Duration::from_secs(1), move || {
            let ledger = watched.clone();
            async move {
                ledger
                    .ready()
                    .await
                    .map_err(|e| format!("the stock ledger stopped after a storage failure: {e}"))
            }
        }),
    ]
}

/// Where the embedded log lives: in `DIR/log` when the configuration puts it beside the stores
/// in `DIR` (its segment files apart from the stores' database), else where configured.
pub fn embedded_log_dir(log: PathBuf, store: &Path) -> PathBuf {
    if log == store { log.join("log") } else { log }
}

/// Moves a log that an earlier version kept in a redb database (its own under the log
/// directory, or inside the stores' database in the oldest layout) into the segment log, with
/// its offsets and every group's position, then removes the old copy.
async fn move_earlier_log(
    log: &SegmentLog,
    log_dir: &Path,
    store_dir: &Path,
    engines: &mut Engines,
) -> Result<(), AppError> {
    let mut reported = 0u64;
    let mut progress = move |moved: u64, total: u64| {
        if moved >= reported + 50_000 || moved == total {
            reported = moved;
            tracing::info!(
                moved,
                total,
                "Moving the log from the earlier format to segment files"
            );
        }
    };
    let own = log_dir.join(DB_FILE);
    if own.exists() {
        let engine = Engine::open(log_dir).map_err(|source| AppError::Storage {
            dir: log_dir.to_owned(),
            source,
        })?;
        let moved = legacy::import(&engine, log, &mut progress).await?;
        drop(engine);
        std::fs::remove_file(&own).map_err(|e| {
            AppError::backend(format!("the moved log {}", own.display()), "log.url", e)
        })?;
        tracing::warn!(records = moved, from = %own.display(), "Moved the log from the earlier format; the old file is removed");
    }
    if store_dir.join(DB_FILE).exists() {
        let engine = engines.get(store_dir.to_owned())?;
        if !legacy::topics(&engine)?.is_empty() {
            let moved = legacy::import(&engine, log, &mut progress).await?;
            legacy::drop_tables(&engine).await?;
            tracing::warn!(
                records = moved,
                "Moved the log out of the stores' database (an earlier layout)"
            );
        }
    }
    Ok(())
}

/// The Kafka adapter's settings from the configuration.
fn kafka_config(config: &Config) -> Result<KafkaConfig, AppError> {
    let url = config.log.url.to_string();
    let mut kafka = KafkaConfig::from_url(&url, config.log.partitions)
        .map_err(|e| AppError::backend(url.clone(), "log.url", e))?;
    kafka.replication_factor = config.kafka.replication_factor;
    kafka.exactly_once = config.kafka.exactly_once;
    kafka.message_timeout = Duration::from_millis(config.kafka.message_timeout_ms);
    kafka.session_timeout = Duration::from_millis(config.kafka.session_timeout_ms);
    kafka.linger = Duration::from_millis(config.kafka.linger_ms);
    kafka.fetch_wait = Duration::from_millis(config.kafka.fetch_wait_ms);
    kafka.compression = config.kafka.compression;
    Ok(kafka)
}

/// Connects to Redis when `redis.url` is configured.
async fn connect_redis(config: &Config) -> Result<Option<RedisHot>, AppError> {
    let Some(RedisUrl(url)) = &config.redis.url else {
        return Ok(None);
    };
    let mut redis = RedisConfig::new(url.clone());
    redis.warehouse = config.redis.warehouse.clone();
    let hot = RedisHot::connect(redis)
        .await
        .map_err(|e| AppError::backend(format!("Redis at {url}"), "redis.url", e))?;
    tracing::info!(%url, warehouse = %config.redis.warehouse, "Hot path on Redis");
    Ok(Some(hot))
}

/// Only the promotion-use counters, for `orderflow price --customer`: on Redis, read beside
/// running processes; `None` without Redis (the embedded ones are the server's to open).
pub async fn connect_coupons(config: &Config) -> Result<Option<Arc<dyn CouponLedger>>, AppError> {
    Ok(connect_redis(config)
        .await?
        .map(|hot| Arc::new(RedisCoupons::new(hot)) as Arc<dyn CouponLedger>))
}

/// What `orderflow audit` reads: the stock ledger, the refund ledger and the payment journal.
pub struct Books {
    /// Stock levels.
    pub ledger: Arc<dyn StockLedger>,
    /// Refunds counted per order.
    pub refunds: Arc<dyn RefundLedger>,
    /// The provider's charges and refunds.
    pub payments: Arc<dyn PaymentJournal>,
}

/// Only the books, for `orderflow audit`: on Redis they need nothing else, so it runs beside a
/// live process; embedded, it opens the store directory.
pub async fn connect_books(config: &Config) -> Result<Books, AppError> {
    if let Some(hot) = connect_redis(config).await? {
        return Ok(Books {
            ledger: Arc::new(RedisLedger::new(hot.clone())),
            refunds: Arc::new(RedisRefundLedger::new(hot.clone())),
            payments: Arc::new(RedisPaymentJournal::new(hot)),
        });
    }
    if !matches!(
        (&config.store.url, &config.log.url),
        (StoreUrl::Embedded(_), _) | (_, LogUrl::Embedded(_))
    ) {
        return Err(AppError::Usage(format!(
            "the embedded stock ledger lives beside an embedded store or log; {} and {} are \
             neither (set redis.url to audit the Redis ledger)",
            config.store.url, config.log.url
        )));
    }
    let engine = Engines::new(config).get(config.store_dir())?;
    Ok(Books {
        ledger: Arc::new(EmbeddedLedger::open(engine.clone())?),
        refunds: Arc::new(EmbeddedRefundLedger::new(engine.clone())),
        payments: Arc::new(EmbeddedPaymentJournal::new(engine)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gets_its_own_directory_beside_the_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        assert_eq!(embedded_log_dir(data.clone(), &data), data.join("log"));
        let other = dir.path().join("elsewhere");
        assert_eq!(embedded_log_dir(other.clone(), &data), other);
    }
}
