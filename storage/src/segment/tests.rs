use super::*;
use bytes::Bytes;

fn msg(topic: &str, key: &str, value: &str) -> Message {
    Message {
        topic: topic.into(),
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
        headers: vec![("h".into(), key.to_owned())],
        decoded: None,
    }
}

/// The values of a topic's first records (at most 10), in offset order.
async fn values(log: &SegmentLog, topic: &str) -> Vec<Bytes> {
    log.read(topic, 10)
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.value)
        .collect()
}

fn small(partitions: u32) -> SegmentLogOptions {
    SegmentLogOptions {
        partitions,
        cache_bytes: 4 * 1024,
        segment_bytes: 16 * 1024,
        ..SegmentLogOptions::new(partitions)
    }
}

#[tokio::test]
async fn a_second_process_is_kept_out_and_reopening_after_drop_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SegmentLog::open(dir.path(), 2).expect("opens");
    let err = SegmentLog::open(dir.path(), 2)
        .err()
        .expect("a second open is refused");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(log);
    SegmentLog::open(dir.path(), 2).expect("reopens once the first is gone");
}

#[tokio::test]
async fn records_past_the_cache_and_across_segments_are_read_back_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["a".to_owned()];
    {
        let log = SegmentLog::open_with(dir.path(), small(2)).expect("opens");
        log.ensure_topics(&topics).await.expect("topics");
        for i in 0..300 {
            log.append(vec![msg("a", &format!("k{}", i % 5), &"x".repeat(200))])
                .await
                .expect("append");
        }
        let segments = log.inner.state.read().segments.len();
        assert!(segments > 3, "only {segments} segments for 60 KiB");
        assert!(log.inner.state.read().cache_bytes <= 4 * 1024);
        let all = log.read("a", 10_000).await.expect("read");
        assert_eq!(all.len(), 300);
        assert!(all.iter().all(|r| r.value.len() == 200
            && r.header("h") == Some(std::str::from_utf8(&r.key).expect("utf-8"))));
    }
    let log = SegmentLog::open_with(dir.path(), small(2)).expect("reopens");
    let mut c = log.consumer("g", &topics).await.expect("consumer");
    let mut seen = 0;
    loop {
        let got = c.poll(64, Duration::from_millis(20)).await.expect("poll");
        if got.is_empty() {
            break;
        }
        seen += got.len();
    }
    assert_eq!(
        seen, 300,
        "every record survives a reopen, in or out of cache"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_the_log_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["a".to_owned()];
    let newest = {
        let log = SegmentLog::open(dir.path(), 1).expect("opens");
        log.ensure_topics(&topics).await.expect("topics");
        log.append(vec![msg("a", "k", "one"), msg("a", "k", "two")])
            .await
            .expect("append");
        let id = *log.inner.state.read().segments.keys().last().expect("one");
        dir.path().join(format::segment_name(id))
    };
    // A crash mid-write: half a batch at the end of the newest segment.
    let mut bytes = std::fs::read(&newest).expect("read");
    let whole = bytes.len();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]);
    std::fs::write(&newest, &bytes).expect("write");
    let log = SegmentLog::open(dir.path(), 1).expect("recovers");
    assert_eq!(
        std::fs::metadata(&newest).expect("stat").len() as usize,
        whole,
        "the torn batch is cut off"
    );
    let positions = log
        .append(vec![msg("a", "k", "three")])
        .await
        .expect("append after recovery");
    assert_eq!(
        positions,
        vec![crate::record::Position {
            partition: 0,
            offset: 2
        }]
    );
    assert_eq!(values(&log, "a").await, ["one", "two", "three"]);
}

