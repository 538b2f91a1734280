//! How the runner completes batches: one at a time beside the next batch, or sent ahead with
//! offsets committed in order. Each test wraps the embedded log's committer to hold, fail and
//! record its calls.

use super::msg;
use crate::SegmentLog;
use crate::log::{Committer, Consumer, Log, LogError, Message, Offsets, Record};
use crate::runner::{RetryPolicy, Runner};
use crate::stage::{Outcome, Stage, StageError};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Wraps a consumer's committer in one a test controls.
type Wrap = Arc<dyn Fn(Arc<dyn Committer>) -> Arc<dyn Committer> + Send + Sync>;

/// The embedded log, with every consumer's committer wrapped by `wrap`.
struct Wrapped {
    log: Arc<SegmentLog>,
    wrap: Wrap,
}

impl Wrapped {
    fn new(
        log: &Arc<SegmentLog>,
        wrap: impl Fn(Arc<dyn Committer>) -> Arc<dyn Committer> + Send + Sync + 'static,
    ) -> Self {
        Self {
            log: Arc::clone(log),
            wrap: Arc::new(wrap),
        }
    }
}

struct WrappedConsumer {
    inner: Box<dyn Consumer>,
    wrap: Wrap,
}

#[async_trait]
impl Log for Wrapped {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        Log::ensure_topics(&*self.log, topics).await
    }
    async fn append(&self, messages: Vec<Message>) -> Result<Vec<crate::Position>, LogError> {
        Log::append(&*self.log, messages).await
    }
    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        Ok(Box::new(WrappedConsumer {
            inner: Log::consumer(&*self.log, group, topics).await?,
            wrap: Arc::clone(&self.wrap),
        }))
    }
    async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, LogError> {
        Log::read(&*self.log, topic, max).await
    }
    async fn ready(&self) -> Result<(), LogError> {
        Log::ready(&*self.log).await
    }
    async fn backlog(&self, group: &str, topic: &str) -> Result<u64, LogError> {
        Log::backlog(&*self.log, group, topic).await
    }
}

#[async_trait]
impl Consumer for WrappedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.inner.poll(max, wait).await
    }
    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        self.inner.complete(outputs, offsets).await
    }
    fn committer(&self) -> Arc<dyn Committer> {
        (self.wrap)(self.inner.committer())
    }
}

/// Holds every completion for a while, fails the first ones, and records each call: what the
/// runner completes, in which order, how many at once.
#[derive(Default)]
struct HeldCalls {
    /// Each call's offsets, whether it succeeded, and when it returned.
    seen: parking_lot::Mutex<Vec<(Offsets, bool, Instant)>>,
    running: AtomicU32,
    most_at_once: AtomicU32,
    failures_left: AtomicU32,
}

struct HeldCommitter {
    inner: Arc<dyn Committer>,
    calls: Arc<HeldCalls>,
}

