//! Conditional reads and long-polls of one order: the strong `ETag` of a rendered view, the
//! `If-None-Match` it is compared with, `?wait=SECONDS`, and the bound on requests held open.

use crate::problem::Problem;
use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest `?wait=` a client may ask for.
pub const MAX_WAIT_SECS: u64 = 30;

/// A strong entity tag of a rendered order: the first 16 hex digits of the SHA-256 of its JSON,
/// quoted. Equal bytes give equal tags on every replica, and any change of the view (a status,
/// totals, a shipment) changes them.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(18);
    tag.push('"');
    for byte in &digest[..8] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// The entity tags of `If-None-Match`, if the request has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// `*`: any current representation matches.
    Any,
    /// The listed tags (weak ones compared by their opaque part, as RFC 9110 says for this
    /// header).
    Tags(Vec<String>),
}

impl IfNoneMatch {
    /// The header's tags; `None` without one (or with none well formed). A malformed tag
    /// matches nothing (RFC 9110 lets a server ignore what it cannot parse), so the client gets
    /// the full answer rather than an error it may not know how to handle.
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let mut tags = Vec::new();
        for value in headers.get_all(header::IF_NONE_MATCH) {
            let Ok(text) = value.to_str() else {
                continue;
            };
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    return Some(Self::Any);
                }
                let opaque = tag.strip_prefix("W/").unwrap_or(tag);
                if opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"') {
                    tags.push(opaque.to_owned());
                }
            }
        }
        (!tags.is_empty()).then_some(Self::Tags(tags))
    }

    /// Whether `etag` (quoted) is one the client already has.
    pub fn matches(&self, etag: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == etag),
        }
    }
}

/// `?wait=SECONDS` (1 to 30) from a query string; the only parameter the order route takes.
pub fn wait_of(query: Option<&str>) -> Result<Option<Duration>, Problem> {
    let mut wait = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "wait" {
            return Err(Problem::malformed(format!(
                "unknown query parameter {name:?} (wait)"
            )));
        }
        if wait.is_some() {
            return Err(Problem::malformed("wait is given twice"));
        }
        let seconds = value
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=MAX_WAIT_SECS).contains(s))
            .ok_or_else(|| {
                Problem::malformed(format!(
                    "wait must be a whole number of seconds from 1 to {MAX_WAIT_SECS}, not {value:?}"
                ))
            })?;
        wait = Some(Duration::from_secs(seconds));
    }
    Ok(wait)
}

/// The bound on long-polls held open at once in this process (`api.max_long_polls`): each
/// holds a connection and a feed subscription, so past the bound a long-poll is refused with
/// 503 and `Retry-After` rather than queued.
pub struct HeldPolls {
    permits: Arc<Semaphore>,
    held: metrics::Gauge,
}

impl HeldPolls {
    /// Room for `max` long-polls at once.
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            held: metrics::gauge!("orderflow_long_polls_held"),
        }
    }

    /// A place for one more held request, or 503 when every place is taken.
    pub fn hold(&self) -> Result<Held, Problem> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.held.increment(1.0);
                Ok(Held {
                    _permit: permit,
                    held: self.held.clone(),
                })
            }
            Err(_) => {
                outcome("refused");
                Err(Problem::unavailable(
                    "too many long-polls are held open; retry shortly",
                ))
            }
        }
    }
}

/// One held long-poll, counted in `orderflow_long_polls_held` until dropped.
pub struct Held {
    _permit: OwnedSemaphorePermit,
    held: metrics::Gauge,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.decrement(1.0);
    }
}

/// Counts how a long-poll ended: `changed`, `timeout` or `refused`.
pub fn outcome(outcome: &'static str) {
    metrics::counter!("orderflow_long_polls_total", "outcome" => outcome).increment(1);
}

/// Registers the long-poll series at zero, so dashboards and alerts see them from the start.
pub fn register_metrics() {
    metrics::gauge!("orderflow_long_polls_held").set(0.0);
    for name in ["changed", "timeout", "refused"] {
        metrics::counter!("orderflow_long_polls_total", "outcome" => name).absolute(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(value).expect("ascii"),
        );
        h
    }

    #[test]
    fn etags_are_quoted_and_follow_the_bytes() {
        let a = etag_of(b"{\"status\":\"accepted\"}");
        assert_eq!(a.len(), 18);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert_eq!(a, etag_of(b"{\"status\":\"accepted\"}"));
        assert_ne!(a, etag_of(b"{\"status\":\"validated\"}"));
    }

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        assert_eq!(IfNoneMatch::of(&HeaderMap::new()), None);
        let list = IfNoneMatch::of(&headers(r#""a", W/"b", junk"#)).expect("some");
        assert!(list.matches("\"a\"") && list.matches("\"b\"") && !list.matches("\"c\""));
        assert_eq!(IfNoneMatch::of(&headers("*")), Some(IfNoneMatch::Any));
        assert_eq!(
            IfNoneMatch::of(&headers("abc")),
            None,
            "malformed: matches nothing"
        );
    }

    #[test]
    fn wait_is_1_to_30_seconds_and_alone() {
        assert_eq!(wait_of(None).expect("ok"), None);
        assert_eq!(
            wait_of(Some("wait=30")).expect("ok"),
            Some(Duration::from_secs(30))
        );
        for bad in [
            "wait=0",
            "wait=31",
            "wait=x",
            "wait=",
            "wait=1&wait=2",
            "w=1",
        ] {
            assert!(wait_of(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn held_polls_are_bounded() {
        let polls = HeldPolls::new(1);
        let first = polls.hold().expect("room");
        assert!(polls.hold().is_err());
        drop(first);
        assert!(polls.hold().is_ok());
    }
}
