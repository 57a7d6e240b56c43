//! One segment: a `.log` file of record batches plus its `.index` and
//! `.timeindex`, and the appender that writes its tail with `O_DIRECT`.
//!
//! # Durability contract
//! - [`Segment::append`] returns once the bytes are *written* (the DMA
//!   completed); [`Segment::size`] then covers them and readers may see them.
//! - Nothing in a segment is *flushed* until [`Segment::fdatasync`] returns.
//! - The file's size on disk is block-aligned while the segment is active (the
//!   last block is zero-padded); the logical end is [`Segment::size`].
//!   [`Segment::seal`] cuts the padding so closed segments are exactly Kafka's
//!   format.
//!
//! `O_DIRECT` writes must cover whole blocks, so the appender keeps the
//! partial last block in memory and rewrites it, extended, with the next
//! append. Writes to one segment are issued one at a time (the log's single
//! writer), so two writes of the same block are never in flight together and
//! cannot land out of order.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{scan_batch, BatchHeader, ScanOutcome};
use crate::error::{Error, Result};
use crate::index::{IndexPolicy, OffsetIndex, TimeIndex};
use crate::storage::{align_down, AlignedBuffer, Storage, StorageFile, BLOCK_BYTES};
use crate::types::{Offset, TimestampMs};

/// Bytes read per I/O when scanning a segment (recovery, lookups).
pub const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// The most bytes one read of a fetch asks the storage for at a time (the
/// disk storage issues it as `READ_IO_BYTES` I/Os, one at a time per
/// shard); reading ahead keeps the disk busy between fetches.
pub const READ_CHUNK_BYTES_MAX: usize = 4 << 20;

/// Bytes of batches whose CRCs a read or scan checks before it lets the
/// shard's other tasks run: checking a multi-megabyte read in one go would
/// hold appends on the same core for a millisecond or more.
pub const CHECKED_BYTES_PER_TURN: usize = 256 * 1024;

/// Bytes CRC-checked since a read or scan last let other tasks run.
#[derive(Default)]
struct CheckTurn(usize);

