//! Backend URLs, parsed once when the configuration loads: the rest of the code matches on
//! these enums and never looks at a URL's prefix again.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the order log lives: `embedded://DIR` or `kafka://HOST:PORT[,HOST:PORT…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogUrl {
    /// Segment files under this directory (`DIR/log` when it is also the store's directory).
    Embedded(PathBuf),
    /// Kafka bootstrap servers, `HOST:PORT[,HOST:PORT…]`.
    Kafka(String),
}

/// Where the durable order views live: `embedded://DIR` or `scylla://HOST:PORT[…][/KEYSPACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded database under this directory.
    Embedded(PathBuf),
    /// ScyllaDB; the whole URL, read by the adapter's own parser.
    Scylla(String),
}

/// The Redis server of the hot path: `redis://`, `rediss://` or `redis-cluster://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

/// A URL that names no backend this build knows.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{url:?}: expected {expected}")]
pub struct UrlError {
    url: String,
    expected: &'static str,
}

fn embedded(url: &str) -> Option<PathBuf> {
    url.strip_prefix("embedded://")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

impl FromStr for LogUrl {
    type Err = UrlError;
    fn from_str(url: &str) -> Result<Self, UrlError> {
        let bad = || UrlError {
            url: url.to_owned(),
            expected: "embedded://DIR or kafka://HOST:PORT[,HOST:PORT…]",
        };
        if let Some(dir) = embedded(url) {
            return Ok(Self::Embedded(dir));
        }
        let brokers = url
            .strip_prefix("kafka://")
            .ok_or_else(bad)?
            .trim_end_matches('/');
        let valid = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
            });
        if valid {
            Ok(Self::Kafka(brokers.to_owned()))
        } else {
            Err(bad())
        }
    }
}

impl FromStr for StoreUrl {
    type Err = UrlError;
    fn from_str(url: &str) -> Result<Self, UrlError> {
        if let Some(dir) = embedded(url) {
            return Ok(Self::Embedded(dir));
        }
        match url.strip_prefix("scylla://") {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
                Ok(Self::Scylla(url.to_owned()))
            }
            _ => Err(UrlError {
                url: url.to_owned(),
                expected: "embedded://DIR or scylla://HOST:PORT[,HOST:PORT…][/KEYSPACE]",
            }),
        }
    }
}

impl FromStr for RedisUrl {
    type Err = UrlError;
    fn from_str(url: &str) -> Result<Self, UrlError> {
        let known = ["redis://", "rediss://", "redis-cluster://"];
        match known.iter().find_map(|p| url.strip_prefix(p)) {
            Some(rest) if !rest.is_empty() => Ok(Self(url.to_owned())),
            _ => Err(UrlError {
                url: url.to_owned(),
                expected: "redis://HOST:PORT (or rediss://, redis-cluster://HOST:PORT)",
            }),
        }
    }
}

impl fmt::Display for LogUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(dir) => write!(f, "embedded://{}", dir.display()),
            Self::Kafka(brokers) => write!(f, "kafka://{brokers}"),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded(dir) => write!(f, "embedded://{}", dir.display()),
            Self::Scylla(url) => f.write_str(url),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Deserializes any of the URL types from a string through its `FromStr`.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(LogUrl, StoreUrl, RedisUrl);

/// An optional Redis URL where an empty string means "none" (`ORDERFLOW_REDIS=` unsets it).
pub(crate) fn optional_redis<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RedisUrl>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(url) => url.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// A list given as a TOML array or as one comma-separated string (the form an environment
/// variable takes: `ORDERFLOW_STAGES_COUNTRIES=US,DE`).
pub(crate) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(items) => items,
        Raw::One(joined) => joined
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    })
}

/// `http(s)://host[:port]` with nothing after it: what a browser sends as `Origin`.
pub(crate) fn is_origin(text: &str) -> bool {
    let Ok(uri) = text.parse::<axum::http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| {
            !a.host().is_empty()
                && !a.as_str().contains('@')
                && (a.port().is_none() || a.port_u16().is_some_and(|p| p > 0))
        })
        // An origin has no path, not even "/" (the parser reports "/" for none).
        && uri.path() == "/"
        && uri.query().is_none()
        && !text.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_backends() {
        assert_eq!(
            "embedded://./data".parse::<LogUrl>().ok(),
            Some(LogUrl::Embedded("./data".into()))
        );
        assert_eq!(
            "kafka://a:9092,b:9092/".parse::<LogUrl>().ok(),
            Some(LogUrl::Kafka("a:9092,b:9092".into()))
        );
        for bad in ["kafka://broker", "ftp://x", "embedded://", "kafka://:1"] {
            assert!(bad.parse::<LogUrl>().is_err(), "{bad}");
        }
        assert!(matches!(
            "scylla://h:9042/ks".parse::<StoreUrl>(),
            Ok(StoreUrl::Scylla(_))
        ));
        assert!("scylla://".parse::<StoreUrl>().is_err());
        assert!("localhost:6379".parse::<RedisUrl>().is_err());
        assert!("redis-cluster://h:1".parse::<RedisUrl>().is_ok());
    }

    #[test]
    fn origins_are_scheme_and_host_only() {
        for good in [
            "https://shop.example",
            "http://localhost:3000",
            "https://m.shop.example:8443",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "shop.example",
            "https://shop.example/",
            "https://shop.example/checkout",
            "https://shop.example?x=1",
            "ftp://shop.example",
            "https://user@shop.example",
            "https://shop.example:0",
            "*",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
