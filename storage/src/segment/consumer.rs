//! A consumer-group member of the segment log: where it reads, what it has committed.

use super::writer::{Commit, Request};
use super::{SegmentError, SegmentLog};
use crate::record::{Message, Offsets, Record, TopicPartition};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub(super) struct Assigned {
    pub(super) pidx: usize,
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    /// Next offset to hand out.
    pub(super) next: u64,
    /// Next offset as committed; where `next` returns to after a failed `complete`.
    pub(super) committed: u64,
}

/// One member of a consumer group on the segment log.
pub struct SegmentConsumer {
    pub(super) log: SegmentLog,
    pub(super) group: Arc<str>,
    pub(super) assigned: Vec<Assigned>,
    /// Which assignment to read first next time, so no partition starves.
    pub(super) cursor: usize,
    /// Woken by the writer when one of this consumer's topics gets records.
    pub(super) wake: Arc<Notify>,
}

/// Completes a [`SegmentConsumer`]'s batches without borrowing it, so the next batch can be
/// polled and processed while one is being written.
#[derive(Clone)]
pub struct SegmentCommitter {
    log: SegmentLog,
    group: Arc<str>,
}

impl SegmentCommitter {
    /// Appends a batch's outputs and commits its offsets in one durable write. Offsets of topics
    /// this log does not have are refused, not dropped. Unlike [`SegmentConsumer::complete`], a
    /// failure hands nothing out again: the caller repeats this batch before any later one.
    pub async fn complete(
        &self,
        outputs: Vec<Message>,
        offsets: &Offsets,
    ) -> Result<(), SegmentError> {
        let records = self.log.route(outputs)?;
        let commits: Vec<Commit> = {
            let state = self.log.inner.state.read();
            offsets
                .iter()
                .map(|(at, next)| {
                    let pidx = SegmentLog::pidx(&state, &at.topic, at.partition)
                        .ok_or_else(|| SegmentError::Invalid(format!("unknown partition {at}")))?;
                    Ok(Commit {
                        group: Arc::clone(&self.group),
                        pidx,
                        next: *next,
                        if_absent: false,
                    })
                })
                .collect::<Result<_, SegmentError>>()?
        };
        self.log
            .request(|reply| Request::Append {
                records,
                commits,
                reply,
            })
            .await
            .map(|_| ())
    }
}

impl SegmentConsumer {
    /// A handle that completes this member's batches without borrowing it.
    pub fn committer(&self) -> SegmentCommitter {
        SegmentCommitter {
            log: self.log.clone(),
            group: Arc::clone(&self.group),
        }
    }

    fn fetch(&mut self, max: usize) -> Result<Vec<Record>, SegmentError> {
        let mut out = Vec::new();
        let count = self.assigned.len();
        // Positions move only once the whole fetch succeeded: records read before a failing
        // partition are handed out again by the next poll, never skipped.
        let mut moved = Vec::with_capacity(count);
        for i in 0..count {
            if out.len() >= max {
                break;
            }
            let index = (self.cursor + i) % count;
            let a = &self.assigned[index];
            let next = self
                .log
                .fetch_partition(a.pidx, a.next, max - out.len(), &mut out)?;
            moved.push((index, next));
        }
        for (index, next) in moved {
            self.assigned[index].next = next;
        }
        self.cursor = (self.cursor + 1) % count.max(1);
        Ok(out)
    }
}

/// What a consumer does: poll, complete a batch.
impl SegmentConsumer {
    /// Up to `max` records in offset order per partition, waiting at most `wait` for the first.
    pub async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, SegmentError> {
        let records = self.fetch(max)?;
        if !records.is_empty() {
            return Ok(records);
        }
        // An append after the read above left a permit, so this returns at once then.
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        self.fetch(max)
    }

    /// Appends `outputs` and commits `offsets` in one durable write; on failure nothing is
    /// committed and the records are handed out again.
    pub async fn complete(
        &mut self,
        outputs: Vec<Message>,
        offsets: Offsets,
    ) -> Result<(), SegmentError> {
        let result = self.committer().complete(outputs, &offsets).await;
        match result {
            Ok(_) => {
                for a in &mut self.assigned {
                    if let Some(next) = offsets.get(&TopicPartition::new(&*a.topic, a.partition)) {
                        a.committed = *next;
                        // After a failed attempt rewound the reader, a retry that succeeds must
                        // not hand the records it just committed out again.
                        a.next = a.next.max(a.committed);
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Hand the uncommitted records out again: nothing of this batch was written
                // (whether the write failed or the batch was refused before it).
                for a in &mut self.assigned {
                    a.next = a.committed;
                }
                Err(e)
            }
        }
    }
}
