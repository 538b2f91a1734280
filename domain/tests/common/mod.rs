//! The tables the pricing tests share: see `pricing_golden.rs` for what they hold.

use orderflow_domain::pricing::{ShippingTable, TaxTable};
use orderflow_domain::{Catalog, CatalogItem, Currency, PriceBook, Promotions};
use std::sync::Arc;

pub fn catalog() -> Arc<Catalog> {
    let item = |sku: &str, price_minor, category: &str, weight_grams| CatalogItem {
        sku: sku.into(),
        name: sku.into(),
        price_minor,
        category: category.into(),
        weight_grams,
        stock: 1_000,
    };
    Arc::new(
        Catalog::new(
            Currency::parse("USD").expect("usd"),
            vec![
                item("TEE", 2000, "apparel", 200),
                item("SOCK", 500, "apparel", 100),
                item("MUG", 1299, "home", 400),
                item("LAMP", 4999, "home", 2500),
                item("BOOK", 1500, "books", 300),
                item("PEN", 199, "office", 10),
                item("CARD", 200, "office", 10),
                item("CHIP", 25, "office", 10),
            ],
        )
        .expect("catalog"),
    )
}

pub const TAX: &str = r#"{"jurisdictions":[
    {"id":"US-CA","country":"US","region":"CA","rate_bps":725},
    {"id":"US-CA-D","country":"US","region":"CA","rate_bps":100},
    {"id":"US-OR","country":"US","region":"OR","rate_bps":0},
    {"id":"US-NY","country":"US","region":"NY","rate_bps":400,"categories":{"apparel":0}},
    {"id":"DE","country":"DE","rate_bps":1900,"categories":{"books":700},"prices_include_tax":true}
]}"#;

pub const SHIPPING: &str = r#"{"zones":[
    {"id":"us","countries":["US"],"bands":[{"up_to_grams":500,"fee_minor":500},
        {"up_to_grams":2000,"fee_minor":900},{"fee_minor":1500}]},
    {"id":"eu","countries":["DE"],"bands":[{"up_to_grams":1000,"fee_minor":1200},
        {"fee_minor":2500}]}
]}"#;

/// A book with these promotions (the `promotions` array's entries).
pub fn book(promotions: &str) -> PriceBook {
    PriceBook::new(
        catalog(),
        Promotions::parse(&format!(r#"{{"promotions":[{promotions}]}}"#), "golden")
            .expect("promotions"),
        TaxTable::parse(TAX, "tax").expect("tax"),
        ShippingTable::parse(SHIPPING, "shipping").expect("shipping"),
        "golden",
    )
}
