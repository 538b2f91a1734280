//! The [`StockLedger`] calls of the embedded ledger: each changes the in-memory state under its
//! lock and queues the durable change, chained by sequence number.

use super::*;
use crate::{CancelOutcome, SkuQuantity, SkuStock};

#[async_trait]
impl StockLedger for EmbeddedLedger {
    async fn seed(&self, items: &[SkuStock]) -> Result<usize, StoreError> {
        let (count, pending) = {
            let mut state = self.state.lock();
            state.usable()?;
            let mut created = Vec::new();
            for SkuStock { sku, stock } in items {
                if !state.levels.contains_key(sku) {
                    let level = StockLevel {
                        sku: sku.clone(),
                        initial: *stock,
                        available: *stock,
                        reserved: 0,
                        committed: 0,
                    };
                    state.levels.insert(sku.clone(), level.clone());
                    created.push(level);
                }
            }
            (
                created.len(),
                self.persist(Change {
                    levels: created,
                    hold: None,
                    seq: state.next_seq(),
                }),
            )
        };
        pending.await?;
        Ok(count)
    }

    async fn reserve(
        &self,
        order: OrderId,
        lines: &[SkuQuantity],
        ttl: Duration,
    ) -> Result<ReserveOutcome, StoreError> {
        let wanted = crate::ledger::units_per_sku(lines);
        let (outcome, pending) = {
            let mut state = self.state.lock();
            state.usable()?;
            self.load_evicted(&mut state, order)?;
            if let Some(slot) = state.holds.get(&order) {
                if slot.durable < slot.version {
                    return Err(not_yet_durable());
                }
                if slot.hold.state == HoldState::Cancelled {
                    return Ok(ReserveOutcome::Cancelled);
                }
                return Ok(slot.hold.outcome.clone());
            }
            let shortages: Vec<Shortage> = wanted
                .iter()
                .filter_map(|(sku, qty)| {
                    let available = state.levels.get(*sku).map_or(0, |l| l.available);
                    (available < *qty).then(|| Shortage {
                        sku: (*sku).to_owned(),
                        requested: *qty,
                        available,
                    })
                })
                .collect();
            let expires_at_ms = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
            let lines: Vec<(String, u64)> =
                wanted.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect();
            let (outcome, hold_state, touched) = if shortages.is_empty() {
                let mut touched = Vec::with_capacity(wanted.len());
                for (sku, qty) in &wanted {
                    if let Some(level) = state.levels.get_mut(*sku) {
                        level.available -= qty;
                        level.reserved += qty;
                        touched.push(level.clone());
                    }
                }
                (ReserveOutcome::Reserved, HoldState::Held, touched)
            } else {
                (
                    ReserveOutcome::Short(shortages),
                    HoldState::Refused,
                    Vec::new(),
                )
            };
            let hold = Hold {
                lines,
                state: hold_state,
                outcome: outcome.clone(),
                expires_at_ms,
                pinned: false,
                announced: false,
            };
            (outcome, self.first_hold(&mut state, order, hold, touched))
        };
        pending.await?;
        Ok(outcome)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.state.lock().usable()
    }

    async fn release(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(order, HoldState::Released).await
    }

    async fn commit(&self, order: OrderId) -> Result<bool, StoreError> {
        self.settle(order, HoldState::Committed).await
    }

    async fn pin(&self, order: OrderId) -> Result<PinOutcome, StoreError> {
        let write = {
            let mut state = self.state.lock();
            state.usable()?;
            self.load_evicted(&mut state, order)?;
            let Some(slot) = state.holds.get(&order) else {
                return Ok(PinOutcome::Missing);
            };
            let writes = slot.hold.state == HoldState::Held && !slot.hold.pinned;
            // An answer read from memory must already be on disk; a pin that writes is queued
            // behind the earlier writes and answers once it is durable itself.
            if !writes && slot.durable < slot.version {
                return Err(not_yet_durable());
            }
            match slot.hold.state {
                HoldState::Held if slot.hold.pinned => return Ok(PinOutcome::Pinned),
                HoldState::Held => {}
                HoldState::Committed => return Ok(PinOutcome::Pinned),
                HoldState::Expired => return Ok(PinOutcome::Expired),
                HoldState::Released if slot.hold.pinned => return Ok(PinOutcome::Released),
                HoldState::Released | HoldState::Refused => return Ok(PinOutcome::Missing),
                HoldState::Cancelled => return Ok(PinOutcome::Cancelled),
            }
            self.touch_hold(&mut state, order, |hold| hold.pinned = true)
        };
        if let Some(write) = write {
            write.await?;
        }
        Ok(PinOutcome::Pinned)
    }

