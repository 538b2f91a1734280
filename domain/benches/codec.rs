//! The event codec: a notified three-line order encoded and decoded, JSON against
//! MessagePack. `cargo bench -p orderflow-domain --bench codec`.

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use orderflow_domain::{OrderEvent, decode_event, encode_event};
use std::hint::black_box;

const EVENT: &str = r#"{"status":"completed","at":"2026-12-07T11:20:01.123456Z","order":{
"id":"019af0b2-4c1e-7a3b-9c2d-1e2f3a4b5c6d","customer_id":"load-1","currency":"USD",
"lines":[{"sku":"SKU-0001","quantity":2},{"sku":"SKU-0002","quantity":1},{"sku":"SKU-0003","quantity":3}],
"shipping_address":{"name":"Ada Lovelace","line1":"1 Main St","city":"San Francisco","region":"CA","postal_code":"94107","country":"US"},
"coupon_codes":["WELCOME10"],"payment_token":"tok_visa","accepted_at":"2026-12-07T11:20:01.100000Z",
"reservation":{"expires_at":"2026-12-07T11:30:01.101000Z"},
"pricing":{"lines":[
{"sku":"SKU-0001","quantity":2,"unit_price":{"minor":3499,"currency":"USD"},"line_total":{"minor":6998,"currency":"USD"},"discounts":[{"promotion_id":"welcome10","amount":{"minor":700,"currency":"USD"}}],"discount":{"minor":700,"currency":"USD"},"tax":{"minor":520,"currency":"USD"},"total":{"minor":6818,"currency":"USD"}},
{"sku":"SKU-0002","quantity":1,"unit_price":{"minor":1299,"currency":"USD"},"line_total":{"minor":1299,"currency":"USD"},"discount":{"minor":0,"currency":"USD"},"tax":{"minor":107,"currency":"USD"},"total":{"minor":1406,"currency":"USD"}},
{"sku":"SKU-0003","quantity":3,"unit_price":{"minor":500,"currency":"USD"},"line_total":{"minor":1500,"currency":"USD"},"discount":{"minor":0,"currency":"USD"},"tax":{"minor":124,"currency":"USD"},"total":{"minor":1624,"currency":"USD"}}],
"subtotal":{"minor":9797,"currency":"USD"},"discount":{"minor":700,"currency":"USD"},"tax":{"minor":751,"currency":"USD"},"shipping":{"minor":500,"currency":"USD"},"total":{"minor":10348,"currency":"USD"},
"prices_include_tax":false,"tax_lines":[{"jurisdiction":"US-CA","name":"California","rate_bps":725,"amount":{"minor":660,"currency":"USD"}},{"jurisdiction":"US-CA-SF","name":"San Francisco","rate_bps":100,"amount":{"minor":91,"currency":"USD"}}],
"promotions":[{"id":"welcome10","code":"WELCOME10","name":"Welcome 10 %","amount":{"minor":700,"currency":"USD"}}],"version":"v1"},
"payment":{"payment_id":"pay_019af0b24c1e","amount":{"minor":10348,"currency":"USD"},"captured_at":"2026-12-07T11:20:01.110000Z"},
"shipment":{"carrier":"simulated","tracking_number":"1Z019AF0B24C1E","shipped_at":"2026-12-07T11:20:01.115000Z"},
"notification":{"channel":"email","queued_at":"2026-12-07T11:20:01.120000Z"}}}"#;

fn codec(c: &mut Criterion) {
    let event: OrderEvent = serde_json::from_str(EVENT).expect("a valid event");
    let json = encode_event(&event).expect("encodes");
    let packed = rmp_serde::to_vec_named(&event).expect("packs");
    assert_eq!(
        rmp_serde::from_slice::<OrderEvent>(&packed).expect("unpacks"),
        event
    );
    eprintln!("json {} bytes, msgpack {} bytes", json.len(), packed.len());
    c.bench_function("encode json", |b| {
        b.iter(|| encode_event(black_box(&event)))
    });
    c.bench_function("encode msgpack", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&event)))
    });
    c.bench_function("decode json", |b| b.iter(|| decode_event(black_box(&json))));
    c.bench_function("decode msgpack", |b| {
        b.iter(|| rmp_serde::from_slice::<OrderEvent>(black_box(&packed)))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
