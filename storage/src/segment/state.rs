//! What the embedded log keeps in memory: topics, where every kept record sits on disk, a cache
//! of the newest records, the groups' committed offsets and the segment files; and how all of it
//! is rebuilt from the segments at start.
//!
//! Only the writer thread changes this state, and only after the batch that carries the change
//! is on disk, so a reader never sees a record or an offset that a crash could take back.

use super::SegmentError;
use super::format;
use super::index::PosIndex;
use crate::record::Record;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;

use std::os::unix::fs::FileExt;

use std::sync::{Arc, Weak};
use tokio::sync::Notify;

/// The position of an offset that has no record: a gap (an earlier version's failed write).
pub(super) const NO_POS: u32 = u32::MAX;

/// Where a record's frame is: its segment and byte position (its length is stored just before
/// it, in the record's item header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Segment id.
    pub segment: u32,
    /// Position of the frame in the segment file.
    pub pos: u32,
}

/// A topic: its name, id and where its partitions start in [`State::parts`].
pub struct Topic {
    /// Name.
    pub name: Arc<str>,
    /// Partition count.
    pub partitions: u32,
    /// Index of its partition 0 in [`State::parts`].
    pub first: usize,
}

/// One partition: where every kept record is, and a cache of the newest ones.
///
/// The index costs four bytes a record (in chunks of 64 KiB: [`PosIndex`]): the frame's position
/// per offset, and which segment holds which offsets as runs (a partition's records go to one
/// segment after another, so there are about as many runs as segments; a record moved forward by
/// retention splits a run).
pub struct Part {
    /// Topic id.
    pub topic: u16,
    /// Partition number.
    pub partition: u32,
    /// First kept offset; everything below is trimmed.
    pub base: u64,
    /// Frame positions of offsets `base..end` in their segments ([`NO_POS`] for a gap).
    pub(super) pos: PosIndex,
    /// First offset of each run → the segment holding the run; a run lasts until the next.
    pub(super) spans: BTreeMap<u64, u32>,
    /// First cached offset; the cache holds `cache_base..end`.
    pub cache_base: u64,
    /// The newest records, decoded, with the bytes each is accounted for.
    pub cache: VecDeque<(Record, usize)>,
}

impl Part {
    fn new(topic: u16, partition: u32) -> Self {
        Self {
            topic,
            partition,
            base: 0,
            pos: PosIndex::default(),
            spans: BTreeMap::new(),
            cache_base: 0,
            cache: VecDeque::new(),
        }
    }

    /// The next offset to assign.
    pub fn end(&self) -> u64 {
        self.base + self.pos.len() as u64
    }

    /// Offsets kept (gaps included).
    pub fn kept(&self) -> usize {
        self.pos.len()
    }

    /// Bytes the position index holds.
    pub fn index_bytes(&self) -> usize {
        self.pos.held_bytes()
    }

    /// The segment of the run `offset` falls in.
    fn segment_of(&self, offset: u64) -> Option<u32> {
        self.spans.range(..=offset).next_back().map(|(_, s)| *s)
    }

    /// Where `offset` is, if it is kept and not a gap.
    pub fn loc(&self, offset: u64) -> Option<Loc> {
        if offset < self.base {
            return None;
        }
        let pos = self.pos.get((offset - self.base) as usize)?;
        if pos == NO_POS {
            return None;
        }
        Some(Loc {
            segment: self.segment_of(offset)?,
            pos,
        })
    }

    /// Makes `offset` (below `end`) part of a run of `segment`, splitting and merging runs.
    fn set_segment(&mut self, offset: u64, segment: u32) {
        let old = self.segment_of(offset);
        if old == Some(segment) {
            return;
        }
        let next = offset + 1;
        // The run after `offset` stays where it was.
        if next < self.end()
            && !self.spans.contains_key(&next)
            && let Some(old) = old
        {
            self.spans.insert(next, old);
        }
        self.spans.insert(offset, segment);
        if self.spans.range(..offset).next_back().map(|(_, s)| *s) == Some(segment) {
            self.spans.remove(&offset);
        }
        if self.spans.get(&next) == Some(&segment) {
            self.spans.remove(&next);
        }
    }

    /// The runs of `segment` that hold kept offsets, as `start..end` ranges.
    pub fn runs_in(&self, segment: u32) -> Vec<std::ops::Range<u64>> {
        let end = self.end();
        let mut out = Vec::new();
        let mut iter = self.spans.iter().peekable();
        while let Some((first, s)) = iter.next() {
            let until = iter.peek().map_or(end, |(next, _)| **next).min(end);
            let from = (*first).max(self.base);
            if *s == segment && from < until {
                out.push(from..until);
            }
        }
        out
    }
}

