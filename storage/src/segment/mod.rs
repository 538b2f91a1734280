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
mod index;
pub mod legacy;
mod ops;
mod recovery;
mod retention;
pub(crate) mod state;
pub(crate) mod writer;

pub use consumer::{SegmentCommitter, SegmentConsumer};
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
mod tests;
