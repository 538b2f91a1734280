//! Limits at the door: a token bucket per customer (checkouts) and per client address (every
//! API request), kept by a [`RateLimiter`] (in process, or in Redis shared by every replica),
//! and the [`Backlog`] bound that refuses checkouts while the pipeline is too far behind to
//! process them in time.

use crate::{AppState, Problem};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderflow_stores::Rate;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the rate limiter may take before a request goes through without it.
const LIMITER_PATIENCE: Duration = Duration::from_millis(50);

/// The pipeline's backlog as last read (records waiting for an order stage, summed over the
/// stages), kept current by a chore of the process.
#[derive(Debug)]
pub struct Backlog {
    records: AtomicU64,
    /// When the reading was taken, in ms since `epoch`.
    read_at_ms: AtomicU64,
    epoch: Instant,
    /// How old a reading may be and still count.
    stale_after: Duration,
}

impl Default for Backlog {
    fn default() -> Self {
        Self::new(Duration::from_secs(10))
    }
}

impl Backlog {
    /// No reading yet; readings older than `stale_after` are ignored.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            records: AtomicU64::new(0),
            read_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stale_after,
        }
    }

    /// Records the latest reading.
    pub fn set(&self, records: u64) {
        self.records.store(records, Ordering::Relaxed);
        self.read_at_ms
            .store(self.elapsed_ms().max(1), Ordering::Relaxed);
    }

    /// The latest reading, if there is one younger than `stale_after`. A reader that keeps
    /// failing must not keep refusing checkouts on an old figure; the appends themselves fail
    /// when the log is away.
    pub fn get(&self) -> Option<u64> {
        let at = self.read_at_ms.load(Ordering::Relaxed);
        let fresh = at > 0
            && self.elapsed_ms().saturating_sub(at)
                <= u64::try_from(self.stale_after.as_millis()).unwrap_or(u64::MAX);
        fresh.then(|| self.records.load(Ordering::Relaxed))
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// `Err(503)` while the backlog is over `api`'s bound: a checkout accepted now would wait
/// behind all of it, so the client is told to come back instead of being queued without end.
pub fn check_backlog(state: &AppState) -> Result<(), Problem> {
    let Some(bound) = state.settings.max_backlog else {
        return Ok(());
    };
    match state.backlog.get() {
        Some(backlog) if backlog > bound => Err(Problem::overloaded()),
        _ => Ok(()),
    }
}

/// `Some(wait)` if `customer` is over the checkout budget.
pub async fn customer_over_budget(state: &AppState, customer: &str) -> Option<Duration> {
    let rate = state.settings.customer_limit?;
    take(state, &format!("checkout:{customer}"), rate).await
}

/// Middleware: each API request takes one from its client address's budget; over it, `429`
/// with `Retry-After`.
pub async fn per_client(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(rate) = state.settings.ip_limit
        && let Some(ip) = client_ip(&request, state.settings.client_ip_header.as_ref())
        && let Some(wait) = take(&state, &format!("ip:{}", bucket_of(ip)), rate).await
    {
        metrics::counter!("orderflow_http_rate_limited_total", "by" => "client").increment(1);
        return Problem::client_rate_limited(wait).into_response();
    }
    next.run(request).await
}

/// Takes one request from `key`'s budget. The limits protect the pipeline; they guard no
/// money and no stock, so while their store is slow or away requests pass rather than wait
/// or fail.
async fn take(state: &AppState, key: &str, rate: Rate) -> Option<Duration> {
    match tokio::time::timeout(LIMITER_PATIENCE, state.limiter.acquire(key, rate)).await {
        Ok(Ok(wait)) => wait,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Rate limiter unavailable; letting the request through");
            None
        }
        Err(_) => {
            tracing::warn!("Rate limiter too slow; letting the request through");
            None
        }
    }
}

/// The client's address: the last address in the last `header` a trusted proxy wrote, when
/// one is configured and present, else the connection's peer.
pub fn client_ip<B>(
    request: &axum::http::Request<B>,
    header: Option<&HeaderName>,
) -> Option<IpAddr> {
    let forwarded = header
        .and_then(|name| request.headers().get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').map(str::trim).find(|a| !a.is_empty()))
        .and_then(parse_ip);
    if header.is_some() && forwarded.is_none() {
        // Behind the proxy every request should carry it: each one without it shares the
        // proxy's own budget, which an operator must be able to see.
        metrics::counter!("orderflow_http_client_address_fallbacks_total").increment(1);
    }
    forwarded.or_else(|| {
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip())
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or
/// `[2001:db8::1]:5678`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The budget an address draws on: itself for IPv4, its /64 for IPv6, since one subscriber
/// usually holds a whole /64 and could otherwise rotate through it.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn request(headers: &HeaderMap, peer: Option<&str>) -> axum::http::Request<()> {
        let mut r = axum::http::Request::new(());
        *r.headers_mut() = headers.clone();
        if let Some(peer) = peer {
            r.extensions_mut()
                .insert(ConnectInfo(peer.parse::<SocketAddr>().expect("addr")));
        }
        r
    }

    #[test]
    fn the_client_address_comes_from_the_proxy_header_only_when_configured() {
        let xff = HeaderName::from_static("x-forwarded-for");
        let mut headers = HeaderMap::new();
        headers.append(&xff, HeaderValue::from_static("6.6.6.6"));
        headers.append(&xff, HeaderValue::from_static("9.9.9.9, 10.0.0.7:4431"));
        let at = Some("192.0.2.1:5000");
        let peer: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            client_ip(&request(&headers, at), None),
            Some(peer),
            "not trusted"
        );
        assert_eq!(
            client_ip(&request(&headers, at), Some(&xff)),
            Some("10.0.0.7".parse().expect("ip")),
            "the last address the proxy appended"
        );
        let mut junk = HeaderMap::new();
        junk.insert(&xff, HeaderValue::from_static("not-an-address"));
        assert_eq!(
            client_ip(&request(&junk, at), Some(&xff)),
            Some(peer),
            "falls back"
        );
        assert_eq!(client_ip(&request(&HeaderMap::new(), None), None), None);
        let mut v6 = HeaderMap::new();
        v6.insert(&xff, HeaderValue::from_static("[2001:db8::1]:443"));
        assert_eq!(
            client_ip(&request(&v6, at), Some(&xff)),
            Some("2001:db8::1".parse().expect("ip"))
        );
    }

    #[test]
    fn a_backlog_reading_counts_only_while_fresh() {
        let backlog = Backlog::new(Duration::from_millis(50));
        assert_eq!(backlog.get(), None, "no reading yet");
        backlog.set(10);
        assert_eq!(backlog.get(), Some(10));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(backlog.get(), None, "a stale reading is ignored");
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(bucket_of(a), bucket_of(b));
        assert_ne!(bucket_of(a), bucket_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().expect("ip");
        assert_eq!(
            bucket_of(mapped),
            "192.0.2.9".parse::<IpAddr>().expect("ip")
        );
    }
}
