//! The local metadata log: the controller's metadata records on disk, in
//! batches, with periodic snapshots of the image so a restart replays only
//! the records since the last one.
//!
//! The controller quorum ([`crate::controller::quorum`]) has replaced it:
//! a start reads it only to upgrade a directory an earlier version wrote
//! ([`exists`], [`MetadataLog::open`], [`remove`]); its writer stays so
//! tests write such directories, and its framing and file helpers serve
//! the quorum's own files.
//!
//! # Files
//! Everything lives in one directory, `<metadata.log.dir>/__cluster_metadata-0/`
//! as in Kafka:
//!
//! - `<base offset>.log` (20 digits, as Kafka's segments): a *segment*, a
//!   sequence of frames, one per batch. A batch is the records of one
//!   change (a topic with its partitions and configs, say); the frame is
//!   fjord's checkpoint framing ([`fjord_engine::checkpoint::encode_frame`]:
//!   magic `FJML`, version, length, CRC-32C) around an rkyv archive of the
//!   batch's base offset and records. A record's offset is its position in
//!   the whole log: dense from 0, never reused.
//! - `<end offset>.snapshot`: a frame (magic `FJMS`) around the records that
//!   rebuild the image of every record below the end offset
//!   ([`crate::metadata::MetadataImage::records`]).
//!
//! # Durability contract
//! - [`MetadataLog::append`] returns once the batch is written and
//!   `fdatasync`ed: the controller acknowledges and publishes a change only
//!   after that, so an acknowledged change survives power loss.
//! - A batch is atomic: recovered whole or not at all.
//! - A failed write or `fdatasync` poisons the log: it refuses every
//!   further append until a restart recovers it, because what reached the
//!   disk is unknown (a change reported as failed may still be there).
//! - [`MetadataLog::snapshot`] writes the snapshot to a temporary file,
//!   syncs it, renames it into place and syncs the directory; only then
//!   does it start a new segment at the snapshot's end offset and delete the
//!   older segments and snapshots. A crash at any point leaves either the
//!   old snapshot with every segment after it, or the new one.
//! - [`MetadataLog::open`] loads the newest snapshot and the batches at or
//!   after its end offset (segments wholly below it, left by a crash
//!   before their deletion, are deleted). Only the last append can be
//!   unsynced, so an
//!   invalid frame in the last segment is a torn tail: it and everything
//!   after it are cut (truncated and synced) before appending resumes. An
//!   invalid frame anywhere else, a gap in the offsets or a snapshot that
//!   does not decode is corruption and fails the open.
//!
//! This module knows records and files, not images or Kafka error codes.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fjord_engine::checkpoint::{decode_frame, encode_frame, FRAME_HEADER_BYTES};
use fjord_engine::error::Corruption;
use fjord_engine::Offset;

use crate::metadata::records::MetadataRecord;

/// The directory of the metadata log under `metadata.log.dir`: Kafka's name
/// for the metadata topic's only partition.
pub const METADATA_LOG_DIR_NAME: &str = "__cluster_metadata-0";
/// Suffix of a segment file.
pub const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of a snapshot file.
pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
/// Suffix of a snapshot being written.
const TEMPORARY_SUFFIX: &str = ".tmp";
const BATCH_MAGIC: [u8; 4] = *b"FJML";
const BATCH_VERSION: u16 = 1;
const SNAPSHOT_MAGIC: [u8; 4] = *b"FJMS";
const SNAPSHOT_VERSION: u16 = 1;
/// The largest batch frame: bounds what one append writes and what
/// recovery reads for it (a topic of the most partitions,
/// [`crate::controller::PARTITIONS_MAX`], takes about 10 MiB).
pub const BATCH_BYTES_MAX: usize = 128 << 20;
// `read_frame` reads the payload length at bytes 6..10 of a whole header.
const _: () = assert!(FRAME_HEADER_BYTES >= 10);

/// One batch as a segment stores it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct LogBatch {
    base_offset: i64,
    records: Vec<MetadataRecord>,
}

/// A snapshot as its file stores it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct LogSnapshot {
    end_offset: i64,
    records: Vec<MetadataRecord>,
}

