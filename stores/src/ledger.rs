//! The [`StockLedger`] trait: stock levels and per-order reservations.

use crate::StoreError;
use async_trait::async_trait;
use orderflow_domain::OrderId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Stock of one SKU. Invariant: `initial = available + reserved + committed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units ever put on the shelf (seeded, plus admin adjustments).
    pub initial: u64,
    /// Units free to reserve.
    pub available: u64,
    /// Units held for orders not yet shipped.
    pub reserved: u64,
    /// Units shipped.
    pub committed: u64,
}

impl StockLevel {
    /// Whether the ledger invariant holds for this SKU.
    pub fn balanced(&self) -> bool {
        self.available
            .checked_add(self.reserved)
            .and_then(|s| s.checked_add(self.committed))
            == Some(self.initial)
    }
}

/// A line that could not be reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    /// The SKU.
    pub sku: String,
    /// Units asked for.
    pub requested: u64,
    /// Units available when asked (0 for an unknown SKU).
    pub available: u64,
}

/// The answer to a reservation, the same on every repeat for one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReserveOutcome {
    /// Every line is held.
    Reserved,
    /// Nothing is held; these lines were short.
    Short(Vec<Shortage>),
}

/// Stock levels and reservations. Every operation is atomic and idempotent per order id.
#[async_trait]
pub trait StockLedger: Send + Sync + 'static {
    /// Creates the SKUs that do not exist yet with `available = initial = stock`; returns how
    /// many were created. Existing SKUs keep their levels (a restart never resets stock).
    async fn seed(&self, items: &[(String, u64)]) -> Result<usize, StoreError>;

    /// Holds every line of `order`, all or nothing. Lines of one SKU are summed. A repeat for
    /// the same order returns the first answer and changes nothing.
    async fn reserve(
        &self,
        order: OrderId,
        lines: &[(String, u32)],
        ttl: Duration,
    ) -> Result<ReserveOutcome, StoreError>;

    /// Returns held stock to `available` (compensation; later also expiry). True if the order's stock is
    /// released (now or before); false if there is no hold or it was already committed.
    async fn release(&self, order: OrderId) -> Result<bool, StoreError>;

    /// Moves held stock to `committed` (at ship). True if the order's stock is committed (now
    /// or before); false if there is no hold or it was released.
    async fn commit(&self, order: OrderId) -> Result<bool, StoreError>;

    /// The level of one SKU.
    async fn level(&self, sku: &str) -> Result<Option<StockLevel>, StoreError>;

    /// Every SKU's level, sorted by SKU.
    async fn levels(&self) -> Result<Vec<StockLevel>, StoreError>;

    /// Whether the ledger can serve calls now.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Sets `available` (an admin restock or correction); `initial` moves by the same delta so
    /// the invariant holds. Creates the SKU if it has no level yet.
    async fn set_available(&self, sku: &str, available: u64) -> Result<StockLevel, StoreError>;
}
