//! One webhook endpoint: where it is, its secret, the events it takes, and one signed send.

use chrono::{DateTime, Utc};
use orderflow_stores::Delivery;
use standardwebhooks::{
    HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP, Webhook,
};

/// A webhook endpoint that cannot be used as configured.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("url {url:?} is not an http:// or https:// URL")]
    Url {
        /// The URL as given.
        url: String,
    },
    /// The secret is not `whsec_` followed by base64.
    #[error("the secret is not whsec_<base64>: {0}")]
    Secret(#[source] standardwebhooks::WebhookError),
    /// An event type orderflow does not send.
    #[error("unknown event {event:?} (events: {})", super::EVENTS.join(", "))]
    Event {
        /// The event as given.
        event: String,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A receiver of webhooks.
pub struct Endpoint {
    /// Its name in the outbox and the deliveries list.
    pub name: String,
    /// Where messages are posted.
    pub url: reqwest::Url,
    /// The event types it takes.
    pub events: Vec<String>,
    signer: Webhook,
}

impl Endpoint {
    /// An endpoint; `secret` in the specification's `whsec_<base64>` form, `events` from
    /// [`EVENTS`](super::EVENTS) (empty: all of them).
    pub fn new(
        name: &str,
        url: &str,
        secret: &str,
        events: &[String],
    ) -> Result<Self, EndpointError> {
        let bad_url = || EndpointError::Url {
            url: url.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| bad_url())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(bad_url());
        }
        if !secret.starts_with("whsec_") || secret.len() <= "whsec_".len() {
            return Err(EndpointError::Secret(
                standardwebhooks::WebhookError::InvalidSignature,
            ));
        }
        let signer = Webhook::new(secret).map_err(EndpointError::Secret)?;
        if let Some(event) = events.iter().find(|e| !super::EVENTS.contains(&e.as_str())) {
            return Err(EndpointError::Event {
                event: event.clone(),
            });
        }
        let events = if events.is_empty() {
            super::EVENTS.iter().map(|e| (*e).to_owned()).collect()
        } else {
            events.to_vec()
        };
        Ok(Self {
            name: name.to_owned(),
            url: parsed,
            events,
            signer,
        })
    }

    /// Whether it takes `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// Posts `message` signed for time `at`; the receiver's 2xx status, or the status (if
    /// any) and what went wrong.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        message: &Delivery,
        at: DateTime<Utc>,
    ) -> Result<u16, (Option<u16>, String)> {
        let timestamp = at.timestamp();
        let signature = self
            .signer
            .sign(&message.id, timestamp, message.payload.as_bytes())
            .map_err(|e| (None, format!("cannot sign: {e}")))?;
        let response = client
            .post(self.url.clone())
            .header(HEADER_WEBHOOK_ID, &message.id)
            .header(HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(HEADER_WEBHOOK_SIGNATURE, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.payload.clone())
            .send()
            .await
            .map_err(|e| (None, describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err((
                Some(status.as_u16()),
                format!("the receiver answered {status}"),
            ))
        }
    }
}

/// A request error with its causes, short enough for a delivery record.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn endpoints_refuse_bad_urls_secrets_and_events() {
        let all: Vec<String> = Vec::new();
        assert!(Endpoint::new("a", "https://shop.example/hooks", SECRET, &all).is_ok());
        assert!(matches!(
            Endpoint::new("a", "ftp://x/", SECRET, &all),
            Err(EndpointError::Url { .. })
        ));
        assert!(matches!(
            Endpoint::new("a", "https://x/", "not-a-secret", &all),
            Err(EndpointError::Secret(_))
        ));
        assert!(matches!(
            Endpoint::new("a", "https://x/", "whsec_!!!", &all),
            Err(EndpointError::Secret(_))
        ));
        let odd = vec!["order.exploded".to_owned()];
        assert!(matches!(
            Endpoint::new("a", "https://x/", SECRET, &odd),
            Err(EndpointError::Event { .. })
        ));
        let only = vec!["order.rejected".to_owned()];
        let e = Endpoint::new("a", "https://x/", SECRET, &only).expect("valid");
        assert!(e.wants("order.rejected") && !e.wants("order.completed"));
    }
}
