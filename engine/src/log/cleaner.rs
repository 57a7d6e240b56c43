//! Log compaction (`cleanup.policy=compact`): the log cleaner keeps the
//! latest record of each key and drops older ones, as Kafka's `LogCleaner`.
//!
//! # A cleaning pass
//! 1. **Plan.** The cleanable range runs from the first segment holding data
//!    at or past the log start up to (excluded) the first segment that is
//!    active, not wholly below the high watermark, or holds records younger
//!    than `min.compaction.lag.ms`. The *dirty* part starts at the cleaner
//!    checkpoint (the first offset no pass has mapped yet).
//! 2. **Offset map.** The dirty part's records are read in offset order and
//!    each key's 128-bit hash mapped to its latest offset, in a map bounded by
//!    the shard's share of `log.cleaner.dedupe.buffer.size`. When the map is
//!    full, the pass maps only up to the last whole batch that fit: the rest
//!    stays dirty for the next pass, and the cleaner checkpoint moves only that
//!    far.
//! 3. **Copy.** Every segment from the start of the range to the end of the
//!    mapped part is rewritten, in groups of consecutive segments whose sizes
//!    add up to at most `segment.bytes` (so small cleaned segments merge, as
//!    Kafka's `groupSegmentsBySize` does). A record survives if it is past the
//!    mapped part or is its key's latest; a tombstone also goes once its
//!    batch's delete horizon (set to now + `delete.retention.ms` by the first
//!    pass that maps and keeps it, KIP-534) has passed, which is safe because
//!    that pass removed every older record of its key; a record without key
//!    in the mapped part goes. Batches never straddle the mapped part's end.
//!    Compressed batches are decompressed, filtered and compressed again with
//!    the same codec; every header field but the record count, length, CRC
//!    and (for the horizon) base timestamp is kept, so offsets never change and
//!    producer sequences still check. A batch left empty is dropped, unless it
//!    is its producer's last, which keeps the producer's state derivable from
//!    the log (as Kafka does).
//! 4. **Swap.** See the durability contract below. Old segment files are
//!    renamed over or unlinked while readers may still hold them open; an
//!    open descriptor keeps the old data readable until the reader drops it
//!    (the same deferred delete retention relies on), so a fetch served from
//!    a replaced segment sends the old, valid bytes.
//!
//! # Durability contract
//! Cleaned segments are written as `<base>.log.cleaned` (and `.index.cleaned`,
//! `.timeindex.cleaned`) and fdatasync'd. The swap is then committed by
//! writing the swap manifest [`SWAP_FILE`] atomically: it lists, per cleaned
//! segment, the old segments it replaces. After the commit, the cleaned files
//! are renamed over their final names and the replaced segments removed;
//! then the manifest is removed. Recovery ([`finish_interrupted_swap`]) redoes
//! the renames and removals of a manifest it finds (each step is idempotent)
//! and deletes `.cleaned` files without a manifest. A crash at any point thus
//! leaves either the old segments or the cleaned ones, never both and never
//! neither. A failure after the commit poisons the log, so the swap is
//! completed by the recovery of the next open rather than left half done.
//! The cleaner checkpoint ([`CLEANER_CHECKPOINT_FILE`]) is written after the
//! swap; if it is lost the next pass re-maps data already clean, which is
//! only wasted work.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::index_load::IndexesNotLoaded;
use super::{remove_segment_files, PartitionLog};
use crate::batch::{self, BatchHeader, Record, BATCH_HEADER_BYTES};
use crate::checkpoint::{decode_frame, encode_frame, from_rkyv_bytes, to_rkyv_bytes};
use crate::error::{Corruption, Error, Result};
use crate::index::IndexPolicy;
use crate::segment::{segment_file_name, write_files, LocatedBatch, Segment, SegmentHandle};
use crate::storage::Storage;
use crate::types::{Offset, ProducerId, TimestampMs};

/// The swap manifest: present only while a committed swap is being applied.
pub const SWAP_FILE: &str = "cleaner.swap";
/// The cleaner checkpoint: the first offset not yet mapped by a pass.
pub const CLEANER_CHECKPOINT_FILE: &str = "cleaner.checkpoint";
/// Suffix of the files a pass writes before its swap is committed.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Bytes the cleaner reads per I/O. Small enough that a produce's write and
/// fdatasync queued behind one on the device wait well under a millisecond
/// more; large enough for sequential throughput.
pub const CLEANER_READ_BYTES: usize = 128 << 10;
/// Memory one offset-map entry takes: a 16-byte key hash, an 8-byte offset,
/// and the hash table's control byte and load-factor slack, rounded up.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 48;

