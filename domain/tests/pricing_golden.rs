//! The golden table: carts priced by hand. Each case gives its promotions, the cart, and the
//! totals worked out on paper, with the arithmetic in the comment above it. Rounding is half
//! to even (`x.5` goes to the even neighbour); order-level amounts are split over lines by
//! largest remainder, ties to the SKU that sorts first.
//!
//! Tables shared by every case (promotions are the case's own):
//! - catalog (USD): TEE 20.00 apparel 200 g · SOCK 5.00 apparel 100 g · MUG 12.99 home 400 g ·
//!   LAMP 49.99 home 2,500 g · BOOK 15.00 books 300 g · PEN 1.99 office 10 g ·
//!   CARD 2.00 office 10 g · CHIP 0.25 office 10 g
//! - tax: US-CA 7.25 % + US-CA-D 1.00 % (region CA); US-OR 0 %; US-NY 4 %, apparel 0 %;
//!   DE 19 %, books 7 %, prices include tax. No entry for TX: no tax.
//! - shipping: US ≤ 500 g 5.00, ≤ 2,000 g 9.00, above 15.00; DE ≤ 1,000 g 12.00, above
//!   25.00; nothing else (FR cannot be shipped to).

mod common;

use chrono::{DateTime, Utc};
use common::book;
use orderflow_domain::{Cart, LineItem, PriceError};
use std::collections::BTreeSet;

struct Case {
    name: &'static str,
    promotions: &'static str,
    lines: &'static [(&'static str, u32)],
    /// Country and region.
    to: (&'static str, &'static str),
    codes: &'static [&'static str],
    used_up: &'static [&'static str],
    /// Default: 2026-12-06T12:00:00Z.
    at: Option<&'static str>,
    /// subtotal, discount, shipping, tax, total.
    totals: [i64; 5],
    rejected: &'static [(&'static str, &'static str)],
    /// (sku, discount) of lines where the split is the point.
    line_discounts: &'static [(&'static str, i64)],
}

const NOON: &str = "2026-12-06T12:00:00Z";

const fn case(name: &'static str) -> Case {
    Case {
        name,
        promotions: "",
        lines: &[],
        to: ("US", "OR"),
        codes: &[],
        used_up: &[],
        at: None,
        totals: [0; 5],
        rejected: &[],
        line_discounts: &[],
    }
}

const P10: &str = r#"{"code":"P10","percent_off_bps":1000}"#;

