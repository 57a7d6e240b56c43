//! Truncation (a follower or an old leader cutting what the leader does not
//! have): takes the writer role exclusively, cuts the segments, indexes,
//! producer state and leader epochs to the offset, and checkpoints.

use crate::error::{Error, Result};
use crate::segment::{remove_files, Segment};
use crate::storage::Storage;
use crate::types::Offset;

use super::{remove_segment_files, LogState, PartitionLog, Role, RoleGuard};

impl<S: Storage> PartitionLog<S> {
    /// Waits until no append is queued or being written and takes the writer
    /// role, so truncation and deletion see a still log.
    pub(super) async fn exclusive(&self) -> Result<RoleGuard<'_, S>> {
        self.take_writer_role(|state| self.usable(state)).await
    }

    /// [`PartitionLog::exclusive`], failing with `check` instead of
    /// [`PartitionLog::usable`].
    pub(super) async fn take_writer_role(
        &self,
        check: impl Fn(&LogState<S>) -> Result<()>,
    ) -> Result<RoleGuard<'_, S>> {
        self.wait_for_writer(|state| {
            check(state)?;
            Ok(state.pending.is_empty() && !state.writer_active)
        })
        .await?;
        // No await since the check: the role is still free.
        self.state.borrow_mut().writer_active = true;
        Ok(RoleGuard {
            log: self,
            role: Role::Writer,
            finished: false,
        })
    }

    /// Removes every batch holding an offset at or after `offset` (a follower
    /// does this when its log diverged from the new leader's). Like Kafka, a
    /// batch that holds `offset` is removed whole, so the log end may land
    /// below `offset`. The high watermark, producer state, leader epochs and
    /// cache follow.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptLog`].
    pub async fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        let mut guard = self.exclusive().await?;
        let result = self.truncate_locked(offset).await;
        if let Err(error) = &result {
            self.poison(error);
        }
        guard.finished = true;
        result
    }

    pub(super) async fn truncate_locked(&self, offset: Offset) -> Result<Offset> {
        self.wait_for_swap().await;
        self.read_ahead.forget();
        // The segment holding `offset` becomes the active one.
        self.load_indexes_holding(offset).await;
        let (removed, segment) = {
            let mut state = self.state.borrow_mut();
            if offset >= state.written_offset {
                return Ok(state.written_offset);
            }
            let offset = offset.max(state.log_start_offset);
            let first_base = *state.segments.keys().next().expect("a log has segments");
            let keep_from = if offset <= first_base {
                first_base
            } else {
                offset
            };
            let later: Vec<Offset> = state
                .segments
                .range(keep_from.next()..)
                .map(|(base, _)| *base)
                .collect();
            let removed: Vec<Segment<S>> = later
                .into_iter()
                .filter_map(|base| state.segments.remove(&base))
                .collect();
            let segment = state.active_mut();
            (
                removed,
                (
                    segment.handle(),
                    segment.start_position_for(offset),
                    segment.size(),
                    !matches!(segment.indexes, crate::segment::Indexes::Loaded(..)),
                ),
            )
        };
        for segment in &removed {
            remove_segment_files(&self.storage, &self.dir, segment.base_offset).await?;
        }
        let (handle, position, size, index_unavailable) = segment;
        let located = handle
            .read(position, size, offset, 1, Offset(i64::MAX))
            .await?;
        let (cut, cut_offset) = match located.first() {
            Some((batch, _)) => (batch.position, batch.header.base_offset),
            None => (size, self.state.borrow().active().next_offset),
        };
        // The segment becomes the active one and appends need its indexes:
        // rebuild them from the kept batches if its index files were lost.
        // Otherwise only the batches the time index does not cover are
        // read, for the greatest timestamp kept.
        let (scan_from, scan_from_offset) = self
            .state
            .borrow()
            .active()
            .timestamps_uncovered_below(cut_offset);
        debug_assert!(!index_unavailable || scan_from == 0);
        let mut kept = Vec::new();
        let scan = handle
            .scan(scan_from, cut, scan_from_offset, |header, at| {
                kept.push((*header, at));
            })
            .await?;
        if let Some(reason) = scan.stopped_by {
            return Err(Error::CorruptLog {
                path: handle.path().to_path_buf(),
                position: scan.end_position,
                reason,
            });
        }
        // The index files go first: after the cut they would point past the
        // log, and a crash in between must not leave them behind.
        let index_paths = self.state.borrow().active().index_paths();
        remove_files(&self.storage, index_paths).await?;
        handle.truncate(cut).await?;
        handle.fdatasync().await?;
        self.storage
            .sync_dir(&self.dir)
            .await
            .map_err(|error| Error::io("syncing partition directory", &self.dir, error))?;
        let tail = handle.read_tail(cut).await?;
        let (new_end, recovery_point) = {
            let mut state = self.state.borrow_mut();
            let policy = state.config.index_policy();
            let segment = state.active_mut();
            if index_unavailable {
                segment.rebuild_indexes(&kept, policy);
            }
            segment.truncated(cut_offset, cut, tail, &kept);
            let new_end = segment.next_offset;
            state.assigned_offset = new_end;
            state.written_offset = new_end;
            state.flushed_offset = state.flushed_offset.min(new_end);
            state.high_watermark = state.high_watermark.min(new_end);
            state.recovery_point = state.recovery_point.min(new_end);
            state.log_start_offset = state.log_start_offset.min(new_end);
            state.producers.truncate_to(new_end);
            state.epochs.truncate_from_end(new_end);
            state.check_invariants();
            self.cache.borrow_mut().truncate(self.cache_key, new_end);
            let recovery_point = state.recovery_point;
            (new_end, recovery_point)
        };
        self.write_checkpoint(recovery_point).await?;
        Ok(new_end)
    }
}
