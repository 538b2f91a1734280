//! The promotion table: automatic promotions and codes, what each takes off, to what, when,
//! how often, and how they combine.

use super::TableError;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// What a promotion takes off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Benefit {
    /// A share of what it applies to, in basis points (1000 = 10 %).
    PercentOff(u32),
    /// A fixed amount off what it applies to, in minor units.
    AmountOff(i64),
    /// Of every `buy + get` units it applies to, the `get` cheapest are `percent_bps` off
    /// (10000: free).
    BuyXGetY {
        /// Units paid for in each group.
        buy: u32,
        /// Units discounted in each group.
        get: u32,
        /// The discount on those, in basis points.
        percent_bps: u32,
    },
    /// The highest tier whose minimum the subtotal reaches applies, ascending by minimum.
    SpendTiers(Vec<Tier>),
    /// The shipping fee is waived.
    FreeShipping,
}

/// One step of a spend-tier promotion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The subtotal (of what the promotion applies to) that reaches the tier, minor units.
    pub min_subtotal_minor: i64,
    /// What the tier takes off: [`Benefit::PercentOff`] or [`Benefit::AmountOff`].
    pub off: TierOff,
}

/// What a tier takes off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierOff {
    /// Basis points off.
    PercentBps(u32),
    /// Minor units off.
    AmountMinor(i64),
}

/// What a promotion applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// These SKUs (empty: no restriction by SKU).
    pub skus: BTreeSet<String>,
    /// These categories (empty: no restriction by category).
    pub categories: BTreeSet<String>,
}

impl Scope {
    /// Whether a line of `sku` in `category` is in scope: the whole order when both lists are
    /// empty, else any SKU or category listed.
    pub fn covers(&self, sku: &str, category: &str) -> bool {
        (self.skus.is_empty() && self.categories.is_empty())
            || self.skus.contains(sku)
            || self.categories.contains(category)
    }
}

/// One promotion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promotion {
    /// Its id (unique; counted uses and applied promotions name it).
    pub id: String,
    /// The code customers type, upper case; `None`: applied automatically.
    pub code: Option<String>,
    /// Its name for receipts.
    pub name: String,
    /// What it takes off.
    pub benefit: Benefit,
    /// What it applies to.
    pub scope: Scope,
    /// Valid from (inclusive).
    pub starts_at: Option<DateTime<Utc>>,
    /// Valid until (exclusive).
    pub ends_at: Option<DateTime<Utc>>,
    /// Higher goes first.
    pub priority: i32,
    /// Combines with no other promotion.
    pub exclusive: bool,
    /// The order's subtotal must reach this, minor units.
    pub min_subtotal_minor: i64,
    /// It never takes off more than this, minor units.
    pub max_discount_minor: Option<i64>,
    /// Orders that may use it in all.
    pub max_uses: Option<u64>,
    /// Orders of one customer that may use it.
    pub max_uses_per_customer: Option<u64>,
}

impl Promotion {
    /// Whether its uses are counted.
    pub fn is_limited(&self) -> bool {
        self.max_uses.is_some() || self.max_uses_per_customer.is_some()
    }

    /// Why it cannot be used at `now`, if its window excludes it.
    pub fn window_excludes(&self, now: DateTime<Utc>) -> Option<super::CouponReason> {
        if self.starts_at.is_some_and(|s| now < s) {
            return Some(super::CouponReason::NotYetValid);
        }
        if self.ends_at.is_some_and(|e| now >= e) {
            return Some(super::CouponReason::Expired);
        }
        None
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: Option<String>,
    code: Option<String>,
    #[serde(default)]
    name: String,
    percent_off_bps: Option<u32>,
    amount_off_minor: Option<i64>,
    buy_x_get_y: Option<BuyXGetYEntry>,
    spend_tiers: Option<Vec<TierEntry>>,
    #[serde(default)]
    free_shipping: bool,
    #[serde(default)]
    skus: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    min_subtotal_minor: i64,
    max_discount_minor: Option<i64>,
    max_uses: Option<u64>,
    max_uses_per_customer: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyXGetYEntry {
    buy: u32,
    get: u32,
    #[serde(default = "free")]
    percent_off_bps: u32,
}

fn free() -> u32 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierEntry {
    min_subtotal_minor: i64,
    percent_off_bps: Option<u32>,
    amount_off_minor: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    promotions: Vec<Entry>,
}

/// The promotion table: automatic ones in the order they apply, codes by code.
#[derive(Clone, Debug, Default)]
pub struct Promotions {
    all: Vec<Promotion>,
    by_code: HashMap<String, usize>,
}

/// Upper-cases and trims a code as customers may type it.
pub fn normalize_code(code: &str) -> String {
    code.trim().to_ascii_uppercase()
}

fn percent(bps: u32, what: &str) -> Result<u32, String> {
    if (1..=10_000).contains(&bps) {
        Ok(bps)
    } else {
        Err(format!("{what}: must be 1 to 10000"))
    }
}

fn positive(minor: i64, what: &str) -> Result<i64, String> {
    if minor > 0 {
        Ok(minor)
    } else {
        Err(format!("{what}: must be above 0"))
    }
}

fn benefit(e: &Entry) -> Result<Benefit, String> {
    let given = [
        e.percent_off_bps.is_some(),
        e.amount_off_minor.is_some(),
        e.buy_x_get_y.is_some(),
        e.spend_tiers.is_some(),
        e.free_shipping,
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(
            "give exactly one of percent_off_bps, amount_off_minor, buy_x_get_y, \
                    spend_tiers and free_shipping"
                .into(),
        );
    }
    if let Some(bps) = e.percent_off_bps {
        return Ok(Benefit::PercentOff(percent(bps, "percent_off_bps")?));
    }
    if let Some(minor) = e.amount_off_minor {
        return Ok(Benefit::AmountOff(positive(minor, "amount_off_minor")?));
    }
    if let Some(b) = &e.buy_x_get_y {
        if b.buy == 0 || b.get == 0 || b.buy > 1_000 || b.get > 1_000 {
            return Err("buy_x_get_y: buy and get must be 1 to 1000".into());
        }
        return Ok(Benefit::BuyXGetY {
            buy: b.buy,
            get: b.get,
            percent_bps: percent(b.percent_off_bps, "buy_x_get_y.percent_off_bps")?,
        });
    }
    if let Some(entries) = &e.spend_tiers {
        if entries.is_empty() {
            return Err("spend_tiers: at least one tier".into());
        }
        let mut tiers = Vec::new();
        for (i, t) in entries.iter().enumerate() {
            let what = format!("spend_tiers[{i}]");
            let off = match (t.percent_off_bps, t.amount_off_minor) {
                (Some(bps), None) => TierOff::PercentBps(percent(bps, &what)?),
                (None, Some(minor)) => TierOff::AmountMinor(positive(minor, &what)?),
                _ => {
                    return Err(format!(
                        "{what}: give exactly one of percent_off_bps and amount_off_minor"
                    ));
                }
            };
            if tiers
                .last()
                .is_some_and(|p: &Tier| p.min_subtotal_minor >= t.min_subtotal_minor)
            {
                return Err(format!("{what}: minimums must rise from tier to tier"));
            }
            if t.min_subtotal_minor < 0 {
                return Err(format!("{what}.min_subtotal_minor: must be 0 or more"));
            }
            tiers.push(Tier {
                min_subtotal_minor: t.min_subtotal_minor,
                off,
            });
        }
        return Ok(Benefit::SpendTiers(tiers));
    }
    Ok(Benefit::FreeShipping)
}

fn instant(value: &Option<String>, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| format!("{what}: {v:?} is not an RFC 3339 time"))
        })
        .transpose()
}

