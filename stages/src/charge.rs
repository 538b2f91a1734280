//! charge: capture the payment through a [`PaymentProvider`]; a decline releases the stock and
//! rejects the order.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use dashmap::DashMap;
use orderflow_domain::{Currency, Money, OrderEvent, OrderId, OrderStatus, Payment, RejectionCode};
use orderflow_pipeline::StageError;
use orderflow_stores::{
    CouponLedger, PaymentJournal, PinOutcome, RefundLedger, StockLedger, StoreError,
};
use std::sync::Arc;

/// What a provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeResult {
    /// Captured; the provider's payment id.
    Approved(String),
    /// Refused for good; the provider's reason.
    Declined(String),
}

/// What a provider answered to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundResult {
    /// Paid back.
    Refunded,
    /// Refused for good; the provider's reason.
    Declined(String),
}

/// A provider failure that may pass.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider did not answer or failed; the charge may be retried.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider's journal (its record of every key's outcome) failed.
    #[error("payment provider unavailable: its journal failed: {0}")]
    Journal(#[from] StoreError),
}

/// A payment service provider. Like real ones, it deduplicates by idempotency key: a repeat
/// with the same key returns the first result and never captures twice.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Captures `amount` with `token`, once per `idempotency_key`.
    async fn charge(
        &self,
        idempotency_key: &str,
        token: &str,
        amount: Money,
    ) -> Result<ChargeResult, ProviderError>;

    /// The payment id of what a charge under `idempotency_key` captured, if it captured: a
    /// read, never a capture.
    async fn captured(&self, idempotency_key: &str) -> Result<Option<String>, ProviderError>;

    /// Pays `amount` of `order`'s capture `payment_id` back, once per `refund_id`: a repeat
    /// returns the first result.
    async fn refund(
        &self,
        order: OrderId,
        refund_id: &str,
        payment_id: &str,
        amount: Money,
    ) -> Result<RefundResult, ProviderError>;
}

/// The simulated provider of the demo and the tests: `tok_visa` approves, `tok_decline`
/// declines, `tok_flaky` fails transiently twice (per key, per process) and then approves,
/// `tok_norefund` approves; anything else is declined as an invalid token. Refunds are paid,
/// except that a `tok_flaky` payment's refund fails transiently three times (per refund, per
/// process) first and a `tok_norefund` payment's refunds are refused for good; a payment id
/// names its card (`pay_…_flaky`), as sandbox payment ids do. Its outcomes are kept in a
/// durable [`PaymentJournal`] (charges under `{order}:charge`, refunds under
/// `{order}:refund:{refund_id}`), so like a real provider it never captures one key or pays one
/// refund twice, across crashes and restarts too.
pub struct SimulatedProvider {
    journal: Arc<dyn PaymentJournal>,
    flaky_failures: DashMap<String, u32>,
}

impl SimulatedProvider {
    /// A provider that remembers its outcomes in `journal`.
    pub fn new(journal: Arc<dyn PaymentJournal>) -> Self {
        Self {
            journal,
            flaky_failures: DashMap::new(),
        }
    }

    /// Every capture made: `(idempotency key, amount)`.
    pub async fn captures(&self) -> Result<Vec<(String, Money)>, ProviderError> {
        let entries = self.journal.entries().await?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, outcome)| match decode(&outcome) {
                Some((ChargeResult::Approved(_), Some(amount))) => Some((key, amount)),
                _ => None,
            })
            .collect())
    }

    /// Every refund paid: `(order, refund id, amount)`.
    pub async fn refunds(&self) -> Result<Vec<(OrderId, String, Money)>, ProviderError> {
        let entries = self.journal.entries().await?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, outcome)| {
                let (order, refund_id) = key.split_once(REFUND_KEY)?;
                let amount = refunded_amount(&outcome)?;
                Some((order.parse().ok()?, refund_id.to_owned(), amount))
            })
            .collect())
    }
}

/// Between the order and the refund id in a refund's journal key.
const REFUND_KEY: &str = ":refund:";

/// Times a `tok_flaky` payment's refund fails before it is paid.
const FLAKY_REFUND_FAILURES: u32 = 3;

/// The amount of a journal text `refunded|MINOR|CURRENCY`.
fn refunded_amount(text: &str) -> Option<Money> {
    let mut parts = text.splitn(3, '|');
    (parts.next()? == "refunded").then_some(())?;
    let minor = parts.next()?.parse().ok()?;
    Some(Money::new(minor, Currency::parse(parts.next()?).ok()?))
}

/// Journal text of an outcome: `approved|PAYMENT_ID|MINOR|CURRENCY` or `declined|REASON`.
fn encode(result: &ChargeResult, amount: Money) -> String {
    match result {
        ChargeResult::Approved(id) => format!("approved|{id}|{}|{}", amount.minor, amount.currency),
        ChargeResult::Declined(reason) => format!("declined|{reason}"),
    }
}