/// A crash can stop a group commit's write at any byte, and a file that grew for it may read
/// zeros where its bytes did not reach the disk. Recovery keeps everything before the last
/// batch, and of the last batch (a stage's hop: its outputs and its input's offset commit in
/// one write) all or nothing; the log then carries on from there.
#[tokio::test]
async fn a_cut_at_every_byte_of_the_last_batch_keeps_all_of_it_or_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["in".to_owned(), "out".to_owned()];
    let (one, two) = (
        format!("ONE{}", "1".repeat(150)),
        format!("TWO{}", "2".repeat(150)),
    );
    let (name, start, whole) = {
        let log = SegmentLog::open(dir.path(), 1).expect("opens");
        log.ensure_topics(&topics).await.expect("topics");
        log.append(vec![msg("in", "k1", "one"), msg("in", "k2", "two")])
            .await
            .expect("append");
        let mut c = log.consumer("g", &topics[..1]).await.expect("consumer");
        let got = c.poll(10, Duration::from_millis(20)).await.expect("poll");
        assert_eq!(got.len(), 2);
        let id = *log.inner.state.read().segments.keys().last().expect("one");
        let name = format::segment_name(id);
        let start = std::fs::metadata(dir.path().join(&name))
            .expect("stat")
            .len() as usize;
        let mut offsets = Offsets::new();
        offsets.insert(got[1].topic_partition(), 2);
        // Outputs long enough that the batch's length takes two bytes: a cut inside the
        // length field then reads as a shorter batch.
        c.complete(
            vec![msg("out", "k1", &one), msg("out", "k2", &two)],
            offsets,
        )
        .await
        .expect("the hop's write");
        let whole = std::fs::read(dir.path().join(&name)).expect("read");
        (name, start, whole)
    };
    assert_eq!(
        std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| format::segment_id(&e.file_name().to_string_lossy()).is_some())
            .count(),
        1,
        "one segment holds everything"
    );
    let end = whole.len();
    assert!(
        end - start > 256 + format::BATCH_HEADER,
        "the last batch is {start}..{end}"
    );
    for zero_filled in [false, true] {
        for cut in start..=end {
            let copy = tempfile::tempdir().expect("tempdir");
            let mut bytes = whole[..cut].to_vec();
            if zero_filled {
                bytes.resize(end, 0);
            }
            std::fs::write(copy.path().join(&name), &bytes).expect("write");
            let case = format!("cut at byte {cut} of {start}..{end}, zero-filled: {zero_filled}");
            let log = SegmentLog::open(copy.path(), 1)
                .unwrap_or_else(|e| panic!("{case}: recovery refused: {e}"));
            // Zeros where the batch ends in zeros anyway (an offset's high bytes) complete it.
            let complete = bytes == whole;
            assert_eq!(
                values(&log, "in").await,
                ["one", "two"],
                "{case}: what came before is kept"
            );
            let outs = values(&log, "out").await;
            let expected: &[&str] = if complete { &[&one, &two] } else { &[] };
            assert_eq!(outs, expected, "{case}: the outputs, all or none");
            let mut c = log.consumer("g", &topics[..1]).await.expect("consumer");
            let again = c.poll(10, Duration::from_millis(20)).await.expect("poll");
            assert_eq!(
                again.len(),
                if complete { 0 } else { 2 },
                "{case}: the commit stands with the outputs, or the inputs are read again"
            );
            let positions = log
                .append(vec![msg("out", "k3", "next")])
                .await
                .unwrap_or_else(|e| panic!("{case}: append after recovery: {e}"));
            assert_eq!(
                positions[0].offset,
                if complete { 2 } else { 0 },
                "{case}: offsets carry on"
            );
        }
    }
}

