//! The one typed configuration: built-in defaults, then a TOML file, then `ORDERFLOW_*`
//! environment variables, then command-line flags — layered by figment in one extraction, and
//! checked at start with errors that name the bad key.
//!
//! - [`sections`]: one struct per component (`[api]`, `[log]`, `[redis]`, …) with its defaults;
//!   [`limits`] holds `[limits]`, [`jwt`] `[jwt]` (token keys and their rotation).
//! - [`url`]: backend URLs, parsed once into [`LogUrl`], [`StoreUrl`] and [`RedisUrl`].
//! - [`delivery`]: `[webhook]` and `[outbox]`.
//! - `env`: the `ORDERFLOW_*` layer (variables to key paths, unknown ones refused).
//! - [`flags`]: the command line's [`Flags`], the last layer.
//!
//! Environment variables name a section and a key: `ORDERFLOW_<SECTION>_<KEY>`, e.g.
//! `ORDERFLOW_RETRY_BASE_MS=5` sets `[retry] base_ms`. A section's name alone sets its main key:
//! `ORDERFLOW_LOG`, `ORDERFLOW_STORE` and `ORDERFLOW_REDIS` its `url`, `ORDERFLOW_CATALOG` and
//! `ORDERFLOW_PROMOTIONS` its `file`, `ORDERFLOW_LIMITS` its `switch`. `ORDERFLOW_CONFIG` names
//! the file itself.

pub mod delivery;
mod env;
pub mod flags;
pub mod jwt;
pub mod limits;
pub mod sections;
pub mod url;

use figment::Figment;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use delivery::{OutboxConfig, WebhookConfig};
pub use flags::Flags;
pub use jwt::{DEV_SECRET, JwtConfig};
pub use limits::LimitsConfig;
use limits::Shorthand;
pub use sections::{
    ApiConfig, Deployment, KafkaSection, LogConfig, LogFormat, LoggingConfig, MetricsConfig,
    PricingConfig, RedisSection, RetryConfig, ScyllaSection, StagesConfig, StoreConfig,
    TableConfig,
};
pub use url::{LogUrl, RedisUrl, StoreUrl, UrlError};

/// Where the config file is looked for when none is named, relative to the working directory.
pub const DEFAULT_FILE: &str = "config/orderflow.toml";

/// The sections, each with the key its bare environment variable (`ORDERFLOW_<SECTION>`) sets.
pub(super) const SECTIONS: [(&str, Option<&str>); 19] = [
    ("api", None),
    ("limits", Some("switch")),
    ("jwt", None),
    ("log", Some("url")),
    ("kafka", None),
    ("store", Some("url")),
    ("scylla", None),
    ("redis", Some("url")),
    ("retry", None),
    ("stages", None),
    ("pricing", None),
    ("catalog", Some("file")),
    ("promotions", Some("file")),
    ("tax", Some("file")),
    ("shipping", Some("file")),
    ("logging", None),
    ("metrics", None),
    ("webhook", Some("url")),
    ("outbox", None),
];

