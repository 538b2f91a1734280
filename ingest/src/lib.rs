//! The HTTP API of orderflow (axum).
//!
//! [`app`] builds the router from an [`AppState`] of trait objects, so the binary and the tests
//! wire it the same way. The API routes are registered from [`openapi`]'s table, where each
//! handler's `#[utoipa::path]` also describes it: the OpenAPI 3.1 document at `/openapi.json`
//! is generated from the code, so it cannot drift from the router. Routes:
//!
//! | route | module |
//! |---|---|
//! | `POST /v1/checkouts` | [`checkout`]: authenticate, validate, append durably, answer 202 |
//! | `GET /v1/orders/{id}` | [`orders`]: the order view with its timeline, `ETag`/304 and `?wait=` long-polls ([`poll`]) |
//! | `GET /v1/orders` | [`orders`]: the caller's orders, newest first, cursor-paged |
//! | `GET /v1/orders/{id}/ws` | [`ws`]: one message per status change, closed after a terminal one |
//! | `POST /v1/orders/{id}/cancel` | [`cancel`]: the stock ledger decides between the cancel and the shipment; 202 or 409 |
//! | `POST /v1/admin/orders/{id}/refunds` | [`refunds`]: counted against the capture, then paid by the refund step |
//! | `POST /v1/quotes` | [`pricing`]: the cart's breakdown now, nothing reserved or counted |
//! | `GET /v1/catalog` | [`catalog`]: SKUs with price and available stock |
//! | `GET/PUT /v1/admin/stock/{sku}`, `GET /v1/admin/audit` | [`admin`]: stock levels and the ledger audit, scope `admin` |
//! | `GET /v1/admin/pricing`, `POST /v1/admin/pricing/reload` | [`pricing`]: the tables' version, reading them again, scope `admin` |
//! | `GET /v1/admin/webhooks/deliveries`, `POST …/{id}/retry` | [`webhooks`]: the outbox's messages and their tries, sending one again, scope `admin` |
//! | `/healthz`, `/readyz`, `/metrics`, `/openapi.json` | [`ops`] (the document: [`openapi`]) |
//!
//! Every error is RFC 9457 `application/problem+json` ([`problem`]); tokens are JWTs checked by
//! [`auth`]: HS256 with a shared secret, or RS256/ES256 with a PEM public key or a JWKS picked
//! by `kid` (swapped while serving when the key file rotates); CORS, request ids and security
//! headers are added to every answer ([`edge`]).

pub mod admin;
pub mod auth;
pub mod body;
pub mod cancel;
pub mod catalog;
pub mod checkout;
pub mod edge;
pub mod limits;
pub mod openapi;
pub mod ops;
pub mod orders;
pub mod poll;
pub mod pricing;
pub mod problem;
pub mod refunds;
pub mod server;
pub mod webhooks;
pub mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use orderflow_domain::Catalog;
use orderflow_pipeline::Log;
use orderflow_stores::{
    IdempotencyStore, OrderStore, Outbox, Rate, RateLimiter, RefundLedger, StatusFeed, StockLedger,
};
use std::sync::Arc;
use std::time::Duration;

pub use auth::{Auth, Claims};
pub use ops::OpsState;
pub use problem::Problem;

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Topic the checkouts are appended to.
    pub accepted_topic: String,
    /// Topic an accepted cancel is appended to, for the timeline.
    pub cancel_requested_topic: String,
    /// Topic the refunds to pay are appended to.
    pub refunds_topic: String,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// Checkouts per customer, if limited.
    pub customer_limit: Option<Rate>,
    /// API requests per client address, if limited.
    pub ip_limit: Option<Rate>,
    /// The header a trusted proxy writes the client's address in; `None`: the peer address.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Pipeline backlog over which checkouts are refused 503; `None`: no bound.
    pub max_backlog: Option<u64>,
    /// Storefront origins browsers may call from (`*`: any); empty: none.
    pub cors_origins: Vec<String>,
    /// API requests handled at once; more are answered 503 with `Retry-After`.
    pub max_in_flight: usize,
}

/// Everything the handlers need, behind one `Arc`: axum clones the state for every request and
/// for every middleware that takes it, and one shared count is far cheaper to clone and drop
/// than one per backend (a profile at 3,000 checkouts/s put 2 % of the workers' time there).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The state sharing `parts`.
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What an [`AppState`] shares: backends as trait objects, chosen by the binary.
pub struct AppParts {
    /// The log the checkouts are appended to.
    pub log: Arc<dyn Log>,
    /// Stock levels, and where a cancel is decided.
    pub ledger: Arc<dyn StockLedger>,
    /// Refunds counted against each order's capture.
    pub refunds: Arc<dyn RefundLedger>,
    /// `Idempotency-Key` claims.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Order views.
    pub orders: Arc<dyn OrderStore>,
    /// Budgets per customer and per client address (used when the settings limit them).
    pub limiter: Arc<dyn RateLimiter>,
    /// The pipeline's backlog, as last read.
    pub backlog: Arc<limits::Backlog>,
    /// Live status changes.
    pub feed: Arc<dyn StatusFeed>,
    /// Messages to deliver (listed and retried by the admin routes).
    pub outbox: Arc<dyn Outbox>,
    /// The bound on long-polls held open.
    pub polls: Arc<poll::HeldPolls>,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// Quotes and the pricing tables (behind an `Arc`: the state is cloned for every request).
    pub pricing: Arc<pricing::Pricing>,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// Prometheus exposition of the process's metrics.
    pub metrics: Option<PrometheusHandle>,
    /// Settings.
    pub settings: Arc<ApiSettings>,
}

/// The API router.
pub fn app(state: AppState) -> Router {
    let limit = state.settings.max_body_bytes;
    let cors = edge::cors(&state.settings.cors_origins);
    let in_flight = state.settings.max_in_flight;
    // The API routes come from the same table as their OpenAPI description.
    let router = Router::from(openapi::api_routes())
        // Per client address, inside the in-flight cap: a refused request costs no permit
        // beyond its own check.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_client,
        ))
        // Above the cap an API request is refused at once rather than queued; health checks
        // and metrics (merged after) stay outside it, so probes still answer under overload.
        // Long-polls have a bound of their own (`poll::HeldPolls`): held for up to 30 s, they
        // would otherwise take the places of requests answered in milliseconds.
        .layer(axum::middleware::from_fn_with_state(
            edge::InFlight::new(in_flight),
            edge::in_flight,
        ))
        .merge(ops::routes())
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // The handlers enforce the limit themselves with a problem+json answer; this layer only
        // makes sure axum never buffers more than that.
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(ops::track))
        .with_state(state);
    // CORS outside the routes, so it answers preflights; the edge headers outside everything,
    // so every answer (a preflight's too) carries them.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(axum::middleware::from_fn(edge::headers))
}
