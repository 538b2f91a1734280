//! The embedded log's writer thread: the only code that writes segment files or changes the
//! in-memory state (its reaper thread, in `writer/trim.rs`, deletes the files left dead).
//!
//! It drains whatever appends are queued into one batch, writes it at the end of the active
//! segment with one `fdatasync` (group commit), and only then publishes the records and offsets
//! to readers and answers the callers. When the active segment is full it starts a new one that
//! opens with a checkpoint (every topic, partition bound and committed offset), so any older
//! segment can later be deleted without losing anything but its records. Trims are logical
//! first (a partition's base moves up, durably); a segment file goes once nothing in it is
//! needed, and the few records still needed in an old, mostly dead segment are copied forward.

use super::SegmentError;
use super::format::{self, Batch, MAGIC};
use super::state::{Loc, Segment, State, read_frame};
use crate::record::{Message, Position, Record};
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod trim;

/// Most appends in one group commit.
const MAX_GROUP: usize = 4096;
/// Most bytes of records in one group commit.
const MAX_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// Largest single append (or move of records); well under [`format::MAX_BATCH`], so no batch
/// can be mistaken for a torn one, and segments stay far below 4 GiB (`Loc::pos` is 32-bit).
const MAX_APPEND_BYTES: usize = 64 * 1024 * 1024;
/// A sealed segment whose live bytes are below this share of its size has them copied forward.
const RELOCATE_BELOW_PERCENT: u64 = 10;
/// Most bytes in one batch of moved records: appends wait while the writer writes it.
const RELOCATE_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most bytes moved in one retention pass; the rest waits for the next pass, so retention
/// never holds appends up for long.
const RELOCATE_PASS_BYTES: usize = 16 * 1024 * 1024;

/// A consumer group's position to record.
pub struct Commit {
    /// Consumer group.
    pub group: Arc<str>,
    /// Partition index.
    pub pidx: usize,
    /// Next offset to read.
    pub next: u64,
    /// Only if the group has no position there yet (a group joining).
    pub if_absent: bool,
}

/// A record with a known offset, already framed (moved or imported records).
pub struct Framed {
    /// Partition index.
    pub pidx: usize,
    /// Offset.
    pub offset: u64,
    /// The frame.
    pub frame: Bytes,
}

/// What the writer is asked to do.
pub enum Request {
    /// Append records (with partitions chosen) and record group positions, atomically.
    Append {
        /// `(partition index, message)`.
        records: Vec<(usize, Message)>,
        /// Positions to record once the records are durable.
        commits: Vec<Commit>,
        /// `(partition, offset)` of each record.
        reply: oneshot::Sender<Result<Vec<Position>, SegmentError>>,
    },
    /// Create the topics that do not exist; answers the existing ones whose partition count
    /// differs.
    Topics {
        /// Topic names.
        names: Vec<String>,
        /// Partition count of new topics.
        partitions: u32,
        /// Mismatches, as `"TOPIC has N"`.
        reply: oneshot::Sender<Result<Vec<String>, SegmentError>>,
    },
    /// Forget records below these offsets; answers how many went.
    Trim {
        /// `(partition index, new base)`.
        floors: Vec<(usize, u64)>,
        /// Records trimmed.
        reply: oneshot::Sender<Result<u64, SegmentError>>,
    },
    /// Write records at given offsets with partition bounds and positions (an import).
    Import {
        /// The records.
        records: Vec<Framed>,
        /// `(partition index, base, end)`.
        bounds: Vec<(usize, u64, u64)>,
        /// Group positions.
        commits: Vec<Commit>,
        /// Done.
        reply: oneshot::Sender<Result<(), SegmentError>>,
    },
}

impl Request {
    /// About how many bytes an append adds to a batch.
    fn bytes(&self) -> usize {
        match self {
            Request::Append { records, .. } => records
                .iter()
                .map(|(_, m)| {
                    32 + m.key.len()
                        + m.value.len()
                        + m.headers
                            .iter()
                            .map(|(n, v)| 6 + n.len() + v.len())
                            .sum::<usize>()
                })
                .sum(),
            _ => 0,
        }
    }

    fn fail(self, error: SegmentError) {
        match self {
            Request::Append { reply, .. } => drop(reply.send(Err(error))),
            Request::Topics { reply, .. } => drop(reply.send(Err(error))),
            Request::Trim { reply, .. } => drop(reply.send(Err(error))),
            Request::Import { reply, .. } => drop(reply.send(Err(error))),
        }
    }
}

