//! Opening a partition's log: segments wholly before the checkpointed
//! recovery point are trusted without reading; the segment holding it is
//! scanned from its index entry; later ones are scanned whole, every CRC
//! verified, the log cut at the first torn or corrupt batch. Producer state
//! and leader epochs are rebuilt from the last snapshot and checkpoint and
//! the batches scanned after them, whether a leader or a follower wrote
//! them (their bytes have one form).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use event_listener::Event;

use crate::cache::{BatchCache, PartitionKey};
use crate::checkpoint::{PartitionCheckpoint, PARTITION_CHECKPOINT_FILE};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::index::IndexPolicy;
use crate::leader_epoch::LeaderEpochCache;
use crate::producer_state::{parse_snapshot_file_name, snapshot_file_name, ProducerStateTable};
use crate::segment::{parse_segment_file_name, remove_files, write_files, Segment};
use crate::storage::Storage;
use crate::types::{Offset, TopicPartition};

use super::read_ahead::ReadAhead;
use super::{
    cleaner, remove_segment_files, replay_leader_epoch, replay_producer_batch, LogState,
    PartitionLog,
};

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
        clock: Rc<dyn Clock>,
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
        // The directory's name must survive a crash as its files do.
        storage
            .sync_dir(data_dir)
            .await
            .map_err(|error| Error::io("syncing data directory", data_dir, error))?;
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
        let snapshot = load_producer_snapshot(&storage, &dir, &snapshots, recovery_point).await;
        let (scan_point, scan_from_base) =
            scan_start(&bases, recovery_point, snapshot.as_ref(), checkpoint_start);
        let (mut producers, replay_from) =
            snapshot.unwrap_or((ProducerStateTable::default(), scan_from_base));
        let recovery = LogRecovery {
            storage: &storage,
            dir: &dir,
            partition: &partition,
            scan_from_base,
            scan_point,
            replay_from,
            index_policy: config.index_policy(),
        };
        let mut epochs = checkpointed_epochs(checkpoint.as_ref(), &checkpoint_path)?;
        recovery
            .recover_segments(&bases, &mut segments, &mut producers, &mut epochs)
            .await?;
        remove_snapshots_after(&storage, &dir, &snapshots, recovery_point).await?;
        if recovery
            .finish_full_truncation(&mut segments, &snapshots, checkpoint_start, recovery_point)
            .await?
        {
            (producers, epochs) = Default::default();
        }
        let log_end = segments
            .values()
            .next_back()
            .map_or(checkpoint_start, |segment| segment.next_offset);
        let first_base = *segments.keys().next().expect("at least one segment");
        let log_start = checkpoint_start.max(first_base).min(log_end);
        epochs.truncate_from_end(log_end);
        epochs.truncate_from_start(log_start);
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
            clock,
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

/// What recovering a partition's segments needs to know.
pub(super) struct LogRecovery<'a, S: Storage> {
    storage: &'a S,
    dir: &'a Path,
    partition: &'a TopicPartition,
    /// Segments below this base are trusted; from it on they are scanned.
    scan_from_base: Offset,
    /// Where the scan starts within the segment at `scan_from_base`: the
    /// recovery point, or the producer snapshot's offset if older.
    scan_point: Offset,
    /// Idempotent batches from this offset on rebuild the producer state.
    replay_from: Offset,
    index_policy: IndexPolicy,
}

