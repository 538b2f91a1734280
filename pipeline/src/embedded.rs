//! The [`Log`] on the embedded engine: records and group offsets in one redb database.
//!
//! A record lives under `(topic, partition, offset)`. Appends go through the engine's
//! group-commit writer, so an append resolves only when it is on disk, and many concurrent
//! appends share one fsync. [`Consumer::complete`] writes a stage's outputs and its new offsets in
//! the same transaction: on this backend a stage's step is atomic, not just at-least-once.

use crate::log::{Consumer, Headers, Log, LogError, Message, Offsets, Record};
use async_trait::async_trait;
use bytes::Bytes;
use orderflow_embedded::redb::{ReadableTable, TableDefinition, WriteTransaction};
use orderflow_embedded::{Engine, EngineError, open_existing, redb};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// `(topic, partition, offset)` → framed record.
const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> = TableDefinition::new("log_records");
/// `(group, topic, partition)` → next offset to read.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("log_offsets");
/// `(topic, partition)` → next offset, written with the records it covers.
const ENDS: TableDefinition<(&str, u32), u64> = TableDefinition::new("log_ends");
/// `topic` → partition count.
const TOPICS: TableDefinition<&str, u32> = TableDefinition::new("log_topics");

impl From<EngineError> for LogError {
    fn from(e: EngineError) -> Self {
        LogError::Unavailable(e.to_string())
    }
}

/// The embedded log.
#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    partitions: u32,
    /// Next offset per partition, owned by the writer thread (only closures touch it). A failed
    /// group leaves a gap, which readers skip over: offsets need only grow.
    next: Mutex<HashMap<(String, u32), u64>>,
    /// Woken after every durable append.
    appended: Notify,
}

