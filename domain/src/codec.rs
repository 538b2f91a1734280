//! The wire codec of [`OrderEvent`]: JSON, decoded with simd-json on the hot path.

use crate::OrderEvent;
use std::cell::RefCell;

/// A message that is not a valid order event.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes do not decode to an event.
    #[error("undecodable order event: {0}")]
    Decode(String),
    /// The event could not be encoded (never expected for well-formed types).
    #[error("unencodable order event: {0}")]
    Encode(String),
}

/// Encodes an event for the log, in a buffer exactly its size: the log's cache keeps it and
/// counts its length, so spare capacity would be memory nobody accounts for.
pub fn encode_event(event: &OrderEvent) -> Result<Vec<u8>, CodecError> {
    let encode = |out: &mut Vec<u8>| {
        out.clear();
        serde_json::to_writer(&mut *out, event).map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(out.to_vec())
    };
    ENCODE_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut out) => {
            let encoded = encode(&mut out);
            // One outsized event must not stay allocated for the thread's life.
            out.shrink_to(64 * 1024);
            encoded
        }
        // Only an encode inside an encode could find it taken; it gets its own.
        Err(_) => encode(&mut Vec::with_capacity(2048)),
    })
}

thread_local! {
    /// Where events are written before their exact-size copy: one per thread, reused, sized for
    /// a whole order so encoding never reallocates.
    static ENCODE_SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(2048));

    /// simd-json parses in place and needs working buffers: one set per thread, reused, so a
    /// decode allocates only what the event itself holds.
    static SCRATCH: RefCell<(Vec<u8>, simd_json::Buffers)> =
        RefCell::new((Vec::with_capacity(4096), simd_json::Buffers::new(4096)));
}

/// Decodes an event from the log.
pub fn decode_event(bytes: &[u8]) -> Result<OrderEvent, CodecError> {
    let decode = |scratch: &mut Vec<u8>, buffers: &mut simd_json::Buffers| {
        scratch.clear();
        scratch.extend_from_slice(bytes);
        simd_json::serde::from_slice_with_buffers(scratch, buffers)
            .map_err(|e| CodecError::Decode(e.to_string()))
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut held) => {
            let (scratch, buffers) = &mut *held;
            decode(scratch, buffers)
        }
        // Only a decode inside a decode could find them taken; it gets its own.
        Err(_) => decode(&mut Vec::new(), &mut simd_json::Buffers::new(bytes.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckoutRequest, Order, OrderId, OrderStatus};
    use chrono::Utc;

    #[test]
    fn events_round_trip_and_garbage_is_an_error() {
        let request: CheckoutRequest = serde_json::from_str(
            r#"{"currency":"USD","lines":[{"sku":"SKU-0001","quantity":2}],
            "shipping_address":{"name":"Ada","line1":"1 Main St","city":"SF","region":"CA",
            "postal_code":"94107","country":"US"},"payment":{"token":"tok_visa"}}"#,
        )
        .expect("valid body");
        let order = Order::from_checkout(OrderId::new(), "c1".into(), request, Utc::now());
        let event = OrderEvent {
            status: OrderStatus::Accepted,
            at: Utc::now(),
            order,
        };
        let bytes = encode_event(&event).expect("encodes");
        assert_eq!(decode_event(&bytes).expect("decodes"), event);
        assert!(matches!(
            decode_event(b"\x00garbage"),
            Err(CodecError::Decode(_))
        ));
        assert!(matches!(
            decode_event(b"{\"status\":\"accepted\"}"),
            Err(CodecError::Decode(_))
        ));
    }
}