#[tokio::test]
async fn damage_in_an_older_segment_is_an_error_not_a_silent_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = SegmentLog::open(dir.path(), 1).expect("opens");
        log.ensure_topics(&["a".to_owned()]).await.expect("topics");
        log.append(vec![msg("a", "k", "one")])
            .await
            .expect("append");
    }
    // Reopening seals that segment and starts another.
    drop(SegmentLog::open(dir.path(), 1).expect("reopens"));
    let first = dir.path().join(format::segment_name(0));
    let mut bytes = std::fs::read(&first).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&first, &bytes).expect("write");
    let err = SegmentLog::open(dir.path(), 1).err().expect("refused");
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[tokio::test]
async fn a_decoded_payload_travels_through_the_cache_but_not_through_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["a".to_owned()];
    {
        let log = SegmentLog::open(dir.path(), 1).expect("opens");
        log.ensure_topics(&topics).await.expect("topics");
        let mut c = log.consumer("g", &topics).await.expect("consumer");
        let mut m = msg("a", "k", "42");
        m.decoded = Some(crate::record::Decoded::new(42u32));
        log.append(vec![m]).await.expect("append");
        let got = c.poll(10, Duration::from_millis(20)).await.expect("poll");
        assert_eq!(got[0].value, "42");
        assert_eq!(
            got[0].decoded.as_ref().and_then(|d| d.get::<u32>()),
            Some(&42)
        );
        assert!(
            got[0]
                .decoded
                .as_ref()
                .and_then(|d| d.get::<u64>())
                .is_none(),
            "only as the type it was"
        );
    }
    let log = SegmentLog::open(dir.path(), 1).expect("reopens");
    let got = log.read("a", 10).await.expect("read");
    assert_eq!(got[0].value, "42");
    assert!(got[0].decoded.is_none(), "read from disk: the bytes only");
}

#[tokio::test]
async fn a_topic_nobody_here_reads_keeps_no_decoded_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["a".to_owned()];
    let log = SegmentLog::open(dir.path(), 1).expect("opens");
    log.ensure_topics(&topics).await.expect("topics");
    let mut m = msg("a", "k", "42");
    m.decoded = Some(crate::record::Decoded::new(42u32));
    log.append(vec![m]).await.expect("append");
    // A consumer that comes later still gets the record, decoded from its bytes.
    let mut c = log.consumer("g", &topics).await.expect("consumer");
    let got = c.poll(10, Duration::from_millis(20)).await.expect("poll");
    assert_eq!(got[0].value, "42");
    assert!(got[0].decoded.is_none(), "no reader when it was appended");
}

#[tokio::test]
async fn a_refused_append_leaves_no_gap_in_the_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SegmentLog::open(dir.path(), 1).expect("opens");
    log.ensure_topics(&["a".to_owned()]).await.expect("topics");
    let mut bad = msg("a", "k", "too big a header");
    bad.headers = vec![("x".repeat(70_000), "v".into())];
    let err = log
        .append(vec![msg("a", "k", "fine"), bad])
        .await
        .expect_err("a header name over 64 KiB cannot be framed");
    assert!(err.to_string().contains("too large"), "{err}");
    let positions = log
        .append(vec![msg("a", "k", "next")])
        .await
        .expect("append");
    assert_eq!(
        positions,
        vec![crate::record::Position {
            partition: 0,
            offset: 0
        }],
        "nothing of the refused append took an offset"
    );
    assert_eq!(log.read("a", 10).await.expect("read").len(), 1);
}

