//! A partition's log: its segments, offsets, durability points and the
//! state replication and idempotence need.
//!
//! # Durability contract
//! - [`PartitionLog::append`] returns once the batch is *written*: its DMA
//!   completed and readers can see it. It survives a process crash (`kill
//!   -9`) but not necessarily a power loss.
//! - [`PartitionLog::flush`] returns once everything appended before the call
//!   is *flushed* (fdatasync completed): it survives power loss. Concurrent
//!   flushes share one fdatasync (group commit).
//! - `flush.messages` / `flush.ms` make the log flush on its own.
//! - Invariants, asserted: `log_start <= high_watermark <= log_end`,
//!   `flushed <= written <= assigned`, offsets never go backwards.
//! - A failed write or fdatasync *poisons* the log: the on-disk state past the
//!   last flush is unknown, so every later append and flush fails with
//!   [`Error::Poisoned`] until the partition is reopened (and recovered).
//!
//! # Concurrency
//! A log lives on one shard and is used by many tasks of that shard. Appends
//! are admitted (assigned offsets and queued, without awaiting) in the order
//! their [`AdmissionTicket`]s were taken, never in the order their tasks
//! happen to run (see [`admission`]), and written
//! by whichever appending task finds no writer active: it writes the longest
//! queued run (up to [`WRITE_BYTES_MAX`]) in one aligned write, so concurrent
//! appends are batched into one I/O, then hands the role on, so no task's
//! append waits on writes of batches queued after its own.
//! Flushes elect a syncer the same way. No `RefCell` borrow is held across an
//! await.
//!
//! # Recovery
//! On open, segments wholly before the checkpointed recovery point are
//! trusted without reading; the segment holding the recovery point is scanned
//! from the recovery point's index entry; later segments are scanned whole.
//! Scanning verifies every CRC and cuts the log at the first torn or corrupt
//! batch. Startup cost therefore depends on the data written since the last
//! checkpoint, not on the log's size.

pub mod admission;
pub mod cleaner;
mod index_load;
pub mod read_ahead;
mod record_checks;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use event_listener::Event;

use crate::batch::{self, BatchHeader, TimestampType};
use crate::cache::{BatchCache, PartitionKey};
use crate::checkpoint::{PartitionCheckpoint, PARTITION_CHECKPOINT_FILE};
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::index::IndexPolicy;
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{
    parse_snapshot_file_name, snapshot_file_name, ProducerBatch, ProducerStateTable, SequenceCheck,
};
use crate::segment::{
    parse_segment_file_name, remove_files, segment_file_name, write_files, AppendCommit,
    PendingWrite, Segment, SegmentHandle,
};
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs, TopicPartition};
use admission::{AdmissionLine, AdmissionTicket};
use read_ahead::{ReadAhead, ReadAheadBudget, ReadPoint, READ_AHEAD_BYTES_MAX};
use record_checks::RecordChecks;

/// Appended bytes waiting for the writer, per partition. Appends beyond it
/// wait for the writer to catch up.
pub const PENDING_BYTES_MAX: usize = 16 << 20;
/// Largest single write the writer issues.
pub const WRITE_BYTES_MAX: usize = 2 << 20;
/// How long idle producers' state is kept (`producer.id.expiration.ms`).
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 86_400_000;

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// Offset of the batch's last record.
    pub last_offset: Offset,
    /// The append time written into the batch with
    /// `message.timestamp.type=LogAppendTime`, else [`TimestampMs::NONE`].
    pub log_append_time: TimestampMs,
    /// The log start offset after the append.
    pub log_start_offset: Offset,
    /// The batch was a retry of one already in the log: nothing was written
    /// and the offsets are the original's.
    pub duplicate: bool,
}

/// Batches read from the log.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Whole record batches, in offset order, CRC-verified.
    pub batches: Vec<Bytes>,
    /// The high watermark when the read was served.
    pub high_watermark: Offset,
    /// The log start offset when the read was served.
    pub log_start_offset: Offset,
    /// The log end offset when the read was served.
    pub log_end_offset: Offset,
}

/// A byte range of a segment file holding whole, CRC-verified batches, for
/// the broker to send with `sendfile`/`splice` without copying.
#[derive(Clone, Debug)]
pub struct FileRange {
    /// A plain descriptor of the segment file (not `O_DIRECT`).
    pub file: Arc<std::fs::File>,
    /// Where the first batch starts.
    pub position: u64,
    /// Bytes of whole batches from there.
    pub len: u64,
}

/// What a zero-copy read found.
#[derive(Clone, Debug)]
pub enum ReadData {
    /// Batches in memory (the shard's cache, or storage without files).
    Batches(Vec<Bytes>),
    /// A file range to send as is.
    File(FileRange),
}

/// The answer to [`PartitionLog::read_zero_copy`].
#[derive(Clone, Debug)]
pub struct ZeroCopyRead {
    /// The data.
    pub data: ReadData,
    /// The log's offsets when the read was served.
    pub offsets: LogOffsets,
}

/// The offsets that describe a log at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOffsets {
    /// First offset still held.
    pub log_start: Offset,
    /// Offset up to which consumers may read.
    pub high_watermark: Offset,
    /// Offset after the last written batch: what readers can see.
    pub log_end: Offset,
    /// Offset up to which data survives power loss.
    pub flushed: Offset,
}

impl LogOffsets {
    /// Whether a read may start at `offset`: from the log start up to the
    /// log end (an empty read there).
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] outside that range.
    pub fn check_readable(&self, offset: Offset) -> Result<()> {
        if offset < self.log_start || offset > self.log_end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                log_start: self.log_start,
                log_end: self.log_end,
            });
        }
        Ok(())
    }
}