/// Every setting of a process, resolved and checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `env`: `development` (the default) or `production`, which refuses settings only fit for
    /// development.
    pub env: Deployment,
    /// `[api]`: listener and API limits.
    pub api: ApiConfig,
    /// `[limits]`: rate limits and the backlog bound (`limits = "off"` in the file is read as
    /// its `switch`, by `limits::Shorthand`).
    pub limits: LimitsConfig,
    /// `[jwt]`: token signing.
    pub jwt: JwtConfig,
    /// `[log]`: the order log.
    pub log: LogConfig,
    /// `[kafka]`: the Kafka adapter.
    pub kafka: KafkaSection,
    /// `[store]`: the durable order views.
    pub store: StoreConfig,
    /// `[scylla]`: the ScyllaDB adapter.
    pub scylla: ScyllaSection,
    /// `[redis]`: the Redis hot path.
    pub redis: RedisSection,
    /// `[retry]`: the stage runner's retries.
    pub retry: RetryConfig,
    /// `[stages]`: the order stages.
    pub stages: StagesConfig,
    /// `[pricing]`: how often the pricing tables are looked at for changes.
    pub pricing: PricingConfig,
    /// `[catalog]`: SKUs, prices and the stock seeded on first start.
    pub catalog: TableConfig,
    /// `[promotions]`: automatic promotions and coupon codes.
    pub promotions: TableConfig,
    /// `[tax]`: tax rates by destination and category.
    pub tax: TableConfig,
    /// `[shipping]`: shipping fees by zone and weight.
    pub shipping: TableConfig,
    /// `[logging]`: log line format.
    pub logging: LoggingConfig,
    /// `[metrics]`: extra gauges.
    pub metrics: MetricsConfig,
    /// `[webhook]`: where order events are posted.
    pub webhook: WebhookConfig,
    /// `[outbox]`: delivering and keeping emails and webhooks.
    pub outbox: OutboxConfig,
}

/// A setting that failed its check: the key and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {key}: {why}")]
pub struct Invalid {
    /// The key, `section.name`.
    pub key: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type; figment names the key and the
    /// layer it came from.
    #[error(transparent)]
    Layer(#[from] Box<figment::Error>),
    /// A value is out of its range.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// An `ORDERFLOW_*` variable names no section (a typo, or a name from before sections).
    #[error(
        "unknown setting {0}: settings are ORDERFLOW_<SECTION>_<KEY> with sections {sections} \
         (see config/orderflow.toml)",
        sections = SECTIONS.map(|(s, _)| s).join(", ")
    )]
    UnknownVariable(String),
    /// Two `ORDERFLOW_*` variables set the same key.
    #[error("{first} and {second} both set {key}: keep one")]
    SameKeyTwice {
        /// The key, `section.name`.
        key: String,
        /// One variable.
        first: String,
        /// The other.
        second: String,
    },
    /// An `ORDERFLOW_*` variable's value is not UTF-8.
    #[error("invalid {0}: the value is not valid UTF-8")]
    NotUtf8(String),
    /// The named config file does not exist.
    #[error("cannot read config file {}: no such file", .0.display())]
    MissingFile(PathBuf),
    /// A JWT key file (`jwt.jwks_file`, `jwt.public_key_file`) cannot be used.
    #[error("invalid {key} ({}): {source}", path.display())]
    KeyFile {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: orderflow_ingest::auth::KeyError,
    },
}

/// Values given on the command line, by key path (`log.url`), on top of every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides(Dict);

impl Overrides {
    /// Sets `path` (`section.key`) to `value`.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        insert(&mut self.0, path, value.into());
        self
    }
}

/// Puts `value` at `path` (`section.key`) in `dict`, beside what the section holds already.
pub(super) fn insert(dict: &mut Dict, path: &str, value: Value) {
    if let Value::Dict(_, nested) = figment::util::nest(path, value) {
        for (section, keys) in nested {
            match (dict.get_mut(&section), keys) {
                (Some(Value::Dict(_, existing)), Value::Dict(_, keys)) => existing.extend(keys),
                (_, keys) => {
                    dict.insert(section, keys);
                }
            }
        }
    }
}

impl figment::Provider for Overrides {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named("command-line flag").interpolater(|_, path| path.join("."))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::value::Map::from([(
            figment::Profile::Default,
            self.0.clone(),
        )]))
    }
}

