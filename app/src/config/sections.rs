//! One section per component, each with its defaults (the values a run with no file at all
//! uses) and the checks its values must pass. A key is declared here once: its field, its doc
//! and its default; the file, the environment and the flags all fill the same field.

use super::url::{LogUrl, RedisUrl, StoreUrl, is_origin, list, optional_redis};
use super::{ConfigError, Invalid};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[api]`: the HTTP listener every process has, and the API's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on; port 0 picks a free one. Workers serve `/metrics`, `/healthz` and
    /// `/readyz` here, the API process everything.
    pub listen: SocketAddr,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// How long an `Idempotency-Key` is remembered, in seconds.
    pub idempotency_ttl_secs: u64,
    /// Storefront origins (`https://shop.example`) whose pages may call the API from a browser;
    /// `*` alone allows any origin; empty (the default) allows none.
    #[serde(deserialize_with = "list")]
    pub cors_origins: Vec<String>,
    /// How long (ms) a client may take to send a request's headers before its connection is
    /// closed.
    pub header_read_timeout_ms: u64,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// API requests handled at once; one more is answered 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Long-polls (`GET /v1/orders/{id}?wait=`) held open at once; one more is answered 503
    /// with `Retry-After`.
    pub max_long_polls: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            idempotency_ttl_secs: 86_400,
            cors_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            max_connections: 4_096,
            max_in_flight: 1_024,
            max_long_polls: 2_048,
        }
    }
}

/// Where the process runs (`env`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// A laptop or a test: development defaults are accepted, with warnings.
    #[default]
    Development,
    /// A real deployment: the development secret and CORS for any origin are refused.
    Production,
}

/// `[log]`: the order log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `embedded://DIR` or `kafka://HOST:PORT[,HOST:PORT…]`.
    pub url: LogUrl,
    /// Partitions of each topic created at start.
    pub partitions: u32,
    /// Embedded: newest records kept in memory for the stages, MiB.
    pub cache_mib: usize,
    /// Embedded: committed records older than this many seconds are deleted.
    pub retention_secs: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            url: LogUrl::Embedded("./data".into()),
            partitions: 4,
            cache_mib: 16,
            retention_secs: 600,
        }
    }
}

/// `[kafka]`: the Kafka log adapter, used when `log.url` is `kafka://…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Commit each batch's outputs and input offsets in one transaction.
    pub exactly_once: bool,
    /// Replicas of each topic created at start (-1: the broker's default).
    pub replication_factor: i32,
    /// How long an append waits for the broker before the API answers 503, in ms.
    pub message_timeout_ms: u64,
    /// A worker silent this long (ms) loses its partitions to the others.
    pub session_timeout_ms: u64,
    /// How long (ms) the producer gathers messages into one request before sending.
    pub linger_ms: u64,
    /// How long (ms) a broker may hold a fetch that finds nothing new.
    pub fetch_wait_ms: u64,
    /// How the producer compresses its batches: `lz4`, `snappy`, `gzip` or `none`.
    pub compression: orderflow_pipeline::Compression,
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            exactly_once: false,
            replication_factor: -1,
            message_timeout_ms: 5_000,
            session_timeout_ms: 10_000,
            linger_ms: 5,
            fetch_wait_ms: 20,
            compression: orderflow_pipeline::Compression::default(),
        }
    }
}

/// `[store]`: the durable order views (and, embedded, the other stores beside them).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded://DIR` or `scylla://HOST:PORT[,HOST:PORT…][/KEYSPACE]`.
    pub url: StoreUrl,
    /// Page cache of the embedded stores' database, MiB.
    pub cache_mib: usize,
    /// Embedded stores: how long the views of settled orders and the settled stock holds are
    /// kept, counted from the order's acceptance (the ScyllaDB store is the archive).
    pub retention_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: StoreUrl::Embedded("./data".into()),
            cache_mib: 32,
            retention_secs: 7 * 86_400,
        }
    }
}

/// `[scylla]`: the ScyllaDB adapter, used when `store.url` is `scylla://…`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaSection {
    /// Replicas per order row when the keyspace is created.
    pub replication_factor: u32,
}

impl Default for ScyllaSection {
    fn default() -> Self {
        Self {
            replication_factor: 1,
        }
    }
}