enum NextWrite<S: Storage> {
    Idle,
    Roll,
    Append(Vec<(BatchHeader, Bytes)>, PendingWrite<S>, AppendCommit),
}

struct PendingBatch {
    header: BatchHeader,
    bytes: Bytes,
}

struct LogState<S: Storage> {
    config: LogConfig,
    segments: BTreeMap<Offset, Segment<S>>,
    log_start_offset: Offset,
    /// Next offset to assign.
    assigned_offset: Offset,
    /// Every offset below is written.
    written_offset: Offset,
    /// Every offset below is flushed.
    flushed_offset: Offset,
    high_watermark: Offset,
    /// Every offset below is flushed and its segments' indexes are on disk.
    recovery_point: Offset,
    pending: VecDeque<PendingBatch>,
    pending_bytes: usize,
    writer_active: bool,
    syncer_active: bool,
    poisoned: Option<String>,
    closed: bool,
    producers: ProducerStateTable,
    epochs: LeaderEpochCache,
    unflushed_records: i64,
    oldest_unflushed_ms: Option<i64>,
    /// The cleaner checkpoint: offsets below were mapped by a cleaning pass.
    first_dirty_offset: Offset,
    /// The earliest delete horizon of a tombstone the cleaner kept, in
    /// memory only: once it passes, a pass is due to remove the tombstone.
    tombstone_horizon: Option<TimestampMs>,
}

impl<S: Storage> LogState<S> {
    /// The state of a log just recovered: everything on disk is written and
    /// flushed, nothing is queued.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is one recovered piece of the state"
    )]
    fn recovered(
        config: LogConfig,
        segments: BTreeMap<Offset, Segment<S>>,
        log_end: Offset,
        log_start: Offset,
        high_watermark: Offset,
        recovery_point: Offset,
        producers: ProducerStateTable,
        epochs: LeaderEpochCache,
        first_dirty: Option<Offset>,
    ) -> Self {
        Self {
            config,
            segments,
            log_start_offset: log_start,
            assigned_offset: log_end,
            written_offset: log_end,
            flushed_offset: log_end,
            high_watermark,
            recovery_point: recovery_point.min(log_end),
            pending: VecDeque::new(),
            pending_bytes: 0,
            writer_active: false,
            syncer_active: false,
            poisoned: None,
            closed: false,
            producers,
            epochs,
            unflushed_records: 0,
            oldest_unflushed_ms: None,
            first_dirty_offset: first_dirty.unwrap_or(log_start).clamp(log_start, log_end),
            tombstone_horizon: None,
        }
    }

    /// The segment that may hold `offset` (the last one starting at or
    /// before it); its indexes are loaded if
    /// [`PartitionLog::load_indexes_holding`] ran just before.
    fn segment_holding(&mut self, offset: Offset) -> Option<&mut Segment<S>> {
        Some(self.segments.range_mut(..=offset).next_back()?.1)
    }

    fn check_invariants(&self) {
        assert!(
            self.log_start_offset <= self.high_watermark,
            "log start above high watermark"
        );
        assert!(
            self.high_watermark <= self.written_offset,
            "high watermark above log end"
        );
        assert!(
            self.flushed_offset <= self.written_offset,
            "flushed above written"
        );
        assert!(
            self.written_offset <= self.assigned_offset,
            "written above assigned"
        );
    }

    fn active(&self) -> &Segment<S> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment<S> {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn offsets(&self) -> LogOffsets {
        LogOffsets {
            log_start: self.log_start_offset,
            high_watermark: self.high_watermark,
            log_end: self.written_offset,
            flushed: self.flushed_offset,
        }
    }

    /// Whether `checkpoint` holds other offsets than this state would write.
    fn offsets_differ_from(&self, checkpoint: &PartitionCheckpoint) -> bool {
        let current = self.checkpoint();
        (
            checkpoint.recovery_point,
            checkpoint.log_start_offset,
            checkpoint.high_watermark,
        ) != (
            current.recovery_point,
            current.log_start_offset,
            current.high_watermark,
        )
    }

    fn checkpoint(&self) -> PartitionCheckpoint {
        PartitionCheckpoint {
            recovery_point: self.recovery_point.0,
            log_start_offset: self.log_start_offset.0,
            high_watermark: self.high_watermark.0,
            leader_epochs: self.epochs.to_checkpoint_entries(),
        }
    }
}

/// One partition's log. See the module documentation for its contracts.
pub struct PartitionLog<S: Storage> {
    partition: TopicPartition,
    dir: PathBuf,
    storage: S,
    cache: Rc<RefCell<BatchCache>>,
    cache_key: PartitionKey,
    state: RefCell<LogState<S>>,
    /// Notified when the written offset advances, a writer finishes, or the
    /// log is poisoned.
    written_event: Event,
    /// Notified when the flushed offset advances or a syncer finishes.
    flushed_event: Event,
    /// A checkpoint is being written.
    checkpointing: Cell<bool>,
    /// Notified when a checkpoint write finishes.
    checkpoint_done: Event,
    /// A cleaner swap is committed but not yet applied in memory: segments
    /// must not be removed meanwhile.
    swapping: Cell<bool>,
    /// Notified when a cleaner swap is applied.
    swap_done: Event,
    /// The next chunk of a reader catching up from disk.
    read_ahead: ReadAhead<S>,
    /// The order appends are admitted in.
    admission: Rc<AdmissionLine>,
}

/// Releases the writer role when dropped; if the write did not finish (the
/// task was cancelled mid-I/O), the log is poisoned, since the file past the
/// last commit is unknown.
struct RoleGuard<'a, S: Storage> {
    log: &'a PartitionLog<S>,
    role: Role,
    finished: bool,
}

