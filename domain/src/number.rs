//! Whole numbers as the API reads them. JSON Schema counts `2.0` as an integer, so a client
//! built from the OpenAPI document may send one; it is read as `2`. A fraction, a number out of
//! the field's range, or anything but a number is still refused.
//!
//! Use with `#[serde(deserialize_with = "crate::number::whole")]`.

use serde::Deserializer;
use serde::de::{self, Unexpected};
use std::fmt;
use std::marker::PhantomData;

/// 2^64, the first float above every `u64`.
const U64_END: f64 = 18_446_744_073_709_551_616.0;
/// -2^63, the smallest `i64` as a float (exact).
const I64_START: f64 = -9_223_372_036_854_775_808.0;

/// Reads a whole number of type `T` from a JSON integer or an integral float (`25779.0`).
pub fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    d.deserialize_any(Whole(PhantomData))
}

struct Whole<T>(PhantomData<T>);

impl<T> de::Visitor<'_> for Whole<T>
where
    T: TryFrom<u64> + TryFrom<i64>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number in range")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // The casts below are exact: `v` is whole and inside the target's range.
        if v.fract() != 0.0 || !v.is_finite() {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        } else if (0.0..U64_END).contains(&v) {
            self.visit_u64(v as u64)
        } else if (I64_START..0.0).contains(&v) {
            self.visit_i64(v as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Count {
        #[serde(deserialize_with = "super::whole")]
        n: u32,
    }

    #[derive(Debug, Deserialize)]
    struct Signed {
        #[serde(deserialize_with = "super::whole")]
        n: i64,
    }

    fn count(json: &str) -> Option<u32> {
        serde_json::from_str::<Count>(json).ok().map(|c| c.n)
    }

    #[test]
    fn integers_and_integral_floats_are_read() {
        assert_eq!(count(r#"{"n": 2}"#), Some(2));
        assert_eq!(count(r#"{"n": 25779.0}"#), Some(25779));
        assert_eq!(count(r#"{"n": 2e3}"#), Some(2000));
        assert_eq!(count(r#"{"n": -0.0}"#), Some(0));
        let signed = |json: &str| serde_json::from_str::<Signed>(json).ok().map(|s| s.n);
        assert_eq!(signed(r#"{"n": -3.0}"#), Some(-3));
        assert_eq!(signed(r#"{"n": 1e12}"#), Some(1_000_000_000_000));
    }

    #[test]
    fn fractions_out_of_range_and_other_types_are_refused() {
        for json in [
            r#"{"n": 2.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "2"}"#,
            r#"{"n": null}"#,
        ] {
            assert_eq!(count(json), None, "{json}");
        }
        assert!(serde_json::from_str::<Signed>(r#"{"n": 1e19}"#).is_err());
    }

    #[test]
    fn the_wire_codec_reads_them_too() {
        let mut bytes = br#"{"n": 7.0}"#.to_vec();
        let parsed: Count = simd_json::serde::from_slice(&mut bytes).expect("simd-json reads it");
        assert_eq!(parsed.n, 7);
    }
}
