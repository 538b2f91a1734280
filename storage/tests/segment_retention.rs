//! Retention of the embedded log: only what every group has committed, and never a topic no
//! group reads.

use bytes::Bytes;
use orderflow_storage::record::{Message, Offsets, Position, TopicPartition};
use orderflow_storage::segment::SegmentLog;
use std::time::Duration;

fn msg(topic: &str, i: usize) -> Message {
    Message {
        topic: topic.into(),
        key: Bytes::from(format!("k{}", i % 7)),
        value: Bytes::from(format!("v{i}")),
        headers: vec![],
        decoded: None,
    }
}

#[tokio::test]
async fn trimming_keeps_uncommitted_records_and_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SegmentLog::open(dir.path(), 2).expect("log");
    let topics = vec!["r.in".to_owned(), "r.in.dlq".to_owned()];
    log.ensure_topics(&topics).await.expect("topics");
    log.append((0..100).map(|i| msg("r.in", i)).collect())
        .await
        .expect("append");
    log.append((0..10).map(|i| msg("r.in.dlq", i)).collect())
        .await
        .expect("append");

    // Group g commits 60 records; group h commits only 20 of them: h sets the floor.
    let mut g = log.consumer("g", &topics[..1]).await.expect("consumer");
    let first = g.poll(60, Duration::from_millis(50)).await.expect("poll");
    assert_eq!(first.len(), 60);
    let mut offsets = Offsets::new();
    for r in &first {
        offsets.insert(r.topic_partition(), r.offset + 1);
    }
    g.complete(vec![], offsets).await.expect("commit");
    let mut h = log.consumer("h", &topics[..1]).await.expect("consumer");
    let early = h.poll(20, Duration::from_millis(50)).await.expect("poll");
    let mut h_offsets = Offsets::new();
    for r in &early {
        h_offsets.insert(r.topic_partition(), r.offset + 1);
    }
    h.complete(vec![], h_offsets).await.expect("commit");

    let deleted = log
        .trim(&log.end_offsets().expect("ends"))
        .await
        .expect("trim");
    assert_eq!(deleted, 20, "only what both groups committed goes");
    assert_eq!(log.read("r.in", 1000).await.expect("read").len(), 80);
    assert_eq!(
        log.read("r.in.dlq", 1000).await.expect("read").len(),
        10,
        "dead letters stay"
    );

    // The groups carry on where they were; nothing they still need is gone.
    let rest = g.poll(1000, Duration::from_millis(50)).await.expect("poll");
    assert_eq!(rest.len(), 40);
    let mut h_again = log.consumer("h", &topics[..1]).await.expect("consumer");
    assert_eq!(
        h_again
            .poll(1000, Duration::from_millis(50))
            .await
            .expect("poll")
            .len(),
        80
    );

    // Retention passes with zero retention trim to the floor by themselves.
    let mut offsets = Offsets::new();
    for r in log.read("r.in", 1000).await.expect("read") {
        let next = offsets.entry(r.topic_partition()).or_insert(0);
        *next = (*next).max(r.offset + 1);
    }
    h_again
        .complete(vec![], offsets.clone())
        .await
        .expect("commit");
    g.complete(vec![], offsets).await.expect("commit");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !log.read("r.in", 1000).await.expect("read").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not trim"
        );
        log.retention_pass(Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(log.read("r.in.dlq", 1000).await.expect("read").len(), 10);
    // Offsets keep growing after a trim: new records never reuse a deleted offset.
    let ends = log.end_offsets().expect("ends");
    let positions = log.append(vec![msg("r.in", 3)]).await.expect("append");
    let Position { partition, offset } = positions[0];
    assert_eq!(
        offset,
        ends[&TopicPartition::new("r.in", partition)],
        "the new record continues after every trimmed offset"
    );
    assert!(offset > 0, "its partition held trimmed records before");
}

#[tokio::test]
async fn offsets_continue_after_a_partition_is_trimmed_empty_and_reopened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["e.in".to_owned()];
    let end_before = {
        let log = SegmentLog::open(dir.path(), 1).expect("log");
        log.ensure_topics(&topics).await.expect("topics");
        log.append((0..50).map(|i| msg("e.in", i)).collect())
            .await
            .expect("append");
        let mut c = log.consumer("g", &topics).await.expect("consumer");
        let records = c.poll(1000, Duration::from_millis(50)).await.expect("poll");
        let mut offsets = Offsets::new();
        offsets.insert(
            TopicPartition::new("e.in", 0),
            records.last().expect("records").offset + 1,
        );
        c.complete(vec![], offsets).await.expect("commit");
        assert_eq!(
            log.trim(&log.end_offsets().expect("ends"))
                .await
                .expect("trim"),
            50
        );
        assert!(log.read("e.in", 10).await.expect("read").is_empty());
        log.end_offsets().expect("ends")[&TopicPartition::new("e.in", 0)]
    };
    assert_eq!(end_before, 50);
    // Dropping the last handle released the directory, so it opens again at once.
    let log = SegmentLog::open(dir.path(), 1).expect("reopens");
    let positions = log.append(vec![msg("e.in", 99)]).await.expect("append");
    assert_eq!(
        positions[0].offset, 50,
        "a new record continues after the trimmed ones"
    );
    let mut c = log.consumer("g", &topics).await.expect("consumer");
    let got = c.poll(10, Duration::from_millis(50)).await.expect("poll");
    assert_eq!(
        got.len(),
        1,
        "the group sees the record appended after the restart"
    );
}