impl Config {
    /// Layers the defaults, `file` (or [`DEFAULT_FILE`] if it exists), the `ORDERFLOW_*`
    /// environment and `flags`, then checks the result.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Shorthand(Toml::file_exact(path))),
            None if Path::new(DEFAULT_FILE).exists() => {
                figment = figment.merge(Shorthand(Toml::file_exact(DEFAULT_FILE)));
            }
            None => {}
        }
        env::check_variables(std::env::vars_os())?;
        let config: Config = figment
            .merge(env::environment())
            .merge(flags.clone())
            // Environment values arrive as strings; numbers and booleans are read from them where
            // a field wants one, while a string field keeps its value as written (an all-digit
            // secret or warehouse stays a string).
            .extract_lossy()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section; the first bad value is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.env == Deployment::Production {
            self.validate_for_production()?;
        }
        self.api.validate()?;
        self.limits.validate()?;
        self.jwt.validate()?;
        self.log.validate()?;
        self.kafka.validate(&self.log.url)?;
        self.store.validate()?;
        self.scylla.validate()?;
        self.redis.validate()?;
        self.retry.validate()?;
        self.stages.validate()?;
        self.webhook.validate()?;
        self.outbox.validate()?;
        Ok(())
    }

    /// The directory of the embedded stores: the store's, else the log's, else `./data`
    /// (with views in ScyllaDB and the log on Kafka the ledger and keys still need a home).
    pub fn store_dir(&self) -> PathBuf {
        match (&self.store.url, &self.log.url) {
            (StoreUrl::Embedded(dir), _) | (_, LogUrl::Embedded(dir)) => dir.clone(),
            _ => PathBuf::from("./data"),
        }
    }

    /// What production refuses. Tokens without an expiry are refused everywhere already.
    fn validate_for_production(&self) -> Result<(), ConfigError> {
        self.jwt.validate_for_production()?;
        if self.api.cors_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::Invalid(Invalid {
                key: "api.cors_origins",
                why: "\"*\" (any origin) is refused with env = \"production\"; list the \
                      storefronts' origins"
                    .into(),
            }));
        }
        Ok(())
    }

    /// Whether tokens are verified with the development signing secret.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt.uses_dev_secret()
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use std::time::Duration;

    fn error_of(jail_setup: impl FnOnce(&mut Jail) -> figment::error::Result<()>) -> String {
        let mut message = String::new();
        Jail::expect_with(|jail| {
            jail_setup(jail)?;
            message = Config::load(None, &Overrides::default())
                .expect_err("refused")
                .to_string();
            Ok(())
        });
        message
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::default();
        c.validate().expect("valid");
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.log.url, LogUrl::Embedded("./data".into()));
        assert!(c.redis.url.is_none());
    }

    #[test]
    fn retentions_take_their_units_and_refuse_bad_values_by_name() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "orderflow.toml",
                "[store]\nretention_secs = 300\n[outbox]\nretention_hours = 0.25",
            )?;
            let c = Config::load(Some(Path::new("orderflow.toml")), &Overrides::default())
                .expect("valid");
            assert_eq!(c.store.retention(), Duration::from_secs(300));
            assert_eq!(c.outbox.retention(), Duration::from_secs(900));
            // A whole number of hours, as before, still reads.
            jail.create_file("whole.toml", "[outbox]\nretention_hours = 168")?;
            let c =
                Config::load(Some(Path::new("whole.toml")), &Overrides::default()).expect("valid");
            assert_eq!(c.outbox.retention(), Duration::from_secs(168 * 3600));
            assert_eq!(
                Config::default().store.retention(),
                Duration::from_secs(7 * 86_400)
            );
            Ok(())
        });
        let short = error_of(|jail| {
            jail.set_env("ORDERFLOW_STORE_RETENTION_SECS", "10");
            Ok(())
        });
        assert!(short.contains("store.retention_secs"), "{short}");
        let tiny = error_of(|jail| {
            jail.set_env("ORDERFLOW_OUTBOX_RETENTION_HOURS", "0.001");
            Ok(())
        });
        assert!(tiny.contains("outbox.retention_hours"), "{tiny}");
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "orderflow.toml",
                "[log]\npartitions = 2\n[stages]\nreservation_ttl_secs = 100\n[api]\nlisten = \"127.0.0.1:1\"",
            )?;
            jail.set_env("ORDERFLOW_LOG_PARTITIONS", "3");
            jail.set_env("ORDERFLOW_STAGES_COUNTRIES", "US, DE");
            jail.set_env(
                "ORDERFLOW_API_CORS_ORIGINS",
                "https://shop.example,http://localhost:3000",
            );
            jail.set_env("ORDERFLOW_REDIS", "redis://127.0.0.1:6379");
            jail.set_env("ORDERFLOW_BIN", "/not/a/setting");
            let mut flags = Overrides::default();
            flags
                .set("log.partitions", 5)
                .set("log.url", "kafka://k:9092");
            let c = Config::load(Some(Path::new("orderflow.toml")), &flags).expect("valid");
            assert_eq!(
                (
                    c.log.partitions,
                    c.stages.reservation_ttl_secs,
                    c.api.listen.port()
                ),
                (5, 100, 1)
            );
            assert_eq!(c.stages.countries, ["US", "DE"]);
            assert_eq!(
                c.api.cors_origins,
                ["https://shop.example", "http://localhost:3000"]
            );
            assert_eq!(c.log.url, LogUrl::Kafka("k:9092".into()));
            assert_eq!(c.redis.url, Some(RedisUrl("redis://127.0.0.1:6379".into())));
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_LOG_PARTITIONS", "many");
            Ok(())
        });
        assert!(e.contains("ORDERFLOW_LOG_PARTITIONS"), "{e}");
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_LOG_FORMAT", "json");
            Ok(())
        });
        assert!(e.contains("format"), "{e}");
        let e = error_of(|jail| {
            jail.create_dir("config")?;
            jail.create_file(DEFAULT_FILE, "[log]\npartitionz = 1")?;
            Ok(())
        });
        assert!(e.contains("partitionz"), "{e}");
        for (var, value, key) in [
            ("ORDERFLOW_LOG_PARTITIONS", "0", "log.partitions"),
            ("ORDERFLOW_API_LISTEN", "nowhere", "ORDERFLOW_API_LISTEN"),
            ("ORDERFLOW_LOG", "ftp://x", "ORDERFLOW_LOG_URL"),
            ("ORDERFLOW_LOG", "kafka://broker", "ORDERFLOW_LOG_URL"),
            (
                "ORDERFLOW_KAFKA_REPLICATION_FACTOR",
                "0",
                "kafka.replication_factor",
            ),
            ("ORDERFLOW_JWT_SECRET", "short", "jwt.secret"),
            (
                "ORDERFLOW_LOGGING_FORMAT",
                "xml",
                "ORDERFLOW_LOGGING_FORMAT",
            ),
            ("ORDERFLOW_REDIS", "localhost:6379", "ORDERFLOW_REDIS_URL"),
            ("ORDERFLOW_REDIS_WAREHOUSE", "{tag}", "redis.warehouse"),
            ("ORDERFLOW_KAFKA_EXACTLY_ONCE", "true", "kafka.exactly_once"),
            ("ORDERFLOW_STAGES_CURRENCIES", "usd", "stages.currencies"),
            (
                "ORDERFLOW_API_CORS_ORIGINS",
                "shop.example",
                "api.cors_origins",
            ),
            (
                "ORDERFLOW_API_CORS_ORIGINS",
                "https://shop.example/checkout",
                "api.cors_origins",
            ),
            (
                "ORDERFLOW_API_CORS_ORIGINS",
                "*,https://shop.example",
                "api.cors_origins",
            ),
            ("ORDERFLOW_KAFKA_LINGER_MS", "5000", "kafka.linger_ms"),
            ("ORDERFLOW_JWT_ISSUER", " ", "jwt.issuer"),
            ("ORDERFLOW_API_MAX_IN_FLIGHT", "0", "api.max_in_flight"),
            ("ORDERFLOW_API_MAX_CONNECTIONS", "0", "api.max_connections"),
            ("ORDERFLOW_KAFKA_FETCH_WAIT_MS", "0", "kafka.fetch_wait_ms"),
            (
                "ORDERFLOW_KAFKA_COMPRESSION",
                "zstd",
                "ORDERFLOW_KAFKA_COMPRESSION",
            ),
        ] {
            let e = error_of(|jail| {
                jail.set_env(var, value);
                Ok(())
            });
            assert!(e.contains(key), "{var}={value}: {e} should name {key}");
        }
    }

    #[test]
    fn values_are_taken_as_written_and_kafka_may_run_exactly_once() {
        Jail::expect_with(|jail| {
            jail.set_env("ORDERFLOW_REDIS_WAREHOUSE", "42");
            jail.set_env("ORDERFLOW_JWT_SECRET", "12345678901234567890123");
            jail.set_env("ORDERFLOW_LOG", "kafka://a:9092,b:9092");
            jail.set_env("ORDERFLOW_KAFKA_EXACTLY_ONCE", "true");
            jail.set_env("ORDERFLOW_RETRY_BASE_MS", "5");
            let c = Config::load(None, &Overrides::default()).expect("valid");
            assert_eq!(c.redis.warehouse, "42");
            assert_eq!(c.jwt.secret, "12345678901234567890123");
            assert!(c.kafka.exactly_once && matches!(c.log.url, LogUrl::Kafka(_)));
            assert_eq!(c.retry.base_ms, 5);
            Ok(())
        });
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_LOG", "embedded://a");
            jail.set_env("ORDERFLOW_LOG_URL", "embedded://b");
            Ok(())
        });
        assert!(e.contains("ORDERFLOW_LOG") && e.contains("log.url"), "{e}");
    }

    #[test]
    fn a_variable_that_names_no_section_is_refused() {
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_PARTITIONS", "8");
            Ok(())
        });
        assert!(
            e.contains("ORDERFLOW_PARTITIONS") && e.contains("log"),
            "{e}"
        );
        Jail::expect_with(|jail| {
            jail.set_env("ORDERFLOW_BIN", "/usr/local/bin/orderflow");
            jail.set_env("ORDERFLOW_CONFIG", "/dev/null");
            Config::load(None, &Overrides::default()).expect("not settings, not refused");
            Ok(())
        });
    }

    #[test]
    fn production_refuses_the_dev_secret_and_cors_for_any_origin() {
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_ENV", "production");
            Ok(())
        });
        assert!(e.contains("jwt.secret") && e.contains("production"), "{e}");
        let e = error_of(|jail| {
            jail.create_dir("config")?;
            jail.create_file(
                DEFAULT_FILE,
                "env = \"production\"\n[jwt]\nsecret = \"a-real-secret-of-some-length\"\n[api]\ncors_origins = [\"*\"]",
            )?;
            Ok(())
        });
        assert!(e.contains("api.cors_origins"), "{e}");
        let e = error_of(|jail| {
            jail.set_env("ORDERFLOW_ENV", "staging");
            Ok(())
        });
        assert!(e.contains("env"), "{e}");
        Jail::expect_with(|jail| {
            jail.set_env("ORDERFLOW_ENV", "production");
            jail.set_env("ORDERFLOW_JWT_SECRET", "a-real-secret-of-some-length");
            jail.set_env("ORDERFLOW_API_CORS_ORIGINS", "https://shop.example");
            let c = Config::load(None, &Overrides::default()).expect("valid");
            assert_eq!(c.env, Deployment::Production);
            // In development the same "*" is accepted.
            jail.set_env("ORDERFLOW_ENV", "development");
            jail.set_env("ORDERFLOW_API_CORS_ORIGINS", "*");
            Config::load(None, &Overrides::default()).expect("valid in development");
            jail.clear_env();
            jail.set_env(
                "ORDERFLOW_CORS_ORIGINS",
                "https://a.example,https://b.example",
            );
            let c = Config::load(None, &Overrides::default()).expect("the short name too");
            assert_eq!(c.api.cors_origins.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn a_named_file_must_exist() {
        let e = Config::load(
            Some(Path::new("/no/such/orderflow.toml")),
            &Overrides::default(),
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("/no/such/orderflow.toml"), "{e}");
    }
}
