//! What a file in a partition directory is, from its name, and the decoded
//! entries of the two index formats.

use std::path::Path;

use fjord_engine::checkpoint::PARTITION_CHECKPOINT_FILE;
use fjord_engine::error::Corruption;
use fjord_engine::index::{OffsetIndex, TimeIndex};
use fjord_engine::producer_state::parse_snapshot_file_name;
use fjord_engine::segment::parse_segment_file_name;
use fjord_engine::{Offset, TimestampMs};

/// The kinds of file the engine keeps in a partition directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `<base offset>.log`: record batches.
    Segment(Offset),
    /// `<base offset>.index`: offset -> file position.
    OffsetIndex(Offset),
    /// `<base offset>.timeindex`: timestamp -> offset.
    TimeIndex(Offset),
    /// `<offset>.snapshot`: producer state as of that offset.
    ProducerSnapshot(Offset),
    /// `partition.checkpoint`.
    PartitionCheckpoint,
}

/// The extensions of the per-segment files, whose stems must be a 20-digit
/// base offset.
pub const SEGMENT_EXTENSIONS: [&str; 3] = ["log", "index", "timeindex"];

impl FileKind {
    /// Classifies a file name; `None` for a name the engine does not write
    /// (including a segment file whose stem is not 20 digits).
    #[must_use]
    pub fn of(name: &str) -> Option<FileKind> {
        if name == PARTITION_CHECKPOINT_FILE {
            return Some(FileKind::PartitionCheckpoint);
        }
        if let Some(base) = parse_segment_file_name(name, "log") {
            return Some(FileKind::Segment(base));
        }
        if let Some(base) = parse_segment_file_name(name, "index") {
            return Some(FileKind::OffsetIndex(base));
        }
        if let Some(base) = parse_segment_file_name(name, "timeindex") {
            return Some(FileKind::TimeIndex(base));
        }
        parse_snapshot_file_name(name).map(FileKind::ProducerSnapshot)
    }

    /// Classifies a path by its file name.
    #[must_use]
    pub fn of_path(path: &Path) -> Option<FileKind> {
        path.file_name()
            .and_then(|name| name.to_str())
            .and_then(FileKind::of)
    }
}

/// The entries of a `.index` file as (absolute offset, file position),
/// ascending, without Kafka's preallocated all-zero tail.
///
/// # Errors
/// The engine's [`Corruption`] when [`OffsetIndex::decode`] rejects the file.
pub fn offset_index_entries(
    base_offset: Offset,
    bytes: &[u8],
) -> Result<Vec<(Offset, u32)>, Corruption> {
    Ok(OffsetIndex::decode(base_offset, bytes)?.entries().collect())
}

/// The entries of a `.timeindex` file as (timestamp, absolute offset),
/// ascending, without the preallocated all-zero tail.
///
/// # Errors
/// The engine's [`Corruption`] when [`TimeIndex::decode`] rejects the file.
pub fn time_index_entries(
    base_offset: Offset,
    bytes: &[u8],
) -> Result<Vec<(TimestampMs, Offset)>, Corruption> {
    Ok(TimeIndex::decode(base_offset, bytes)?.entries().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_engine_writes_are_classified() {
        assert_eq!(
            FileKind::of("00000000000000000042.log"),
            Some(FileKind::Segment(Offset(42)))
        );
        assert_eq!(
            FileKind::of("00000000000000000042.timeindex"),
            Some(FileKind::TimeIndex(Offset(42)))
        );
        assert_eq!(
            FileKind::of("partition.checkpoint"),
            Some(FileKind::PartitionCheckpoint)
        );
        assert_eq!(FileKind::of("42.log"), None);
        assert_eq!(FileKind::of("notes.txt"), None);
    }

    #[test]
    fn index_entries_are_absolute_and_drop_the_zero_tail() {
        let mut index = OffsetIndex::new(Offset(100));
        index.append(Offset(100), 0);
        index.append(Offset(110), 4096);
        let mut bytes = index.encode();
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(
            offset_index_entries(Offset(100), &bytes).unwrap(),
            vec![(Offset(100), 0), (Offset(110), 4096)]
        );
    }
}