/// A segment file and how much of it is still needed.
pub struct Segment {
    /// The file, shared by the writer (appends) and readers (positioned reads).
    pub file: Arc<File>,
    /// Bytes written.
    pub size: u64,
    /// Records in it that are neither trimmed nor moved elsewhere.
    pub live: u64,
    /// Records ever written to it.
    pub records: u64,
}

impl Segment {
    /// A segment of `size` bytes with no records yet.
    pub fn new(file: Arc<File>, size: u64) -> Self {
        Self {
            file,
            size,
            live: 0,
            records: 0,
        }
    }
}

/// A record to read from disk: its partition, offset and where it is.
pub struct Miss {
    /// Offset.
    pub offset: u64,
    /// Location.
    pub loc: Loc,
    /// Its segment's file.
    pub file: Arc<File>,
}

/// Everything the log knows in memory.
pub struct State {
    /// Topics by id.
    pub topics: Vec<Topic>,
    /// Topic ids by name.
    pub by_name: HashMap<Arc<str>, u16>,
    /// Every partition of every topic.
    pub parts: Vec<Part>,
    /// `(group, partition index)` → the group's next offset to read.
    pub committed: HashMap<(Arc<str>, usize), u64>,
    /// Segments by id.
    pub segments: BTreeMap<u32, Segment>,
    /// Bytes the record caches hold.
    pub cache_bytes: usize,
    /// Most bytes the record caches may hold.
    pub cache_budget: usize,
    /// Cached `(partition index, offset)` in the order they were cached, for eviction.
    fifo: VecDeque<(usize, u64)>,
    /// The `fifo` length at which to look for stale entries again (a look costs a pass over
    /// every partition, so not at every record).
    fifo_check_at: usize,
    /// Set once a write failed: the log refuses everything until it is reopened.
    pub failed: Option<String>,
    /// Per topic, the consumers to wake when it gets records.
    pub subscribers: Vec<Vec<Weak<Notify>>>,
}

/// Offsets without a record tolerated in one partition at recovery (gaps left by refused or
/// failed writes, records lost with a damaged segment).
pub(super) const MAX_GAP: u64 = 1 << 24;

/// Stale eviction-queue entries tolerated before the queue is compacted.
const FIFO_SLACK: usize = 1024;

/// How many bytes a cached record is accounted for. A decoded copy of the value takes about
/// as much again.
fn cached_size(record: &Record) -> usize {
    let decoded = if record.decoded.is_some() {
        record.value.len()
    } else {
        0
    };
    160 + record.topic.len()
        + record.key.len()
        + record.value.len()
        + decoded
        + record
            .headers
            .iter()
            .map(|(n, v)| 48 + n.len() + v.len())
            .sum::<usize>()
}

impl State {
    /// An empty log whose record caches may hold `cache_budget` bytes.
    pub fn new(cache_budget: usize) -> Self {
        Self {
            topics: Vec::new(),
            by_name: HashMap::new(),
            parts: Vec::new(),
            committed: HashMap::new(),
            segments: BTreeMap::new(),
            cache_bytes: 0,
            cache_budget,
            fifo: VecDeque::new(),
            fifo_check_at: FIFO_SLACK,
            failed: None,
            subscribers: Vec::new(),
        }
    }

    /// Adds a topic; returns its id. Ids are dense and given in order.
    pub fn add_topic(&mut self, name: &str, partitions: u32) -> u16 {
        let id = self.topics.len() as u16;
        let name: Arc<str> = Arc::from(name);
        let first = self.parts.len();
        for partition in 0..partitions {
            self.parts.push(Part::new(id, partition));
        }
        self.topics.push(Topic {
            name: Arc::clone(&name),
            partitions,
            first,
        });
        self.by_name.insert(name, id);
        self.subscribers.push(Vec::new());
        id
    }

    /// Wakes `consumer` whenever one of `topics` gets records.
    pub fn subscribe(&mut self, topics: &[u16], consumer: &Arc<Notify>) {
        for topic in topics {
            if let Some(list) = self.subscribers.get_mut(usize::from(*topic)) {
                list.retain(|w| w.strong_count() > 0);
                list.push(Arc::downgrade(consumer));
            }
        }
    }

