//! Truncation (a follower or an old leader cutting what the leader does not
//! have): takes the writer role exclusively, cuts the segments, indexes and
//! leader epochs to the offset, rebuilds the producer state of what is kept
//! from a snapshot and the log, and checkpoints.
//!
//! Full truncation (a follower whose log ends below its leader's log start:
//! retention or DeleteRecords ran on the leader while it was away) drops
//! every segment and starts an empty log at the leader's log start.
//!
//! # Durability contract
//! A full truncation commits with one atomic checkpoint write naming the
//! new log start and recovery point (with no leader epochs) before any
//! file goes; recovery treats a log ending below both as a full
//! truncation to finish (as Kafka's log loader does with its log start:
//! the recovery point, which a power loss never goes below, tells the
//! truncation from a power loss that took records above the log start). A crash therefore
//! comes back to the old log, or to the new empty one; never to a log
//! that claims records it lacks. A log that holds nothing may start again
//! lower: there, the old log and the new one both hold nothing.

use std::collections::BTreeMap;

use crate::checkpoint::{PartitionCheckpoint, PARTITION_CHECKPOINT_FILE};
use crate::error::{Error, Result};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{snapshot_file_name, ProducerStateTable};
use crate::segment::{remove_files, write_files, Segment, SegmentHandle};
use crate::storage::Storage;
use crate::types::Offset;

