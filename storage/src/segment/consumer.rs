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
        let quotas = self.quotas(max);
        // Positions move only once the whole fetch succeeded: records read before a failing
        // partition are handed out again by the next poll, never skipped.
        let mut moved = Vec::with_capacity(count);
        for i in 0..count {
            let index = (self.cursor + i) % count;
            if quotas[index] == 0 {
                continue;
            }
            let a = &self.assigned[index];
            let next = self
                .log
                .fetch_partition(a.pidx, a.next, quotas[index], &mut out)?;
            moved.push((index, next));
        }
        for (index, next) in moved {
            self.assigned[index].next = next;
        }
        self.cursor = (self.cursor + 1) % count.max(1);
        Ok(out)
    }

    /// How many records to take from each assignment, `max` in all: everything waiting when it
    /// fits, otherwise shares in proportion to what waits in each. A member behind on several
    /// topics so reads them all at the same pace, each from about the same moment: one order's
    /// statuses on different topics come in the same few batches, not one topic's backlog
    /// after another's (a projector writes an order's view once for all of them then, not once
    /// a status).
    fn quotas(&self, max: usize) -> Vec<usize> {
        let waiting: Vec<usize> = {
            let state = self.log.inner.state.read();
            self.assigned
                .iter()
                .map(|a| {
                    let part = &state.parts[a.pidx];
                    usize::try_from(part.end().saturating_sub(a.next.max(part.base)))
                        .unwrap_or(usize::MAX)
                })
                .collect()
        };
        share(&waiting, max, self.cursor)
    }
}

/// Splits `max` over partitions with `waiting` records each: all of them when they fit,
/// otherwise in proportion, the rounding remainder one each from `first` on.
fn share(waiting: &[usize], max: usize, first: usize) -> Vec<usize> {
    let total: u128 = waiting.iter().map(|&w| w as u128).sum();
    if total <= max as u128 {
        return waiting.to_vec();
    }
    let mut quotas: Vec<usize> = waiting
        .iter()
        .map(|&w| usize::try_from(w as u128 * max as u128 / total).unwrap_or(max))
        .collect();
    let mut left = max.saturating_sub(quotas.iter().sum());
    let count = waiting.len();
    for i in 0..count {
        if left == 0 {
            break;
        }
        let index = (first + i) % count;
        if quotas[index] < waiting[index] {
            quotas[index] += 1;
            left -= 1;
        }
    }
    quotas
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

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_are_proportional_and_the_remainder_rotates() {
        // Everything when it fits.
        assert_eq!(share(&[3, 0, 5], 10, 0), vec![3, 0, 5]);
        // 300 : 100 : 2 of 80: floors 59, 19, 0; the two left go one each from `first` on.
        assert_eq!(share(&[300, 100, 2], 80, 0), vec![60, 20, 0]);
        assert_eq!(share(&[300, 100, 2], 80, 2), vec![60, 19, 1]);
        // Never more than waits, always `max` in all.
        for first in 0..4 {
            let quotas = share(&[1, 1, 1, 1_000_000], 512, first);
            assert_eq!(quotas.iter().sum::<usize>(), 512);
            assert!(quotas[..3].iter().all(|&q| q <= 1), "{quotas:?}");
        }
        assert_eq!(share(&[], 512, 0), Vec::<usize>::new());
    }
}
