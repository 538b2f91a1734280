//! The segment log: a durable, partitioned, keyed log with consumer groups and no server —
//! segment files in a directory, written by one group-commit writer thread. `orderflow-pipeline`
//! adapts it to its `Log` trait.
//!
//! - `ops`: topics, appends, consumer groups and reads; `consumer`: one group member.
//! - `retention`: end offsets, lag, and trimming what every group has read.
//! - [`format`]: the bytes on disk (segments of checksummed batches).
//! - [`state`]: what is kept in memory (topics, the location of every kept record, a cache of
//!   the newest records, committed offsets) and how it is rebuilt at start.
//! - [`writer`]: the thread that appends, rolls segments, trims and deletes them.
//! - [`legacy`]: moves a log kept by earlier versions (in a redb database) into segments.
//!
//! An append resolves only once its batch is fsync'd, and many concurrent appends share one
//! fsync. [`SegmentConsumer::complete`] writes a stage's outputs and its new offsets in the same batch:
//! on this backend a stage's step is atomic, not just at-least-once. Consumers read the newest
//! records from memory and older ones from the segment files.

mod consumer;
pub(crate) mod format;
pub mod legacy;
mod ops;
mod recovery;
mod retention;
pub(crate) mod state;
pub(crate) mod writer;

pub use consumer::SegmentConsumer;
pub use retention::GroupPartition;

use crate::record::{Message, Offsets, Record};
use parking_lot::RwLock;
use state::{Miss, State};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use writer::{Commit, Request, Writer};

/// A failure of the segment log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SegmentError {
    /// The log cannot take or serve data right now (closed, writer stopped, a write or read
    /// failed); retrying later may succeed.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (unknown topic, bad options, another partition count).
    #[error("log request invalid: {0}")]
    Invalid(String),
    /// The redb database of an earlier version's log failed while it was moved.
    #[error("log unavailable: the earlier log's database: {0}")]
    Legacy(#[from] crate::kv::EngineError),
    /// A file operation failed; retrying later may succeed.
    #[error("log unavailable: {what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl SegmentError {
    /// A failed file operation: `what` names it and the file.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

/// The file whose lock marks a log directory as in use by one process.
const LOCK_FILE: &str = "LOCK";

/// How the embedded log is laid out and how much memory it may use.
#[derive(Debug, Clone)]
pub struct SegmentLogOptions {
    /// Partitions of topics created from now on (existing topics keep theirs).
    pub partitions: u32,
    /// Bytes of the newest records kept decoded in memory for consumers; older ones are read
    /// from the segment files.
    pub cache_bytes: usize,
    /// A segment is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Group commits start at least this far apart: under load, appends that arrive meanwhile
    /// share the next fsync (each fsync costs a device round trip); when it is quiet an append
    /// is written at once.
    pub min_commit_interval: Duration,
}

impl SegmentLogOptions {
    /// Defaults with `partitions` partitions per topic: 16 MiB of cache, 64 MiB segments,
    /// commits at least 1 ms apart.
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            cache_bytes: 16 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            min_commit_interval: Duration::from_millis(1),
        }
    }
}

