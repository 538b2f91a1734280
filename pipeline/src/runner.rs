//! The runner: consume, process, retry, dead-letter, produce and commit for one stage.

use crate::dlq::dead_letter;
use crate::log::{Consumer, Log, LogError, Message, Offsets, Record, TopicPartition, header};
use crate::stage::{ErrorKind, Outcome, Stage, StageError};
use futures::FutureExt;
use futures::future::join_all;
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
        }
    }
}

/// Offsets of records processed but not committed yet, and since when.
#[derive(Default)]
struct Pending {
    offsets: Offsets,
    since: Option<Instant>,
}

impl Pending {
    /// Whether the pending offsets must be committed now.
    fn due(&self, interval: Duration) -> bool {
        self.since.is_some_and(|since| since.elapsed() >= interval)
    }
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
        let mut pending = Pending::default();
        // False when a commit or a batch was cut short: its records come back after restart.
        let mut clean = true;
        while !shutdown.is_cancelled() {
            let wait = match pending.since {
                Some(since) => (since + self.stage.commit_interval())
                    .saturating_duration_since(Instant::now())
                    .min(self.policy.poll_wait),
                None => self.policy.poll_wait,
            };
            let records = match consumer.poll(self.policy.batch_size, wait).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(stage = %name, error = %e, "Poll failed, retrying");
                    if sleep_or_shutdown(self.policy.max_backoff, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            let carried_on = if records.is_empty() {
                !pending.due(self.stage.commit_interval())
                    || self
                        .commit(consumer.as_mut(), Vec::new(), &mut pending, &shutdown)
                        .await
            } else {
                self.handle_batch(consumer.as_mut(), records, &mut pending, &shutdown)
                    .await
            };
            if !carried_on {
                clean = false;
                break;
            }
        }
        if clean && pending.since.is_some() {
            // Processed but not committed yet (a buffering stage): flush and commit on the way
            // out, briefly; whatever does not make it is read again after the restart.
            let quiet = CancellationToken::new();
            let _ = tokio::time::timeout(
                Duration::from_secs(3),
                self.commit(consumer.as_mut(), Vec::new(), &mut pending, &quiet),
            )
            .await;
        }
        consumer.close().await;
        // Leaving the group blocks until the broker answers: keep that off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!(stage = %name, "Stage stopped");
        Ok(())
    }

