//! Reading: whole batches from the cache or the segments up to a bound,
//! zero-copy file ranges for consumers, read-ahead for readers catching up
//! from disk, the high watermark, lookups by timestamp and by leader epoch.

use bytes::Bytes;

use crate::batch::{self, BatchHeader, TimestampType};
use crate::error::Result;
use crate::segment::SegmentHandle;
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

use super::read_ahead::{ReadAheadBudget, ReadPoint, READ_AHEAD_BYTES_MAX};
use super::{FileRange, PartitionLog, ReadData, ReadResult, ZeroCopyRead};

/// Where a read that missed the cache goes on disk.
pub(super) struct DiskRead<S: Storage> {
    handle: SegmentHandle<S>,
    /// Base offset of the segment.
    base: Offset,
    /// The index entry at or before the read's offset.
    position: u64,
    /// The segment's size.
    end: u64,
    /// The end of the segment's verified prefix.
    verified: u64,
}

impl<S: Storage> PartitionLog<S> {
    /// Reads whole batches from the one holding `offset`, up to `max_bytes`
    /// (always at least one batch when any is readable, as KIP-74 requires),
    /// never including a batch that ends past `upper_bound` (the high
    /// watermark for consumers, the log end for followers; it is capped at
    /// the log end). Recent batches come from the shard's cache; the rest are
    /// read from disk and CRC-verified.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] if `offset` is below the log start or above
    /// the log end; [`Error::CorruptLog`] rather than ever returning a corrupt
    /// batch; [`Error::Io`].
    pub async fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<ReadResult> {
        self.load_indexes_holding(offset).await;
        let (handle, position, end, offsets) = {
            let mut state = self.state.borrow_mut();
            let offsets = state.offsets();
            offsets.check_readable(offset)?;
            let bound = upper_bound.min(offsets.log_end);
            let empty = ReadResult {
                batches: Vec::new(),
                high_watermark: offsets.high_watermark,
                log_start_offset: offsets.log_start,
                log_end_offset: offsets.log_end,
            };
            if offset >= bound {
                return Ok(empty);
            }
            if let Some(batches) =
                self.cache
                    .borrow()
                    .read(self.cache_key, offset, max_bytes, bound)
            {
                return Ok(ReadResult { batches, ..empty });
            }
            let Some(segment) = state.segment_holding(offset) else {
                return Ok(empty);
            };
            (
                segment.handle(),
                segment.start_position_for(offset),
                segment.size(),
                offsets,
            )
        };
        let bound = upper_bound.min(offsets.log_end);
        let mut found = handle.read(position, end, offset, max_bytes, bound).await?;
        let mut after = offset;
        while found.is_empty() {
            // The offset may sit in a gap at a segment's end, or in a segment
            // the cleaner emptied: continue in the next segment holding data.
            let next = {
                let state = self.state.borrow();
                state
                    .segments
                    .range(after.next()..)
                    .next()
                    .map(|(_, segment)| (segment.handle(), segment.size(), segment.base_offset))
            };
            let Some((handle, end, base)) = next else {
                break;
            };
            if base >= bound {
                break;
            }
            after = base;
            found = handle
                .read(0, end, base.max(offset), max_bytes, bound)
                .await?;
        }
        Ok(ReadResult {
            batches: found.into_iter().map(|(_, bytes)| bytes).collect(),
            high_watermark: offsets.high_watermark,
            log_start_offset: offsets.log_start,
            log_end_offset: offsets.log_end,
        })
    }

    /// Waits until the log end (or, with `committed`, the high watermark)
    /// passes `offset`: a long-polling fetch at the end wakes when an append
    /// lands. Returns at once if it already has.
    pub async fn wait_for_data_beyond(&self, offset: Offset, committed: bool) {
        loop {
            let listener = self.written_event.listen();
            {
                let state = self.state.borrow();
                let end = if committed {
                    state.high_watermark
                } else {
                    state.written_offset
                };
                if end > offset || state.poisoned.is_some() || state.closed {
                    return;
                }
            }
            listener.await;
        }
    }