    /// Whether a consumer in this process has ever read this topic.
    pub fn has_subscribers(&self, topic: u16) -> bool {
        self.subscribers
            .get(usize::from(topic))
            .is_some_and(|list| !list.is_empty())
    }

    /// Wakes the consumers of the topics of these partitions.
    pub fn wake(&self, pidxs: impl IntoIterator<Item = usize>) {
        let mut topics: Vec<u16> = pidxs.into_iter().map(|p| self.parts[p].topic).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            for consumer in self.subscribers[usize::from(topic)]
                .iter()
                .filter_map(Weak::upgrade)
            {
                // A permit is kept if the consumer is not waiting yet: no wake-up is lost.
                consumer.notify_one();
            }
        }
    }

    /// The index in [`State::parts`] of a topic's partition.
    pub fn pidx(&self, topic: u16, partition: u32) -> Option<usize> {
        let t = self.topics.get(usize::from(topic))?;
        (partition < t.partitions).then_some(t.first + partition as usize)
    }

    /// The name of the topic a partition belongs to.
    pub fn topic_name(&self, pidx: usize) -> &Arc<str> {
        &self.topics[usize::from(self.parts[pidx].topic)].name
    }

    /// Records that `offset` of partition `pidx` is at `loc`: an append at the end (earlier
    /// missing offsets become gaps), or a record moved to another segment. `record`, when
    /// given, is cached.
    pub fn place(&mut self, pidx: usize, offset: u64, loc: Loc, record: Option<Record>) {
        let part = &mut self.parts[pidx];
        if offset < part.base {
            return;
        }
        let end = part.end();
        if offset >= end {
            for _ in end..offset {
                part.pos.push_back(NO_POS);
            }
            part.pos.push_back(loc.pos);
            if part.segment_of(offset) != Some(loc.segment) {
                part.spans.insert(offset, loc.segment);
            }
            match record {
                // The cache holds a contiguous run ending at `end`; a gap restarts it.
                Some(record) if part.cache_base + part.cache.len() as u64 == offset => {
                    let size = cached_size(&record);
                    part.cache.push_back((record, size));
                    self.cache_bytes += size;
                    self.fifo.push_back((pidx, offset));
                }
                _ => {
                    self.cache_bytes -= part.cache.drain(..).map(|(_, s)| s).sum::<usize>();
                    part.cache_base = offset + 1;
                }
            }
        } else {
            if let Some(old) = part.loc(offset)
                && let Some(segment) = self.segments.get_mut(&old.segment)
            {
                segment.live = segment.live.saturating_sub(1);
            }
            // `base <= offset < end` here, so the offset is kept.
            let kept = part.pos.set((offset - part.base) as usize, loc.pos);
            debug_assert!(kept, "offset {offset} of a record moved is not kept");
            part.set_segment(offset, loc.segment);
        }
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.live += 1;
            segment.records += 1;
        }
        self.evict();
    }

    /// Moves a partition's end to `end` (a checkpoint or trim that knows of later offsets).
    pub fn extend_to(&mut self, pidx: usize, end: u64) {
        let part = &mut self.parts[pidx];
        while part.end() < end {
            part.pos.push_back(NO_POS);
        }
        if part.cache_base + (part.cache.len() as u64) < end {
            self.cache_bytes -= part.cache.drain(..).map(|(_, s)| s).sum::<usize>();
            part.cache_base = end;
        }
    }

    /// Forgets a partition's records below `base`; returns how many were kept before.
    pub fn trim(&mut self, pidx: usize, base: u64) -> u64 {
        let part = &mut self.parts[pidx];
        let base = base.min(part.end());
        let mut removed = 0;
        // Walk the runs alongside the offsets, so each record's segment costs no lookup.
        let runs: Vec<(u64, u32)> = part
            .spans
            .range(..base)
            .map(|(first, s)| (*first, *s))
            .collect();
        let mut run = 0;
        while part.base < base {
            while run + 1 < runs.len() && runs[run + 1].0 <= part.base {
                run += 1;
            }
            if part.pos.pop_front().is_some_and(|p| p != NO_POS) {
                removed += 1;
                if let Some(segment) = runs
                    .get(run)
                    .filter(|(first, _)| *first <= part.base)
                    .and_then(|(_, s)| self.segments.get_mut(s))
                {
                    segment.live = segment.live.saturating_sub(1);
                }
            }
            part.base += 1;
        }
        // The run that covers the new base now starts there.
        if let Some((first, segment)) = part.spans.range(..=base).next_back().map(|(f, s)| (*f, *s))
            && first < base
        {
            part.spans.insert(base, segment);
        }
        part.spans = part.spans.split_off(&base);
        while part.cache_base < base {
            if let Some((_, size)) = part.cache.pop_front() {
                self.cache_bytes -= size;
            }
            part.cache_base += 1;
        }
        removed
    }

    /// Drops the oldest cached records while the caches are over budget.
    fn evict(&mut self) {
        while self.cache_bytes > self.cache_budget {
            let Some((pidx, offset)) = self.fifo.pop_front() else {
                break;
            };
            let part = &mut self.parts[pidx];
            if part.cache_base == offset
                && let Some((_, size)) = part.cache.pop_front()
            {
                self.cache_bytes -= size;
                part.cache_base += 1;
            }
        }
        // Entries of records that left the cache another way (a trim) are skipped above; keep
        // the queue from filling up with them when the budget is never reached.
        if self.fifo.len() > self.fifo_check_at {
            let cached: usize = self.parts.iter().map(|p| p.cache.len()).sum::<usize>();
            if self.fifo.len() > 4 * cached + FIFO_SLACK {
                let parts = &self.parts;
                self.fifo.retain(|(pidx, offset)| {
                    let p = &parts[*pidx];
                    *offset >= p.cache_base && *offset < p.cache_base + p.cache.len() as u64
                });
            }
            self.fifo_check_at = self.fifo.len() + FIFO_SLACK;
        }
    }

    /// Gathers records of partition `pidx` from `from` on, at most `max`: cached ones into
    /// `out`, or, where the cache no longer reaches, the locations to read from disk into
    /// `misses`. Returns the offset after the last one gathered.
    pub fn gather(
        &self,
        pidx: usize,
        mut from: u64,
        max: usize,
        out: &mut Vec<Record>,
        misses: &mut Vec<Miss>,
    ) -> u64 {
        let part = &self.parts[pidx];
        from = from.max(part.base);
        let end = part.end();
        let mut taken = 0;
        if from < part.cache_base {
            // Below the cache: read from disk up to where the cache starts; the cached run
            // comes on the next call, so records stay in offset order.
            let stop = part.cache_base.min(end);
            while from < stop && taken < max {
                if let Some(loc) = part.loc(from)
                    && let Some(segment) = self.segments.get(&loc.segment)
                {
                    misses.push(Miss {
                        offset: from,
                        loc,
                        file: Arc::clone(&segment.file),
                    });
                    taken += 1;
                }
                from += 1;
            }
            return from;
        }
        while taken < max && from < end {
            out.push(part.cache[(from - part.cache_base) as usize].0.clone());
            taken += 1;
            from += 1;
        }
        from
    }
}

