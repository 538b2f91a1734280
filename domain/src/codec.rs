//! The wire codec of [`OrderEvent`]: JSON, decoded with simd-json on the hot path.

use crate::OrderEvent;

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

/// Encodes an event for the log.
pub fn encode_event(event: &OrderEvent) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(event).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes an event from the log. simd-json parses in place, so the bytes are copied once into
/// a scratch buffer.
pub fn decode_event(bytes: &[u8]) -> Result<OrderEvent, CodecError> {
    let mut scratch = bytes.to_vec();
    simd_json::serde::from_slice(&mut scratch).map_err(|e| CodecError::Decode(e.to_string()))
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
