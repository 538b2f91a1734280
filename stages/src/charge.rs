//! charge: capture the payment through a [`PaymentProvider`]; a decline releases the stock and
//! rejects the order.

use crate::{OrderStage, Step};
use async_trait::async_trait;
use chrono::Utc;
use dashmap::DashMap;
use orderflow_domain::{Money, OrderEvent, OrderStatus, Payment, RejectionCode};
use orderflow_pipeline::StageError;
use orderflow_stores::StockLedger;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a provider answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeResult {
    /// Captured; the provider's payment id.
    Approved(String),
    /// Refused for good; the provider's reason.
    Declined(String),
}

/// A provider failure that may pass.
#[derive(Debug, Clone, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderError(pub String);

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
}

/// The simulated provider of the demo and the tests: `tok_visa` approves, `tok_decline`
/// declines, `tok_flaky` fails transiently twice per key and then approves; anything else is
/// declined as an invalid token.
#[derive(Default)]
pub struct SimulatedProvider {
    results: DashMap<String, ChargeResult>,
    flaky_failures: DashMap<String, u32>,
    captures: AtomicU64,
}

impl SimulatedProvider {
    /// How many payments were captured (each key counts once).
    pub fn captures(&self) -> u64 {
        self.captures.load(Ordering::Relaxed)
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
        if let Some(result) = self.results.get(idempotency_key) {
            return Ok(result.clone());
        }
        if token == "tok_flaky" {
            let mut failures = self
                .flaky_failures
                .entry(idempotency_key.to_owned())
                .or_insert(0);
            if *failures < 2 {
                *failures += 1;
                return Err(ProviderError(format!(
                    "simulated timeout ({} of 2)",
                    *failures
                )));
            }
        }
        let outcome = match token {
            "tok_visa" | "tok_flaky" => {
                ChargeResult::Approved(format!("pay_{}", idempotency_key.replace(':', "_")))
            }
            "tok_decline" => ChargeResult::Declined("card declined".into()),
            _ => ChargeResult::Declined("invalid payment token".into()),
        };
        // The entry API makes check-and-insert atomic: two concurrent repeats capture once.
        let entry = self
            .results
            .entry(idempotency_key.to_owned())
            .or_insert_with(|| {
                if matches!(outcome, ChargeResult::Approved(_)) {
                    self.captures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = idempotency_key, amount = %amount, "Payment captured");
                }
                outcome
            });
        Ok(entry.clone())
    }
}

/// Charges the order's total.
pub struct Charge {
    provider: Arc<dyn PaymentProvider>,
    ledger: Arc<dyn StockLedger>,
}

impl Charge {
    /// Charges through `provider`; releases stock in `ledger` on a decline.
    pub fn new(provider: Arc<dyn PaymentProvider>, ledger: Arc<dyn StockLedger>) -> Self {
        Self { provider, ledger }
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
        let key = format!("{}:charge", event.order.id);
        let result = self
            .provider
            .charge(&key, &event.order.payment_token, total)
            .await
            .map_err(|e| StageError::retryable(e.to_string()))?;
        match result {
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
                    .map_err(|e| StageError::retryable(e.to_string()))?;
                Ok(Step::Reject(event.reject(
                    "charge",
                    RejectionCode::PaymentDeclined,
                    reason,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orderflow_domain::Currency;

    #[tokio::test]
    async fn the_simulated_provider_follows_its_tokens_and_deduplicates() {
        let p = SimulatedProvider::default();
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
        assert_eq!(p.captures(), 2);
    }
}