/// A metadata log that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A frame of a file is damaged or does not hold what this module
    /// wrote there.
    #[error("corrupt metadata log {}: at byte {position}: {reason}", path.display())]
    CorruptFrame {
        /// The file.
        path: PathBuf,
        /// Where the frame starts in the file.
        position: usize,
        /// What is wrong with it.
        #[source]
        reason: Corruption,
    },
    /// A file's frames are whole but do not form a log: a gap or overlap in
    /// the offsets, or a snapshot where another belongs.
    #[error("corrupt metadata log {}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A batch larger than [`BATCH_BYTES_MAX`].
    #[error("a metadata batch of {bytes} bytes exceeds the {BATCH_BYTES_MAX}-byte maximum")]
    BatchTooLarge {
        /// The encoded size.
        bytes: usize,
    },
    /// An earlier write or sync failed; see the module documentation.
    #[error("the metadata log refuses writes after an earlier failure: {reason}")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
}

/// What [`MetadataLog::open`] found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The newest snapshot's records (none without a snapshot).
    pub snapshot: Vec<MetadataRecord>,
    /// The batches after it, in log order.
    pub batches: Vec<Vec<MetadataRecord>>,
    /// Bytes of a torn tail cut from the last segment.
    pub cut_bytes: u64,
}

/// The metadata log of one directory; see the module documentation.
#[derive(Debug)]
pub struct MetadataLog {
    dir: PathBuf,
    /// The segment appends go to.
    segment: File,
    segment_base: Offset,
    /// The offset the next record gets.
    next_offset: Offset,
    /// The end offset of the newest snapshot (zero without one).
    snapshot_offset: Offset,
    poisoned: Option<String>,
}

