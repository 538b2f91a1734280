//! The Redis [`StockLedger`]: levels in one hash per SKU, holds in one hash per order, every
//! change made by one Lua script so it is atomic and idempotent per order.

use super::batch::ScriptName;
use super::{RedisHot, ms, redis_error};
use crate::{
    CancelOutcome, PinOutcome, ReserveOutcome, Shortage, StockLedger, StockLevel, StoreError,
};
use crate::{SkuQuantity, SkuStock};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use orderflow_domain::OrderId;
use std::collections::HashMap;
use std::time::Duration;

/// The Redis stock ledger of one warehouse.
#[derive(Clone)]
pub struct RedisLedger {
    hot: RedisHot,
    prefix: String,
}

impl RedisLedger {
    /// The ledger of the warehouse `hot` is configured for.
    pub fn new(hot: RedisHot) -> Self {
        let prefix = hot.prefix();
        Self { hot, prefix }
    }

    fn stock_key(&self, sku: &str) -> String {
        format!("{}stock:{sku}", self.prefix)
    }

    fn hold_key(&self, order: OrderId) -> String {
        format!("{}hold:{order}", self.prefix)
    }

    fn expiry_key(&self) -> String {
        format!("{}expiry", self.prefix)
    }

    fn expired_key(&self) -> String {
        format!("{}expired", self.prefix)
    }

    fn skus_key(&self) -> String {
        format!("{}skus", self.prefix)
    }

    fn retention_ms(&self) -> String {
        ms(self.hot.config().settled_retention).to_string()
    }

    /// Runs release or commit.
    async fn settle(&self, script: ScriptName, order: OrderId) -> Result<bool, StoreError> {
        let done: i64 = self
            .hot
            .scripts()
            .call(
                script,
                vec![self.hold_key(order), self.expiry_key()],
                vec![
                    order.to_string(),
                    format!("{}stock:", self.prefix),
                    self.retention_ms(),
                ],
            )
            .await?;
        Ok(done == 1)
    }
}

/// Parses a stored number field.
fn number(fields: &HashMap<String, String>, name: &str, sku: &str) -> Result<u64, StoreError> {
    match fields.get(name) {
        None => Ok(0),
        Some(text) => text.parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "stock {sku}: field {name} is {text:?}, not a count"
            ))
        }),
    }
}

fn level_from(sku: &str, fields: &HashMap<String, String>) -> Result<StockLevel, StoreError> {
    Ok(StockLevel {
        sku: sku.to_owned(),
        initial: number(fields, "initial", sku)?,
        available: number(fields, "available", sku)?,
        reserved: number(fields, "reserved", sku)?,
        committed: number(fields, "committed", sku)?,
    })
}

/// Decodes the reserve script's answer.
fn outcome_from(reply: &str) -> Result<ReserveOutcome, StoreError> {
    match reply {
        "R" => return Ok(ReserveOutcome::Reserved),
        "C" => return Ok(ReserveOutcome::Cancelled),
        _ => {}
    }
    let rows: Vec<(String, String, String)> = serde_json::from_str(reply)
        .map_err(|e| StoreError::Corrupt(format!("reserve answer {reply:?}: {e}")))?;
    let parse = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| StoreError::Corrupt(format!("reserve answer {reply:?}: {text:?}")))
    };
    let mut short = Vec::with_capacity(rows.len());
    for (sku, requested, available) in rows {
        short.push(Shortage {
            sku,
            requested: parse(&requested)?,
            available: parse(&available)?,
        });
    }
    Ok(ReserveOutcome::Short(short))
}

#[async_trait]
impl StockLedger for RedisLedger {
    async fn seed(&self, items: &[SkuStock]) -> Result<usize, StoreError> {
        let mut created = 0;
        // In slices, so one script never holds Redis for long.
        for chunk in items.chunks(500) {
            let mut keys = vec![self.skus_key()];
            keys.extend(chunk.iter().map(|item| self.stock_key(&item.sku)));
            let mut args: Vec<String> = chunk.iter().map(|item| item.sku.clone()).collect();
            args.extend(chunk.iter().map(|item| item.stock.to_string()));
            let n: i64 = self
                .hot
                .scripts()
                .call(ScriptName::Seed, keys, args)
                .await?;
            created += usize::try_from(n).unwrap_or(0);
        }
        Ok(created)
    }

    async fn reserve(
        &self,
        order: OrderId,
        lines: &[SkuQuantity],
        ttl: Duration,
    ) -> Result<ReserveOutcome, StoreError> {
        let wanted = crate::ledger::units_per_sku(lines);
        let expires_at = super::now_ms().saturating_add(ms(ttl));
        let mut keys = Vec::with_capacity(wanted.len() + 2);
        keys.push(self.hold_key(order));
        keys.push(self.expiry_key());
        keys.extend(wanted.keys().map(|sku| self.stock_key(sku)));
        let mut args = Vec::with_capacity(2 * wanted.len() + 3);
        args.push(order.to_string());
        args.push(expires_at.to_string());
        args.push(self.retention_ms());
        args.extend(wanted.keys().map(|sku| (*sku).to_owned()));
        args.extend(wanted.values().map(u64::to_string));
        let reply: String = self
            .hot
            .scripts()
            .call(ScriptName::Reserve, keys, args)
            .await?;
        outcome_from(&reply)
    }

