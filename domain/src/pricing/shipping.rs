//! The shipping table: zones of countries, each with fees by weight band.

use super::TableError;
use serde::Deserialize;

/// One weight band of a zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    /// The heaviest parcel in the band, grams; `None`: no upper bound.
    pub up_to_grams: Option<u64>,
    /// The fee, minor units.
    pub fee_minor: i64,
}

/// A shipping zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// Its id.
    pub id: String,
    /// ISO 3166-1 alpha-2 countries in it; `*` matches any country no other zone lists.
    pub countries: Vec<String>,
    /// Bands, ascending by weight.
    pub bands: Vec<Band>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BandEntry {
    up_to_grams: Option<u64>,
    fee_minor: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    countries: Vec<String>,
    bands: Vec<BandEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    zones: Vec<Entry>,
}

/// Why a parcel cannot be shipped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShippingError {
    /// No zone includes the country.
    #[error("no shipping zone includes {0}")]
    NoZone(String),
    /// The parcel is heavier than the zone's last band.
    #[error("{grams} g is more than zone {zone} ships")]
    TooHeavy {
        /// The zone.
        zone: String,
        /// The parcel's weight.
        grams: u64,
    },
}

/// The shipping table.
#[derive(Clone, Debug, Default)]
pub struct ShippingTable {
    zones: Vec<Zone>,
}

impl ShippingTable {
    /// Parses `{"zones":[{"id","countries":["US"],"bands":[{"up_to_grams"?,"fee_minor"}]}]}`;
    /// errors name the zone.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TableError> {
        let file: File = super::json(text, origin)?;
        let mut zones: Vec<Zone> = Vec::new();
        for (i, e) in file.zones.into_iter().enumerate() {
            let label = if e.id.trim().is_empty() {
                format!("zones[{i}]")
            } else {
                format!("zone {}", e.id)
            };
            let bad = |reason: String| TableError::invalid(origin, &label, reason);
            if e.id.trim().is_empty() || zones.iter().any(|z| z.id == e.id) {
                return Err(bad("id: required and unique".into()));
            }
            if e.countries.is_empty() {
                return Err(bad("countries: at least one (or \"*\")".into()));
            }
            for c in &e.countries {
                let ok = c == "*" || (c.len() == 2 && c.chars().all(|c| c.is_ascii_uppercase()));
                if !ok {
                    return Err(bad(format!("countries: {c:?} is not an ISO 3166-1 code")));
                }
                if zones.iter().any(|z| z.countries.contains(c)) {
                    return Err(bad(format!("countries: {c} is in another zone already")));
                }
            }
            if e.bands.is_empty() {
                return Err(bad("bands: at least one".into()));
            }
            let mut bands: Vec<Band> = Vec::new();
            for (b, band) in e.bands.iter().enumerate() {
                if band.fee_minor < 0 {
                    return Err(bad(format!("bands[{b}].fee_minor: must be 0 or more")));
                }
                let rises = match (bands.last(), band.up_to_grams) {
                    (None, _) => true,
                    (Some(prev), Some(up)) => prev.up_to_grams.is_some_and(|p| p < up),
                    (Some(prev), None) => prev.up_to_grams.is_some(),
                };
                if !rises {
                    return Err(bad(format!(
                        "bands[{b}]: up_to_grams must rise, and only the last band may leave it out"
                    )));
                }
                bands.push(Band {
                    up_to_grams: band.up_to_grams,
                    fee_minor: band.fee_minor,
                });
            }
            zones.push(Zone {
                id: e.id,
                countries: e.countries,
                bands,
            });
        }
        Ok(Self { zones })
    }

    /// The zone and fee for a parcel of `grams` to `country`.
    pub fn fee(&self, country: &str, grams: u64) -> Result<(&Zone, i64), ShippingError> {
        let zone = self
            .zones
            .iter()
            .find(|z| z.countries.iter().any(|c| c == country))
            .or_else(|| {
                self.zones
                    .iter()
                    .find(|z| z.countries.iter().any(|c| c == "*"))
            })
            .ok_or_else(|| ShippingError::NoZone(country.to_owned()))?;
        let band = zone
            .bands
            .iter()
            .find(|b| b.up_to_grams.is_none_or(|up| grams <= up))
            .ok_or_else(|| ShippingError::TooHeavy {
                zone: zone.id.clone(),
                grams,
            })?;
        Ok((zone, band.fee_minor))
    }

    /// How many zones there are.
    pub fn len(&self) -> usize {
        self.zones.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }
}
