//! Sparse offset and time indexes, in Kafka's on-disk formats.
//!
//! Each segment has an `.index` (8-byte entries: offset relative to the
//! segment's base offset, then file position, both big-endian `u32`) and a
//! `.timeindex` (12-byte entries: timestamp `i64`, then relative offset `u32`).
//! As in Kafka, an offset index entry is added every `index.interval.bytes` of
//! log data, so lookups land within that many bytes of the target and then
//! scan batch headers; at the same points a time index entry records the
//! segment's greatest timestamp so far and the offset of its batch, if it
//! grew since the last entry. Both are bounded by `segment.index.bytes`
//! ([`IndexPolicy`]); a segment whose index is full rolls. When a segment is
//! closed, a last time index entry records its greatest timestamp, for which
//! the time index keeps a slot free (Kafka's `TimeIndex.isFull`), so the
//! time index of a closed segment always ends with the segment's greatest
//! timestamp.
//!
//! Durability contract: indexes are derived data. The active segment's
//! indexes live in memory and are written whole when the segment is closed
//! (roll or clean shutdown); after a crash, recovery rebuilds the indexes of
//! every segment past the recovery point from the log itself. An index file
//! that fails to decode is rebuilt the same way, never trusted.

use crate::error::Corruption;
use crate::types::{Offset, TimestampMs};

/// Bytes per `.index` entry.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;
/// Bytes per `.timeindex` entry.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// Kafka's default `segment.index.bytes` (`log.index.size.max.bytes`): 10 MiB.
pub const SEGMENT_INDEX_BYTES_DEFAULT: u32 = 10 * 1024 * 1024;

/// How a segment's indexes grow, from the topic's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexPolicy {
    /// `index.interval.bytes`: log bytes between index entries.
    pub interval_bytes: u32,
    /// `segment.index.bytes`: the largest either index file may be.
    pub max_bytes: u32,
}

impl IndexPolicy {
    /// The most entries an offset index holds.
    #[must_use]
    pub fn offset_entries_max(&self) -> usize {
        self.max_bytes as usize / OFFSET_INDEX_ENTRY_BYTES
    }

    /// The most entries a time index holds, the closing entry included.
    #[must_use]
    pub fn time_entries_max(&self) -> usize {
        self.max_bytes as usize / TIME_INDEX_ENTRY_BYTES
    }

    /// Whether an index at these lengths takes no more entries while its
    /// segment is appended to: the offset index is at its bound, or the
    /// time index has only the slot for its closing entry left.
    #[must_use]
    pub fn is_full(&self, offset_entries: usize, time_entries: usize) -> bool {
        offset_entries >= self.offset_entries_max() || time_entries + 1 >= self.time_entries_max()
    }
}

