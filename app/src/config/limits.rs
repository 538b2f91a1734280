//! `[limits]`: what one customer, one client address and the whole pipeline may ask of the
//! API before it answers `429` or `503`. On by default: a public API with no limit lets one
//! client take the checkout away from everyone else. `ORDERFLOW_LIMITS=off` (`--limits off`,
//! `limits = "off"` in the file) switches them all off for benchmarks and load tests.

use super::ConfigError;
use super::sections::check;
use axum::http::HeaderName;
use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};
use serde::Deserialize;

/// `[limits]`: token buckets per customer and per client address, and the backlog bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// `off` switches every limit off (these, and `api.max_in_flight`); any other value, or
    /// none, keeps them. Also `ORDERFLOW_LIMITS`, `--limits`, or `limits = "off"` alone.
    pub switch: String,
    /// Checkouts per second one customer (the token's `sub`) may post, sustained; 0: no limit.
    pub customer_per_second: u32,
    /// Checkouts one customer may post at once (the bucket's size).
    pub customer_burst: u32,
    /// API requests per second from one client address, sustained; 0: no limit.
    pub ip_per_second: u32,
    /// API requests one client address may send at once (the bucket's size).
    pub ip_burst: u32,
    /// The header a proxy in front of the API writes the client's address in
    /// (`x-forwarded-for`: the last address of the last such header is used); empty: the
    /// connection's peer address. Set it only behind a proxy that overwrites or appends it.
    pub client_ip_header: String,
    /// Checkouts accepted and still waiting for an order stage (the six stages' consumer lag
    /// on their inputs, summed) or for the projector (its lag on `orders.accepted`), the
    /// larger, over which the API answers new ones `503` with `Retry-After`; 0: no bound.
    pub max_backlog: u64,
    /// How often the backlog is read, in milliseconds.
    pub backlog_check_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            switch: "on".into(),
            customer_per_second: 5,
            customer_burst: 20,
            ip_per_second: 100,
            ip_burst: 200,
            client_ip_header: String::new(),
            max_backlog: 50_000,
            backlog_check_ms: 500,
        }
    }
}

/// A config file with `limits = "off"` read as `[limits] switch = "off"`: figment lets a later
/// layer's table replace an earlier plain value, so an `ORDERFLOW_LIMITS_*` variable would
/// otherwise undo the file's switch instead of adding to it.
pub(super) struct Shorthand<P>(pub P);

impl<P: Provider> Provider for Shorthand<P> {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            if let Some(Value::String(tag, switch)) = dict.get("limits").cloned() {
                let section = Dict::from([("switch".to_owned(), Value::String(tag, switch))]);
                dict.insert("limits".to_owned(), Value::Dict(tag, section));
            }
        }
        Ok(data)
    }
}

impl LimitsConfig {
    /// Whether the limits apply: every value but `off` (any case) keeps them on.
    pub fn on(&self) -> bool {
        !self.switch.trim().eq_ignore_ascii_case("off")
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (rate, burst, rate_key, burst_key) in [
            (
                self.customer_per_second,
                self.customer_burst,
                "limits.customer_per_second",
                "limits.customer_burst",
            ),
            (
                self.ip_per_second,
                self.ip_burst,
                "limits.ip_per_second",
                "limits.ip_burst",
            ),
        ] {
            check(
                rate <= 1_000_000,
                rate_key,
                format!("{rate}: must be at most 1000000 (0 turns it off)"),
            )?;
            check(
                rate == 0 || (1..=1_000_000).contains(&burst),
                burst_key,
                format!("{burst}: must be 1 to 1000000 while {rate_key} is set"),
            )?;
        }
        check(
            self.client_ip_header.is_empty()
                || HeaderName::from_bytes(self.client_ip_header.as_bytes()).is_ok(),
            "limits.client_ip_header",
            format!("{:?} is not a header name", self.client_ip_header),
        )?;
        check(
            !self.client_ip_header.eq_ignore_ascii_case("forwarded"),
            "limits.client_ip_header",
            "RFC 7239 `forwarded` (for=…) is not read; name the header that holds bare \
             addresses, e.g. x-forwarded-for or x-real-ip",
        )?;
        check(
            (50..=60_000).contains(&self.backlog_check_ms),
            "limits.backlog_check_ms",
            format!("{}: must be 50 to 60000", self.backlog_check_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_on_by_default_and_bad_values_are_named() {
        let d = LimitsConfig::default();
        assert!(d.customer_per_second > 0 && d.ip_per_second > 0 && d.max_backlog > 0);
        assert!(d.validate().is_ok());
        let named = |c: LimitsConfig| match c.validate() {
            Err(ConfigError::Invalid(i)) => i.key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            named(LimitsConfig {
                ip_burst: 0,
                ..d.clone()
            }),
            "limits.ip_burst"
        );
        assert_eq!(
            named(LimitsConfig {
                customer_per_second: 2_000_000,
                ..d.clone()
            }),
            "limits.customer_per_second"
        );
        assert_eq!(
            named(LimitsConfig {
                client_ip_header: "x forwarded".into(),
                ..d.clone()
            }),
            "limits.client_ip_header"
        );
        // A limit that is off needs no burst.
        assert!(
            LimitsConfig {
                ip_per_second: 0,
                ip_burst: 0,
                ..d
            }
            .validate()
            .is_ok()
        );
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod switch_tests {
    use crate::config::{Config, ConfigError, Overrides};
    use std::path::Path;

    #[test]
    fn one_switch_turns_every_limit_off_from_the_file_the_environment_or_a_flag() {
        figment::Jail::expect_with(|jail| {
            assert!(
                Config::load(None, &Overrides::default())
                    .expect("valid")
                    .limits
                    .on()
            );
            jail.create_file("alone.toml", "limits = \"off\"\n")?;
            let c =
                Config::load(Some(Path::new("alone.toml")), &Overrides::default()).expect("valid");
            assert!(!c.limits.on());
            assert_eq!(
                c.limits.ip_per_second, 100,
                "the other keys keep their defaults"
            );
            jail.set_env("ORDERFLOW_LIMITS_IP_BURST", "9");
            let c =
                Config::load(Some(Path::new("alone.toml")), &Overrides::default()).expect("valid");
            assert!(
                !c.limits.on(),
                "a variable adds to the file's switch, not undo it"
            );
            assert_eq!(c.limits.ip_burst, 9);
            jail.clear_env();
            jail.create_file("section.toml", "[limits]\nswitch = \"OFF\"\nip_burst = 7\n")?;
            let c = Config::load(Some(Path::new("section.toml")), &Overrides::default())
                .expect("valid");
            assert!(!c.limits.on());
            assert_eq!(c.limits.ip_burst, 7);
            jail.set_env("ORDERFLOW_LIMITS", "off");
            assert!(
                !Config::load(None, &Overrides::default())
                    .expect("valid")
                    .limits
                    .on()
            );
            jail.set_env("ORDERFLOW_LIMITS", "anything-else");
            assert!(
                Config::load(None, &Overrides::default())
                    .expect("valid")
                    .limits
                    .on()
            );
            let mut flag = Overrides::default();
            flag.set("limits.switch", "off");
            assert!(!Config::load(None, &flag).expect("valid").limits.on());
            // A bad key of the section is still named.
            jail.create_file("typo.toml", "[limits]\nip_per_secnd = 5\n")?;
            let e = Config::load(Some(Path::new("typo.toml")), &Overrides::default())
                .expect_err("refused");
            assert!(matches!(e, ConfigError::Layer(_)));
            assert!(e.to_string().contains("ip_per_secnd"), "{e}");
            Ok(())
        });
    }
}
