//! Retention and DeleteRecords: the log start moves up and segments wholly
//! below it are deleted, by time (`retention.ms`), size (`retention.bytes`)
//! or request; the active segment always stays.

use crate::error::{Error, Result};
use crate::segment::Segment;
use crate::storage::Storage;
use crate::types::{Offset, TimestampMs};

use super::{remove_segment_files, PartitionLog};

impl<S: Storage> PartitionLog<S> {
    /// DeleteRecords: moves the log start offset up to `offset` (at most the
    /// high watermark) and deletes segments wholly below it. Returns the new
    /// log start offset.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] if `offset` is above the high watermark;
    /// [`Error::Io`].
    pub async fn delete_records(&self, offset: Offset) -> Result<Offset> {
        {
            let mut state = self.state.borrow_mut();
            self.usable(&state)?;
            if offset > state.high_watermark {
                return Err(Error::OffsetOutOfRange {
                    requested: offset,
                    log_start: state.log_start_offset,
                    log_end: state.high_watermark,
                });
            }
            if offset > state.log_start_offset {
                state.log_start_offset = offset;
                state.producers.truncate_start(offset);
                state.written_producers.truncate_start(offset);
                state.epochs.truncate_from_start(offset);
            }
        }
        let recovery_point = self.state.borrow().recovery_point;
        self.write_checkpoint(recovery_point).await?;
        self.delete_segments_below_start().await?;
        Ok(self.state.borrow().log_start_offset)
    }

    /// Deletes whole non-active segments whose records are all below the log
    /// start offset.
    pub(super) async fn delete_segments_below_start(&self) -> Result<usize> {
        self.wait_for_swap().await;
        let doomed: Vec<Segment<S>> = {
            let mut state = self.state.borrow_mut();
            let start = state.log_start_offset;
            let active_base = state.active().base_offset;
            let bases: Vec<Offset> = state
                .segments
                .values()
                .filter(|segment| segment.base_offset < active_base && segment.next_offset <= start)
                .map(|segment| segment.base_offset)
                .collect();
            bases
                .into_iter()
                .filter_map(|base| state.segments.remove(&base))
                .collect()
        };
        for segment in &doomed {
            remove_segment_files(&self.storage, &self.dir, segment.base_offset).await?;
        }
        Ok(doomed.len())
    }

    /// Applies `retention.ms` and `retention.bytes` when `cleanup.policy`
    /// includes `delete` (a compacted log keeps its old segments, the cleaner
    /// thins them instead): deletes the oldest
    /// non-active segments whose newest record is older than `retention.ms`,
    /// then while the log exceeds `retention.bytes` by a whole segment. The
    /// log start offset moves to the first remaining segment. Returns the
    /// number of segments deleted.
    ///
    /// # Errors
    /// [`Error::Io`] (the log is not poisoned: retention never touches data
    /// that is still served).
    pub async fn enforce_retention(&self, now: TimestampMs) -> Result<usize> {
        loop {
            let unloaded = {
                let mut state = self.state.borrow_mut();
                if state.poisoned.is_some() || state.closed || !state.config.cleanup_policy.delete {
                    return Ok(0);
                }
                let retention_ms = state.config.retention_ms;
                let retention_bytes = state.config.retention_bytes;
                let mut total: u64 = state.segments.values().map(Segment::size).sum();
                let active_base = state.active().base_offset;
                let high_watermark = state.high_watermark;
                let mut new_start = state.log_start_offset;
                let mut unloaded = None;
                for segment in state.segments.values() {
                    // Never the active segment, never data consumers cannot have read.
                    if segment.base_offset >= active_base || segment.next_offset > high_watermark {
                        break;
                    }
                    // A segment from an earlier run knows its newest timestamp
                    // from its time index only.
                    if retention_ms >= 0 && segment.indexes_on_disk() {
                        unloaded = Some(segment.base_offset);
                        break;
                    }
                    let expired = retention_ms >= 0
                        && segment.max_timestamp != TimestampMs::NONE
                        && now.0.saturating_sub(segment.max_timestamp.0) > retention_ms;
                    let oversized = retention_bytes >= 0
                        && total.saturating_sub(segment.size()) >= retention_bytes as u64;
                    if !(expired || oversized) {
                        break;
                    }
                    total -= segment.size();
                    new_start = new_start.max(segment.next_offset);
                }
                if unloaded.is_none() {
                    if new_start <= state.log_start_offset {
                        return Ok(0);
                    }
                    tracing::info!(partition = %self.partition, log_start = new_start.0, "retention moved the log start");
                    state.log_start_offset = new_start;
                    state.producers.truncate_start(new_start);
                    state.written_producers.truncate_start(new_start);
                    state.epochs.truncate_from_start(new_start);
                }
                unloaded
            };
            match unloaded {
                Some(base) => self.load_segment_indexes(base).await,
                None => break,
            }
        }
        let recovery_point = self.state.borrow().recovery_point;
        self.write_checkpoint(recovery_point).await?;
        self.delete_segments_below_start().await
    }
}