impl CheckTurn {
    /// Counts `bytes` just checked; yields once [`CHECKED_BYTES_PER_TURN`]
    /// were.
    async fn checked(&mut self, bytes: usize) {
        self.0 += bytes;
        if self.0 >= CHECKED_BYTES_PER_TURN {
            self.0 = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

/// The file name of a segment file: 20-digit zero-padded base offset.
#[must_use]
pub fn segment_file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
}

/// Parses `00000000000000000042.log` into offset 42 if the extension matches.
#[must_use]
pub fn parse_segment_file_name(name: &str, extension: &str) -> Option<Offset> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// The state of a segment's indexes in memory.
#[derive(Debug)]
pub enum Indexes {
    /// Not read yet: a closed segment from an earlier run.
    OnDisk,
    /// In memory (active segments and segments read since start).
    Loaded(OffsetIndex, TimeIndex),
    /// The files were missing or corrupt: scan from the segment start.
    Unavailable,
}

/// A batch header located in a segment.
#[derive(Clone, Copy, Debug)]
pub struct LocatedBatch {
    /// The batch's header.
    pub header: BatchHeader,
    /// Its position in the segment file.
    pub position: u64,
}

/// One segment of a partition log.
pub struct Segment<S: Storage> {
    /// Offset of the first batch this segment may hold.
    pub base_offset: Offset,
    /// Offset after the last batch written to this segment.
    pub next_offset: Offset,
    /// Logical end: bytes of complete batches.
    size: u64,
    /// Greatest batch max-timestamp in the segment, when known.
    pub max_timestamp: TimestampMs,
    /// The last offset of the batch holding `max_timestamp`.
    max_timestamp_offset: Offset,
    /// When the first batch was appended (wall clock), for `segment.ms`.
    pub first_append_ms: Option<i64>,
    /// Log bytes appended since the last offset index entry.
    bytes_since_index_entry: u64,
    /// Position up to which batch CRCs were verified in this process.
    pub verified_size: u64,
    /// The `.log` file.
    pub file: Rc<S::File>,
    /// The offset and time indexes.
    pub indexes: Indexes,
    /// The partial last block, kept to rewrite with the next append.
    tail: Vec<u8>,
    path: PathBuf,
}

impl<S: Storage> Segment<S> {
    /// Creates a new, empty segment file in `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be created.
    pub async fn create(storage: &S, dir: &Path, base_offset: Offset) -> Result<Self> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        Self::create_at(storage, dir, base_offset, path).await
    }

    /// Creates a new, empty segment file at `path` in `dir` (the log cleaner
    /// writes its output under a temporary name, then renames it and calls
    /// [`Segment::relocated`]).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be created.
    pub async fn create_at(
        storage: &S,
        dir: &Path,
        base_offset: Offset,
        path: PathBuf,
    ) -> Result<Self> {
        let file = storage
            .open(&path, true)
            .await
            .map_err(|error| Error::io("creating segment", &path, error))?;
        file.truncate(0)
            .await
            .map_err(|error| Error::io("creating segment", &path, error))?;
        storage
            .sync_dir(dir)
            .await
            .map_err(|error| Error::io("syncing directory", dir, error))?;
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            size: 0,
            max_timestamp: TimestampMs::NONE,
            max_timestamp_offset: base_offset,
            first_append_ms: None,
            bytes_since_index_entry: 0,
            verified_size: 0,
            file: Rc::new(file),
            indexes: Indexes::Loaded(OffsetIndex::new(base_offset), TimeIndex::new(base_offset)),
            tail: Vec::with_capacity(BLOCK_BYTES),
            path,
        })
    }

    /// Opens an existing segment without reading its content. `size` is taken
    /// from the file; the caller recovers or trusts it.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened.
    pub async fn open(storage: &S, dir: &Path, base_offset: Offset) -> Result<Self> {
        let path = dir.join(segment_file_name(base_offset, "log"));
        let file = storage
            .open(&path, false)
            .await
            .map_err(|error| Error::io("opening segment", &path, error))?;
        let size = file
            .size()
            .await
            .map_err(|error| Error::io("opening segment", &path, error))?;
        Ok(Self {
            base_offset,
            next_offset: base_offset,
            size,
            max_timestamp: TimestampMs::NONE,
            max_timestamp_offset: base_offset,
            first_append_ms: None,
            bytes_since_index_entry: 0,
            verified_size: 0,
            file: Rc::new(file),
            indexes: Indexes::OnDisk,
            tail: Vec::new(),
            path,
        })
    }

    /// Records that the segment's file was renamed to `path` (its index
    /// files follow the same name).
    pub fn relocated(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// The `.log` file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of this segment's file with another extension.
    #[must_use]
    pub fn sibling(&self, extension: &str) -> PathBuf {
        self.path.with_extension(extension)
    }

    /// Logical size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the indexes were not read yet (a closed segment from an
    /// earlier run): lookups need [`Segment::index_load`] first.
    #[must_use]
    pub fn indexes_on_disk(&self) -> bool {
        matches!(self.indexes, Indexes::OnDisk)
    }

    /// What reading this segment's indexes needs, held without a borrow of
    /// the segment; `None` when they are not on disk (in memory already, or
    /// unavailable).
    #[must_use]
    pub fn index_load(&self) -> Option<IndexLoad<S>> {
        self.indexes_on_disk().then(|| IndexLoad {
            base_offset: self.base_offset,
            file: self.file.clone(),
            offsets_path: self.sibling("index"),
            times_path: self.sibling("timeindex"),
        })
    }

    /// Takes the indexes `loaded` read, if this segment's indexes are still
    /// on disk and it is still the file they were read for (the cleaner may
    /// have replaced it meanwhile). An index that was missing or did not
    /// decode leaves the segment without one: lookups then scan from the
    /// segment start, which is slower but correct.
    pub fn install_indexes(&mut self, loaded: LoadedIndexes<S>) {
        if !self.indexes_on_disk() || !Rc::ptr_eq(&self.file, &loaded.file) {
            return;
        }
        self.indexes = match loaded.indexes {
            Some((offsets, times)) => {
                // A closed segment's time index ends with its greatest
                // timestamp (see `crate::index`).
                if let Some((max, offset)) = times.last() {
                    if max > self.max_timestamp {
                        self.max_timestamp = max;
                        self.max_timestamp_offset = offset;
                    }
                }
                Indexes::Loaded(offsets, times)
            }
            None => Indexes::Unavailable,
        };
    }

    /// Loads the indexes from disk if they are not in memory, for a segment
    /// the caller holds alone (recovery at open); a log's segments load
    /// through [`Segment::index_load`], which holds no borrow of them.
    pub async fn load_indexes(&mut self, storage: &S) {
        if let Some(load) = self.index_load() {
            let loaded = load.read(storage).await;
            self.install_indexes(loaded);
        }
    }

    /// Whether the indexes take no more entries under `policy`: the
    /// segment must roll before its next append (Kafka's
    /// `LogSegment.shouldRoll`).
    #[must_use]
    pub fn indexes_full(&self, policy: IndexPolicy) -> bool {
        match &self.indexes {
            Indexes::Loaded(offsets, times) => policy.is_full(offsets.len(), times.len()),
            Indexes::OnDisk | Indexes::Unavailable => false,
        }
    }

    /// Both indexes encoded as their files, for a segment being closed
    /// (rolled, or the log closing): the time index first gets its closing
    /// entry, the segment's greatest timestamp, so that it can be read back
    /// from the file. Empty when the indexes are not in memory.
    pub fn closing_index_files(&mut self, policy: IndexPolicy) -> Vec<(PathBuf, Vec<u8>)> {
        if let Indexes::Loaded(_, times) = &mut self.indexes {
            if self.max_timestamp != TimestampMs::NONE && times.len() < policy.time_entries_max() {
                times.maybe_append(self.max_timestamp, self.max_timestamp_offset);
            }
        }
        self.index_files()
    }

    /// Both indexes encoded as their files, to write with [`write_files`]
    /// (the active segment is being checkpointed; a closing one uses
    /// [`Segment::closing_index_files`]); empty when the indexes are not in
    /// memory.
    #[must_use]
    pub fn index_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        match &self.indexes {
            Indexes::Loaded(offsets, times) => vec![
                (self.sibling("index"), offsets.encode()),
                (self.sibling("timeindex"), times.encode()),
            ],
            Indexes::OnDisk | Indexes::Unavailable => Vec::new(),
        }
    }

    /// The paths of the index files, to remove with [`remove_files`] when
    /// they no longer match the log.
    #[must_use]
    pub fn index_paths(&self) -> Vec<PathBuf> {
        vec![self.sibling("index"), self.sibling("timeindex")]
    }

    /// Builds the aligned write that appends `batches` (already
    /// offset-assigned, contiguous, all for this segment): the kept tail block
    /// followed by the new bytes, zero-padded to a block boundary.
    ///
    /// # Panics
    /// If the kept tail does not match the segment's size.
    #[must_use]
    pub fn prepare_append(
        &self,
        storage: &S,
        batches: &[(BatchHeader, Bytes)],
    ) -> (PendingWrite<S>, AppendCommit) {
        let new_bytes: usize = batches.iter().map(|(_, bytes)| bytes.len()).sum();
        let position = align_down(self.size);
        assert_eq!(
            self.tail.len() as u64,
            self.size - position,
            "tail block out of step"
        );
        let total = self.tail.len() + new_bytes;
        let mut buffer = storage.alloc_buffer(total.next_multiple_of(BLOCK_BYTES));
        let target = buffer.as_mut_slice();
        target[..self.tail.len()].copy_from_slice(&self.tail);
        let mut cursor = self.tail.len();
        for (_, bytes) in batches {
            target[cursor..cursor + bytes.len()].copy_from_slice(bytes);
            cursor += bytes.len();
        }
        // The padding up to the block boundary lands on disk past the
        // logical end: keep it zero so a scan sees no stale batch there.
        target[cursor..].fill(0);
        let new_end = self.size + new_bytes as u64;
        let new_tail_start = (align_down(new_end) - position) as usize;
        let new_tail = buffer.as_slice()[new_tail_start..total].to_vec();
        let write = PendingWrite {
            buffer,
            position,
            file: self.file.clone(),
            path: self.path.clone(),
        };
        let commit = AppendCommit {
            position,
            new_end,
            new_tail,
        };
        (write, commit)
    }

    /// Accounts for an append whose write completed: sizes, indexes,
    /// timestamps and the new tail block.
    ///
    /// # Panics
    /// If the append does not continue this segment (offsets going
    /// backwards, or another write landed in between).
    pub fn commit_append(
        &mut self,
        batches: &[(BatchHeader, Bytes)],
        written: AppendCommit,
        policy: IndexPolicy,
        now_ms: i64,
    ) {
        assert_eq!(
            written.position,
            align_down(self.size),
            "append raced another write"
        );
        let mut position = self.size;
        for (header, bytes) in batches {
            assert!(
                header.base_offset >= self.next_offset,
                "offsets must not go backwards in {}",
                self.path.display()
            );
            self.note_batch(header, position, policy);
            position += bytes.len() as u64;
        }
        assert_eq!(position, written.new_end, "append length mismatch");
        self.size = written.new_end;
        self.verified_size = written.new_end;
        self.tail = written.new_tail;
        self.first_append_ms.get_or_insert(now_ms);
    }

    /// Accounts for one batch at `position`: the greatest timestamp, and,
    /// every `index.interval.bytes`, an offset index entry and a time index
    /// entry if the greatest timestamp grew, as long as the indexes have
    /// room (Kafka's `LogSegment.append`).
    fn note_batch(&mut self, header: &BatchHeader, position: u64, policy: IndexPolicy) {
        let Indexes::Loaded(offsets, times) = &mut self.indexes else {
            unreachable!("segments being appended or scanned have their indexes loaded");
        };
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.max_timestamp_offset = header.last_offset();
        }
        if self.bytes_since_index_entry >= u64::from(policy.interval_bytes) || offsets.is_empty() {
            let room = !policy.is_full(offsets.len(), times.len());
            if room && (position > 0 || offsets.is_empty()) {
                offsets.append(header.base_offset, position as u32);
            }
            if room {
                times.maybe_append(self.max_timestamp, self.max_timestamp_offset);
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.total_bytes() as u64;
        self.next_offset = header.last_offset().next();
    }

    /// A new descriptor of this segment's file that `sendfile`/`splice` can
    /// read, or `None` when the storage has no real files. Each zero-copy
    /// read opens its own and the send closes it: descriptors kept per
    /// segment once read made a broker whose consumers read 10,000
    /// partitions from disk hold two descriptors each and run out
    /// (`bench/RESULTS.md`, session 8); an `open` per read from disk costs
    /// microseconds against the send of up to a fetch's bytes.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened.
    pub fn send_file(&self, storage: &S) -> Result<Option<Arc<std::fs::File>>> {
        Ok(storage
            .open_for_send(&self.path)
            .map_err(|error| Error::io("opening segment for sending", &self.path, error))?
            .map(Arc::new))
    }

    /// A handle for I/O on this segment that holds no borrow of it.
    #[must_use]
    pub fn handle(&self) -> SegmentHandle<S> {
        SegmentHandle {
            file: self.file.clone(),
            path: self.path.clone(),
        }
    }

    /// Where a read for `target` starts scanning: the greatest index entry at
    /// or before it, or the segment start.
    #[must_use]
    pub fn start_position_for(&self, target: Offset) -> u64 {
        match &self.indexes {
            Indexes::Loaded(offsets, _) => u64::from(offsets.lookup(target).1),
            Indexes::OnDisk | Indexes::Unavailable => 0,
        }
    }

    /// Where a zero-copy range that starts at batch boundary `start` can
    /// end without reading a batch header: the furthest batch boundary
    /// within `max_bytes` of `start` before which every batch is below
    /// `bound`. Boundaries come from the offset index (each entry is a
    /// batch's start and base offset) and from the segment's end when all
    /// of it is below `bound`. `None` when no such boundary lies past
    /// `start`; the caller then reads headers.
    #[must_use]
    pub fn indexed_range_end(&self, start: u64, max_bytes: usize, bound: Offset) -> Option<u64> {
        let limit = start.saturating_add(max_bytes as u64);
        if self.next_offset <= bound && self.size <= limit && self.size > start {
            return Some(self.size);
        }
        let Indexes::Loaded(offsets, _) = &self.indexes else {
            return None;
        };
        let max_position = u32::try_from(limit.min(self.size)).unwrap_or(u32::MAX);
        let (_, position) = offsets.last_within(max_position, bound)?;
        (u64::from(position) > start).then_some(u64::from(position))
    }

    /// The offset of the greatest index entry at or before `target` (the
    /// batch at [`Segment::start_position_for`]), or the segment's base.
    #[must_use]
    pub fn index_entry_for(&self, target: Offset) -> Offset {
        match &self.indexes {
            Indexes::Loaded(offsets, _) => offsets.lookup(target).0,
            Indexes::OnDisk | Indexes::Unavailable => self.base_offset,
        }
    }

    /// The first offset whose timestamp may be `>= target`, from the time
    /// index, for a ListOffsets-by-timestamp scan.
    #[must_use]
    pub fn time_lookup(&self, target: TimestampMs) -> Offset {
        match &self.indexes {
            Indexes::Loaded(_, times) => times.lookup(target),
            Indexes::OnDisk | Indexes::Unavailable => self.base_offset,
        }
    }

    /// Scans batches from `position` (whose batch starts at offset
    /// `position_offset`, or at the segment start when `position` is 0) to the
    /// end of the file, verifying each, rebuilding index entries, and cutting
    /// the file at the first invalid or incomplete batch. `on_batch` sees every
    /// valid batch. Afterwards the segment is ready to append.
    ///
    /// # Errors
    /// [`Error::Io`] if reading or truncating fails.
    ///
    /// # Panics
    /// If `position` is not 0 and the segment's index is not loaded.
    pub async fn recover_from(
        &mut self,
        position: u64,
        position_offset: Offset,
        policy: IndexPolicy,
        mut on_batch: impl FnMut(&BatchHeader),
    ) -> Result<RecoveryScan> {
        let handle = self.handle();
        let file_size = handle.size().await?;
        let (position, position_offset) = if position > file_size {
            // An index entry past the file's end: the index outlived a cut
            // of the log. Trust neither; scan the whole segment.
            tracing::warn!(segment = %self.path.display(), position, file_size, "index points past the segment end");
            self.indexes = Indexes::Unavailable;
            (0, self.base_offset)
        } else {
            (position, position_offset)
        };
        match &mut self.indexes {
            Indexes::Loaded(offsets, times) if position > 0 => {
                // `position_offset` is an index point: the time entry made
                // there, if its batch is below it, covers every batch
                // below; if not, the greatest timestamp below is at most
                // that of the index point's batch, which is scanned again.
                offsets.truncate_to(position_offset);
                times.truncate_to(position_offset);
                (self.max_timestamp, self.max_timestamp_offset) = times
                    .last()
                    .unwrap_or((TimestampMs::NONE, self.base_offset));
                self.next_offset = position_offset;
            }
            _ => {
                assert_eq!(position, 0, "scanning mid-segment needs its index");
                self.indexes = Indexes::Loaded(
                    OffsetIndex::new(self.base_offset),
                    TimeIndex::new(self.base_offset),
                );
                self.max_timestamp = TimestampMs::NONE;
                self.max_timestamp_offset = self.base_offset;
                self.next_offset = self.base_offset;
            }
        }
        self.size = position;
        self.bytes_since_index_entry = u64::from(policy.interval_bytes);
        let mut batches = Vec::new();
        let end = handle
            .scan(position, file_size, self.next_offset, |header, at| {
                batches.push((*header, at));
            })
            .await?;
        for (header, at) in &batches {
            on_batch(header);
            self.note_batch(header, *at, policy);
        }
        self.size = end.end_position;
        let truncated_at = end.stopped_by.map(|reason| (end.end_position, reason));
        if self.size != file_size {
            handle.truncate(self.size).await?;
            handle.fdatasync().await?;
        }
        self.tail = handle.read_tail(self.size).await?;
        // Only a prefix is tracked: bytes before a mid-segment start were
        // not checked in this process and stay unverified.
        self.verified_size = if position == 0 { self.size } else { 0 };
        Ok(RecoveryScan {
            batches: batches.len() as u64,
            truncated_at,
        })
    }

    /// Replaces missing indexes with ones built from `batches`, the verified
    /// headers and positions of every batch in the segment, in order.
    pub fn rebuild_indexes(&mut self, batches: &[(BatchHeader, u64)], policy: IndexPolicy) {
        self.indexes = Indexes::Loaded(
            OffsetIndex::new(self.base_offset),
            TimeIndex::new(self.base_offset),
        );
        self.max_timestamp = TimestampMs::NONE;
        self.max_timestamp_offset = self.base_offset;
        self.next_offset = self.base_offset;
        self.bytes_since_index_entry = u64::from(policy.interval_bytes);
        for (header, position) in batches {
            self.note_batch(header, *position, policy);
        }
    }

    /// Where a truncation at batch boundary `offset` scans from so that
    /// [`Segment::truncated`] learns the greatest timestamp of the batches
    /// kept: the time index entries below `offset` cover the batches up to
    /// the last index point below it, so from that point's position (and
    /// offset) on. The segment start when the index has no such point.
    #[must_use]
    pub fn timestamps_uncovered_below(&self, offset: Offset) -> (u64, Offset) {
        match &self.indexes {
            Indexes::Loaded(offsets, _) if offset > self.base_offset => {
                let (from, position) = offsets.lookup(Offset(offset.0 - 1));
                (u64::from(position), from)
            }
            _ => (0, self.base_offset),
        }
    }

    /// Drops the segment's state for batches at or after `offset` after the
    /// file was cut to `new_size` (Kafka's `LogSegment.truncateTo`).
    /// `rescanned` are the verified batches kept from
    /// [`Segment::timestamps_uncovered_below`] on, whose timestamps the
    /// time index does not cover.
    pub fn truncated(
        &mut self,
        offset: Offset,
        new_size: u64,
        new_tail: Vec<u8>,
        rescanned: &[(BatchHeader, u64)],
    ) {
        if let Indexes::Loaded(offsets, times) = &mut self.indexes {
            offsets.truncate_to(offset);
            times.truncate_to(offset);
            (self.max_timestamp, self.max_timestamp_offset) = times
                .last()
                .unwrap_or((TimestampMs::NONE, self.base_offset));
        }
        for (header, _) in rescanned
            .iter()
            .filter(|(header, _)| header.base_offset < offset)
        {
            if header.max_timestamp > self.max_timestamp {
                self.max_timestamp = header.max_timestamp;
                self.max_timestamp_offset = header.last_offset();
            }
        }
        self.next_offset = self.next_offset.min(offset);
        self.size = new_size;
        self.verified_size = self.verified_size.min(new_size);
        self.tail = new_tail;
        // Index spacing restarts conservatively: the next batch gets an entry.
        self.bytes_since_index_entry = u64::MAX / 2;
    }
}

