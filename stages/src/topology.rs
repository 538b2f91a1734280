//! Which stage reads and writes which topic: the whole pipeline in one table.

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

/// One order stage: its name (also its consumer group), what it reads and where it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Stage name.
    pub stage: &'static str,
    /// Input topic.
    pub input: &'static str,
    /// Output topic for orders it passes on.
    pub output: &'static str,
}

/// The six order stages, in pipeline order.
pub const ROUTES: [Route; 6] = [
    Route {
        stage: "validate",
        input: ACCEPTED,
        output: VALIDATED,
    },
    Route {
        stage: "reserve",
        input: VALIDATED,
        output: RESERVED,
    },
    Route {
        stage: "price",
        input: RESERVED,
        output: PRICED,
    },
    Route {
        stage: "charge",
        input: PRICED,
        output: CHARGED,
    },
    Route {
        stage: "ship",
        input: CHARGED,
        output: SHIPPED,
    },
    Route {
        stage: "notify",
        input: SHIPPED,
        output: COMPLETED,
    },
];

/// The projector's name (and consumer group).
pub const PROJECTOR: &str = "project";

/// Every topic the projector follows: each status has one.
pub const PROJECTOR_INPUTS: [&str; 8] = [
    ACCEPTED, VALIDATED, RESERVED, PRICED, CHARGED, SHIPPED, COMPLETED, REJECTED,
];

/// The route of a stage by name.
pub fn route(stage: &str) -> Option<Route> {
    ROUTES.iter().copied().find(|r| r.stage == stage)
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
        assert_eq!(ROUTES[0].input, ACCEPTED);
        for pair in ROUTES.windows(2) {
            assert_eq!(
                pair[0].output, pair[1].input,
                "{} feeds {}",
                pair[0].stage, pair[1].stage
            );
        }
        assert_eq!(ROUTES[5].output, COMPLETED);
        assert_eq!(route("charge").map(|r| r.input), Some(PRICED));
        assert_eq!(all_topics().len(), 16);
    }
}
