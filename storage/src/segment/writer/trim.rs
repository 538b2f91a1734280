//! The writer's retention work: forgetting trimmed records, moving the few still needed out of
//! old segments, and deleting segment files nothing needs.

use super::*;

impl Writer {
    pub(super) fn trim(&mut self, floors: &[(usize, u64)]) -> Result<u64, SegmentError> {
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
        self.delete_dead_segments()?;
        Ok(trimmed)
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

    /// Deletes sealed segments that hold nothing live.
    fn delete_dead_segments(&mut self) -> Result<(), SegmentError> {
        let dead: Vec<u32> = {
            let mut state = self.state.write();
            let dead: Vec<u32> = state
                .segments
                .range(..self.active)
                .filter(|(_, s)| s.live == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in &dead {
                state.segments.remove(id);
            }
            dead
        };
        if dead.is_empty() {
            return Ok(());
        }
        for id in &dead {
            let path = self.dir.join(format::segment_name(*id));
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "Cannot delete a log segment");
            }
        }
        sync_dir(&self.dir)?;
        metrics::counter!("orderflow_log_segments_deleted_total").increment(dead.len() as u64);
        Ok(())
    }
}