impl MetadataLog {
    /// Opens (creating if needed) the log in `dir` and recovers it: see the
    /// module documentation.
    ///
    /// # Errors
    /// [`LogError::Io`] if a file cannot be listed, read, cut or created;
    /// [`LogError::Corrupt`] for corruption other than a torn tail.
    pub fn open(dir: &Path) -> Result<(Self, Recovered), LogError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
            // The new directory's entry must outlive a power loss with the
            // records appended in it.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let files = list(dir)?;
        for temporary in &files.temporaries {
            fs::remove_file(temporary).map_err(io_error("removing", temporary))?;
        }
        let mut recovered = Recovered::default();
        let snapshot_offset = match files.snapshots.last() {
            Some(&end) => {
                recovered.snapshot = read_snapshot(&snapshot_path(dir, end), end)?;
                end
            }
            None => Offset::ZERO,
        };
        let bases: Vec<Offset> = files.segments.iter().copied().collect();
        // A segment followed by one starting at or below the snapshot's end
        // holds only records the snapshot has: left by a crash before the
        // snapshot deleted it.
        let first_needed = bases
            .iter()
            .rposition(|&base| base <= snapshot_offset)
            .unwrap_or(0);
        for &base in &bases[..first_needed] {
            let path = segment_path(dir, base);
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
        }
        let mut next_offset = snapshot_offset;
        let mut segment_end = None;
        let last_base = bases.last().copied();
        for &base in &bases[first_needed..] {
            let path = segment_path(dir, base);
            if let Some(end) = segment_end {
                if base != end {
                    return Err(corrupt(
                        &path,
                        format!("the segment before it ends at offset {end}"),
                    ));
                }
            }
            let replay = ReplayState {
                snapshot_offset,
                next_offset,
            };
            let scan = scan_segment(&path, base, replay, Some(base) == last_base)?;
            recovered.batches.extend(scan.batches);
            recovered.cut_bytes += scan.cut_bytes;
            next_offset = scan.next_offset;
            segment_end = Some(scan.end);
        }
        if let Some(end) = segment_end {
            if end < snapshot_offset {
                return Err(corrupt(
                    dir,
                    format!(
                        "the log ends at offset {end}, before its snapshot's end {snapshot_offset}"
                    ),
                ));
            }
        }
        let (segment, segment_base) = match last_base {
            Some(base) => {
                let path = segment_path(dir, base);
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_error("opening", &path))?;
                (file, base)
            }
            None => (create_segment(dir, next_offset)?, next_offset),
        };
        let log = Self {
            dir: dir.to_path_buf(),
            segment,
            segment_base,
            next_offset,
            snapshot_offset,
            poisoned: None,
        };
        Ok((log, recovered))
    }

    /// The offset the next appended record gets.
    #[must_use]
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Records appended since the newest snapshot's end.
    #[must_use]
    pub fn records_since_snapshot(&self) -> u64 {
        (self.next_offset.0 - self.snapshot_offset.0) as u64
    }

    /// Appends `records` as one batch, written and `fdatasync`ed when this
    /// returns, and returns the first one's offset.
    ///
    /// # Errors
    /// [`LogError::BatchTooLarge`] (nothing written), [`LogError::Poisoned`],
    /// or [`LogError::Io`] if the write or sync failed, which poisons the
    /// log.
    ///
    /// # Panics
    /// If `records` is empty: a change without records is no change.
    /// Archiving them into memory cannot fail.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<Offset, LogError> {
        assert!(!records.is_empty(), "a metadata batch holds records");
        self.check_not_poisoned()?;
        let base = self.next_offset;
        let batch = LogBatch {
            base_offset: base.0,
            records: records.to_vec(),
        };
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&batch)
            .expect("archiving records into memory cannot fail");
        let frame = encode_frame(BATCH_MAGIC, BATCH_VERSION, &payload);
        if frame.len() > BATCH_BYTES_MAX {
            return Err(LogError::BatchTooLarge { bytes: frame.len() });
        }
        let written = self
            .segment
            .write_all(&frame)
            .and_then(|()| self.segment.sync_data());
        if let Err(source) = written {
            let path = segment_path(&self.dir, self.segment_base);
            self.poisoned = Some(format!("appending to {}: {source}", path.display()));
            return Err(LogError::Io {
                context: "appending to",
                path,
                source,
            });
        }
        self.next_offset = base.plus(records.len() as i64);
        Ok(base)
    }

    /// Writes `records`, the image of every record appended so far, as the
    /// snapshot at the log's end, then starts a new segment there and
    /// deletes the older segments and snapshots, in that order (see the
    /// module documentation). Does nothing if nothing was appended since the
    /// newest snapshot.
    ///
    /// # Errors
    /// [`LogError::Poisoned`], or [`LogError::Io`]: the log stays usable,
    /// with the files it had or with the new snapshot.
    ///
    /// # Panics
    /// Never in practice: archiving records into memory has no failure but
    /// allocation, which aborts.
    pub fn snapshot(&mut self, records: &[MetadataRecord]) -> Result<(), LogError> {
        self.check_not_poisoned()?;
        let end = self.next_offset;
        if end == self.snapshot_offset {
            return Ok(());
        }
        let frame = encode_snapshot(end, records);
        let path = snapshot_path(&self.dir, end);
        let temporary = self
            .dir
            .join(format!("{:020}{SNAPSHOT_SUFFIX}{TEMPORARY_SUFFIX}", end.0));
        write_synced(&temporary, &frame)?;
        fs::rename(&temporary, &path).map_err(io_error("renaming", &temporary))?;
        sync_dir(&self.dir)?;
        self.snapshot_offset = end;
        if self.segment_base != end {
            self.segment = create_segment(&self.dir, end)?;
            self.segment_base = end;
        }
        let files = list(&self.dir)?;
        let older_segments = files.segments.iter().filter(|&&base| base < end);
        for &base in older_segments {
            let path = segment_path(&self.dir, base);
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
        }
        for &older in files.snapshots.iter().filter(|&&offset| offset < end) {
            let path = snapshot_path(&self.dir, older);
            fs::remove_file(&path).map_err(io_error("removing", &path))?;
        }
        sync_dir(&self.dir)
    }

    fn check_not_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(reason) => Err(LogError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether `dir` holds a metadata log (a segment or a snapshot), without
/// creating anything.
///
/// # Errors
/// [`LogError::Io`] if the directory exists but cannot be listed.
pub fn exists(dir: &Path) -> Result<bool, LogError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let files = list(dir)?;
    Ok(!files.segments.is_empty() || !files.snapshots.is_empty())
}

/// Removes the metadata log's files from `dir` (its segments, snapshots
/// and their temporaries; any other file stays) and syncs the directory,
/// so the removal outlives a power loss.
///
/// # Errors
/// [`LogError::Io`] if a file cannot be listed or removed, or the
/// directory cannot be synced.
pub fn remove(dir: &Path) -> Result<(), LogError> {
    let files = list(dir)?;
    let segments = files.segments.iter().map(|&base| segment_path(dir, base));
    let snapshots = files.snapshots.iter().map(|&end| snapshot_path(dir, end));
    for path in segments.chain(snapshots).chain(files.temporaries) {
        fs::remove_file(&path).map_err(io_error("removing", &path))?;
    }
    sync_dir(dir)
}

