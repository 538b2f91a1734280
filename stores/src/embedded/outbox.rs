//! The embedded [`Outbox`]: messages, their keys, the due times of pending ones and the
//! delivery times of delivered ones in the engine, written in the same group commits as the
//! rest of the process's state. The two time indexes let the dispatcher and the purge read
//! only what concerns them.

use super::open_read;
use crate::outbox::{Delivery, DeliveryState, KEPT_ATTEMPTS, Listing, NewMessage, Next, Tried};
use crate::{Outbox, StoreError, message_id};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use orderflow_storage::kv::Engine;
use orderflow_storage::kv::redb::{self, ReadableTable, Table, TableDefinition, WriteTransaction};

/// Message id → the [`Delivery`] as JSON.
const MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox_messages");
/// Uniqueness key → message id.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("outbox_keys");
/// (due, in ms since the epoch; message id) of pending messages.
const DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("outbox_due");
/// (delivered, in ms since the epoch; message id) of delivered messages.
const DELIVERED: TableDefinition<(i64, &str), ()> = TableDefinition::new("outbox_delivered");

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

/// A stored message that does not read back.
fn corrupt(id: &str, why: impl std::fmt::Display) -> redb::Error {
    redb::Error::Corrupted(format!("outbox message {id}: {why}"))
}

/// A row's two parts, once [unpacked](super::packed::unpack): the record as JSON (no raw
/// newline in it), a newline, then the payload as it is.
fn split_row<'a>(id: &str, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), redb::Error> {
    let split = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt(id, "no payload"))?;
    Ok((&bytes[..split], &bytes[split + 1..]))
}

/// A whole message from its row.
fn decode(id: &str, row: &[u8]) -> Result<Delivery, redb::Error> {
    let bytes = super::packed::unpack(row).map_err(|e| corrupt(id, e))?;
    let (record, payload) = split_row(id, &bytes)?;
    let mut d: Delivery = serde_json::from_slice(record).map_err(|e| corrupt(id, e))?;
    d.payload = String::from_utf8(payload.to_vec()).map_err(|e| corrupt(id, e))?;
    Ok(d)
}

/// What the purge needs of a stored message to drop its index entries.
struct Indexed {
    key: String,
    due: Option<DateTime<Utc>>,
}

/// [`Indexed`] from a row, without decoding the rest of the message (a compressed row is
/// decompressed whole first).
fn indexed(id: &str, row: &[u8]) -> Result<Indexed, redb::Error> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        key: std::borrow::Cow<'a, str>,
        #[serde(default)]
        next_attempt_at: Option<DateTime<Utc>>,
    }
    let bytes = super::packed::unpack(row).map_err(|e| corrupt(id, e))?;
    let (record, _) = split_row(id, &bytes)?;
    let head: Head<'_> = serde_json::from_slice(record).map_err(|e| corrupt(id, e))?;
    Ok(Indexed {
        key: head.key.into_owned(),
        due: head.next_attempt_at,
    })
}

fn encode(d: &Delivery) -> Result<Vec<u8>, redb::Error> {
    let mut row = serde_json::to_vec(d).map_err(|e| corrupt(&d.id, e))?;
    row.push(b'\n');
    row.extend_from_slice(d.payload.as_bytes());
    Ok(super::packed::pack(row))
}

fn load(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Delivery>, redb::Error> {
    match t.get(id)? {
        Some(v) => decode(id, v.value()).map(Some),
        None => Ok(None),
    }
}

/// The tables a change of a message touches, open in one write.
struct Tables<'t> {
    messages: Table<'t, &'static str, &'static [u8]>,
    keys: Table<'t, &'static str, &'static str>,
    due: Table<'t, (i64, &'static str), ()>,
    delivered: Table<'t, (i64, &'static str), ()>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            keys: txn.open_table(KEYS)?,
            due: txn.open_table(DUE)?,
            delivered: txn.open_table(DELIVERED)?,
        })
    }

    /// Writes `new` (encoded as `bytes`) in place of `old` (none for a new message), moving it
    /// between the time indexes as its state says.
    fn put(
        &mut self,
        old: Option<&Delivery>,
        new: &Delivery,
        bytes: &[u8],
    ) -> Result<(), redb::Error> {
        if let Some(old) = old {
            self.unindex(old)?;
        }
        let id = new.id.as_str();
        match (new.state, new.next_attempt_at, new.delivered_at) {
            (DeliveryState::Pending, Some(at), _) => {
                self.due.insert((at.timestamp_millis(), id), ())?;
            }
            (DeliveryState::Delivered, _, Some(at)) => {
                self.delivered.insert((at.timestamp_millis(), id), ())?;
            }
            _ => {}
        }
        self.messages.insert(id, bytes)?;
        Ok(())
    }

    fn unindex(&mut self, d: &Delivery) -> Result<(), redb::Error> {
        self.unindex_at(
            &d.id,
            d.next_attempt_at.map(|at| at.timestamp_millis()),
            d.delivered_at.map(|at| at.timestamp_millis()),
        )
    }

    /// Drops message `id`'s entries from the due and delivered indexes (their times in ms).
    fn unindex_at(
        &mut self,
        id: &str,
        due_ms: Option<i64>,
        delivered_ms: Option<i64>,
    ) -> Result<(), redb::Error> {
        if let Some(at) = due_ms {
            self.due.remove((at, id))?;
        }
        if let Some(at) = delivered_ms {
            self.delivered.remove((at, id))?;
        }
        Ok(())
    }

    /// Changes message `id` with `change`; the message after, or `None` if there is none.
    fn change(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Delivery),
    ) -> Result<Option<Delivery>, redb::Error> {
        let Some(old) = load(&self.messages, id)? else {
            return Ok(None);
        };
        let mut new = old.clone();
        change(&mut new);
        self.put(Some(&old), &new, &encode(&new)?)?;
        Ok(Some(new))
    }
}