const SWAP_MAGIC: [u8; 4] = *b"FJCS";
const SWAP_VERSION: u16 = 1;
const CLEANER_CHECKPOINT_MAGIC: [u8; 4] = *b"FJCC";
const CLEANER_CHECKPOINT_VERSION: u16 = 1;
const SEGMENT_EXTENSIONS: [&str; 3] = ["log", "index", "timeindex"];

/// Whether and how urgently a log wants cleaning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CleaningCandidate {
    /// Dirty bytes over cleanable bytes.
    pub dirty_ratio: f64,
    /// `max.compaction.lag.ms` passed for its oldest dirty segment, or a
    /// tombstone's delete horizon passed: clean whatever the ratio.
    pub forced: bool,
}

/// What a pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Bytes of the segments rewritten.
    pub bytes_read: u64,
    /// Bytes of the segments written in their place.
    pub bytes_written: u64,
    /// Records dropped (superseded, expired tombstones, keyless).
    pub records_removed: u64,
    /// Segments replaced.
    pub segments_replaced: usize,
    /// Segments written.
    pub segments_written: usize,
    /// Where the cleaner checkpoint stands after the pass: the end of the
    /// part it mapped. Tombstones below it carry a delete horizon.
    pub first_dirty_offset: Offset,
    /// End of the range the pass rewrote (it may extend past the mapped part,
    /// whose records it copied unchanged).
    pub cleaned_end: Offset,
}

/// The cleaner checkpoint file.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
struct CleanerCheckpoint {
    first_dirty_offset: i64,
}

/// The swap manifest file: `(cleaned segment base, replaced segment bases)`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
struct SwapManifest {
    groups: Vec<(i64, Vec<i64>)>,
}

/// Bounded map from key hash to the latest offset of that key.
struct OffsetMap {
    entries: HashMap<u128, Offset>,
    capacity: usize,
}

impl OffsetMap {
    fn with_budget(budget_bytes: usize) -> Self {
        let capacity = (budget_bytes / OFFSET_MAP_ENTRY_BYTES).max(1);
        Self {
            entries: HashMap::new(),
            capacity,
        }
    }

    /// Maps every key of one batch, or none if they do not all fit.
    fn put_batch(&mut self, keys: &[(u128, Offset)]) -> bool {
        let new = keys
            .iter()
            .map(|(hash, _)| *hash)
            .filter(|hash| !self.entries.contains_key(hash))
            .collect::<HashSet<_>>()
            .len();
        if self.entries.len() + new > self.capacity {
            return false;
        }
        for &(hash, offset) in keys {
            let latest = self.entries.entry(hash).or_insert(offset);
            *latest = (*latest).max(offset);
        }
        true
    }

    fn latest(&self, key: &[u8]) -> Option<Offset> {
        self.entries.get(&key_hash(key)).copied()
    }
}

