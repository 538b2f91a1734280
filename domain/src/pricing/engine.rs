//! [`PriceBook::price`]: one cart, the tables and the time in, the breakdown out.

use super::round::{allocate, bps_of, div_half_even};
use super::{
    AppliedPromotion, Benefit, CouponReason, LineDiscount, PriceBook, PriceBreakdown, PricedLine,
    Promotion, RejectedCoupon, ShippingError, TaxLine, TierOff, normalize_code,
};
use crate::{LineItem, Money, MoneyError};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// What is priced: the checkout's lines, destination and codes.
#[derive(Clone, Copy, Debug)]
pub struct Cart<'a> {
    /// The lines.
    pub lines: &'a [LineItem],
    /// Destination country (ISO 3166-1 alpha-2).
    pub country: &'a str,
    /// Destination region (state, province); may be empty.
    pub region: &'a str,
    /// Coupon codes as given.
    pub coupon_codes: &'a [String],
}

impl<'a> Cart<'a> {
    /// The cart of an order: its lines, shipping destination and codes.
    pub fn of(order: &'a crate::Order) -> Self {
        Self {
            lines: &order.lines,
            country: &order.shipping_address.country,
            region: &order.shipping_address.region,
            coupon_codes: &order.coupon_codes,
        }
    }
}

/// A priced cart, with the codes that took nothing off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// The breakdown.
    pub breakdown: PriceBreakdown,
    /// Codes given that took nothing off, and why: unknown ones first, then in the order the
    /// promotions apply.
    pub rejected_coupons: Vec<RejectedCoupon>,
}

impl Quote {
    /// The first code that should reject the order (unknown, expired, not yet valid, used up).
    pub fn refusing_coupon(&self) -> Option<&RejectedCoupon> {
        self.rejected_coupons
            .iter()
            .find(|c| c.reason.rejects_order())
    }
}

/// Why a cart cannot be priced at all.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// A SKU is not in the catalog.
    #[error("{0} is not in the catalog")]
    UnknownSku(String),
    /// The parcel cannot be shipped there.
    #[error(transparent)]
    Shipping(#[from] ShippingError),
    /// An amount overflowed.
    #[error("cannot price the order: {0}")]
    Money(#[from] MoneyError),
}

struct Line<'a> {
    sku: &'a str,
    category: &'a str,
    quantity: u32,
    unit: i64,
    gross: i64,
    left: i64,
    discounts: Vec<LineDiscount>,
}