/// `d` after a try and what follows it.
fn apply_try(d: &mut Delivery, tried: &Tried) {
    d.attempts.push(tried.attempt.clone());
    if d.attempts.len() > KEPT_ATTEMPTS {
        d.attempts.remove(0);
    }
    match tried.next {
        Next::Delivered => {
            d.state = DeliveryState::Delivered;
            d.delivered_at = Some(tried.attempt.at);
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
        // Encoded here, not on the writer thread every store of the process shares.
        let fresh = fresh
            .into_iter()
            .map(|d| encode(&d).map(|bytes| (d, bytes)))
            .collect::<Result<Vec<_>, _>>()?;
        let written = self
            .engine
            .submit(move |txn| {
                let mut t = Tables::open(txn)?;
                let mut written = 0;
                for (d, bytes) in &fresh {
                    if t.keys.get(d.key.as_str())?.is_some() {
                        continue;
                    }
                    t.keys.insert(d.key.as_str(), d.id.as_str())?;
                    t.put(None, d, bytes)?;
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
                if let Some(d) = load(&messages, key.value().1)? {
                    out.push(d);
                }
            }
            Ok(out)
        })?)
    }

    async fn record(&self, tries: Vec<Tried>) -> Result<usize, StoreError> {
        if tries.is_empty() {
            return Ok(0);
        }
        // Read, changed and encoded here, off the writer thread; the write only swaps rows,
        // and leaves one that changed meanwhile (retried by hand) as it is now.
        let changes = self.engine.read(|txn| {
            let Some(messages) = open_read(txn, MESSAGES)? else {
                return Ok(Vec::new());
            };
            let mut changes = Vec::with_capacity(tries.len());
            for tried in &tries {
                let Some(stored) = messages.get(tried.id.as_str())? else {
                    continue;
                };
                let before = stored.value().to_vec();
                let old = decode(&tried.id, &before)?;
                let mut new = old.clone();
                apply_try(&mut new, tried);
                let bytes = encode(&new)?;
                changes.push((before, old, new, bytes));
            }
            Ok(changes)
        })?;
        Ok(self
            .engine
            .submit(move |txn| {
                let mut t = Tables::open(txn)?;
                let mut found = 0;
                for (before, old, new, bytes) in &changes {
                    let current = t
                        .messages
                        .get(old.id.as_str())?
                        .map(|v| v.value() == before.as_slice());
                    if current == Some(true) {
                        t.put(Some(old), new, bytes)?;
                        found += 1;
                    }
                }
                Ok(found)
            })
            .await?)
    }

    async fn get(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.engine.read(|txn| match open_read(txn, MESSAGES)? {
            Some(t) => load(&t, id),
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
                Tables::open(txn)?.change(&id, |d| {
                    d.state = DeliveryState::Pending;
                    d.next_attempt_at = Some(now);
                    d.delivered_at = None;
                })
            })
            .await?)
    }

    async fn purge_delivered(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let until = before.timestamp_millis();
        Ok(self
            .engine
            .submit(move |txn| {
                let mut t = Tables::open(txn)?;
                let mut old = Vec::new();
                for row in t.delivered.range((i64::MIN, "")..(until, ""))? {
                    if old.len() >= limit {
                        break;
                    }
                    let (key, _) = row?;
                    let (at, id) = key.value();
                    old.push((at, id.to_owned()));
                }
                for (at, id) in &old {
                    // Removed first and read from what the removal hands back: one search of
                    // the table instead of two, and of the (decompressed) row only the key and
                    // due time parsed (a profile of the purge put a quarter of it in decoding
                    // whole messages).
                    let indexed = match t.messages.remove(id.as_str())? {
                        Some(row) => Some(indexed(id, row.value())?),
                        None => None,
                    };
                    let due = indexed.as_ref().and_then(|i| i.due);
                    t.unindex_at(id, due.map(|at| at.timestamp_millis()), Some(*at))?;
                    if let Some(Indexed { key, .. }) = indexed {
                        t.keys.remove(key.as_str())?;
                    }
                }
                Ok(old.len())
            })
            .await?)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        super::rows(&self.engine, MESSAGES)
    }
}