#[derive(Clone, Copy)]
enum Role {
    Writer,
    Syncer,
}

impl<S: Storage> Drop for RoleGuard<'_, S> {
    fn drop(&mut self) {
        let mut state = self.log.state.borrow_mut();
        match self.role {
            Role::Writer => state.writer_active = false,
            Role::Syncer => state.syncer_active = false,
        }
        if !self.finished && state.poisoned.is_none() {
            state.poisoned = Some("an I/O was abandoned before it completed".to_owned());
        }
        drop(state);
        self.log.written_event.notify(usize::MAX);
        self.log.flushed_event.notify(usize::MAX);
    }
}

fn now_ms() -> i64 {
    TimestampMs::now().0
}

impl<S: Storage + Clone> PartitionLog<S> {
    /// Opens (creating if needed) the log of `partition` under `data_dir`,
    /// recovering it as the module documentation describes.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory or a file cannot be read or written,
    /// [`Error::CorruptCheckpoint`] if the checkpoint does not decode.
    ///
    /// # Panics
    /// If the recovered state breaks the log's invariants.
    pub async fn open(
        storage: S,
        data_dir: &Path,
        partition: TopicPartition,
        config: LogConfig,
        cache: Rc<RefCell<BatchCache>>,
        cache_key: PartitionKey,
    ) -> Result<Self> {
        let dir = data_dir.join(partition.dir_name());
        storage
            .create_dir_all(&dir)
            .await
            .map_err(|error| Error::io("creating partition directory", &dir, error))?;
        let checkpoint_path = dir.join(PARTITION_CHECKPOINT_FILE);
        let checkpoint = read_checkpoint(&storage, &checkpoint_path).await?;
        let (bases, snapshots) = list_partition_files(&storage, &dir).await?;
        let recovery_point = checkpoint
            .as_ref()
            .map_or(Offset::ZERO, |checkpoint| Offset(checkpoint.recovery_point));
        let checkpoint_start = checkpoint.as_ref().map_or(Offset::ZERO, |checkpoint| {
            Offset(checkpoint.log_start_offset)
        });

        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let segment = Segment::create(&storage, &dir, checkpoint_start).await?;
            segments.insert(checkpoint_start, segment);
        }
        // The segment holding the recovery point is the first one scanned.
        let scan_from_base = bases
            .iter()
            .rev()
            .find(|&&base| base <= recovery_point)
            .or(bases.first())
            .copied()
            .unwrap_or(checkpoint_start);

        let (mut producers, replay_from) =
            load_producer_snapshot(&storage, &dir, &snapshots, recovery_point)
                .await
                .unwrap_or((ProducerStateTable::default(), scan_from_base));
        let recovery = LogRecovery {
            storage: &storage,
            dir: &dir,
            partition: &partition,
            scan_from_base,
            recovery_point,
            replay_from,
            index_policy: config.index_policy(),
        };
        recovery
            .recover_segments(&bases, &mut segments, &mut producers)
            .await?;
        remove_snapshots_after(&storage, &dir, &snapshots, recovery_point).await?;
        let log_end = segments
            .values()
            .next_back()
            .map_or(checkpoint_start, |segment| segment.next_offset);
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_start = checkpoint_start.max(first_base).min(log_end);
        let epochs = recovered_epochs(checkpoint.as_ref(), &checkpoint_path, log_start, log_end)?;
        producers.truncate_start(log_start);
        let high_watermark = checkpoint
            .as_ref()
            .map_or(log_start, |checkpoint| Offset(checkpoint.high_watermark))
            .clamp(log_start, log_end);
        let state = LogState::recovered(
            config,
            segments,
            log_end,
            log_start,
            high_watermark,
            recovery_point,
            producers,
            epochs,
            cleaner::read_cleaner_checkpoint(&storage, &dir).await,
        );
        state.check_invariants();
        // Recovery may have cut the log below the checkpointed offsets and
        // clamped them; a later recovery must not resurrect the stale ones
        // over records appended since (a log start hiding flushed records, a
        // high watermark over records never committed).
        let stale_checkpoint =
            checkpoint.is_some_and(|checkpoint| state.offsets_differ_from(&checkpoint));
        let recovery_point = state.recovery_point;
        tracing::debug!(partition = %partition, log_start = log_start.0, log_end = log_end.0, "opened log");
        let log = Self {
            partition,
            dir,
            storage,
            cache,
            cache_key,
            state: RefCell::new(state),
            written_event: Event::new(),
            flushed_event: Event::new(),
            checkpointing: Cell::new(false),
            checkpoint_done: Event::new(),
            swapping: Cell::new(false),
            swap_done: Event::new(),
            read_ahead: ReadAhead::default(),
            admission: Rc::default(),
        };
        if stale_checkpoint {
            log.write_checkpoint(recovery_point).await?;
        }
        Ok(log)
    }
}

/// Where a read that missed the cache goes on disk.
struct DiskRead<S: Storage> {
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

/// What recovering a partition's segments needs to know.
struct LogRecovery<'a, S: Storage> {
    storage: &'a S,
    dir: &'a Path,
    partition: &'a TopicPartition,
    /// Segments below this base are trusted; from it on they are scanned.
    scan_from_base: Offset,
    recovery_point: Offset,
    /// Idempotent batches from this offset on rebuild the producer state.
    replay_from: Offset,
    index_policy: IndexPolicy,
}

