//! The runner: consume, process, retry, dead-letter, produce and commit for one stage.

use crate::log::{Consumer, Log, LogError, Message, Offsets, Record, header};
use crate::stage::{ErrorKind, Outcome, Stage, StageError};
use futures::FutureExt;
use futures::future::join_all;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
        Self {
            log,
            stage,
            inputs,
            policy,
        }
    }

    /// Consumes until `shutdown` turns true; the batch in hand is committed first unless a
    /// dependency was still down, in which case it is left for redelivery.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), LogError> {
        let name = self.stage.name().to_owned();
        let mut consumer = loop {
            let joined = tokio::select! {
                joined = self.log.consumer(&name, &self.inputs) => joined,
                _ = shutdown.changed() => return Ok(()),
            };
            match joined {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(stage = %name, error = %e, "Cannot join the consumer group, retrying");
                    if sleep_or_shutdown(Duration::from_secs(1), &mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        tracing::info!(stage = %name, inputs = ?self.inputs, "Stage started");
        while !*shutdown.borrow() {
            let records = match consumer
                .poll(self.policy.batch_size, self.policy.poll_wait)
                .await
            {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(stage = %name, error = %e, "Poll failed, retrying");
                    if sleep_or_shutdown(self.policy.max_backoff, &mut shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            if !self
                .handle_batch(consumer.as_mut(), records, &mut shutdown)
                .await
            {
                break;
            }
        }
        consumer.close().await;
        // Leaving the group blocks until the broker answers: keep that off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!(stage = %name, "Stage stopped");
        Ok(())
    }

    /// Processes one batch and commits it; false if shutdown interrupted an unfinished commit.
    async fn handle_batch(
        &self,
        consumer: &mut dyn Consumer,
        records: Vec<Record>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let name = self.stage.name();
        metrics::histogram!("orderflow_stage_batch_size", "stage" => name.to_owned())
            .record(records.len() as f64);
        let started = Instant::now();
        let settled = join_all(records.iter().map(|r| self.settle(r, shutdown.clone()))).await;
        if settled.iter().any(|s| matches!(s, Settled::Interrupted)) {
            // Commit nothing of this batch: it comes back after the restart, and every side
            // effect already made is idempotent.
            return false;
        }
        let mut outputs = Vec::with_capacity(records.len());
        let mut offsets = Offsets::new();
        for (record, settled) in records.iter().zip(settled) {
            let outcome = match settled {
                Settled::Done(Outcome::Emit(messages)) => {
                    outputs.extend(messages);
                    "emitted"
                }
                Settled::Done(Outcome::Reject(message)) => {
                    outputs.push(message);
                    metrics::counter!("orderflow_stage_rejected_total", "stage" => name.to_owned())
                        .increment(1);
                    "rejected"
                }
                Settled::Done(Outcome::Nothing) => "no_output",
                Settled::Interrupted => "interrupted",
                Settled::Failed { error, attempts } => {
                    tracing::error!(
                        stage = name, topic = %record.topic, partition = record.partition,
                        offset = record.offset, attempts, error = %error.message,
                        "Dead-lettering a record"
                    );
                    outputs.push(dead_letter(name, record, &error, attempts));
                    metrics::counter!("orderflow_stage_dead_lettered_total", "stage" => name.to_owned())
                        .increment(1);
                    "dead_lettered"
                }
            };
            metrics::counter!("orderflow_stage_processed_total", "stage" => name.to_owned(), "outcome" => outcome)
                .increment(1);
            let next = offsets
                .entry((record.topic.clone(), record.partition))
                .or_insert(0);
            *next = (*next).max(record.offset + 1);
        }
        let mut attempt = 0;
        loop {
            match consumer.complete(outputs.clone(), offsets.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(stage = name, error = %e, attempt, "Commit failed, retrying");
                    if sleep_or_shutdown(self.policy.backoff(attempt), shutdown).await {
                        // Nothing was committed: the records come back after restart.
                        return false;
                    }
                }
            }
        }
        metrics::histogram!("orderflow_stage_batch_seconds", "stage" => name.to_owned())
            .record(started.elapsed());
        true
    }

    /// Runs the stage on one record with retries until it settles.
    async fn settle(&self, record: &Record, mut shutdown: watch::Receiver<bool>) -> Settled {
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
            metrics::histogram!("orderflow_stage_process_seconds", "stage" => self.stage.name().to_owned())
                .record(started.elapsed());
            if let Err(error) = &result {
                let kind = match error.kind {
                    ErrorKind::Retryable => "retryable",
                    ErrorKind::Permanent => "permanent",
                    ErrorKind::Unavailable => "unavailable",
                };
                metrics::counter!("orderflow_stage_failed_total", "stage" => self.stage.name().to_owned(), "kind" => kind)
                    .increment(1);
            }
            match result {
                Ok(outcome) => return Settled::Done(outcome),
                Err(error)
                    if error.kind == ErrorKind::Retryable && attempt < self.policy.max_attempts =>
                {
                    metrics::counter!("orderflow_stage_retries_total", "stage" => self.stage.name().to_owned())
                        .increment(1);
                    tracing::debug!(stage = self.stage.name(), attempt, error = %error.message, "Retrying a record");
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(error) if error.kind == ErrorKind::Unavailable => {
                    waits += 1;
                    metrics::counter!("orderflow_stage_unavailable_total", "stage" => self.stage.name().to_owned())
                        .increment(1);
                    if waits == 1 || waits % 50 == 0 {
                        tracing::warn!(stage = self.stage.name(), waits, error = %error.message, "A dependency is unavailable; holding the record");
                    }
                    if sleep_or_shutdown(self.policy.backoff(waits.min(16)), &mut shutdown).await {
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

/// The dead letter of `record`: same key and value, with headers that say where it came from
/// and why it stopped, so it can be replayed to its source topic.
pub fn dead_letter(stage: &str, record: &Record, error: &StageError, attempts: u32) -> Message {
    let mut headers: Vec<(String, String)> = record
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with("dlq-"))
        .cloned()
        .collect();
    headers.extend([
        (header::DLQ_STAGE.to_owned(), stage.to_owned()),
        (
            header::DLQ_ERROR.to_owned(),
            error.message.chars().take(1024).collect(),
        ),
        (header::DLQ_ATTEMPTS.to_owned(), attempts.to_string()),
        (header::DLQ_SOURCE_TOPIC.to_owned(), record.topic.clone()),
        (
            header::DLQ_SOURCE_PARTITION.to_owned(),
            record.partition.to_string(),
        ),
        (
            header::DLQ_SOURCE_OFFSET.to_owned(),
            record.offset.to_string(),
        ),
    ]);
    Message {
        topic: crate::dlq_topic(&record.topic),
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    }
}

/// Sleeps for `duration`; true if shutdown was signalled meanwhile.
async fn sleep_or_shutdown(duration: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddedLog;
    use async_trait::async_trait;
    use bytes::Bytes;
    use orderflow_embedded::Engine;
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
        }
    }

    #[tokio::test]
    async fn retries_dead_letters_and_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            Arc::new(EmbeddedLog::new(Engine::open(dir.path()).expect("engine"), 2).expect("log"));
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
        let (stop, stopped) = watch::channel(false);
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

        stop.send(true).expect("stop");
        task.await.expect("joins").expect("runs");
        // Everything read was committed: the group is not behind on any partition.
        let lag = log.lag().expect("lag");
        assert!(
            lag.keys()
                .any(|(group, topic, _)| group == "shout" && topic == "in")
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
            .filter(|((group, topic, _), _)| group == "shout" && topic == "in")
            .map(|(_, behind)| behind)
            .sum();
        assert_eq!(behind, 3, "three appended records not yet consumed");
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