impl<S: Storage> LogRecovery<'_, S> {
    /// Finishes a full truncation a crash cut short (see `truncate`): when
    /// every record recovered is below the checkpointed log start, and the log
    /// ends below its recovery point, which only flushed records pass (a power
    /// loss never takes them), the truncation had committed. Nothing left is
    /// the partition's any more: every segment and producer snapshot goes and
    /// an empty segment starts at the log start, as Kafka's log loader does.
    /// Returns whether it did; the caller then clears the producer state and
    /// leader epochs it recovered.
    async fn finish_full_truncation(
        &self,
        segments: &mut BTreeMap<Offset, Segment<S>>,
        snapshots: &[Offset],
        checkpoint_start: Offset,
        recovery_point: Offset,
    ) -> Result<bool> {
        let (storage, dir) = (self.storage, self.dir);
        let recovered_end = segments
            .values()
            .next_back()
            .map_or(checkpoint_start, |segment| segment.next_offset);
        if recovered_end >= checkpoint_start || recovered_end >= recovery_point {
            return Ok(false);
        }
        tracing::warn!(partition = %self.partition, log_end = recovered_end.0,
            log_start = checkpoint_start.0,
            "finishing a full truncation: starting the log afresh at its log start");
        for base in std::mem::take(segments).into_keys() {
            remove_segment_files(storage, dir, base).await?;
        }
        let stale = snapshots
            .iter()
            .map(|&offset| dir.join(snapshot_file_name(offset)))
            .collect();
        remove_files(storage, stale).await?;
        let segment = Segment::create(storage, dir, checkpoint_start).await?;
        segments.insert(checkpoint_start, segment);
        Ok(true)
    }

    /// Opens every segment, scanning those at or past the recovery point:
    /// their CRCs are verified, a torn or corrupt tail is cut, and every
    /// later segment is deleted (a valid log has nothing after a torn batch).
    /// The scanned batches rebuild the producer state (from the snapshot's
    /// offset) and the leader epochs the checkpoint did not know yet, as
    /// Kafka's segment recovery does: epochs are checkpointed only with the
    /// recovery point, so those of batches written since come from the
    /// batches themselves.
    pub(super) async fn recover_segments(
        &self,
        bases: &[Offset],
        segments: &mut BTreeMap<Offset, Segment<S>>,
        producers: &mut ProducerStateTable,
        epochs: &mut LeaderEpochCache,
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
                if base == self.scan_from_base && self.scan_point > base {
                    segment.load_indexes(self.storage).await;
                    (
                        segment.start_position_for(self.scan_point),
                        segment.index_entry_for(self.scan_point),
                    )
                } else {
                    (0, base)
                };
            let replay_from = self.replay_from;
            let scan = segment
                .recover_from(position, position_offset, self.index_policy, |header| {
                    if header.base_offset >= replay_from {
                        replay_producer_batch(producers, header);
                    }
                    replay_leader_epoch(epochs, header);
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

/// Where recovery starts scanning, and the base of the segment holding it:
/// the recovery point, or the producer snapshot's offset if that is older
/// (a checkpoint whose recovery point was not the written offset keeps the
/// snapshot before it), so every batch after the snapshot is replayed.
fn scan_start(
    bases: &[Offset],
    recovery_point: Offset,
    snapshot: Option<&(ProducerStateTable, Offset)>,
    checkpoint_start: Offset,
) -> (Offset, Offset) {
    let scan_point = snapshot.map_or(recovery_point, |(_, offset)| recovery_point.min(*offset));
    let scan_from_base = bases
        .iter()
        .rev()
        .find(|&&base| base <= scan_point)
        .or(bases.first())
        .copied()
        .unwrap_or(checkpoint_start);
    (scan_point, scan_from_base)
}

/// Removes producer snapshots taken past the recovery point: they describe
/// data that may not have survived.
pub(super) async fn remove_snapshots_after<S: Storage>(
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

/// The checkpointed leader epochs, which recovery completes from the
/// batches it scans and then cuts to the recovered log.
pub(super) fn checkpointed_epochs(
    checkpoint: Option<&PartitionCheckpoint>,
    path: &Path,
) -> Result<LeaderEpochCache> {
    match checkpoint {
        Some(checkpoint) => {
            LeaderEpochCache::from_checkpoint_entries(path, &checkpoint.leader_epochs)
        }
        None => Ok(LeaderEpochCache::default()),
    }
}

/// Reads and decodes the partition checkpoint, if there is one.
pub(super) async fn read_checkpoint<S: Storage>(
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
pub(super) async fn list_partition_files<S: Storage>(
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
pub(super) async fn load_producer_snapshot<S: Storage>(
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