    /// Like [`PartitionLog::read`], but returns a file range to send without
    /// copying when the batches are not in the cache. The range covers whole
    /// batches; every batch in it was CRC-verified once, when this process
    /// wrote, recovered or first read it, so a corrupt batch is never sent.
    ///
    /// Three ways, cheapest first: verified batches whose end the offset
    /// index gives are sent with no read at all; data not yet verified is
    /// read once in large chunks, verified and returned as bytes (a
    /// zero-copy send would read it twice); otherwise batch headers are
    /// read to find the range.
    ///
    /// # Errors
    /// As [`PartitionLog::read`].
    pub async fn read_zero_copy(
        &self,
        offset: Offset,
        max_bytes: usize,
        upper_bound: Offset,
    ) -> Result<ZeroCopyRead> {
        self.load_indexes_holding(offset).await;
        let (handle, base, position, end, verified, indexed_end, file, offsets) = {
            let mut state = self.state.borrow_mut();
            let offsets = state.offsets();
            offsets.check_readable(offset)?;
            let bound = upper_bound.min(offsets.log_end);
            let empty = ZeroCopyRead {
                data: ReadData::Batches(Vec::new()),
                offsets,
            };
            if offset >= bound {
                return Ok(empty);
            }
            if let Some(batches) =
                self.cache
                    .borrow()
                    .read(self.cache_key, offset, max_bytes, bound)
            {
                self.read_ahead.forget();
                return Ok(ZeroCopyRead {
                    data: ReadData::Batches(batches),
                    offsets,
                });
            }
            let Some(segment) = state.segment_holding(offset) else {
                return Ok(empty);
            };
            let file = segment.send_file(&self.storage)?;
            let position = segment.start_position_for(offset);
            (
                segment.handle(),
                segment.base_offset,
                position,
                segment.size(),
                segment.verified_size,
                segment.indexed_range_end(position, max_bytes, bound),
                file,
                offsets,
            )
        };
        let bound = upper_bound.min(offsets.log_end);
        if let (Some(file), Some(range_end)) = (&file, indexed_end) {
            if range_end <= verified {
                // Known-good batches whose boundaries the index gives: no
                // disk read at all before the send. The range may begin
                // with batches below `offset` (from the index entry on);
                // consumers skip those, as they do in compressed batches.
                self.read_ahead.forget();
                return Ok(ZeroCopyRead {
                    data: ReadData::File(FileRange {
                        file: file.clone(),
                        position,
                        len: range_end - position,
                    }),
                    offsets,
                });
            }
        }
        if file.is_some() && position.saturating_add(max_bytes as u64) > verified {
            // Data never verified in this process: a zero-copy send would
            // have to read it twice (to check CRCs, then to send), so it is
            // read once here, verified, and sent from memory.
            let at = DiskRead {
                handle: handle.clone(),
                base,
                position,
                end,
                verified,
            };
            if let Some(batches) = self.read_unverified(at, offset, max_bytes, bound).await? {
                return Ok(ZeroCopyRead {
                    data: ReadData::Batches(batches),
                    offsets,
                });
            }
        }
        let located = match &file {
            Some(_) => {
                handle
                    .locate(position, end, offset, max_bytes, bound)
                    .await?
            }
            // Storage without real files: only the copying read can serve.
            None => Vec::new(),
        };
        let (Some(file), Some(first), Some(last)) = (file, located.first(), located.last()) else {
            // No files, or a gap at the segment's end: the copying read
            // handles both.
            let read = self.read(offset, max_bytes, upper_bound).await?;
            return Ok(ZeroCopyRead {
                data: ReadData::Batches(read.batches),
                offsets,
            });
        };
        let range_end = last.position + last.header.total_bytes() as u64;
        if range_end > verified {
            handle.verify(verified, range_end).await?;
            self.extend_verified(base, range_end);
        }
        self.read_ahead.forget();
        Ok(ZeroCopyRead {
            data: ReadData::File(FileRange {
                file,
                position: first.position,
                len: range_end - first.position,
            }),
            offsets,
        })
    }