/// The writer's own state: the active segment and where it ends.
pub struct Writer {
    dir: PathBuf,
    state: Arc<RwLock<State>>,
    segment_bytes: u64,
    /// Commits start at least this far apart (see [`SegmentLogOptions`](super::SegmentLogOptions)).
    min_commit_interval: Duration,
    /// When the last commit started.
    last_commit: Instant,
    active: u32,
    file: Arc<File>,
    size: u64,
    /// Where the active segment's checkpoint ends: a segment with nothing after it is not
    /// worth rolling.
    checkpoint_end: u64,
    batch: Batch,
    /// Deletes dead segment files off this thread.
    reaper: trim::Reaper,
}

/// An append's records in the batch: where each frame went and the record to publish.
struct Placed {
    pidx: usize,
    offset: u64,
    at: usize,
    record: Record,
}

fn io_error(what: &str, e: std::io::Error) -> SegmentError {
    SegmentError::io(what, e)
}

impl Writer {
    /// Starts a fresh segment `next_segment` in `dir` after recovery and returns the writer.
    pub fn start(
        dir: &Path,
        state: Arc<RwLock<State>>,
        segment_bytes: u64,
        min_commit_interval: Duration,
        next_segment: u32,
    ) -> Result<Self, SegmentError> {
        let (file, size) = create_segment(dir, &state, next_segment)?;
        Ok(Self {
            dir: dir.to_owned(),
            state,
            segment_bytes,
            min_commit_interval,
            last_commit: Instant::now(),
            active: next_segment,
            file,
            size,
            checkpoint_end: size,
            batch: Batch::new(),
            reaper: trim::Reaper::start(dir)?,
        })
    }

    /// Serves requests until every sender is gone.
    pub fn run(mut self, requests: &Receiver<Request>) {
        let mut stashed: Option<Request> = None;
        loop {
            let first = match stashed.take() {
                Some(request) => request,
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(_) => break,
                },
            };
            if let Some(failure) = self.state.read().failed.clone() {
                first.fail(SegmentError::Unavailable(failure));
                continue;
            }
            match first {
                append @ Request::Append { .. } => {
                    let mut bytes = append.bytes();
                    let mut group = vec![append];
                    let not_before = self.last_commit + self.min_commit_interval;
                    while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                        match crate::kv::gather_next(requests, not_before) {
                            Some(next @ Request::Append { .. }) => {
                                bytes += next.bytes();
                                group.push(next);
                            }
                            Some(other) => {
                                stashed = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    self.append(group);
                }
                Request::Topics {
                    names,
                    partitions,
                    reply,
                } => {
                    let _ = reply.send(self.topics(&names, partitions));
                }
                Request::Trim { floors, reply } => self.trim_and_reap(&floors, reply),
                Request::Import {
                    records,
                    bounds,
                    commits,
                    reply,
                } => {
                    let _ = reply.send(self.import(records, &bounds, commits));
                }
            }
        }
        tracing::debug!("Embedded log writer stopped");
    }

    /// Writes `self.batch` at the end of the active segment and makes it durable, rolling to a
    /// new segment first when this one is full. Returns where the batch starts.
    fn write_batch(&mut self) -> Result<u64, SegmentError> {
        if self.size + self.batch.len() as u64 > self.segment_bytes
            && self.size > self.checkpoint_end
        {
            self.roll()?;
        }
        let at = self.size;
        let started = Instant::now();
        self.last_commit = started;
        let bytes = self.batch.finish();
        let written = self
            .file
            .write_all_at(bytes, at)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // After a failed fsync the page cache cannot be trusted: stop until a restart
            // recovers from what is really on disk.
            let message = format!("the embedded log cannot write {}: {e}", self.dir.display());
            tracing::error!(error = %e, "Embedded log write failed; the log stops until restart");
            self.state.write().failed = Some(message.clone());
            return Err(SegmentError::Unavailable(message));
        }
        self.size += bytes.len() as u64;
        metrics::histogram!("orderflow_log_commit_seconds").record(started.elapsed());
        metrics::histogram!("orderflow_log_commit_bytes").record(bytes.len() as f64);
        Ok(at)
    }

