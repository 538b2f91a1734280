//! The embedded [`CouponLedger`]: counters and per-order answers in the engine.

use super::open_read;
use crate::{CouponLedger, Redemption, StoreError};
use async_trait::async_trait;
use orderflow_domain::OrderId;
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{ReadableTable, TableDefinition};

/// Code → uses counted.
const USES: TableDefinition<&str, u64> = TableDefinition::new("coupon_uses");
/// `CODE|ORDER` → `redeemed`, `exhausted` or `restored`.
const ANSWERS: TableDefinition<&str, &str> = TableDefinition::new("coupon_answers");

/// Coupon-use counters on the embedded engine; the writer thread makes each check-and-count
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
        code: &str,
        order: OrderId,
        limit: u64,
    ) -> Result<Redemption, StoreError> {
        let code = code.to_owned();
        let answer_key = format!("{code}|{order}");
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
                let used = uses.get(code.as_str())?.map_or(0, |v| v.value());
                let ok = used < limit;
                if ok {
                    uses.insert(code.as_str(), used + 1)?;
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

    async fn restore(&self, code: &str, order: OrderId) -> Result<bool, StoreError> {
        let code = code.to_owned();
        let answer_key = format!("{code}|{order}");
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
                let used = uses.get(code.as_str())?.map_or(0, |v| v.value());
                uses.insert(code.as_str(), used.saturating_sub(1))?;
                Ok(true)
            })
            .await?)
    }

    async fn uses(&self, code: &str) -> Result<u64, StoreError> {
        let code = code.to_owned();
        Ok(self.engine.read(move |txn| {
            Ok(match open_read(txn, USES)? {
                Some(t) => t.get(code.as_str())?.map_or(0, |v| v.value()),
                None => 0,
            })
        })?)
    }
}
