//! The command line's settings: the most used keys as flags, read by clap in the binary and
//! laid over the file and the environment as [`Overrides`].

use super::Overrides;
use clap::Args;
use std::path::PathBuf;

/// The most used settings as flags; every setting also reads from the file and `ORDERFLOW_*`
/// (ARCHITECTURE.md, "Configuration").
#[derive(Args, Debug, Default)]
pub struct Flags {
    /// Config file (TOML); default: config/orderflow.toml when present, else built-in defaults.
    #[arg(long, global = true, env = "ORDERFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address, e.g. 127.0.0.1:8080 (port 0 picks a free one) [api.listen].
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// Log backend: embedded://DIR or kafka://HOST:PORT[,HOST:PORT…] [log.url].
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Kafka only: commit each batch's outputs and input offsets in one transaction
    /// [kafka.exactly_once].
    #[arg(long, global = true)]
    pub exactly_once: bool,
    /// Order store backend: embedded://DIR or scylla://HOST:PORT[/KEYSPACE] [store.url].
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Put the log and the store under DIR (shorthand for --log and --store embedded://DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Redis URL for the hot path, redis://HOST:PORT (absent: embedded) [redis.url].
    #[arg(long, global = true)]
    pub redis: Option<String>,
    /// Partitions per topic [log.partitions].
    #[arg(long, global = true)]
    pub partitions: Option<u32>,
    /// Catalog file (JSON) [catalog.file].
    #[arg(long, global = true)]
    pub catalog: Option<String>,
    /// Promotion codes file (JSON) [promotions.file].
    #[arg(long, global = true)]
    pub promotions: Option<String>,
    /// HS256 secret for tokens [jwt.secret].
    #[arg(long, global = true)]
    pub jwt_secret: Option<String>,
    /// `off` switches every limit off (per customer, per client address, in flight, backlog),
    /// for benchmarks and load tests [limits.switch].
    #[arg(long, global = true, value_name = "off|on")]
    pub limits: Option<String>,
    /// Refuse to start with settings only fit for development: the built-in JWT secret, CORS
    /// open to any origin [env = "production"].
    #[arg(long, global = true)]
    pub production: bool,
}

impl Flags {
    /// The flags given, as configuration keys on top of every other layer.
    pub fn overrides(&self) -> Overrides {
        let mut o = Overrides::default();
        if let Some(dir) = &self.data_dir {
            let url = format!("embedded://{}", dir.display());
            o.set("log.url", url.as_str())
                .set("store.url", url.as_str());
        }
        let strings = [
            ("api.listen", &self.listen),
            ("log.url", &self.log),
            ("store.url", &self.store),
            ("redis.url", &self.redis),
            ("jwt.secret", &self.jwt_secret),
            ("catalog.file", &self.catalog),
            ("promotions.file", &self.promotions),
            ("limits.switch", &self.limits),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                o.set(key, value.as_str());
            }
        }
        if let Some(partitions) = self.partitions {
            o.set("log.partitions", partitions);
        }
        if self.exactly_once {
            o.set("kafka.exactly_once", true);
        }
        if self.production {
            o.set("env", "production");
        }
        o
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::{Config, Deployment, LogUrl};

    #[test]
    fn flags_land_on_their_keys() {
        figment::Jail::expect_with(|_| {
            let flags = Flags {
                data_dir: Some(PathBuf::from("/tmp/of")),
                partitions: Some(3),
                jwt_secret: Some("a-real-secret-of-some-length".into()),
                production: true,
                ..Flags::default()
            };
            let c = Config::load(None, &flags.overrides()).expect("valid");
            assert_eq!(c.log.url, LogUrl::Embedded(PathBuf::from("/tmp/of")));
            assert_eq!(c.log.partitions, 3);
            assert_eq!(c.env, Deployment::Production);
            Ok(())
        });
    }
}