impl PriceBook {
    /// The promotions a cart might use whose uses are counted: the caller looks up which are
    /// used up (in all or for this customer) and passes them to [`price`](Self::price).
    pub fn limited_candidates<'a>(
        &'a self,
        cart: &Cart<'_>,
    ) -> impl Iterator<Item = &'a Promotion> + 'a {
        let codes: BTreeSet<String> = cart
            .coupon_codes
            .iter()
            .map(|c| normalize_code(c))
            .collect();
        self.promotions
            .all()
            .iter()
            .filter(move |p| p.is_limited() && p.code.as_ref().is_none_or(|c| codes.contains(c)))
    }

    /// Prices `cart` at `now`. Promotions whose id is in `used_up` are skipped (a code among
    /// them is reported [`CouponReason::UsedUp`]).
    pub fn price(
        &self,
        cart: &Cart<'_>,
        now: DateTime<Utc>,
        used_up: &BTreeSet<String>,
    ) -> Result<Quote, PriceError> {
        let currency = self.catalog.currency();
        let money = |minor: i64| Money::new(minor, currency);
        let mut lines = Vec::with_capacity(cart.lines.len());
        let mut grams: u64 = 0;
        for l in cart.lines {
            let item = self
                .catalog
                .get(&l.sku)
                .ok_or_else(|| PriceError::UnknownSku(l.sku.clone()))?;
            let gross = item
                .price_minor
                .checked_mul(i64::from(l.quantity))
                .ok_or(MoneyError::Overflow)?;
            grams = grams.saturating_add(u64::from(item.weight_grams) * u64::from(l.quantity));
            lines.push(Line {
                sku: &l.sku,
                category: &item.category,
                quantity: l.quantity,
                unit: item.price_minor,
                gross,
                left: gross,
                discounts: Vec::new(),
            });
        }
        // Ties between lines are broken by SKU and quantity, never by position.
        let mut by_rank: Vec<usize> = (0..lines.len()).collect();
        by_rank.sort_by(|a, b| {
            (lines[*a].sku, lines[*a].quantity).cmp(&(lines[*b].sku, lines[*b].quantity))
        });
        let mut rank = vec![0; lines.len()];
        for (r, i) in by_rank.iter().enumerate() {
            rank[*i] = r;
        }
        let subtotal = lines
            .iter()
            .try_fold(0i64, |s, l| s.checked_add(l.gross))
            .ok_or(MoneyError::Overflow)?;
        let (_, fee) = self.shipping.fee(cart.country, grams)?;

        let mut given: Vec<String> = Vec::new();
        for code in cart.coupon_codes {
            let code = normalize_code(code);
            if !given.contains(&code) {
                given.push(code);
            }
        }
        let mut rejected: Vec<RejectedCoupon> = Vec::new();
        let mut refuse = |code: &Option<String>, reason| {
            if let Some(code) = code {
                rejected.push(RejectedCoupon {
                    code: code.clone(),
                    reason,
                });
            }
        };
        for code in &given {
            if self.promotions.by_code(code).is_none() {
                refuse(&Some(code.clone()), CouponReason::Unknown);
            }
        }

        let mut applied: Vec<AppliedPromotion> = Vec::new();
        let mut exclusive_applied = false;
        let mut waived = 0i64;
        for p in self.promotions.all() {
            if p.code.as_ref().is_some_and(|c| !given.contains(c)) {
                continue;
            }
            if let Some(reason) = p.window_excludes(now) {
                refuse(&p.code, reason);
                continue;
            }
            if exclusive_applied || (p.exclusive && !applied.is_empty()) {
                refuse(&p.code, CouponReason::NotCombinable);
                continue;
            }
            if subtotal < p.min_subtotal_minor {
                refuse(&p.code, CouponReason::MinimumNotMet);
                continue;
            }
            let in_scope: Vec<usize> = (0..lines.len())
                .filter(|i| p.scope.covers(lines[*i].sku, lines[*i].category))
                .collect();
            if in_scope.is_empty() {
                refuse(&p.code, CouponReason::NotApplicable);
                continue;
            }
            let shares = match shares_of(p, &lines, &in_scope, &rank) {
                Ok(shares) => shares,
                Err(Skip::FreeShipping) => {
                    let amount = p.max_discount_minor.map_or(fee, |m| m.min(fee)) - waived;
                    if amount <= 0 {
                        refuse(&p.code, CouponReason::NotApplicable);
                        continue;
                    }
                    // Used up matters only for what would apply: the stage counts nothing else.
                    if used_up.contains(&p.id) {
                        refuse(&p.code, CouponReason::UsedUp);
                        continue;
                    }
                    waived += amount;
                    exclusive_applied = p.exclusive;
                    applied.push(applied_promotion(p, money(amount), true));
                    continue;
                }
                Err(Skip::Minimum) => {
                    refuse(&p.code, CouponReason::MinimumNotMet);
                    continue;
                }
            };
            let taken: i64 = shares.iter().sum();
            if taken <= 0 {
                refuse(&p.code, CouponReason::NotApplicable);
                continue;
            }
            if used_up.contains(&p.id) {
                refuse(&p.code, CouponReason::UsedUp);
                continue;
            }
            for (i, share) in in_scope.iter().zip(&shares) {
                if *share > 0 {
                    let line = &mut lines[*i];
                    line.left -= share;
                    line.discounts.push(LineDiscount {
                        promotion_id: p.id.clone(),
                        amount: money(*share),
                    });
                }
            }
            exclusive_applied = p.exclusive;
            applied.push(applied_promotion(p, money(taken), false));
        }

        let jurisdictions: Vec<_> = self
            .tax
            .for_destination(cart.country, cart.region)
            .collect();
        let inclusive = self.tax.prices_include_tax(cart.country);
        let mut tax_by_j = vec![0i64; jurisdictions.len()];
        let j_rank: Vec<usize> = (0..jurisdictions.len()).collect();
        let mut priced = Vec::with_capacity(lines.len());
        let (mut discount, mut tax, mut total) = (0i64, 0i64, 0i64);
        for line in lines {
            let rates: Vec<u32> = jurisdictions
                .iter()
                .map(|j| j.rate_for(line.category))
                .collect();
            let taxes: Vec<i64> = if inclusive {
                // The tax inside the amount, split between the jurisdictions by rate.
                let weights: Vec<i64> = rates.iter().map(|r| i64::from(*r)).collect();
                let r: i64 = weights.iter().sum();
                let included = div_half_even(
                    i128::from(line.left) * i128::from(r),
                    10_000 + i128::from(r),
                );
                allocate(
                    i64::try_from(included).map_err(|_| MoneyError::Overflow)?,
                    &weights,
                    &j_rank,
                )
            } else {
                rates.iter().map(|r| bps_of(line.left, *r)).collect()
            };
            let add = |a: i64, b: i64| a.checked_add(b).ok_or(MoneyError::Overflow);
            let mut line_tax = 0i64;
            for (sum, t) in tax_by_j.iter_mut().zip(&taxes) {
                *sum = add(*sum, *t)?;
                line_tax = add(line_tax, *t)?;
            }
            let line_discount = line.gross - line.left;
            let line_total = if inclusive {
                line.left
            } else {
                add(line.left, line_tax)?
            };
            discount = add(discount, line_discount)?;
            tax = add(tax, line_tax)?;
            total = total.checked_add(line_total).ok_or(MoneyError::Overflow)?;
            priced.push(PricedLine {
                sku: line.sku.to_owned(),
                quantity: line.quantity,
                unit_price: money(line.unit),
                line_total: money(line.gross),
                discounts: line.discounts,
                discount: money(line_discount),
                tax: money(line_tax),
                total: money(line_total),
            });
        }
        let shipping = fee - waived;
        total = total.checked_add(shipping).ok_or(MoneyError::Overflow)?;
        let tax_lines = jurisdictions
            .iter()
            .zip(tax_by_j)
            .map(|(j, amount)| TaxLine {
                jurisdiction: j.id.clone(),
                name: j.name.clone(),
                rate_bps: j.rate_bps,
                amount: money(amount),
            })
            .collect();
        Ok(Quote {
            breakdown: PriceBreakdown {
                lines: priced,
                subtotal: money(subtotal),
                discount: money(discount),
                tax: money(tax),
                shipping: money(shipping),
                total: money(total),
                prices_include_tax: inclusive,
                tax_lines,
                promotions: applied,
                version: self.version.clone(),
            },
            rejected_coupons: rejected,
        })
    }
}