/// A closed segment's index files to read, without a borrow of the
/// segment: see [`Segment::index_load`].
pub struct IndexLoad<S: Storage> {
    base_offset: Offset,
    file: Rc<S::File>,
    offsets_path: PathBuf,
    times_path: PathBuf,
}

/// What [`IndexLoad::read`] found, for [`Segment::install_indexes`].
pub struct LoadedIndexes<S: Storage> {
    file: Rc<S::File>,
    /// `None` when either file is missing or does not decode.
    indexes: Option<(OffsetIndex, TimeIndex)>,
}

impl<S: Storage> IndexLoad<S> {
    /// The base offset of the segment the indexes belong to.
    #[must_use]
    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// Reads and decodes both index files through `storage` (off the
    /// shard's core for the real disk). Never fails: a file that cannot be
    /// read or decoded is logged and leaves the segment without indexes.
    pub async fn read(self, storage: &S) -> LoadedIndexes<S> {
        let offsets = match Self::read_file(storage, &self.offsets_path).await {
            Some(bytes) => OffsetIndex::decode(self.base_offset, &bytes)
                .map_err(|reason| warn_undecodable(&self.offsets_path, &reason))
                .ok(),
            None => None,
        };
        let times = match Self::read_file(storage, &self.times_path).await {
            Some(bytes) => TimeIndex::decode(self.base_offset, &bytes)
                .map_err(|reason| warn_undecodable(&self.times_path, &reason))
                .ok(),
            None => None,
        };
        let indexes = offsets.zip(times);
        if indexes.is_none() {
            tracing::warn!(segment = %self.offsets_path.with_extension("log").display(),
                "index files missing or corrupt; reads will scan this segment");
        }
        LoadedIndexes {
            file: self.file,
            indexes,
        }
    }