/// Offset -> file position, sparse, ascending in both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetIndex {
    base_offset: Offset,
    /// (offset relative to `base_offset`, file position).
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// An empty index for the segment starting at `base_offset`.
    #[must_use]
    pub fn new(base_offset: Offset) -> Self {
        Self {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Decodes a `.index` file. Trailing all-zero entries (Kafka preallocates
    /// index files) are ignored.
    ///
    /// # Errors
    /// The [`Corruption`] if the length is not a whole number of entries or
    /// the entries are not strictly ascending.
    pub fn decode(base_offset: Offset, bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.len() % OFFSET_INDEX_ENTRY_BYTES != 0 {
            return Err(Corruption::PartialEntry {
                length: bytes.len(),
                entry_bytes: OFFSET_INDEX_ENTRY_BYTES,
            });
        }
        let mut index = Self::new(base_offset);
        for (number, chunk) in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES).enumerate() {
            let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if number > 0 && relative == 0 && position == 0 {
                break;
            }
            if let Some(&(last_relative, last_position)) = index.entries.last() {
                if relative <= last_relative || position <= last_position {
                    return Err(Corruption::NotAscending {
                        what: "offset index",
                        entry: number,
                    });
                }
            }
            index.entries.push((relative, position));
        }
        Ok(index)
    }

    /// The `.index` file content.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * OFFSET_INDEX_ENTRY_BYTES);
        for &(relative, position) in &self.entries {
            bytes.extend_from_slice(&relative.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        bytes
    }

    /// Records that the batch holding `offset` starts at `position`.
    ///
    /// # Panics
    /// If either goes backwards: the log only grows at its end.
    pub fn append(&mut self, offset: Offset, position: u32) {
        let relative = self.relative(offset);
        if let Some(&(last_relative, last_position)) = self.entries.last() {
            assert!(
                relative > last_relative && position > last_position,
                "offset index must ascend: ({relative}, {position}) after ({last_relative}, {last_position})"
            );
        }
        self.entries.push((relative, position));
    }

    /// The greatest indexed (offset, position) at or before `target`, or the
    /// segment start when no entry is.
    #[must_use]
    pub fn lookup(&self, target: Offset) -> (Offset, u32) {
        if target < self.base_offset {
            return (self.base_offset, 0);
        }
        let relative = u32::try_from(target.0 - self.base_offset.0).unwrap_or(u32::MAX);
        let after = self
            .entries
            .partition_point(|&(entry, _)| entry <= relative);
        match after.checked_sub(1) {
            Some(slot) => {
                let (entry, position) = self.entries[slot];
                (self.base_offset.plus(i64::from(entry)), position)
            }
            None => (self.base_offset, 0),
        }
    }

    /// The last entry at or before file position `max_position` whose
    /// offset is at most `max_offset`, if any. Entries ascend in both, so
    /// the qualifying ones are a prefix.
    #[must_use]
    pub fn last_within(&self, max_position: u32, max_offset: Offset) -> Option<(Offset, u32)> {
        let max_relative = max_offset.0 - self.base_offset.0;
        let qualifying = self.entries.partition_point(|&(relative, position)| {
            position <= max_position && i64::from(relative) <= max_relative
        });
        let (relative, position) = *self.entries.get(qualifying.checked_sub(1)?)?;
        Some((self.base_offset.plus(i64::from(relative)), position))
    }

    /// Drops every entry for offsets at or after `offset`.
    pub fn truncate_to(&mut self, offset: Offset) {
        let relative = offset.0 - self.base_offset.0;
        self.entries
            .retain(|&(entry, _)| i64::from(entry) < relative);
    }

    /// Every entry as (absolute offset, file position), ascending.
    pub fn entries(&self) -> impl Iterator<Item = (Offset, u32)> + '_ {
        self.entries
            .iter()
            .map(|&(relative, position)| (self.base_offset.plus(i64::from(relative)), position))
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn relative(&self, offset: Offset) -> u32 {
        u32::try_from(offset.0 - self.base_offset.0)
            .expect("a segment spans less than 2^32 offsets (rolled before)")
    }
}

/// Timestamp -> offset, sparse, ascending in both: an entry is only added when
/// the segment's maximum timestamp grew since the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeIndex {
    base_offset: Offset,
    /// (timestamp, offset relative to `base_offset`).
    entries: Vec<(TimestampMs, u32)>,
}

impl TimeIndex {
    /// An empty index for the segment starting at `base_offset`.
    #[must_use]
    pub fn new(base_offset: Offset) -> Self {
        Self {
            base_offset,
            entries: Vec::new(),
        }
    }

    /// Decodes a `.timeindex` file, ignoring trailing all-zero entries.
    ///
    /// # Errors
    /// The [`Corruption`] if the length is not a whole number of entries or
    /// the entries do not ascend.
    pub fn decode(base_offset: Offset, bytes: &[u8]) -> Result<Self, Corruption> {
        if bytes.len() % TIME_INDEX_ENTRY_BYTES != 0 {
            return Err(Corruption::PartialEntry {
                length: bytes.len(),
                entry_bytes: TIME_INDEX_ENTRY_BYTES,
            });
        }
        let mut index = Self::new(base_offset);
        for (number, chunk) in bytes.chunks_exact(TIME_INDEX_ENTRY_BYTES).enumerate() {
            let mut timestamp = [0; 8];
            timestamp.copy_from_slice(&chunk[..8]);
            let timestamp = TimestampMs(i64::from_be_bytes(timestamp));
            let relative = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if number > 0 && timestamp.0 == 0 && relative == 0 {
                break;
            }
            if let Some(&(last_timestamp, last_relative)) = index.entries.last() {
                if timestamp <= last_timestamp || relative < last_relative {
                    return Err(Corruption::NotAscending {
                        what: "time index",
                        entry: number,
                    });
                }
            }
            index.entries.push((timestamp, relative));
        }
        Ok(index)
    }

    /// The `.timeindex` file content.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.entries.len() * TIME_INDEX_ENTRY_BYTES);
        for &(timestamp, relative) in &self.entries {
            bytes.extend_from_slice(&timestamp.0.to_be_bytes());
            bytes.extend_from_slice(&relative.to_be_bytes());
        }
        bytes
    }

    /// Records that the segment's maximum timestamp reached `timestamp` at
    /// `offset`. Ignored unless `timestamp` exceeds the last entry's. The
    /// caller keeps the index within its [`IndexPolicy`].
    ///
    /// # Panics
    /// If `offset` is more than `u32::MAX` past the base offset or below the
    /// last entry's: segments roll before either can happen.
    pub fn maybe_append(&mut self, timestamp: TimestampMs, offset: Offset) {
        if self
            .entries
            .last()
            .is_some_and(|&(last, _)| timestamp <= last)
        {
            return;
        }
        let relative = u32::try_from(offset.0 - self.base_offset.0)
            .expect("a segment spans less than 2^32 offsets (rolled before)");
        if let Some(&(_, last_relative)) = self.entries.last() {
            assert!(relative >= last_relative, "time index offsets must ascend");
        }
        self.entries.push((timestamp, relative));
    }

    /// An offset from which a scan finds the first record with timestamp
    /// `>= target`: the offset of the last entry whose timestamp is below
    /// `target`, or the segment start.
    #[must_use]
    pub fn lookup(&self, target: TimestampMs) -> Offset {
        let below = self
            .entries
            .partition_point(|&(timestamp, _)| timestamp < target);
        match below.checked_sub(1) {
            Some(slot) => self.base_offset.plus(i64::from(self.entries[slot].1)),
            None => self.base_offset,
        }
    }

    /// Drops every entry for offsets at or after `offset`.
    pub fn truncate_to(&mut self, offset: Offset) {
        let relative = offset.0 - self.base_offset.0;
        self.entries
            .retain(|&(_, entry)| i64::from(entry) < relative);
    }

    /// Every entry as (timestamp, absolute offset), ascending.
    pub fn entries(&self) -> impl Iterator<Item = (TimestampMs, Offset)> + '_ {
        self.entries
            .iter()
            .map(|&(timestamp, relative)| (timestamp, self.base_offset.plus(i64::from(relative))))
    }

    /// The greatest timestamp indexed, if any.
    #[must_use]
    pub fn max_timestamp(&self) -> Option<TimestampMs> {
        self.entries.last().map(|&(timestamp, _)| timestamp)
    }

    /// The last entry as (timestamp, absolute offset), if any.
    #[must_use]
    pub fn last(&self) -> Option<(TimestampMs, Offset)> {
        self.entries
            .last()
            .map(|&(timestamp, relative)| (timestamp, self.base_offset.plus(i64::from(relative))))
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_greatest_entry_at_or_before_target() {
        let mut index = OffsetIndex::new(Offset(100));
        index.append(Offset(110), 4096);
        index.append(Offset(130), 8192);
        assert_eq!(index.lookup(Offset(50)), (Offset(100), 0));
        assert_eq!(index.lookup(Offset(105)), (Offset(100), 0));
        assert_eq!(index.lookup(Offset(110)), (Offset(110), 4096));
        assert_eq!(index.lookup(Offset(129)), (Offset(110), 4096));
        assert_eq!(index.lookup(Offset(1_000_000)), (Offset(130), 8192));
    }

    #[test]
    fn last_within_respects_both_the_position_and_the_offset_bound() {
        let mut index = OffsetIndex::new(Offset(100));
        index.append(Offset(100), 0);
        index.append(Offset(110), 4096);
        index.append(Offset(130), 8192);
        assert_eq!(
            index.last_within(9000, Offset(200)),
            Some((Offset(130), 8192))
        );
        assert_eq!(
            index.last_within(8191, Offset(200)),
            Some((Offset(110), 4096))
        );
        assert_eq!(
            index.last_within(9000, Offset(129)),
            Some((Offset(110), 4096))
        );
        assert_eq!(index.last_within(9000, Offset(99)), None);
        assert_eq!(
            OffsetIndex::new(Offset(0)).last_within(9000, Offset(9)),
            None
        );
    }

    #[test]
    fn offset_index_round_trips_and_ignores_preallocated_zeros() {
        let mut index = OffsetIndex::new(Offset(7));
        index.append(Offset(7), 0);
        index.append(Offset(20), 5000);
        let mut bytes = index.encode();
        bytes.extend_from_slice(&[0; 32]);
        assert_eq!(OffsetIndex::decode(Offset(7), &bytes), Ok(index));
    }

    #[test]
    fn corrupt_index_files_are_rejected() {
        assert!(OffsetIndex::decode(Offset(0), &[1, 2, 3]).is_err());
        let mut bytes = Vec::new();
        for (relative, position) in [(5u32, 100u32), (3, 200)] {
            bytes.extend_from_slice(&relative.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        assert!(OffsetIndex::decode(Offset(0), &bytes).is_err());
    }

    #[test]
    fn truncation_drops_entries_at_and_after_offset() {
        let mut index = OffsetIndex::new(Offset(0));
        index.append(Offset(10), 100);
        index.append(Offset(20), 200);
        index.truncate_to(Offset(20));
        assert_eq!(index.len(), 1);
        let mut times = TimeIndex::new(Offset(0));
        times.maybe_append(TimestampMs(5), Offset(10));
        times.maybe_append(TimestampMs(9), Offset(20));
        times.truncate_to(Offset(20));
        assert_eq!(times.max_timestamp(), Some(TimestampMs(5)));
    }

    #[test]
    fn index_bounds_follow_segment_index_bytes_and_keep_a_closing_time_slot() {
        let policy = IndexPolicy {
            interval_bytes: 4096,
            max_bytes: SEGMENT_INDEX_BYTES_DEFAULT,
        };
        assert_eq!(policy.offset_entries_max(), 1_310_720);
        assert_eq!(policy.time_entries_max(), 873_813);
        let small = IndexPolicy {
            interval_bytes: 0,
            max_bytes: 40,
        };
        assert_eq!(
            (small.offset_entries_max(), small.time_entries_max()),
            (5, 3)
        );
        assert!(!small.is_full(4, 1));
        // The third time slot is the closing entry's.
        assert!(small.is_full(0, 2));
        assert!(small.is_full(5, 0));
        let none = IndexPolicy {
            interval_bytes: 0,
            max_bytes: 4,
        };
        assert!(none.is_full(0, 0));
    }

    #[test]
    fn time_index_only_grows_and_finds_scan_start() {
        let mut index = TimeIndex::new(Offset(0));
        index.maybe_append(TimestampMs(100), Offset(0));
        index.maybe_append(TimestampMs(90), Offset(5));
        index.maybe_append(TimestampMs(200), Offset(10));
        assert_eq!(index.max_timestamp(), Some(TimestampMs(200)));
        assert_eq!(index.lookup(TimestampMs(50)), Offset(0));
        assert_eq!(index.lookup(TimestampMs(150)), Offset(0));
        assert_eq!(index.lookup(TimestampMs(201)), Offset(10));
        let decoded = TimeIndex::decode(Offset(0), &index.encode()).unwrap();
        assert_eq!(decoded, index);
    }
}
