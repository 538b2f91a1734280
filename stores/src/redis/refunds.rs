//! The Redis [`RefundLedger`]: one hash per order (`{wh}:refunds:ORDER`: `total`, one field per
//! idempotency key, the refund ids and the failed ones), changed by one script per call, and the
//! set `{wh}:refunds` of orders that have refunds, for audits.

use super::batch::ScriptName;
use super::{RedisHot, redis_error};
use crate::{RefundAnswer, RefundClaim, RefundEntry, RefundLedger, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::{Currency, Money, OrderId};

/// The refunds of one warehouse's orders.
#[derive(Clone)]
pub struct RedisRefundLedger {
    hot: RedisHot,
    prefix: String,
}

impl RedisRefundLedger {
    /// The refund ledger beside the stock ledger of `hot`'s warehouse.
    pub fn new(hot: RedisHot) -> Self {
        let prefix = hot.prefix();
        Self { hot, prefix }
    }

    fn order_key(&self, order: OrderId) -> String {
        format!("{}refunds:{order}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}refunds", self.prefix)
    }
}

/// Decodes a stored record `[refund id, amount, currency, reason]`.
fn entry_of(record: &str) -> Result<RefundEntry, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("refund record {record:?}"));
    let (refund_id, minor, currency, reason): (String, String, String, String) =
        serde_json::from_str(record).map_err(|_| corrupt())?;
    let minor: i64 = minor.parse().map_err(|_| corrupt())?;
    let currency = Currency::parse(&currency).map_err(|_| corrupt())?;
    Ok(RefundEntry {
        refund_id,
        amount: Money::new(minor, currency),
        reason,
    })
}

#[async_trait]
impl RefundLedger for RedisRefundLedger {
    async fn request(
        &self,
        order: OrderId,
        claim: RefundClaim,
    ) -> Result<RefundAnswer, StoreError> {
        let currency = claim.captured.currency;
        let reply: Vec<String> = self
            .hot
            .scripts()
            .call(
                ScriptName::RefundRequest,
                vec![self.order_key(order), self.index_key()],
                vec![
                    order.to_string(),
                    claim.key,
                    claim.refund_id,
                    claim
                        .amount
                        .map(|a| a.minor.to_string())
                        .unwrap_or_default(),
                    currency.to_string(),
                    claim.reason,
                    claim.captured.minor.to_string(),
                ],
            )
            .await?;
        let refunded = |text: &str| {
            text.parse::<i64>()
                .map(|minor| Money::new(minor, currency))
                .map_err(|_| StoreError::Corrupt(format!("refund total {text:?}")))
        };
        match reply.as_slice() {
            [kind, record] if kind == "accepted" => Ok(RefundAnswer::Accepted(entry_of(record)?)),
            [kind, record] if kind == "repeat" => Ok(RefundAnswer::Repeat(entry_of(record)?)),
            [kind, total] if kind == "exceeds" => Ok(RefundAnswer::Exceeds {
                refunded: refunded(total)?,
            }),
            [kind, _] if kind == "nothing" => Ok(RefundAnswer::Nothing),
            other => Err(StoreError::Corrupt(format!(
                "refund request answered {other:?}"
            ))),
        }
    }

    async fn fail(&self, order: OrderId, refund_id: &str) -> Result<bool, StoreError> {
        let given_back: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::RefundFail,
                vec![self.order_key(order)],
                vec![refund_id.to_owned()],
            )
            .await?;
        Ok(given_back == 1)
    }

    async fn totals(&self) -> Result<Vec<(OrderId, i64)>, StoreError> {
        let client = self.hot.client();
        let orders: Vec<String> = client
            .smembers(self.index_key())
            .await
            .map_err(redis_error)?;
        let mut out = Vec::with_capacity(orders.len());
        for id in orders {
            let order: OrderId = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("refunds index holds {id:?}")))?;
            let total: Option<String> = client
                .hget(self.order_key(order), "total")
                .await
                .map_err(redis_error)?;
            let total = total.as_deref().unwrap_or("0");
            let minor = total
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("refund total {total:?}")))?;
            out.push((order, minor));
        }
        out.sort();
        Ok(out)
    }
}
