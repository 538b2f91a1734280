//! OpenAPI schemas for what `#[derive(ToSchema)]` cannot say on its own: text that must not be
//! blank, and lengths counted the way the checks in [`crate::order`] count them.
//!
//! JSON Schema counts a string's length in characters (code points), so the checks do too.

use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};

/// Matches a string holding at least one character that is not white space, as Rust's
/// `char::is_whitespace` (Unicode `White_Space`) means it: what `str::trim` leaves non-empty.
/// Spelled out rather than `\S`, since regex engines disagree on what `\s` covers.
pub const NOT_BLANK: &str = "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// A string of `min..=max` characters.
pub fn text(min: usize, max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
}

/// A string of 1 to `max` characters that is not only white space.
pub fn not_blank(max: usize) -> ObjectBuilder {
    text(1, max).pattern(Some(NOT_BLANK))
}

/// Exactly `len` upper-case ASCII letters (currency and country codes). The length is stated
/// beside the pattern because some regex engines let `$` match before a final newline.
pub fn upper_code(len: usize) -> ObjectBuilder {
    text(len, len).pattern(Some(format!("^[A-Z]{{{len}}}$")))
}

/// A SKU in a checkout line.
pub fn sku() -> Object {
    not_blank(crate::order::MAX_SKU_CHARS).build()
}

/// A required line of a shipping address.
pub fn address_line() -> Object {
    not_blank(crate::order::MAX_ADDRESS_CHARS).build()
}

/// The payment provider's token.
pub fn payment_token() -> Object {
    not_blank(crate::order::MAX_TOKEN_CHARS)
        .description(Some(
            "simulated provider: tok_visa approves, tok_decline declines, tok_flaky fails twice then approves",
        ))
        .build()
}

/// An ISO 4217 currency code.
pub fn currency() -> Object {
    upper_code(3).build()
}

/// An ISO 3166-1 alpha-2 country code.
pub fn country() -> Object {
    upper_code(2).build()
}

/// The coupon codes of a checkout.
pub fn coupon_codes() -> Array {
    ArrayBuilder::new()
        .items(text(0, crate::order::MAX_COUPON_CHARS))
        .max_items(Some(crate::order::MAX_COUPONS))
        .build()
}

#[cfg(test)]
mod tests {
    use super::NOT_BLANK;

    /// The characters [`NOT_BLANK`] names, read back from its text.
    fn named() -> Vec<(u32, u32)> {
        let body = NOT_BLANK
            .strip_prefix("[^")
            .and_then(|s| s.strip_suffix(']'))
            .expect("a negated class");
        let mut chars = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (c, after) = if let Some(hex) = rest.strip_prefix("\\u") {
                let code = u32::from_str_radix(&hex[..4], 16).expect("hex");
                (code, &hex[4..])
            } else if let Some(after) = rest.strip_prefix('\\') {
                let c = match after.as_bytes()[0] {
                    b't' => 0x09,
                    b'n' => 0x0a,
                    b'f' => 0x0c,
                    b'r' => 0x0d,
                    other => panic!("unexpected escape {other}"),
                };
                (c, &after[1..])
            } else {
                let c = rest.chars().next().expect("a char");
                (u32::from(c), &rest[c.len_utf8()..])
            };
            chars.push(c);
            rest = after;
        }
        // `a-b` ranges: a dash between two characters.
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            if i + 2 < chars.len() && chars[i + 1] == u32::from('-') {
                ranges.push((chars[i], chars[i + 2]));
                i += 3;
            } else {
                ranges.push((chars[i], chars[i]));
                i += 1;
            }
        }
        ranges
    }

    #[test]
    fn the_pattern_names_exactly_the_white_space_that_trim_removes() {
        let ranges = named();
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            let in_class = ranges
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&u32::from(c)));
            assert_eq!(in_class, c.is_whitespace(), "U+{:04X}", u32::from(c));
        }
    }
}
