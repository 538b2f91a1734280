//! The log as earlier versions kept it, in redb tables, and its move into segment files.
//!
//! A data directory written before the segment log holds its records, committed offsets and
//! partition ends in a redb database (its own under `DIR/log`, or inside the stores' database
//! in the oldest layout). At start the binary moves them into the segment log with the same
//! topics, partitions, offsets and positions, so no order is stranded and every group carries on
//! where it was; then the old tables are dropped. A move cut short by a crash is simply done
//! again: records land at their own offsets, so doing it twice changes nothing.

use super::SegmentError;
use super::SegmentLog;
use super::writer::Request;
use crate::kv::redb::{ReadableTable, TableDefinition};
use crate::kv::{Engine, open_existing};
use bytes::Bytes;

/// `(topic, partition, offset)` → framed record.
const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("log_records");
/// `(group, topic, partition)` → next offset to read.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("log_offsets");
/// `(topic, partition)` → next offset.
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("log_ends");
/// `topic` → partition count.
const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("log_topics");

/// Records moved per write.
const CHUNK: usize = 5_000;

/// The topics (with partition counts) of a log kept in `engine`; empty if it holds none.
pub fn topics(engine: &Engine) -> Result<Vec<(String, u32)>, SegmentError> {
    Ok(engine.read(|txn| {
        let mut out = Vec::new();
        if let Some(t) = open_existing(txn, TOPICS)? {
            for row in t.iter()? {
                let (name, partitions) = row?;
                out.push((name.value().to_owned(), partitions.value()));
            }
        }
        Ok(out)
    })?)
}

