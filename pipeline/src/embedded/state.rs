//! What the embedded log keeps in memory: topics, where every kept record sits on disk, a cache
//! of the newest records, the groups' committed offsets and the segment files; and how all of it
//! is rebuilt from the segments at start.
//!
//! Only the writer thread changes this state, and only after the batch that carries the change
//! is on disk, so a reader never sees a record or an offset that a crash could take back.

use super::format::{self, BATCH_HEADER, Item, MAGIC};
use crate::log::{LogError, Record};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

/// The position of an offset that has no record: a gap (an earlier version's failed write).
const NO_POS: u32 = u32::MAX;

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
/// The index costs four bytes a record: the frame's position per offset, and which segment
/// holds which offsets as runs (a partition's records go to one segment after another, so there
/// are about as many runs as segments; a record moved forward by retention splits a run).
pub struct Part {
    /// Topic id.
    pub topic: u16,
    /// Partition number.
    pub partition: u32,
    /// First kept offset; everything below is trimmed.
    pub base: u64,
    /// Frame positions of offsets `base..end` in their segments ([`NO_POS`] for a gap).
    pos: VecDeque<u32>,
    /// First offset of each run → the segment holding the run; a run lasts until the next.
    spans: BTreeMap<u64, u32>,
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
            pos: VecDeque::new(),
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

    /// The segment of the run `offset` falls in.
    fn segment_of(&self, offset: u64) -> Option<u32> {
        self.spans.range(..=offset).next_back().map(|(_, s)| *s)
    }