    /// Reads, verifies and returns the batches from `offset` in segment
    /// `at`, as [`SegmentHandle::read`] does, starting from the chunk read
    /// ahead when a sequential reader has one. A read that continues the
    /// verified prefix extends it. `None` when the segment holds no batch
    /// from `offset` on (a gap at its end).
    pub(super) async fn read_unverified(
        &self,
        at: DiskRead<S>,
        offset: Offset,
        max_bytes: usize,
        bound: Offset,
    ) -> Result<Option<Vec<Bytes>>> {
        let (start, first) = self
            .read_ahead
            .claim(&at.handle, at.base, offset)
            .await
            .unwrap_or((at.position, Bytes::new()));
        let found = at
            .handle
            .read_from(start, first, at.end, offset, max_bytes, bound)
            .await?;
        let Some((last, _)) = found.last() else {
            return Ok(None);
        };
        let stop = last.position + last.header.total_bytes() as u64;
        if start <= at.verified {
            self.extend_verified(at.base, stop);
        }
        self.read_ahead.note_stop(ReadPoint {
            handle: at.handle,
            base: at.base,
            offset: last.header.last_offset().next(),
            position: stop,
        });
        Ok(Some(found.into_iter().map(|(_, bytes)| bytes).collect()))
    }

    /// Whether a reader catching up from disk stopped where no chunk was
    /// read ahead yet: [`PartitionLog::read_ahead`] has work.
    #[must_use]
    pub fn read_ahead_due(&self) -> bool {
        self.read_ahead.is_due()
    }

    /// Reads the chunk the next fetch of a reader catching up from disk
    /// will want, up to `len` bytes (at most [`READ_AHEAD_BYTES_MAX`]),
    /// while the last one is on its way to the client, if one is due and
    /// `budget` allows. A reader at a segment's end continues in the next.
    /// Returns the chunk's generation, for
    /// [`PartitionLog::expire_read_ahead`].
    pub async fn read_ahead(&self, len: usize, budget: &ReadAheadBudget) -> Option<u64> {
        let point = self.read_ahead.take_due()?;
        let (point, available) = {
            let state = self.state.borrow();
            if state.closed || state.poisoned.is_some() {
                return None;
            }
            let segment = state.segments.get(&point.base)?;
            if point.position < segment.size() {
                let available = segment.size() - point.position;
                (point, available)
            } else {
                let (&base, next) = state.segments.range(point.base.next()..).next()?;
                if point.offset < base {
                    // A gap before the next segment: the reader's next
                    // read finds it on its own.
                    return None;
                }
                let point = ReadPoint {
                    handle: next.handle(),
                    base,
                    offset: point.offset,
                    position: 0,
                };
                (point, next.size())
            }
        };
        let len = len
            .min(READ_AHEAD_BYTES_MAX)
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        if len == 0 {
            return None;
        }
        self.read_ahead.read(point, len, budget).await
    }

    /// Drops the chunk [`PartitionLog::read_ahead`] read as `generation` if
    /// no read claimed it: its reader went away or fell behind.
    pub fn expire_read_ahead(&self, generation: u64) {
        self.read_ahead.expire(generation);
    }

    /// Records that the batches of segment `base` up to `position` passed
    /// their CRC check (the segment may have been replaced meanwhile).
    pub(super) fn extend_verified(&self, base: Offset, position: u64) {
        let mut state = self.state.borrow_mut();
        if let Some(segment) = state.segments.get_mut(&base) {
            segment.verified_size = segment.verified_size.max(position);
        }
    }

