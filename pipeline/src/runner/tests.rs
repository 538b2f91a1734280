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

mod completion;