fn cases() -> Vec<Case> {
    vec![
        // 20.00; 200 g → 5.00; Oregon 0 %: 25.00.
        Case {
            lines: &[("TEE", 1)],
            totals: [2000, 0, 500, 0, 2500],
            ..case("plain, no tax")
        },
        // 2 × 12.99 = 25.98; 800 g → 9.00; CA 7.25 % = 1.88355 → 1.88, district 1 % = 0.2598
        // → 0.26; tax 2.14; 25.98 + 2.14 + 9.00 = 37.12.
        Case {
            lines: &[("MUG", 2)],
            to: ("US", "CA"),
            totals: [2598, 0, 900, 214, 3712],
            ..case("two jurisdictions")
        },
        // No Texas entry: no tax. 2,500 g → 15.00: 64.99.
        Case {
            lines: &[("LAMP", 1)],
            to: ("US", "TX"),
            totals: [4999, 0, 1500, 0, 6499],
            ..case("untaxed destination, heavy band")
        },
        // NY: the tee is exempt, the mug 4 % of 12.99 = 0.5196 → 0.52. 600 g → 9.00.
        // 32.99 + 0.52 + 9.00 = 42.51.
        Case {
            lines: &[("TEE", 1), ("MUG", 1)],
            to: ("US", "NY"),
            totals: [3299, 0, 900, 52, 4251],
            ..case("category exemption")
        },
        // DE includes VAT: book 7 %: 15.00 × 7/107 = 0.98130 → 0.98; mug 19 %: 12.99 × 19/119
        // = 2.07403 → 2.07; tax 3.05 inside the prices. 700 g → 12.00. 27.99 + 12.00 = 39.99.
        Case {
            lines: &[("BOOK", 1), ("MUG", 1)],
            to: ("DE", ""),
            totals: [2799, 0, 1200, 305, 3999],
            ..case("VAT included, reduced rate")
        },
        // 5 socks = 500 g exactly: the ≤ 500 g band, 5.00. 25.00 + 5.00 = 30.00.
        Case {
            lines: &[("SOCK", 5)],
            totals: [2500, 0, 500, 0, 3000],
            ..case("band edge, inclusive")
        },
        // 510 g: the next band, 9.00. 26.99 + 9.00 = 35.99.
        Case {
            lines: &[("SOCK", 5), ("PEN", 1)],
            totals: [2699, 0, 900, 0, 3599],
            ..case("just over a band")
        },
        // DE, 2,500 g → 25.00; VAT inside: 49.99 × 19/119 = 7.98151 → 7.98. 49.99 + 25.00.
        Case {
            lines: &[("LAMP", 1)],
            to: ("DE", ""),
            totals: [4999, 0, 2500, 798, 7499],
            ..case("VAT, heavy zone band")
        },
        // 10 % of 32.99 = 3.299 → 3.30, split 3.30 × 12.99/32.99 = 1.2994 and × 20.00/32.99
        // = 2.0006: floors 1.29 + 2.00, the cent left to the larger remainder (mug).
        // 32.99 − 3.30 + 9.00 = 38.69.
        Case {
            promotions: P10,
            codes: &["p10"],
            lines: &[("MUG", 1), ("TEE", 1)],
            totals: [3299, 330, 900, 0, 3869],
            line_discounts: &[("MUG", 130), ("TEE", 200)],
            ..case("percent off the order, split by largest remainder")
        },
        // 5.00 off a 1.99 pen: capped at the line, 0.00 left; shipping 5.00.
        Case {
            promotions: r#"{"code":"FIVE","amount_off_minor":500}"#,
            codes: &["FIVE"],
            lines: &[("PEN", 1)],
            totals: [199, 199, 500, 0, 500],
            ..case("amount off never below zero")
        },
        // Automatic 15 % off home: 12.99 × 15 % = 1.9485 → 1.95. 32.99 − 1.95 + 9.00 = 40.04.
        Case {
            promotions: r#"{"id":"home15","categories":["home"],"percent_off_bps":1500}"#,
            lines: &[("MUG", 1), ("TEE", 1)],
            totals: [3299, 195, 900, 0, 4004],
            line_discounts: &[("MUG", 195), ("TEE", 0)],
            ..case("automatic, by category")
        },
        // 20 % off mugs: 38.97 × 20 % = 7.794 → 7.79; 31.18 left; CA 7.25 % = 2.26055 → 2.26,
        // 1 % = 0.3118 → 0.31; 1,200 g → 9.00. 31.18 + 2.57 + 9.00 = 42.75.
        Case {
            promotions: r#"{"id":"mugs20","skus":["MUG"],"percent_off_bps":2000}"#,
            lines: &[("MUG", 3)],
            to: ("US", "CA"),
            totals: [3897, 779, 900, 257, 4275],
            ..case("by SKU, taxed after the discount")
        },
        // 3 socks, buy 2 get 1: one free, 5.00. 300 g → 5.00. 15.00 − 5.00 + 5.00.
        Case {
            promotions: r#"{"id":"s3","skus":["SOCK"],"buy_x_get_y":{"buy":2,"get":1}}"#,
            lines: &[("SOCK", 3)],
            totals: [1500, 500, 500, 0, 1500],
            ..case("buy 2 get 1")
        },
        // Apparel, buy 2 get 1, over a tee pair and a sock: the cheapest unit (sock) is free.
        // 45.00 − 5.00; 500 g → 5.00: 45.00.
        Case {
            promotions: r#"{"id":"b2g1","categories":["apparel"],"buy_x_get_y":{"buy":2,"get":1}}"#,
            lines: &[("TEE", 2), ("SOCK", 1)],
            totals: [4500, 500, 500, 0, 4500],
            line_discounts: &[("TEE", 0), ("SOCK", 500)],
            ..case("buy X get Y takes the cheapest unit")
        },
        // Buy 1 get 1 half off, 4 mugs: 2 units at 50 %: 12.99. 1,600 g → 9.00.
        // 51.96 − 12.99 + 9.00 = 47.97.
        Case {
            promotions: r#"{"id":"half","skus":["MUG"],"buy_x_get_y":{"buy":1,"get":1,"percent_off_bps":5000}}"#,
            lines: &[("MUG", 4)],
            totals: [5196, 1299, 900, 0, 4797],
            ..case("buy 1 get 1 at 50 %")
        },
        // One mug: no complete group, nothing off (automatic: nothing reported). 12.99 + 5.00.
        Case {
            promotions: r#"{"id":"half","skus":["MUG"],"buy_x_get_y":{"buy":1,"get":1,"percent_off_bps":5000}}"#,
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            ..case("buy X get Y without a full group")
        },
        // Tiers 5 % from 50.00, 15.00 off from 100.00: 49.99 reaches none. 49.99 + 15.00.
        Case {
            promotions: TIERS,
            lines: &[("LAMP", 1)],
            totals: [4999, 0, 1500, 0, 6499],
            ..case("spend tiers, below the first")
        },
        // 51.98 reaches 5 %: 2.599 → 2.60, split 2.60 × 49.99/51.98 = 2.5004 and
        // × 1.99/51.98 = 0.0995: floors 2.50 + 0.09, the cent to the pen (remainder .95).
        // 2,510 g → 15.00. 51.98 − 2.60 + 15.00 = 64.38.
        Case {
            promotions: TIERS,
            lines: &[("LAMP", 1), ("PEN", 1)],
            totals: [5198, 260, 1500, 0, 6438],
            line_discounts: &[("LAMP", 250), ("PEN", 10)],
            ..case("spend tiers, first tier")
        },
        // 101.97 reaches the 15.00 tier. 5,010 g → 15.00. 101.97 − 15.00 + 15.00.
        Case {
            promotions: TIERS,
            lines: &[("LAMP", 2), ("PEN", 1)],
            totals: [10197, 1500, 1500, 0, 10197],
            ..case("spend tiers, top tier")
        },
        // Free shipping from 50.00: 51.98 qualifies, 15.00 waived. Total 51.98.
        Case {
            promotions: FREE_SHIPPING_50,
            lines: &[("LAMP", 1), ("PEN", 1)],
            totals: [5198, 0, 0, 0, 5198],
            ..case("free shipping over the threshold")
        },
        // 49.99 does not: 49.99 + 15.00.
        Case {
            promotions: FREE_SHIPPING_50,
            lines: &[("LAMP", 1)],
            totals: [4999, 0, 1500, 0, 6499],
            ..case("free shipping under the threshold")
        },
        // BIG needs 100.00: reported, not applied, the order still goes: 12.99 + 5.00.
        Case {
            promotions: r#"{"code":"BIG","percent_off_bps":1000,"min_subtotal_minor":10000}"#,
            codes: &["BIG"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("BIG", "minimum_not_met")],
            ..case("code below its minimum")
        },
        // 50 % of 49.99 = 24.995 → 25.00 (half to even: 2499.5 → 2500), capped at 10.00.
        // 49.99 − 10.00 + 15.00 = 54.99.
        Case {
            promotions: HALF_CAPPED,
            codes: &["HALF"],
            lines: &[("LAMP", 1)],
            totals: [4999, 1000, 1500, 0, 5499],
            ..case("maximum discount")
        },
        // 50 % of 62.98 = 31.49, split 24.995 / 6.495: floors 24.99 + 6.49, the cent to the
        // lamp (equal remainders: LAMP sorts first) → 25.00 + 6.49. Capped at 10.00, split in
        // the same proportion: 10.00 × 2500/3149 = 7.939 and × 649/3149 = 2.061: floors 7.93
        // + 2.06, the cent to the lamp (.939 > .061). 2,900 g → 15.00. 62.98 − 10.00 + 15.00.
        Case {
            promotions: HALF_CAPPED,
            codes: &["HALF"],
            lines: &[("MUG", 1), ("LAMP", 1)],
            totals: [6298, 1000, 1500, 0, 6798],
            line_discounts: &[("LAMP", 794), ("MUG", 206)],
            ..case("a capped discount split over lines")
        },
        // Valid from the 20th: refused, and the order would be.
        Case {
            promotions: r#"{"code":"XMAS","percent_off_bps":1000,"starts_at":"2026-12-20T00:00:00Z"}"#,
            codes: &["XMAS"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("XMAS", "not_yet_valid")],
            ..case("before its window")
        },
        Case {
            promotions: r#"{"code":"BF","percent_off_bps":1000,"ends_at":"2026-11-30T00:00:00Z"}"#,
            codes: &["BF"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("BF", "expired")],
            ..case("after its window")
        },
        // The window opens at noon, inclusive: 10 % of 12.99 = 1.299 → 1.30. 11.69 + 5.00.
        Case {
            promotions: r#"{"code":"NOON","percent_off_bps":1000,"starts_at":"2026-12-06T12:00:00Z"}"#,
            codes: &["NOON"],
            lines: &[("MUG", 1)],
            at: Some(NOON),
            totals: [1299, 130, 500, 0, 1669],
            ..case("window start is inclusive")
        },
        Case {
            promotions: r#"{"code":"NOON","percent_off_bps":1000,"ends_at":"2026-12-06T12:00:00Z"}"#,
            codes: &["NOON"],
            lines: &[("MUG", 1)],
            at: Some(NOON),
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("NOON", "expired")],
            ..case("window end is exclusive")
        },
        Case {
            promotions: P10,
            codes: &["NOPE"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("NOPE", "unknown")],
            ..case("unknown code")
        },
        // ONCE's uses are gone (for everyone or this customer): reported used up.
        Case {
            promotions: r#"{"code":"ONCE","amount_off_minor":300,"max_uses_per_customer":1}"#,
            codes: &["ONCE"],
            used_up: &["ONCE"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("ONCE", "used_up")],
            ..case("code used up")
        },
        // Used up, but it would not apply anyway (below its minimum): that is what is reported,
        // as the stage, counting only what applies, would let the order through.
        Case {
            promotions: r#"{"code":"BIG","percent_off_bps":1000,"min_subtotal_minor":10000,"max_uses":1}"#,
            codes: &["BIG"],
            used_up: &["BIG"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            rejected: &[("BIG", "minimum_not_met")],
            ..case("used up but not applicable")
        },
        // An automatic promotion used up is left out without a word.
        Case {
            promotions: r#"{"id":"auto10","percent_off_bps":1000,"max_uses":5}"#,
            used_up: &["auto10"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 500, 0, 1799],
            ..case("automatic promotion used up")
        },
        // Same priority, by id: OFF5 (5.00: 7.99 left) then P10 (0.799 → 0.80): 7.19 + 5.00.
        Case {
            promotions: OFF5_P10,
            codes: &["P10", "OFF5"],
            lines: &[("MUG", 1)],
            totals: [1299, 580, 500, 0, 1219],
            ..case("stacking, by id")
        },
        // P10 at priority 5 goes first: 1.30 off (11.69 left), then 5.00: 6.69 + 5.00.
        Case {
            promotions: r#"{"code":"OFF5","amount_off_minor":500},
                           {"code":"P10","percent_off_bps":1000,"priority":5}"#,
            codes: &["OFF5", "P10"],
            lines: &[("MUG", 1)],
            totals: [1299, 630, 500, 0, 1169],
            ..case("stacking, by priority")
        },
        // VIP is exclusive and first (priority 10): 25 % of 12.99 = 3.2475 → 3.25; P10 is
        // reported as not combinable. 9.74 + 5.00.
        Case {
            promotions: r#"{"code":"VIP","percent_off_bps":2500,"exclusive":true,"priority":10},
                           {"code":"P10","percent_off_bps":1000}"#,
            codes: &["P10", "VIP"],
            lines: &[("MUG", 1)],
            totals: [1299, 325, 500, 0, 1474],
            rejected: &[("P10", "not_combinable")],
            ..case("exclusive first stops the rest")
        },
        // An automatic 5 % (priority 10) applies first: 0.6495 → 0.65; VIP, exclusive, cannot
        // join it. 12.34 + 5.00.
        Case {
            promotions: r#"{"code":"VIP","percent_off_bps":2500,"exclusive":true},
                           {"id":"auto5","percent_off_bps":500,"priority":10}"#,
            codes: &["VIP"],
            lines: &[("MUG", 1)],
            totals: [1299, 65, 500, 0, 1734],
            rejected: &[("VIP", "not_combinable")],
            ..case("exclusive after another")
        },
        // P10 (1.30) and free shipping (5.00 waived): 11.69.
        Case {
            promotions: r#"{"id":"ship","free_shipping":true},{"code":"P10","percent_off_bps":1000}"#,
            codes: &["P10"],
            lines: &[("MUG", 1)],
            totals: [1299, 130, 0, 0, 1169],
            ..case("free shipping with a discount")
        },
        // CA on 2.00: 7.25 % = 14.5 cents → 14 (half to even), 1 % = 2: 2.00 + 0.16 + 5.00.
        Case {
            lines: &[("CARD", 1)],
            to: ("US", "CA"),
            totals: [200, 0, 500, 16, 716],
            ..case("tax half to even, down")
        },
        // 10 % of 0.25 = 2.5 cents → 2 (even). 0.23 + 5.00.
        Case {
            promotions: P10,
            codes: &["P10"],
            lines: &[("CHIP", 1)],
            totals: [25, 2, 500, 0, 523],
            ..case("discount half to even, down")
        },
        // 10 % of 0.75 = 7.5 cents → 8 (even). 0.67 + 5.00.
        Case {
            promotions: P10,
            codes: &["P10"],
            lines: &[("CHIP", 3)],
            totals: [75, 8, 500, 0, 567],
            ..case("discount half to even, up")
        },
        // 1.01 off two lines of 2.00: 0.505 each, floors 0.50 + 0.50, the cent to CARD (equal
        // remainders, CARD sorts first). 90 g → 5.00. 4.00 − 1.01 + 5.00 = 7.99.
        Case {
            promotions: r#"{"code":"AMT","amount_off_minor":101}"#,
            codes: &["AMT"],
            lines: &[("CHIP", 8), ("CARD", 1)],
            totals: [400, 101, 500, 0, 799],
            line_discounts: &[("CARD", 51), ("CHIP", 50)],
            ..case("equal remainders go by SKU")
        },
        // DE with P10: 12.99 − 1.30 = 11.69; VAT inside: 11.69 × 19/119 = 1.8665 → 1.87.
        // 400 g → 12.00. 11.69 + 12.00 = 23.69.
        Case {
            promotions: P10,
            codes: &["P10"],
            lines: &[("MUG", 1)],
            to: ("DE", ""),
            totals: [1299, 130, 1200, 187, 2369],
            ..case("VAT included after a discount")
        },
        // DE books at 7 %: 30.00 × 7/107 = 1.9626 → 1.96. 600 g → 12.00. 42.00.
        Case {
            lines: &[("BOOK", 2)],
            to: ("DE", ""),
            totals: [3000, 0, 1200, 196, 4200],
            ..case("VAT reduced rate only")
        },
        // NY with P10: split as above (mug 1.30, tee 2.00); the mug's 11.69 taxed 4 % =
        // 0.4676 → 0.47, the tee exempt. 32.99 − 3.30 + 0.47 + 9.00 = 39.16.
        Case {
            promotions: P10,
            codes: &["P10"],
            lines: &[("TEE", 1), ("MUG", 1)],
            to: ("US", "NY"),
            totals: [3299, 330, 900, 47, 3916],
            ..case("exemption after a split discount")
        },
        // CA per line: tee 7.25 % = 1.45, 1 % = 0.20; mug 0.941775 → 0.94, 0.1299 → 0.13.
        // Tax 2.72; 32.99 + 2.72 + 9.00 = 44.71.
        Case {
            lines: &[("TEE", 1), ("MUG", 1)],
            to: ("US", "CA"),
            totals: [3299, 0, 900, 272, 4471],
            ..case("tax per line then summed")
        },
        // Pens free (100 % off the SKU), the mug paid: 12.99 + 420 g → 5.00 = 17.99.
        Case {
            promotions: r#"{"code":"FREEPEN","percent_off_bps":10000,"skus":["PEN"]}"#,
            codes: &["FREEPEN"],
            lines: &[("PEN", 2), ("MUG", 1)],
            totals: [1697, 398, 500, 0, 1799],
            ..case("a line at zero")
        },
        // Apparel tiers count apparel only: 20.00 < 30.00, nothing. 2,700 g → 15.00.
        // 69.99 + 15.00 = 84.99.
        Case {
            promotions: r#"{"id":"app","categories":["apparel"],"spend_tiers":[{"min_subtotal_minor":3000,"percent_off_bps":1000}]}"#,
            lines: &[("TEE", 1), ("LAMP", 1)],
            totals: [6999, 0, 1500, 0, 8499],
            ..case("tiers on a category's subtotal")
        },
        // Free shipping capped at 3.00 of the 5.00 fee: 2.00 left. 12.99 + 2.00 = 14.99.
        Case {
            promotions: r#"{"code":"SHIP","free_shipping":true,"max_discount_minor":300}"#,
            codes: &["SHIP"],
            lines: &[("MUG", 1)],
            totals: [1299, 0, 200, 0, 1499],
            ..case("capped shipping waiver")
        },
        // A code given twice counts once: 10 % once. 11.69 + 5.00.
        Case {
            promotions: P10,
            codes: &["P10", "p10 "],
            lines: &[("MUG", 1)],
            totals: [1299, 130, 500, 0, 1669],
            ..case("a repeated code applies once")
        },
    ]
}

