//! The embedded [`CouponLedger`]: counters and per-order answers in the engine.

use super::open_read;
use crate::{CouponLedger, Redemption, StoreError, Usage, UseLimits};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{ReadableTable, TableDefinition};

/// Promotion id → uses counted.
const USES: TableDefinition<&str, u64> = TableDefinition::new("coupon_uses");
/// `PROMOTION|CUSTOMER` → uses counted for the customer.
const CUSTOMER_USES: TableDefinition<&str, u64> = TableDefinition::new("coupon_customer_uses");
/// `PROMOTION|ORDER` → `redeemed`, `exhausted` or `restored`.
const ANSWERS: TableDefinition<&str, &str> = TableDefinition::new("coupon_answers");

/// Promotion-use counters on the embedded engine; the writer thread makes each check-and-count
/// atomic.
#[derive(Clone)]
pub struct EmbeddedCoupons {
    engine: Engine,
}

impl EmbeddedCoupons {
    /// Counters on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl CouponLedger for EmbeddedCoupons {
    async fn redeem(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
        limits: UseLimits,
    ) -> Result<Redemption, StoreError> {
        let id = promotion.to_owned();
        let answer_key = format!("{promotion}|{order}");
        let customer_key = format!("{promotion}|{customer}");
        let redeemed = self
            .engine
            .submit(move |txn| {
                let mut answers = txn.open_table(ANSWERS)?;
                let first = answers
                    .get(answer_key.as_str())?
                    .map(|v| v.value().to_owned());
                match first.as_deref() {
                    Some("redeemed") => return Ok(true),
                    Some("exhausted") => return Ok(false),
                    _ => {}
                }
                let mut uses = txn.open_table(USES)?;
                let mut by_customer = txn.open_table(CUSTOMER_USES)?;
                let usage = Usage {
                    total: uses.get(id.as_str())?.map_or(0, |v| v.value()),
                    customer: by_customer
                        .get(customer_key.as_str())?
                        .map_or(0, |v| v.value()),
                };
                let ok = !usage.exhausts(limits);
                if ok {
                    uses.insert(id.as_str(), usage.total + 1)?;
                    by_customer.insert(customer_key.as_str(), usage.customer + 1)?;
                }
                answers.insert(
                    answer_key.as_str(),
                    if ok { "redeemed" } else { "exhausted" },
                )?;
                Ok(ok)
            })
            .await?;
        Ok(if redeemed {
            Redemption::Redeemed
        } else {
            Redemption::Exhausted
        })
    }

    async fn restore(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
    ) -> Result<bool, StoreError> {
        let id = promotion.to_owned();
        let answer_key = format!("{promotion}|{order}");
        let customer_key = format!("{promotion}|{customer}");
        Ok(self
            .engine
            .submit(move |txn| {
                let mut answers = txn.open_table(ANSWERS)?;
                if answers
                    .get(answer_key.as_str())?
                    .map(|v| v.value().to_owned())
                    .as_deref()
                    != Some("redeemed")
                {
                    return Ok(false);
                }
                answers.insert(answer_key.as_str(), "restored")?;
                let mut uses = txn.open_table(USES)?;
                let used = uses.get(id.as_str())?.map_or(0, |v| v.value());
                uses.insert(id.as_str(), used.saturating_sub(1))?;
                let mut by_customer = txn.open_table(CUSTOMER_USES)?;
                let used = by_customer
                    .get(customer_key.as_str())?
                    .map_or(0, |v| v.value());
                by_customer.insert(customer_key.as_str(), used.saturating_sub(1))?;
                Ok(true)
            })
            .await?)
    }

    async fn usage(&self, promotion: &str, customer: &str) -> Result<Usage, StoreError> {
        let id = promotion.to_owned();
        let customer_key = format!("{promotion}|{customer}");
        Ok(self.engine.read(move |txn| {
            let total = match open_read(txn, USES)? {
                Some(t) => t.get(id.as_str())?.map_or(0, |v| v.value()),
                None => 0,
            };
            let customer = match open_read(txn, CUSTOMER_USES)? {
                Some(t) => t.get(customer_key.as_str())?.map_or(0, |v| v.value()),
                None => 0,
            };
            Ok(Usage { total, customer })
        })?)
    }
}
