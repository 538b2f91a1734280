//! The writer's retention work: forgetting trimmed records, moving the few still needed out of
//! old segments, and handing segment files nothing needs to the reaper, which deletes them.

use super::*;
use std::sync::mpsc;

/// Segment files to delete, and the trim's caller to answer once they are gone.
pub(super) struct Reap {
    paths: Vec<PathBuf>,
    trimmed: u64,
    reply: oneshot::Sender<Result<u64, SegmentError>>,
}

/// The thread that deletes dead segment files, so the writer does not wait for it. Deleting
/// a full 64 MiB segment costs the kernel about 27 ms (its cached pages are dropped, its
/// blocks freed); a pass that removed a dozen of them held every append in the process for
/// 300 ms when the writer did it. The files are out of the writer's state before they come
/// here, and their records below durable partition bases, so a crash before they are gone
/// leaves only files that recovery reads as dead and the next pass deletes.
pub(super) struct Reaper {
    /// `None` only while dropping: taking it ends the thread's loop.
    jobs: Option<mpsc::Sender<Reap>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    /// Starts the reaper of segment files in `dir`.
    pub(super) fn start(dir: &Path) -> Result<Self, SegmentError> {
        let (jobs, queue) = mpsc::channel::<Reap>();
        let dir = dir.to_owned();
        let thread = std::thread::Builder::new()
            .name("orderflow-reap".into())
            .spawn(move || {
                for job in queue {
                    let _ = job
                        .reply
                        .send(delete_segments(&dir, &job.paths).map(|()| job.trimmed));
                }
            })
            .map_err(|e| io_error("cannot start the log reaper thread", e))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Deletes `paths`, then answers `reply` with `trimmed`; at once if there is nothing to delete.
    fn reap(
        &self,
        paths: Vec<PathBuf>,
        trimmed: u64,
        reply: oneshot::Sender<Result<u64, SegmentError>>,
    ) {
        if paths.is_empty() {
            let _ = reply.send(Ok(trimmed));
            return;
        }
        let job = Reap {
            paths,
            trimmed,
            reply,
        };
        if let Some(Err(mpsc::SendError(job))) = self.jobs.as_ref().map(|jobs| jobs.send(job)) {
            // Only if the thread died: the files stay, and the next pass finds them dead again.
            let _ = job.reply.send(Err(SegmentError::Unavailable(
                "the log reaper thread has stopped".into(),
            )));
        }
    }
}

impl Drop for Reaper {
    /// Waits for the deletions already handed over, so a log reopened at once finds them done.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Deletes segment files and makes their removal durable.
fn delete_segments(dir: &Path, paths: &[PathBuf]) -> Result<(), SegmentError> {
    for path in paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(segment = %path.display(), error = %e, "Cannot delete a log segment");
        }
    }
    sync_dir(dir)?;
    metrics::counter!("orderflow_log_segments_deleted_total").increment(paths.len() as u64);
    Ok(())
}

impl Writer {
    /// Trims to `floors`, then has the reaper delete the segments left dead and answer `reply`.
    pub(super) fn trim_and_reap(
        &mut self,
        floors: &[(usize, u64)],
        reply: oneshot::Sender<Result<u64, SegmentError>>,
    ) {
        match self.trim(floors) {
            Ok((trimmed, dead)) => self.reaper.reap(dead, trimmed, reply),
            Err(e) => drop(reply.send(Err(e))),
        }
    }

    /// Forgets records below `floors`, moves stragglers forward and takes the segments left
    /// with nothing live out of the state: how many records went, and the files to delete.
    fn trim(&mut self, floors: &[(usize, u64)]) -> Result<(u64, Vec<PathBuf>), SegmentError> {
        self.batch.clear();
        let mut moves = Vec::new();
        {
            let state = self.state.read();
            for &(pidx, floor) in floors {
                let Some(part) = state.parts.get(pidx) else {
                    continue;
                };
                let base = floor.min(part.end());
                if base > part.base {
                    self.batch
                        .partition(part.topic, part.partition, base, part.end());
                    moves.push((pidx, base));
                }
            }
        }
        let mut trimmed = 0;
        if !moves.is_empty() {
            self.write_batch()?;
            let mut state = self.state.write();
            for (pidx, base) in moves {
                trimmed += state.trim(pidx, base);
            }
            if let Some(segment) = state.segments.get_mut(&self.active) {
                segment.size = self.size;
            }
        }
        self.relocate_stragglers()?;
        Ok((trimmed, self.take_dead_segments()))
    }

