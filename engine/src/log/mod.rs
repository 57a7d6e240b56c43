//! A partition's log: its segments, offsets, durability points and the
//! state replication and idempotence need.
//!
//! # Durability contract
//! - [`PartitionLog::append`] returns once the batch is *written*: its DMA
//!   completed and readers can see it. It survives a process crash (`kill
//!   -9`) but not necessarily a power loss.
//! - [`PartitionLog::append_as_follower`] appends a leader's batches as they
//!   are, with the same *written* point.
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
//! their [`admission::AdmissionTicket`]s were taken, never in the order their tasks
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
//! from the recovery point's index entry (or the producer snapshot's, if
//! that is older); later segments are scanned whole.
//! Scanning verifies every CRC and cuts the log at the first torn or corrupt
//! batch. Startup cost therefore depends on the data written since the last
//! checkpoint, not on the log's size.
//!
//! # Layout
//! One concept per file: [`admission`] (the order appends are admitted in),
//! `recovery` (open), `append` (the writer and group commit), `read`,
//! `truncate`, `retention` (and DeleteRecords), [`cleaner`] (compaction),
//! [`read_ahead`], `index_load` and `record_checks`; this file holds the
//! log's state and its invariants.

pub mod admission;
mod append;
pub mod cleaner;
#[cfg(test)]
mod follower_tests;
mod index_load;
mod read;
pub mod read_ahead;
mod record_checks;
mod recovery;
mod retention;
mod truncate;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;

use crate::batch::BatchHeader;
use crate::cache::{BatchCache, PartitionKey};
use crate::checkpoint::PartitionCheckpoint;
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{ProducerBatch, ProducerStateTable};
use crate::segment::{remove_files, segment_file_name, AppendCommit, PendingWrite, Segment};
use crate::storage::Storage;
use crate::types::{Offset, TimestampMs, TopicPartition};
use admission::AdmissionLine;
use read_ahead::ReadAhead;

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
    /// The producer state of every admitted batch: what appends are
    /// checked against.
    producers: ProducerStateTable,
    /// The producer state of exactly the written batches (below
    /// `written_offset`): what a snapshot at the written offset holds.
    /// `producers` runs ahead of it by the batches still queued, and cannot
    /// be cut back to an offset exactly (it keeps five batches of one
    /// epoch per producer), so snapshots come from this one.
    written_producers: ProducerStateTable,
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
            written_producers: producers.clone(),
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
    /// Record timestamps, rolls, `flush.ms`, retention and the cleaner's
    /// horizons read the time here.
    clock: Rc<dyn Clock>,
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

/// The right to write the log's checkpoint file
/// ([`PartitionLog::checkpoint_turn`]), given back when dropped, also by a
/// task cancelled mid-write.
struct CheckpointTurn<'a, S: Storage> {
    log: &'a PartitionLog<S>,
}

impl<S: Storage> Drop for CheckpointTurn<'_, S> {
    fn drop(&mut self) {
        self.log.checkpointing.set(false);
        self.log.checkpoint_done.notify(1);
    }
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