/// Reads a record's frame from its segment and decodes it.
pub fn read_miss(topic: &str, partition: u32, miss: &Miss) -> Result<Record, SegmentError> {
    let frame = read_frame(&miss.file, miss.loc.pos)
        .map_err(|e| SegmentError::io("cannot read the embedded log", e))?;
    Ok(record_from_frame(
        topic,
        partition,
        miss.offset,
        Bytes::from(frame),
    ))
}

/// Reads the frame at `pos`: its length is the four bytes just before it.
pub fn read_frame(file: &File, pos: u32) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    file.read_exact_at(&mut len, u64::from(pos).saturating_sub(4))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > format::MAX_BATCH {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a record length no writer produces",
        ));
    }
    let mut frame = vec![0; len];
    file.read_exact_at(&mut frame, u64::from(pos))?;
    Ok(frame)
}

/// A record from its frame. An unreadable frame is handed out as it is, flagged, so the stage
/// fails to decode it and the runner dead-letters it, instead of every poll of the partition
/// failing.
pub fn record_from_frame(topic: &str, partition: u32, offset: u64, frame: Bytes) -> Record {
    let (headers, key, value) = format::decode_frame(&frame).unwrap_or_else(|| {
        tracing::error!(
            topic,
            partition,
            offset,
            "Corrupt record frame in the embedded log"
        );
        (
            vec![("log-corrupt-frame".to_owned(), "true".to_owned())],
            Bytes::new(),
            frame.clone(),
        )
    });
    Record {
        topic: topic.to_owned(),
        partition,
        offset,
        key,
        value,
        headers,
        decoded: None,
    }
}

#[cfg(test)]
mod tests;
