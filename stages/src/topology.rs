//! Which stage reads and writes which topic, and how each is built: the whole pipeline in one
//! table, [`STAGES`].

use crate::OnOrders;
use crate::charge::{Charge, PaymentProvider};
use crate::notify::Notify;
use crate::price::Price;
use crate::project::Project;
use crate::refund::RefundStep;
use crate::reserve::Reserve;
use crate::ship::Ship;
use crate::validate::Validate;
use orderflow_domain::{Catalog, SharedPriceBook};
use orderflow_pipeline::Stage;
use orderflow_stores::{CouponLedger, OrderStore, Outbox, RefundLedger, StatusFeed, StockLedger};
use std::sync::Arc;
use std::time::Duration;

/// Orders appended by the ingest.
pub const ACCEPTED: &str = "orders.accepted";
/// Orders that passed validation.
pub const VALIDATED: &str = "orders.validated";
/// Orders with stock held.
pub const RESERVED: &str = "orders.reserved";
/// Orders with totals.
pub const PRICED: &str = "orders.priced";
/// Orders paid for.
pub const CHARGED: &str = "orders.charged";
/// Orders handed to the carrier.
pub const SHIPPED: &str = "orders.shipped";
/// Orders done.
pub const COMPLETED: &str = "orders.completed";
/// Orders refused, from any stage (terminal).
pub const REJECTED: &str = "orders.rejected";
/// Terminal: orders cancelled at the customer's request.
pub const CANCELLED: &str = "orders.cancelled";
/// Written by the API when a cancel is accepted; only the projector reads it (the timeline's
/// `cancel_requested`). The cancel itself travels through the stock ledger.
pub const CANCEL_REQUESTED: &str = "orders.cancel_requested";
/// Refunds to pay: an admin's (from the API) or a cancellation's (from the stage that ended it).
pub const REFUNDS_REQUESTED: &str = "refunds.requested";
/// Refunds paid or refused, for the projector.
pub const REFUNDS_COMPLETED: &str = "refunds.completed";
/// The topics whose events end an order.
pub const TERMINAL: [&str; 3] = [COMPLETED, REJECTED, CANCELLED];
/// The refund step's name and consumer group.
pub const REFUND: &str = "refund";

/// One order stage's place in the chain: its name (also its consumer group), what it reads and
/// where it passes orders on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Stage name.
    pub stage: &'static str,
    /// Input topic.
    pub input: &'static str,
    /// Output topic for orders it passes on.
    pub output: &'static str,
}

/// The projector's name (and consumer group).
pub const PROJECTOR: &str = "project";

/// Every topic the projector follows: each status has one.
pub const PROJECTOR_INPUTS: [&str; 12] = [
    ACCEPTED,
    VALIDATED,
    RESERVED,
    PRICED,
    CHARGED,
    SHIPPED,
    COMPLETED,
    REJECTED,
    CANCELLED,
    CANCEL_REQUESTED,
    REFUNDS_REQUESTED,
    REFUNDS_COMPLETED,
];

/// What the stages are built from: the backends as trait objects and the business settings.
#[derive(Clone)]
pub struct StageDeps {
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// The pricing tables in force (promotions, tax, shipping), swapped on reload.
    pub prices: SharedPriceBook,
    /// Stock levels and holds.
    pub ledger: Arc<dyn StockLedger>,
    /// Coupon-use counters.
    pub coupons: Arc<dyn CouponLedger>,
    /// Refunds counted against captures.
    pub refunds: Arc<dyn RefundLedger>,
    /// The payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// Messages to deliver (notify's emails, the projector's webhooks).
    pub outbox: Arc<dyn Outbox>,
    /// The webhook endpoints the projector writes messages for (may be empty).
    pub webhooks: crate::deliver::Endpoints,
    /// Order views (the projector writes them).
    pub orders: Arc<dyn OrderStore>,
    /// Live status changes (the projector publishes them).
    pub feed: Arc<dyn StatusFeed>,
    /// Currencies the store sells in.
    pub currencies: Vec<String>,
    /// Countries the store ships to.
    pub countries: Vec<String>,
    /// How long stock is held before the order must be charged.
    pub reservation_ttl: Duration,
}

/// One entry of the stage table: a name, its topics and how it is built.
#[derive(Clone, Copy)]
pub struct StageSpec {
    /// The stage's name (also its consumer group): what `orderflow stage NAME` takes.
    pub name: &'static str,
    /// Topics it consumes.
    pub inputs: &'static [&'static str],
    /// Where an order stage passes orders on; `None` for the projector, which emits nothing.
    pub output: Option<&'static str>,
    build: fn(Route, &StageDeps) -> Arc<dyn Stage>,
}

