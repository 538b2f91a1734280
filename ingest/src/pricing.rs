//! `POST /v1/quotes`: what a cart would cost now, priced by the same engine and tables as the
//! price stage, with nothing reserved or counted; `GET /v1/admin/pricing` and
//! `POST /v1/admin/pricing/reload`: the tables in force, and reading them again.

use crate::body::parse_json;
use crate::openapi::{
    BadRequest, Edge, Forbidden, PayloadTooLarge, Unauthorized, Unprocessable, UnsupportedMediaType,
};
use crate::{AppState, Problem};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use chrono::Utc;
use orderflow_domain::{
    Address, Cart, CheckoutRequest, LineItem, PaymentRequest, PriceBook, PriceBreakdown,
    PriceError, RejectedCoupon, SharedPriceBook, TableError,
};
use orderflow_stores::CouponLedger;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// Swaps tables read again into `book`, the one way both the reload route and the app's
/// file-watching chore do it: refused if they could not be read (`loaded` is their error) or
/// change the catalog's currency (orders were validated in it); counted in
/// `orderflow_pricing_reloads_total{outcome}`, logged, and the new version recorded. Returns
/// the tables replaced.
pub fn install(
    book: &SharedPriceBook,
    loaded: Result<PriceBook, String>,
) -> Result<Arc<PriceBook>, String> {
    let in_force = book.load().catalog.currency();
    let checked = loaded.and_then(|new| {
        if new.catalog.currency() == in_force {
            Ok(new)
        } else {
            Err(format!(
                "catalog: currency {} differs from {in_force}, which orders were validated in; \
                 a new currency needs a restart",
                new.catalog.currency()
            ))
        }
    });
    match checked {
        Ok(new) => {
            let version = new.version.clone();
            let before = book.swap(Arc::new(new));
            record_version(Some(&before.version), &version);
            tracing::info!(from = %before.version, to = %version, "Pricing tables reloaded");
            metrics::counter!("orderflow_pricing_reloads_total", "outcome" => "ok").increment(1);
            Ok(before)
        }
        Err(e) => {
            tracing::error!(error = %e, "Pricing tables not reloaded; the ones in force stay");
            metrics::counter!("orderflow_pricing_reloads_total", "outcome" => "invalid")
                .increment(1);
            Err(e)
        }
    }
}

/// Exports the pricing series from the start, at zero, so dashboards and alerts see them
/// before the first quote or reload: `orderflow_quotes_total`,
/// `orderflow_pricing_reloads_total{outcome="ok"|"invalid"}`.
pub fn register_metrics() {
    metrics::counter!("orderflow_quotes_total").increment(0);
    for outcome in ["ok", "invalid"] {
        metrics::counter!("orderflow_pricing_reloads_total", "outcome" => outcome).increment(0);
    }
}

