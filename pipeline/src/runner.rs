//! The runner: consume, process, retry, dead-letter, produce and commit for one stage.

use crate::dlq::dead_letter;
use crate::log::{Log, LogError, Message, Offsets, Record, TopicPartition, header};
use crate::stage::{ErrorKind, Outcome, Stage, StageError};
use complete::{Sent, oldest};
use futures::FutureExt;
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use futures::stream::FuturesOrdered;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the runner retries a stage's transient errors and how much it takes per batch.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per record before dead-lettering (≥ 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub base_backoff: Duration,
    /// Cap on one backoff.
    pub max_backoff: Duration,
    /// Most records per batch.
    pub batch_size: usize,
    /// How long one poll waits for records.
    pub poll_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(2),
            batch_size: 512,
            poll_wait: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with equal jitter (half fixed, half random) before attempt `attempt + 1`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let cap = exp.min(self.max_backoff);
        // Half fixed, half random: spreads retries without ever retrying immediately.
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Runs one stage over its input topics until shutdown.
pub struct Runner {
    log: Arc<dyn Log>,
    stage: Arc<dyn Stage>,
    inputs: Vec<String>,
    policy: RetryPolicy,
    metrics: StageMetrics,
}

/// The uniform `orderflow_stage_*{stage,…}` metrics of one stage, registered once: looking a
/// labelled metric up for every record costs an allocation and a hash each time.
struct StageMetrics {
    emitted: metrics::Counter,
    rejected: metrics::Counter,
    no_output: metrics::Counter,
    dead_lettered: metrics::Counter,
    interrupted: metrics::Counter,
    rejected_total: metrics::Counter,
    dead_lettered_total: metrics::Counter,
    failed_retryable: metrics::Counter,
    failed_permanent: metrics::Counter,
    failed_unavailable: metrics::Counter,
    retries: metrics::Counter,
    unavailable: metrics::Counter,
    process_seconds: metrics::Histogram,
    batch_size: metrics::Histogram,
    batch_seconds: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    /// The stage's own flush before a completion, during which it processes nothing.
    flush_seconds: metrics::Histogram,
}

impl StageMetrics {
    fn new(stage: &str) -> Self {
        let processed = |outcome: &'static str| metrics::counter!("orderflow_stage_processed_total", "stage" => stage.to_owned(), "outcome" => outcome);
        let failed = |kind: &'static str| metrics::counter!("orderflow_stage_failed_total", "stage" => stage.to_owned(), "kind" => kind);
        Self {
            emitted: processed("emitted"),
            rejected: processed("rejected"),
            no_output: processed("no_output"),
            dead_lettered: processed("dead_lettered"),
            interrupted: processed("interrupted"),
            rejected_total: metrics::counter!("orderflow_stage_rejected_total", "stage" => stage.to_owned()),
            dead_lettered_total: metrics::counter!("orderflow_stage_dead_lettered_total", "stage" => stage.to_owned()),
            failed_retryable: failed("retryable"),
            failed_permanent: failed("permanent"),
            failed_unavailable: failed("unavailable"),
            retries: metrics::counter!("orderflow_stage_retries_total", "stage" => stage.to_owned()),
            unavailable: metrics::counter!("orderflow_stage_unavailable_total", "stage" => stage.to_owned()),
            process_seconds: metrics::histogram!("orderflow_stage_process_seconds", "stage" => stage.to_owned()),
            batch_size: metrics::histogram!("orderflow_stage_batch_size", "stage" => stage.to_owned()),
            batch_seconds: metrics::histogram!("orderflow_stage_batch_seconds", "stage" => stage.to_owned()),
            commit_seconds: metrics::histogram!("orderflow_stage_commit_seconds", "stage" => stage.to_owned()),
            flush_seconds: metrics::histogram!("orderflow_stage_flush_seconds", "stage" => stage.to_owned()),
        }
    }
}

