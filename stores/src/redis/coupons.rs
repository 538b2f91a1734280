//! The Redis [`CouponLedger`]: one counter per promotion and per promotion and customer, one
//! remembered answer per order and promotion.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{CouponLedger, Redemption, StoreError, Usage, UseLimits};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::OrderId;

/// Promotion-use counters in Redis. A promotion's keys share the hash tag `{coupon:ID}`, so a
/// cluster keeps them on one slot for the scripts.
#[derive(Clone)]
pub struct RedisCoupons {
    hot: RedisHot,
}

fn uses_key(promotion: &str) -> String {
    format!("{{coupon:{promotion}}}:uses")
}

fn customer_key(promotion: &str, customer: &str) -> String {
    format!("{{coupon:{promotion}}}:customer:{customer}")
}

fn limit(value: Option<u64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl RedisCoupons {
    /// Counters on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    fn keys(&self, promotion: &str, order: OrderId, customer: &str) -> Vec<String> {
        vec![
            uses_key(promotion),
            format!("{{coupon:{promotion}}}:order:{order}"),
            customer_key(promotion, customer),
        ]
    }

    fn retention(&self) -> String {
        ms(self.hot.config().coupon_retention).to_string()
    }
}

#[async_trait]
impl CouponLedger for RedisCoupons {
    async fn redeem(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
        limits: UseLimits,
    ) -> Result<Redemption, StoreError> {
        let answer: String = self
            .hot
            .scripts()
            .call(
                ScriptName::CouponRedeem,
                self.keys(promotion, order, customer),
                vec![
                    limit(limits.total),
                    self.retention(),
                    limit(limits.per_customer),
                ],
            )
            .await?;
        match answer.as_str() {
            "redeemed" => Ok(Redemption::Redeemed),
            "exhausted" => Ok(Redemption::Exhausted),
            other => Err(StoreError::Corrupt(format!(
                "coupon redeem answered {other:?}"
            ))),
        }
    }

    async fn restore(
        &self,
        promotion: &str,
        order: OrderId,
        customer: &str,
    ) -> Result<bool, StoreError> {
        let restored: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::CouponRestore,
                self.keys(promotion, order, customer),
                vec![self.retention()],
            )
            .await?;
        Ok(restored == 1)
    }

    async fn usage(&self, promotion: &str, customer: &str) -> Result<Usage, StoreError> {
        // One slot: MGET works on a cluster too.
        let values: Vec<Option<u64>> = self
            .hot
            .client()
            .mget(vec![uses_key(promotion), customer_key(promotion, customer)])
            .await
            .map_err(redis_error)?;
        Ok(Usage {
            total: values.first().copied().flatten().unwrap_or(0),
            customer: values.get(1).copied().flatten().unwrap_or(0),
        })
    }
}
