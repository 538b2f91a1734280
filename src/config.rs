//! The one typed configuration: defaults, then the file, then `ORDERFLOW_*` environment
//! variables, then flags; validated at start with errors that name the bad key.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Where the default config file lives, relative to the working directory.
pub const DEFAULT_FILE: &str = "config/orderflow.toml";
/// Where the promotion codes live by default; without this file no code is accepted.
pub const DEFAULT_PROMOTIONS: &str = "config/promotions.json";
/// The signing secret used when none is configured: fine on a laptop, refused nowhere, warned about.
pub const DEV_SECRET: &str = "orderflow-dev-secret-change-me";

/// Every setting, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// API listen address.
    pub listen: SocketAddr,
    /// Log backend URL: `embedded://DIR` or `kafka://HOST:PORT[,HOST:PORT…]`.
    pub log: String,
    /// Kafka: outputs and input offsets of a batch commit in one transaction.
    pub exactly_once: bool,
    /// Kafka: replicas of each topic created at start (-1: the broker's default).
    pub kafka_replication_factor: i32,
    /// Kafka: how long an append waits for the broker before the API answers 503.
    pub kafka_message_timeout: Duration,
    /// Kafka: a worker silent this long loses its partitions to the others.
    pub kafka_session_timeout: Duration,
    /// Order store URL: `embedded://DIR` or `scylla://HOST:PORT[,HOST:PORT…][/KEYSPACE]`.
    pub store: String,
    /// Replicas of each order row when the ScyllaDB keyspace is created.
    pub scylla_replication_factor: u32,
    /// Redis URL for the hot path; absent means embedded.
    pub redis: Option<String>,
    /// The warehouse whose stock this process serves: the hash tag of its Redis keys.
    pub redis_warehouse: String,
    /// How often lapsed stock holds are released and their orders rejected.
    pub reservation_sweep: Duration,
    /// Checkouts per second one customer may post (0: no limit).
    pub rate_limit_per_second: u32,
    /// Checkouts a customer may post at once (the bucket's size).
    pub rate_limit_burst: u32,
    /// Partitions per topic.
    pub partitions: u32,
    /// HS256 secret for customer tokens.
    pub jwt_secret: String,
    /// Catalog file (JSON).
    pub catalog: PathBuf,
    /// Promotion codes file (JSON); none when the default file is absent.
    pub promotions: PathBuf,
    /// Flat tax rate in basis points (825 = 8.25 %).
    pub tax_rate_bps: u32,
    /// Flat shipping fee in minor units.
    pub shipping_fee_minor: i64,
    /// Currencies the store sells in.
    pub currencies: Vec<String>,
    /// Countries the store ships to (ISO 3166-1 alpha-2).
    pub countries: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long stock is held for an order that has not been charged; the expiry sweeper then
    /// releases it and rejects the order with `reservation_expired`.
    pub reservation_ttl: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Attempts per record before dead-lettering.
    pub retry_max_attempts: u32,
    /// First retry backoff.
    pub retry_base: Duration,
    /// Longest retry backoff.
    pub retry_max: Duration,
    /// Records per stage batch.
    pub batch_size: usize,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Page cache of the embedded stores' database, MiB.
    pub cache_mib: usize,
    /// Newest records of the embedded log kept in memory for the stages, MiB.
    pub log_cache_mib: usize,
    /// Committed log records older than this are deleted from the embedded log.
    pub log_retention: Duration,
}