    fn append(&mut self, group: Vec<Request>) {
        self.batch.clear();
        let mut placed: Vec<Vec<Placed>> = Vec::with_capacity(group.len());
        let mut commits: Vec<Vec<Commit>> = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        {
            let state = self.state.read();
            let mut next: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
            let mut joined: HashSet<(Arc<str>, usize)> = HashSet::new();
            for request in group {
                let Request::Append {
                    records,
                    commits: wanted,
                    reply,
                } = request
                else {
                    continue;
                };
                let mut mine = Vec::with_capacity(records.len());
                let mut refused = None;
                let mark = self.batch.len();
                // Where each partition this append touches stood before it, to undo a refusal.
                let mut before: Vec<(usize, u64)> = Vec::new();
                for (pidx, message) in records {
                    let part = &state.parts[pidx];
                    let offset = next.entry(pidx).or_insert_with(|| part.end());
                    if !before.iter().any(|(p, _)| *p == pidx) {
                        before.push((pidx, *offset));
                    }
                    match self.batch.record(
                        part.topic,
                        part.partition,
                        *offset,
                        &message.headers,
                        &message.key,
                        &message.value,
                    ) {
                        Some((at, _)) => {
                            mine.push(Placed {
                                pidx,
                                offset: *offset,
                                at,
                                record: Record {
                                    topic: message.topic,
                                    partition: part.partition,
                                    offset: *offset,
                                    key: message.key,
                                    value: message.value,
                                    headers: message.headers,
                                    decoded: message.decoded,
                                },
                            });
                            *offset += 1;
                        }
                        None => {
                            refused = Some(format!(
                                "a record for {} is too large to frame",
                                message.topic
                            ));
                            break;
                        }
                    }
                }
                if refused.is_none() && self.batch.len() - mark > MAX_APPEND_BYTES {
                    refused = Some(format!(
                        "an append of {} bytes is over the {MAX_APPEND_BYTES}-byte limit",
                        self.batch.len() - mark
                    ));
                }
                if let Some(why) = refused {
                    // Take this append's items back out; the others in the group still go.
                    self.batch.truncate(mark);
                    for (pidx, first) in before {
                        next.insert(pidx, first);
                    }
                    let _ = reply.send(Err(SegmentError::Invalid(why)));
                    continue;
                }
                let mut kept = Vec::with_capacity(wanted.len());
                for commit in wanted {
                    let key = (Arc::clone(&commit.group), commit.pidx);
                    if commit.if_absent
                        && (state.committed.contains_key(&key) || joined.contains(&key))
                    {
                        continue;
                    }
                    joined.insert(key);
                    let part = &state.parts[commit.pidx];
                    self.batch
                        .commit(&commit.group, part.topic, part.partition, commit.next);
                    kept.push(commit);
                }
                placed.push(mine);
                commits.push(kept);
                replies.push(reply);
            }
        }
        if self.batch.is_empty() {
            for reply in replies {
                let _ = reply.send(Ok(Vec::new()));
            }
            return;
        }
        let at = match self.write_batch() {
            Ok(at) => at,
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut answers = Vec::with_capacity(replies.len());
        let mut touched: Vec<usize> = Vec::new();
        {
            let mut state = self.state.write();
            for (mine, kept) in placed.into_iter().zip(commits) {
                let mut positions = Vec::with_capacity(mine.len());
                for p in mine {
                    positions.push(Position {
                        partition: p.record.partition,
                        offset: p.offset,
                    });
                    if touched.last() != Some(&p.pidx) {
                        touched.push(p.pidx);
                    }
                    state.place(p.pidx, p.offset, self.loc(at, p.at), Some(p.record));
                }
                for commit in kept {
                    state
                        .committed
                        .insert((commit.group, commit.pidx), commit.next);
                }
                answers.push(positions);
            }
            if let Some(segment) = state.segments.get_mut(&self.active) {
                segment.size = self.size;
            }
        }
        self.state.read().wake(touched);
        for (reply, positions) in replies.into_iter().zip(answers) {
            let _ = reply.send(Ok(positions));
        }
    }

    fn topics(&mut self, names: &[String], partitions: u32) -> Result<Vec<String>, SegmentError> {
        self.batch.clear();
        let mut mismatched = Vec::new();
        let mut created = Vec::new();
        {
            let state = self.state.read();
            let mut id = state.topics.len();
            for name in names {
                match state.by_name.get(name.as_str()) {
                    Some(t) => {
                        let have = state.topics[usize::from(*t)].partitions;
                        if have != partitions {
                            mismatched.push(format!("{name} has {have}"));
                        }
                    }
                    None if created.contains(name) => {}
                    None => {
                        let topic_id = u16::try_from(id).map_err(|_| {
                            SegmentError::Invalid(
                                "the embedded log holds at most 65,535 topics".into(),
                            )
                        })?;
                        self.batch.topic(topic_id, name, partitions);
                        created.push(name.clone());
                        id += 1;
                    }
                }
            }
        }
        if !created.is_empty() {
            self.write_batch()?;
            let mut state = self.state.write();
            for name in &created {
                state.add_topic(name, partitions);
            }
            if let Some(segment) = state.segments.get_mut(&self.active) {
                segment.size = self.size;
            }
        }
        Ok(mismatched)
    }

    fn import(
        &mut self,
        records: Vec<Framed>,
        bounds: &[(usize, u64, u64)],
        commits: Vec<Commit>,
    ) -> Result<(), SegmentError> {
        self.batch.clear();
        let mut placed = Vec::with_capacity(records.len());
        {
            let state = self.state.read();
            for r in &records {
                let part = &state.parts[r.pidx];
                let (at, _) = self
                    .batch
                    .record_frame(part.topic, part.partition, r.offset, &r.frame)
                    .ok_or_else(|| {
                        SegmentError::Invalid("an imported record is too large".into())
                    })?;
                placed.push((r.pidx, r.offset, at));
            }
            for &(pidx, base, end) in bounds {
                let part = &state.parts[pidx];
                self.batch.partition(part.topic, part.partition, base, end);
            }
            for c in &commits {
                let part = &state.parts[c.pidx];
                self.batch
                    .commit(&c.group, part.topic, part.partition, c.next);
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let at = self.write_batch()?;
        let mut state = self.state.write();
        self.place_moved(&mut state, at, placed);
        for &(pidx, base, end) in bounds {
            state.extend_to(pidx, end);
            state.trim(pidx, base);
        }
        for c in commits {
            state.committed.insert((c.group, c.pidx), c.next);
        }
        let touched: Vec<usize> = records.iter().map(|r| r.pidx).collect();
        state.wake(touched);
        Ok(())
    }

    /// Seals the active segment and starts the next one. A failure stops the log until a
    /// restart: nothing more can be written safely.
    fn roll(&mut self) -> Result<(), SegmentError> {
        let next = self.active + 1;
        let (file, size) = create_segment(&self.dir, &self.state, next).inspect_err(|e| {
            tracing::error!(error = %e, "Cannot start a new log segment; the log stops until restart");
            self.state.write().failed = Some(e.to_string());
        })?;
        self.active = next;
        self.file = file;
        self.size = size;
        self.checkpoint_end = size;
        Ok(())
    }
}

/// Creates segment `id` in `dir`, opening with a checkpoint of `state`, and registers it;
/// returns its file and size.
fn create_segment(
    dir: &Path,
    state: &RwLock<State>,
    id: u32,
) -> Result<(Arc<File>, u64), SegmentError> {
    let path = dir.join(format::segment_name(id));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_error(&format!("cannot create {}", path.display()), e))?;
    let mut checkpoint = Batch::new();
    {
        let state = state.read();
        for (id, topic) in state.topics.iter().enumerate() {
            checkpoint.topic(id as u16, &topic.name, topic.partitions);
        }
        for part in &state.parts {
            checkpoint.partition(part.topic, part.partition, part.base, part.end());
        }
        for ((group, pidx), next) in &state.committed {
            let part = &state.parts[*pidx];
            checkpoint.commit(group, part.topic, part.partition, *next);
        }
    }
    let bytes = checkpoint.finish();
    let written = file
        .write_all_at(MAGIC, 0)
        .and_then(|()| file.write_all_at(bytes, MAGIC.len() as u64))
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(&format!("cannot write {}", path.display()), e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        // A half-made segment would stand in the way of the next attempt.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let size = (MAGIC.len() + bytes.len()) as u64;
    let file = Arc::new(file);
    state
        .write()
        .segments
        .insert(id, Segment::new(Arc::clone(&file), size));
    metrics::counter!("orderflow_log_segments_created_total").increment(1);
    Ok((file, size))
}

/// Makes the directory's entries (segments created or deleted) durable.
pub fn sync_dir(dir: &Path) -> Result<(), SegmentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&format!("cannot sync {}", dir.display()), e))
}