    /// Where `offset` is, if it is kept and not a gap.
    pub fn loc(&self, offset: u64) -> Option<Loc> {
        if offset < self.base {
            return None;
        }
        let pos = *self.pos.get((offset - self.base) as usize)?;
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
const MAX_GAP: u64 = 1 << 24;

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
            part.pos[(offset - part.base) as usize] = loc.pos;
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
pub fn read_miss(topic: &str, partition: u32, miss: &Miss) -> Result<Record, LogError> {
    let frame = read_frame(&miss.file, miss.loc.pos)
        .map_err(|e| LogError::Unavailable(format!("cannot read the embedded log: {e}")))?;
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

/// What recovery found besides the state.
pub struct Recovered {
    /// The rebuilt state.
    pub state: State,
    /// The id the next segment gets.
    pub next_segment: u32,
}

/// Rebuilds the state from the segment files in `dir`. A torn batch at the end of the newest
/// segment (a crash mid-write: never acknowledged) is cut off; damage anywhere else is an error.
pub fn recover(dir: &Path, cache_budget: usize) -> Result<Recovered, LogError> {
    let io = |what: &str, e: std::io::Error| {
        LogError::Unavailable(format!("{what} in {}: {e}", dir.display()))
    };
    let mut ids: Vec<u32> = std::fs::read_dir(dir)
        .map_err(|e| io("cannot list the log", e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| format::segment_id(&entry.file_name().to_string_lossy()))
        .collect();
    ids.sort_unstable();
    let mut state = State::new(cache_budget);
    // Per partition: every (offset, location) seen, later ones winning.
    let mut seen: Vec<Vec<(u64, Loc)>> = Vec::new();
    let mut bounds: Vec<(u64, u64)> = Vec::new();
    let newest = ids.last().copied();
    for &id in &ids {
        let path = dir.join(format::segment_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(&format!("cannot open {}", path.display()), e))?;
        let size = file
            .metadata()
            .map_err(|e| io("cannot stat a segment", e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut magic = [0u8; 8];
        let mut good = 0u64;
        let header_ok = reader.read_exact(&mut magic).is_ok() && &magic == MAGIC;
        let mut torn = None;
        let mut damaged = None;
        if header_ok {
            good = MAGIC.len() as u64;
            loop {
                let mut header = [0u8; BATCH_HEADER];
                match read_full(&mut reader, &mut header) {
                    Ok(0) => break,
                    Ok(n) if n < BATCH_HEADER => {
                        torn = Some("a cut batch header");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(io("cannot read a segment", e)),
                }
                let (len, crc) = format::batch_header(&header);
                let end = good + (BATCH_HEADER + len) as u64;
                // An interrupted write can only leave the last batch of the file incomplete
                // or unreadable; a bad batch with more bytes behind it is damage.
                if end > size {
                    torn = Some("a cut batch");
                    break;
                }
                if len > format::MAX_BATCH {
                    damaged = Some("a batch length no writer produces");
                    break;
                }
                let mut body = vec![0u8; len];
                reader
                    .read_exact(&mut body)
                    .map_err(|e| io("cannot read a segment", e))?;
                if !format::body_intact(&body, crc) {
                    if end == size {
                        torn = Some("a last batch whose checksum fails");
                    } else {
                        damaged = Some("a batch whose checksum fails");
                    }
                    break;
                }
                let body_at = good + BATCH_HEADER as u64;
                let items = format::items(&body).map_err(|e| {
                    LogError::Invalid(format!(
                        "the log segment {} has a batch at byte {good} that this version cannot read ({e})",
                        path.display()
                    ))
                })?;
                for item in items {
                    apply_item(&mut state, &mut seen, &mut bounds, id, body_at, item);
                }
                good = body_at + len as u64;
            }
        }
        if !header_ok {
            let blank = magic.iter().all(|b| *b == 0);
            if Some(id) == newest && (size < MAGIC.len() as u64 || blank) {
                // Created, but the crash came before its header was on disk: it holds nothing.
                tracing::warn!(segment = %path.display(), "Removing an empty log segment left by an interrupted start");
                drop(reader);
                drop(file);
                std::fs::remove_file(&path).map_err(|e| io("cannot remove an empty segment", e))?;
                continue;
            }
            return Err(LogError::Invalid(format!(
                "{} is not an orderflow log segment (its header is {magic:?}); move it out of the log directory",
                path.display()
            )));
        }
        if let Some(what) = damaged {
            return Err(LogError::Invalid(format!(
                "the log segment {} is damaged at byte {good} ({what}); an interrupted write \
                 leaves only the end of the newest segment unreadable: restore the directory \
                 from a backup",
                path.display()
            )));
        }
        if let Some(what) = torn {
            if Some(id) != newest {
                return Err(LogError::Invalid(format!(
                    "the log segment {} is damaged at byte {good} ({what}); it is not the newest, \
                     so this is not an interrupted write: restore the directory from a backup",
                    path.display()
                )));
            }
            tracing::warn!(segment = %path.display(), at = good, what, "Cutting off the torn end of the log (an interrupted write, never acknowledged)");
            file.set_len(good)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("cannot cut a torn segment", e))?;
        }
        drop(reader);
        state
            .segments
            .insert(id, Segment::new(Arc::new(file), good));
    }
    // Build the index: one position per offset from each partition's base to its end.
    let mut lost = 0u64;
    for (pidx, mut entries) in seen.into_iter().enumerate() {
        let (base, end) = bounds[pidx];
        // Stable: of two copies of one offset, the later one (a move) wins.
        entries.sort_by_key(|(offset, _)| *offset);
        for (_, loc) in &entries {
            if let Some(segment) = state.segments.get_mut(&loc.segment) {
                segment.records += 1;
            }
        }
        // The index holds a slot per offset, written or not; a range far wider than the records
        // found is not a log this code wrote, and must not become a huge allocation.
        if end - base > entries.len() as u64 + MAX_GAP {
            return Err(LogError::Invalid(format!(
                "the log in {} claims offsets {base}..{end} of {} for {} records: damaged",
                dir.display(),
                state.topic_name(pidx),
                entries.len()
            )));
        }
        let part = &mut state.parts[pidx];
        part.base = base;
        part.cache_base = end;
        part.pos = VecDeque::with_capacity((end - base) as usize);
        let mut at = 0;
        let mut run = None;
        for offset in base..end {
            let mut found = None;
            while at < entries.len() && entries[at].0 <= offset {
                if entries[at].0 == offset {
                    found = Some(entries[at].1);
                }
                at += 1;
            }
            match found {
                Some(loc) => {
                    part.pos.push_back(loc.pos);
                    if run != Some(loc.segment) {
                        part.spans.insert(offset, loc.segment);
                        run = Some(loc.segment);
                    }
                    if let Some(segment) = state.segments.get_mut(&loc.segment) {
                        segment.live += 1;
                    }
                }
                None => {
                    lost += 1;
                    part.pos.push_back(NO_POS);
                }
            }
        }
    }
    if lost > 0 {
        // Offsets that were never written (a failed write of an earlier version left gaps) or
        // whose segment is gone: readers skip them.
        tracing::warn!(
            offsets = lost,
            "Some offsets of the log have no record; readers skip them"
        );
    }
    Ok(Recovered {
        state,
        next_segment: newest.map_or(0, |id| id + 1),
    })
}

fn apply_item(
    state: &mut State,
    seen: &mut Vec<Vec<(u64, Loc)>>,
    bounds: &mut Vec<(u64, u64)>,
    segment: u32,
    body_at: u64,
    item: Item<'_>,
) {
    match item {
        Item::Topic {
            id,
            name,
            partitions,
        } => {
            if usize::from(id) == state.topics.len() && !state.by_name.contains_key(name) {
                state.add_topic(name, partitions);
                seen.resize_with(state.parts.len(), Vec::new);
                bounds.resize(state.parts.len(), (0, 0));
            }
        }
        Item::Record {
            topic,
            partition,
            offset,
            frame_at,
            frame: _,
        } => {
            if let Some(pidx) = state.pidx(topic, partition) {
                let loc = Loc {
                    segment,
                    pos: (body_at + frame_at as u64) as u32,
                };
                seen[pidx].push((offset, loc));
                bounds[pidx].1 = bounds[pidx].1.max(offset.saturating_add(1));
            }
        }
        Item::Commit {
            group,
            topic,
            partition,
            next,
        } => {
            if let Some(pidx) = state.pidx(topic, partition) {
                state.committed.insert((Arc::from(group), pidx), next);
            }
        }
        Item::Partition {
            topic,
            partition,
            base,
            end,
        } => {
            if let Some(pidx) = state.pidx(topic, partition) {
                let (b, e) = &mut bounds[pidx];
                *b = (*b).max(base);
                *e = (*e).max(end).max(*b);
            }
        }
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_segments(ids: &[u32]) -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = State::new(1 << 20);
        for id in ids {
            let file = File::create(dir.path().join(format::segment_name(*id))).expect("file");
            state.segments.insert(*id, Segment::new(Arc::new(file), 0));
        }
        state.add_topic("t", 1);
        (dir, state)
    }

    fn at(segment: u32, pos: u32) -> Loc {
        Loc { segment, pos }
    }

    #[test]
    fn runs_follow_appends_moves_and_trims() {
        let (_dir, mut state) = state_with_segments(&[1, 2, 3, 5]);
        for (offset, (segment, pos)) in [(1, 10), (1, 20), (2, 10), (2, 20), (3, 10)]
            .into_iter()
            .enumerate()
        {
            state.place(0, offset as u64, at(segment, pos), None);
        }
        let part = &state.parts[0];
        assert_eq!(part.loc(1), Some(at(1, 20)));
        assert_eq!(part.loc(3), Some(at(2, 20)));
        assert_eq!(part.runs_in(2), vec![2..4]);
        assert_eq!(state.segments[&1].live, 2);

        // Moving offset 2 forward splits the run of segment 2.
        state.place(0, 2, at(5, 99), None);
        let part = &state.parts[0];
        assert_eq!(part.loc(2), Some(at(5, 99)));
        assert_eq!(part.loc(3), Some(at(2, 20)), "the rest of the run stays");
        assert_eq!(part.runs_in(2), vec![3..4]);
        assert_eq!(part.runs_in(5), vec![2..3]);
        assert_eq!((state.segments[&2].live, state.segments[&5].live), (1, 1));
        assert_eq!(
            state.segments[&2].records, 2,
            "records ever written stay counted"
        );

        // A gap: offset 7 lands after two missing ones.
        state.place(0, 7, at(3, 30), None);
        assert_eq!(state.parts[0].loc(5), None);
        assert_eq!(state.parts[0].loc(7), Some(at(3, 30)));

        // Trimming below 3 forgets offsets 0..3 and what they held.
        assert_eq!(state.trim(0, 3), 3);
        let part = &state.parts[0];
        assert_eq!((part.base, part.end()), (3, 8));
        assert_eq!(part.loc(2), None);
        assert_eq!(part.loc(3), Some(at(2, 20)));
        assert_eq!(part.runs_in(1), Vec::<std::ops::Range<u64>>::new());
        assert_eq!(
            (
                state.segments[&1].live,
                state.segments[&5].live,
                state.segments[&2].live
            ),
            (0, 0, 1)
        );
        // Trimming everything leaves an empty partition that still ends at 8.
        assert_eq!(state.trim(0, 100), 3, "3, 4 and 7; 5 and 6 were gaps");
        assert_eq!((state.parts[0].base, state.parts[0].end()), (8, 8));
        assert!(state.segments.values().all(|s| s.live == 0));
    }
}