/// Moves the log kept in `engine` into `log`; returns how many records moved. `progress` hears
/// `(moved, total)` after each chunk.
pub async fn import(
    engine: &Engine,
    log: &SegmentLog,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, SegmentError> {
    let topics = topics(engine)?;
    if topics.is_empty() {
        return Ok(0);
    }
    for (name, partitions) in &topics {
        let mismatched = log
            .request(|reply| Request::Topics {
                names: vec![name.clone()],
                partitions: *partitions,
                reply,
            })
            .await?;
        if !mismatched.is_empty() {
            return Err(SegmentError::Invalid(format!(
                "cannot move the earlier log: {} in both",
                mismatched.join(", ")
            )));
        }
    }
    let total: u64 = engine.read(|txn| {
        use crate::kv::redb::ReadableTableMetadata;
        Ok(match open_existing(txn, RECORDS)? {
            Some(t) => t.len()?,
            None => 0,
        })
    })?;
    let ends: Vec<((String, u32), u64)> = engine.read(|txn| {
        let mut out = Vec::new();
        if let Some(t) = open_existing(txn, ENDS)? {
            for row in t.iter()? {
                let (k, v) = row?;
                let (topic, partition) = k.value();
                out.push(((topic.to_owned(), partition), v.value()));
            }
        }
        Ok(out)
    })?;
    let commits: Vec<(String, String, u32, u64)> = engine.read(|txn| {
        let mut out = Vec::new();
        if let Some(t) = open_existing(txn, OFFSETS)? {
            for row in t.iter()? {
                let (k, v) = row?;
                let (group, topic, partition) = k.value();
                out.push((group.to_owned(), topic.to_owned(), partition, v.value()));
            }
        }
        Ok(out)
    })?;
    let mut moved = 0u64;
    for (topic, partitions) in &topics {
        for partition in 0..*partitions {
            let mut from = 0u64;
            let mut first: Option<u64> = None;
            let mut last_end = 0u64;
            loop {
                let chunk: Vec<(u64, Vec<u8>)> = engine.read(|txn| {
                    let mut out = Vec::new();
                    if let Some(t) = open_existing(txn, RECORDS)? {
                        for row in t
                            .range(
                                (topic.as_str(), partition, from)
                                    ..=(topic.as_str(), partition, u64::MAX),
                            )?
                            .take(CHUNK)
                        {
                            let (k, v) = row?;
                            out.push((k.value().2, v.value().to_vec()));
                        }
                    }
                    Ok(out)
                })?;
                let Some((last, _)) = chunk.last() else {
                    break;
                };
                first.get_or_insert(chunk[0].0);
                from = last + 1;
                last_end = from;
                let count = chunk.len() as u64;
                let records = chunk
                    .into_iter()
                    .map(|(offset, frame)| (topic.clone(), partition, offset, Bytes::from(frame)))
                    .collect();
                log.import(records, Vec::new(), Vec::new()).await?;
                moved += count;
                progress(moved, total);
            }
            let stored_end = ends
                .iter()
                .find(|((t, p), _)| t == topic && *p == partition)
                .map_or(0, |(_, end)| *end);
            // A partition trimmed empty by a version that kept no ends row still ends where
            // its groups committed.
            let committed_end = commits
                .iter()
                .filter(|(_, t, p, _)| t == topic && *p == partition)
                .map(|(_, _, _, next)| *next)
                .max()
                .unwrap_or(0);
            let end = stored_end.max(last_end).max(committed_end);
            let base = first.unwrap_or(end);
            log.import(
                Vec::new(),
                vec![(topic.clone(), partition, base, end)],
                Vec::new(),
            )
            .await?;
        }
    }
    log.import(Vec::new(), Vec::new(), commits).await?;
    Ok(moved)
}

/// Drops the log's tables from `engine` once they were moved.
pub async fn drop_tables(engine: &Engine) -> Result<(), SegmentError> {
    engine
        .submit(|txn| {
            txn.delete_table(RECORDS)?;
            txn.delete_table(OFFSETS)?;
            txn.delete_table(ENDS)?;
            txn.delete_table(TOPICS)?;
            Ok(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::format::encode_frame_into;
    use std::time::Duration;

    #[tokio::test]
    async fn a_log_in_redb_moves_with_its_offsets_and_positions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(dir.path()).expect("engine");
        let frame = |value: &str| {
            let mut out = Vec::new();
            encode_frame_into(
                &mut out,
                &vec![("h".into(), "v".into())],
                b"key",
                value.as_bytes(),
            )
            .expect("fits");
            out
        };
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(&format!("v{i}"))).collect();
        engine
            .submit(move |txn| {
                txn.open_table(TOPICS)?.insert("t", 2)?;
                let mut records = txn.open_table(RECORDS)?;
                // Partition 1 was trimmed below 3 and has a gap at 5 (a failed write).
                for (offset, f) in [(3u64, &frames[0]), (4, &frames[1]), (6, &frames[2])] {
                    records.insert(("t", 1, offset), f.as_slice())?;
                }
                records.insert(("t", 0, 0), frames[3].as_slice())?;
                txn.open_table(ENDS)?.insert(("t", 1), 7)?;
                txn.open_table(OFFSETS)?.insert(("g", "t", 1), 4)?;
                Ok(())
            })
            .await
            .expect("old log");
        let log = SegmentLog::open(&dir.path().join("segments"), 2).expect("log");
        let mut seen = Vec::new();
        let moved = import(&engine, &log, |m, t| seen.push((m, t)))
            .await
            .expect("moves");
        assert_eq!(moved, 4);
        assert_eq!(seen.last(), Some(&(4, 4)));
        drop_tables(&engine).await.expect("drops");
        assert!(topics(&engine).expect("reads").is_empty());

        let records = log.read("t", 100).await.expect("read");
        let p1: Vec<(u64, Bytes)> = records
            .iter()
            .filter(|r| r.partition == 1)
            .map(|r| (r.offset, r.value.clone()))
            .collect();
        assert_eq!(
            p1,
            vec![
                (3, Bytes::from("v0")),
                (4, Bytes::from("v1")),
                (6, Bytes::from("v2"))
            ]
        );
        let mut c = log
            .consumer("g", &["t".to_owned()])
            .await
            .expect("consumer");
        let got = c.poll(100, Duration::from_millis(20)).await.expect("poll");
        let offsets: Vec<(u32, u64)> = got.iter().map(|r| (r.partition, r.offset)).collect();
        assert_eq!(
            offsets,
            vec![(0, 0), (1, 4), (1, 6)],
            "the group resumes where it was, skipping the gap"
        );
        let positions = log
            .append(vec![crate::record::Message {
                topic: "t".into(),
                key: Bytes::from("key"),
                value: Bytes::from("new"),
                headers: vec![],
                decoded: None,
            }])
            .await
            .expect("append");
        let crate::record::Position { partition, offset } = positions[0];
        assert!(
            partition == 0 && offset == 1 || partition == 1 && offset == 7,
            "appends continue after the moved ends: {positions:?}"
        );
    }
}