/// A 128-bit hash of a key: two independently seeded 64-bit `SipHash`es, so a
/// collision (which would drop a key's latest record) is as unlikely as with
/// Kafka's MD5. The map lives for one pass, so the hash need not be stable
/// across builds.
fn key_hash(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

fn cleaned_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

/// A segment of the cleanable range, as planned.
struct Source<S: Storage> {
    base: Offset,
    next_offset: Offset,
    size: u64,
    handle: SegmentHandle<S>,
    file: Rc<S::File>,
}

/// What a pass works on, captured without holding a borrow across awaits.
struct Plan<S: Storage> {
    sources: Vec<Source<S>>,
    first_dirty: Offset,
    /// End of the cleanable range (base of the first segment not cleaned).
    end: Offset,
    segment_bytes: u64,
    index_policy: IndexPolicy,
    delete_retention_ms: i64,
    /// Each producer's last batch's last offset: its batch is kept even when
    /// emptied.
    producer_last_offsets: HashMap<ProducerId, Offset>,
}

/// A cleaned segment written and synced, not yet swapped in.
struct Cleaned<S: Storage> {
    segment: Segment<S>,
    replaced: Vec<Offset>,
}

/// What copying one batch gives.
enum Filtered {
    Unchanged,
    Rebuilt(Vec<u8>),
    Dropped,
}

impl<S: Storage> PartitionLog<S> {
    /// Whether the log wants cleaning now: `None` if its policy does not
    /// compact or it has nothing to clean, else its dirty ratio and whether
    /// `max.compaction.lag.ms` or a tombstone horizon forces a pass.
    pub async fn cleaning_candidate(&self, now: TimestampMs) -> Option<CleaningCandidate> {
        loop {
            match self.cleaning_candidate_now(now) {
                Ok(candidate) => return candidate,
                Err(IndexesNotLoaded(base)) => self.load_segment_indexes(base).await,
            }
        }
    }

    /// [`PartitionLog::cleaning_candidate`] with the indexes in memory so
    /// far.
    fn cleaning_candidate_now(
        &self,
        now: TimestampMs,
    ) -> std::result::Result<Option<CleaningCandidate>, IndexesNotLoaded> {
        let state = self.state.borrow();
        if !state.config.cleanup_policy.compact || state.poisoned.is_some() || state.closed {
            return Ok(None);
        }
        let end = cleanable_end(&state, now)?;
        let log_start = state.log_start_offset;
        let first_dirty = state.first_dirty_offset.max(log_start);
        let max_lag = state.config.max_compaction_lag_ms;
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut oldest_dirty = None;
        for segment in state.segments.values() {
            if segment.base_offset >= end {
                break;
            }
            if segment.next_offset <= log_start {
                continue;
            }
            if segment.next_offset <= first_dirty {
                clean_bytes += segment.size();
            } else {
                dirty_bytes += segment.size();
                if oldest_dirty.is_none() && max_lag < i64::MAX {
                    // A segment from an earlier run knows its timestamps
                    // only from its time index.
                    if segment.indexes_on_disk() {
                        return Err(IndexesNotLoaded(segment.base_offset));
                    }
                    oldest_dirty = Some(segment.max_timestamp);
                }
            }
        }
        let lag_forced = oldest_dirty.is_some_and(|timestamp: TimestampMs| {
            timestamp != TimestampMs::NONE && now.0.saturating_sub(timestamp.0) > max_lag
        });
        let horizon_due = state
            .tombstone_horizon
            .is_some_and(|horizon| now >= horizon);
        let total = clean_bytes + dirty_bytes;
        if total == 0 || (dirty_bytes == 0 && !horizon_due) {
            return Ok(None);
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "a ratio needs no more than f64's 52 bits of precision"
        )]
        let dirty_ratio = dirty_bytes as f64 / total as f64;
        let forced = (dirty_bytes > 0 && lag_forced) || horizon_due;
        if dirty_ratio < state.config.min_cleanable_dirty_ratio && !forced {
            return Ok(None);
        }
        Ok(Some(CleaningCandidate {
            dirty_ratio,
            forced,
        }))
    }

    /// Runs one cleaning pass (see the module documentation) with an offset
    /// map of at most `offset_map_bytes`, at time `now`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::CorruptLog`]; before the swap is committed
    /// the log is left as it was, after it the log is poisoned (recovery
    /// completes the swap). [`Error::InvalidConfig`] if one batch's keys do
    /// not fit the offset map.
    pub async fn clean(&self, now: TimestampMs, offset_map_bytes: usize) -> Result<CleanStats> {
        let plan = loop {
            match self.plan_cleaning(now) {
                Ok(Some(plan)) => break plan,
                Ok(None) => return Ok(CleanStats::default()),
                Err(IndexesNotLoaded(base)) => self.load_segment_indexes(base).await,
            }
        };
        let (map, map_end) = self.build_offset_map(&plan, offset_map_bytes).await?;
        let groups = group_sources(&plan, map_end);
        let mut stats = CleanStats::default();
        let mut cleaned = Vec::new();
        let mut tombstone_horizon = None;
        for group in groups {
            let base = plan.sources[group.start].base;
            let written = self
                .write_cleaned(
                    &plan,
                    group,
                    &map,
                    map_end,
                    now,
                    &mut stats,
                    &mut tombstone_horizon,
                )
                .await;
            match written {
                Ok(segment) => cleaned.push(segment),
                Err(error) => {
                    let mut bases: Vec<Offset> = cleaned
                        .iter()
                        .map(|group: &Cleaned<S>| group.segment.base_offset)
                        .collect();
                    bases.push(base);
                    self.discard_cleaned(&bases).await;
                    return Err(error);
                }
            }
        }
        stats.first_dirty_offset = map_end.max(plan.first_dirty);
        self.swap(&plan, cleaned, map_end, tombstone_horizon, &mut stats)
            .await?;
        Ok(stats)
    }

    fn plan_cleaning(
        &self,
        now: TimestampMs,
    ) -> std::result::Result<Option<Plan<S>>, IndexesNotLoaded> {
        let state = self.state.borrow();
        if !state.config.cleanup_policy.compact || state.poisoned.is_some() || state.closed {
            return Ok(None);
        }
        let end = cleanable_end(&state, now)?;
        let log_start = state.log_start_offset;
        let sources: Vec<Source<S>> = state
            .segments
            .values()
            .filter(|segment| segment.base_offset < end && segment.next_offset > log_start)
            .map(|segment| Source {
                base: segment.base_offset,
                next_offset: segment.next_offset,
                size: segment.size(),
                handle: segment.handle(),
                file: segment.file.clone(),
            })
            .collect();
        if sources.is_empty() {
            return Ok(None);
        }
        let first_dirty = state
            .first_dirty_offset
            .clamp(sources[0].base, end.max(sources[0].base));
        let producer_last_offsets = state
            .producers
            .iter()
            .map(|(id, entry)| (id, entry.last_batch().last_offset))
            .collect();
        Ok(Some(Plan {
            sources,
            first_dirty,
            end,
            segment_bytes: state.config.segment_bytes,
            index_policy: state.config.index_policy(),
            delete_retention_ms: state.config.delete_retention_ms,
            producer_last_offsets,
        }))
    }

    /// The next [`CLEANER_READ_BYTES`] of `source`'s batches from
    /// `position` on (those ending at or after `from`), with the position
    /// after them; `None` at the segment's end. Checks first that the log
    /// is open, so a pass stops at its next read once the log closes.
    async fn next_chunk(
        &self,
        source: &Source<S>,
        position: u64,
        from: Offset,
    ) -> Result<Option<(Vec<(LocatedBatch, Bytes)>, u64)>> {
        self.check_open()?;
        let batches = source
            .handle
            .read(
                position,
                source.size,
                from,
                CLEANER_READ_BYTES,
                Offset(i64::MAX),
            )
            .await?;
        let Some((last, _)) = batches.last() else {
            return Ok(None);
        };
        let next = last.position + last.header.total_bytes() as u64;
        Ok(Some((batches, next)))
    }

    /// Maps the dirty part's keys to their latest offsets; returns the map
    /// and the offset up to which it covers the log.
    async fn build_offset_map(
        &self,
        plan: &Plan<S>,
        budget_bytes: usize,
    ) -> Result<(OffsetMap, Offset)> {
        let mut map = OffsetMap::with_budget(budget_bytes);
        let mut keys = Vec::new();
        for source in plan
            .sources
            .iter()
            .filter(|source| source.next_offset > plan.first_dirty)
        {
            let mut position = 0;
            while let Some((batches, next)) =
                self.next_chunk(source, position, plan.first_dirty).await?
            {
                position = next;
                for (located, bytes) in &batches {
                    let header = &located.header;
                    if header.is_control() {
                        continue;
                    }
                    keys.clear();
                    let section = records_section(header, bytes)?;
                    for record in batch::records_in(header, &section) {
                        let record = record?;
                        if let Some(key) = record.key {
                            let offset = header.base_offset.plus(i64::from(record.offset_delta));
                            keys.push((key_hash(key), offset));
                        }
                    }
                    if !map.put_batch(&keys) {
                        if map.entries.is_empty() {
                            return Err(Error::InvalidConfig {
                                key: "log.cleaner.dedupe.buffer.size".to_owned(),
                                value: budget_bytes.to_string(),
                                reason: format!(
                                    "one batch holds {} keys, more than the offset map's {}",
                                    keys.len(),
                                    map.capacity
                                ),
                            });
                        }
                        return Ok((map, header.base_offset));
                    }
                }
            }
        }
        Ok((map, plan.end))
    }

    /// Writes the cleaned copy of one group of source segments as
    /// `.cleaned` files, synced, with its indexes.
    #[allow(
        clippy::too_many_arguments,
        reason = "the pass's shared state, threaded through each group"
    )]
    async fn write_cleaned(
        &self,
        plan: &Plan<S>,
        group: std::ops::Range<usize>,
        map: &OffsetMap,
        map_end: Offset,
        now: TimestampMs,
        stats: &mut CleanStats,
        tombstone_horizon: &mut Option<TimestampMs>,
    ) -> Result<Cleaned<S>> {
        let sources = &plan.sources[group];
        let base = sources[0].base;
        let group_end = sources[sources.len() - 1].next_offset;
        let final_path = self.dir.join(segment_file_name(base, "log"));
        let mut segment =
            Segment::create_at(&self.storage, &self.dir, base, cleaned_path(&final_path)).await?;
        let context = FilterContext {
            map,
            map_end,
            now,
            horizon: TimestampMs(now.0.saturating_add(plan.delete_retention_ms)),
            producer_last_offsets: &plan.producer_last_offsets,
        };
        let mut run: Vec<(BatchHeader, Bytes)> = Vec::new();
        let mut run_bytes = 0;
        let mut last_written: Option<Offset> = None;
        for source in sources {
            stats.bytes_read += source.size;
            let mut position = 0;
            while let Some((batches, next)) = self.next_chunk(source, position, source.base).await?
            {
                position = next;
                for (located, bytes) in batches {
                    let (filtered, removed, horizon) = context.filter(&located.header, &bytes)?;
                    stats.records_removed += removed;
                    if let Some(horizon) = horizon {
                        *tombstone_horizon =
                            Some(tombstone_horizon.map_or(horizon, |known| known.min(horizon)));
                    }
                    let kept = match filtered {
                        Filtered::Dropped => continue,
                        Filtered::Unchanged => bytes,
                        Filtered::Rebuilt(rebuilt) => Bytes::from(rebuilt),
                    };
                    let header = BatchHeader::parse(&kept)?;
                    assert!(
                        last_written.is_none_or(|previous| header.base_offset > previous),
                        "cleaned output offsets must strictly increase"
                    );
                    assert_eq!(
                        header.last_offset(),
                        located.header.last_offset(),
                        "cleaning must not change a batch's offsets"
                    );
                    last_written = Some(header.last_offset());
                    run_bytes += kept.len();
                    run.push((header, kept));
                    if run_bytes >= super::WRITE_BYTES_MAX {
                        self.append_run(&mut segment, &mut run, plan.index_policy)
                            .await?;
                        run_bytes = 0;
                    }
                }
            }
        }
        self.append_run(&mut segment, &mut run, plan.index_policy)
            .await?;
        let handle = segment.handle();
        handle.truncate(segment.size()).await?;
        handle.fdatasync().await?;
        segment.relocated(final_path);
        segment.next_offset = group_end;
        let index_files = segment
            .closing_index_files(plan.index_policy)
            .into_iter()
            .map(|(path, content)| (cleaned_path(&path), content))
            .collect();
        write_files(&self.storage, index_files).await?;
        stats.bytes_written += segment.size();
        Ok(Cleaned {
            segment,
            replaced: sources.iter().map(|source| source.base).collect(),
        })
    }

    async fn append_run(
        &self,
        segment: &mut Segment<S>,
        run: &mut Vec<(BatchHeader, Bytes)>,
        index_policy: IndexPolicy,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let (write, commit) = segment.prepare_append(&self.storage, run);
        write.write(&self.storage).await?;
        segment.commit_append(run, commit, index_policy, self.now_ms());
        run.clear();
        Ok(())
    }

    /// Best-effort removal of `.cleaned` files after a pass failed before
    /// its commit; recovery removes whatever this leaves.
    async fn discard_cleaned(&self, bases: &[Offset]) {
        for &base in bases {
            for extension in SEGMENT_EXTENSIONS {
                let path = cleaned_path(&self.dir.join(segment_file_name(base, extension)));
                if let Err(error) = self.storage.remove_file(&path).await {
                    tracing::warn!(path = %path.display(), %error, "cannot remove cleaned file");
                }
            }
        }
    }

    /// Commits and applies the swap of `cleaned` for their sources, unless
    /// the log changed under the pass (a source was deleted or truncated).
    async fn swap(
        &self,
        plan: &Plan<S>,
        cleaned: Vec<Cleaned<S>>,
        map_end: Offset,
        tombstone_horizon: Option<TimestampMs>,
        stats: &mut CleanStats,
    ) -> Result<()> {
        let intact = {
            let log_state = self.state.borrow();
            log_state.poisoned.is_none()
                && !log_state.closed
                && plan.sources.iter().all(|source| {
                    log_state.segments.get(&source.base).is_some_and(|segment| {
                        Rc::ptr_eq(&segment.file, &source.file) && segment.size() == source.size
                    })
                })
        };
        if !intact {
            tracing::info!(partition = %self.partition, "log changed during cleaning; pass abandoned");
            let bases: Vec<Offset> = cleaned
                .iter()
                .map(|group| group.segment.base_offset)
                .collect();
            self.discard_cleaned(&bases).await;
            return Ok(());
        }
        // From here until the in-memory swap, nothing else may remove segments.
        self.swapping.set(true);
        let manifest = SwapManifest {
            groups: cleaned
                .iter()
                .map(|group| {
                    (
                        group.segment.base_offset.0,
                        group.replaced.iter().map(|base| base.0).collect(),
                    )
                })
                .collect(),
        };
        let committed = async {
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|error| Error::io("syncing directory", &self.dir, error))?;
            let path = self.dir.join(SWAP_FILE);
            self.storage
                .write_file_atomic(&path, manifest.encode())
                .await
                .map_err(|error| Error::io("writing swap manifest", &path, error))?;
            rename_cleaned(&self.storage, &self.dir, &manifest)
        }
        .await;
        if let Err(error) = committed {
            self.swapping.set(false);
            self.swap_done.notify(usize::MAX);
            self.poison(&error);
            return Err(error);
        }
        self.install(cleaned, map_end, tombstone_horizon, stats);
        self.swapping.set(false);
        self.swap_done.notify(usize::MAX);
        let finished = async {
            remove_replaced(&self.storage, &self.dir, &manifest).await?;
            let first_dirty = self.state.borrow().first_dirty_offset;
            self.write_cleaner_checkpoint(first_dirty).await?;
            let path = self.dir.join(SWAP_FILE);
            self.storage
                .remove_file(&path)
                .await
                .map_err(|error| Error::io("removing swap manifest", &path, error))?;
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(|error| Error::io("syncing directory", &self.dir, error))
        }
        .await;
        if let Err(error) = finished {
            self.poison(&error);
            return Err(error);
        }
        tracing::debug!(partition = %self.partition, replaced = stats.segments_replaced,
            written = stats.segments_written, removed = stats.records_removed, "cleaned log");
        Ok(())
    }

    /// Replaces the sources of `cleaned` by them in memory, once their
    /// files are in place.
    fn install(
        &self,
        cleaned: Vec<Cleaned<S>>,
        map_end: Offset,
        tombstone_horizon: Option<TimestampMs>,
        stats: &mut CleanStats,
    ) {
        let mut log_state = self.state.borrow_mut();
        let mut last_end = Offset::ZERO;
        for group in cleaned {
            for base in &group.replaced {
                log_state.segments.remove(base);
            }
            stats.segments_replaced += group.replaced.len();
            stats.segments_written += 1;
            last_end = group.segment.next_offset;
            stats.cleaned_end = last_end;
            log_state
                .segments
                .insert(group.segment.base_offset, group.segment);
        }
        // A pass that only dropped expired tombstones maps nothing new: the
        // checkpoint never moves back.
        log_state.first_dirty_offset = log_state.first_dirty_offset.max(map_end);
        log_state.tombstone_horizon = tombstone_horizon;
        self.cache
            .borrow_mut()
            .evict_below(self.cache_key, last_end);
        let mut previous_end = None;
        for segment in log_state.segments.values() {
            assert!(
                previous_end.is_none_or(|end| segment.base_offset >= end),
                "segments overlap after a swap"
            );
            previous_end = Some(segment.next_offset);
        }
        log_state.check_invariants();
    }

    async fn write_cleaner_checkpoint(&self, first_dirty: Offset) -> Result<()> {
        let checkpoint = CleanerCheckpoint {
            first_dirty_offset: first_dirty.0,
        };
        let frame = encode_frame(
            CLEANER_CHECKPOINT_MAGIC,
            CLEANER_CHECKPOINT_VERSION,
            &to_rkyv_bytes(&checkpoint),
        );
        write_files(
            &self.storage,
            vec![(self.dir.join(CLEANER_CHECKPOINT_FILE), frame)],
        )
        .await
    }

    /// Stops a pass once the log is closed (shutdown) or poisoned.
    fn check_open(&self) -> Result<()> {
        let state = self.state.borrow();
        self.usable(&state)
    }

    /// Waits until no cleaner swap is between its commit and its in-memory
    /// application, so segments are not removed under it.
    pub(super) async fn wait_for_swap(&self) {
        while self.swapping.get() {
            let listener = self.swap_done.listen();
            if !self.swapping.get() {
                break;
            }
            listener.await;
        }
    }
}

