//! Retention and lag: how far each partition reaches, what every group has committed, and
//! forgetting what is old and read by all.

use super::writer::Request;
use super::{SegmentError, SegmentLog};
use crate::record::{Offsets, TopicPartition};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A consumer group's place on one partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupPartition {
    /// The consumer group.
    pub group: String,
    /// The partition it reads.
    pub partition: TopicPartition,
}

/// Retention and lag.
impl SegmentLog {
    /// How many records each partition still keeps (retention has not forgotten them yet).
    pub fn kept_records(&self) -> Offsets {
        let state = self.inner.state.read();
        state
            .parts
            .iter()
            .enumerate()
            .map(|(pidx, p)| {
                (
                    TopicPartition::new(state.topic_name(pidx).to_string(), p.partition),
                    p.kept() as u64,
                )
            })
            .collect()
    }

    /// Where every partition of every topic ends now (its next offset).
    pub fn end_offsets(&self) -> Result<Offsets, SegmentError> {
        let state = self.inner.state.read();
        Ok(state
            .parts
            .iter()
            .enumerate()
            .map(|(pidx, p)| {
                (
                    TopicPartition::new(state.topic_name(pidx).to_string(), p.partition),
                    p.end(),
                )
            })
            .collect())
    }

    /// Every group's committed position: group and partition → next offset.
    fn committed(&self) -> BTreeMap<GroupPartition, u64> {
        let state = self.inner.state.read();
        state
            .committed
            .iter()
            .map(|((group, pidx), next)| {
                (
                    GroupPartition {
                        group: group.to_string(),
                        partition: TopicPartition::new(
                            state.topic_name(*pidx).to_string(),
                            state.parts[*pidx].partition,
                        ),
                    },
                    *next,
                )
            })
            .collect()
    }

    /// How far each consumer group is behind the end of each partition it reads:
    /// group and partition → records not yet committed.
    pub fn lag(&self) -> Result<BTreeMap<GroupPartition, u64>, SegmentError> {
        let ends = self.end_offsets()?;
        Ok(self
            .committed()
            .into_iter()
            .map(|(at, next)| {
                let end = ends.get(&at.partition).copied().unwrap_or_default();
                (at, end.saturating_sub(next))
            })
            .collect())
    }

    /// Publishes [`SegmentLog::lag`] as `orderflow_stage_consumer_lag{stage,topic,partition}`
    /// (the Kafka adapter reports the same gauge from librdkafka's statistics), with the
    /// segment count and the cache's size; the supervisor calls it every few seconds.
    /// Returns the lag it published (empty if it could not be read), for gauges built on it.
    pub fn record_lag(&self) -> BTreeMap<GroupPartition, u64> {
        let lag = self.lag().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Cannot read consumer lag");
            BTreeMap::new()
        });
        for (at, behind) in &lag {
            metrics::gauge!(
                "orderflow_stage_consumer_lag",
                "stage" => at.group.clone(),
                "topic" => at.partition.topic.clone(),
                "partition" => at.partition.partition.to_string()
            )
            .set(*behind as f64);
        }
        let state = self.inner.state.read();
        metrics::gauge!("orderflow_log_segments").set(state.segments.len() as f64);
        metrics::gauge!("orderflow_log_cache_bytes").set(state.cache_bytes as f64);
        let index: usize = state.parts.iter().map(|p| p.index_bytes()).sum();
        metrics::gauge!("orderflow_log_index_bytes").set(index as f64);
        lag
    }

    /// Forgets, per partition, the records below `horizon` that every consumer group of their
    /// topic has committed past; returns how many. Topics no group reads (the dead-letter
    /// topics) keep everything until they are replayed. Segment files go once nothing in them
    /// is kept; the few records still kept in an old segment are moved forward first.
    pub async fn trim(&self, horizon: &Offsets) -> Result<u64, SegmentError> {
        let floors: Vec<(usize, u64)> = {
            let state = self.inner.state.read();
            let mut floor: HashMap<usize, u64> = HashMap::new();
            for ((_, pidx), next) in &state.committed {
                let slot = floor.entry(*pidx).or_insert(u64::MAX);
                *slot = (*slot).min(*next);
            }
            floor
                .into_iter()
                .filter_map(|(pidx, committed)| {
                    let limit = horizon.get(&TopicPartition::new(
                        state.topic_name(pidx).to_string(),
                        state.parts[pidx].partition,
                    ))?;
                    Some((pidx, committed.min(*limit)))
                })
                .collect()
        };
        self.request(|reply| Request::Trim { floors, reply }).await
    }

    /// One retention pass: notes the log's end offsets, then trims what is older than
    /// `retention` and every consumer group has committed past. The supervisor calls it every
    /// quarter of `retention` (1 s to 60 s); history is kept for at least `retention`.
    pub async fn retention_pass(&self, retention: Duration) {
        let horizon = {
            let mut marks = self.inner.marks.lock();
            match self.end_offsets() {
                Ok(ends) => marks.push_back((Instant::now(), ends)),
                Err(e) => tracing::warn!(error = %e, "Cannot read the log's end offsets"),
            }
            // The newest mark that is at least `retention` old is how far history may go.
            let mut horizon = None;
            while marks
                .front()
                .is_some_and(|(at, _)| at.elapsed() >= retention)
            {
                horizon = marks.pop_front().map(|(_, offsets)| offsets);
            }
            horizon
        };
        // Counted from the first pass on, so the series exists (at 0) before anything is old.
        let trimmed = metrics::counter!("orderflow_log_trimmed_total");
        trimmed.increment(0);
        let Some(horizon) = horizon else { return };
        let started = Instant::now();
        let outcome = self.trim(&horizon).await;
        // The whole pass, the reaper's deletions included; appends wait only for the part before
        // them (new bases and moved stragglers).
        let took = started.elapsed();
        metrics::histogram!("orderflow_log_trim_seconds").record(took);
        match outcome {
            Ok(0) => {}
            Ok(n) => {
                trimmed.increment(n);
                tracing::info!(records = n, seconds = took.as_secs_f64(), "Trimmed the log");
            }
            Err(e) => tracing::warn!(error = %e, "Cannot trim the log"),
        }
    }
}