fn decode(text: &str) -> Option<(ChargeResult, Option<Money>)> {
    let mut parts = text.splitn(4, '|');
    match parts.next()? {
        "approved" => {
            let id = parts.next()?.to_owned();
            let minor = parts.next()?.parse().ok()?;
            let currency = Currency::parse(parts.next()?).ok()?;
            Some((
                ChargeResult::Approved(id),
                Some(Money::new(minor, currency)),
            ))
        }
        "declined" => Some((
            ChargeResult::Declined(parts.next().unwrap_or("declined").to_owned()),
            None,
        )),
        _ => None,
    }
}

#[async_trait]
impl PaymentProvider for SimulatedProvider {
    async fn charge(
        &self,
        idempotency_key: &str,
        token: &str,
        amount: Money,
    ) -> Result<ChargeResult, ProviderError> {
        if token == "tok_flaky" {
            let mut failures = self
                .flaky_failures
                .entry(idempotency_key.to_owned())
                .or_insert(0);
            if *failures < 2 {
                *failures += 1;
                return Err(ProviderError::Unavailable(format!(
                    "simulated timeout ({} of 2)",
                    *failures
                )));
            }
        }
        let payment_id = format!("pay_{}", idempotency_key.replace(':', "_"));
        let outcome = match token {
            "tok_visa" => ChargeResult::Approved(payment_id),
            "tok_flaky" => ChargeResult::Approved(format!("{payment_id}_flaky")),
            "tok_norefund" => ChargeResult::Approved(format!("{payment_id}_norefund")),
            "tok_decline" => ChargeResult::Declined("card declined".into()),
            _ => ChargeResult::Declined("invalid payment token".into()),
        };
        // The journal keeps the first outcome per key: a repeat gets it back, never a new capture.
        let standing = self
            .journal
            .record_once(idempotency_key, &encode(&outcome, amount))
            .await?;
        let (result, _) = decode(&standing).ok_or_else(|| {
            ProviderError::Unavailable(format!("unreadable journal entry {standing:?}"))
        })?;
        Ok(result)
    }

    async fn captured(&self, idempotency_key: &str) -> Result<Option<String>, ProviderError> {
        let outcome = self.journal.outcome(idempotency_key).await?;
        Ok(match outcome.as_deref().and_then(decode) {
            Some((ChargeResult::Approved(payment_id), _)) => Some(payment_id),
            _ => None,
        })
    }

    async fn refund(
        &self,
        order: OrderId,
        refund_id: &str,
        payment_id: &str,
        amount: Money,
    ) -> Result<RefundResult, ProviderError> {
        let key = format!("{order}{REFUND_KEY}{refund_id}");
        if payment_id.ends_with("_flaky") {
            let mut failures = self.flaky_failures.entry(key.clone()).or_insert(0);
            if *failures < FLAKY_REFUND_FAILURES {
                *failures += 1;
                return Err(ProviderError::Unavailable(format!(
                    "simulated refund timeout ({} of {FLAKY_REFUND_FAILURES})",
                    *failures
                )));
            }
        }
        let outcome = if payment_id.ends_with("_norefund") {
            "declined|the card's account is closed".to_owned()
        } else {
            format!("refunded|{}|{}", amount.minor, amount.currency)
        };
        let standing = self.journal.record_once(&key, &outcome).await?;
        match standing.split_once('|') {
            Some(("refunded", _)) => Ok(RefundResult::Refunded),
            Some(("declined", reason)) => Ok(RefundResult::Declined(reason.to_owned())),
            _ => Err(ProviderError::Unavailable(format!(
                "unreadable journal entry {standing:?}"
            ))),
        }
    }
}

/// Charges the order's total.
pub struct Charge {
    provider: Arc<dyn PaymentProvider>,
    ledger: Arc<dyn StockLedger>,
    coupons: Option<Arc<dyn CouponLedger>>,
    refunds: Option<Arc<dyn RefundLedger>>,
}

impl Charge {
    /// Charges through `provider`; releases stock in `ledger` on a decline.
    pub fn new(provider: Arc<dyn PaymentProvider>, ledger: Arc<dyn StockLedger>) -> Self {
        Self {
            provider,
            ledger,
            coupons: None,
            refunds: None,
        }
    }

    /// Counts in `refunds` the refund of a capture made before the order was cancelled.
    pub fn with_refunds(mut self, refunds: Arc<dyn RefundLedger>) -> Self {
        self.refunds = Some(refunds);
        self
    }

    /// Gives the coupon uses of an order that is not charged back (idempotent per code).
    async fn restore_coupons(&self, event: &OrderEvent) -> Result<(), StageError> {
        match &self.coupons {
            Some(coupons) => crate::price::restore_coupons(coupons.as_ref(), event).await,
            None => Ok(()),
        }
    }

    /// Gives the coupon uses of orders that are not charged (declined, lapsed) back in `coupons`.
    pub fn with_coupons(mut self, coupons: Arc<dyn CouponLedger>) -> Self {
        self.coupons = Some(coupons);
        self
    }
}

