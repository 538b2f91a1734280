//! The Redis [`IdempotencyStore`]: a new key is one `SET NX PX`; a taken one goes through a
//! script that lets the same request take over a lapsed or abandoned claim with its order id.

use super::batch::ScriptName;
use super::{RedisHot, ms, now_ms, redis_error};
use crate::{Claim, IdempotencyStore, StoreError};
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};
use orderflow_domain::OrderId;
use std::time::Duration;

/// How long a lapsed pending claim is kept, so a late retry still reuses its order id.
const LAPSED_KEEP: Duration = Duration::from_secs(24 * 3600);

/// `Idempotency-Key` claims in Redis. Values are `P|deadline|order|fingerprint` while pending
/// and `C|0|order|fingerprint` once the order is on the log.
#[derive(Clone)]
pub struct RedisIdempotency {
    hot: RedisHot,
}

impl RedisIdempotency {
    /// Claims kept on `hot`'s server.
    pub fn new(hot: RedisHot) -> Self {
        Self { hot }
    }

    fn key(&self, key: &str) -> String {
        format!("idem:{key}")
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        order_id: OrderId,
        pending_ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let now = now_ms();
        let deadline = now.saturating_add(ms(pending_ttl));
        let keep = ms(pending_ttl).saturating_add(ms(LAPSED_KEEP));
        let value = format!("P|{deadline}|{order_id}|{fingerprint}");
        // The common case, a key never seen: one command.
        let set: Option<String> = self
            .hot
            .client()
            .set(
                self.key(key),
                value,
                Some(Expiration::PX(keep)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(redis_error)?;
        if set.is_some() {
            return Ok(Claim::Claimed { order_id });
        }
        let reply: Vec<String> = self
            .hot
            .scripts()
            .call(
                ScriptName::IdempotencyClaim,
                vec![self.key(key)],
                vec![
                    fingerprint.to_owned(),
                    order_id.to_string(),
                    now.to_string(),
                    ms(pending_ttl).to_string(),
                    ms(LAPSED_KEEP).to_string(),
                ],
            )
            .await?;
        let parse = |text: &str| {
            text.parse::<OrderId>()
                .map_err(|_| StoreError::Corrupt(format!("idempotency key {key:?}: {reply:?}")))
        };
        match reply.as_slice() {
            [kind, order] if kind == "claimed" => Ok(Claim::Claimed {
                order_id: parse(order)?,
            }),
            [kind, order, fingerprint, state] if kind == "existing" => Ok(Claim::Existing {
                fingerprint: fingerprint.clone(),
                order_id: parse(order)?,
                complete: state == "C",
            }),
            _ => Err(StoreError::Corrupt(format!(
                "idempotency key {key:?}: unexpected answer {reply:?}"
            ))),
        }
    }

    async fn complete(
        &self,
        key: &str,
        order_id: OrderId,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::IdempotencySettle,
                vec![self.key(key)],
                vec![order_id.to_string(), "C".into(), ms(ttl).to_string()],
            )
            .await?;
        Ok(())
    }

    async fn abandon(&self, key: &str, order_id: OrderId) -> Result<(), StoreError> {
        let _: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::IdempotencySettle,
                vec![self.key(key)],
                vec![order_id.to_string(), "A".into(), "1".into()],
            )
            .await?;
        Ok(())
    }
}