    async fn read_file(storage: &S, path: &Path) -> Option<Vec<u8>> {
        match storage.read_file(path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read index file");
                None
            }
        }
    }
}

fn warn_undecodable(path: &Path, reason: &crate::error::Corruption) {
    tracing::warn!(path = %path.display(), %reason, "index file does not decode");
}

/// The state change of an append, applied by [`Segment::commit_append`] once
/// its [`PendingWrite`] completed.
#[derive(Debug)]
pub struct AppendCommit {
    position: u64,
    new_end: u64,
    new_tail: Vec<u8>,
}

/// An aligned write built by [`Segment::prepare_append`].
pub struct PendingWrite<S: Storage> {
    buffer: <S::File as StorageFile>::Buffer,
    position: u64,
    file: Rc<S::File>,
    path: PathBuf,
}

impl<S: Storage> PendingWrite<S> {
    /// Issues the write, continuing after short writes.
    ///
    /// # Errors
    /// [`Error::Io`] if the write fails or makes no progress. The file past
    /// the segment's old size is then unknown: the caller must poison the log.
    pub async fn write(self, storage: &S) -> Result<()> {
        let buffer = Rc::new(self.buffer);
        let length = buffer.as_slice().len();
        let mut done = 0;
        while done < length {
            let piece = if done == 0 {
                buffer.clone()
            } else {
                // A short write (rare: the device or file system ran out of
                // room mid-write) continues from a copy of the rest.
                let rest = &buffer.as_slice()[done..];
                let mut copy = storage.alloc_buffer(rest.len());
                copy.as_mut_slice().copy_from_slice(rest);
                Rc::new(copy)
            };
            let written = self
                .file
                .write_at(piece, self.position + done as u64)
                .await
                .map_err(|error| Error::io("writing segment", &self.path, error))?;
            if written == 0 || written % BLOCK_BYTES != 0 {
                return Err(Error::io(
                    "writing segment",
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write of {written} bytes"),
                    ),
                ));
            }
            done += written;
        }
        Ok(())
    }
}