/// The first offset the cleaner must not touch: the base of the first
/// segment that is active, reaches past the high watermark, or holds records
/// younger than `min.compaction.lag.ms`.
///
/// # Errors
/// [`IndexesNotLoaded`] for the first segment whose timestamps it needs
/// from a time index still on disk.
fn cleanable_end<S: Storage>(
    state: &super::LogState<S>,
    now: TimestampMs,
) -> std::result::Result<Offset, IndexesNotLoaded> {
    let active_base = state.active().base_offset;
    let high_watermark = state.high_watermark;
    let lag = state.config.min_compaction_lag_ms;
    for segment in state.segments.values() {
        if segment.base_offset >= active_base || segment.next_offset > high_watermark {
            return Ok(segment.base_offset);
        }
        if lag > 0 {
            if segment.indexes_on_disk() {
                return Err(IndexesNotLoaded(segment.base_offset));
            }
            if segment.max_timestamp != TimestampMs::NONE
                && now.0.saturating_sub(segment.max_timestamp.0) < lag
            {
                return Ok(segment.base_offset);
            }
        }
    }
    Ok(active_base)
}

/// Splits the sources to rewrite (those starting below `map_end`) into runs
/// of consecutive segments whose sizes add up to at most `segment.bytes` and
/// whose offsets fit one segment's relative offsets.
fn group_sources<S: Storage>(plan: &Plan<S>, map_end: Offset) -> Vec<std::ops::Range<usize>> {
    let count = plan
        .sources
        .iter()
        .take_while(|source| source.base < map_end)
        .count();
    let mut groups = Vec::new();
    let mut start = 0;
    while start < count {
        let mut end = start + 1;
        let mut bytes = plan.sources[start].size;
        while end < count {
            let next = &plan.sources[end];
            let span = next.next_offset.0 - plan.sources[start].base.0;
            if bytes + next.size > plan.segment_bytes || span > i64::from(i32::MAX) {
                break;
            }
            bytes += next.size;
            end += 1;
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

/// The decompressed records section of a stored batch.
fn records_section(header: &BatchHeader, bytes: &Bytes) -> Result<Bytes> {
    let section = bytes.slice(BATCH_HEADER_BYTES..header.total_bytes());
    crate::codec::decompress(header.compression()?, section)
}

/// What deciding a record's fate needs.
struct FilterContext<'a> {
    map: &'a OffsetMap,
    map_end: Offset,
    now: TimestampMs,
    /// The delete horizon given to tombstones seen for the first time.
    horizon: TimestampMs,
    producer_last_offsets: &'a HashMap<ProducerId, Offset>,
}

impl FilterContext<'_> {
    /// The batch's cleaned form, how many records it lost, and the delete
    /// horizon of the tombstones it keeps.
    fn filter(
        &self,
        header: &BatchHeader,
        bytes: &Bytes,
    ) -> Result<(Filtered, u64, Option<TimestampMs>)> {
        if header.is_control() {
            return Ok((Filtered::Unchanged, 0, None));
        }
        let section = records_section(header, bytes)?;
        let expired = header.has_delete_horizon() && self.now >= header.base_timestamp;
        let mut kept: Vec<Record<'_>> = Vec::new();
        let mut total = 0u64;
        let mut has_tombstone = false;
        for record in batch::records_in(header, &section) {
            let record = record?;
            total += 1;
            let offset = header.base_offset.plus(i64::from(record.offset_delta));
            if offset >= self.map_end {
                // Not mapped by this pass: kept as is, tombstones included
                // (older values of their keys may still be below them).
                kept.push(record);
                continue;
            }
            let latest = record
                .key
                .is_some_and(|key| self.map.latest(key).is_none_or(|latest| offset >= latest));
            if !latest {
                continue;
            }
            if record.value.is_none() {
                if expired {
                    continue;
                }
                has_tombstone = true;
            }
            kept.push(record);
        }
        let removed = total - kept.len() as u64;
        let needs_horizon = has_tombstone && !header.has_delete_horizon();
        let horizon = has_tombstone.then_some(if needs_horizon {
            self.horizon
        } else {
            header.base_timestamp
        });
        if removed == 0 && !needs_horizon {
            return Ok((Filtered::Unchanged, 0, horizon));
        }
        let last_of_producer = header.is_idempotent()
            && self.producer_last_offsets.get(&header.producer_id) == Some(&header.last_offset());
        if kept.is_empty() && !last_of_producer {
            return Ok((Filtered::Dropped, removed, None));
        }
        let rebuilt = batch::rebuild_batch(bytes, &kept, needs_horizon.then_some(self.horizon))?;
        Ok((Filtered::Rebuilt(rebuilt), removed, horizon))
    }
}

impl SwapManifest {
    fn encode(&self) -> Vec<u8> {
        encode_frame(SWAP_MAGIC, SWAP_VERSION, &to_rkyv_bytes(self))
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: Corruption| Error::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let payload = decode_frame(SWAP_MAGIC, SWAP_VERSION, bytes).map_err(corrupt)?;
        from_rkyv_bytes(payload).map_err(corrupt)
    }
}

/// Renames each cleaned file of `manifest` over its final name; a file
/// already renamed (a swap resumed by recovery) is skipped.
fn rename_cleaned<S: Storage>(storage: &S, dir: &Path, manifest: &SwapManifest) -> Result<()> {
    for (base, _) in &manifest.groups {
        for extension in SEGMENT_EXTENSIONS {
            let target = dir.join(segment_file_name(Offset(*base), extension));
            let source = cleaned_path(&target);
            match storage.rename(&source, &target) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("renaming cleaned segment", &source, error)),
            }
        }
    }
    Ok(())
}