/// One layer of settings; every key optional. The file is parsed into this with unknown keys
/// refused, so a typo names itself.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// See [`Config`]; `listen`.
    pub listen: Option<String>,
    /// See [`Config`]; `log`.
    pub log: Option<String>,
    /// See [`Config`]; `exactly_once`.
    pub exactly_once: Option<bool>,
    /// See [`Config`]; `kafka_replication_factor`.
    pub kafka_replication_factor: Option<i32>,
    /// See [`Config`]; `kafka_message_timeout_ms`.
    pub kafka_message_timeout_ms: Option<u64>,
    /// See [`Config`]; `kafka_session_timeout_ms`.
    pub kafka_session_timeout_ms: Option<u64>,
    /// See [`Config`]; `store`.
    pub store: Option<String>,
    /// See [`Config`]; `scylla_replication_factor`.
    pub scylla_replication_factor: Option<u32>,
    /// See [`Config`]; `redis`.
    pub redis: Option<String>,
    /// See [`Config`]; `redis_warehouse`.
    pub redis_warehouse: Option<String>,
    /// See [`Config`]; `reservation_sweep_ms`.
    pub reservation_sweep_ms: Option<u64>,
    /// See [`Config`]; `rate_limit_per_second`.
    pub rate_limit_per_second: Option<u32>,
    /// See [`Config`]; `rate_limit_burst`.
    pub rate_limit_burst: Option<u32>,
    /// See [`Config`]; `partitions`.
    pub partitions: Option<u32>,
    /// See [`Config`]; `jwt_secret`.
    pub jwt_secret: Option<String>,
    /// See [`Config`]; `catalog`.
    pub catalog: Option<PathBuf>,
    /// See [`Config`]; `promotions`.
    pub promotions: Option<PathBuf>,
    /// See [`Config`]; `tax_rate_bps`.
    pub tax_rate_bps: Option<u32>,
    /// See [`Config`]; `shipping_fee_minor`.
    pub shipping_fee_minor: Option<i64>,
    /// See [`Config`]; `currencies`.
    pub currencies: Option<Vec<String>>,
    /// See [`Config`]; `countries`.
    pub countries: Option<Vec<String>>,
    /// See [`Config`]; `max_body_bytes`.
    pub max_body_bytes: Option<usize>,
    /// See [`Config`]; `reservation_ttl_secs`.
    pub reservation_ttl_secs: Option<u64>,
    /// See [`Config`]; `idempotency_ttl_secs`.
    pub idempotency_ttl_secs: Option<u64>,
    /// See [`Config`]; `retry_max_attempts`.
    pub retry_max_attempts: Option<u32>,
    /// See [`Config`]; `retry_base_ms`.
    pub retry_base_ms: Option<u64>,
    /// See [`Config`]; `retry_max_ms`.
    pub retry_max_ms: Option<u64>,
    /// See [`Config`]; `batch_size`.
    pub batch_size: Option<usize>,
    /// See [`Config`]; `log_format`.
    pub log_format: Option<String>,
    /// See [`Config`]; `cache_mib`.
    pub cache_mib: Option<usize>,
    /// See [`Config`]; `log_cache_mib`.
    pub log_cache_mib: Option<usize>,
    /// See [`Config`]; `log_retention_secs`.
    pub log_retention_secs: Option<u64>,
}

