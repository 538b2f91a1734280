//! How a stage ends an order the customer cancelled after its capture: the refund of what is
//! left of the capture is counted (once per order, by [`CANCELLATION_KEY`]) and travels with the
//! cancellation to the refund step.

use crate::Step;
use chrono::Utc;
use orderflow_domain::{OrderEvent, Refund, RefundStatus, cancellation_refund_id};
use orderflow_pipeline::StageError;
use orderflow_stores::{RefundAnswer, RefundClaim, RefundLedger};

/// The refund ledger's key of a cancellation's refund. It holds a space, which no
/// `Idempotency-Key` of the API can (visible ASCII only), so no admin refund can take it.
pub const CANCELLATION_KEY: &str = "order cancelled";

/// Ends `event`'s order cancelled by `stage`; if it carries a capture, with a pending refund of
/// what the refunds so far left of it. Stock and promotion uses are the caller's to give back.
pub async fn cancelled(
    refunds: Option<&dyn RefundLedger>,
    mut event: OrderEvent,
    stage: &str,
) -> Result<Step, StageError> {
    let order = event.order.id;
    if let Some(payment) = &event.order.payment {
        let Some(refunds) = refunds else {
            return Err(StageError::permanent(format!(
                "order {order}: cancelled after its capture, and this stage has no refund ledger"
            )));
        };
        let claim = RefundClaim {
            key: CANCELLATION_KEY.to_owned(),
            refund_id: cancellation_refund_id(order),
            amount: None,
            reason: "cancelled".to_owned(),
            captured: payment.amount,
        };
        let answer = refunds
            .request(order, claim)
            .await
            .map_err(crate::order_stage::store_error)?;
        if let RefundAnswer::Accepted(entry) | RefundAnswer::Repeat(entry) = answer {
            event.order.refunds = vec![Refund {
                refund_id: entry.refund_id,
                amount: entry.amount,
                reason: entry.reason,
                status: RefundStatus::Pending,
                at: Utc::now(),
                detail: None,
            }];
        }
    }
    Ok(Step::Cancel(event.cancel(stage)))
}
