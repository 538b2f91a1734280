//! The embedded [`Outbox`]: messages, their keys and their due times in the engine, written
//! in the same group commits as the rest of the process's state.

use super::open_read;
use crate::outbox::{Attempt, Delivery, DeliveryState, KEPT_ATTEMPTS, Listing, NewMessage, Next};
use crate::{Outbox, StoreError, message_id};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{
    self, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
};

/// Message id → the [`Delivery`] as JSON.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox_messages");
/// Uniqueness key → message id.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("outbox_keys");
/// (due, in ms since the epoch; message id) of pending messages.
const DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("outbox_due");

/// The embedded outbox.
#[derive(Clone)]
pub struct EmbeddedOutbox {
    engine: Engine,
}

impl EmbeddedOutbox {
    /// An outbox on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<Delivery, redb::Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| redb::Error::Corrupted(format!("outbox message {id}: {e}")))
}

fn load(t: &Table<&str, &[u8]>, id: &str) -> Result<Option<Delivery>, redb::Error> {
    match t.get(id)? {
        Some(v) => decode(id, v.value()).map(Some),
        None => Ok(None),
    }
}

fn store(t: &mut Table<&str, &[u8]>, d: &Delivery) -> Result<(), redb::Error> {
    let bytes = serde_json::to_vec(d)
        .map_err(|e| redb::Error::Corrupted(format!("outbox message {}: {e}", d.id)))?;
    t.insert(d.id.as_str(), bytes.as_slice())?;
    Ok(())
}

fn due_key(d: &Delivery) -> Option<i64> {
    match d.state {
        DeliveryState::Pending => d.next_attempt_at.map(|at| at.timestamp_millis()),
        _ => None,
    }
}

#[async_trait]
impl Outbox for EmbeddedOutbox {
    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<usize, StoreError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let fresh: Vec<Delivery> = messages
            .into_iter()
            .map(|m| Delivery {
                id: message_id(),
                key: m.key,
                order_id: m.order_id,
                event: m.event,
                destination: m.destination,
                created_at: now,
                state: DeliveryState::Pending,
                next_attempt_at: Some(now),
                delivered_at: None,
                attempts: Vec::new(),
                payload: m.payload,
            })
            .collect();
        let written = self
            .engine
            .submit(move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let mut keys = txn.open_table(KEYS)?;
                let mut due = txn.open_table(DUE)?;
                let mut written = 0;
                for d in &fresh {
                    if keys.get(d.key.as_str())?.is_some() {
                        continue;
                    }
                    keys.insert(d.key.as_str(), d.id.as_str())?;
                    store(&mut messages, d)?;
                    due.insert((now.timestamp_millis(), d.id.as_str()), ())?;
                    written += 1;
                }
                Ok(written)
            })
            .await?;
        Ok(written)
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let until = now.timestamp_millis();
        Ok(self.engine.read(|txn| {
            let (Some(due), Some(messages)) = (open_read(txn, DUE)?, open_read(txn, MESSAGES)?)
            else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in due.range((i64::MIN, "")..=(until, "\u{10FFFF}"))? {
                if out.len() >= limit {
                    break;
                }
                let (key, _) = row?;
                let (_, id) = key.value();
                if let Some(v) = messages.get(id)? {
                    out.push(decode(id, v.value())?);
                }
            }
            Ok(out)
        })?)
    }

    async fn record(&self, id: &str, attempt: Attempt, next: Next) -> Result<bool, StoreError> {
        let id = id.to_owned();
        Ok(self
            .engine
            .submit(move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let mut due = txn.open_table(DUE)?;
                let Some(mut d) = load(&messages, &id)? else {
                    return Ok(false);
                };
                if let Some(at) = due_key(&d) {
                    due.remove((at, id.as_str()))?;
                }
                let at = attempt.at;
                d.attempts.push(attempt.clone());
                if d.attempts.len() > KEPT_ATTEMPTS {
                    d.attempts.remove(0);
                }
                match next {
                    Next::Delivered => {
                        d.state = DeliveryState::Delivered;
                        d.delivered_at = Some(at);
                        d.next_attempt_at = None;
                    }
                    Next::RetryAt(when) => {
                        d.state = DeliveryState::Pending;
                        d.next_attempt_at = Some(when);
                    }
                    Next::GiveUp => {
                        d.state = DeliveryState::Failed;
                        d.next_attempt_at = None;
                    }
                }
                if let Some(at) = due_key(&d) {
                    due.insert((at, id.as_str()), ())?;
                }
                store(&mut messages, &d)?;
                Ok(true)
            })
            .await?)
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.engine.read(|txn| match open_read(txn, MESSAGES)? {
            Some(t) => match t.get(id)? {
                Some(v) => decode(id, v.value()).map(Some),
                None => Ok(None),
            },
            None => Ok(None),
        })?)
    }

    async fn list(&self, listing: &Listing) -> Result<Vec<Delivery>, StoreError> {
        Ok(self.engine.read(|txn| {
            let Some(t) = open_read(txn, MESSAGES)? else {
                return Ok(Vec::new());
            };
            let rows = match &listing.before {
                Some(before) => t.range::<&str>(..before.as_str())?,
                None => t.range::<&str>(..)?,
            };
            let mut out = Vec::new();
            for row in rows.rev() {
                if out.len() >= listing.limit {
                    break;
                }
                let (k, v) = row?;
                let d = decode(k.value(), v.value())?;
                if listing.state.is_some_and(|s| s != d.state)
                    || listing.order_id.is_some_and(|o| o != d.order_id)
                {
                    continue;
                }
                out.push(d);
            }
            Ok(out)
        })?)
    }

    async fn retry(&self, id: &str, now: DateTime<Utc>) -> Result<Option<Delivery>, StoreError> {
        let id = id.to_owned();
        Ok(self
            .engine
            .submit(move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let mut due = txn.open_table(DUE)?;
                let Some(mut d) = load(&messages, &id)? else {
                    return Ok(None);
                };
                if let Some(at) = due_key(&d) {
                    due.remove((at, id.as_str()))?;
                }
                d.state = DeliveryState::Pending;
                d.next_attempt_at = Some(now);
                d.delivered_at = None;
                due.insert((now.timestamp_millis(), id.as_str()), ())?;
                store(&mut messages, &d)?;
                Ok(Some(d))
            })
            .await?)
    }

    async fn purge_delivered(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        // Found on a snapshot, removed in one write: a message retried meanwhile is re-checked.
        let old: Vec<String> = self.engine.read(|txn| {
            let Some(t) = open_read(txn, MESSAGES)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let d = decode(k.value(), v.value())?;
                if d.state == DeliveryState::Delivered
                    && d.delivered_at.is_some_and(|at| at < before)
                {
                    out.push(d.id);
                }
            }
            Ok(out)
        })?;
        if old.is_empty() {
            return Ok(0);
        }
        Ok(self
            .engine
            .submit(move |txn| {
                let mut messages = txn.open_table(MESSAGES)?;
                let mut keys = txn.open_table(KEYS)?;
                let mut gone = 0;
                for id in &old {
                    let Some(d) = load(&messages, id)? else {
                        continue;
                    };
                    if d.state != DeliveryState::Delivered {
                        continue;
                    }
                    messages.remove(id.as_str())?;
                    keys.remove(d.key.as_str())?;
                    gone += 1;
                }
                Ok(gone)
            })
            .await?)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        Ok(self.engine.read(|txn| {
            Ok(match open_read(txn, MESSAGES)? {
                Some(t) => t.len()?,
                None => 0,
            })
        })?)
    }
}