impl<S: Storage> LogRecovery<'_, S> {
    /// Opens every segment, scanning those at or past the recovery point:
    /// their CRCs are verified, a torn or corrupt tail is cut, and every
    /// later segment is deleted (a valid log has nothing after a torn batch).
    async fn recover_segments(
        &self,
        bases: &[Offset],
        segments: &mut BTreeMap<Offset, Segment<S>>,
        producers: &mut ProducerStateTable,
    ) -> Result<()> {
        let mut cut = false;
        for (number, &base) in bases.iter().enumerate() {
            if cut {
                tracing::error!(partition = %self.partition, segment = base.0,
                    "deleting segment after a torn or corrupt batch");
                remove_segment_files(self.storage, self.dir, base).await?;
                continue;
            }
            let mut segment = Segment::open(self.storage, self.dir, base).await?;
            let is_last = number + 1 == bases.len();
            if let Some(&next_base) = bases.get(number + 1) {
                segment.next_offset = next_base;
            }
            if base < self.scan_from_base {
                segments.insert(base, segment);
                continue;
            }
            // Mid-segment, start at the recovery point's index entry.
            let (position, position_offset) =
                if base == self.scan_from_base && self.recovery_point > base {
                    segment.load_indexes(self.storage).await;
                    (
                        segment.start_position_for(self.recovery_point),
                        segment.index_entry_for(self.recovery_point),
                    )
                } else {
                    (0, base)
                };
            let replay_from = self.replay_from;
            let scan = segment
                .recover_from(position, position_offset, self.index_policy, |header| {
                    if header.is_idempotent() && header.base_offset >= replay_from {
                        producers.record(
                            &producer_batch(header),
                            header.base_offset,
                            header.last_offset(),
                        );
                    }
                })
                .await?;
            if let Some((at, reason)) = scan.truncated_at {
                tracing::warn!(partition = %self.partition, segment = base.0, position = at, %reason,
                    "truncated the log at the first invalid batch");
                cut = !is_last;
            }
            segment.handle().fdatasync().await?;
            if !is_last && !cut {
                // A closed segment: its indexes are complete now.
                let index_files = segment.closing_index_files(self.index_policy);
                write_files(self.storage, index_files).await?;
            }
            if segment.size() == 0 && base > self.scan_from_base && cut {
                remove_segment_files(self.storage, self.dir, base).await?;
            } else {
                segments.insert(base, segment);
            }
        }
        Ok(())
    }
}

/// Removes producer snapshots taken past the recovery point: they describe
/// data that may not have survived.
async fn remove_snapshots_after<S: Storage>(
    storage: &S,
    dir: &Path,
    snapshots: &[Offset],
    recovery_point: Offset,
) -> Result<()> {
    for &offset in snapshots.iter().filter(|&&offset| offset > recovery_point) {
        let path = dir.join(snapshot_file_name(offset));
        storage
            .remove_file(&path)
            .await
            .map_err(|error| Error::io("removing stale snapshot", &path, error))?;
    }
    Ok(())
}

/// The checkpointed leader epochs, cut to the recovered log.
fn recovered_epochs(
    checkpoint: Option<&PartitionCheckpoint>,
    path: &Path,
    log_start: Offset,
    log_end: Offset,
) -> Result<LeaderEpochCache> {
    let mut epochs = match checkpoint {
        Some(checkpoint) => {
            LeaderEpochCache::from_checkpoint_entries(path, &checkpoint.leader_epochs)?
        }
        None => LeaderEpochCache::default(),
    };
    epochs.truncate_from_end(log_end);
    epochs.truncate_from_start(log_start);
    Ok(epochs)
}

/// Reads and decodes the partition checkpoint, if there is one.
async fn read_checkpoint<S: Storage>(
    storage: &S,
    path: &Path,
) -> Result<Option<PartitionCheckpoint>> {
    match storage
        .read_file(path)
        .await
        .map_err(|error| Error::io("reading checkpoint", path, error))?
    {
        Some(bytes) => Ok(Some(PartitionCheckpoint::decode(path, &bytes)?)),
        None => Ok(None),
    }
}

/// The sorted base offsets of the segments and offsets of the producer
/// snapshots in a partition directory; an interrupted cleaner swap is
/// completed or discarded first, and leftovers of interrupted atomic writes
/// are removed.
async fn list_partition_files<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<(Vec<Offset>, Vec<Offset>)> {
    cleaner::finish_interrupted_swap(storage, dir).await?;
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|error| Error::io("listing partition directory", dir, error))?;
    let mut bases = Vec::new();
    let mut snapshots = Vec::new();
    for name in &names {
        if let Some(base) = parse_segment_file_name(name, "log") {
            bases.push(base);
        } else if let Some(offset) = parse_snapshot_file_name(name) {
            snapshots.push(offset);
        } else if Path::new(name)
            .extension()
            .is_some_and(|extension| extension == "tmp")
        {
            let path = dir.join(name);
            storage
                .remove_file(&path)
                .await
                .map_err(|error| Error::io("removing leftover", &path, error))?;
        }
    }
    bases.sort();
    snapshots.sort();
    Ok((bases, snapshots))
}

/// The newest producer snapshot at or below the recovery point (later ones
/// describe data that may not have survived) and the offset it was taken at.
/// `None` if there is none or it does not decode: recovery then replays
/// what it scans, and producers older than that are treated as new.
async fn load_producer_snapshot<S: Storage>(
    storage: &S,
    dir: &Path,
    snapshots: &[Offset],
    recovery_point: Offset,
) -> Option<(ProducerStateTable, Offset)> {
    let &offset = snapshots
        .iter()
        .rev()
        .find(|&&offset| offset <= recovery_point)?;
    let path = dir.join(snapshot_file_name(offset));
    let bytes = match storage.read_file(&path).await {
        Ok(bytes) => bytes?,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read producer snapshot");
            return None;
        }
    };
    match ProducerStateTable::decode_snapshot(&path, &bytes) {
        Ok((snapshot_offset, table)) => Some((table, snapshot_offset)),
        Err(error) => {
            tracing::warn!(%error, "ignoring producer snapshot");
            None
        }
    }
}

