//! Wiring: backends chosen by URL, stages built from them, the API state.

use crate::config::{Config, embedded_dir};
use anyhow::{Context, Result, bail};
use orderflow_domain::Catalog;
use orderflow_embedded::Engine;
use orderflow_pipeline::{EmbeddedLog, Log, RetryPolicy, Runner, Stage};
use orderflow_stages::charge::{Charge, PaymentProvider, SimulatedProvider};
use orderflow_stages::notify::Notify;
use orderflow_stages::price::Price;
use orderflow_stages::project::Project;
use orderflow_stages::reserve::Reserve;
use orderflow_stages::ship::Ship;
use orderflow_stages::validate::Validate;
use orderflow_stages::{OnOrders, topology};
use orderflow_stores::embedded::{
    EmbeddedIdempotency, EmbeddedLedger, EmbeddedOrderStore, EmbeddedOutbox,
    EmbeddedPaymentJournal, EmbeddedStatusFeed,
};
use orderflow_stores::{IdempotencyStore, OrderStore, Outbox, StatusFeed, StockLedger};
use std::collections::HashMap;
use std::path::PathBuf;
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
    /// Order views.
    pub orders: Arc<dyn OrderStore>,
    /// Live status changes.
    pub feed: Arc<dyn StatusFeed>,
    /// Notifications to send.
    pub outbox: Arc<dyn Outbox>,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// The catalog.
    pub catalog: Arc<Catalog>,
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
    let mut engines = Engines {
        open: HashMap::new(),
        cache_bytes: config.cache_mib * 1024 * 1024,
    };

    let embedded_log = match embedded_dir(&config.log) {
        Some(dir) => EmbeddedLog::new(engines.get(dir)?, config.partitions)?,
        None => bail!(
            "invalid log {:?}: only embedded://DIR is available in this build (Kafka is tracked as its own issue)",
            config.log
        ),
    };
    let store_dir = match embedded_dir(&config.store) {
        Some(dir) => dir,
        None => bail!(
            "invalid store {:?}: only embedded://DIR is available in this build (ScyllaDB is tracked as its own issue)",
            config.store
        ),
    };
    if let Some(redis) = &config.redis {
        bail!(
            "invalid redis {redis:?}: the Redis hot path is not in this build yet; leave redis unset for the embedded hot path"
        );
    }
    let engine = engines.get(store_dir)?;
    let idempotency = EmbeddedIdempotency::new(engine.clone());
    let ledger = EmbeddedLedger::open(engine.clone())?;
    Ok(Backends {
        log: Arc::new(embedded_log.clone()),
        embedded_log: Some(embedded_log),
        ledger: Arc::new(ledger.clone()),
        embedded_ledger: Some(ledger),
        idempotency: Arc::new(idempotency.clone()),
        embedded_idempotency: Some(idempotency),
        orders: Arc::new(EmbeddedOrderStore::new(engine.clone())),
        feed: Arc::new(EmbeddedStatusFeed::new(4096)),
        outbox: Arc::new(EmbeddedOutbox::new(engine.clone())),
        provider: Arc::new(SimulatedProvider::new(Arc::new(
            EmbeddedPaymentJournal::new(engine),
        ))),
        catalog: Arc::new(catalog),
    })
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
            Validate::new(b.catalog.clone(), &config.currencies, &config.countries),
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
            ),
        )),
        "charge" => Arc::new(OnOrders::new(
            route,
            Charge::new(b.provider.clone(), b.ledger.clone()),
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

/// Creates the topics and seeds the catalog's stock for SKUs that have none yet.
pub async fn prepare(b: &Backends) -> Result<usize> {
    b.log.ensure_topics(&topology::all_topics()).await?;
    let items: Vec<(String, u64)> = b
        .catalog
        .items()
        .iter()
        .map(|i| (i.sku.clone(), i.stock))
        .collect();
    Ok(b.ledger.seed(&items).await?)
}
