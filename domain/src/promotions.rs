//! Promotion codes: what each coupon takes off and how often it may be used in all.

use crate::{Money, MoneyError};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// Why a promotion table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PromotionsError {
    /// The file could not be read.
    #[error("cannot read promotions {origin}: {source}")]
    Io {
        /// The file.
        origin: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The text is not JSON shaped like a promotion table.
    #[error("invalid promotions {origin}: {source}")]
    Json {
        /// The file, or which table.
        origin: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An entry is not acceptable.
    #[error("invalid promotions {origin}: {reason}")]
    Invalid {
        /// The file, or which table.
        origin: String,
        /// What is wrong, naming the entry.
        reason: String,
    },
}

/// What a coupon takes off the subtotal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discount {
    /// A share of the subtotal, in basis points (1000 = 10 %).
    PercentBps(u32),
    /// A fixed amount in minor units of the catalog currency.
    AmountMinor(i64),
}

/// One promotion code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    /// The code customers type, upper case.
    pub code: String,
    /// What it takes off.
    pub discount: Discount,
    /// How many orders may use it in all.
    pub max_uses: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    code: String,
    #[serde(default)]
    percent_off_bps: Option<u32>,
    #[serde(default)]
    amount_off_minor: Option<i64>,
    max_uses: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    promotions: Vec<Entry>,
}

/// The promotion table, by code (codes match case-insensitively).
#[derive(Clone, Debug, Default)]
pub struct Promotions {
    by_code: HashMap<String, Promotion>,
}

impl Promotions {
    /// Reads a JSON file: `{"promotions":[{"code":"WELCOME10","percent_off_bps":1000,"max_uses":10000}]}`;
    /// each entry has exactly one of `percent_off_bps` and `amount_off_minor`.
    pub fn load(path: &Path) -> Result<Self, PromotionsError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PromotionsError::Io {
            origin: origin.clone(),
            source,
        })?;
        Self::parse_from(&text, &origin)
    }

    /// Parses the JSON of [`load`](Self::load).
    pub fn parse(text: &str) -> Result<Self, PromotionsError> {
        Self::parse_from(text, "the promotion table")
    }

    /// Parses the JSON of [`load`](Self::load); `origin` names it in errors.
    pub fn parse_from(text: &str, origin: &str) -> Result<Self, PromotionsError> {
        let invalid = |reason: String| PromotionsError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        let file: File = serde_json::from_str(text).map_err(|source| PromotionsError::Json {
            origin: origin.to_owned(),
            source,
        })?;
        let mut by_code = HashMap::new();
        for entry in file.promotions {
            let code = entry.code.trim().to_ascii_uppercase();
            if code.is_empty()
                || code.len() > 64
                || !code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(format!(
                    "code {:?}: 1 to 64 letters, digits, '-' or '_'",
                    entry.code
                )));
            }
            let discount = match (entry.percent_off_bps, entry.amount_off_minor) {
                (Some(bps), None) if (1..=10_000).contains(&bps) => Discount::PercentBps(bps),
                (None, Some(minor)) if minor > 0 => Discount::AmountMinor(minor),
                _ => {
                    return Err(invalid(format!(
                        "code {code}: give exactly one of percent_off_bps (1 to 10000) and amount_off_minor (> 0)"
                    )));
                }
            };
            let promotion = Promotion {
                code: code.clone(),
                discount,
                max_uses: entry.max_uses,
            };
            if by_code.insert(code.clone(), promotion).is_some() {
                return Err(invalid(format!("code {code} appears twice")));
            }
        }
        Ok(Self { by_code })
    }

    /// The promotion of `code`, if any.
    pub fn get(&self, code: &str) -> Option<&Promotion> {
        self.by_code.get(&code.trim().to_ascii_uppercase())
    }

    /// How many codes there are.
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

impl Promotion {
    /// What this code takes off `subtotal`, never more than the subtotal.
    pub fn discount_on(&self, subtotal: Money) -> Result<Money, MoneyError> {
        let off = match self.discount {
            Discount::PercentBps(bps) => subtotal.percent_bps(bps)?,
            Discount::AmountMinor(minor) => Money::new(minor, subtotal.currency),
        };
        Ok(if off.minor > subtotal.minor {
            subtotal
        } else {
            off
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    #[test]
    fn codes_parse_match_any_case_and_cap_at_the_subtotal() {
        let p = Promotions::parse(
            r#"{"promotions":[{"code":"welcome10","percent_off_bps":1000,"max_uses":5},
                {"code":"FIVE","amount_off_minor":500,"max_uses":1}]}"#,
        )
        .expect("valid");
        let usd = Currency::parse("USD").expect("usd");
        let welcome = p.get("Welcome10").expect("case-insensitive");
        assert_eq!(welcome.max_uses, 5);
        assert_eq!(
            welcome
                .discount_on(Money::new(2999, usd))
                .expect("ok")
                .minor,
            300
        );
        let five = p.get("five").expect("found");
        assert_eq!(
            five.discount_on(Money::new(300, usd)).expect("ok").minor,
            300
        );
        assert!(p.get("NOPE").is_none());
        for bad in [
            r#"{"promotions":[{"code":"X","max_uses":1}]}"#,
            r#"{"promotions":[{"code":"X","percent_off_bps":1,"amount_off_minor":1,"max_uses":1}]}"#,
            r#"{"promotions":[{"code":"X","percent_off_bps":20000,"max_uses":1}]}"#,
            r#"{"promotions":[{"code":"A B","percent_off_bps":1,"max_uses":1}]}"#,
            r#"{"promotions":[{"code":"X","percent_off_bps":1,"max_uses":1},{"code":"x","percent_off_bps":2,"max_uses":1}]}"#,
        ] {
            assert!(Promotions::parse(bad).is_err(), "{bad}");
        }
    }
}