/// Records processed but not completed yet: the outputs to append, the offsets to commit, and
/// since when.
#[derive(Default)]
struct Pending {
    outputs: Vec<Message>,
    offsets: Offsets,
    /// Records processed into this.
    records: usize,
    since: Option<Instant>,
}

impl Pending {
    /// Whether the pending offsets must be committed now.
    fn due(&self, interval: Duration) -> bool {
        self.since.is_some_and(|since| since.elapsed() >= interval)
    }

    /// Whether a completion should start: outputs are waiting, or offsets are due.
    fn owed(&self, interval: Duration) -> bool {
        !self.outputs.is_empty() || self.due(interval)
    }
}

/// How long a completion runs before the runner polls beside it. Most embedded-log completions
/// end sooner, and polling beside them only splits the work into more, smaller batches (more
/// CPU an order, measured); a slower log (a broker's acknowledgement, a busy disk) is
/// overlapped.
const OVERLAP_AFTER: Duration = Duration::from_millis(5);

/// What came first while a completion was in flight.
enum Step {
    /// The oldest completion in flight ended.
    Completed(Sent),
    /// A poll answered.
    Polled(Result<Vec<Record>, LogError>),
}

enum Settled {
    Done(Outcome),
    Failed {
        error: StageError,
        attempts: u32,
    },
    /// Shutdown came while a dependency was still down: the record stays uncommitted.
    Interrupted,
}

impl Runner {
    /// A runner for `stage` reading `inputs` (its consumer group is the stage's name).
    pub fn new(
        log: Arc<dyn Log>,
        stage: Arc<dyn Stage>,
        inputs: Vec<String>,
        policy: RetryPolicy,
    ) -> Self {
        let metrics = StageMetrics::new(stage.name());
        Self {
            log,
            stage,
            inputs,
            policy,
            metrics,
        }
    }