enum Skip {
    FreeShipping,
    Minimum,
}

fn applied_promotion(p: &Promotion, amount: Money, free_shipping: bool) -> AppliedPromotion {
    AppliedPromotion {
        id: p.id.clone(),
        code: p.code.clone(),
        name: p.name.clone(),
        amount,
        free_shipping,
        counted: p.is_limited(),
    }
}

/// What `p` takes off each line in `in_scope` (same order), capped by its maximum.
fn shares_of(
    p: &Promotion,
    lines: &[Line<'_>],
    in_scope: &[usize],
    rank: &[usize],
) -> Result<Vec<i64>, Skip> {
    let left: Vec<i64> = in_scope.iter().map(|i| lines[*i].left).collect();
    let ranks: Vec<usize> = in_scope.iter().map(|i| rank[*i]).collect();
    let base: i64 = left.iter().sum();
    let spread = |amount: i64| allocate(amount.min(base), &left, &ranks);
    let shares = match &p.benefit {
        Benefit::PercentOff(bps) => spread(bps_of(base, *bps)),
        Benefit::AmountOff(minor) => spread(*minor),
        Benefit::SpendTiers(tiers) => {
            let gross: i64 = in_scope.iter().map(|i| lines[*i].gross).sum();
            let tier = tiers
                .iter()
                .rev()
                .find(|t| gross >= t.min_subtotal_minor)
                .ok_or(Skip::Minimum)?;
            match tier.off {
                TierOff::PercentBps(bps) => spread(bps_of(base, bps)),
                TierOff::AmountMinor(minor) => spread(minor),
            }
        }
        Benefit::BuyXGetY {
            buy,
            get,
            percent_bps,
        } => {
            let units: u64 = in_scope.iter().map(|i| u64::from(lines[*i].quantity)).sum();
            let mut free = units / u64::from(buy + get) * u64::from(*get);
            // The cheapest units are the ones discounted; equal prices by rank.
            let mut order: Vec<usize> = (0..in_scope.len()).collect();
            order.sort_by_key(|k| (lines[in_scope[*k]].unit, ranks[*k]));
            let mut shares = vec![0i64; in_scope.len()];
            for k in order {
                if free == 0 {
                    break;
                }
                let line = &lines[in_scope[k]];
                let n = free.min(u64::from(line.quantity));
                free -= n;
                let worth = line
                    .unit
                    .saturating_mul(i64::try_from(n).unwrap_or(i64::MAX));
                shares[k] = bps_of(worth, *percent_bps).min(left[k]);
            }
            shares
        }
        Benefit::FreeShipping => return Err(Skip::FreeShipping),
    };
    let taken: i64 = shares.iter().sum();
    Ok(match p.max_discount_minor {
        Some(max) if taken > max => allocate(max, &shares, &ranks),
        _ => shares,
    })
}