#[tokio::test]
async fn a_bad_batch_with_batches_behind_it_is_damage_even_in_the_newest_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let newest = {
        let log = SegmentLog::open(dir.path(), 1).expect("opens");
        log.ensure_topics(&["a".to_owned()]).await.expect("topics");
        log.append(vec![msg("a", "k", "one")])
            .await
            .expect("append");
        log.append(vec![msg("a", "k", "two")])
            .await
            .expect("append");
        let id = *log.inner.state.read().segments.keys().last().expect("one");
        dir.path().join(format::segment_name(id))
    };
    // Flip a byte inside the first append's batch: the second is still behind it.
    let mut bytes = std::fs::read(&newest).expect("read");
    let at = bytes
        .windows(3)
        .position(|w| w == b"one")
        .expect("record bytes");
    bytes[at] ^= 0xff;
    std::fs::write(&newest, &bytes).expect("write");
    let err = SegmentLog::open(dir.path(), 1).err().expect("refused");
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[tokio::test]
async fn trimmed_segments_are_deleted_and_stragglers_move_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topics = vec!["busy".to_owned(), "busy.dlq".to_owned()];
    let log = SegmentLog::open_with(dir.path(), small(1)).expect("opens");
    log.ensure_topics(&topics).await.expect("topics");
    // One dead letter early on, then enough traffic for many segments.
    log.append(vec![msg("busy.dlq", "poison", "keep me")])
        .await
        .expect("append");
    for i in 0..400 {
        log.append(vec![msg("busy", &format!("k{i}"), &"y".repeat(200))])
            .await
            .expect("append");
    }
    let mut c = log.consumer("g", &topics[..1]).await.expect("consumer");
    let mut offsets = Offsets::new();
    loop {
        let got = c.poll(500, Duration::from_millis(20)).await.expect("poll");
        if got.is_empty() {
            break;
        }
        for r in got {
            offsets.insert(r.topic_partition(), r.offset + 1);
        }
    }
    c.complete(vec![], offsets).await.expect("commit");
    let before = log.inner.state.read().segments.len();
    let trimmed = log
        .trim(&log.end_offsets().expect("ends"))
        .await
        .expect("trim");
    assert_eq!(trimmed, 400);
    let after = log.inner.state.read().segments.len();
    assert!(
        after <= 3,
        "{before} segments before the trim, {after} after"
    );
    let on_disk = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| format::segment_id(&e.file_name().to_string_lossy()).is_some())
        })
        .count();
    assert_eq!(on_disk, after, "deleted segments are gone from the disk");
    let dlq = log.read("busy.dlq", 10).await.expect("read");
    assert_eq!(dlq.len(), 1, "the dead letter was moved, not lost");
    assert_eq!(dlq[0].value, "keep me");
    drop(c);
    drop(log);
    let log = SegmentLog::open_with(dir.path(), small(1)).expect("reopens");
    assert_eq!(log.read("busy.dlq", 10).await.expect("read").len(), 1);
    assert!(log.read("busy", 10).await.expect("read").is_empty());
    let positions = log
        .append(vec![msg("busy", "k", "next")])
        .await
        .expect("append");
    assert_eq!(
        positions[0].offset, 400,
        "offsets continue after the trimmed ones"
    );
}

#[tokio::test]
async fn a_member_behind_on_several_topics_reads_them_at_the_same_pace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SegmentLog::open(dir.path(), 1).expect("opens");
    let topics = vec!["early".to_owned(), "late".to_owned(), "quiet".to_owned()];
    log.ensure_topics(&topics).await.expect("topics");
    // 300 records waiting on one topic, 100 on another, 2 on the third.
    let mut batch: Vec<Message> = (0..300)
        .map(|i| msg("early", &format!("{i}"), "e"))
        .collect();
    batch.extend((0..100).map(|i| msg("late", &format!("{i}"), "l")));
    batch.extend((0..2).map(|i| msg("quiet", &format!("{i}"), "q")));
    log.append(batch).await.expect("append");
    let mut c = log.consumer("g", &topics).await.expect("consumer");
    let count =
        |records: &[Record], topic: &str| records.iter().filter(|r| r.topic == topic).count();
    let first = c.poll(80, Duration::from_millis(20)).await.expect("poll");
    assert_eq!(first.len(), 80);
    // In proportion to what waits (300 : 100 : 2 of 80 is 59.7 : 19.9 : 0.4), the remainder
    // one each from the rotating first topic on; not the first topic's 80 alone.
    let (early, late) = (count(&first, "early"), count(&first, "late"));
    assert!((59..=60).contains(&early), "{early} of early");
    assert!((19..=20).contains(&late), "{late} of late");
    // Offsets stay in order per topic, and every record comes once, the quiet ones too.
    let mut all = first;
    loop {
        let got = c.poll(80, Duration::from_millis(20)).await.expect("poll");
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    for topic in &topics {
        let offsets: Vec<u64> = all
            .iter()
            .filter(|r| &r.topic == topic)
            .map(|r| r.offset)
            .collect();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(offsets, expected, "{topic}");
    }
    assert_eq!(
        (
            count(&all, "early"),
            count(&all, "late"),
            count(&all, "quiet")
        ),
        (300, 100, 2)
    );
}
