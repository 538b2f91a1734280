//! The pricing engine: catalog prices, promotions, tax by destination and shipping by zone and
//! weight, turned into an order's [`PriceBreakdown`]. Pure: no I/O and no clock (the time is
//! an argument), so the price stage, `POST /v1/quotes` and `orderflow price` give the same
//! answer for the same cart, tables and time.
//!
//! Tables: [`Promotions`] (`config/promotions.json`), [`TaxTable`] (`config/tax.json`),
//! [`ShippingTable`] (`config/shipping.json`) and the [`Catalog`], bundled in a [`PriceBook`]
//! whose `version` (a digest of the four texts) every priced order records.
//!
//! How an order is priced ([`PriceBook::price`]):
//! 1. Each line is `unit_price × quantity`; their sum is the subtotal.
//! 2. Promotions apply one after another: priority descending, then id. Automatic ones and
//!    those whose code the cart gives are candidates; an exclusive one applies only first and
//!    stops the rest. Each takes its share off what is left of the lines it covers, so
//!    percentages compound; `min_subtotal_minor` is checked against the subtotal, and
//!    `max_discount_minor` caps what one promotion takes off.
//! 3. Tax: every jurisdiction of the destination taxes each line's discounted amount at its
//!    rate for the line's category. With prices that include tax, the tax is the part of the
//!    amount at rate `R / (10000 + R)`, split between the jurisdictions by rate. Shipping is
//!    not taxed.
//! 4. Shipping: the zone of the country, the band of the cart's weight; a free-shipping
//!    promotion waives it.
//!
//! Rounding (module [`round`]): every division rounds half to even, per line. An amount
//! worked out on the order (a percentage or fixed amount off, a cap) is split over its lines
//! in proportion, by largest remainder, so lines always sum to the order exactly. No line and
//! no total goes below zero: a discount never exceeds what is left of a line.

mod breakdown;
mod engine;
pub mod promotions;
pub mod round;
pub mod shipping;
pub mod tax;

pub use breakdown::{
    AppliedPromotion, CouponReason, LineDiscount, PriceBreakdown, PricedLine, RejectedCoupon,
    TaxLine,
};
pub use engine::{Cart, PriceError, Quote};
pub use promotions::{Benefit, Promotion, Promotions, Scope, Tier, TierOff, normalize_code};
pub use shipping::{ShippingError, ShippingTable};
pub use tax::{Jurisdiction, TaxTable};

use crate::Catalog;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Why a pricing table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read.
    #[error("cannot read {origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not JSON of the table's shape.
    #[error("invalid {origin}: {source}")]
    Json {
        /// The file, or which table.
        origin: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An entry is not acceptable.
    #[error("invalid {origin}: {entry}: {reason}")]
    Invalid {
        /// The file, or which table.
        origin: String,
        /// The entry (`promotion SPRING`, `zone eu`).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The catalog cannot be used.
    #[error(transparent)]
    Catalog(#[from] crate::CatalogError),
}

impl TableError {
    fn invalid(origin: &str, entry: &str, reason: String) -> Self {
        Self::Invalid {
            origin: origin.to_owned(),
            entry: entry.to_owned(),
            reason,
        }
    }
}

fn json<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, TableError> {
    serde_json::from_str(text).map_err(|source| TableError::Json {
        origin: origin.to_owned(),
        source,
    })
}

/// A table's text and where it came from (a path, or "the built-in demo …").
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The JSON.
    pub text: &'a str,
    /// Named in errors.
    pub origin: &'a str,
}

/// The four pricing tables' texts.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    /// `catalog.json`.
    pub catalog: Source<'a>,
    /// `promotions.json`.
    pub promotions: Source<'a>,
    /// `tax.json`.
    pub tax: Source<'a>,
    /// `shipping.json`.
    pub shipping: Source<'a>,
}

impl Sources<'_> {
    /// The version a book of these texts gets: the first 12 hex digits of the SHA-256 of the
    /// four texts (so a file rewritten with the same text keeps its version).
    pub fn version(&self) -> String {
        let mut digest = Sha256::new();
        for s in [self.catalog, self.promotions, self.tax, self.shipping] {
            digest.update((s.text.len() as u64).to_be_bytes());
            digest.update(s.text.as_bytes());
        }
        digest
            .finalize()
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The price book in force, shared by the API and the price stage and swapped whole when the
/// tables are reloaded.
pub type SharedPriceBook = Arc<arc_swap::ArcSwap<PriceBook>>;

/// Everything pricing reads, with the version priced orders record.
#[derive(Clone, Debug)]
pub struct PriceBook {
    /// Prices, categories and weights.
    pub catalog: Arc<Catalog>,
    /// Promotions.
    pub promotions: Promotions,
    /// Tax rates.
    pub tax: TaxTable,
    /// Shipping fees.
    pub shipping: ShippingTable,
    /// The first 12 hex digits of the SHA-256 of the four tables' texts.
    pub version: String,
}

impl PriceBook {
    /// A book of tables already parsed, with the version given.
    pub fn new(
        catalog: Arc<Catalog>,
        promotions: Promotions,
        tax: TaxTable,
        shipping: ShippingTable,
        version: &str,
    ) -> Self {
        Self {
            catalog,
            promotions,
            tax,
            shipping,
            version: version.to_owned(),
        }
    }

    /// Shares this book for swapping.
    pub fn shared(self) -> SharedPriceBook {
        Arc::new(arc_swap::ArcSwap::from_pointee(self))
    }

    /// Parses and checks the four tables; the error names the table and the entry.
    pub fn parse(sources: &Sources<'_>) -> Result<Self, TableError> {
        let catalog = Catalog::parse(sources.catalog.text, sources.catalog.origin)?;
        let version = sources.version();
        Ok(Self {
            catalog: Arc::new(catalog),
            promotions: Promotions::parse(sources.promotions.text, sources.promotions.origin)?,
            tax: TaxTable::parse(sources.tax.text, sources.tax.origin)?,
            shipping: ShippingTable::parse(sources.shipping.text, sources.shipping.origin)?,
            version,
        })
    }
}