impl Layer {
    /// Values from `ORDERFLOW_<KEY>` variables of `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        fn get<T: FromStr>(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            let var = format!("ORDERFLOW_{}", key.to_ascii_uppercase());
            match env(&var) {
                None => Ok(None),
                Some(raw) => raw
                    .parse::<T>()
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("invalid {var} ({key}): {e}")),
            }
        }
        let list = |key: &str| -> Option<Vec<String>> {
            env(&format!("ORDERFLOW_{}", key.to_ascii_uppercase())).map(|raw| {
                raw.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        Ok(Self {
            listen: get(env, "listen")?,
            log: get(env, "log")?,
            exactly_once: get(env, "exactly_once")?,
            kafka_replication_factor: get(env, "kafka_replication_factor")?,
            kafka_message_timeout_ms: get(env, "kafka_message_timeout_ms")?,
            kafka_session_timeout_ms: get(env, "kafka_session_timeout_ms")?,
            store: get(env, "store")?,
            scylla_replication_factor: get(env, "scylla_replication_factor")?,
            redis: get(env, "redis")?,
            redis_warehouse: get(env, "redis_warehouse")?,
            reservation_sweep_ms: get(env, "reservation_sweep_ms")?,
            rate_limit_per_second: get(env, "rate_limit_per_second")?,
            rate_limit_burst: get(env, "rate_limit_burst")?,
            partitions: get(env, "partitions")?,
            jwt_secret: get(env, "jwt_secret")?,
            catalog: get(env, "catalog")?,
            promotions: get(env, "promotions")?,
            tax_rate_bps: get(env, "tax_rate_bps")?,
            shipping_fee_minor: get(env, "shipping_fee_minor")?,
            currencies: list("currencies"),
            countries: list("countries"),
            max_body_bytes: get(env, "max_body_bytes")?,
            reservation_ttl_secs: get(env, "reservation_ttl_secs")?,
            idempotency_ttl_secs: get(env, "idempotency_ttl_secs")?,
            retry_max_attempts: get(env, "retry_max_attempts")?,
            retry_base_ms: get(env, "retry_base_ms")?,
            retry_max_ms: get(env, "retry_max_ms")?,
            batch_size: get(env, "batch_size")?,
            log_format: get(env, "log_format")?,
            cache_mib: get(env, "cache_mib")?,
            log_cache_mib: get(env, "log_cache_mib")?,
            log_retention_secs: get(env, "log_retention_secs")?,
        })
    }

    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// This layer with `over`'s values on top.
    pub fn merge(self, over: Layer) -> Layer {
        macro_rules! pick {
            ($($f:ident),*) => { Layer { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            listen,
            log,
            exactly_once,
            kafka_replication_factor,
            kafka_message_timeout_ms,
            kafka_session_timeout_ms,
            store,
            scylla_replication_factor,
            redis,
            redis_warehouse,
            reservation_sweep_ms,
            rate_limit_per_second,
            rate_limit_burst,
            partitions,
            jwt_secret,
            catalog,
            promotions,
            tax_rate_bps,
            shipping_fee_minor,
            currencies,
            countries,
            max_body_bytes,
            reservation_ttl_secs,
            idempotency_ttl_secs,
            retry_max_attempts,
            retry_base_ms,
            retry_max_ms,
            batch_size,
            log_format,
            cache_mib,
            log_cache_mib,
            log_retention_secs
        )
    }
}

impl Config {
    /// Resolves the layers: defaults ← `file` (or the default file if present) ← env ← flags.
    pub fn load(file: Option<&Path>, env: Layer, flags: Layer) -> Result<Self> {
        let file_layer = match file {
            Some(path) => Layer::from_file(path)?,
            None if Path::new(DEFAULT_FILE).exists() => Layer::from_file(Path::new(DEFAULT_FILE))?,
            None => Layer::default(),
        };
        Self::resolve(file_layer.merge(env).merge(flags))
    }

    /// Applies defaults and validates.
    pub fn resolve(l: Layer) -> Result<Self> {
        let listen_raw = l.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_raw.parse().map_err(|e| {
            anyhow::anyhow!(
                "invalid listen {listen_raw:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"
            )
        })?;
        let config = Self {
            listen,
            log: l.log.unwrap_or_else(|| "embedded://./data".into()),
            exactly_once: l.exactly_once.unwrap_or(false),
            kafka_replication_factor: l.kafka_replication_factor.unwrap_or(-1),
            kafka_message_timeout: Duration::from_millis(
                l.kafka_message_timeout_ms.unwrap_or(5_000),
            ),
            kafka_session_timeout: Duration::from_millis(
                l.kafka_session_timeout_ms.unwrap_or(10_000),
            ),
            store: l.store.unwrap_or_else(|| "embedded://./data".into()),
            scylla_replication_factor: l.scylla_replication_factor.unwrap_or(1),
            redis: l.redis.filter(|r| !r.is_empty()),
            redis_warehouse: l.redis_warehouse.unwrap_or_else(|| "main".into()),
            reservation_sweep: Duration::from_millis(l.reservation_sweep_ms.unwrap_or(1_000)),
            rate_limit_per_second: l.rate_limit_per_second.unwrap_or(0),
            rate_limit_burst: l.rate_limit_burst.unwrap_or(20),
            partitions: l.partitions.unwrap_or(4),
            jwt_secret: l.jwt_secret.unwrap_or_else(|| DEV_SECRET.into()),
            catalog: l
                .catalog
                .unwrap_or_else(|| PathBuf::from("config/catalog.json")),
            promotions: l
                .promotions
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PROMOTIONS)),
            tax_rate_bps: l.tax_rate_bps.unwrap_or(825),
            shipping_fee_minor: l.shipping_fee_minor.unwrap_or(500),
            currencies: l.currencies.unwrap_or_else(|| vec!["USD".into()]),
            countries: l
                .countries
                .unwrap_or_else(|| vec!["US".into(), "CA".into()]),
            max_body_bytes: l.max_body_bytes.unwrap_or(64 * 1024),
            reservation_ttl: Duration::from_secs(l.reservation_ttl_secs.unwrap_or(900)),
            idempotency_ttl: Duration::from_secs(l.idempotency_ttl_secs.unwrap_or(86_400)),
            retry_max_attempts: l.retry_max_attempts.unwrap_or(5),
            retry_base: Duration::from_millis(l.retry_base_ms.unwrap_or(20)),
            retry_max: Duration::from_millis(l.retry_max_ms.unwrap_or(2_000)),
            batch_size: l.batch_size.unwrap_or(512),
            log_format: l.log_format.unwrap_or_else(|| "text".into()),
            cache_mib: l.cache_mib.unwrap_or(32),
            log_cache_mib: l.log_cache_mib.unwrap_or(16),
            log_retention: Duration::from_secs(l.log_retention_secs.unwrap_or(600)),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if embedded_dir(&self.log).is_none() {
            if orderflow_pipeline::KafkaConfig::from_url(&self.log, self.partitions).is_err() {
                bail!(
                    "invalid log {:?}: expected embedded://DIR or kafka://HOST:PORT[,HOST:PORT…]",
                    self.log
                );
            }
        } else if self.exactly_once {
            bail!(
                "invalid exactly_once: transactions need the Kafka log (log = kafka://…); the \
                 embedded log already commits outputs and offsets in one write"
            );
        }
        if self.kafka_replication_factor == 0 || self.kafka_replication_factor < -1 {
            bail!(
                "invalid kafka_replication_factor {}: at least 1, or -1 for the broker's default",
                self.kafka_replication_factor
            );
        }
        if self.kafka_message_timeout < Duration::from_millis(100)
            || self.kafka_message_timeout > Duration::from_secs(300)
        {
            bail!("invalid kafka_message_timeout_ms: must be 100 to 300000");
        }
        // Brokers refuse sessions shorter than group.min.session.timeout.ms (6 s by default).
        if self.kafka_session_timeout < Duration::from_secs(6)
            || self.kafka_session_timeout > Duration::from_secs(300)
        {
            bail!("invalid kafka_session_timeout_ms: must be 6000 to 300000");
        }
        if embedded_dir(&self.store).is_none() && !self.store.starts_with("scylla://") {
            bail!(
                "invalid store {:?}: expected embedded://DIR or scylla://HOST:PORT[/KEYSPACE]",
                self.store
            );
        }
        if !(1..=10).contains(&self.scylla_replication_factor) {
            bail!(
                "invalid scylla_replication_factor {}: must be 1 to 10",
                self.scylla_replication_factor
            );
        }
        if let Some(redis) = &self.redis
            && !(redis.starts_with("redis://")
                || redis.starts_with("rediss://")
                || redis.starts_with("redis-cluster://"))
        {
            bail!(
                "invalid redis {redis:?}: expected redis://HOST:PORT (or redis-cluster://HOST:PORT)"
            );
        }
        if self.redis_warehouse.is_empty()
            || self.redis_warehouse.len() > 64
            || !self
                .redis_warehouse
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "invalid redis_warehouse {:?}: 1 to 64 letters, digits, '-' or '_'",
                self.redis_warehouse
            );
        }
        if self.reservation_sweep < Duration::from_millis(10)
            || self.reservation_sweep > Duration::from_secs(3600)
        {
            bail!("invalid reservation_sweep_ms: must be 10 to 3600000");
        }
        if self.rate_limit_per_second > 1_000_000 {
            bail!("invalid rate_limit_per_second: must be at most 1000000 (0 turns it off)");
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            bail!("invalid rate_limit_burst: must be at least 1 while a rate limit is set");
        }
        if !(1..=256).contains(&self.partitions) {
            bail!("invalid partitions {}: must be 1 to 256", self.partitions);
        }
        if self.jwt_secret.len() < 16 {
            bail!("invalid jwt_secret: must be at least 16 bytes");
        }
        if self.tax_rate_bps > 10_000 {
            bail!(
                "invalid tax_rate_bps {}: must be 0 to 10000",
                self.tax_rate_bps
            );
        }
        if self.shipping_fee_minor < 0 {
            bail!(
                "invalid shipping_fee_minor {}: must not be negative",
                self.shipping_fee_minor
            );
        }
        if self.currencies.is_empty()
            || self
                .currencies
                .iter()
                .any(|c| orderflow_domain::Currency::parse(c).is_err())
        {
            bail!(
                "invalid currencies {:?}: ISO 4217 codes such as USD",
                self.currencies
            );
        }
        if self.countries.is_empty()
            || self
                .countries
                .iter()
                .any(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            bail!(
                "invalid countries {:?}: ISO 3166-1 alpha-2 codes such as US",
                self.countries
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            bail!(
                "invalid max_body_bytes {}: must be 1024 to 16777216",
                self.max_body_bytes
            );
        }
        if self.reservation_ttl.is_zero() || self.reservation_ttl > Duration::from_secs(7 * 86_400)
        {
            bail!("invalid reservation_ttl_secs: must be 1 to 604800 (7 days)");
        }
        if self.idempotency_ttl.is_zero() || self.idempotency_ttl > Duration::from_secs(30 * 86_400)
        {
            bail!("invalid idempotency_ttl_secs: must be 1 to 2592000 (30 days)");
        }
        if self.log_retention > Duration::from_secs(365 * 86_400) {
            bail!("invalid log_retention_secs: must be at most 31536000 (a year)");
        }
        if self.retry_max_attempts == 0 {
            bail!("invalid retry_max_attempts: must be at least 1");
        }
        if self.retry_base.is_zero() || self.retry_max < self.retry_base {
            bail!("invalid retry_base_ms / retry_max_ms: need 0 < retry_base_ms <= retry_max_ms");
        }
        if !(1..=65_536).contains(&self.batch_size) {
            bail!("invalid batch_size {}: must be 1 to 65536", self.batch_size);
        }
        if !(8..=65_536).contains(&self.cache_mib) {
            bail!("invalid cache_mib {}: must be 8 to 65536", self.cache_mib);
        }
        if !(1..=65_536).contains(&self.log_cache_mib) {
            bail!(
                "invalid log_cache_mib {}: must be 1 to 65536",
                self.log_cache_mib
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("invalid log_format {:?}: text or json", self.log_format);
        }
        Ok(())
    }
}

/// The directory of an `embedded://DIR` URL.
pub fn embedded_dir(url: &str) -> Option<PathBuf> {
    url.strip_prefix("embedded://")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Layer> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Layer::from_env(&move |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::resolve(Layer::default()).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(embedded_dir(&c.log), Some(PathBuf::from("./data")));
        assert!(c.redis.is_none());
        let kafka = Config::resolve(Layer {
            log: Some("kafka://a:9092,b:9092".into()),
            exactly_once: Some(true),
            ..Layer::default()
        })
        .expect("kafka is a valid log");
        assert!(kafka.exactly_once && embedded_dir(&kafka.log).is_none());
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let file: Layer =
            toml::from_str("partitions = 2\ntax_rate_bps = 100\nlisten = \"127.0.0.1:1\"")
                .expect("toml");
        let env = env(&[
            ("ORDERFLOW_PARTITIONS", "3"),
            ("ORDERFLOW_COUNTRIES", "US, DE"),
        ])
        .expect("env");
        let flags = Layer {
            partitions: Some(5),
            ..Layer::default()
        };
        let c = Config::resolve(file.merge(env).merge(flags)).expect("valid");
        assert_eq!((c.partitions, c.tax_rate_bps, c.listen.port()), (5, 100, 1));
        assert_eq!(c.countries, ["US", "DE"]);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = env(&[("ORDERFLOW_PARTITIONS", "many")])
            .expect_err("refused")
            .to_string();
        assert!(e.contains("ORDERFLOW_PARTITIONS"), "{e}");
        let e = toml::from_str::<Layer>("partitionz = 1")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("partitionz"), "{e}");
        for (layer, key) in [
            (
                Layer {
                    partitions: Some(0),
                    ..Layer::default()
                },
                "partitions",
            ),
            (
                Layer {
                    listen: Some("nowhere".into()),
                    ..Layer::default()
                },
                "listen",
            ),
            (
                Layer {
                    log: Some("ftp://x".into()),
                    ..Layer::default()
                },
                "log",
            ),
            (
                Layer {
                    jwt_secret: Some("short".into()),
                    ..Layer::default()
                },
                "jwt_secret",
            ),
            (
                Layer {
                    tax_rate_bps: Some(10_001),
                    ..Layer::default()
                },
                "tax_rate_bps",
            ),
            (
                Layer {
                    log_format: Some("xml".into()),
                    ..Layer::default()
                },
                "log_format",
            ),
            (
                Layer {
                    redis: Some("localhost:6379".into()),
                    ..Layer::default()
                },
                "redis",
            ),
            (
                Layer {
                    redis_warehouse: Some("{tag}".into()),
                    ..Layer::default()
                },
                "redis_warehouse",
            ),
            (
                Layer {
                    log: Some("kafka://broker".into()),
                    ..Layer::default()
                },
                "log",
            ),
            (
                Layer {
                    exactly_once: Some(true),
                    ..Layer::default()
                },
                "exactly_once",
            ),
            (
                Layer {
                    log: Some("kafka://broker:9092".into()),
                    kafka_replication_factor: Some(0),
                    ..Layer::default()
                },
                "kafka_replication_factor",
            ),
        ] {
            let e = Config::resolve(layer).expect_err("refused").to_string();
            assert!(e.contains(key), "{e} should name {key}");
        }
    }
}