/// The embedded log; cheap to clone. The directory is locked while any handle lives; when the
/// last one is dropped the writer finishes what is queued and the lock is released before
/// `drop` returns, so the directory can be opened again at once.
#[derive(Clone)]
pub struct SegmentLog {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    partitions: u32,
    state: Arc<RwLock<State>>,
    /// `None` only while dropping: taking it ends the writer's loop.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// True once [`SegmentLog::close`] was called: new writes are refused.
    closed: AtomicBool,
    /// End offsets noted by each retention pass, oldest first: how far the log reached when.
    marks: parking_lot::Mutex<VecDeque<(Instant, Offsets)>>,
    /// Held for the lifetime of the log: its lock keeps a second process out.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir` with `partitions` partitions per new topic and the
    /// default cache and segment sizes.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self, SegmentError> {
        Self::open_with(dir, SegmentLogOptions::new(partitions))
    }

    /// Opens (or creates) the log in `dir`: locks it, rebuilds the state from its segments
    /// (cutting off a torn write at the end), starts a fresh segment and the writer thread.
    pub fn open_with(dir: &Path, options: SegmentLogOptions) -> Result<Self, SegmentError> {
        if options.partitions == 0 {
            return Err(SegmentError::Invalid(
                "partitions must be at least 1".into(),
            ));
        }
        if !(4096..=1 << 30).contains(&options.segment_bytes) {
            return Err(SegmentError::Invalid(
                "segment size must be 4 KiB to 1 GiB".into(),
            ));
        }
        let io = |what: String, e: std::io::Error| SegmentError::io(what, e);
        std::fs::create_dir_all(dir).map_err(|e| {
            io(
                format!("cannot create the log directory {}", dir.display()),
                e,
            )
        })?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| io(format!("cannot open {}", dir.join(LOCK_FILE).display()), e))?;
        if let Err(e) = lock.try_lock() {
            return Err(SegmentError::Unavailable(format!(
                "the log in {} is in use by another process ({e}); stop it first",
                dir.display()
            )));
        }
        let started = Instant::now();
        let recovered = recovery::recover(dir, options.cache_bytes)?;
        let records: usize = recovered.state.parts.iter().map(|p| p.kept()).sum();
        let segments = recovered.state.segments.len();
        let state = Arc::new(RwLock::new(recovered.state));
        let writer = Writer::start(
            dir,
            Arc::clone(&state),
            options.segment_bytes,
            options.min_commit_interval,
            recovered.next_segment,
        )?;
        let (requests, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("orderflow-log".into())
            .spawn(move || writer.run(&queue))
            .map_err(|e| io("cannot start the log writer thread".into(), e))?;
        tracing::info!(
            dir = %dir.display(),
            segments,
            records,
            ms = started.elapsed().as_millis() as u64,
            "Embedded log opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                partitions: options.partitions,
                state,
                requests: Some(requests),
                writer: Some(writer),
                closed: AtomicBool::new(false),
                marks: parking_lot::Mutex::new(VecDeque::new()),
                _lock: lock,
            }),
        })
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Refuses new writes from now on (writes already queued still complete). Used at
    /// shutdown, and by tests that need a log that cannot take writes.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SegmentError>>) -> Request,
    ) -> Result<T, SegmentError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(SegmentError::Unavailable(
                "the embedded log is closed".into(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let sent = match &self.inner.requests {
            Some(requests) => requests.send(make(reply)).is_ok(),
            None => false,
        };
        if !sent {
            return Err(SegmentError::Unavailable(
                "the embedded log writer has stopped".into(),
            ));
        }
        answer.await.map_err(|_| {
            SegmentError::Unavailable("the embedded log writer stopped before answering".into())
        })?
    }

    /// The partition a key belongs to among `partitions`. FNV-1a: stable across runs and
    /// versions, so a key keeps its partition after a restart.
    fn partition_of(key: &[u8], partitions: u32) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in key {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash % partitions.max(1)
    }

    /// Each message with the index of the partition it goes to.
    fn route(&self, messages: Vec<Message>) -> Result<Vec<(usize, Message)>, SegmentError> {
        let state = self.inner.state.read();
        messages
            .into_iter()
            .map(|mut m| {
                let id = *state
                    .by_name
                    .get(m.topic.as_str())
                    .ok_or_else(|| SegmentError::Invalid(format!("unknown topic {}", m.topic)))?;
                // A decoded copy only helps a reader in this process; without one (an ingest-only
                // process) it is dropped here, on the caller's thread, instead of being cached and
                // later freed by the writer thread, which costs the allocator a cross-thread free
                // of every part of the event.
                if m.decoded.is_some() && !state.has_subscribers(id) {
                    m.decoded = None;
                }
                let topic = &state.topics[usize::from(id)];
                let partition = Self::partition_of(&m.key, topic.partitions);
                Ok((topic.first + partition as usize, m))
            })
            .collect()
    }

    /// The partition index of `(topic, partition)`, if the topic exists.
    fn pidx(state: &State, topic: &str, partition: u32) -> Option<usize> {
        let id = state.by_name.get(topic)?;
        state.pidx(*id, partition)
    }

    /// Reads records of partition `pidx` from `from`, at most `max`: from the cache, or from
    /// the segment files where the cache no longer reaches. Returns them and the next offset.
    fn fetch_partition(
        &self,
        pidx: usize,
        from: u64,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<u64, SegmentError> {
        let mut misses: Vec<Miss> = Vec::new();
        let (next, topic, partition) = {
            let state = self.inner.state.read();
            let next = state.gather(pidx, from, max, out, &mut misses);
            (
                next,
                Arc::clone(state.topic_name(pidx)),
                state.parts[pidx].partition,
            )
        };
        for miss in &misses {
            out.push(state::read_miss(&topic, partition, miss)?);
        }
        Ok(next)
    }

    /// Writes records at given offsets, partition bounds and group positions, as they were in
    /// another store (see [`legacy`]).
    async fn import(
        &self,
        records: Vec<(String, u32, u64, bytes::Bytes)>,
        bounds: Vec<(String, u32, u64, u64)>,
        commits: Vec<(String, String, u32, u64)>,
    ) -> Result<(), SegmentError> {
        let (records, bounds, commits) = {
            let state = self.inner.state.read();
            let find = |topic: &str, partition: u32| {
                Self::pidx(&state, topic, partition).ok_or_else(|| {
                    SegmentError::Invalid(format!("cannot import into {topic}/{partition}"))
                })
            };
            let records = records
                .into_iter()
                .map(|(topic, partition, offset, frame)| {
                    Ok(writer::Framed {
                        pidx: find(&topic, partition)?,
                        offset,
                        frame,
                    })
                })
                .collect::<Result<Vec<_>, SegmentError>>()?;
            let bounds = bounds
                .into_iter()
                .map(|(topic, partition, base, end)| Ok((find(&topic, partition)?, base, end)))
                .collect::<Result<Vec<_>, SegmentError>>()?;
            let commits = commits
                .into_iter()
                .map(|(group, topic, partition, next)| {
                    Ok(Commit {
                        group: Arc::from(group),
                        pidx: find(&topic, partition)?,
                        next,
                        if_absent: false,
                    })
                })
                .collect::<Result<Vec<_>, SegmentError>>()?;
            (records, bounds, commits)
        };
        self.request(|reply| Request::Import {
            records,
            bounds,
            commits,
            reply,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
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
        let values: Vec<_> = log
            .read("a", 10)
            .await
            .expect("read")
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(values, ["one", "two", "three"]);
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
}