    async fn release(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(ScriptName::Release, order).await
    }

    async fn commit(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(ScriptName::Commit, order).await
    }

    async fn pin(&self, order: OrderId) -> Result<PinOutcome, StoreError> {
        let reply: String = self
            .hot
            .scripts()
            .call(
                ScriptName::Pin,
                vec![self.hold_key(order), self.expiry_key()],
                vec![order.to_string()],
            )
            .await?;
        match reply.as_str() {
            "pinned" => Ok(PinOutcome::Pinned),
            "expired" => Ok(PinOutcome::Expired),
            "released" => Ok(PinOutcome::Released),
            "missing" => Ok(PinOutcome::Missing),
            "cancelled" => Ok(PinOutcome::Cancelled),
            other => Err(StoreError::Corrupt(format!("pin answered {other:?}"))),
        }
    }

    async fn cancel(&self, order: OrderId) -> Result<CancelOutcome, StoreError> {
        let reply: String = self
            .hot
            .scripts()
            .call(
                ScriptName::Cancel,
                vec![self.hold_key(order), self.expiry_key()],
                vec![order.to_string(), format!("{}stock:", self.prefix)],
            )
            .await?;
        match reply.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "shipped" => Ok(CancelOutcome::Shipped),
            "rejected" => Ok(CancelOutcome::Rejected),
            other => Err(StoreError::Corrupt(format!("cancel answered {other:?}"))),
        }
    }

    async fn refuse(&self, order: OrderId) -> Result<bool, StoreError> {
        let refused: i64 = self
            .hot
            .scripts()
            .call(
                ScriptName::Refuse,
                vec![self.hold_key(order)],
                vec![self.retention_ms()],
            )
            .await?;
        Ok(refused == 1)
    }

    async fn cancelled(&self, order: OrderId) -> Result<bool, StoreError> {
        let state: Option<String> = self
            .hot
            .client()
            .hget(self.hold_key(order), "state")
            .await
            .map_err(redis_error)?;
        Ok(state.as_deref() == Some("cancelled"))
    }

    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OrderId>, StoreError> {
        let ids: Vec<String> = self
            .hot
            .scripts()
            .call(
                ScriptName::Expire,
                vec![self.expiry_key(), self.expired_key()],
                vec![
                    now.timestamp_millis().to_string(),
                    limit.max(1).to_string(),
                    self.prefix.clone(),
                ],
            )
            .await?;
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Corrupt(format!("expired order id {id:?}")))
            })
            .collect()
    }

    async fn acknowledge_expired(&self, orders: &[OrderId]) -> Result<(), StoreError> {
        for chunk in orders.chunks(500) {
            let mut args = vec![self.prefix.clone(), self.retention_ms()];
            args.extend(chunk.iter().map(ToString::to_string));
            let _: i64 = self
                .hot
                .scripts()
                .call(ScriptName::Acknowledge, vec![self.expired_key()], args)
                .await?;
        }
        Ok(())
    }

    async fn level(&self, sku: &str) -> Result<Option<StockLevel>, StoreError> {
        let fields: HashMap<String, String> = self
            .hot
            .client()
            .hgetall(self.stock_key(sku))
            .await
            .map_err(redis_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        level_from(sku, &fields).map(Some)
    }

    async fn levels(&self) -> Result<Vec<StockLevel>, StoreError> {
        let mut skus: Vec<String> = self
            .hot
            .client()
            .smembers(self.skus_key())
            .await
            .map_err(redis_error)?;
        skus.sort();
        let mut levels = Vec::with_capacity(skus.len());
        for chunk in skus.chunks(500) {
            let pipeline = self.hot.client().pipeline();
            for sku in chunk {
                let _: () = pipeline
                    .hgetall(self.stock_key(sku))
                    .await
                    .map_err(redis_error)?;
            }
            let rows: Vec<HashMap<String, String>> = pipeline.all().await.map_err(redis_error)?;
            for (sku, fields) in chunk.iter().zip(rows) {
                levels.push(level_from(sku, &fields)?);
            }
        }
        Ok(levels)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.hot.ping().await
    }

    async fn set_available(&self, sku: &str, available: u64) -> Result<StockLevel, StoreError> {
        let fields: Vec<String> = self
            .hot
            .scripts()
            .call(
                ScriptName::SetAvailable,
                vec![self.skus_key(), self.stock_key(sku)],
                vec![sku.to_owned(), available.to_string()],
            )
            .await?;
        let [initial, available, reserved, committed] = fields.as_slice() else {
            return Err(StoreError::Corrupt(format!(
                "set_available answered {fields:?}"
            )));
        };
        let map: HashMap<String, String> = [
            ("initial", initial),
            ("available", available),
            ("reserved", reserved),
            ("committed", committed),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
        level_from(sku, &map)
    }
}