/// The tables' version in force: `orderflow_pricing_tables{version} 1` (the one it replaced
/// set to 0), so a dashboard and an alert see processes that price with different tables.
pub fn record_version(replaced: Option<&str>, version: &str) {
    if let Some(old) = replaced.filter(|old| *old != version) {
        metrics::gauge!("orderflow_pricing_tables", "version" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("orderflow_pricing_tables", "version" => version.to_owned()).set(1.0);
}

/// Reads the pricing tables again (the binary knows where they live).
pub trait Reload: Send + Sync + 'static {
    /// The tables as they are now; an error names the file and the entry.
    fn load(&self) -> Result<PriceBook, TableError>;
}

/// What quotes and reloads need.
#[derive(Clone)]
pub struct Pricing {
    /// The tables in force, shared with the price stage when it runs in this process.
    pub book: SharedPriceBook,
    /// Promotion uses, read (never counted) to leave out used-up promotions.
    pub coupons: Arc<dyn CouponLedger>,
    /// Where the tables are read again; `None`: reloading is not offered.
    pub tables: Option<Arc<dyn Reload>>,
    /// Currencies the store sells in, as the validate stage checks them.
    pub currencies: Vec<String>,
    /// Countries the store ships to, as the validate stage checks them.
    pub countries: Vec<String>,
}

/// What the pricing admin routes need; a stage worker serves them too, beside `/metrics`.
#[derive(Clone)]
pub struct PricingAdmin {
    /// Token verification (scope `admin`).
    pub auth: Arc<crate::Auth>,
    /// The tables in force.
    pub book: SharedPriceBook,
    /// Where the tables are read again; `None`: reloading is not offered.
    pub tables: Option<Arc<dyn Reload>>,
}

impl FromRef<AppState> for PricingAdmin {
    fn from_ref(state: &AppState) -> Self {
        Self {
            auth: state.auth.clone(),
            book: state.pricing.book.clone(),
            tables: state.pricing.tables.clone(),
        }
    }
}

/// `GET /v1/admin/pricing` and `POST /v1/admin/pricing/reload` alone, for a stage worker
/// (each process prices with its own copy of the tables).
pub fn admin_router(state: PricingAdmin) -> axum::Router {
    axum::Router::<PricingAdmin>::new()
        .route("/v1/admin/pricing", axum::routing::get(current))
        .route("/v1/admin/pricing/reload", axum::routing::post(reload))
        .with_state(state)
}

/// Body of `POST /v1/quotes`: a checkout without its payment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "currency": "USD",
    "lines": [{"sku": "SKU-0001", "quantity": 2}],
    "shipping_address": {"name": "Alice", "line1": "1 Main St", "city": "San Francisco",
                         "region": "CA", "postal_code": "94107", "country": "US"},
    "coupon_codes": ["WELCOME10"]
}))]
pub struct QuoteRequest {
    /// ISO 4217 currency of the order.
    #[schema(schema_with = orderflow_domain::schema::currency)]
    pub currency: String,
    /// What to buy.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<LineItem>,
    /// Where to ship.
    pub shipping_address: Address,
    /// Promotion codes to apply.
    #[serde(default)]
    #[schema(schema_with = orderflow_domain::schema::coupon_codes)]
    pub coupon_codes: Vec<String>,
    /// Not used: a quote charges nothing. Allowed (and checked as a checkout's) so a checkout
    /// body can be quoted as it is.
    #[serde(default)]
    pub payment: Option<PaymentRequest>,
}

/// A quote: exactly the `totals` the price stage would record now, and the codes that take
/// nothing off.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteBody {
    /// The breakdown.
    #[serde(flatten)]
    pub totals: PriceBreakdown,
    /// Codes given that take nothing off, and why. An order with a code that is `unknown`,
    /// `expired`, `not_yet_valid` or `used_up` is rejected; the others are just not applied.
    pub rejected_coupons: Vec<RejectedCoupon>,
}

/// Prices a cart now without reserving or counting anything.
#[utoipa::path(
    post,
    path = "/v1/quotes",
    operation_id = "createQuote",
    summary = "Price a cart without placing the order",
    description = "Scope `checkout`. The checkout body without `payment`. The answer is what the \
        price stage would record now for the same cart and customer; nothing is reserved and no \
        promotion use is counted.",
    request_body(content = QuoteRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The breakdown", body = QuoteBody),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType, Unprocessable,
        Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn quote(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<QuoteBody>, Problem> {
    let claims = state.auth.require(&headers, "checkout")?;
    let (request, _): (QuoteRequest, _) =
        parse_json(&headers, body, state.settings.max_body_bytes)?;
    // The checkout's own shape rules; a payment, if given, is checked like a checkout's.
    let request = CheckoutRequest {
        currency: request.currency,
        lines: request.lines,
        shipping_address: request.shipping_address,
        coupon_codes: request.coupon_codes,
        payment: request.payment.unwrap_or(PaymentRequest {
            token: "quote".into(),
        }),
    };
    let problems = request.structural_problems();
    if !problems.is_empty() {
        return Err(Problem::invalid(
            format!("the cart has {} problem(s)", problems.len()),
            problems,
        ));
    }
    let pricing = &state.pricing;
    let book = pricing.book.load_full();
    let country = &request.shipping_address.country;
    if !book
        .catalog
        .sells_in(&request.currency, pricing.currencies.iter())
    {
        return Err(refused(format!(
            "currency: {} is not supported",
            request.currency
        )));
    }
    if !pricing.countries.contains(country) {
        return Err(refused(format!(
            "shipping_address.country: shipping to {country} is not supported"
        )));
    }
    let cart = Cart {
        lines: &request.lines,
        country,
        region: &request.shipping_address.region,
        coupon_codes: &request.coupon_codes,
    };
    let used_up = orderflow_stores::used_up(pricing.coupons.as_ref(), &book, &cart, &claims.sub)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "Promotion uses unavailable");
            Problem::unavailable("cannot read promotion uses now; retry")
        })?;
    let quote = book
        .price(&cart, Utc::now(), &used_up)
        .map_err(|e| match e {
            PriceError::UnknownSku(sku) => refused(format!("lines: {sku} is not in the catalog")),
            PriceError::Shipping(e) => refused(format!("shipping_address: {e}")),
            PriceError::Money(e) => refused(format!("lines: {e}")),
        })?;
    metrics::counter!("orderflow_quotes_total").increment(1);
    Ok(Json(QuoteBody {
        totals: quote.breakdown,
        rejected_coupons: quote.rejected_coupons,
    }))
}