    async fn cancel(&self, order: OrderId) -> Result<CancelOutcome, StoreError> {
        let write = {
            let mut state = self.state.lock();
            state.usable()?;
            self.load_evicted(&mut state, order)?;
            match state.holds.get(&order) {
                None => self.mark_unreserved(&mut state, order, HoldState::Cancelled),
                Some(slot) if slot.hold.state == HoldState::Held => {
                    match self.settle_in(&mut state, order, HoldState::Cancelled)? {
                        Settle::Write(write) => write,
                        Settle::Done(_) => return Ok(CancelOutcome::Cancelled),
                    }
                }
                Some(slot) if slot.durable < slot.version => return Err(not_yet_durable()),
                Some(slot) => {
                    return Ok(match slot.hold.state {
                        HoldState::Cancelled => CancelOutcome::Cancelled,
                        HoldState::Committed => CancelOutcome::Shipped,
                        _ => CancelOutcome::Rejected,
                    });
                }
            }
        };
        write.await?;
        Ok(CancelOutcome::Cancelled)
    }

    async fn refuse(&self, order: OrderId) -> Result<bool, StoreError> {
        let write = {
            let mut state = self.state.lock();
            state.usable()?;
            self.load_evicted(&mut state, order)?;
            match state.holds.get(&order) {
                None => self.mark_unreserved(&mut state, order, HoldState::Refused),
                Some(slot) if slot.durable < slot.version => return Err(not_yet_durable()),
                Some(slot) => return Ok(slot.hold.state != HoldState::Cancelled),
            }
        };
        write.await?;
        Ok(true)
    }

    async fn cancelled(&self, order: OrderId) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        state.usable()?;
        self.load_evicted(&mut state, order)?;
        match state.holds.get(&order) {
            None => Ok(false),
            Some(slot) if slot.durable < slot.version => Err(not_yet_durable()),
            Some(slot) => Ok(slot.hold.state == HoldState::Cancelled),
        }
    }

    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OrderId>, StoreError> {
        let now_ms = now.timestamp_millis();
        let writes = {
            let mut state = self.state.lock();
            state.usable()?;
            let due: Vec<OrderId> = state
                .holds
                .iter()
                .filter(|(_, slot)| {
                    slot.hold.state == HoldState::Held
                        && !slot.hold.pinned
                        && slot.hold.expires_at_ms <= now_ms
                })
                .map(|(id, _)| *id)
                .take(limit)
                .collect();
            let mut writes = Vec::with_capacity(due.len());
            for order in due {
                if let Settle::Write(write) =
                    self.settle_in(&mut state, order, HoldState::Expired)?
                {
                    writes.push(write);
                }
            }
            writes
        };
        for write in writes {
            write.await?;
        }
        let state = self.state.lock();
        let mut expired: Vec<OrderId> = state
            .holds
            .iter()
            .filter(|(_, slot)| {
                slot.hold.state == HoldState::Expired
                    && !slot.hold.announced
                    && slot.durable >= slot.version
            })
            .map(|(id, _)| *id)
            .collect();
        // A sample, like Redis's SRANDMEMBER: orders the sweeper cannot announce yet must not
        // keep the ones behind them from being announced.
        fastrand::shuffle(&mut expired);
        expired.truncate(limit);
        Ok(expired)
    }

    async fn acknowledge_expired(&self, orders: &[OrderId]) -> Result<(), StoreError> {
        let writes: Vec<Write> = {
            let mut state = self.state.lock();
            state.usable()?;
            orders
                .iter()
                .filter(|id| {
                    state.holds.get(id).is_some_and(|slot| {
                        slot.hold.state == HoldState::Expired && !slot.hold.announced
                    })
                })
                .copied()
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|id| self.touch_hold(&mut state, id, |hold| hold.announced = true))
                .collect()
        };
        for write in writes {
            write.await?;
        }
        Ok(())
    }

    async fn level(&self, sku: &str) -> Result<Option<StockLevel>, StoreError> {
        Ok(self.state.lock().levels.get(sku).cloned())
    }

    async fn levels(&self) -> Result<Vec<StockLevel>, StoreError> {
        Ok(self.state.lock().levels.values().cloned().collect())
    }

    async fn set_available(&self, sku: &str, available: u64) -> Result<StockLevel, StoreError> {
        let (level, pending) = {
            let mut state = self.state.lock();
            state.usable()?;
            let level = state
                .levels
                .entry(sku.to_owned())
                .or_insert_with(|| StockLevel {
                    sku: sku.to_owned(),
                    initial: 0,
                    available: 0,
                    reserved: 0,
                    committed: 0,
                });
            // initial follows from the invariant, so even a damaged row heals on the next set.
            level.initial = available
                .saturating_add(level.reserved)
                .saturating_add(level.committed);
            level.available = available;
            let level = level.clone();
            (
                level.clone(),
                self.persist(Change {
                    levels: vec![level],
                    hold: None,
                    seq: state.next_seq(),
                }),
            )
        };
        pending.await?;
        Ok(level)
    }
}