/// The files of a log directory, by kind.
#[derive(Default)]
struct Files {
    segments: BTreeSet<Offset>,
    snapshots: BTreeSet<Offset>,
    temporaries: Vec<PathBuf>,
}

fn list(dir: &Path) -> Result<Files, LogError> {
    let mut files = Files::default();
    for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let entry = entry.map_err(io_error("listing", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Only its own temporaries: the quorum's files share the directory.
        if parse_offset(name, &format!("{SNAPSHOT_SUFFIX}{TEMPORARY_SUFFIX}")).is_some() {
            files.temporaries.push(entry.path());
        } else if let Some(base) = parse_offset(name, SEGMENT_SUFFIX) {
            files.segments.insert(base);
        } else if let Some(end) = parse_offset(name, SNAPSHOT_SUFFIX) {
            files.snapshots.insert(end);
        }
    }
    Ok(files)
}

/// The offset in a file name `<20 digits><suffix>`.
fn parse_offset(name: &str, suffix: &str) -> Option<Offset> {
    parse_numbered(name, suffix).and_then(|number| i64::try_from(number).ok().map(Offset))
}

/// The number in a file name `<20 digits><suffix>` (the metadata log's and
/// the quorum log's files are named so).
pub(crate) fn parse_numbered(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The path of the file named `<number as 20 digits><suffix>` in `dir`.
pub(crate) fn numbered_path(dir: &Path, number: impl std::fmt::Display, suffix: &str) -> PathBuf {
    dir.join(format!("{number:020}{suffix}"))
}

fn segment_path(dir: &Path, base: Offset) -> PathBuf {
    numbered_path(dir, base.0, SEGMENT_SUFFIX)
}

fn snapshot_path(dir: &Path, end: Offset) -> PathBuf {
    numbered_path(dir, end.0, SNAPSHOT_SUFFIX)
}

/// Where a segment scan is in the replay: batches below the snapshot's end
/// are skipped; the next one replayed must start at `next_offset`.
#[derive(Clone, Copy)]
struct ReplayState {
    snapshot_offset: Offset,
    next_offset: Offset,
}

/// What one segment held.
struct SegmentScan {
    /// Its batches at or after the snapshot's end.
    batches: Vec<Vec<MetadataRecord>>,
    /// The offset after its last valid batch.
    end: Offset,
    /// The offset after the last batch replayed so far.
    next_offset: Offset,
    cut_bytes: u64,
}

/// Reads the segment at `path`, cutting a torn tail if it is the last one.
fn scan_segment(
    path: &Path,
    base: Offset,
    mut replay: ReplayState,
    is_last: bool,
) -> Result<SegmentScan, LogError> {
    let bytes = fs::read(path).map_err(io_error("reading", path))?;
    let mut batches = Vec::new();
    let mut position = 0;
    let mut offset = base;
    while position < bytes.len() {
        let frame_start = position;
        let corrupt_frame = |reason| LogError::CorruptFrame {
            path: path.to_path_buf(),
            position: frame_start,
            reason,
        };
        let payload = match read_frame(&bytes[position..], BATCH_MAGIC, BATCH_VERSION) {
            Ok((payload, frame_bytes)) => {
                position += frame_bytes;
                payload
            }
            Err(reason) if is_last => {
                let cut_bytes = (bytes.len() - position) as u64;
                tracing::warn!(
                    path = %path.display(),
                    position,
                    cut_bytes,
                    %reason,
                    "cutting the torn tail of the metadata log"
                );
                cut(path, position as u64)?;
                return Ok(SegmentScan {
                    batches,
                    end: offset,
                    next_offset: replay.next_offset,
                    cut_bytes,
                });
            }
            Err(reason) => return Err(corrupt_frame(reason)),
        };
        let batch: LogBatch = decode_archive(payload).map_err(corrupt_frame)?;
        if batch.base_offset != offset.0 || batch.records.is_empty() {
            return Err(corrupt(
                path,
                format!(
                    "a batch of {} records at offset {} where offset {offset} was expected",
                    batch.records.len(),
                    batch.base_offset
                ),
            ));
        }
        let end = offset.plus(batch.records.len() as i64);
        if end <= replay.snapshot_offset {
            // Already in the snapshot.
        } else if offset == replay.next_offset {
            replay.next_offset = end;
            batches.push(batch.records);
        } else {
            return Err(corrupt(
                path,
                format!(
                    "the batch at offset {offset} does not follow offset {}",
                    replay.next_offset
                ),
            ));
        }
        offset = end;
    }
    Ok(SegmentScan {
        batches,
        end: offset,
        next_offset: replay.next_offset,
        cut_bytes: 0,
    })
}

/// The payload of the frame at the start of `bytes` and the frame's size,
/// or why there is no whole valid frame there (a frame over
/// [`BATCH_BYTES_MAX`] is one).
///
/// # Errors
/// [`Corruption`] for a short, oversized or damaged frame.
pub(crate) fn read_frame(
    bytes: &[u8],
    magic: [u8; 4],
    version: u16,
) -> Result<(&[u8], usize), Corruption> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(Corruption::ShorterThanHeader {
            length: bytes.len(),
            header_bytes: FRAME_HEADER_BYTES,
        });
    }
    let stated = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let frame_bytes = FRAME_HEADER_BYTES + stated as usize;
    if frame_bytes > BATCH_BYTES_MAX || frame_bytes > bytes.len() {
        return Err(Corruption::LengthMismatch {
            stated,
            present: bytes.len() - FRAME_HEADER_BYTES,
        });
    }
    let payload = decode_frame(magic, version, &bytes[..frame_bytes])?;
    Ok((payload, frame_bytes))
}