const TIERS: &str = r#"{"id":"tiers","spend_tiers":[{"min_subtotal_minor":5000,"percent_off_bps":500},
    {"min_subtotal_minor":10000,"amount_off_minor":1500}]}"#;
const FREE_SHIPPING_50: &str = r#"{"id":"fs50","free_shipping":true,"min_subtotal_minor":5000}"#;
const HALF_CAPPED: &str = r#"{"code":"HALF","percent_off_bps":5000,"max_discount_minor":1000}"#;
const OFF5_P10: &str =
    r#"{"code":"OFF5","amount_off_minor":500},{"code":"P10","percent_off_bps":1000}"#;

fn lines(of: &[(&str, u32)]) -> Vec<LineItem> {
    of.iter()
        .map(|(sku, quantity)| LineItem {
            sku: (*sku).into(),
            quantity: *quantity,
        })
        .collect()
}

fn at(text: Option<&str>) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text.unwrap_or(NOON))
        .expect("time")
        .with_timezone(&Utc)
}

#[test]
fn the_golden_carts_price_as_worked_out_by_hand() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let book = book(c.promotions);
        let items = lines(c.lines);
        let codes: Vec<String> = c.codes.iter().map(|s| (*s).to_owned()).collect();
        let cart = Cart {
            lines: &items,
            country: c.to.0,
            region: c.to.1,
            coupon_codes: &codes,
        };
        let used_up: BTreeSet<String> = c.used_up.iter().map(|s| (*s).to_owned()).collect();
        let quote = book.price(&cart, at(c.at), &used_up).expect(c.name);
        let b = &quote.breakdown;
        let got = [
            b.subtotal.minor,
            b.discount.minor,
            b.shipping.minor,
            b.tax.minor,
            b.total.minor,
        ];
        if got != c.totals {
            failures.push(format!(
                "{}: got {got:?}, worked out {:?}",
                c.name, c.totals
            ));
        }
        let rejected: Vec<(String, String)> = quote
            .rejected_coupons
            .iter()
            .map(|r| {
                let reason = serde_json::to_value(r.reason).expect("reason");
                (
                    r.code.clone(),
                    reason.as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = c
            .rejected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        if rejected != expected {
            failures.push(format!(
                "{}: rejected {rejected:?}, expected {expected:?}",
                c.name
            ));
        }
        for (sku, discount) in c.line_discounts {
            let line = b.lines.iter().find(|l| l.sku == *sku).expect("line");
            if line.discount.minor != *discount {
                failures.push(format!(
                    "{}: {sku} discount {}, worked out {discount}",
                    c.name, line.discount.minor
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn carts_that_cannot_be_priced_say_why() {
    let book = book("");
    let price = |of: &[(&str, u32)], country: &str| {
        let items = lines(of);
        let cart = Cart {
            lines: &items,
            country,
            region: "",
            coupon_codes: &[],
        };
        book.price(&cart, at(None), &BTreeSet::new())
    };
    assert!(matches!(
        price(&[("MUG", 1)], "FR"),
        Err(PriceError::Shipping(_))
    ));
    assert!(matches!(
        price(&[("NOPE", 1)], "US"),
        Err(PriceError::UnknownSku(sku)) if sku == "NOPE"
    ));
}
