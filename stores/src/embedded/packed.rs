//! How the large rows of the embedded stores (order views, outbox messages) are kept on disk:
//! LZ4-compressed behind a one-byte tag, so each order writes and keeps fewer pages. Rows
//! written before compression (plain JSON, starting with `{`) still read as they are.

use std::borrow::Cow;

/// First byte of a compressed row: LZ4 block, uncompressed length in 4 bytes (little endian)
/// in front. JSON never starts with it.
const LZ4: u8 = 0x01;
/// Rows shorter than this are stored as they are: too little to gain.
const MIN_PACKED: usize = 128;
/// Largest row a tag may claim: a corrupt length must not allocate gigabytes.
const MAX_UNPACKED: usize = 64 << 20;

/// Why a stored row cannot be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unpack {
    /// The first byte is neither JSON nor a known tag.
    #[error("unknown row format (first byte {0:#04x})")]
    Tag(u8),
    /// The compressed body does not decode, or claims an absurd length.
    #[error("compressed row does not decode: {0}")]
    Lz4(String),
}

/// The row to store for `bytes` (a JSON document, or a row that starts with one): compressed
/// when that makes it smaller, else `bytes` as they are.
pub(crate) fn pack(bytes: Vec<u8>) -> Vec<u8> {
    // MAX_UNPACKED also keeps the length within the 4 bytes that carry it.
    let len = match u32::try_from(bytes.len()) {
        Ok(len) if (MIN_PACKED..=MAX_UNPACKED).contains(&bytes.len()) => len,
        _ => return bytes,
    };
    let mut packed = vec![0; 5 + lz4_flex::block::get_maximum_output_size(bytes.len())];
    packed[0] = LZ4;
    packed[1..5].copy_from_slice(&len.to_le_bytes());
    match lz4_flex::block::compress_into(&bytes, &mut packed[5..]) {
        Ok(written) if 5 + written < bytes.len() => {
            packed.truncate(5 + written);
            packed
        }
        _ => bytes,
    }
}

/// What [`pack`] was given, from the stored row.
pub(crate) fn unpack(row: &[u8]) -> Result<Cow<'_, [u8]>, Unpack> {
    match row.first() {
        None | Some(b'{') => Ok(Cow::Borrowed(row)),
        Some(&LZ4) => {
            let body = &row[1..];
            let len = body
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .ok_or_else(|| Unpack::Lz4("no length".into()))?;
            // LZ4 expands at most 255 times: a larger claim is damage, not data.
            if len > MAX_UNPACKED || len > body.len().saturating_mul(255) {
                return Err(Unpack::Lz4(format!("claims {len} bytes")));
            }
            let mut out = vec![0; len];
            let written = lz4_flex::block::decompress_into(&body[4..], &mut out)
                .map_err(|e| Unpack::Lz4(e.to_string()))?;
            if written != len {
                return Err(Unpack::Lz4(format!("{written} bytes, {len} claimed")));
            }
            Ok(Cow::Owned(out))
        }
        Some(&other) => Err(Unpack::Tag(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_like() -> Vec<u8> {
        let line =
            r#"{"sku":"SKU-0001","quantity":2,"unit_price":{"minor":1999,"currency":"USD"}}"#;
        format!(r#"{{"order_id":"0190","lines":[{line},{line},{line}],"timeline":[]}}"#)
            .into_bytes()
    }

    #[test]
    fn a_large_row_is_stored_smaller_and_reads_back_the_same() {
        let json = view_like();
        let row = pack(json.clone());
        assert_eq!(row[0], LZ4);
        assert!(row.len() < json.len(), "{} >= {}", row.len(), json.len());
        assert_eq!(unpack(&row).expect("unpack").as_ref(), json.as_slice());
    }

    #[test]
    fn small_or_incompressible_rows_are_kept_as_they_are() {
        let small = br#"{"a":1}"#.to_vec();
        assert_eq!(pack(small.clone()), small);
        // Random bytes behind a brace: LZ4 cannot shrink them.
        let mut noise = vec![b'{'];
        noise.extend((0..4_000).map(|_| fastrand::u8(..)));
        assert_eq!(pack(noise.clone()), noise);
        assert!(matches!(unpack(&noise), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn rows_written_before_compression_read_as_they_are() {
        let json = view_like();
        assert!(matches!(unpack(&json), Ok(Cow::Borrowed(b)) if b == json.as_slice()));
    }

    #[test]
    fn damaged_rows_are_refused_not_misread() {
        let row = pack(view_like());
        assert!(matches!(unpack(&row[..3]), Err(Unpack::Lz4(_))));
        assert!(matches!(unpack(&row[..row.len() - 5]), Err(Unpack::Lz4(_))));
        let mut absurd = row.clone();
        absurd[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(unpack(&absurd), Err(Unpack::Lz4(_))));
        let mut longer = row.clone();
        let claimed = u32::from_le_bytes([row[1], row[2], row[3], row[4]]) + 10;
        longer[1..5].copy_from_slice(&claimed.to_le_bytes());
        assert!(matches!(unpack(&longer), Err(Unpack::Lz4(_))));
        assert!(matches!(unpack(b"\x07junk"), Err(Unpack::Tag(7))));
    }
}
