//! The tax table: rates in basis points by country and region, with per-category rates, for
//! price lists that exclude tax (US style) or include it (VAT style).

use super::TableError;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// One taxing authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jurisdiction {
    /// Its id (`US-CA`), named on tax lines.
    pub id: String,
    /// Its name for receipts.
    pub name: String,
    /// ISO 3166-1 alpha-2 country it taxes.
    pub country: String,
    /// The region it taxes; `None`: the whole country.
    pub region: Option<String>,
    /// Its standard rate, basis points.
    pub rate_bps: u32,
    /// Rates of categories that differ from the standard one.
    pub categories: BTreeMap<String, u32>,
}

impl Jurisdiction {
    /// The rate for a line of `category`.
    pub fn rate_for(&self, category: &str) -> u32 {
        self.categories
            .get(category)
            .copied()
            .unwrap_or(self.rate_bps)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    #[serde(default)]
    name: String,
    country: String,
    region: Option<String>,
    rate_bps: u32,
    #[serde(default)]
    categories: BTreeMap<String, u32>,
    #[serde(default)]
    prices_include_tax: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    jurisdictions: Vec<Entry>,
}

/// The tax table. A destination is taxed by every jurisdiction of its country with no region
/// or with its region; a destination no entry names pays no tax.
#[derive(Clone, Debug, Default)]
pub struct TaxTable {
    jurisdictions: Vec<Jurisdiction>,
    inclusive: HashMap<String, bool>,
}

fn code(value: &str) -> bool {
    value.len() == 2 && value.chars().all(|c| c.is_ascii_uppercase())
}

impl TaxTable {
    /// Parses `{"jurisdictions":[{"id","name","country","region"?,"rate_bps","categories"?,
    /// "prices_include_tax"?}]}`; errors name the entry.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TableError> {
        let file: File = super::json(text, origin)?;
        let mut jurisdictions: Vec<Jurisdiction> = Vec::new();
        let mut inclusive: HashMap<String, bool> = HashMap::new();
        for (i, e) in file.jurisdictions.into_iter().enumerate() {
            let label = if e.id.trim().is_empty() {
                format!("jurisdictions[{i}]")
            } else {
                format!("jurisdiction {}", e.id)
            };
            let bad = |reason: String| TableError::invalid(origin, &label, reason);
            if e.id.trim().is_empty() || e.id.len() > 64 {
                return Err(bad("id: 1 to 64 characters".into()));
            }
            if jurisdictions.iter().any(|j| j.id == e.id) {
                return Err(bad("the id appears twice".into()));
            }
            if !code(&e.country) {
                return Err(bad(format!(
                    "country {:?}: two upper-case letters (ISO 3166-1)",
                    e.country
                )));
            }
            if e.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
                return Err(bad("region: leave it out for the whole country".into()));
            }
            for (what, rate) in std::iter::once(("rate_bps".to_owned(), e.rate_bps)).chain(
                e.categories
                    .iter()
                    .map(|(c, r)| (format!("categories.{c}"), *r)),
            ) {
                if rate > 10_000 {
                    return Err(bad(format!("{what}: must be 0 to 10000")));
                }
            }
            match inclusive.insert(e.country.clone(), e.prices_include_tax) {
                Some(before) if before != e.prices_include_tax => {
                    return Err(bad(format!(
                        "prices_include_tax differs from another jurisdiction of {}",
                        e.country
                    )));
                }
                _ => {}
            }
            jurisdictions.push(Jurisdiction {
                name: if e.name.is_empty() {
                    e.id.clone()
                } else {
                    e.name
                },
                id: e.id,
                country: e.country,
                region: e.region.map(|r| r.trim().to_ascii_uppercase()),
                rate_bps: e.rate_bps,
                categories: e.categories,
            });
        }
        Ok(Self {
            jurisdictions,
            inclusive,
        })
    }

    /// The jurisdictions taxing a destination, in table order.
    pub fn for_destination<'a>(
        &'a self,
        country: &'a str,
        region: &'a str,
    ) -> impl Iterator<Item = &'a Jurisdiction> + 'a {
        let region = region.trim();
        self.jurisdictions.iter().filter(move |j| {
            j.country == country
                && j.region
                    .as_deref()
                    .is_none_or(|r| r.eq_ignore_ascii_case(region))
        })
    }

    /// Whether prices shown in `country` include its tax.
    pub fn prices_include_tax(&self, country: &str) -> bool {
        self.inclusive.get(country).copied().unwrap_or(false)
    }

    /// How many jurisdictions there are.
    pub fn len(&self) -> usize {
        self.jurisdictions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.jurisdictions.is_empty()
    }
}