/// Removes the segments the cleaned ones replace (other than those renamed
/// over), then makes the directory changes durable.
async fn remove_replaced<S: Storage>(
    storage: &S,
    dir: &Path,
    manifest: &SwapManifest,
) -> Result<()> {
    for (base, replaced) in &manifest.groups {
        for old in replaced.iter().filter(|old| *old != base) {
            remove_segment_files(storage, dir, Offset(*old)).await?;
        }
    }
    storage
        .sync_dir(dir)
        .await
        .map_err(|error| Error::io("syncing directory", dir, error))
}

/// At open, before the segments are listed: completes a swap whose manifest
/// was committed, and removes the files of a pass that was not.
///
/// # Errors
/// [`Error::Io`], or [`Error::CorruptCheckpoint`] if the manifest does not
/// decode.
pub(super) async fn finish_interrupted_swap<S: Storage>(storage: &S, dir: &Path) -> Result<()> {
    let path = dir.join(SWAP_FILE);
    if let Some(bytes) = storage
        .read_file(&path)
        .await
        .map_err(|error| Error::io("reading swap manifest", &path, error))?
    {
        let manifest = SwapManifest::decode(&path, &bytes)?;
        tracing::info!(dir = %dir.display(), "completing an interrupted cleaner swap");
        rename_cleaned(storage, dir, &manifest)?;
        remove_replaced(storage, dir, &manifest).await?;
        storage
            .remove_file(&path)
            .await
            .map_err(|error| Error::io("removing swap manifest", &path, error))?;
    }
    let names = storage
        .list_dir(dir)
        .await
        .map_err(|error| Error::io("listing partition directory", dir, error))?;
    for name in names.iter().filter(|name| name.ends_with(CLEANED_SUFFIX)) {
        let leftover = dir.join(name);
        storage
            .remove_file(&leftover)
            .await
            .map_err(|error| Error::io("removing leftover", &leftover, error))?;
    }
    storage
        .sync_dir(dir)
        .await
        .map_err(|error| Error::io("syncing directory", dir, error))
}

/// The checkpointed first dirty offset, or `None` without a readable one
/// (the whole log is then dirty, which costs a pass but is correct).
pub(super) async fn read_cleaner_checkpoint<S: Storage>(storage: &S, dir: &Path) -> Option<Offset> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    let bytes = storage.read_file(&path).await.ok().flatten()?;
    let payload = decode_frame(CLEANER_CHECKPOINT_MAGIC, CLEANER_CHECKPOINT_VERSION, &bytes)
        .map_err(
            |reason| tracing::warn!(path = %path.display(), %reason, "ignoring cleaner checkpoint"),
        )
        .ok()?;
    let checkpoint: CleanerCheckpoint = from_rkyv_bytes(payload).ok()?;
    Some(Offset(checkpoint.first_dirty_offset))
}
