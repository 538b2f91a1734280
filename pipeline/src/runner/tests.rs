use super::*;
use crate::SegmentLog;
use crate::log::{Committer, Consumer};
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

/// The embedded log with every completion held for a while, the first ones failing, and
/// each call recorded: what the runner completes, in which order, how many at once.
struct Held {
    log: Arc<SegmentLog>,
    calls: Arc<HeldCalls>,
}

#[derive(Default)]
struct HeldCalls {
    /// Each call's offsets, whether it succeeded, and when it returned.
    seen: parking_lot::Mutex<Vec<(Offsets, bool, Instant)>>,
    running: AtomicU32,
    most_at_once: AtomicU32,
    failures_left: AtomicU32,
}

struct HeldConsumer {
    inner: Box<dyn Consumer>,
    calls: Arc<HeldCalls>,
}

struct HeldCommitter {
    inner: Arc<dyn Committer>,
    calls: Arc<HeldCalls>,
}

#[async_trait]
impl Log for Held {
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
        Ok(Box::new(HeldConsumer {
            inner: Log::consumer(&*self.log, group, topics).await?,
            calls: Arc::clone(&self.calls),
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
impl Consumer for HeldConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.inner.poll(max, wait).await
    }
    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        self.inner.complete(outputs, offsets).await
    }
    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(HeldCommitter {
            inner: self.inner.committer(),
            calls: Arc::clone(&self.calls),
        })
    }
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

#[tokio::test]
async fn the_next_batch_is_processed_while_one_is_completing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let segments = Arc::new(SegmentLog::open(dir.path(), 1).expect("log"));
    let calls = Arc::new(HeldCalls::default());
    // The first two completions fail (after being held): each is repeated before any later one.
    calls.failures_left.store(2, Ordering::SeqCst);
    let log = Arc::new(Held {
        log: Arc::clone(&segments),
        calls: Arc::clone(&calls),
    });
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
    // One record a few milliseconds apart: each completion (150 ms) spans many of them.
    for i in 0..40 {
        log.append(vec![msg("in", &format!("k{i}"), &format!("v{i:02}"))])
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments
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
    let processed = stage.processed.lock().clone();
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
    let out: Vec<String> = log
        .read("out", 1000)
        .await
        .expect("read")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    let wanted: Vec<String> = (0..40).map(|i| format!("v{i:02}")).collect();
    assert_eq!(out, wanted);
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

/// The embedded log behind a committer that sends ahead: each send held for a while (the
/// earlier ones longer, so later sends can end first; the first one failing once), offsets
/// committed through the log with no outputs, and every call recorded.
struct Ahead {
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

struct AheadConsumer {
    inner: Box<dyn Consumer>,
    log: Arc<SegmentLog>,
    calls: Arc<AheadCalls>,
}

struct AheadCommitter {
    inner: Arc<dyn Committer>,
    log: Arc<SegmentLog>,
    calls: Arc<AheadCalls>,
}

#[async_trait]
impl Log for Ahead {
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
        Ok(Box::new(AheadConsumer {
            inner: Log::consumer(&*self.log, group, topics).await?,
            log: Arc::clone(&self.log),
            calls: Arc::clone(&self.calls),
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
impl Consumer for AheadConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        self.inner.poll(max, wait).await
    }
    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        self.inner.complete(outputs, offsets).await
    }
    fn committer(&self) -> Arc<dyn Committer> {
        Arc::new(AheadCommitter {
            inner: self.inner.committer(),
            log: Arc::clone(&self.log),
            calls: Arc::clone(&self.calls),
        })
    }
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
    let log = Arc::new(Ahead {
        log: Arc::clone(&segments),
        calls: Arc::clone(&calls),
    });
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
    // The segment log's own committer does not overlap; this one says it does.
    let task = tokio::spawn(
        Runner::new(log.clone(), stage.clone(), vec!["in".into()], policy).run(stop.clone()),
    );
    for i in 0..40 {
        log.append(vec![msg("in", &format!("k{i}"), &format!("v{i:02}"))])
            .await
            .expect("append");
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments
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
    let mut out: Vec<String> = log
        .read("out", 1000)
        .await
        .expect("read")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    out.sort();
    let wanted: Vec<String> = (0..40).map(|i| format!("v{i:02}")).collect();
    assert_eq!(out, wanted);
}