impl EmbeddedLog {
    /// A log on `engine` whose topics have `partitions` partitions each.
    pub fn new(engine: Engine, partitions: u32) -> Result<Self, LogError> {
        if partitions == 0 {
            return Err(LogError::Invalid("partitions must be at least 1".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                partitions,
                next: Mutex::new(HashMap::new()),
                appended: Notify::new(),
            }),
        })
    }

    fn partition_of(&self, key: &[u8]) -> u32 {
        // FNV-1a: stable across runs and versions, so a key keeps its partition after restart.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in key {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash % self.inner.partitions
    }

    /// Queues the append of `messages` inside the writer's transaction.
    fn write_records(
        inner: &Inner,
        txn: &WriteTransaction,
        messages: &[(u32, Message)],
    ) -> Result<Vec<(u32, u64)>, redb::Error> {
        let mut table = txn.open_table(RECORDS)?;
        let mut ends = txn.open_table(ENDS)?;
        let mut next = inner.next.lock();
        let mut positions = Vec::with_capacity(messages.len());
        let mut touched: HashMap<(&str, u32), u64> = HashMap::new();
        for (partition, message) in messages {
            let topic = message.topic.as_str();
            let slot = (message.topic.clone(), *partition);
            let offset = match next.get(&slot) {
                Some(offset) => *offset,
                // The stored end survives trimming: even a partition trimmed empty continues
                // after its last offset, so committed group offsets never point past new records.
                None => {
                    let stored = ends.get((topic, *partition))?.map_or(0, |v| v.value());
                    let last = table
                        .range((topic, *partition, 0)..=(topic, *partition, u64::MAX))?
                        .next_back()
                        .transpose()?
                        .map_or(0, |(k, _)| k.value().2 + 1);
                    stored.max(last)
                }
            };
            let frame =
                encode_frame(&message.headers, &message.key, &message.value).ok_or_else(|| {
                    redb::Error::Corrupted(format!("a record for {topic} is too large to frame"))
                })?;
            table.insert((topic, *partition, offset), frame.as_slice())?;
            next.insert(slot, offset + 1);
            touched.insert((topic, *partition), offset + 1);
            positions.push((*partition, offset));
        }
        for ((topic, partition), end) in touched {
            ends.insert((topic, partition), end)?;
        }
        Ok(positions)
    }

    fn route(&self, messages: Vec<Message>) -> Vec<(u32, Message)> {
        messages
            .into_iter()
            .map(|m| (self.partition_of(&m.key), m))
            .collect()
    }

    /// Where every partition of every topic ends now (its next offset).
    pub fn end_offsets(&self) -> Result<Offsets, LogError> {
        let ends = self.inner.engine.read(|txn| {
            let mut out = Offsets::new();
            if let Some(t) = open_existing(txn, ENDS)? {
                for row in t.iter()? {
                    let (key, end) = row?;
                    let (topic, partition) = key.value();
                    out.insert((topic.to_owned(), partition), end.value());
                }
            }
            Ok(out)
        })?;
        Ok(ends)
    }

    /// Every group's committed position: `(group, topic, partition) → next offset`.
    fn committed(&self) -> Result<BTreeMap<(String, String, u32), u64>, LogError> {
        let committed = self.inner.engine.read(|txn| {
            let mut committed = BTreeMap::new();
            if let Some(t) = open_existing(txn, OFFSETS)? {
                for row in t.iter()? {
                    let (key, next) = row?;
                    let (group, topic, partition) = key.value();
                    committed.insert(
                        (group.to_owned(), topic.to_owned(), partition),
                        next.value(),
                    );
                }
            }
            Ok(committed)
        })?;
        Ok(committed)
    }

    /// The lowest committed offset of each partition over every group that reads its topic.
    fn committed_floor(&self) -> Result<Offsets, LogError> {
        let mut floor = Offsets::new();
        for ((_, topic, partition), next) in self.committed()? {
            let slot = floor.entry((topic, partition)).or_insert(u64::MAX);
            *slot = (*slot).min(next);
        }
        Ok(floor)
    }

    /// How far each consumer group is behind the end of each partition it reads:
    /// `(group, topic, partition) → records not yet committed`.
    pub fn lag(&self) -> Result<BTreeMap<(String, String, u32), u64>, LogError> {
        let ends = self.end_offsets()?;
        Ok(self
            .committed()?
            .into_iter()
            .map(|((group, topic, partition), next)| {
                let end = ends
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or_default();
                ((group, topic, partition), end.saturating_sub(next))
            })
            .collect())
    }

    /// Publishes [`EmbeddedLog::lag`] as `orderflow_stage_consumer_lag{stage,topic,partition}`
    /// every `every` (the Kafka adapter reports the same gauge from librdkafka's statistics).
    pub async fn run_lag_metrics(self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            match self.lag() {
                Ok(lag) => {
                    for ((group, topic, partition), behind) in lag {
                        metrics::gauge!(
                            "orderflow_stage_consumer_lag",
                            "stage" => group,
                            "topic" => topic,
                            "partition" => partition.to_string()
                        )
                        .set(behind as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Cannot read consumer lag"),
            }
        }
    }

    /// Deletes, per partition, the records below `horizon` that every consumer group of their
    /// topic has committed past; returns how many. Topics no group reads (the dead-letter
    /// topics) keep everything until they are replayed.
    pub async fn trim(&self, horizon: &Offsets) -> Result<u64, LogError> {
        // Small chunks with a pause between them: a soak at 1,000 orders/s with chunks of
        // 10,000 back to back stalled every stage for seconds at each trim (BENCHMARKS.md).
        const CHUNK: usize = 1_000;
        const PAUSE: Duration = Duration::from_millis(5);
        let mut deleted = 0;
        for ((topic, partition), committed) in self.committed_floor()? {
            let Some(limit) = horizon.get(&(topic.clone(), partition)) else {
                continue;
            };
            let upto = committed.min(*limit);
            loop {
                // Bounded chunks keep each write short, so appends never wait long behind a trim.
                let topic = topic.clone();
                let removed = self
                    .inner
                    .engine
                    .submit(move |txn| {
                        let mut table = txn.open_table(RECORDS)?;
                        let offsets = table
                            .range(
                                (topic.as_str(), partition, 0)..(topic.as_str(), partition, upto),
                            )?
                            .take(CHUNK)
                            .map(|row| row.map(|(k, _)| k.value().2))
                            .collect::<Result<Vec<u64>, _>>()?;
                        for offset in &offsets {
                            table.remove((topic.as_str(), partition, *offset))?;
                        }
                        Ok(offsets.len())
                    })
                    .await?;
                deleted += removed as u64;
                if removed < CHUNK {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
        }
        Ok(deleted)
    }

    /// Trims the log every `every`, keeping at least `retention` of history and everything a
    /// consumer group has yet to commit, until `shutdown`.
    pub async fn run_retention(
        self,
        retention: Duration,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut marks: VecDeque<(Instant, Offsets)> = VecDeque::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            match self.end_offsets() {
                Ok(ends) => marks.push_back((Instant::now(), ends)),
                Err(e) => tracing::warn!(error = %e, "Cannot read the log's end offsets"),
            }
            // The newest mark that is at least `retention` old is how far history may go.
            let mut horizon = None;
            while marks
                .front()
                .is_some_and(|(at, _)| at.elapsed() >= retention)
            {
                horizon = marks.pop_front().map(|(_, offsets)| offsets);
            }
            let Some(horizon) = horizon else { continue };
            match self.trim(&horizon).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("orderflow_log_trimmed_total").increment(n);
                    tracing::info!(records = n, "Trimmed the log");
                }
                Err(e) => tracing::warn!(error = %e, "Cannot trim the log"),
            }
        }
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), LogError> {
        let topics = topics.to_vec();
        let partitions = self.inner.partitions;
        let existing = self
            .inner
            .engine
            .submit(move |txn| {
                let mut table = txn.open_table(TOPICS)?;
                let mut mismatched = Vec::new();
                for topic in &topics {
                    let current = table.get(topic.as_str())?.map(|v| v.value());
                    match current {
                        None => {
                            table.insert(topic.as_str(), partitions)?;
                        }
                        Some(p) if p != partitions => mismatched.push(format!("{topic} has {p}")),
                        Some(_) => {}
                    }
                }
                Ok(mismatched)
            })
            .await?;
        if existing.is_empty() {
            Ok(())
        } else {
            // Repartitioning would move keys between partitions and break per-order ordering.
            Err(LogError::Invalid(format!(
                "the data directory was created with another partition count ({}); configured {partitions}",
                existing.join(", ")
            )))
        }
    }

    async fn append(&self, messages: Vec<Message>) -> Result<Vec<(u32, u64)>, LogError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let routed = self.route(messages);
        let inner = Arc::clone(&self.inner);
        let positions = self
            .inner
            .engine
            .submit(move |txn| Self::write_records(&inner, txn, &routed))
            .await?;
        self.inner.appended.notify_waiters();
        Ok(positions)
    }

    async fn consumer(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Box<dyn Consumer>, LogError> {
        let group_owned = group.to_owned();
        let wanted: Vec<String> = topics.to_vec();
        let partitions = self.inner.partitions;
        let positions = self.inner.engine.read(move |txn| {
            let table = open_existing(txn, OFFSETS)?;
            let mut positions = Vec::new();
            for topic in &wanted {
                for partition in 0..partitions {
                    let committed = match &table {
                        Some(t) => t
                            .get((group_owned.as_str(), topic.as_str(), partition))?
                            .map(|v| v.value())
                            .unwrap_or(0),
                        None => 0,
                    };
                    positions.push(Assigned {
                        topic: topic.clone(),
                        partition,
                        next: committed,
                        committed,
                    });
                }
            }
            Ok(positions)
        })?;
        // Record the group's position on every partition it reads, so retention keeps what this
        // group has not committed yet, even on partitions it has not committed on at all.
        let group_owned = group.to_owned();
        let slots: Vec<(String, u32)> = positions
            .iter()
            .map(|a| (a.topic.clone(), a.partition))
            .collect();
        self.inner
            .engine
            .submit(move |txn| {
                let mut table = txn.open_table(OFFSETS)?;
                for (topic, partition) in &slots {
                    let key = (group_owned.as_str(), topic.as_str(), *partition);
                    if table.get(key)?.is_none() {
                        table.insert(key, 0)?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(Box::new(EmbeddedConsumer {
            log: self.clone(),
            group: group.to_owned(),
            assigned: positions,
            cursor: 0,
        }))
    }

    async fn read(&self, topic: &str, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        for partition in 0..self.inner.partitions {
            if out.len() >= max {
                break;
            }
            out.extend(read_partition(
                &self.inner.engine,
                topic,
                partition,
                0,
                max - out.len(),
            )?);
        }
        Ok(out)
    }

    async fn ready(&self) -> Result<(), LogError> {
        if !self.inner.engine.is_writable() {
            return Err(LogError::Unavailable(
                "the embedded writer is stopped".into(),
            ));
        }
        self.inner.engine.read(|_| Ok(()))?;
        Ok(())
    }
}

struct Assigned {
    topic: String,
    partition: u32,
    /// Next offset to hand out.
    next: u64,
    /// Next offset as committed; where `next` returns to after a failed `complete`.
    committed: u64,
}

struct EmbeddedConsumer {
    log: EmbeddedLog,
    group: String,
    assigned: Vec<Assigned>,
    /// Which assignment to read first next time, so no partition starves.
    cursor: usize,
}

impl EmbeddedConsumer {
    fn fetch(&mut self, max: usize) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        let count = self.assigned.len();
        for i in 0..count {
            if out.len() >= max {
                break;
            }
            let a = &mut self.assigned[(self.cursor + i) % count];
            let records = read_partition(
                &self.log.inner.engine,
                &a.topic,
                a.partition,
                a.next,
                max - out.len(),
            )?;
            if let Some(last) = records.last() {
                a.next = last.offset + 1;
            }
            out.extend(records);
        }
        self.cursor = (self.cursor + 1) % count.max(1);
        Ok(out)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let inner = Arc::clone(&self.log.inner);
        let notified = inner.appended.notified();
        tokio::pin!(notified);
        // Register before reading, so an append between the read and the wait is not missed.
        notified.as_mut().enable();
        let records = self.fetch(max)?;
        if !records.is_empty() {
            return Ok(records);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        self.fetch(max)
    }

    async fn complete(&mut self, outputs: Vec<Message>, offsets: Offsets) -> Result<(), LogError> {
        let routed = self.log.route(outputs);
        let inner = Arc::clone(&self.log.inner);
        let group = self.group.clone();
        let commit = offsets.clone();
        let has_outputs = !routed.is_empty();
        let result = self
            .log
            .inner
            .engine
            .submit(move |txn| {
                EmbeddedLog::write_records(&inner, txn, &routed)?;
                let mut table = txn.open_table(OFFSETS)?;
                for ((topic, partition), next) in &commit {
                    table.insert((group.as_str(), topic.as_str(), *partition), *next)?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                for a in &mut self.assigned {
                    if let Some(next) = offsets.get(&(a.topic.clone(), a.partition)) {
                        a.committed = *next;
                        // After a failed attempt rewound the reader, a retry that succeeds must
                        // not hand the records it just committed out again.
                        a.next = a.next.max(a.committed);
                    }
                }
                if has_outputs {
                    self.log.inner.appended.notify_waiters();
                }
                Ok(())
            }
            Err(e) => {
                // Hand the uncommitted records out again: nothing of this batch was written.
                for a in &mut self.assigned {
                    a.next = a.committed;
                }
                Err(e.into())
            }
        }
    }
}

fn read_partition(
    engine: &Engine,
    topic: &str,
    partition: u32,
    from: u64,
    max: usize,
) -> Result<Vec<Record>, LogError> {
    let records = engine.read(|txn| {
        let Some(table) = open_existing(txn, RECORDS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in table
            .range((topic, partition, from)..=(topic, partition, u64::MAX))?
            .take(max)
        {
            let (key, value) = row?;
            out.push((key.value().2, value.value().to_vec()));
        }
        Ok(out)
    })?;
    records
        .into_iter()
        .map(|(offset, frame)| {
            // An unreadable frame is handed out as it is, flagged, so the stage fails to decode
            // it and the runner dead-letters it, instead of every poll of the partition failing.
            let (headers, key, value) = decode_frame(&frame).unwrap_or_else(|| {
                tracing::error!(
                    topic,
                    partition,
                    offset,
                    "Corrupt record frame in the embedded log"
                );
                (
                    vec![("log-corrupt-frame".to_owned(), "true".to_owned())],
                    Bytes::new(),
                    Bytes::from(frame),
                )
            });
            Ok(Record {
                topic: topic.to_owned(),
                partition,
                offset,
                key,
                value,
                headers,
            })
        })
        .collect()
}

/// Frame: `u16` header count, each header as `u16` name length, name, `u32` value length,
/// value; then `u32` key length, key; the rest is the value. Little-endian.
/// `None` if a length does not fit its field (more than 65,535 headers or header-name bytes,
/// or a value or key over 4 GiB).
fn encode_frame(headers: &Headers, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let size = 6
        + key.len()
        + value.len()
        + headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u16::try_from(headers.len()).ok()?.to_le_bytes());
    for (name, val) in headers {
        out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(val.len()).ok()?.to_le_bytes());
        out.extend_from_slice(val.as_bytes());
    }
    out.extend_from_slice(&u32::try_from(key.len()).ok()?.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Some(out)
}

fn decode_frame(frame: &[u8]) -> Option<(Headers, Bytes, Bytes)> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Some(head)
    }
    let mut buf = frame;
    let count = u16::from_le_bytes(take(&mut buf, 2)?.try_into().ok()?);
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = u16::from_le_bytes(take(&mut buf, 2)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(take(&mut buf, n)?).ok()?.to_owned();
        let n = u32::from_le_bytes(take(&mut buf, 4)?.try_into().ok()?) as usize;
        let val = std::str::from_utf8(take(&mut buf, n)?).ok()?.to_owned();
        headers.push((name, val));
    }
    let n = u32::from_le_bytes(take(&mut buf, 4)?.try_into().ok()?) as usize;
    let key = Bytes::copy_from_slice(take(&mut buf, n)?);
    Some((headers, key, Bytes::copy_from_slice(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_detected() {
        let headers = vec![("idempotency-key".to_owned(), "o1:validate".to_owned())];
        let frame = encode_frame(&headers, b"key", b"{\"v\":1}").expect("fits");
        let (h, k, v) = decode_frame(&frame).expect("decodes");
        assert_eq!(h, headers);
        assert_eq!(&k[..], b"key");
        assert_eq!(&v[..], b"{\"v\":1}");
        assert!(decode_frame(&frame[..5]).is_none());
    }
}
