//! The log's operations: topics, appends, consumer groups and reads.

use super::consumer::{Assigned, SegmentConsumer};
use super::writer::{Commit, Request};
use super::{SegmentError, SegmentLog};
use crate::record::{Message, Position, Record};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::Notify;

/// The operations of a log: topics, appends, consumer groups, reads.
impl SegmentLog {
    /// Creates the topics that do not exist yet; refuses a partition count other than the
    /// one the directory was created with.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), SegmentError> {
        let names = topics.to_vec();
        let partitions = self.inner.partitions;
        let mismatched = self
            .request(|reply| Request::Topics {
                names,
                partitions,
                reply,
            })
            .await?;
        if mismatched.is_empty() {
            Ok(())
        } else {
            // Repartitioning would move keys between partitions and break per-order ordering.
            Err(SegmentError::Invalid(format!(
                "the data directory was created with another partition count ({}); configured {partitions}",
                mismatched.join(", ")
            )))
        }
    }

    /// Appends messages; resolves once every one is durable, with their positions in order.
    pub async fn append(&self, messages: Vec<Message>) -> Result<Vec<Position>, SegmentError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.route(messages)?;
        self.request(|reply| Request::Append {
            records,
            commits: Vec::new(),
            reply,
        })
        .await
    }

    /// Joins consumer group `group` on `topics`, from the group's committed offsets.
    pub async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<SegmentConsumer, SegmentError> {
        let group: Arc<str> = Arc::from(group);
        let assigned: Vec<Assigned> = {
            let state = self.inner.state.read();
            let mut assigned = Vec::new();
            for topic in topics {
                let id = state
                    .by_name
                    .get(topic.as_str())
                    .ok_or_else(|| SegmentError::Invalid(format!("unknown topic {topic}")))?;
                let t = &state.topics[usize::from(*id)];
                for partition in 0..t.partitions {
                    let pidx = t.first + partition as usize;
                    let committed = state
                        .committed
                        .get(&(Arc::clone(&group), pidx))
                        .copied()
                        .unwrap_or(0);
                    assigned.push(Assigned {
                        pidx,
                        topic: Arc::clone(&t.name),
                        partition,
                        next: committed,
                        committed,
                    });
                }
            }
            assigned
        };
        // Record the group's position on every partition it reads, so retention keeps what this
        // group has not committed yet, even on partitions it has not committed on at all.
        let commits = assigned
            .iter()
            .map(|a| Commit {
                group: Arc::clone(&group),
                pidx: a.pidx,
                next: a.committed,
                if_absent: true,
            })
            .collect();
        self.request(|reply| Request::Append {
            records: Vec::new(),
            commits,
            reply,
        })
        .await?;
        let wake = Arc::new(Notify::new());
        {
            let mut state = self.inner.state.write();
            let mut ids: Vec<u16> = assigned.iter().map(|a| state.parts[a.pidx].topic).collect();
            // One entry per topic, not per partition: a wake-up per commit is enough.
            ids.sort_unstable();
            ids.dedup();
            state.subscribe(&ids, &wake);
        }
        Ok(SegmentConsumer {
            log: self.clone(),
            group,
            assigned,
            cursor: 0,
            wake,
        })
    }

    /// Reads up to `max` records of `topic` from the start of each partition, outside any group.
    pub async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, SegmentError> {
        let pidxs: Vec<usize> = {
            let state = self.inner.state.read();
            match state.by_name.get(topic) {
                Some(id) => {
                    let t = &state.topics[usize::from(*id)];
                    (t.first..t.first + t.partitions as usize).collect()
                }
                None => return Err(SegmentError::Invalid(format!("unknown topic {topic}"))),
            }
        };
        let mut out = Vec::new();
        for pidx in pidxs {
            let mut from = 0;
            loop {
                let wanted = max.saturating_sub(out.len());
                if wanted == 0 {
                    return Ok(out);
                }
                let before = out.len();
                let next = self.fetch_partition(pidx, from, wanted.min(4096), &mut out)?;
                if next == from && out.len() == before {
                    break;
                }
                from = next;
            }
        }
        Ok(out)
    }

    /// Whether the log can take appends now.
    pub async fn ready(&self) -> Result<(), SegmentError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(SegmentError::Unavailable(
                "the embedded log is closed".into(),
            ));
        }
        if let Some(failure) = &self.inner.state.read().failed {
            return Err(SegmentError::Unavailable(failure.clone()));
        }
        if self.inner.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(SegmentError::Unavailable(
                "the embedded log writer is stopped".into(),
            ));
        }
        Ok(())
    }
}
