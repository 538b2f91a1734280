//! Rebuilding the in-memory state from the segment files at start: every batch is checked, a
//! torn tail is cut off, damage anywhere else is refused with the file and byte named. A torn
//! tail is the last batch of the newest segment cut short, or followed only by zeros (a file
//! that grew for a write whose bytes did not all reach the disk).

use super::SegmentError;
use super::format::{self, BATCH_HEADER, Item, MAGIC};
use super::index::PosIndex;
use super::state::*;

use std::fs::OpenOptions;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

/// What recovery found besides the state.
pub struct Recovered {
    /// The rebuilt state.
    pub state: State,
    /// The id the next segment gets.
    pub next_segment: u32,
}

/// Rebuilds the state from the segment files in `dir`. A torn batch at the end of the newest
/// segment (a crash mid-write: never acknowledged) is cut off; damage anywhere else is an error.
pub fn recover(dir: &Path, cache_budget: usize) -> Result<Recovered, SegmentError> {
    let io =
        |what: &str, e: std::io::Error| SegmentError::io(format!("{what} in {}", dir.display()), e);
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
                    } else if zeros_from(&file, end, size)
                        .map_err(|e| io("cannot read a segment", e))?
                    {
                        // The file grew to hold the last write but not all of its bytes
                        // reached the disk (they read as zeros): its length field may itself
                        // be cut short, so the batch seems to end early.
                        torn = Some("a last batch whose checksum fails, only zeros behind it");
                    } else {
                        damaged = Some("a batch whose checksum fails");
                    }
                    break;
                }
                let body_at = good + BATCH_HEADER as u64;
                let items = format::items(&body).map_err(|e| {
                    SegmentError::Invalid(format!(
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
            return Err(SegmentError::Invalid(format!(
                "{} is not an orderflow log segment (its header is {magic:?}); move it out of the log directory",
                path.display()
            )));
        }
        if let Some(what) = damaged {
            return Err(SegmentError::Invalid(format!(
                "the log segment {} is damaged at byte {good} ({what}); an interrupted write \
                 leaves only the end of the newest segment unreadable: restore the directory \
                 from a backup",
                path.display()
            )));
        }
        if let Some(what) = torn {
            if Some(id) != newest {
                return Err(SegmentError::Invalid(format!(
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
            return Err(SegmentError::Invalid(format!(
                "the log in {} claims offsets {base}..{end} of {} for {} records: damaged",
                dir.display(),
                state.topic_name(pidx),
                entries.len()
            )));
        }
        let part = &mut state.parts[pidx];
        part.base = base;
        part.cache_base = end;
        part.pos = PosIndex::default();
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

/// Whether every byte of `file` from `from` to `to` is zero.
fn zeros_from(file: &std::fs::File, from: u64, to: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let want = buf.len().min((to - at) as usize);
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
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
