//! The Redis [`CouponLedger`]: one counter per code, one remembered answer per order and code.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{CouponLedger, Redemption, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use orderflow_domain::OrderId;

/// Coupon-use counters in Redis. A code's keys share the hash tag `{coupon:CODE}`.
#[derive(Clone)]
pub struct RedisCoupons {
    hot: RedisHot,
}

impl RedisCoupons {
    /// Counters on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    fn keys(&self, code: &str, order: OrderId) -> Vec<String> {
        vec![
            format!("{{coupon:{code}}}:uses"),
            format!("{{coupon:{code}}}:order:{order}"),
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
        code: &str,
        order: OrderId,
        limit: u64,
    ) -> Result<Redemption, StoreError> {
        let answer: String = self
            .hot
            .scripts()
            .call(
                ScriptName::CouponRedeem,
                self.keys(code, order),
                vec![limit.to_string(), self.retention()],
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

    async fn restore(&self, code: &str, order: OrderId) -> Result<bool, StoreError> {
        let restored: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::CouponRestore,
                self.keys(code, order),
                vec![self.retention()],
            )
            .await?;
        Ok(restored == 1)
    }

    async fn uses(&self, code: &str) -> Result<u64, StoreError> {
        let uses: Option<u64> = self
            .hot
            .client()
            .get(format!("{{coupon:{code}}}:uses"))
            .await
            .map_err(redis_error)?;
        Ok(uses.unwrap_or(0))
    }
}
