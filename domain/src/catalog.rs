//! The product catalog: SKUs with name, price, category, weight and initial stock.

use crate::{Currency, Money};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Why a catalog file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not JSON shaped like a catalog.
    #[error("invalid catalog {path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The file is not a valid catalog.
    #[error("invalid catalog {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogItem {
    /// Stock-keeping unit, unique.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in minor units of the catalog currency.
    pub price_minor: i64,
    /// Category for promotions and reporting.
    pub category: String,
    /// Shipping weight in grams.
    pub weight_grams: u32,
    /// Units in stock when the catalog is first seeded.
    pub stock: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    currency: Currency,
    items: Vec<CatalogItem>,
}

/// The loaded catalog, indexed by SKU.
#[derive(Clone, Debug)]
pub struct Catalog {
    currency: Currency,
    items: Vec<CatalogItem>,
    by_sku: HashMap<String, usize>,
}

impl Catalog {
    /// Builds a catalog, refusing duplicate SKUs and negative prices.
    pub fn new(currency: Currency, items: Vec<CatalogItem>) -> Result<Self, String> {
        let mut by_sku = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.price_minor < 0 {
                return Err(format!("items[{i}] ({}): negative price", item.sku));
            }
            if item.sku.is_empty() {
                return Err(format!("items[{i}]: empty sku"));
            }
            if by_sku.insert(item.sku.clone(), i).is_some() {
                return Err(format!("items[{i}]: duplicate sku {}", item.sku));
            }
        }
        Ok(Self {
            currency,
            items,
            by_sku,
        })
    }

    /// Loads a catalog from a JSON file `{"currency":"USD","items":[…]}`.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses the JSON of [`load`](Self::load); `origin` names it in errors (a path, or
    /// "the built-in demo catalog").
    pub fn parse(text: &str, origin: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            serde_json::from_str(text).map_err(|source| CatalogError::Json {
                path: origin.to_owned(),
                source,
            })?;
        Self::new(file.currency, file.items).map_err(|reason| CatalogError::Invalid {
            path: origin.to_owned(),
            reason,
        })
    }

    /// The currency all prices are in.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether an order in `currency` can be sold: the store takes it (`accepted`, the
    /// configuration's list) and the catalog is priced in it.
    pub fn sells_in<'a>(
        &self,
        currency: &str,
        mut accepted: impl Iterator<Item = &'a String>,
    ) -> bool {
        currency == self.currency().as_str() && accepted.any(|c| c == currency)
    }

    /// Looks up a SKU.
    pub fn get(&self, sku: &str) -> Option<&CatalogItem> {
        self.by_sku.get(sku).map(|&i| &self.items[i])
    }

    /// The unit price of a SKU.
    pub fn price(&self, sku: &str) -> Option<Money> {
        self.get(sku)
            .map(|item| Money::new(item.price_minor, self.currency))
    }

    /// All items in file order.
    pub fn items(&self) -> &[CatalogItem] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str) -> CatalogItem {
        CatalogItem {
            sku: sku.into(),
            name: "Thing".into(),
            price_minor: 500,
            category: "misc".into(),
            weight_grams: 100,
            stock: 3,
        }
    }

    #[test]
    fn duplicates_are_refused_and_lookups_work() {
        let usd = Currency::parse("USD").expect("valid");
        assert!(Catalog::new(usd, vec![item("A"), item("A")]).is_err());
        let catalog = Catalog::new(usd, vec![item("A"), item("B")]).expect("valid");
        assert_eq!(catalog.price("B"), Some(Money::new(500, usd)));
        assert!(catalog.get("C").is_none());
    }

    #[test]
    fn the_demo_catalog_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/catalog.json");
        let catalog = Catalog::load(&path).expect("demo catalog is valid");
        assert!(catalog.items().len() >= 50);
    }
}
