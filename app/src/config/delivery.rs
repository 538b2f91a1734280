//! `[webhook]` and `[outbox]`: where order events are posted, and how the outbox that holds
//! them (and the customer emails) is delivered and kept.

use super::sections::check;
use super::url::list;
use super::{ConfigError, Invalid};
use orderflow_stages::deliver::{DispatchPolicy, Endpoint, Endpoints};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[webhook]`: the receivers of order events, signed per Standard Webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The simplest case, one endpoint (named `default`): its URL (`ORDERFLOW_WEBHOOK_URL`).
    pub url: String,
    /// Its secret, `whsec_<base64>` (`ORDERFLOW_WEBHOOK_SECRET`).
    pub secret: String,
    /// The events it takes (`order.completed`, `order.rejected`, `order.cancelled`,
    /// `order.refunded`); empty: all.
    #[serde(deserialize_with = "list")]
    pub events: Vec<String>,
    /// More endpoints, each `{name, url, secret, events}`.
    pub endpoints: Vec<EndpointConfig>,
    /// How long (ms) one delivery may take before it counts as failed.
    pub timeout_ms: u64,
    /// The wait (ms) after the first failed try; doubles with each failure.
    pub backoff_base_ms: u64,
    /// The longest wait (s) between two tries.
    pub backoff_max_secs: u64,
    /// How long (hours) a message is retried before it is given up (`failed`).
    pub give_up_hours: u64,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

/// One `[[webhook.endpoints]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Its name in the deliveries list (unique).
    pub name: String,
    /// Where messages are posted.
    pub url: String,
    /// `whsec_<base64>`.
    pub secret: String,
    /// The events it takes; empty: all.
    #[serde(deserialize_with = "list")]
    pub events: Vec<String>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: String::new(),
            events: Vec::new(),
            endpoints: Vec::new(),
            timeout_ms: 10_000,
            backoff_base_ms: 5_000,
            backoff_max_secs: 3_600,
            give_up_hours: 24,
            concurrency: 16,
        }
    }
}

fn invalid(key: &'static str, why: String) -> ConfigError {
    ConfigError::Invalid(Invalid { key, why })
}

impl WebhookConfig {
    /// Every endpoint, checked; an error names the key and the entry.
    pub fn endpoints(&self) -> Result<Endpoints, ConfigError> {
        let mut endpoints = Vec::new();
        match (self.url.is_empty(), self.secret.is_empty()) {
            (true, true) => {}
            (false, true) => {
                return Err(invalid(
                    "webhook.secret",
                    "is needed with webhook.url (whsec_<base64>)".into(),
                ));
            }
            (true, false) => {
                return Err(invalid(
                    "webhook.url",
                    "is needed with webhook.secret".into(),
                ));
            }
            (false, false) => endpoints.push(
                Endpoint::new("default", &self.url, &self.secret, &self.events)
                    .map_err(|e| invalid("webhook", e.to_string()))?,
            ),
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let name_ok = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                return Err(invalid(
                    "webhook.endpoints",
                    format!(
                        "entry {i}: name {:?} must be 1 to 64 letters, digits, -, _ or .",
                        e.name
                    ),
                ));
            }
            if endpoints
                .iter()
                .any(|other: &Endpoint| other.name == e.name)
            {
                return Err(invalid(
                    "webhook.endpoints",
                    format!("entry {i}: the name {:?} is taken", e.name),
                ));
            }
            endpoints.push(
                Endpoint::new(&e.name, &e.url, &e.secret, &e.events).map_err(|err| {
                    invalid(
                        "webhook.endpoints",
                        format!("entry {i} ({}): {err}", e.name),
                    )
                })?,
            );
        }
        Ok(Endpoints::new(endpoints))
    }

    /// How the dispatcher retries.
    pub fn policy(&self) -> DispatchPolicy {
        DispatchPolicy {
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_secs(self.backoff_max_secs),
            give_up_after: Duration::from_secs(self.give_up_hours * 3600),
            concurrency: self.concurrency,
            ..DispatchPolicy::default()
        }
    }

    /// One delivery's time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.endpoints()?;
        check(
            (100..=120_000).contains(&self.timeout_ms),
            "webhook.timeout_ms",
            "must be 100 to 120000",
        )?;
        check(
            (10..=3_600_000).contains(&self.backoff_base_ms),
            "webhook.backoff_base_ms",
            "must be 10 to 3600000",
        )?;
        check(
            (1..=86_400).contains(&self.backoff_max_secs),
            "webhook.backoff_max_secs",
            "must be 1 to 86400",
        )?;
        check(
            (1..=720).contains(&self.give_up_hours),
            "webhook.give_up_hours",
            "must be 1 to 720 (30 days)",
        )?;
        check(
            (1..=1_024).contains(&self.concurrency),
            "webhook.concurrency",
            "must be 1 to 1024",
        )
    }
}

/// `[outbox]`: the messages waiting for delivery (customer emails, webhooks), kept in the
/// process's embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Where customer emails are written for a mail sender, one `.eml` file each; empty:
    /// `mail/` in the data directory.
    pub mail_dir: Option<PathBuf>,
    /// How long (hours, fractions allowed: 0.25 is 15 minutes) delivered messages are kept
    /// before they are removed.
    pub retention_hours: f64,
    /// How often (ms) the dispatcher looks for messages due.
    pub poll_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            mail_dir: None,
            retention_hours: 168.0,
            poll_ms: 100,
        }
    }
}

impl OutboxConfig {
    /// The mail sink's directory.
    pub fn mail_dir(&self, data_dir: &Path) -> PathBuf {
        self.mail_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| data_dir.join("mail"))
    }

    /// How long delivered messages are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.retention_hours * 3600.0)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check(
            (1.0 / 60.0..=24.0 * 365.0).contains(&self.retention_hours),
            "outbox.retention_hours",
            "must be 0.0167 (a minute) to 8760 (a year)",
        )?;
        check(
            (10..=60_000).contains(&self.poll_ms),
            "outbox.poll_ms",
            "must be 10 to 60000",
        )
    }
}