    /// Processes one batch and commits it (or, when it appended nothing and the commit
    /// interval allows, leaves its offsets pending); false if shutdown interrupted an
    /// unfinished commit.
    async fn handle_batch(
        &self,
        consumer: &mut dyn Consumer,
        records: Vec<Record>,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        let name = self.stage.name();
        self.metrics.batch_size.record(records.len() as f64);
        let started = Instant::now();
        let settled = join_all(records.iter().map(|r| self.settle(r, shutdown.clone()))).await;
        if settled.iter().any(|s| matches!(s, Settled::Interrupted)) {
            // Commit nothing of this batch: it comes back after the restart, and every side
            // effect already made is idempotent.
            return false;
        }
        let mut outputs = Vec::with_capacity(records.len());
        for (record, settled) in records.iter().zip(settled) {
            let m = &self.metrics;
            let outcome = match settled {
                Settled::Done(Outcome::Emit(messages)) => {
                    outputs.extend(messages);
                    &m.emitted
                }
                Settled::Done(Outcome::Reject(message)) => {
                    outputs.push(message);
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
                    outputs.push(dead_letter(name, record, &error, attempts));
                    m.dead_lettered_total.increment(1);
                    &m.dead_lettered
                }
            };
            outcome.increment(1);
        }
        // The next offset per partition, gathered without allocating a key per record.
        let mut highest: Vec<(&str, u32, u64)> = Vec::new();
        for r in &records {
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
        pending.since.get_or_insert(started);
        if outputs.is_empty() && !pending.due(self.stage.commit_interval()) {
            return true;
        }
        if !self.commit(consumer, outputs, pending, shutdown).await {
            return false;
        }
        self.metrics.batch_seconds.record(started.elapsed());
        true
    }

    /// Flushes the stage, then appends `outputs` and commits the pending offsets together,
    /// retrying until it works; false if shutdown came first (nothing new is committed then).
    async fn commit(
        &self,
        consumer: &mut dyn Consumer,
        outputs: Vec<Message>,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> bool {
        let name = self.stage.name();
        let mut attempt = 0;
        loop {
            let done = match self.stage.flush().await {
                Ok(()) => consumer
                    .complete(outputs.clone(), pending.offsets.clone())
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.message),
            };
            match done {
                Ok(()) => {
                    pending.offsets.clear();
                    pending.since = None;
                    return true;
                }
                Err(error) => {
                    attempt += 1;
                    tracing::warn!(stage = name, %error, attempt, "Commit failed, retrying");
                    if sleep_or_shutdown(self.policy.backoff(attempt), shutdown).await {
                        // Nothing was committed: the records come back after restart.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentLog;
    use async_trait::async_trait;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Upper-cases values; fails transiently on "flaky" until its third attempt; fails
    /// permanently on "poison".
    struct Shout {
        calls: AtomicU32,
        down_calls: AtomicU32,
    }

    #[async_trait]
    impl Stage for Shout {
        fn name(&self) -> &str {
            "shout"
        }

        async fn process(&self, record: &Record, attempt: u32) -> Result<Outcome, StageError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match &record.value[..] {
                b"poison" => Err(StageError::permanent("poisoned")),
                b"panic" => panic!("a bug in the stage"),
                // A dependency down for longer than the retry budget: held, not dead-lettered.
                b"down" if self.down_calls.fetch_add(1, Ordering::Relaxed) < 7 => {
                    Err(StageError::unavailable("the ledger is down"))
                }
                b"flaky" if attempt < 3 => Err(StageError::retryable("try again")),
                value => Ok(Outcome::Emit(vec![Message {
                    topic: "out".into(),
                    key: record.key.clone(),
                    value: Bytes::from(value.to_ascii_uppercase()),
                    headers: vec![],
                    decoded: None,
                }])),
            }
        }
    }

    fn msg(topic: &str, key: &str, value: &str) -> Message {
        Message {
            topic: topic.into(),
            key: Bytes::from(key.to_owned()),
            value: Bytes::from(value.to_owned()),
            headers: vec![],
            decoded: None,
        }
    }

    #[tokio::test]
    async fn retries_dead_letters_and_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(SegmentLog::open(dir.path(), 2).expect("log"));
        let topics: Vec<String> = ["in", "out", "in.dlq"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        log.ensure_topics(&topics).await.expect("topics");
        log.append(vec![
            msg("in", "a", "hello"),
            msg("in", "b", "poison"),
            msg("in", "c", "flaky"),
            msg("in", "d", "panic"),
            msg("in", "e", "down"),
        ])
        .await
        .expect("append");

        let policy = RetryPolicy {
            base_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let stage = Arc::new(Shout {
            calls: AtomicU32::new(0),
            down_calls: AtomicU32::new(0),
        });
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let runner = Runner::new(
            log.clone(),
            stage.clone(),
            vec!["in".into()],
            policy.clone(),
        );
        let task = tokio::spawn(runner.run(stopped));

        let deadline = Instant::now() + Duration::from_secs(10);
        let (out, dlq) = loop {
            let out = log.read("out", 10).await.expect("read");
            let dlq = log.read("in.dlq", 10).await.expect("read");
            if out.len() == 3 && dlq.len() == 2 {
                break (out, dlq);
            }
            assert!(
                Instant::now() < deadline,
                "stage did not finish: out={out:?} dlq={dlq:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut values: Vec<_> = out.iter().map(|r| r.value.clone()).collect();
        values.sort();
        assert_eq!(
            values,
            [
                Bytes::from("DOWN"),
                Bytes::from("FLAKY"),
                Bytes::from("HELLO")
            ]
        );
        let poison = dlq
            .iter()
            .find(|r| r.value == "poison")
            .expect("poison dead-lettered");
        assert_eq!(poison.header(header::DLQ_STAGE), Some("shout"));
        assert_eq!(poison.header(header::DLQ_SOURCE_TOPIC), Some("in"));
        assert_eq!(poison.header(header::DLQ_ATTEMPTS), Some("1"));
        let panicked = dlq
            .iter()
            .find(|r| r.value == "panic")
            .expect("panic dead-lettered");
        assert!(
            panicked
                .header(header::DLQ_ERROR)
                .is_some_and(|e| e.contains("panicked"))
        );
        // hello once, poison once, panic once, flaky three times, down eight times.
        assert_eq!(stage.calls.load(Ordering::Relaxed), 14);

        stop.cancel();
        task.await.expect("joins").expect("runs");
        // Everything read was committed: the group is not behind on any partition.
        let lag = log.lag().expect("lag");
        assert!(
            lag.keys()
                .any(|at| at.group == "shout" && at.partition.topic == "in")
        );
        assert!(lag.values().all(|behind| *behind == 0), "{lag:?}");

        // Committed: a new member of the group sees nothing left, a new group sees everything.
        let mut again = log
            .consumer("shout", &["in".to_owned()])
            .await
            .expect("consumer");
        assert!(
            again
                .poll(10, Duration::from_millis(10))
                .await
                .expect("poll")
                .is_empty()
        );
        let mut fresh = log
            .consumer("other", &["in".to_owned()])
            .await
            .expect("consumer");
        assert_eq!(
            fresh
                .poll(10, Duration::from_millis(10))
                .await
                .expect("poll")
                .len(),
            5
        );
        log.append(vec![
            msg("in", "f", "x"),
            msg("in", "g", "y"),
            msg("in", "h", "z"),
        ])
        .await
        .expect("append");
        let behind: u64 = log
            .lag()
            .expect("lag")
            .iter()
            .filter(|(at, _)| at.group == "shout" && at.partition.topic == "in")
            .map(|(_, behind)| behind)
            .sum();
        assert_eq!(behind, 3, "three appended records not yet consumed");
    }

    /// Keeps a count of what it saw in memory; `flush` makes it "durable".
    struct Tally {
        seen: AtomicU32,
        flushed: AtomicU32,
        flushes: AtomicU32,
    }

    #[async_trait]
    impl Stage for Tally {
        fn name(&self) -> &str {
            "tally"
        }

        async fn process(&self, _record: &Record, _attempt: u32) -> Result<Outcome, StageError> {
            self.seen.fetch_add(1, Ordering::SeqCst);
            Ok(Outcome::Nothing)
        }

        async fn flush(&self) -> Result<(), StageError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            // A slow flush: a commit made before it finished would be seen by the test.
            tokio::time::sleep(Duration::from_millis(30)).await;
            self.flushed
                .store(self.seen.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(())
        }

        fn commit_interval(&self) -> Duration {
            Duration::from_millis(300)
        }
    }

    #[tokio::test]
    async fn a_buffering_stage_is_flushed_before_its_position_is_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Arc::new(SegmentLog::open(dir.path(), 1).expect("log"));
        log.ensure_topics(&["in".to_owned()]).await.expect("topics");
        let stage = Arc::new(Tally {
            seen: AtomicU32::new(0),
            flushed: AtomicU32::new(0),
            flushes: AtomicU32::new(0),
        });
        let policy = RetryPolicy {
            poll_wait: Duration::from_millis(20),
            ..RetryPolicy::default()
        };
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(
            Runner::new(log.clone(), stage.clone(), vec!["in".into()], policy).run(stopped),
        );
        let committed = |log: &SegmentLog| -> u64 {
            log.lag()
                .expect("lag")
                .iter()
                .filter(|(at, _)| at.group == "tally" && at.partition.topic == "in")
                .map(|(_, behind)| *behind)
                .sum()
        };
        // Twenty batches, one record each, well inside one commit interval.
        for i in 0..20 {
            log.append(vec![msg("in", &format!("k{i}"), "v")])
                .await
                .expect("append");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Read in this order, whatever is committed now was flushed first.
            let behind = committed(&log);
            let flushed = u64::from(stage.flushed.load(Ordering::SeqCst));
            assert!(
                20 - behind <= flushed,
                "{} committed, only {flushed} flushed",
                20 - behind
            );
            if behind == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "never committed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            stage.flushed.load(Ordering::SeqCst),
            20,
            "flushed before the commit"
        );
        let flushes = stage.flushes.load(Ordering::SeqCst);
        assert!(
            flushes < 10,
            "{flushes} flushes for 20 batches: commits were not gathered"
        );
        // What is processed at shutdown is flushed and committed on the way out.
        log.append(vec![msg("in", "last", "v")])
            .await
            .expect("append");
        while stage.seen.load(Ordering::SeqCst) < 21 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        task.await.expect("joins").expect("runs");
        assert_eq!(stage.flushed.load(Ordering::SeqCst), 21);
        assert_eq!(committed(&log), 0);
    }

    #[test]
    fn backoff_grows_is_capped_and_never_zero() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            let b = p.backoff(attempt);
            assert!(
                b >= p.base_backoff.min(p.max_backoff) / 2 && b <= p.max_backoff,
                "{b:?}"
            );
        }
        assert!(p.backoff(8) >= p.max_backoff / 2);
    }
}
