//! The [`StockLedger`] trait: stock levels and per-order reservations.

use crate::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
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
    /// Nothing is held: the order was cancelled (before or after a first reservation).
    Cancelled,
}

/// What pinning an order's hold found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PinOutcome {
    /// The stock is held (or already committed) and can no longer expire.
    Pinned,
    /// The hold lapsed and its stock went back on the shelf; the order must not be charged.
    Expired,
    /// The hold was pinned, then released: a charge was decided (declined) before, and a repeat
    /// must get that decision again from the provider, never a new capture.
    Released,
    /// There is no hold to pin: none was made, it was refused, or it was released.
    Missing,
    /// The order was cancelled: its stock is back on the shelf and it must not be charged.
    Cancelled,
}

/// What a cancel request found. The ledger decides between a cancel and the ship step (or a
/// rejection): whichever reaches it first stands, so an order is never both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelOutcome {
    /// The order is cancelled (by this call or an earlier one); any held stock is back on the
    /// shelf and every later step finds the order cancelled.
    Cancelled,
    /// Too late: the order's stock was committed to its shipment.
    Shipped,
    /// Too late: the order was refused (short of stock, declined, lapsed, invalid).
    Rejected,
}

/// Units of one SKU an order asks to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuQuantity {
    /// The SKU.
    pub sku: String,
    /// Units wanted.
    pub quantity: u32,
}

impl SkuQuantity {
    /// `quantity` units of `sku`.
    pub fn new(sku: impl Into<String>, quantity: u32) -> Self {
        Self {
            sku: sku.into(),
            quantity,
        }
    }
}

/// A SKU's starting stock, seeded once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuStock {
    /// The SKU.
    pub sku: String,
    /// Units on the shelf at the start.
    pub stock: u64,
}

impl SkuStock {
    /// `stock` units of `sku`.
    pub fn new(sku: impl Into<String>, stock: u64) -> Self {
        Self {
            sku: sku.into(),
            stock,
        }
    }
}

/// An order's lines as units per SKU, sorted by SKU: lines of one SKU are summed. Every ledger
/// reserves from this, so all backends agree on what an order asks for.
pub fn units_per_sku(lines: &[SkuQuantity]) -> std::collections::BTreeMap<&str, u64> {
    let mut wanted = std::collections::BTreeMap::new();
    for line in lines {
        *wanted.entry(line.sku.as_str()).or_default() += u64::from(line.quantity);
    }
    wanted
}

/// Stock levels and reservations. Every operation is atomic and idempotent per order id.
#[async_trait]
pub trait StockLedger: Send + Sync + 'static {
    /// Creates the SKUs that do not exist yet with `available = initial = stock`; returns how
    /// many were created. Existing SKUs keep their levels (a restart never resets stock).
    async fn seed(&self, items: &[SkuStock]) -> Result<usize, StoreError>;

    /// Holds every line of `order`, all or nothing. Lines of one SKU are summed. A repeat for
    /// the same order returns the first answer and changes nothing.
    async fn reserve(
        &self,
        order: OrderId,
        lines: &[SkuQuantity],
        ttl: Duration,
    ) -> Result<ReserveOutcome, StoreError>;

    /// Returns held stock to `available` (compensation). True if the order's stock is released
    /// (now or before, by this call, by expiry or by a cancel); false if there is no hold or it
    /// was committed.
    async fn release(&self, order: OrderId) -> Result<bool, StoreError>;

    /// Moves held stock to `committed` (at ship). True if the order's stock is committed (now
    /// or before); false if there is no hold or it was released.
    async fn commit(&self, order: OrderId) -> Result<bool, StoreError>;

    /// Exempts a held order from expiry, just before it is charged: a charged order must keep
    /// its stock. Idempotent: a repeat, or a pin after the commit, answers `Pinned` again.
    async fn pin(&self, order: OrderId) -> Result<PinOutcome, StoreError>;

    /// Cancels the order unless it shipped or was refused first, releasing any held stock; a
    /// repeat answers the same. An order not reserved yet is marked, so its reservation is
    /// refused ([`ReserveOutcome::Cancelled`]).
    async fn cancel(&self, order: OrderId) -> Result<CancelOutcome, StoreError>;

    /// Records that an order with no hold is refused (a stage rejects it before reserving), so a
    /// later cancel answers [`CancelOutcome::Rejected`]. False if it was cancelled first: the
    /// order must then end cancelled, not rejected.
    async fn refuse(&self, order: OrderId) -> Result<bool, StoreError>;

    /// Whether the order was cancelled.
    async fn cancelled(&self, order: OrderId) -> Result<bool, StoreError>;

    /// Releases up to `limit` holds that expired by `now` and are neither pinned nor settled,
    /// marking them expired; then returns up to `limit` expired orders whose expiry has not
    /// been acknowledged yet (these and earlier ones), so a crash between the two never loses one.
    async fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OrderId>, StoreError>;

    /// Records that the expiry of these orders was announced (their rejection is on the log),
    /// so [`expire_due`](Self::expire_due) stops returning them.
    async fn acknowledge_expired(&self, orders: &[OrderId]) -> Result<(), StoreError>;

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