impl StageSpec {
    /// The stage, built from `deps`.
    pub fn build(&self, deps: &StageDeps) -> Arc<dyn Stage> {
        let route = Route {
            stage: self.name,
            input: self.inputs[0],
            output: self.output.unwrap_or(self.inputs[0]),
        };
        (self.build)(route, deps)
    }

    /// The input topics as owned names, as the runner takes them.
    pub fn input_topics(&self) -> Vec<String> {
        self.inputs.iter().map(|t| (*t).to_owned()).collect()
    }
}

impl std::fmt::Debug for StageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSpec")
            .field("name", &self.name)
            .field("inputs", &self.inputs)
            .field("output", &self.output)
            .finish()
    }
}

/// Every stage, in pipeline order, the projector last: the one list of stage names.
pub const STAGES: [StageSpec; 8] = [
    StageSpec {
        name: "validate",
        inputs: &[ACCEPTED],
        output: Some(VALIDATED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                Validate::new(d.catalog.clone(), &d.currencies, &d.countries)
                    .with_promotions(d.prices.clone())
                    .with_ledger(d.ledger.clone()),
            ))
        },
    },
    StageSpec {
        name: "reserve",
        inputs: &[VALIDATED],
        output: Some(RESERVED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                Reserve::new(d.ledger.clone(), d.reservation_ttl),
            ))
        },
    },
    StageSpec {
        name: "price",
        inputs: &[RESERVED],
        output: Some(PRICED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                Price::new(d.prices.clone(), d.ledger.clone()).with_coupons(d.coupons.clone()),
            ))
        },
    },
    StageSpec {
        name: "charge",
        inputs: &[PRICED],
        output: Some(CHARGED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                Charge::new(d.provider.clone(), d.ledger.clone())
                    .with_coupons(d.coupons.clone())
                    .with_refunds(d.refunds.clone()),
            ))
        },
    },
    StageSpec {
        name: "ship",
        inputs: &[CHARGED],
        output: Some(SHIPPED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                Ship::new(d.ledger.clone(), "SimPost")
                    .with_compensation(d.coupons.clone(), d.refunds.clone()),
            ))
        },
    },
    StageSpec {
        name: "notify",
        inputs: &[SHIPPED],
        output: Some(COMPLETED),
        build: |route, d| Arc::new(OnOrders::new(route, Notify::new(d.outbox.clone()))),
    },
    StageSpec {
        name: REFUND,
        inputs: &[REFUNDS_REQUESTED],
        output: Some(REFUNDS_COMPLETED),
        build: |route, d| {
            Arc::new(OnOrders::new(
                route,
                RefundStep::new(d.provider.clone(), d.refunds.clone()),
            ))
        },
    },
    StageSpec {
        name: PROJECTOR,
        inputs: &PROJECTOR_INPUTS,
        output: None,
        build: |_, d| {
            Arc::new(
                Project::new(d.orders.clone(), d.feed.clone())
                    .with_webhooks(d.outbox.clone(), d.webhooks.clone()),
            )
        },
    },
];

/// A stage of the table by name.
pub fn stage(name: &str) -> Option<&'static StageSpec> {
    STAGES.iter().find(|s| s.name == name)
}

/// The names of every stage, for messages and help.
pub fn stage_names() -> Vec<&'static str> {
    STAGES.iter().map(|s| s.name).collect()
}

/// The routes of the six order stages, in pipeline order.
pub fn routes() -> impl Iterator<Item = Route> {
    STAGES.iter().filter_map(|s| {
        s.output.map(|output| Route {
            stage: s.name,
            input: s.inputs[0],
            output,
        })
    })
}

/// The route of an order stage by name.
pub fn route(stage: &str) -> Option<Route> {
    routes().find(|r| r.stage == stage)
}

/// Every topic to create at start: the main topics and a dead-letter topic beside each.
pub fn all_topics() -> Vec<String> {
    PROJECTOR_INPUTS
        .iter()
        .flat_map(|t| [(*t).to_owned(), orderflow_pipeline::dlq_topic(t)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_chain_from_accepted_to_completed() {
        let routes: Vec<Route> = routes().filter(|r| r.stage != REFUND).collect();
        assert_eq!(routes.len(), 6);
        assert_eq!(routes[0].input, ACCEPTED);
        for pair in routes.windows(2) {
            assert_eq!(
                pair[0].output, pair[1].input,
                "{} feeds {}",
                pair[0].stage, pair[1].stage
            );
        }
        assert_eq!(routes[5].output, COMPLETED);
        assert_eq!(stage(PROJECTOR).map(|s| s.inputs.len()), Some(12));
        assert_eq!(route(REFUND).map(|r| r.output), Some(REFUNDS_COMPLETED));
        assert_eq!(stage_names().len(), STAGES.len());
        assert!(stage("nope").is_none());
        assert_eq!(route("charge").map(|r| r.input), Some(PRICED));
        assert_eq!(all_topics().len(), 24);
    }
}