#[async_trait]
impl Committer for HeldCommitter {
    async fn complete(&self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        let calls = &self.calls;
        let now = calls.running.fetch_add(1, Ordering::SeqCst) + 1;
        calls.most_at_once.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let failing = calls
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if failing {
            Err(LogError::Unavailable("held: failing on purpose".into()))
        } else {
            self.inner.complete(outputs, offsets.clone()).await
        };
        calls
            .seen
            .lock()
            .push((offsets, result.is_ok(), Instant::now()));
        calls.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// Passes values on to "out", noting when each record was processed.
struct Stamp {
    processed: parking_lot::Mutex<Vec<Instant>>,
}

#[async_trait]
impl Stage for Stamp {
    fn name(&self) -> &str {
        "stamp"
    }

    async fn process(&self, record: &Record, _attempt: u32) -> Result<Outcome, StageError> {
        self.processed.lock().push(Instant::now());
        Ok(Outcome::Emit(vec![Message {
            topic: "out".into(),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: vec![],
            decoded: None,
        }]))
    }
}

/// Runs [`Stamp`] over `log` while 40 records are appended to "in", `gap` apart, until it has
/// processed them all and its position is at the end; returns when each was processed.
async fn stamp_forty(log: &Arc<Wrapped>, gap: Duration) -> Vec<Instant> {
    log.ensure_topics(&["in".to_owned(), "out".to_owned()])
        .await
        .expect("topics");
    let stage = Arc::new(Stamp {
        processed: parking_lot::Mutex::new(Vec::new()),
    });
    let policy = RetryPolicy {
        poll_wait: Duration::from_millis(20),
        ..RetryPolicy::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Runner::new(log.clone(), stage.clone(), vec!["in".into()], policy).run(stop.clone()),
    );
    for i in 0..40 {
        log.append(vec![msg("in", &format!("k{i}"), &format!("v{i:02}"))])
            .await
            .expect("append");
        tokio::time::sleep(gap).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while log
        .log
        .lag()
        .expect("lag")
        .iter()
        .any(|(at, behind)| at.group == "stamp" && *behind > 0)
        || stage.processed.lock().len() < 40
    {
        assert!(Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.expect("joins").expect("runs");
    stage.processed.lock().clone()
}

/// The values on "out", in log order.
async fn outputs(log: &Wrapped) -> Vec<String> {
    log.read("out", 1000)
        .await
        .expect("read")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

/// The 40 values [`stamp_forty`] appends, in order.
fn forty() -> Vec<String> {
    (0..40).map(|i| format!("v{i:02}")).collect()
}

#[tokio::test]
async fn the_next_batch_is_processed_while_one_is_completing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segments = Arc::new(SegmentLog::open(dir.path(), 1).expect("log"));
    let calls = Arc::new(HeldCalls::default());
    // The first two completions fail (after being held): each is repeated before any later one.
    calls.failures_left.store(2, Ordering::SeqCst);
    let log = Arc::new(Wrapped::new(&segments, {
        let calls = Arc::clone(&calls);
        move |inner| {
            Arc::new(HeldCommitter {
                inner,
                calls: Arc::clone(&calls),
            })
        }
    }));
    // One record 10 ms apart: each completion (150 ms) spans many of them.
    let processed = stamp_forty(&log, Duration::from_millis(10)).await;

    let seen = calls.seen.lock().clone();
    assert_eq!(
        calls.most_at_once.load(Ordering::SeqCst),
        1,
        "completions ran one at a time"
    );
    let first_done = seen
        .iter()
        .find(|(_, ok, _)| *ok)
        .map(|(_, _, at)| *at)
        .expect("a completion succeeded");
    let ahead = processed.iter().filter(|at| **at < first_done).count();
    assert!(
        ahead > 5,
        "only {ahead} records were processed before the first completion returned: the runner \
         waited for it instead of going on"
    );
    // A failed completion is repeated with the same offsets; the committed position only grows.
    let mut last_ok = 0;
    for pair in seen.windows(2) {
        if !pair[0].1 {
            assert_eq!(
                pair[0].0, pair[1].0,
                "a failed completion was not repeated first"
            );
        }
    }
    for (offsets, ok, _) in &seen {
        let next = offsets.values().copied().max().unwrap_or(0);
        if *ok {
            assert!(next > last_ok, "completions out of order: {seen:?}");
            last_ok = next;
        }
    }
    assert_eq!(last_ok, 40);
    assert!(seen.iter().filter(|(_, ok, _)| !ok).count() == 2);
    assert!(
        seen.len() < 20,
        "{} completions for 40 records: batches were not gathered while one was held",
        seen.len()
    );
    // Every output once, in the order of the inputs.
    assert_eq!(outputs(&log).await, forty());
}

/// Sends ahead: each send held for a while (every third longer, so later sends can end
/// first; the first one failing once), offsets committed through the log with no outputs, and
/// every call recorded.
struct AheadCommitter {
    inner: Arc<dyn Committer>,
    log: Arc<SegmentLog>,
    calls: Arc<AheadCalls>,
}

#[derive(Default)]
struct AheadCalls {
    sends: AtomicU32,
    running: AtomicU32,
    most_at_once: AtomicU32,
    failed_once: std::sync::atomic::AtomicBool,
    /// Each commit's next offset, and how many outputs "out" held when it was made.
    commits: parking_lot::Mutex<Vec<(u64, usize)>>,
}

#[async_trait]
impl Committer for AheadCommitter {
    async fn complete(&self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        self.inner.complete(outputs, offsets).await
    }
    fn sends_ahead(&self) -> usize {
        3
    }
    async fn send(&self, outputs: &[Message]) -> Result<(), LogError> {
        let calls = &self.calls;
        let n = calls.sends.fetch_add(1, Ordering::SeqCst);
        let now = calls.running.fetch_add(1, Ordering::SeqCst) + 1;
        calls.most_at_once.fetch_max(now, Ordering::SeqCst);
        // Every third send is slow: the two after it end first.
        let hold = if n.is_multiple_of(3) { 120 } else { 10 };
        tokio::time::sleep(Duration::from_millis(hold)).await;
        let result = if !calls.failed_once.swap(true, Ordering::SeqCst) {
            Err(LogError::Unavailable("ahead: failing on purpose".into()))
        } else {
            Log::append(&*self.log, outputs.to_vec()).await.map(|_| ())
        };
        calls.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
    async fn commit(&self, offsets: Offsets) -> Result<(), LogError> {
        let next = offsets.values().copied().max().unwrap_or(0);
        let out = Log::read(&*self.log, "out", 1000).await?.len();
        self.calls.commits.lock().push((next, out));
        self.inner.complete(Vec::new(), offsets).await
    }
}

#[tokio::test]
async fn batches_sent_ahead_commit_their_offsets_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segments = Arc::new(SegmentLog::open(dir.path(), 1).expect("log"));
    let calls = Arc::new(AheadCalls::default());
    let log = Arc::new(Wrapped::new(&segments, {
        let calls = Arc::clone(&calls);
        let segments = Arc::clone(&segments);
        move |inner| {
            Arc::new(AheadCommitter {
                inner,
                log: Arc::clone(&segments),
                calls: Arc::clone(&calls),
            })
        }
    }));
    // The segment log's own committer does not overlap; this one says it does.
    stamp_forty(&log, Duration::from_millis(8)).await;

    assert!(
        calls.most_at_once.load(Ordering::SeqCst) >= 2,
        "sends never overlapped"
    );
    let commits = calls.commits.lock().clone();
    assert!(
        commits.len() >= 3,
        "too few batches to show an order: {commits:?}"
    );
    let mut last = 0;
    for (next, out) in &commits {
        assert!(
            *next > last,
            "offsets committed out of batch order: {commits:?}"
        );
        // Every output of the records a commit covers was durable before it.
        assert!(
            *out as u64 >= *next,
            "offsets up to {next} committed with only {out} outputs durable: {commits:?}"
        );
        last = *next;
    }
    assert_eq!(last, 40);
    // Every output once (a later batch's may land before an earlier one's).
    let mut out = outputs(&log).await;
    out.sort();
    assert_eq!(out, forty());
}