use super::recovery::load_producer_snapshot;
use super::{remove_segment_files, replay_producer_batch, LogState, PartitionLog, Role, RoleGuard};

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
    /// cache follow. At or past the log end nothing is cut, but leader
    /// epochs starting at the log end (taken, never written in) are dropped.
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
        let offset = {
            let mut state = self.state.borrow_mut();
            if offset >= state.written_offset {
                // Nothing to cut, but an epoch this node took as leader at
                // its log end and never wrote in goes, as in Kafka's
                // `truncateTo`: a follower whose latest epoch the leader
                // never had would otherwise be told the same diverging
                // epoch, and truncate to its own end, forever.
                let end = state.written_offset;
                state.epochs.truncate_from_end(end);
                return Ok(end);
            }
            offset.max(state.log_start_offset)
        };
        let (removed, active) = self.detach_segments_after(offset);
        for segment in &removed {
            remove_segment_files(&self.storage, &self.dir, segment.base_offset).await?;
        }
        let ActiveCut {
            handle,
            position,
            size,
            index_unavailable,
        } = active;
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
        let producers = self.producers_below(cut_offset, cut).await?;
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
            state.written_producers.clone_from(&producers);
            state.producers = producers;
            state.epochs.truncate_from_end(new_end);
            state.check_invariants();
            self.cache.borrow_mut().truncate(self.cache_key, new_end);
            let recovery_point = state.recovery_point;
            (new_end, recovery_point)
        };
        self.write_checkpoint(recovery_point).await?;
        Ok(new_end)
    }

    /// Removes every record and starts the log afresh at `offset`, as its
    /// log start and log end (Kafka's `truncateFullyAndStartAt`): a
    /// follower does this when its log ends below the leader's log start,
    /// since nothing it holds is still the partition's. The leader epochs
    /// and producer state are cleared, the high watermark is `offset`.
    /// See the module documentation for what a crash midway leaves.
    ///
    /// A log that holds nothing (one empty segment) may also start again
    /// lower: a follower that started at its leader's log start, which
    /// DeleteRecords left inside a batch, starts again at that batch's
    /// base to take it (as Kafka's follower does on an
    /// `UnexpectedAppendOffsetException` into an empty log).
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] if `offset` is not past the log end of a
    /// log holding records (an ordinary truncation or a DeleteRecords is
    /// what fits then, and a crash midway could leave old records above
    /// the new start); [`Error::Io`], which poisons the log.
    pub async fn truncate_fully_and_start_at(&self, offset: Offset) -> Result<()> {
        let mut guard = self.exclusive().await?;
        let result = self.truncate_fully_locked(offset).await;
        if let Err(error) = &result {
            if !matches!(error, Error::OffsetOutOfRange { .. }) {
                self.poison(error);
            }
        }
        guard.finished = true;
        result
    }

    async fn truncate_fully_locked(&self, offset: Offset) -> Result<()> {
        self.wait_for_swap().await;
        self.read_ahead.forget();
        {
            let state = self.state.borrow();
            let holds_nothing = state.segments.len() == 1 && state.active().size() == 0;
            if offset <= state.written_offset && !holds_nothing {
                return Err(Error::OffsetOutOfRange {
                    requested: offset,
                    log_start: state.log_start_offset,
                    log_end: state.written_offset,
                });
            }
        }
        // No other checkpoint may land between the commit below and the
        // state that matches it: one written from the old state would undo
        // the commit with the old segments half gone.
        let turn = self.checkpoint_turn().await;
        let commit = PartitionCheckpoint {
            recovery_point: offset.0,
            log_start_offset: offset.0,
            high_watermark: offset.0,
            leader_epochs: Vec::new(),
        };
        write_files(
            &self.storage,
            vec![(self.dir.join(PARTITION_CHECKPOINT_FILE), commit.encode())],
        )
        .await?;
        let bases: Vec<Offset> = self.state.borrow().segments.keys().copied().collect();
        for base in bases.into_iter().rev() {
            remove_segment_files(&self.storage, &self.dir, base).await?;
        }
        let snapshots = self
            .snapshot_offsets()
            .await?
            .into_iter()
            .map(|at| self.dir.join(snapshot_file_name(at)))
            .collect();
        remove_files(&self.storage, snapshots).await?;
        let segment = Segment::create(&self.storage, &self.dir, offset).await?;
        {
            let mut state = self.state.borrow_mut();
            state.segments = BTreeMap::from([(offset, segment)]);
            state.log_start_offset = offset;
            state.assigned_offset = offset;
            state.written_offset = offset;
            state.flushed_offset = offset;
            state.high_watermark = offset;
            state.producers = ProducerStateTable::default();
            state.written_producers = ProducerStateTable::default();
            state.epochs = LeaderEpochCache::default();
            state.unflushed_records = 0;
            state.oldest_unflushed_ms = None;
            state.first_dirty_offset = offset;
            state.tombstone_horizon = None;
            state.check_invariants();
        }
        self.cache.borrow_mut().remove_partition(self.cache_key);
        tracing::warn!(partition = %self.partition, log_start = offset.0,
            "truncated the whole log and started it afresh");
        // The empty producer snapshot at the new start, with the checkpoint.
        let result = self.write_checkpoint_exclusively(offset).await;
        drop(turn);
        result
    }

    /// Takes every segment after the one holding `offset` out of the log
    /// (the caller removes their files); the one holding it becomes the
    /// active segment, to be cut at `offset`.
    fn detach_segments_after(&self, offset: Offset) -> (Vec<Segment<S>>, ActiveCut<S>) {
        let mut state = self.state.borrow_mut();
        let first_base = *state.segments.keys().next().expect("a log has segments");
        let keep_from = offset.max(first_base);
        let later: Vec<Offset> = state
            .segments
            .range(keep_from.next()..)
            .map(|(base, _)| *base)
            .collect();
        let removed = later
            .into_iter()
            .filter_map(|base| state.segments.remove(&base))
            .collect();
        let segment = state.active_mut();
        let active = ActiveCut {
            handle: segment.handle(),
            position: segment.start_position_for(offset),
            size: segment.size(),
            index_unavailable: !matches!(segment.indexes, crate::segment::Indexes::Loaded(..)),
        };
        (removed, active)
    }

    /// The producer state of the log's first `end` offsets, as Kafka's
    /// `truncateAndReload` rebuilds it: the newest producer snapshot at or
    /// below `end`, then every batch from there to `end` replayed. Cutting
    /// the table instead would be wrong where the cut removed a producer's
    /// newer epoch or its newest batches: the table no longer holds what
    /// came before them (it keeps five batches of one epoch), so the
    /// producer would be forgotten, and a retry of a batch the log still
    /// holds accepted again. Snapshots past `end` are removed first: they
    /// describe records the cut removed, and a later truncation must not
    /// load one. Segments roll with a snapshot at their base, kept while
    /// the segment lives ([`PartitionLog::write_checkpoint`]), so the
    /// replay reads at most the segments from the one holding `end`'s
    /// newest snapshot: the active segment's part below `cut_position`,
    /// and the whole of any earlier one.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::CorruptLog`] if a batch below `end` does not
    /// verify.
    async fn producers_below(&self, end: Offset, cut_position: u64) -> Result<ProducerStateTable> {
        let snapshots = self.snapshot_offsets().await?;
        let past_end = snapshots
            .iter()
            .filter(|&&offset| offset > end)
            .map(|&offset| self.dir.join(snapshot_file_name(offset)))
            .collect();
        remove_files(&self.storage, past_end).await?;
        let (mut producers, replay_from) =
            match load_producer_snapshot(&self.storage, &self.dir, &snapshots, end).await {
                Some(loaded) => loaded,
                None => (ProducerStateTable::default(), Offset::ZERO),
            };
        self.load_indexes_holding(replay_from).await;
        let sources: Vec<(SegmentHandle<S>, u64, Offset, u64)> = {
            let state = self.state.borrow();
            let active_base = state.active().base_offset;
            state
                .segments
                .values()
                .filter(|segment| segment.next_offset > replay_from && segment.base_offset < end)
                .map(|segment| {
                    let limit = if segment.base_offset == active_base {
                        cut_position
                    } else {
                        segment.size()
                    };
                    let (position, position_offset) = if segment.base_offset < replay_from {
                        (
                            segment.start_position_for(replay_from),
                            segment.index_entry_for(replay_from),
                        )
                    } else {
                        (0, segment.base_offset)
                    };
                    (segment.handle(), position, position_offset, limit)
                })
                .collect()
        };
        for (handle, position, position_offset, limit) in sources {
            let scan = handle
                .scan(position, limit, position_offset, |header, _| {
                    if header.base_offset >= replay_from && header.base_offset < end {
                        replay_producer_batch(&mut producers, header);
                    }
                })
                .await?;
            if let Some(reason) = scan.stopped_by {
                return Err(Error::CorruptLog {
                    path: handle.path().to_path_buf(),
                    position: scan.end_position,
                    reason,
                });
            }
        }
        producers.truncate_start(self.state.borrow().log_start_offset);
        Ok(producers)
    }
}

/// The segment a truncation cuts, as it was before the cut.
struct ActiveCut<S: Storage> {
    handle: SegmentHandle<S>,
    /// Where the batch holding the truncation offset may start (an index
    /// entry at or before it).
    position: u64,
    /// The segment's size.
    size: u64,
    /// Its indexes are not loaded (their files were lost): they are
    /// rebuilt from the kept batches.
    index_unavailable: bool,
}