/// `[redis]`: the hot path (stock, keys, hot views, feed, limits) on Redis instead of embedded.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    /// `redis://HOST:PORT`; absent or empty: the embedded hot path.
    #[serde(deserialize_with = "optional_redis")]
    pub url: Option<RedisUrl>,
    /// The warehouse this process serves: the hash tag of its keys (`{main}:stock:SKU`).
    pub warehouse: String,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: None,
            warehouse: "main".into(),
        }
    }
}

/// `[retry]`: what the stage runner does with a record that failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per record before it is dead-lettered.
    pub max_attempts: u32,
    /// First backoff, ms.
    pub base_ms: u64,
    /// Longest backoff, ms.
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_ms: 20,
            max_ms: 2_000,
        }
    }
}

/// `[stages]`: how the order stages work.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagesConfig {
    /// Records per stage batch.
    pub batch_size: usize,
    /// Seconds stock is held for an order not yet charged; then the hold is released and the
    /// order rejected with `reservation_expired`.
    pub reservation_ttl_secs: u64,
    /// How often lapsed holds are looked for, ms.
    pub reservation_sweep_ms: u64,
    /// Currencies the store sells in (ISO 4217).
    #[serde(deserialize_with = "list")]
    pub currencies: Vec<String>,
    /// Countries the store ships to (ISO 3166-1 alpha-2).
    #[serde(deserialize_with = "list")]
    pub countries: Vec<String>,
}

impl Default for StagesConfig {
    fn default() -> Self {
        Self {
            batch_size: 512,
            reservation_ttl_secs: 900,
            reservation_sweep_ms: 1_000,
            currencies: vec!["USD".into()],
            countries: vec!["US".into(), "CA".into(), "DE".into()],
        }
    }
}

/// `[pricing]`: the pricing tables' upkeep.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// Seconds between looks at the four table files; a changed text is checked and swapped in
    /// whole (0: only `POST /v1/admin/pricing/reload` reloads).
    pub reload_secs: u64,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self { reload_secs: 5 }
    }
}

impl PricingConfig {
    /// How often to look, if at all.
    pub fn reload_every(&self) -> Option<std::time::Duration> {
        (self.reload_secs > 0).then(|| std::time::Duration::from_secs(self.reload_secs))
    }
}

/// `[catalog]`, `[promotions]`, `[tax]` and `[shipping]`: a data table read at start, and
/// again, all four, on `POST /v1/admin/pricing/reload`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// The JSON file; absent: `config/<name>.json` under the working directory if it exists,
    /// else the demo table built into the binary.
    pub file: Option<PathBuf>,
}

/// `[metrics]`: what `/metrics` reports beyond the counters of the code paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A SKU with fewer units available than this is reported as
    /// `orderflow_stock_available{sku}` (by the processes that serve the API).
    pub low_stock_threshold: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            low_stock_threshold: 100,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[logging]`: the process's own log lines (levels come from `RUST_LOG`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` or `json`.
    pub format: LogFormat,
}

/// `Ok` if `ok`, else the error naming `key` and `why`.
pub(super) fn check(
    ok: bool,
    key: &'static str,
    why: impl Into<String>,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(Invalid {
            key,
            why: why.into(),
        }))
    }
}

impl ApiConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1024..=16 * 1024 * 1024).contains(&self.max_body_bytes),
            "api.max_body_bytes",
            "must be 1024 to 16777216",
        )?;
        check(
            (1..=30 * 86_400).contains(&self.idempotency_ttl_secs),
            "api.idempotency_ttl_secs",
            "must be 1 to 2592000 (30 days)",
        )?;
        let any = self.cors_origins.iter().any(|o| o == "*");
        check(
            !any || self.cors_origins.len() == 1,
            "api.cors_origins",
            format!(
                "{:?}: `*` allows every origin and stands alone",
                self.cors_origins
            ),
        )?;
        check(
            (100..=300_000).contains(&self.header_read_timeout_ms),
            "api.header_read_timeout_ms",
            "must be 100 to 300000",
        )?;
        check(
            (1..=1_000_000).contains(&self.max_connections),
            "api.max_connections",
            "must be 1 to 1000000",
        )?;
        check(
            (1..=1_000_000).contains(&self.max_in_flight),
            "api.max_in_flight",
            "must be 1 to 1000000",
        )?;
        check(
            (1..=1_000_000).contains(&self.max_long_polls),
            "api.max_long_polls",
            "must be 1 to 1000000",
        )?;
        let bad = self
            .cors_origins
            .iter()
            .find(|o| *o != "*" && !is_origin(o));
        check(
            bad.is_none(),
            "api.cors_origins",
            format!(
                "{:?} is not an origin: scheme and host, e.g. https://shop.example or \
                 http://localhost:3000, with no path",
                bad.map(String::as_str).unwrap_or_default()
            ),
        )
    }

    /// How long an `Idempotency-Key` is remembered.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=256).contains(&self.partitions),
            "log.partitions",
            "must be 1 to 256",
        )?;
        check(
            (1..=65_536).contains(&self.cache_mib),
            "log.cache_mib",
            "must be 1 to 65536",
        )?;
        check(
            self.retention_secs <= 365 * 86_400,
            "log.retention_secs",
            "must be at most 31536000 (a year)",
        )
    }

    /// How long committed records are kept on the embedded log.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

