//! The pipeline's backlog as the API sees it: checkouts accepted that the order stages have not
//! all processed yet, or that the projector has not shown yet, read from the log's consumer
//! positions every `limits.backlog_check_ms`. Over `limits.max_backlog` new checkouts are
//! refused 503 (`ingest::limits`).

use crate::backends::Backends;
use crate::config::Config;
use crate::supervisor::Chore;
use orderflow_ingest::limits::Backlog;
use orderflow_pipeline::{Log, LogError};
use orderflow_stages::topology::{ACCEPTED, PROJECTOR, REFUND, STAGES};
use std::sync::Arc;
use std::time::Duration;

/// Keeps `backlog` at [`pipeline_backlog`] and publishes it as `orderflow_ingest_backlog`. A
/// reading that fails leaves the last one in place: appends fail on their own when the log is
/// away.
pub fn reader(config: &Config, b: &Backends, backlog: Arc<Backlog>) -> Chore {
    let log = b.log.clone();
    let every = Duration::from_millis(config.limits.backlog_check_ms);
    Chore::new("backlog-reader", every, move || {
        let (log, backlog) = (log.clone(), backlog.clone());
        async move {
            match pipeline_backlog(log.as_ref()).await {
                Ok(records) => {
                    backlog.set(records);
                    metrics::gauge!("orderflow_ingest_backlog").set(records as f64);
                }
                Err(e) => tracing::warn!(error = %e, "Cannot read the pipeline's backlog"),
            }
            Ok(())
        }
    })
}

/// Orders the pipeline is behind on: the records waiting for an order stage, summed over the
/// six stages and their input topics, or the orders whose acceptance the projector has not
/// read yet, whichever is more. An order waits in one stage's input at a time, so the sum
/// counts the orders between the API and the last stage. The first stage alone is not enough:
/// it is the cheapest, and a slower stage behind it lets orders pile up where its lag never
/// shows them. Nor are the stages: the projector reads every status of every order (seven
/// records an order) and, when it is the slowest (with `--redis` it is the first to fall
/// behind, BENCHMARKS.md), orders pile up unseen by customers while every stage keeps up.
pub async fn pipeline_backlog(log: &dyn Log) -> Result<u64, LogError> {
    let mut total = 0;
    // Refunds are not orders on their way: they never hold a checkout back.
    for spec in STAGES
        .iter()
        .filter(|s| s.name != PROJECTOR && s.name != REFUND)
    {
        for topic in spec.input_topics() {
            total += log.backlog(spec.name, &topic).await?;
        }
    }
    // It reads its inputs side by side, so its lag on the first is its lag in orders.
    let unseen = log.backlog(PROJECTOR, ACCEPTED).await?;
    Ok(total.max(unseen))
}
