//! Money in integer minor units with an ISO 4217 currency; no floating point anywhere.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a money operation could not be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    /// The two amounts are in different currencies.
    #[error("currency mismatch: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The result does not fit in an i64 of minor units.
    #[error("amount overflow")]
    Overflow,
    /// The text is not a three-letter upper-case ISO 4217 code.
    #[error("invalid currency code {0:?}")]
    InvalidCurrency(String),
}

/// A three-letter ISO 4217 currency code such as `USD`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses an upper-case three-letter code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let bytes = code.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(MoneyError::InvalidCurrency(code.to_owned()))
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// On the API: a string of three upper-case letters.
impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::upper_code(3)
            .description(Some("ISO 4217 currency code"))
            .into()
    }
}

impl utoipa::ToSchema for Currency {}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: integer minor units (cents for USD) in one currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Money {
    /// Amount in minor units.
    pub minor: i64,
    /// Currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// An amount in minor units.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// Subtracts an amount of the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.checked_add(Money::new(
            other.minor.checked_neg().ok_or(MoneyError::Overflow)?,
            other.currency,
        ))
    }

    /// Adds two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// Multiplies by a quantity.
    pub fn checked_mul(self, quantity: i64) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(quantity)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }

    /// Takes `basis_points` / 10,000 of the amount, rounding half away from zero.
    pub fn percent_bps(self, basis_points: u32) -> Result<Money, MoneyError> {
        let product = i128::from(self.minor) * i128::from(basis_points);
        let half = if product >= 0 { 5_000 } else { -5_000 };
        let minor = (product + half) / 10_000;
        let minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow)?;
        Ok(Money::new(minor, self.currency))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("valid")
    }

    #[test]
    fn currency_codes_are_validated() {
        assert_eq!(usd().as_str(), "USD");
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("USDX").is_err());
    }

    #[test]
    fn arithmetic_is_checked_and_currency_safe() {
        let a = Money::new(1999, usd());
        assert_eq!(a.checked_mul(3).expect("fits").minor, 5997);
        assert_eq!(a.checked_add(a).expect("fits").minor, 3998);
        let eur = Money::new(1, Currency::parse("EUR").expect("valid"));
        assert!(matches!(
            a.checked_add(eur),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(
            Money::new(i64::MAX, usd()).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn basis_points_round_half_away_from_zero() {
        // 8.25 % of 10.00 = 0.825 -> 0.83
        assert_eq!(
            Money::new(1000, usd())
                .percent_bps(825)
                .expect("fits")
                .minor,
            83
        );
        // 8.25 % of 0.10 = 0.00825 -> 0.01
        assert_eq!(
            Money::new(10, usd()).percent_bps(825).expect("fits").minor,
            1
        );
        assert_eq!(
            Money::new(1, usd()).percent_bps(825).expect("fits").minor,
            0
        );
        assert_eq!(
            Money::new(-1000, usd())
                .percent_bps(825)
                .expect("fits")
                .minor,
            -83
        );
    }

    #[test]
    fn money_displays_in_major_units() {
        assert_eq!(Money::new(1999, usd()).to_string(), "19.99 USD");
        assert_eq!(Money::new(-5, usd()).to_string(), "-0.05 USD");
    }
}
