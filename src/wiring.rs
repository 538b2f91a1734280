//! Wiring: backends chosen by URL, stages built from them, the API state.

use crate::config::{Config, DEFAULT_PROMOTIONS, embedded_dir};
use anyhow::{Context, Result, bail};
use orderflow_domain::{Catalog, Promotions};
use orderflow_embedded::{DB_FILE, Engine};
use orderflow_pipeline::embedded::legacy;
use orderflow_pipeline::{
    EmbeddedLog, EmbeddedLogOptions, KafkaConfig, KafkaLog, Log, LogError, RetryPolicy, Runner,
    Stage,
};
use orderflow_stages::charge::{Charge, PaymentProvider, SimulatedProvider};
use orderflow_stages::expiry::ExpirySweeper;
use orderflow_stages::notify::Notify;
use orderflow_stages::price::Price;
use orderflow_stages::project::Project;
use orderflow_stages::reserve::Reserve;
use orderflow_stages::ship::Ship;
use orderflow_stages::validate::Validate;
use orderflow_stages::{OnOrders, topology};
use orderflow_stores::embedded::{
    EmbeddedCoupons, EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore, EmbeddedOutbox,
    EmbeddedPaymentJournal, EmbeddedStatusFeed, LocalRateLimiter,
};
use orderflow_stores::redis::{
    CachedOrderStore, RedisConfig, RedisCoupons, RedisHot, RedisIdempotency, RedisLedger,
    RedisOrderCache, RedisPaymentJournal, RedisRateLimiter, RedisStatusFeed,
};
use orderflow_stores::scylla::{ScyllaConfig, ScyllaOrderStore};
use orderflow_stores::{
    CouponLedger, IdempotencyStore, OrderStore, Outbox, RateLimiter, StatusFeed, StockLedger,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Every backend the process uses, as trait objects.
#[derive(Clone)]
pub struct Backends {
    /// The order log.
    pub log: Arc<dyn Log>,
    /// The same log when embedded, for its retention task.
    pub embedded_log: Option<EmbeddedLog>,
    /// Stock levels and holds.
    pub ledger: Arc<dyn StockLedger>,
    /// The same ledger when embedded, for its eviction task.
    pub embedded_ledger: Option<EmbeddedLedger>,
    /// `Idempotency-Key` claims.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// The same store when embedded, for its purge task.
    pub embedded_idempotency: Option<EmbeddedIdempotency>,
    /// Order views (with the Redis hot view in front when Redis is configured).
    pub orders: Arc<dyn OrderStore>,
    /// Per-customer checkout budgets.
    pub limiter: Arc<dyn RateLimiter>,
    /// Coupon-use counters.
    pub coupons: Arc<dyn CouponLedger>,
    /// Live status changes.
    pub feed: Arc<dyn StatusFeed>,
    /// Notifications to send.
    pub outbox: Arc<dyn Outbox>,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Promotion codes.
    pub promotions: Arc<Promotions>,
}

/// Opens each embedded directory once, so the log and the stores can share one engine (and
/// one group commit) when they live in the same directory.
struct Engines {
    open: HashMap<PathBuf, Engine>,
    cache_bytes: usize,
}

impl Engines {
    fn get(&mut self, dir: PathBuf) -> Result<Engine> {
        if let Some(engine) = self.open.get(&dir) {
            return Ok(engine.clone());
        }
        let engine = Engine::open_with_cache(&dir, self.cache_bytes).with_context(|| {
            format!(
                "cannot open embedded storage in {} (if orderflow is running on it, stop it \
                     first, or ask the running process: GET /v1/admin/audit)",
                dir.display()
            )
        })?;
        self.open.insert(dir, engine.clone());
        Ok(engine)
    }
}

/// Connects every backend the configuration names.
pub async fn connect(config: &Config) -> Result<Backends> {
    let catalog =
        Catalog::load(&config.catalog).map_err(|e| anyhow::anyhow!("invalid catalog: {e}"))?;
    let promotions = Arc::new(load_promotions(config)?);
    // With the order views in ScyllaDB, the other stores (ledger, keys, outbox, payment
    // journal) stay embedded beside the log, or in ./data when the log is Kafka.
    let store_dir = embedded_dir(&config.store)
        .or_else(|| embedded_dir(&config.log))
        .unwrap_or_else(|| PathBuf::from("./data"));
    let log_dir = embedded_dir(&config.log).map(|dir| embedded_log_dir(dir, &store_dir));
    let mut engines = Engines {
        open: HashMap::new(),
        cache_bytes: config.cache_mib * 1024 * 1024,
    };

    let (log, embedded_log): (Arc<dyn Log>, Option<EmbeddedLog>) = match log_dir {
        Some(dir) => {
            let mut options = EmbeddedLogOptions::new(config.partitions);
            options.cache_bytes = config.log_cache_mib * 1024 * 1024;
            let log = EmbeddedLog::open_with(&dir, options)
                .with_context(|| format!("cannot open the embedded log in {}", dir.display()))?;
            move_earlier_log(&log, &dir, &store_dir, &mut engines).await?;
            (Arc::new(log.clone()), Some(log))
        }
        None => {
            let kafka = KafkaLog::connect(kafka_config(config)?)
                .with_context(|| format!("cannot use Kafka at {} (log)", config.log))?;
            tracing::info!(log = %config.log, exactly_once = config.exactly_once, "Log on Kafka");
            (Arc::new(kafka), None)
        }
    };
    let engine = engines.get(store_dir)?;
    let durable_orders: Arc<dyn OrderStore> = match config.store.strip_prefix("scylla://") {
        Some(_) => {
            let mut scylla = ScyllaConfig::from_url(&config.store)?;
            scylla.replication_factor = config.scylla_replication_factor;
            Arc::new(
                ScyllaOrderStore::connect(&scylla)
                    .await
                    .with_context(|| format!("cannot use ScyllaDB at {} (store)", config.store))?,
            )
        }
        None => Arc::new(EmbeddedOrderStore::new(engine.clone())),
    };
    let outbox = Arc::new(EmbeddedOutbox::new(engine.clone()));
    let catalog = Arc::new(catalog);
    let backends = match connect_redis(config).await? {
        Some(hot) => Backends {
            log,
            embedded_log,
            // Shared by every charge worker: a charge redelivered to another process is
            // answered from here, never captured twice.
            provider: Arc::new(SimulatedProvider::new(Arc::new(RedisPaymentJournal::new(
                hot.clone(),
            )))),
            ledger: Arc::new(RedisLedger::new(hot.clone())),
            embedded_ledger: None,
            idempotency: Arc::new(RedisIdempotency::new(hot.clone())),
            embedded_idempotency: None,
            orders: Arc::new(CachedOrderStore::new(
                RedisOrderCache::new(hot.clone()),
                durable_orders,
            )),
            limiter: Arc::new(RedisRateLimiter::new(hot.clone())),
            coupons: Arc::new(RedisCoupons::new(hot.clone())),
            feed: Arc::new(
                RedisStatusFeed::connect(hot)
                    .await
                    .context("cannot subscribe to Redis for status changes (redis)")?,
            ),
            outbox,
            catalog,
            promotions,
        },
        None => {
            let idempotency = EmbeddedIdempotency::new(engine.clone());
            let ledger = EmbeddedLedger::open(engine.clone())?;
            Backends {
                log,
                embedded_log,
                provider: Arc::new(SimulatedProvider::new(Arc::new(
                    EmbeddedPaymentJournal::new(engine.clone()),
                ))),
                ledger: Arc::new(ledger.clone()),
                embedded_ledger: Some(ledger),
                idempotency: Arc::new(idempotency.clone()),
                embedded_idempotency: Some(idempotency),
                orders: durable_orders,
                limiter: Arc::new(LocalRateLimiter::new()),
                coupons: Arc::new(EmbeddedCoupons::new(engine)),
                feed: Arc::new(EmbeddedStatusFeed::new(4096)),
                outbox,
                catalog,
                promotions,
            }
        }
    };
    Ok(backends)
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
    log: &EmbeddedLog,
    log_dir: &Path,
    store_dir: &Path,
    engines: &mut Engines,
) -> Result<()> {
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
        let engine = Engine::open(log_dir)
            .with_context(|| format!("cannot open the earlier log {}", own.display()))?;
        let moved = legacy::import(&engine, log, &mut progress)
            .await
            .with_context(|| format!("cannot move the earlier log {}", own.display()))?;
        drop(engine);
        std::fs::remove_file(&own)
            .with_context(|| format!("cannot remove the moved log {}", own.display()))?;
        tracing::warn!(records = moved, from = %own.display(), "Moved the log from the earlier format; the old file is removed");
    }
    if store_dir.join(DB_FILE).exists() {
        let engine = engines.get(store_dir.to_owned())?;
        if !legacy::topics(&engine)?.is_empty() {
            let moved = legacy::import(&engine, log, &mut progress)
                .await
                .context("cannot move the earlier log out of the stores' database")?;
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
fn kafka_config(config: &Config) -> Result<KafkaConfig> {
    let mut kafka = KafkaConfig::from_url(&config.log, config.partitions)
        .map_err(|e| anyhow::anyhow!("invalid log: {e}"))?;
    kafka.replication_factor = config.kafka_replication_factor;
    kafka.exactly_once = config.exactly_once;
    kafka.message_timeout = config.kafka_message_timeout;
    kafka.session_timeout = config.kafka_session_timeout;
    Ok(kafka)
}

/// The promotion table: the configured file, or none when the default file is absent.
fn load_promotions(config: &Config) -> Result<Promotions> {
    let path = &config.promotions;
    if !path.exists() && path.as_path() == std::path::Path::new(DEFAULT_PROMOTIONS) {
        tracing::warn!(path = %path.display(), "No promotions file; every coupon code is refused");
        return Ok(Promotions::default());
    }
    Promotions::load(path).map_err(|e| anyhow::anyhow!("{e} (promotions)"))
}

/// Connects to Redis when `redis` is configured.
async fn connect_redis(config: &Config) -> Result<Option<RedisHot>> {
    let Some(url) = &config.redis else {
        return Ok(None);
    };
    let mut redis = RedisConfig::new(url.clone());
    redis.warehouse = config.redis_warehouse.clone();
    let hot = RedisHot::connect(redis)
        .await
        .with_context(|| format!("cannot use Redis at {url} (redis)"))?;
    tracing::info!(%url, warehouse = %config.redis_warehouse, "Hot path on Redis");
    Ok(Some(hot))
}

/// Only the stock ledger, for `orderflow audit`: on Redis it needs nothing else, so it runs
/// beside a live process; embedded, it opens the store directory.
pub async fn connect_ledger(config: &Config) -> Result<Arc<dyn StockLedger>> {
    if let Some(hot) = connect_redis(config).await? {
        return Ok(Arc::new(RedisLedger::new(hot)));
    }
    let Some(dir) = embedded_dir(&config.store).or_else(|| embedded_dir(&config.log)) else {
        bail!(
            "the embedded stock ledger lives beside an embedded store or log; {:?} and {:?} are neither",
            config.store,
            config.log
        );
    };
    let mut engines = Engines {
        open: HashMap::new(),
        cache_bytes: config.cache_mib * 1024 * 1024,
    };
    Ok(Arc::new(EmbeddedLedger::open(engines.get(dir)?)?))
}

/// The reservation expiry sweeper over these backends.
pub fn sweeper(b: &Backends) -> ExpirySweeper {
    ExpirySweeper::new(b.ledger.clone(), b.orders.clone(), b.log.clone(), 500)
        .with_coupons(b.promotions.clone(), b.coupons.clone())
}

/// Names accepted by `orderflow stage`.
pub const STAGE_NAMES: [&str; 7] = [
    "validate", "reserve", "price", "charge", "ship", "notify", "project",
];

/// Builds one stage by name with its input topics.
pub fn stage(name: &str, b: &Backends, config: &Config) -> Result<(Arc<dyn Stage>, Vec<String>)> {
    if name == topology::PROJECTOR {
        let inputs = topology::PROJECTOR_INPUTS
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        return Ok((
            Arc::new(Project::new(b.orders.clone(), b.feed.clone())),
            inputs,
        ));
    }
    let Some(route) = topology::route(name) else {
        bail!(
            "unknown stage {name:?}; stages are {}",
            STAGE_NAMES.join(", ")
        );
    };
    let stage: Arc<dyn Stage> = match name {
        "validate" => Arc::new(OnOrders::new(
            route,
            Validate::new(b.catalog.clone(), &config.currencies, &config.countries)
                .with_promotions(b.promotions.clone()),
        )),
        "reserve" => Arc::new(OnOrders::new(
            route,
            Reserve::new(b.ledger.clone(), config.reservation_ttl),
        )),
        "price" => Arc::new(OnOrders::new(
            route,
            Price::new(
                b.catalog.clone(),
                b.ledger.clone(),
                config.tax_rate_bps,
                config.shipping_fee_minor,
            )
            .with_promotions(b.promotions.clone(), b.coupons.clone()),
        )),
        "charge" => Arc::new(OnOrders::new(
            route,
            Charge::new(b.provider.clone(), b.ledger.clone())
                .with_coupons(b.promotions.clone(), b.coupons.clone()),
        )),
        "ship" => Arc::new(OnOrders::new(route, Ship::new(b.ledger.clone(), "SimPost"))),
        "notify" => Arc::new(OnOrders::new(route, Notify::new(b.outbox.clone()))),
        other => bail!("stage {other:?} has a route but no constructor"),
    };
    Ok((stage, vec![route.input.to_owned()]))
}

/// A runner per named stage.
pub fn runners(names: &[String], b: &Backends, config: &Config) -> Result<Vec<Runner>> {
    let policy = RetryPolicy {
        max_attempts: config.retry_max_attempts,
        base_backoff: config.retry_base,
        max_backoff: config.retry_max,
        batch_size: config.batch_size,
        ..RetryPolicy::default()
    };
    names
        .iter()
        .map(|name| {
            let (stage, inputs) = stage(name, b, config)?;
            Ok(Runner::new(b.log.clone(), stage, inputs, policy.clone()))
        })
        .collect()
}

/// Creates the topics and seeds the catalog's stock for SKUs that have none yet. A log that is
/// not reachable yet (a broker still starting) is waited for, up to a minute.
pub async fn prepare(b: &Backends) -> Result<usize> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match b.log.ensure_topics(&topology::all_topics()).await {
            Ok(()) => break,
            Err(e @ LogError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "The log is not reachable yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(anyhow::Error::from(e).context("cannot create the topics (log)")),
        }
    }
    let items: Vec<(String, u64)> = b
        .catalog
        .items()
        .iter()
        .map(|i| (i.sku.clone(), i.stock))
        .collect();
    Ok(b.ledger.seed(&items).await?)
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