impl KafkaSection {
    pub(crate) fn validate(&self, log: &LogUrl) -> Result<(), ConfigError> {
        check(
            !self.exactly_once || matches!(log, LogUrl::Kafka(_)),
            "kafka.exactly_once",
            "transactions need the Kafka log (log.url = kafka://…); the embedded log already \
             commits outputs and offsets in one write",
        )?;
        check(
            self.replication_factor >= 1 || self.replication_factor == -1,
            "kafka.replication_factor",
            "at least 1, or -1 for the broker's default",
        )?;
        check(
            (100..=300_000).contains(&self.message_timeout_ms),
            "kafka.message_timeout_ms",
            "must be 100 to 300000",
        )?;
        // Brokers refuse sessions shorter than group.min.session.timeout.ms (6 s by default).
        check(
            (6_000..=300_000).contains(&self.session_timeout_ms),
            "kafka.session_timeout_ms",
            "must be 6000 to 300000",
        )?;
        check(
            self.linger_ms <= 1_000,
            "kafka.linger_ms",
            "must be 0 to 1000",
        )?;
        check(
            (1..=1_000).contains(&self.fetch_wait_ms),
            "kafka.fetch_wait_ms",
            "must be 1 to 1000",
        )
    }
}

impl StoreConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (8..=65_536).contains(&self.cache_mib),
            "store.cache_mib",
            "must be 8 to 65536",
        )?;
        check(
            (60..=10 * 365 * 86_400).contains(&self.retention_secs),
            "store.retention_secs",
            "must be 60 (a minute) to 315360000 (ten years)",
        )
    }

    /// How long the embedded stores keep settled orders' views and holds.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

impl ScyllaSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=10).contains(&self.replication_factor),
            "scylla.replication_factor",
            "must be 1 to 10",
        )
    }
}

impl RedisSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            !self.warehouse.is_empty()
                && self.warehouse.len() <= 64
                && self
                    .warehouse
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "redis.warehouse",
            format!("{:?}: 1 to 64 letters, digits, '-' or '_'", self.warehouse),
        )
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.max_attempts >= 1,
            "retry.max_attempts",
            "must be at least 1",
        )?;
        check(
            self.base_ms > 0 && self.base_ms <= self.max_ms,
            "retry.base_ms",
            "need 0 < retry.base_ms <= retry.max_ms",
        )
    }
}

impl StagesConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1..=65_536).contains(&self.batch_size),
            "stages.batch_size",
            "must be 1 to 65536",
        )?;
        check(
            (1..=7 * 86_400).contains(&self.reservation_ttl_secs),
            "stages.reservation_ttl_secs",
            "must be 1 to 604800 (7 days)",
        )?;
        check(
            (10..=3_600_000).contains(&self.reservation_sweep_ms),
            "stages.reservation_sweep_ms",
            "must be 10 to 3600000",
        )?;
        check(
            !self.currencies.is_empty()
                && self
                    .currencies
                    .iter()
                    .all(|c| orderflow_domain::Currency::parse(c).is_ok()),
            "stages.currencies",
            format!("{:?}: ISO 4217 codes such as USD", self.currencies),
        )?;
        check(
            !self.countries.is_empty()
                && self
                    .countries
                    .iter()
                    .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())),
            "stages.countries",
            format!("{:?}: ISO 3166-1 alpha-2 codes such as US", self.countries),
        )
    }

    /// How long stock is held for an order that is not charged yet.
    pub fn reservation_ttl(&self) -> Duration {
        Duration::from_secs(self.reservation_ttl_secs)
    }

    /// How often lapsed holds are looked for.
    pub fn reservation_sweep(&self) -> Duration {
        Duration::from_millis(self.reservation_sweep_ms)
    }
}