    /// Where a frame `frame_at` bytes into the batch written at `at` sits.
    pub(super) fn loc(&self, at: u64, frame_at: usize) -> Loc {
        Loc {
            segment: self.active,
            // Segments are at most 1 GiB (checked at open), so a position fits.
            pos: (at + frame_at as u64) as u32,
        }
    }

    /// Indexes records the batch written at `at` moved into the active segment (from older
    /// segments or the legacy log), and notes the segment's new size.
    pub(super) fn place_moved(&self, state: &mut State, at: u64, placed: Vec<(usize, u64, usize)>) {
        for (pidx, offset, frame_at) in placed {
            state.place(pidx, offset, self.loc(at, frame_at), None);
        }
        if let Some(segment) = state.segments.get_mut(&self.active) {
            segment.size = self.size;
        }
    }

    /// Copies the few records still needed out of old, mostly dead segments into the active
    /// one, so those files can go.
    fn relocate_stragglers(&mut self) -> Result<(), SegmentError> {
        // Found under the lock, read after it: readers must not wait behind this disk I/O.
        let wanted: Vec<(usize, u16, u32, u64, Loc, Arc<File>)> = {
            let state = self.state.read();
            let newest_sealed = state
                .segments
                .range(..self.active)
                .next_back()
                .map(|(id, _)| *id);
            let mut wanted = Vec::new();
            for (id, segment) in state.segments.range(..self.active) {
                if Some(*id) == newest_sealed
                    || segment.live == 0
                    || segment.live * 100 >= segment.records * RELOCATE_BELOW_PERCENT
                {
                    continue;
                }
                for (pidx, part) in state.parts.iter().enumerate() {
                    for run in part.runs_in(*id) {
                        for offset in run {
                            if let Some(loc) = part.loc(offset) {
                                wanted.push((
                                    pidx,
                                    part.topic,
                                    part.partition,
                                    offset,
                                    loc,
                                    Arc::clone(&segment.file),
                                ));
                            }
                        }
                    }
                }
            }
            wanted
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let mut moved = 0;
        let mut moved_bytes = 0;
        let mut rest = wanted.as_slice();
        while !rest.is_empty() && moved_bytes < RELOCATE_PASS_BYTES {
            // Batches of bounded size, each durable before the next.
            self.batch.clear();
            let mut placed = Vec::new();
            let mut taken = 0;
            for (pidx, topic, partition, offset, loc, file) in rest {
                if self.batch.len() > RELOCATE_BATCH_BYTES && taken > 0 {
                    break;
                }
                let frame = read_frame(file, loc.pos)
                    .map_err(|e| io_error("cannot read a record to move it", e))?;
                if let Some((at, _)) = self.batch.record_frame(*topic, *partition, *offset, &frame)
                {
                    placed.push((*pidx, *offset, at));
                }
                taken += 1;
            }
            rest = &rest[taken..];
            moved_bytes += self.batch.len();
            let at = self.write_batch()?;
            let mut state = self.state.write();
            moved += placed.len();
            self.place_moved(&mut state, at, placed);
        }
        tracing::debug!(
            records = moved,
            left = rest.len(),
            "Moved live records out of old log segments"
        );
        Ok(())
    }

    /// Takes the sealed segments that hold nothing live out of the state; their files' paths.
    fn take_dead_segments(&mut self) -> Vec<PathBuf> {
        let mut state = self.state.write();
        let dead: Vec<u32> = state
            .segments
            .range(..self.active)
            .filter(|(_, s)| s.live == 0)
            .map(|(id, _)| *id)
            .collect();
        dead.into_iter()
            .map(|id| {
                state.segments.remove(&id);
                self.dir.join(format::segment_name(id))
            })
            .collect()
    }
}