/// Decodes an rkyv archive of `T` from an unaligned `payload`.
///
/// # Errors
/// [`Corruption::InvalidArchive`] if `payload` is not a valid archive of `T`.
pub(crate) fn decode_archive<T>(payload: &[u8]) -> Result<T, Corruption>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
        .map_err(|error| Corruption::InvalidArchive(error.to_string()))
}

fn read_snapshot(path: &Path, end: Offset) -> Result<Vec<MetadataRecord>, LogError> {
    let bytes = fs::read(path).map_err(io_error("reading", path))?;
    let corrupt_frame = |reason| LogError::CorruptFrame {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let (end_offset, records) = decode_snapshot(&bytes).map_err(corrupt_frame)?;
    if end_offset != end {
        return Err(corrupt(
            path,
            format!("it holds the snapshot at offset {end_offset}"),
        ));
    }
    Ok(records)
}

/// A snapshot as its file holds it: a frame (magic `FJMS`) around the end
/// offset and the records that rebuild the image of every record below it.
/// The controller quorum ships the same bytes as its Raft snapshot, so both
/// logs share one snapshot format.
///
/// # Panics
/// Never in practice: archiving records into memory has no failure but
/// allocation, which aborts.
pub(crate) fn encode_snapshot(end: Offset, records: &[MetadataRecord]) -> Vec<u8> {
    let snapshot = LogSnapshot {
        end_offset: end.0,
        records: records.to_vec(),
    };
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot)
        .expect("archiving records into memory cannot fail");
    encode_frame(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, &payload)
}

/// The end offset and records of a snapshot [`encode_snapshot`] made.
///
/// # Errors
/// [`Corruption`] if `bytes` is not one whole, undamaged snapshot frame.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(Offset, Vec<MetadataRecord>), Corruption> {
    let payload = decode_frame(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, bytes)?;
    let snapshot: LogSnapshot = decode_archive(payload)?;
    Ok((Offset(snapshot.end_offset), snapshot.records))
}

/// Truncates `path` to `length` bytes, durably.
pub(crate) fn cut(path: &Path, length: u64) -> Result<(), LogError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("opening", path))?;
    file.set_len(length)
        .and_then(|()| file.sync_all())
        .map_err(io_error("truncating", path))
}

/// Creates the empty segment starting at `base`, durably.
fn create_segment(dir: &Path, base: Offset) -> Result<File, LogError> {
    create_appendable(dir, &segment_path(dir, base))
}

/// Creates `path` in `dir` (or opens it, if it exists) for appending, with
/// the file and its name durable.
pub(crate) fn create_appendable(dir: &Path, path: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_error("creating", path))?;
    file.sync_all().map_err(io_error("syncing", path))?;
    sync_dir(dir)?;
    Ok(file)
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut file = File::create(path).map_err(io_error("creating", path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error("writing", path))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("syncing", dir))
}

pub(crate) fn io_error(
    context: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io {
        context,
        path,
        source,
    }
}

fn corrupt(path: &Path, reason: String) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests;