#[async_trait]
impl OrderStage for Charge {
    async fn handle(&self, mut event: OrderEvent, _attempt: u32) -> Result<Step, StageError> {
        let Some(total) = event.order.pricing.as_ref().map(|p| p.total) else {
            return Err(StageError::permanent(
                "order reached charge without a price",
            ));
        };
        // A charged order must keep its stock: pin the hold first, so the expiry sweeper cannot
        // take it back from under a payment. A hold that is gone is never charged against.
        let pinned = self
            .ledger
            .pin(event.order.id)
            .await
            .map_err(crate::order_stage::store_error)?;
        match pinned {
            PinOutcome::Pinned => {}
            PinOutcome::Expired => {
                self.restore_coupons(&event).await?;
                return Ok(Step::Reject(event.reject(
                    "charge",
                    RejectionCode::ReservationExpired,
                    "the stock hold lapsed before payment; nothing was charged",
                )));
            }
            // A redelivery after a decline: the provider answers the same key with its first
            // outcome (the decline), never a new capture.
            PinOutcome::Released => {}
            PinOutcome::Missing => {
                // Nothing was ever held, or it was released before any charge was decided:
                // charging now could sell stock nobody holds.
                self.restore_coupons(&event).await?;
                return crate::order_stage::refuse_unless_cancelled(
                    self.ledger.as_ref(),
                    event,
                    "charge",
                    RejectionCode::ReservationExpired,
                    "no stock is held for this order; nothing was charged",
                )
                .await;
            }
            // Cancelled: its stock is back already. A try before the cancel may have captured
            // (and died before passing the order on, or the provider timed out after taking
            // it): the provider is asked, never charged, and what it took is refunded.
            PinOutcome::Cancelled => {
                self.restore_coupons(&event).await?;
                let key = format!("{}:charge", event.order.id);
                let captured = self
                    .provider
                    .captured(&key)
                    .await
                    .map_err(|e| StageError::retryable(e.to_string()))?;
                if let Some(payment_id) = captured {
                    event.order.payment = Some(Payment {
                        payment_id,
                        amount: total,
                        captured_at: Utc::now(),
                    });
                }
                return crate::cancel::cancelled(self.refunds.as_deref(), event, "charge").await;
            }
        }
        let key = format!("{}:charge", event.order.id);
        let result = self
            .provider
            .charge(&key, &event.order.payment_token, total)
            .await
            .map_err(|e| StageError::retryable(e.to_string()))?;
        match result {
            ChargeResult::Approved(_) if pinned == PinOutcome::Released => {
                Err(StageError::permanent(format!(
                    "order {}: the provider approved a charge whose stock hold was released",
                    event.order.id
                )))
            }
            ChargeResult::Approved(payment_id) => {
                event.order.payment = Some(Payment {
                    payment_id,
                    amount: total,
                    captured_at: Utc::now(),
                });
                Ok(Step::Advance(event.advance(OrderStatus::Charged)))
            }
            ChargeResult::Declined(reason) => {
                self.ledger
                    .release(event.order.id)
                    .await
                    .map_err(crate::order_stage::store_error)?;
                self.restore_coupons(&event).await?;
                crate::order_stage::reject_unless_cancelled(
                    self.ledger.as_ref(),
                    event,
                    "charge",
                    RejectionCode::PaymentDeclined,
                    reason,
                )
                .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_storage::kv::Engine;
    use orderflow_stores::embedded::EmbeddedPaymentJournal;

    #[tokio::test]
    async fn the_simulated_provider_follows_its_tokens_and_never_captures_a_key_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path()).expect("engine");
        let p = SimulatedProvider::new(Arc::new(EmbeddedPaymentJournal::new(engine.clone())));
        let usd = Money::new(100, Currency::parse("USD").expect("valid"));
        assert!(matches!(
            p.charge("o1:charge", "tok_visa", usd).await,
            Ok(ChargeResult::Approved(_))
        ));
        assert!(matches!(
            p.charge("o1:charge", "tok_visa", usd).await,
            Ok(ChargeResult::Approved(_))
        ));
        assert!(matches!(
            p.charge("o2:charge", "tok_decline", usd).await,
            Ok(ChargeResult::Declined(_))
        ));
        assert!(p.charge("o3:charge", "tok_flaky", usd).await.is_err());
        assert!(p.charge("o3:charge", "tok_flaky", usd).await.is_err());
        assert!(matches!(
            p.charge("o3:charge", "tok_flaky", usd).await,
            Ok(ChargeResult::Approved(_))
        ));
        assert!(matches!(
            p.charge("o4:charge", "tok_bogus", usd).await,
            Ok(ChargeResult::Declined(_))
        ));
        let captures = p.captures().await.expect("captures");
        assert_eq!(captures.len(), 2);
        assert!(captures.iter().all(|(_, amount)| *amount == usd));

        // A provider process that restarts keeps its memory: the first outcome stands.
        let again = SimulatedProvider::new(Arc::new(EmbeddedPaymentJournal::new(engine)));
        assert!(matches!(
            again.charge("o2:charge", "tok_visa", usd).await,
            Ok(ChargeResult::Declined(_))
        ));
        assert_eq!(again.captures().await.expect("captures").len(), 2);
    }
}