impl<S: Storage> PartitionLog<S> {
    /// The log's clock's time, in milliseconds.
    fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

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
        let result = async {
            self.seal_active().await?;
            self.write_checkpoint(end).await
        }
        .await;
        let mut guard = guard;
        guard.finished = result.is_ok();
        drop(guard);
        self.cache.borrow_mut().remove_partition(self.cache_key);
        result
    }

    /// The topic id recorded for this partition ([`Self::set_topic_id`]),
    /// if there is one.
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::CorruptLog`] for a file that is not Kafka's
    /// `partition.metadata`.
    pub async fn topic_id(&self) -> Result<Option<String>> {
        let path = self.dir.join(PARTITION_METADATA_FILE);
        let Some(bytes) = self
            .storage
            .read_file(&path)
            .await
            .map_err(|error| Error::io("reading partition metadata", &path, error))?
        else {
            return Ok(None);
        };
        parse_partition_metadata(&bytes)
            .map(Some)
            .ok_or_else(|| Error::CorruptLog {
                path: path.clone(),
                position: 0,
                reason: "not a partition.metadata file (version: 0, topic_id: ...)".to_owned(),
            })
    }

    /// Records, durably, which topic this partition belongs to, as Kafka
    /// does in `partition.metadata` (`version: 0`, `topic_id: <id>`): a
    /// directory then tells a topic from another of the same name, one
    /// deleted while this broker was down, say.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn set_topic_id(&self, topic_id: &str) -> Result<()> {
        let path = self.dir.join(PARTITION_METADATA_FILE);
        let content = format!("version: 0\ntopic_id: {topic_id}\n").into_bytes();
        self.storage
            .write_file_atomic(&path, content)
            .await
            .map_err(|error| Error::io("writing partition metadata", &path, error))
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
            .map_err(|error| Error::io("deleting partition", &self.dir, error))?;
        // Else a crash could bring the deleted partition back.
        let data_dir = self.dir.parent().unwrap_or(&self.dir);
        self.storage
            .sync_dir(data_dir)
            .await
            .map_err(|error| Error::io("syncing data directory", data_dir, error))
    }
}

/// Kafka's name for the file recording a partition's topic id.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// The topic id of a `partition.metadata` file's content: `version: 0`
/// and `topic_id: <id>` lines.
fn parse_partition_metadata(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut version = None;
    let mut topic_id = None;
    for line in text.lines() {
        match line.split_once(':') {
            Some(("version", value)) => version = Some(value.trim()),
            Some(("topic_id", value)) => topic_id = Some(value.trim()),
            _ => {}
        }
    }
    (version == Some("0"))
        .then_some(topic_id)
        .flatten()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Records a batch that is already the log's (replayed by recovery, or
/// copied from the leader by a follower) in the producer state without a
/// sequence check, as Kafka's replication-origin appends and recovery do:
/// the log is the truth, so a follower's table ends as its leader's and a
/// reopened log's as before the crash. Control batches (transaction
/// markers) carry no sequence and are left out, as Kafka leaves them out of
/// the sequence cache; the transaction state they end is not kept yet.
fn replay_producer_batch(producers: &mut ProducerStateTable, header: &BatchHeader) {
    if header.is_idempotent() && !header.is_control() {
        producers.record(
            &producer_batch(header),
            header.base_offset,
            header.last_offset(),
        );
    }
}

/// Records in the epoch cache that the batch's leader epoch starts at its
/// base offset when that epoch is newer than every known one, as Kafka's
/// follower append and segment recovery do. Batches written before leader
/// epochs existed ([`crate::types::LeaderEpoch::UNKNOWN`]) say nothing.
fn replay_leader_epoch(epochs: &mut LeaderEpochCache, header: &BatchHeader) {
    let epoch = header.partition_leader_epoch;
    if epoch.0 >= 0 && epochs.latest_epoch().is_none_or(|latest| epoch > latest) {
        epochs.assign(epoch, header.base_offset);
    }
}

fn producer_batch(header: &BatchHeader) -> ProducerBatch {
    ProducerBatch {
        producer_id: header.producer_id,
        producer_epoch: header.producer_epoch,
        first_sequence: header.base_sequence,
        last_sequence: header.last_sequence(),
        max_timestamp: header.max_timestamp,
    }
}

/// Removes a segment's files and syncs the directory: a segment that came
/// back after a crash would resurrect records the log had truncated.
async fn remove_segment_files<S: Storage>(storage: &S, dir: &Path, base: Offset) -> Result<()> {
    let paths = ["log", "index", "timeindex"]
        .into_iter()
        .map(|extension| dir.join(segment_file_name(base, extension)))
        .collect();
    remove_files(storage, paths).await?;
    storage
        .sync_dir(dir)
        .await
        .map_err(|error| Error::io("syncing partition directory", dir, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_metadata_is_read_as_kafka_writes_it() {
        assert_eq!(
            parse_partition_metadata(b"version: 0\ntopic_id: q1yTUn8uQkC2jE1bNj9Atg\n"),
            Some("q1yTUn8uQkC2jE1bNj9Atg".to_owned())
        );
        // Another version, no id, or an empty one: not a file we can read.
        assert_eq!(
            parse_partition_metadata(b"version: 1\ntopic_id: q1yTUn8uQkC2jE1bNj9Atg\n"),
            None
        );
        assert_eq!(parse_partition_metadata(b"version: 0\n"), None);
        assert_eq!(parse_partition_metadata(b"version: 0\ntopic_id: \n"), None);
        assert_eq!(parse_partition_metadata(&[0xff, 0xfe]), None);
    }
}