/// Segment I/O that holds no borrow of the segment, so no `RefCell` borrow
/// spans an await.
pub struct SegmentHandle<S: Storage> {
    file: Rc<S::File>,
    path: PathBuf,
}

impl<S: Storage> Clone for SegmentHandle<S> {
    fn clone(&self) -> Self {
        Self {
            file: self.file.clone(),
            path: self.path.clone(),
        }
    }
}

impl<S: Storage> SegmentHandle<S> {
    /// The `.log` file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether both handles are to the same open file (a segment the
    /// cleaner replaced under the same base offset is another file).
    #[must_use]
    pub fn same_file(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.file, &other.file)
    }

    /// Reads `len` bytes at `position` (fewer at the end of the file), in
    /// one I/O, unchecked: for reading ahead of [`SegmentHandle::read_from`],
    /// which verifies what it returns.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn read_raw(&self, position: u64, len: usize) -> Result<Bytes> {
        self.file
            .read_at(position, len)
            .await
            .map_err(self.io_error("reading ahead"))
    }

    fn io_error(&self, context: &'static str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |error| Error::io(context, &self.path, error)
    }

    /// The file's size on disk.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn size(&self) -> Result<u64> {
        self.file
            .size()
            .await
            .map_err(self.io_error("sizing segment"))
    }

    /// Makes every written byte of this segment durable.
    ///
    /// # Errors
    /// [`Error::Io`]; on the append path the caller must poison the log.
    pub async fn fdatasync(&self) -> Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(self.io_error("syncing segment"))
    }

    /// Sets the file's size.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn truncate(&self, size: u64) -> Result<()> {
        self.file
            .truncate(size)
            .await
            .map_err(self.io_error("truncating segment"))
    }

    /// Reads the partial last block of a segment of logical size `size`.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::CorruptLog`] if the file is shorter.
    pub async fn read_tail(&self, size: u64) -> Result<Vec<u8>> {
        let tail_start = align_down(size);
        let tail_length = (size - tail_start) as usize;
        let mut tail = Vec::with_capacity(BLOCK_BYTES);
        if tail_length > 0 {
            let bytes = self
                .file
                .read_at(tail_start, tail_length)
                .await
                .map_err(self.io_error("reading segment tail"))?;
            if bytes.len() != tail_length {
                return Err(self.corrupt(size, "file shorter than its logical size"));
            }
            tail.extend_from_slice(&bytes);
        }
        Ok(tail)
    }

    fn corrupt(&self, position: u64, reason: &str) -> Error {
        Error::CorruptLog {
            path: self.path.clone(),
            position,
            reason: reason.to_owned(),
        }
    }

    /// Walks batches from `position` up to `end`, verifying each, calling
    /// `on_batch` with each valid batch's header and position. Stops at the
    /// first incomplete or invalid batch (or one whose base offset is below
    /// `next_offset`, which a valid log never has) and says why.
    ///
    /// # Errors
    /// [`Error::Io`] if a read fails.
    pub async fn scan(
        &self,
        position: u64,
        end: u64,
        mut next_offset: Offset,
        mut on_batch: impl FnMut(&BatchHeader, u64),
    ) -> Result<ScanEnd> {
        let mut cursor = position;
        let mut chunk_start = position;
        let mut chunk = Bytes::new();
        let mut turn = CheckTurn::default();
        loop {
            let relative = (cursor - chunk_start) as usize;
            let available = &chunk[relative.min(chunk.len())..];
            match scan_batch(available) {
                ScanOutcome::Valid(header) => {
                    if header.base_offset < next_offset {
                        return Ok(ScanEnd::stopped(cursor, "offsets go backwards"));
                    }
                    on_batch(&header, cursor);
                    next_offset = header.last_offset().next();
                    cursor += header.total_bytes() as u64;
                    turn.checked(header.total_bytes()).await;
                }
                ScanOutcome::Incomplete => {
                    if cursor + available.len() as u64 >= end {
                        let stopped_by =
                            (cursor < end).then(|| "incomplete batch at the end".to_owned());
                        return Ok(ScanEnd {
                            end_position: cursor,
                            stopped_by,
                        });
                    }
                    let want = SCAN_CHUNK_BYTES.max(declared_length(available));
                    let want = want.min((end - cursor) as usize);
                    chunk_start = cursor;
                    chunk = self
                        .file
                        .read_at(cursor, want)
                        .await
                        .map_err(self.io_error("scanning segment"))?;
                    if chunk.is_empty() {
                        return Ok(ScanEnd::stopped(cursor, "file ends early"));
                    }
                }
                ScanOutcome::Invalid(reason) => return Ok(ScanEnd::stopped(cursor, &reason)),
            }
        }
    }

    /// Reads whole, CRC-verified batches starting with the one holding
    /// `target` (the first whose last offset is `>= target`), scanning from
    /// `position` (an index entry at or before it), up to `max_bytes` (but
    /// always the first batch, as KIP-74 requires), never past the logical
    /// `end` position nor any batch ending after `end_offset` (exclusive).
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::CorruptLog`]: a batch that fails its CRC is
    /// never returned.
    pub async fn read(
        &self,
        position: u64,
        end: u64,
        target: Offset,
        max_bytes: usize,
        end_offset: Offset,
    ) -> Result<Vec<(LocatedBatch, Bytes)>> {
        self.read_from(position, Bytes::new(), end, target, max_bytes, end_offset)
            .await
    }

    /// [`SegmentHandle::read`] starting from `first`, the file's bytes from
    /// `position` on already in memory (read ahead): the disk is read only
    /// for what lies past them.
    ///
    /// # Errors
    /// As [`SegmentHandle::read`].
    pub async fn read_from(
        &self,
        position: u64,
        first: Bytes,
        end: u64,
        target: Offset,
        max_bytes: usize,
        end_offset: Offset,
    ) -> Result<Vec<(LocatedBatch, Bytes)>> {
        let mut found = Vec::new();
        let mut cursor = position;
        let mut total = 0usize;
        let mut chunk_start = cursor;
        let mut chunk = first;
        let mut turn = CheckTurn::default();
        while cursor < end {
            let relative = (cursor - chunk_start) as usize;
            let available = &chunk[relative.min(chunk.len())..];
            match scan_batch(available) {
                ScanOutcome::Valid(header) => {
                    let length = header.total_bytes();
                    if header.last_offset() >= end_offset {
                        break;
                    }
                    if header.last_offset() >= target {
                        if !found.is_empty() && total + length > max_bytes {
                            break;
                        }
                        let bytes = chunk.slice(relative..relative + length);
                        found.push((
                            LocatedBatch {
                                header,
                                position: cursor,
                            },
                            bytes,
                        ));
                        total += length;
                        if total >= max_bytes {
                            break;
                        }
                    }
                    cursor += length as u64;
                    turn.checked(length).await;
                }
                ScanOutcome::Incomplete => {
                    let needed = declared_length(available);
                    if !found.is_empty() && available.len() >= 12 && total + needed > max_bytes {
                        // The next batch would not be returned: reading
                        // the rest of it would be wasted I/O.
                        break;
                    }
                    if cursor + needed as u64 > end {
                        return Err(self.corrupt(cursor, "batch extends past the segment end"));
                    }
                    // Only what the remaining budget can use.
                    let remaining = max_bytes.saturating_sub(total);
                    let want = needed.max(remaining.clamp(64 * 1024, READ_CHUNK_BYTES_MAX));
                    let want = want.min((end - cursor) as usize);
                    chunk_start = cursor;
                    chunk = self
                        .file
                        .read_at(cursor, want)
                        .await
                        .map_err(self.io_error("reading segment"))?;
                    if chunk.len() < needed.min(want) {
                        return Err(self.corrupt(cursor, "segment file shorter than its batches"));
                    }
                }
                ScanOutcome::Invalid(reason) => return Err(self.corrupt(cursor, &reason)),
            }
        }
        Ok(found)
    }
}

impl<S: Storage> SegmentHandle<S> {
    /// Finds the whole batches a read starting at `target` would return
    /// (same rules as [`SegmentHandle::read`]) by reading only their headers,
    /// for reads that send the data without copying it.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::CorruptLog`] for an impossible header.
    pub async fn locate(
        &self,
        position: u64,
        end: u64,
        target: Offset,
        max_bytes: usize,
        end_offset: Offset,
    ) -> Result<Vec<LocatedBatch>> {
        let mut found = Vec::new();
        let mut cursor = position;
        let mut total = 0usize;
        while cursor + crate::batch::BATCH_HEADER_BYTES as u64 <= end {
            let bytes = self
                .file
                .read_at(cursor, crate::batch::BATCH_HEADER_BYTES)
                .await
                .map_err(self.io_error("reading batch header"))?;
            let header = BatchHeader::parse(&bytes)
                .map_err(|error| self.corrupt(cursor, &error.to_string()))?;
            let length = header.total_bytes();
            if cursor + length as u64 > end {
                return Err(self.corrupt(cursor, "batch extends past the segment end"));
            }
            if header.last_offset() >= end_offset {
                break;
            }
            if header.last_offset() >= target {
                if !found.is_empty() && total + length > max_bytes {
                    break;
                }
                found.push(LocatedBatch {
                    header,
                    position: cursor,
                });
                total += length;
                if total >= max_bytes {
                    break;
                }
            }
            cursor += length as u64;
        }
        Ok(found)
    }

    /// Verifies the CRC of every batch in `[from, to)` (batch boundaries),
    /// so that data about to be sent without being read is known good.
    ///
    /// # Errors
    /// [`Error::CorruptLog`] at the first batch that fails, [`Error::Io`].
    pub async fn verify(&self, from: u64, to: u64) -> Result<()> {
        let end = self.scan(from, to, Offset(i64::MIN), |_, _| ()).await?;
        match end.stopped_by {
            Some(reason) => Err(self.corrupt(end.end_position, &reason)),
            None if end.end_position < to => {
                Err(self.corrupt(end.end_position, "range ends inside a batch"))
            }
            None => Ok(()),
        }
    }
}

