//! Timestamps on the wire: RFC 3339 in UTC, as chrono writes them, but read and written without
//! chrono's general-purpose formatter and parser.
//!
//! Every event carries up to six timestamps and every stage decodes and encodes the whole
//! event, so these two functions run a dozen times per order per stage. The output is exactly
//! chrono's (`2026-12-02T05:59:47.614871364Z`, with 0, 3, 6 or 9 fraction digits as needed);
//! anything the fast path does not recognise goes to chrono, so every RFC 3339 form still
//! parses. Use with `#[serde(with = "crate::timestamp")]`.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::{Deserializer, Serializer, de};

/// Writes `at` as chrono's `to_rfc3339_opts(SecondsFormat::AutoSi, true)` does.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match format(at, &mut buf) {
        Some(len) => s.serialize_str(std::str::from_utf8(&buf[..len]).unwrap_or_default()),
        None => s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

/// Reads an RFC 3339 timestamp (any offset) as UTC.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse(v).ok_or_else(|| E::custom(format!("invalid timestamp {v:?}")))
        }
    }
    d.deserialize_str(Visitor)
}

/// Formats into `buf`; `None` for a year outside 0..=9999 (left to chrono).
fn format(at: &DateTime<Utc>, buf: &mut [u8; 30]) -> Option<usize> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = at.nanosecond();
    // A leap second is written by chrono as second 60; leave that rarity to it.
    if nanos >= 1_000_000_000 {
        return None;
    }
    put(&mut buf[0..4], year);
    buf[4] = b'-';
    put(&mut buf[5..7], at.month());
    buf[7] = b'-';
    put(&mut buf[8..10], at.day());
    buf[10] = b'T';
    put(&mut buf[11..13], at.hour());
    buf[13] = b':';
    put(&mut buf[14..16], at.minute());
    buf[16] = b':';
    put(&mut buf[17..19], at.second());
    let mut len = 19;
    let digits = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    if digits > 0 {
        buf[19] = b'.';
        put(
            &mut buf[20..20 + digits],
            nanos / 10u32.pow(9 - digits as u32),
        );
        len = 20 + digits;
    }
    buf[len] = b'Z';
    Some(len + 1)
}

/// Writes `value` as decimal digits filling `out`, zero-padded.
fn put(out: &mut [u8], mut value: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` directly; anything else through chrono's own
/// `DateTime<Utc>` parser, the one its serde used, so every form read before is read still.
pub fn parse(v: &str) -> Option<DateTime<Utc>> {
    fast(v.as_bytes()).or_else(|| v.parse::<DateTime<Utc>>().ok())
}

fn fast(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        Some(n)
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        n if b[19] == b'.' && (22..=30).contains(&n) => {
            let digits = n - 21;
            num(20..20 + digits)? * 10u32.pow(9 - digits as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(5..7)?, num(8..10)?)?;
    let time = NaiveTime::from_hms_nano_opt(num(11..13)?, num(14..16)?, num(17..19)?, nanos)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "crate::timestamp")]
        at: DateTime<Utc>,
    }

    #[test]
    fn writes_exactly_what_chrono_writes_and_reads_it_back() {
        let base = Utc::now();
        for nanos in [0, 5_000_000, 614_871_000, 614_871_364, 1, 999_999_999] {
            let at = base.with_nanosecond(nanos).expect("valid nanoseconds");
            let ours = serde_json::to_string(&T { at }).expect("ser");
            let chrono = serde_json::to_string(&serde_json::json!({ "at": at })).expect("ser");
            assert_eq!(ours, chrono, "nanos {nanos}");
            assert_eq!(serde_json::from_str::<T>(&ours).expect("de").at, at);
        }
        let old = DateTime::from_timestamp(-62_000_000_000, 0).expect("year 5");
        let text = serde_json::to_string(&T { at: old }).expect("ser");
        assert_eq!(serde_json::from_str::<T>(&text).expect("de").at, old);
        // Years chrono writes with a sign (outside 0..=9999) go through chrono both ways.
        for far in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            let text = serde_json::to_string(&T { at: far }).expect("ser");
            assert_eq!(
                serde_json::from_str::<T>(&text).expect("de").at,
                far,
                "{text}"
            );
        }
    }

    #[test]
    fn reads_every_form_chrono_read_before() {
        for form in [
            "2026-12-02T07:59:47.5+02:00",
            "2026-12-02t05:59:47.5z",
            "2026-12-02 05:59:47Z",
            "2026-12-02T05:59:47.1234567891Z",
            "2026-12-02T05:59:47+0200",
        ] {
            let before = form.parse::<DateTime<Utc>>().ok();
            assert!(before.is_some(), "chrono reads {form:?}");
            assert_eq!(parse(form), before, "{form:?}");
        }
    }

    #[test]
    fn other_rfc3339_forms_still_parse_and_garbage_does_not() {
        let with_offset = parse("2026-12-02T07:59:47.5+02:00").expect("offset form");
        assert_eq!(
            with_offset,
            parse("2026-12-02T05:59:47.500Z").expect("z form")
        );
        assert_eq!(
            parse("2026-12-02T05:59:47Z").map(|t| t.timestamp_subsec_nanos()),
            Some(0)
        );
        for bad in [
            "",
            "2026-13-02T05:59:47Z",
            "2026-12-02T05:59:47.Z",
            "2026-12-02",
            "soon",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }
}