fn refused(error: String) -> Problem {
    Problem::invalid("the cart cannot be priced", vec![error])
}

/// The pricing tables in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PricingBody {
    /// The version priced orders record (`totals.version`).
    pub version: String,
    /// SKUs in the catalog.
    pub skus: usize,
    /// Promotions, automatic and by code.
    pub promotions: usize,
    /// Tax jurisdictions.
    pub jurisdictions: usize,
    /// Shipping zones.
    pub zones: usize,
}

impl From<&PriceBook> for PricingBody {
    fn from(b: &PriceBook) -> Self {
        Self {
            version: b.version.clone(),
            skus: b.catalog.items().len(),
            promotions: b.promotions.len(),
            jurisdictions: b.tax.len(),
            zones: b.shipping.len(),
        }
    }
}

/// The version and size of the pricing tables in force.
#[utoipa::path(
    get,
    path = "/v1/admin/pricing",
    operation_id = "getPricing",
    summary = "The pricing tables in force",
    description = "Scope `admin`.",
    responses(
        (status = 200, description = "The tables' version and sizes", body = PricingBody),
        Unauthorized, Forbidden, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn current(
    State(state): State<PricingAdmin>,
    headers: HeaderMap,
) -> Result<Json<PricingBody>, Problem> {
    state.auth.require(&headers, "admin")?;
    Ok(Json(PricingBody::from(state.book.load_full().as_ref())))
}

/// Reads the promotion, tax, shipping and catalog tables again and swaps them in whole.
#[utoipa::path(
    post,
    path = "/v1/admin/pricing/reload",
    operation_id = "reloadPricing",
    summary = "Read the pricing tables again",
    description = "Scope `admin`. Checks all four tables and swaps them in at once; on any \
        error the tables in force stay and the answer is 422 naming the file and entry. Orders \
        priced from then on record the new version. The catalog's new prices, categories and \
        weights apply to pricing only: new SKUs need a restart. It reloads the process it is \
        sent to (the API, or a `price` worker on its own `--listen`); every process also looks \
        at its files every `pricing.reload_secs` and swaps changed tables in by itself.",
    responses(
        (status = 200, description = "The tables now in force", body = PricingBody),
        Unauthorized, Forbidden, Unprocessable, Edge,
    ),
    security(("bearer" = [])),
)]
pub async fn reload(
    State(state): State<PricingAdmin>,
    headers: HeaderMap,
) -> Result<Json<PricingBody>, Problem> {
    state.auth.require(&headers, "admin")?;
    let Some(tables) = state.tables.clone() else {
        return Err(Problem::invalid(
            "this process has no pricing tables to read again",
            vec![],
        ));
    };
    let loaded = tokio::task::spawn_blocking(move || tables.load().map_err(|e| e.to_string()))
        .await
        .map_err(|_| Problem::internal())?;
    match install(&state.book, loaded) {
        Ok(_) => Ok(Json(PricingBody::from(state.book.load_full().as_ref()))),
        Err(e) => Err(Problem::invalid(
            "the pricing tables were not reloaded",
            vec![e],
        )),
    }
}