    /// Consumes until `shutdown` is cancelled; the batch in hand is committed first unless a
    /// dependency was still down, in which case it is left for redelivery.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LogError> {
        let name = self.stage.name().to_owned();
        let mut consumer = loop {
            let joined = tokio::select! {
                joined = self.log.consumer(&name, &self.inputs) => joined,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match joined {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(stage = %name, error = %e, "Cannot join the consumer group, retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), &shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        tracing::info!(stage = %name, inputs = ?self.inputs, "Stage started");
        let committer = consumer.committer();
        let overlaps = committer.overlaps();
        let ahead = if overlaps {
            committer.sends_ahead().max(1)
        } else {
            1
        };
        let interval = self.stage.commit_interval();
        let mut pending = Pending::default();
        // Completions in flight, in batch order: one at a time, or up to `ahead` sends whose
        // offsets are committed in order as they end. Meanwhile the next records are polled
        // and processed, and go into the completion after them.
        let mut inflight: FuturesOrdered<BoxFuture<'_, Sent>> = FuturesOrdered::new();
        let mut overlap_from = Instant::now();
        // False when a completion or a batch was cut short: its records come back after restart.
        let mut clean = true;
        while !shutdown.is_cancelled() {
            if inflight.len() < ahead && pending.owed(interval) {
                if !self.flush(&shutdown).await {
                    clean = false;
                    break;
                }
                let batch = std::mem::take(&mut pending);
                overlap_from = Instant::now() + OVERLAP_AFTER;
                let committer = Arc::clone(&committer);
                inflight.push_back(if ahead > 1 {
                    Box::pin(self.send_ahead(committer, batch, shutdown.clone()))
                } else {
                    Box::pin(self.complete(committer, batch, shutdown.clone()))
                });
            }
            if pending.records >= self.policy.batch_size && !inflight.is_empty() {
                // Enough is waiting: a slow log holds the stage back rather than fill memory.
                let sent = oldest(&mut inflight).await;
                if !self.finish(&*committer, sent, &shutdown).await {
                    clean = false;
                    break;
                }
                continue;
            }
            let wait = match pending.since {
                Some(since) => (since + interval)
                    .saturating_duration_since(Instant::now())
                    .min(self.policy.poll_wait),
                None => self.policy.poll_wait,
            };
            let step = if inflight.is_empty() {
                Step::Polled(consumer.poll(self.policy.batch_size, wait).await)
            } else if !overlaps {
                Step::Completed(oldest(&mut inflight).await)
            } else {
                tokio::select! {
                    biased;
                    sent = oldest(&mut inflight) => Step::Completed(sent),
                    polled = async {
                        tokio::time::sleep_until(overlap_from.into()).await;
                        consumer.poll(self.policy.batch_size, wait).await
                    } => Step::Polled(polled),
                }
            };
            let records = match step {
                Step::Completed(sent) => {
                    if !self.finish(&*committer, sent, &shutdown).await {
                        clean = false;
                        break;
                    }
                    continue;
                }
                Step::Polled(Ok(records)) => records,
                Step::Polled(Err(e)) => {
                    tracing::warn!(stage = %name, error = %e, "Poll failed, retrying");
                    if sleep_or_shutdown(self.policy.max_backoff, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            self.metrics.batch_size.record(records.len() as f64);
            let started = Instant::now();
            let batch = self.settle_batch(&records, &shutdown);
            let (settled, completed) = if inflight.is_empty() {
                (batch.await, None)
            } else {
                let mut batch = std::pin::pin!(batch);
                tokio::select! {
                    biased;
                    settled = &mut batch => (settled, None),
                    sent = oldest(&mut inflight) => (batch.await, Some(sent)),
                }
            };
            if let Some(sent) = completed
                && !self.finish(&*committer, sent, &shutdown).await
            {
                clean = false;
                break;
            }
            let Some(settled) = settled else {
                // Complete nothing of this batch: it comes back after the restart, and every
                // side effect already made is idempotent.
                clean = false;
                break;
            };
            self.gather(&records, settled, &mut pending, started);
        }
        // In batch order: once one is cut short, no later batch's offsets are committed.
        while let Some(sent) = inflight.next().await {
            if clean && !self.finish(&*committer, sent, &shutdown).await {
                clean = false;
            }
        }
        if clean && (pending.since.is_some() || !pending.outputs.is_empty()) {
            // Processed but not completed yet: flush and complete on the way out, briefly;
            // whatever does not make it is read again after the restart.
            let quiet = CancellationToken::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), async {
                self.flush(&quiet).await
                    && self
                        .complete_whole(Arc::clone(&committer), pending, quiet.clone())
                        .await
            })
            .await;
        }
        drop(committer);
        consumer.close().await;
        // Leaving the group blocks until the broker answers: keep that off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!(stage = %name, "Stage stopped");
        Ok(())
    }

    /// Runs the stage on every record of a batch at once; `None` if shutdown interrupted one
    /// whose dependency was down.
    async fn settle_batch(
        &self,
        records: &[Record],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Settled>> {
        let settled = join_all(records.iter().map(|r| self.settle(r, shutdown.clone()))).await;
        (!settled.iter().any(|s| matches!(s, Settled::Interrupted))).then_some(settled)
    }

    /// Adds a settled batch's outputs (dead letters included) and next offsets to `pending`.
    fn gather(
        &self,
        records: &[Record],
        settled: Vec<Settled>,
        pending: &mut Pending,
        started: Instant,
    ) {
        let name = self.stage.name();
        for (record, settled) in records.iter().zip(settled) {
            let m = &self.metrics;
            let outcome = match settled {
                Settled::Done(Outcome::Emit(messages)) => {
                    pending.outputs.extend(messages);
                    &m.emitted
                }
                Settled::Done(Outcome::Reject(message)) => {
                    pending.outputs.push(message);
                    m.rejected_total.increment(1);
                    &m.rejected
                }
                Settled::Done(Outcome::Nothing) => &m.no_output,
                Settled::Interrupted => &m.interrupted,
                Settled::Failed { error, attempts } => {
                    tracing::error!(
                        stage = name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, attempts, error = %error.message,
                        "Dead-lettering a record"
                    );
                    pending
                        .outputs
                        .push(dead_letter(name, record, &error, attempts));
                    m.dead_lettered_total.increment(1);
                    &m.dead_lettered
                }
            };
            outcome.increment(1);
        }
        // The next offset per partition, gathered without allocating a key per record.
        let mut highest: Vec<(&str, u32, u64)> = Vec::new();
        for r in records {
            match highest
                .iter_mut()
                .find(|(t, p, _)| *t == r.topic && *p == r.partition)
            {
                Some((_, _, next)) => *next = (*next).max(r.offset + 1),
                None => highest.push((&r.topic, r.partition, r.offset + 1)),
            }
        }
        for (topic, partition, next) in highest {
            let slot = pending
                .offsets
                .entry(TopicPartition::new(topic, partition))
                .or_insert(0);
            *slot = (*slot).max(next);
        }
        pending.records += records.len();
        pending.since.get_or_insert(started);
    }

    /// Flushes the stage (its buffered writes go before the offsets that cover them), retrying
    /// until it works; false if shutdown came first.
    async fn flush(&self, shutdown: &CancellationToken) -> bool {
        let flushing = Instant::now();
        let mut attempt = 0;
        loop {
            match self.stage.flush().await {
                Ok(()) => {
                    self.metrics.flush_seconds.record(flushing.elapsed());
                    return true;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(stage = self.stage.name(), error = %e.message, attempt, "Flush failed, retrying");
                    if sleep_or_shutdown(self.policy.backoff(attempt), shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Runs the stage on one record with retries until it settles.
    async fn settle(&self, record: &Record, shutdown: CancellationToken) -> Settled {
        if record
            .header(header::REPLAY_FOR)
            .is_some_and(|stage| stage != self.stage.name())
        {
            return Settled::Done(Outcome::Nothing);
        }
        let mut attempt = 1;
        let mut waits = 0;
        loop {
            let started = Instant::now();
            // A stage that panics on one record dead-letters that record; it does not stop the
            // stage for every order behind it.
            let result = AssertUnwindSafe(self.stage.process(record, attempt))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(StageError::permanent("the stage panicked on this record"))
                });
            self.metrics.process_seconds.record(started.elapsed());
            if let Err(error) = &result {
                match error.kind {
                    ErrorKind::Retryable => &self.metrics.failed_retryable,
                    ErrorKind::Permanent => &self.metrics.failed_permanent,
                    ErrorKind::Unavailable => &self.metrics.failed_unavailable,
                }
                .increment(1);
            }
            match result {
                Ok(outcome) => return Settled::Done(outcome),
                Err(error)
                    if error.kind == ErrorKind::Retryable && attempt < self.policy.max_attempts =>
                {
                    self.metrics.retries.increment(1);
                    tracing::debug!(stage = self.stage.name(), attempt, error = %error.message, "Retrying a record");
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) if error.kind == ErrorKind::Unavailable => {
                    waits += 1;
                    self.metrics.unavailable.increment(1);
                    if waits == 1 || waits % 50 == 0 {
                        tracing::warn!(stage = self.stage.name(), waits, error = %error.message, "A dependency is unavailable; holding the record");
                    }
                    if sleep_or_shutdown(self.policy.backoff(waits.min(16)), &shutdown).await {
                        return Settled::Interrupted;
                    }
                }
                Err(error) => {
                    return Settled::Failed {
                        error,
                        attempts: attempt,
                    };
                }
            }
        }
    }
}

/// Sleeps for `duration`; true if shutdown was signalled meanwhile.
async fn sleep_or_shutdown(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => shutdown.is_cancelled(),
        _ = shutdown.cancelled() => true,
    }
}

mod complete;
#[cfg(test)]
mod tests;