fn promotion(e: Entry) -> Result<Promotion, String> {
    let code = e.code.as_deref().map(normalize_code);
    if let Some(code) = &code
        && (code.is_empty()
            || code.len() > 64
            || !code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(format!(
            "code {code:?}: 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    let id = match (&e.id, &code) {
        (Some(id), _) => id.trim().to_owned(),
        (None, Some(code)) => code.clone(),
        (None, None) => return Err("an automatic promotion (no code) needs an id".into()),
    };
    if id.is_empty() || id.len() > 64 || id.contains(['|', ' ']) {
        return Err(format!(
            "id {id:?}: 1 to 64 characters, without spaces or '|'"
        ));
    }
    let benefit = benefit(&e)?;
    let starts_at = instant(&e.starts_at, "starts_at")?;
    let ends_at = instant(&e.ends_at, "ends_at")?;
    if let (Some(s), Some(end)) = (starts_at, ends_at)
        && s >= end
    {
        return Err("starts_at must come before ends_at".into());
    }
    if e.min_subtotal_minor < 0 {
        return Err("min_subtotal_minor: must be 0 or more".into());
    }
    if let Some(max) = e.max_discount_minor {
        positive(max, "max_discount_minor")?;
    }
    Ok(Promotion {
        name: if e.name.is_empty() {
            id.clone()
        } else {
            e.name
        },
        id,
        code,
        benefit,
        scope: Scope {
            skus: e.skus.into_iter().collect(),
            categories: e.categories.into_iter().collect(),
        },
        starts_at,
        ends_at,
        priority: e.priority,
        exclusive: e.exclusive,
        min_subtotal_minor: e.min_subtotal_minor,
        max_discount_minor: e.max_discount_minor,
        max_uses: e.max_uses,
        max_uses_per_customer: e.max_uses_per_customer,
    })
}

impl Promotions {
    /// Parses the table's JSON, `{"promotions":[…]}`; `origin` names it in errors, and each
    /// error names the entry (by id or code, else its index).
    pub fn parse(text: &str, origin: &str) -> Result<Self, TableError> {
        let file: File = super::json(text, origin)?;
        let mut all = Vec::with_capacity(file.promotions.len());
        for (i, entry) in file.promotions.into_iter().enumerate() {
            let label = entry
                .id
                .clone()
                .or_else(|| entry.code.clone())
                .map_or_else(|| format!("promotions[{i}]"), |n| format!("promotion {n}"));
            let p =
                promotion(entry).map_err(|reason| TableError::invalid(origin, &label, reason))?;
            all.push(p);
        }
        // Priority descending, then id: the order the engine applies them in.
        all.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
        let mut by_code = HashMap::new();
        let mut ids = BTreeSet::new();
        for (i, p) in all.iter().enumerate() {
            if !ids.insert(p.id.clone()) {
                return Err(TableError::invalid(
                    origin,
                    &format!("promotion {}", p.id),
                    "the id appears twice".into(),
                ));
            }
            if let Some(code) = &p.code
                && by_code.insert(code.clone(), i).is_some()
            {
                return Err(TableError::invalid(
                    origin,
                    &format!("promotion {}", p.id),
                    format!("code {code} appears twice"),
                ));
            }
        }
        Ok(Self { all, by_code })
    }

    /// The promotion of `code` (any case), if any.
    pub fn by_code(&self, code: &str) -> Option<&Promotion> {
        self.by_code
            .get(&normalize_code(code))
            .map(|i| &self.all[*i])
    }

    /// The promotion with this id, if any.
    pub fn by_id(&self, id: &str) -> Option<&Promotion> {
        self.all.iter().find(|p| p.id == id)
    }

    /// Every promotion, in the order they apply (priority descending, then id).
    pub fn all(&self) -> &[Promotion] {
        &self.all
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}