/// Where a [`SegmentHandle::scan`] ended.
#[derive(Debug)]
pub struct ScanEnd {
    /// Position after the last valid batch.
    pub end_position: u64,
    /// Why the scan stopped before the end, if it did.
    pub stopped_by: Option<String>,
}

impl ScanEnd {
    fn stopped(end_position: u64, reason: &str) -> Self {
        Self {
            end_position,
            stopped_by: Some(reason.to_owned()),
        }
    }
}

/// What a recovery scan found.
#[derive(Debug)]
pub struct RecoveryScan {
    /// Valid batches seen.
    pub batches: u64,
    /// Where and why the file was cut, if it was.
    pub truncated_at: Option<(u64, String)>,
}

/// The total length a batch header declares, or the header size if too short
/// to tell.
fn declared_length(bytes: &[u8]) -> usize {
    if bytes.len() < 12 {
        return crate::batch::BATCH_HEADER_BYTES;
    }
    let length = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    usize::try_from(length).map_or(crate::batch::BATCH_HEADER_BYTES, |length| {
        (length + 12).max(crate::batch::BATCH_HEADER_BYTES)
    })
}

/// Writes each `(path, content)` whole, durably and atomically.
///
/// # Errors
/// [`Error::Io`] at the first file that cannot be written.
pub async fn write_files<S: Storage>(storage: &S, files: Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
    for (path, content) in files {
        storage
            .write_file_atomic(&path, content)
            .await
            .map_err(|error| Error::io("writing", &path, error))?;
    }
    Ok(())
}

/// Removes each file; missing ones are fine.
///
/// # Errors
/// [`Error::Io`] at the first file that cannot be removed.
pub async fn remove_files<S: Storage>(storage: &S, paths: Vec<PathBuf>) -> Result<()> {
    for path in paths {
        storage
            .remove_file(&path)
            .await
            .map_err(|error| Error::io("removing", &path, error))?;
    }
    Ok(())
}