/// A compacted topic keeps each key's latest record, so every record needs a
/// key (Kafka refuses keyless records there with `INVALID_RECORD`).
/// Compressed batches are decompressed to check, as Kafka does.
fn producer_batch(header: &BatchHeader) -> ProducerBatch {
    ProducerBatch {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        first_sequence: header.base_sequence,
        last_sequence: header.last_sequence(),
        max_timestamp: header.max_timestamp,
    }
}

async fn remove_segment_files<S: Storage>(storage: &S, dir: &Path, base: Offset) -> Result<()> {
    let paths = ["log", "index", "timeindex"]
        .into_iter()
        .map(|extension| dir.join(segment_file_name(base, extension)))
        .collect();
    remove_files(storage, paths).await
}

impl<S: Storage> PartitionLog<S> {
    /// The partition this log stores.
    #[must_use]
    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The partition's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current offsets.
    #[must_use]
    pub fn offsets(&self) -> LogOffsets {
        self.state.borrow().offsets()
    }

    /// A copy of the log's configuration.
    #[must_use]
    pub fn config(&self) -> LogConfig {
        self.state.borrow().config.clone()
    }

    /// Replaces the configuration; takes effect from the next append, roll or
    /// retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.state.borrow_mut().config = config;
    }

    /// Total bytes of the log's segments.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.state
            .borrow()
            .segments
            .values()
            .map(Segment::size)
            .sum()
    }

    /// Number of segments.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    fn poisoned_error(&self, cause: &str) -> Error {
        Error::Poisoned {
            partition: self.partition.clone(),
            cause: cause.to_owned(),
        }
    }

    fn usable(&self, state: &LogState<S>) -> Result<()> {
        if let Some(cause) = &state.poisoned {
            return Err(self.poisoned_error(cause));
        }
        if state.closed {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// A place in this log's admission line: appends are admitted (given
    /// their offsets) in the order their tickets were taken, whatever order
    /// their tasks run in. See [`admission`].
    pub fn admission_ticket(&self) -> AdmissionTicket {
        self.admission.take_ticket()
    }

    /// Appends one record batch as a producer sent it, with a ticket taken
    /// when this is first polled; see [`PartitionLog::append_batches`].
    ///
    /// # Errors
    /// As [`PartitionLog::append_batches`].
    pub async fn append(&self, bytes: &[u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        self.append_batches(self.admission_ticket(), &[bytes], leader_epoch)
            .await
    }

    /// Appends the record batches (Kafka record batch v2) one request
    /// carries for this partition, as leader, all or none: validates every
    /// batch first, waits for `ticket`'s turn, checks idempotent-producer
    /// sequences, assigns consecutive offsets to the batches (rewriting
    /// each `baseOffset`, the leader epoch, and with `LogAppendTime` the
    /// timestamps and CRC), and returns once they are *written*. Applies
    /// `flush.messages` before returning. The answer spans every batch:
    /// the first one's base offset to the last one's last offset.
    ///
    /// An idempotent producer's batches come one per partition and request
    /// (Kafka accepts no more than one batch per partition at all), so
    /// several batches with a producer id are refused as a whole.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`], [`Error::InvalidRecord`], [`Error::InvalidRecords`],
    /// [`Error::MessageTooLarge`], [`Error::OutOfOrderSequence`],
    /// [`Error::ProducerFenced`], [`Error::Poisoned`],
    /// [`Error::ShuttingDown`], or the [`Error::Io`] that poisoned the log;
    /// nothing of the request is appended then, unless the error came from
    /// writing.
    pub async fn append_batches<B: AsRef<[u8]>>(
        &self,
        ticket: AdmissionTicket,
        batches: &[B],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let (max_message_bytes, record_checks) = {
            let state = self.state.borrow();
            (
                state.config.max_message_bytes,
                RecordChecks::new(&state.config, TimestampMs::now()),
            )
        };
        if batches.is_empty() {
            return Err(Error::InvalidBatch("no record batch".to_owned()));
        }
        let mut headers = Vec::with_capacity(batches.len());
        for bytes in batches {
            let bytes = bytes.as_ref();
            let header = batch::validate_incoming(bytes, max_message_bytes)?;
            record_checks.check(&header, bytes)?;
            headers.push(header);
        }
        if headers.len() > 1 && headers.iter().any(BatchHeader::is_idempotent) {
            return Err(Error::InvalidRecord(
                "an idempotent producer sends one record batch per partition and request"
                    .to_owned(),
            ));
        }
        let total_bytes = batches.iter().map(|bytes| bytes.as_ref().len()).sum();
        ticket.wait_for_turn().await;
        self.wait_for_queue_room(total_bytes).await?;
        let info = self.admit(batches, &headers, leader_epoch)?;
        // The next ticket's turn: this request's offsets are assigned.
        drop(ticket);
        self.wait_written(info.last_offset.next()).await?;
        if !info.duplicate {
            let records = headers
                .iter()
                .map(|header| i64::from(header.record_count))
                .sum();
            self.apply_flush_policy(records).await?;
        }
        Ok(info)
    }

    /// Checks incoming batches against the producer state and queues them
    /// with their offsets assigned, or finds the original of a duplicate
    /// (a single idempotent batch). Never awaits, so nothing is admitted
    /// between two batches of one request.
    fn admit<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
        headers: &[BatchHeader],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let mut state = self.state.borrow_mut();
        self.usable(&state)?;
        if let [header] = headers {
            if header.is_idempotent() {
                if let SequenceCheck::Duplicate(original) =
                    state.producers.check(&producer_batch(header))?
                {
                    return Ok(AppendInfo {
                        base_offset: original.first_offset,
                        last_offset: original.last_offset,
                        log_append_time: TimestampMs::NONE,
                        log_start_offset: state.log_start_offset,
                        duplicate: true,
                    });
                }
            }
        }
        if let Some(latest) = state.epochs.latest_epoch() {
            assert!(
                leader_epoch >= latest || leader_epoch == LeaderEpoch::UNKNOWN,
                "leader epoch went backwards"
            );
        }
        let log_append_time = match state.config.message_timestamp_type {
            TimestampType::LogAppendTime => TimestampMs::now(),
            TimestampType::CreateTime => TimestampMs::NONE,
        };
        // Every batch rewritten before the state changes: all or none.
        let base_offset = state.assigned_offset;
        let mut next_offset = base_offset;
        let mut admitted = Vec::with_capacity(batches.len());
        for bytes in batches {
            let mut owned = BytesMut::from(bytes.as_ref());
            batch::set_base_offset(&mut owned, next_offset);
            batch::set_partition_leader_epoch(&mut owned, leader_epoch);
            if log_append_time != TimestampMs::NONE {
                batch::set_log_append_time(&mut owned, log_append_time);
            }
            let header = BatchHeader::parse(&owned)?;
            next_offset = header.last_offset().next();
            admitted.push(PendingBatch {
                header,
                bytes: owned.freeze(),
            });
        }
        let last_offset = admitted
            .last()
            .expect("a request has at least one batch")
            .header
            .last_offset();
        if leader_epoch != LeaderEpoch::UNKNOWN {
            state.epochs.assign(leader_epoch, base_offset);
        }
        for pending in admitted {
            if pending.header.is_idempotent() {
                state.producers.record(
                    &producer_batch(&pending.header),
                    pending.header.base_offset,
                    pending.header.last_offset(),
                );
            }
            state.pending_bytes += pending.bytes.len();
            state.pending.push_back(pending);
        }
        state.assigned_offset = next_offset;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time,
            log_start_offset: state.log_start_offset,
            duplicate: false,
        })
    }

    async fn wait_for_queue_room(&self, bytes: usize) -> Result<()> {
        self.wait_for_writer(|state| {
            self.usable(state)?;
            Ok(state.pending.is_empty() || state.pending_bytes + bytes <= PENDING_BYTES_MAX)
        })
        .await
    }

    /// Waits until every offset below `target` is written.
    async fn wait_written(&self, target: Offset) -> Result<()> {
        self.wait_for_writer(|state| {
            if let Some(cause) = &state.poisoned {
                return Err(self.poisoned_error(cause));
            }
            Ok(state.written_offset >= target)
        })
        .await
    }

    /// Waits until `satisfied` holds, becoming the writer whenever no task is
    /// writing and the condition still does not hold.
    async fn wait_for_writer(
        &self,
        satisfied: impl Fn(&LogState<S>) -> Result<bool>,
    ) -> Result<()> {
        loop {
            let listener = self.written_event.listen();
            let writer_active = {
                let state = self.state.borrow();
                if satisfied(&state)? {
                    return Ok(());
                }
                state.writer_active
            };
            if writer_active {
                listener.await;
            } else {
                self.drive_writer().await?;
            }
        }
    }

    /// Writes the next run of queued batches (rolling first if needed), as
    /// the log's single writer.
    async fn drive_writer(&self) -> Result<()> {
        self.state.borrow_mut().writer_active = true;
        let mut guard = RoleGuard {
            log: self,
            role: Role::Writer,
            finished: false,
        };
        let result = self.write_queued().await;
        if let Err(error) = &result {
            self.poison(error);
        }
        guard.finished = true;
        drop(guard);
        result
    }

    fn poison(&self, error: &Error) {
        let mut state = self.state.borrow_mut();
        if state.poisoned.is_none() {
            tracing::error!(partition = %self.partition, %error, "poisoning partition after I/O failure");
            state.poisoned = Some(error.to_string());
        }
    }

    /// Decides the writer's next step: roll the active segment, or take the
    /// longest run of queued batches that fits it and one write.
    fn next_write(&self) -> NextWrite<S> {
        let mut state = self.state.borrow_mut();
        let Some(first) = state.pending.front() else {
            return NextWrite::Idle;
        };
        let active = state.active();
        let segment_bytes = state.config.segment_bytes;
        // The cleaner never touches the active segment, so a compacted log
        // also rolls once `max.compaction.lag.ms` passed, as Kafka does.
        let roll_after_ms = if state.config.cleanup_policy.compact {
            state
                .config
                .segment_ms
                .min(state.config.max_compaction_lag_ms)
        } else {
            state.config.segment_ms
        };
        let too_old = active
            .first_append_ms
            .is_some_and(|first_ms| now_ms().saturating_sub(first_ms) >= roll_after_ms);
        let overflows = |header: &BatchHeader| {
            header.last_offset().0 - active.base_offset.0 > i64::from(i32::MAX)
        };
        if active.size() > 0
            && (active.size() + first.bytes.len() as u64 > segment_bytes
                || too_old
                || overflows(&first.header)
                || active.indexes_full(state.config.index_policy()))
        {
            return NextWrite::Roll;
        }
        let room = segment_bytes.saturating_sub(active.size());
        let mut take = 0;
        let mut run_bytes = 0u64;
        for next in &state.pending {
            let length = next.bytes.len() as u64;
            if take > 0
                && (run_bytes + length > room
                    || run_bytes + length > WRITE_BYTES_MAX as u64
                    || overflows(&next.header))
            {
                break;
            }
            take += 1;
            run_bytes += length;
        }
        let run: Vec<(BatchHeader, Bytes)> = state
            .pending
            .drain(..take)
            .map(|pending| (pending.header, pending.bytes))
            .collect();
        state.pending_bytes -= run_bytes as usize;
        let (write, commit) = state.active().prepare_append(&self.storage, &run);
        NextWrite::Append(run, write, commit)
    }

    async fn write_queued(&self) -> Result<()> {
        loop {
            let (run, write, commit) = match self.next_write() {
                NextWrite::Idle => return Ok(()),
                NextWrite::Roll => {
                    self.roll().await?;
                    continue;
                }
                NextWrite::Append(run, write, commit) => (run, write, commit),
            };
            write.write(&self.storage).await?;
            let mut state = self.state.borrow_mut();
            let policy = state.config.index_policy();
            state
                .active_mut()
                .commit_append(&run, commit, policy, now_ms());
            let end = run.last().map_or(state.written_offset, |(header, _)| {
                header.last_offset().next()
            });
            assert!(end > state.written_offset, "written offset must advance");
            state.written_offset = end;
            let mut cache = self.cache.borrow_mut();
            for (header, bytes) in run {
                cache.insert(
                    self.cache_key,
                    header.base_offset,
                    header.last_offset().next(),
                    bytes,
                );
            }
            drop(cache);
            state.check_invariants();
            drop(state);
            self.written_event.notify(usize::MAX);
            // One write per turn: the caller re-checks its own condition and
            // hands the role on, so no appender drains everyone else's queue.
            return Ok(());
        }
    }

    /// Closes the active segment and starts a new one at the log end: the
    /// old segment is flushed, sealed (padding cut) and its indexes written,
    /// then the recovery point moves to the new segment. Called by the writer.
    async fn roll(&self) -> Result<()> {
        let (handle, size, next_offset) = {
            let state = self.state.borrow();
            let active = state.active();
            (active.handle(), active.size(), active.next_offset)
        };
        handle.truncate(size).await?;
        handle.fdatasync().await?;
        let index_files = {
            let mut state = self.state.borrow_mut();
            let policy = state.config.index_policy();
            state.active_mut().closing_index_files(policy)
        };
        write_files(&self.storage, index_files).await?;
        let segment = Segment::create(&self.storage, &self.dir, next_offset).await?;
        {
            let mut state = self.state.borrow_mut();
            assert_eq!(
                next_offset, state.written_offset,
                "roll with unwritten data"
            );
            state.segments.insert(next_offset, segment);
            state.flushed_offset = state.flushed_offset.max(next_offset);
        }
        self.write_checkpoint(next_offset).await?;
        self.flushed_event.notify(usize::MAX);
        tracing::debug!(partition = %self.partition, base = next_offset.0, "rolled segment");
        Ok(())
    }

    /// Writes a producer snapshot and the partition checkpoint with
    /// `recovery_point`, which must be flushed with indexes on disk below it.
    /// Checkpoints of one log are written one at a time, in call order, so
    /// an older one never lands over a newer one nor removes its snapshot.
    async fn write_checkpoint(&self, recovery_point: Offset) -> Result<()> {
        loop {
            let listener = self.checkpoint_done.listen();
            if !self.checkpointing.replace(true) {
                break;
            }
            listener.await;
        }
        let result = self.write_checkpoint_exclusively(recovery_point).await;
        self.checkpointing.set(false);
        self.checkpoint_done.notify(1);
        result
    }

    async fn write_checkpoint_exclusively(&self, recovery_point: Offset) -> Result<()> {
        let (snapshot, checkpoint) = {
            let mut state = self.state.borrow_mut();
            state.recovery_point = recovery_point;
            // The snapshot describes the log below the recovery point only:
            // the table already holds batches admitted (even unwritten) past
            // it, and recovery replays those from the log.
            let mut covered = state.producers.clone();
            covered.truncate_to(recovery_point);
            (
                covered.encode_snapshot(recovery_point),
                state.checkpoint().encode(),
            )
        };
        let files = vec![
            (self.dir.join(snapshot_file_name(recovery_point)), snapshot),
            (self.dir.join(PARTITION_CHECKPOINT_FILE), checkpoint),
        ];
        write_files(&self.storage, files).await?;
        // Older snapshots are superseded.
        let names = self
            .storage
            .list_dir(&self.dir)
            .await
            .map_err(|error| Error::io("listing partition directory", &self.dir, error))?;
        let superseded = names
            .iter()
            .filter_map(|name| parse_snapshot_file_name(name))
            .filter(|&offset| offset < recovery_point)
            .map(|offset| self.dir.join(snapshot_file_name(offset)))
            .collect();
        remove_files(&self.storage, superseded).await
    }

    /// Moves the recovery point up to the flushed offset, so a restart after
    /// a crash scans only what was written since. Writes the active
    /// segment's indexes first (recovery starts at the recovery point's
    /// index entry; entries past it are dropped by the scan), then the
    /// producer snapshot and checkpoint. Returns whether it moved.
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be written; the old recovery point then
    /// stays in force.
    ///
    /// # Panics
    /// If the flushed offset is below the active segment, which a roll (it
    /// flushes the segment it closes) rules out.
    pub async fn checkpoint_recovery_point(&self) -> Result<bool> {
        let (flushed, index_files) = {
            let state = self.state.borrow();
            if state.poisoned.is_some()
                || state.closed
                || state.flushed_offset <= state.recovery_point
            {
                return Ok(false);
            }
            assert!(
                state.flushed_offset >= state.active().base_offset,
                "a roll flushes the segment it closes"
            );
            (state.flushed_offset, state.active().index_files())
        };
        write_files(&self.storage, index_files).await?;
        self.write_checkpoint(flushed).await?;
        Ok(true)
    }

    async fn apply_flush_policy(&self, records: i64) -> Result<()> {
        let due = {
            let mut state = self.state.borrow_mut();
            state.unflushed_records = state.unflushed_records.saturating_add(records);
            state.oldest_unflushed_ms.get_or_insert_with(now_ms);
            state.unflushed_records >= state.config.flush_messages
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes if the oldest unflushed append is older than `flush.ms`; the
    /// shard calls this periodically.
    ///
    /// # Errors
    /// As [`PartitionLog::flush`].
    pub async fn flush_if_due(&self) -> Result<()> {
        let due = {
            let state = self.state.borrow();
            state
                .oldest_unflushed_ms
                .is_some_and(|oldest| now_ms().saturating_sub(oldest) >= state.config.flush_ms)
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes everything appended before the call durable and returns the
    /// flushed offset. Concurrent callers share one fdatasync.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the [`Error::Io`] that poisoned the log.
    pub async fn flush(&self) -> Result<Offset> {
        let target = self.state.borrow().assigned_offset;
        self.flush_to(target).await
    }

    /// Makes every offset below `target` durable (see [`PartitionLog::flush`]).
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the [`Error::Io`] that poisoned the log.
    pub async fn flush_to(&self, target: Offset) -> Result<Offset> {
        self.wait_written(target).await?;
        loop {
            let listener = self.flushed_event.listen();
            let sync = {
                let mut state = self.state.borrow_mut();
                if let Some(cause) = &state.poisoned {
                    return Err(self.poisoned_error(cause));
                }
                if state.flushed_offset >= target {
                    return Ok(state.flushed_offset);
                }
                if state.syncer_active {
                    None
                } else {
                    state.syncer_active = true;
                    Some((state.active().handle(), state.written_offset))
                }
            };
            let Some((handle, covered)) = sync else {
                listener.await;
                continue;
            };
            let mut guard = RoleGuard {
                log: self,
                role: Role::Syncer,
                finished: false,
            };
            let result = handle.fdatasync().await;
            guard.finished = true;
            match result {
                Ok(()) => {
                    let mut state = self.state.borrow_mut();
                    // A roll in between may have moved it further already.
                    state.flushed_offset = state.flushed_offset.max(covered);
                    if state.flushed_offset >= state.written_offset {
                        state.unflushed_records = 0;
                        state.oldest_unflushed_ms = None;
                    }
                }
                Err(error) => {
                    self.poison(&error);
                    drop(guard);
                    return Err(error);
                }
            }
            drop(guard);
        }
    }
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
    async fn read_unverified(
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
    fn extend_verified(&self, base: Offset, position: u64) {
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

    /// Waits until no append is queued or being written and takes the writer
    /// role, so truncation and deletion see a still log.
    async fn exclusive(&self) -> Result<RoleGuard<'_, S>> {
        self.take_writer_role(|state| self.usable(state)).await
    }

    /// [`PartitionLog::exclusive`], failing with `check` instead of
    /// [`PartitionLog::usable`].
    async fn take_writer_role(
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

    async fn truncate_locked(&self, offset: Offset) -> Result<Offset> {
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
    async fn delete_segments_below_start(&self) -> Result<usize> {
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

    /// Stops taking appends, writes what is queued, flushes, seals the active
    /// segment's file, writes its indexes, a producer snapshot and a
    /// checkpoint whose recovery point is the log end, so the next open scans
    /// nothing.
    ///
    /// # Errors
    /// [`Error::Poisoned`] if the log was poisoned (nothing is checkpointed
    /// then: recovery will scan), or [`Error::Io`].
    pub async fn close(&self) -> Result<()> {
        // Appends are refused from here on. Were they still admitted, a
        // steady stream of them (every task of every shard appending while
        // the engine stops) would keep the queue from ever draining, and the
        // close would wait for it forever.
        self.state.borrow_mut().closed = true;
        self.read_ahead.forget();
        let end = self.flush().await?;
        let guard = self
            .take_writer_role(|state| match &state.poisoned {
                Some(cause) => Err(self.poisoned_error(cause)),
                None => Ok(()),
            })
            .await?;
        let (handle, size) = {
            let state = self.state.borrow();
            (state.active().handle(), state.active().size())
        };
        let result = async {
            handle.truncate(size).await?;
            handle.fdatasync().await?;
            let index_files = {
                let mut state = self.state.borrow_mut();
                let policy = state.config.index_policy();
                state.active_mut().closing_index_files(policy)
            };
            write_files(&self.storage, index_files).await?;
            self.write_checkpoint(end).await
        }
        .await;
        let mut guard = guard;
        guard.finished = result.is_ok();
        drop(guard);
        self.cache.borrow_mut().remove_partition(self.cache_key);
        result
    }

    /// Deletes the partition's directory (DeleteTopics). The log must not be
    /// used afterwards.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn delete(&self) -> Result<()> {
        let guard = self.exclusive().await;
        self.state.borrow_mut().closed = true;
        drop(guard);
        self.read_ahead.forget();
        self.cache.borrow_mut().remove_partition(self.cache_key);
        self.storage
            .remove_dir_all(&self.dir)
            .await
            .map_err(|error| Error::io("deleting partition", &self.dir, error))
    }
}

/// Within a batch whose max timestamp is `>= target`, the first record at or
/// after `from` with timestamp `>= target`; the batch's base offset when its
/// records cannot be read without decompression.
fn first_record_at_or_after(
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