    /// The high watermark: consumers read below it.
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().high_watermark
    }

    /// Moves the high watermark (the leader does, once the ISR has the data;
    /// a single node does once the data is written). It never moves
    /// backwards and never passes the log end.
    pub fn advance_high_watermark(&self, offset: Offset) {
        let mut state = self.state.borrow_mut();
        let capped = offset.min(state.written_offset);
        if capped > state.high_watermark {
            state.high_watermark = capped;
            // Wakes fetches waiting for committed data.
            self.written_event.notify(usize::MAX);
        }
        state.check_invariants();
    }

    /// ListOffsets by timestamp: the first batch-level offset whose record
    /// timestamp is `>= target`, with that timestamp; `None` if every record
    /// is older. Works on batch max timestamps and then record timestamps
    /// within the batch when it is uncompressed (Kafka's semantics; for
    /// compressed batches the batch's base offset is returned).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptLog`].
    pub async fn offset_for_timestamp(
        &self,
        target: TimestampMs,
    ) -> Result<Option<(Offset, TimestampMs)>> {
        self.load_all_indexes().await;
        let candidates: Vec<(Offset, crate::segment::SegmentHandle<S>, u64, u64)> = {
            let state = self.state.borrow();
            let log_start = state.log_start_offset;
            let mut candidates = Vec::new();
            for segment in state.segments.values() {
                if segment.next_offset <= log_start {
                    continue;
                }
                let from = segment.time_lookup(target).max(log_start);
                candidates.push((
                    from,
                    segment.handle(),
                    segment.start_position_for(from),
                    segment.size(),
                ));
            }
            candidates
        };
        let end = self.offsets().log_end;
        for (from, handle, position, size) in candidates {
            let mut cursor = from;
            let mut start = position;
            loop {
                let batches = handle.read(start, size, cursor, 1 << 20, end).await?;
                let Some((last, _)) = batches.last() else {
                    break;
                };
                let next_start = last.position + last.header.total_bytes() as u64;
                let next_cursor = last.header.last_offset().next();
                for (located, bytes) in &batches {
                    if located.header.max_timestamp >= target
                        && located.header.last_offset() >= from
                    {
                        return Ok(Some(first_record_at_or_after(
                            &located.header,
                            bytes,
                            target,
                            from,
                        )));
                    }
                }
                start = next_start;
                cursor = next_cursor;
            }
        }
        Ok(None)
    }

    /// ListOffsets with max timestamp (KIP-734): the offset and timestamp of
    /// the record with the greatest timestamp, `None` for an empty log.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptLog`].
    pub async fn max_timestamp_offset(&self) -> Result<Option<(Offset, TimestampMs)>> {
        self.load_all_indexes().await;
        let best = {
            let state = self.state.borrow();
            state
                .segments
                .values()
                .filter(|segment| segment.size() > 0)
                .max_by_key(|segment| segment.max_timestamp)
                .map(|segment| segment.max_timestamp)
        };
        match best {
            Some(timestamp) if timestamp != TimestampMs::NONE => {
                Ok(self.offset_for_timestamp(timestamp).await?)
            }
            _ => Ok(None),
        }
    }

    /// The current leader-epoch entries, oldest first.
    #[must_use]
    pub fn leader_epochs(&self) -> Vec<(LeaderEpoch, Offset)> {
        self.state.borrow().epochs.entries().to_vec()
    }

    /// OffsetForLeaderEpoch: the largest epoch `<= requested` and the offset
    /// where the next epoch starts (the log end for the latest epoch);
    /// `None` when `requested` predates every known epoch.
    #[must_use]
    pub fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        let state = self.state.borrow();
        state.epochs.end_offset_for(requested, state.written_offset)
    }

    /// Records that `epoch` starts at the current log end (a new leader does
    /// this before accepting appends).
    pub fn assign_leader_epoch(&self, epoch: LeaderEpoch) {
        let mut state = self.state.borrow_mut();
        let start = state.assigned_offset;
        state.epochs.assign(epoch, start);
    }
}

/// Within a batch whose max timestamp is `>= target`, the first record at or
/// after `from` with timestamp `>= target`; the batch's base offset when its
/// records cannot be read without decompression.
pub(super) fn first_record_at_or_after(
    header: &BatchHeader,
    bytes: &[u8],
    target: TimestampMs,
    from: Offset,
) -> (Offset, TimestampMs) {
    if header.timestamp_type() == TimestampType::CreateTime {
        if let Ok(records) = batch::records(bytes) {
            for record in records.map_while(std::result::Result::ok) {
                let offset = header.base_offset.plus(i64::from(record.offset_delta));
                let timestamp = TimestampMs(header.base_timestamp.0 + record.timestamp_delta);
                if offset >= from && timestamp >= target {
                    return (offset, timestamp);
                }
            }
        }
    }
    (header.base_offset.max(from), header.max_timestamp)
}
