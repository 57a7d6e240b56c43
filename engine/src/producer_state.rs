//! Idempotent-producer state of one partition.
//!
//! Kafka's `ProducerStateManager`: for each producer id, its current epoch and
//! the metadata of its last [`MAX_CACHED_BATCHES`] batches. That is what lets
//! the partition accept a producer's batches exactly once and in order even
//! when the producer retries: a retry of a batch still cached is answered with
//! the original offsets instead of being appended twice, a gap in the
//! sequence is refused, and an older producer instance (older epoch) is fenced.
//! Five batches suffice because a Kafka producer keeps at most
//! `max.in.flight.requests.per.connection` = 5 batches in flight per partition
//! when idempotence is on.
//!
//! # Durability contract
//! The table is in memory. It is rebuilt at open from the newest snapshot
//! (file [`snapshot_file_name`]`(offset)`, written by the caller from
//! [`ProducerStateTable::encode_snapshot`]) followed by [`ProducerStateTable::record`]
//! of every batch in the log from the snapshot offset on. A snapshot must
//! hold the state of exactly the offsets below its own (the log writes them
//! from its table of written batches), and one whose offset is beyond the
//! recovered log end must be discarded before replay. A truncated log
//! rebuilds its table the same way, from the newest snapshot at or below
//! the truncation offset: the table itself cannot be cut back, since it
//! keeps only the newest epoch's last batches.

use std::collections::btree_map::{BTreeMap, Entry};
use std::path::Path;

use crate::checkpoint;
use crate::error::{Corruption, Error, Result};
use crate::types::{Offset, ProducerEpoch, ProducerId, TimestampMs};

/// Batches remembered per producer for duplicate detection; Kafka's
/// `NUM_BATCHES_TO_RETAIN`, matching the idempotent producer's maximum of five
/// in-flight requests.
pub const MAX_CACHED_BATCHES: usize = 5;

/// Magic of a producer-state snapshot frame.
pub const PRODUCER_SNAPSHOT_MAGIC: [u8; 4] = *b"FJPS";

/// Current format version of producer-state snapshot payloads.
pub const PRODUCER_SNAPSHOT_VERSION: u16 = 1;

/// Suffix of producer-state snapshot files, as Kafka names them.
pub const SNAPSHOT_FILE_SUFFIX: &str = ".snapshot";

/// Digits of the zero-padded offset in a snapshot file name, as in Kafka's
/// segment and snapshot names.
const SNAPSHOT_FILE_OFFSET_DIGITS: usize = 20;

/// What the partition remembers of one appended batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence of the batch's first record.
    pub first_sequence: i32,
    /// Sequence of the batch's last record (wraps past `i32::MAX` to 0).
    pub last_sequence: i32,
    /// Offset assigned to the batch's first record.
    pub first_offset: Offset,
    /// Offset assigned to the batch's last record.
    pub last_offset: Offset,
    /// The batch's max timestamp as stored in the log.
    pub max_timestamp: TimestampMs,
}

/// The producer fields of an incoming or replayed batch: what the sequence
/// rules look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer's id (never [`ProducerId::NONE`]: non-idempotent batches
    /// bypass this table).
    pub producer_id: ProducerId,
    /// The producer's epoch.
    pub producer_epoch: ProducerEpoch,
    /// Sequence of the batch's first record.
    pub first_sequence: i32,
    /// Sequence of the batch's last record.
    pub last_sequence: i32,
    /// The batch's max timestamp.
    pub max_timestamp: TimestampMs,
}

/// Outcome of [`ProducerStateTable::check`] for a batch that may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// The batch continues its producer's sequence (or starts a new epoch, or
    /// comes from a producer the partition does not know): append it.
    Accept,
    /// The batch is a retry of this already appended batch: do not append it
    /// again, answer the producer with its offsets.
    Duplicate(BatchMetadata),
}

/// One producer's state: its epoch and the metadata of its last batches.
///
/// # Invariant
/// `batches` holds 1..=[`MAX_CACHED_BATCHES`] batches of the current epoch,
/// ascending and disjoint in offsets, the newest last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    epoch: ProducerEpoch,
    batches: Vec<BatchMetadata>,
}

impl ProducerEntry {
    /// The producer's current epoch.
    #[must_use]
    pub fn epoch(&self) -> ProducerEpoch {
        self.epoch
    }

    /// The cached batches of the current epoch, oldest first; never empty.
    #[must_use]
    pub fn batches(&self) -> &[BatchMetadata] {
        &self.batches
    }

    /// The producer's most recently appended batch.
    ///
    /// # Panics
    /// Never: an entry holds at least one batch by construction.
    #[must_use]
    pub fn last_batch(&self) -> BatchMetadata {
        *self
            .batches
            .last()
            .expect("a producer entry always holds a batch")
    }

    /// The max timestamp of the producer's last batch: what expiration
    /// (`transactional.id.expiration.ms` / `producer.id.expiration.ms`) is
    /// measured from, as in Kafka.
    #[must_use]
    pub fn last_timestamp(&self) -> TimestampMs {
        self.last_batch().max_timestamp
    }

    fn find_duplicate(&self, first_sequence: i32, last_sequence: i32) -> Option<BatchMetadata> {
        self.batches
            .iter()
            .find(|cached| {
                cached.first_sequence == first_sequence && cached.last_sequence == last_sequence
            })
            .copied()
    }
}

/// The sequence that follows `sequence`: Kafka's sequences wrap from
/// `i32::MAX` to 0.
#[must_use]
pub fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// A partition's idempotent-producer state: producer id to [`ProducerEntry`].
///
/// Bounded by producer expiration: the caller runs
/// [`ProducerStateTable::remove_expired`] periodically, as Kafka does every
/// `producer.id.expiration.check.interval.ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<ProducerId, ProducerEntry>,
}

impl ProducerStateTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of producers known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The state of `producer_id`, if known.
    #[must_use]
    pub fn get(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every known producer, ascending by id.
    pub fn iter(&self) -> impl Iterator<Item = (ProducerId, &ProducerEntry)> {
        self.producers.iter().map(|(&id, entry)| (id, entry))
    }

    /// Decides whether a client's `batch` may be appended, by Kafka's rules:
    ///
    /// - unknown producer: accept any sequence (its state may have been
    ///   removed by retention or expiration, and Kafka accepts then too);
    /// - older epoch than known: fenced;
    /// - newer epoch: the batch must start the new epoch at sequence 0;
    /// - same epoch: a batch whose (first, last) sequences match a cached
    ///   batch is a duplicate of it; otherwise it must start right after the
    ///   last cached batch (`i32::MAX` wraps to 0).
    ///
    /// Does not change the table; call [`ProducerStateTable::record`] once the
    /// batch is appended.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`] for an older epoch (Kafka:
    /// `INVALID_PRODUCER_EPOCH`); [`Error::OutOfOrderSequence`] for a sequence
    /// gap or repeat that is not a cached batch (Kafka:
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`, on which the producer retries or
    /// resets).
    pub fn check(&self, batch: &ProducerBatch) -> Result<SequenceCheck> {
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(SequenceCheck::Accept);
        };
        let expected = match batch.producer_epoch.cmp(&entry.epoch) {
            std::cmp::Ordering::Less => {
                return Err(Error::ProducerFenced {
                    producer_id: batch.producer_id,
                    current: entry.epoch,
                    received: batch.producer_epoch,
                })
            }
            std::cmp::Ordering::Greater => 0,
            std::cmp::Ordering::Equal => {
                if let Some(duplicate) =
                    entry.find_duplicate(batch.first_sequence, batch.last_sequence)
                {
                    return Ok(SequenceCheck::Duplicate(duplicate));
                }
                next_sequence(entry.last_batch().last_sequence)
            }
        };
        if batch.first_sequence == expected {
            Ok(SequenceCheck::Accept)
        } else {
            Err(Error::OutOfOrderSequence {
                producer_id: batch.producer_id,
                expected,
                received: batch.first_sequence,
            })
        }
    }

    /// Remembers that `batch` was appended at `first_offset..=last_offset`:
    /// after a successful [`ProducerStateTable::check`] and append, and for
    /// every batch replayed from the log in recovery (where the log is the
    /// truth and no check is done).
    ///
    /// The producer's epoch becomes the batch's; a different epoch than the
    /// known one starts a fresh batch cache (as Kafka's
    /// `maybeUpdateProducerEpoch` does). Only the newest
    /// [`MAX_CACHED_BATCHES`] batches are kept.
    ///
    /// # Panics
    /// If the offsets are negative, `last_offset < first_offset`, or the batch
    /// does not lie after the producer's previous batch: offsets are assigned
    /// by the log and never go backwards, so any of these is an engine bug.
    pub fn record(&mut self, batch: &ProducerBatch, first_offset: Offset, last_offset: Offset) {
        assert!(
            Offset::ZERO <= first_offset && first_offset <= last_offset,
            "invalid batch offsets {first_offset}..={last_offset}"
        );
        let metadata = BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            first_offset,
            last_offset,
            max_timestamp: batch.max_timestamp,
        };
        match self.producers.entry(batch.producer_id) {
            Entry::Vacant(vacant) => {
                let mut batches = Vec::with_capacity(MAX_CACHED_BATCHES);
                batches.push(metadata);
                vacant.insert(ProducerEntry {
                    epoch: batch.producer_epoch,
                    batches,
                });
            }
            Entry::Occupied(occupied) => {
                let entry = occupied.into_mut();
                let previous_last_offset = entry.last_batch().last_offset;
                assert!(
                    first_offset > previous_last_offset,
                    "producer {:?} batch at {first_offset} does not follow its previous batch ending at {previous_last_offset}",
                    batch.producer_id
                );
                if entry.epoch != batch.producer_epoch {
                    entry.epoch = batch.producer_epoch;
                    entry.batches.clear();
                }
                if entry.batches.len() == MAX_CACHED_BATCHES {
                    entry.batches.remove(0);
                }
                entry.batches.push(metadata);
            }
        }
    }

    /// Forgets producers whose last batch ends before `log_start`, after the
    /// log start moved there (retention, `DeleteRecords`): nothing of theirs
    /// remains in the log.
    pub fn truncate_start(&mut self, log_start: Offset) {
        self.producers
            .retain(|_, entry| entry.last_batch().last_offset >= log_start);
    }

    /// Forgets producers whose last batch's timestamp is at least
    /// `producer_id_expiration_ms` before `now`, as Kafka's
    /// `removeExpiredProducers` does. Their next batch is accepted with any
    /// sequence.
    pub fn remove_expired(&mut self, now: TimestampMs, producer_id_expiration_ms: i64) {
        self.producers.retain(|_, entry| {
            now.0.saturating_sub(entry.last_timestamp().0) < producer_id_expiration_ms
        });
    }

    /// The table as a complete snapshot file covering the log up to
    /// `snapshot_offset` (exclusive): a [`checkpoint`] frame with
    /// [`PRODUCER_SNAPSHOT_MAGIC`] around an rkyv archive. Producers are
    /// written in ascending id order, so equal tables encode to equal bytes.
    ///
    /// # Panics
    /// If `snapshot_offset` is negative or not above every cached batch's last
    /// offset: a snapshot must cover everything it holds, or recovery would
    /// replay those batches a second time.
    #[must_use]
    pub fn encode_snapshot(&self, snapshot_offset: Offset) -> Vec<u8> {
        assert!(
            snapshot_offset >= Offset::ZERO,
            "negative snapshot offset {snapshot_offset}"
        );
        let producers = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| {
                let last_offset = entry.last_batch().last_offset;
                assert!(
                    last_offset < snapshot_offset,
                    "snapshot at {snapshot_offset} would not cover producer {producer_id:?}'s batch ending at {last_offset}"
                );
                SnapshotProducer {
                    producer_id: producer_id.0,
                    producer_epoch: entry.epoch.0,
                    batches: entry.batches.iter().map(SnapshotBatch::from).collect(),
                }
            })
            .collect();
        let body = SnapshotBody {
            snapshot_offset: snapshot_offset.0,
            producers,
        };
        checkpoint::encode_frame(
            PRODUCER_SNAPSHOT_MAGIC,
            PRODUCER_SNAPSHOT_VERSION,
            &checkpoint::to_rkyv_bytes(&body),
        )
    }

    /// Decodes a snapshot written by [`ProducerStateTable::encode_snapshot`]:
    /// its offset and the table.
    ///
    /// On success the table satisfies every invariant [`ProducerStateTable::record`]
    /// maintains, and every batch ends before the returned offset.
    ///
    /// # Errors
    /// [`Error::CorruptCheckpoint`] naming `path` (used only for the message)
    /// when the frame, the archive or those invariants fail. Never panics,
    /// whatever `bytes` holds.
    pub fn decode_snapshot(path: &Path, bytes: &[u8]) -> Result<(Offset, ProducerStateTable)> {
        let corrupt = |reason: Corruption| Error::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        };
        let payload =
            checkpoint::decode_frame(PRODUCER_SNAPSHOT_MAGIC, PRODUCER_SNAPSHOT_VERSION, bytes)
                .map_err(corrupt)?;
        let body: SnapshotBody = checkpoint::from_rkyv_bytes(payload).map_err(corrupt)?;
        body.into_table().map_err(corrupt)
    }
}

/// Kafka's snapshot file name for `offset`: 20 zero-padded digits and
/// [`SNAPSHOT_FILE_SUFFIX`], e.g. `00000000000000001234.snapshot`.
///
/// # Panics
/// If `offset` is negative: no snapshot covers a negative offset.
#[must_use]
pub fn snapshot_file_name(offset: Offset) -> String {
    assert!(offset >= Offset::ZERO, "negative snapshot offset {offset}");
    format!(
        "{:0width$}{SNAPSHOT_FILE_SUFFIX}",
        offset.0,
        width = SNAPSHOT_FILE_OFFSET_DIGITS
    )
}

/// The offset in a name made by [`snapshot_file_name`]; `None` for any other
/// name (other files in the partition directory, temporary files).
#[must_use]
pub fn parse_snapshot_file_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(SNAPSHOT_FILE_SUFFIX)?;
    if digits.len() != SNAPSHOT_FILE_OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

/// Snapshot payload: plain integers so the format does not move with the
/// in-memory types.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct SnapshotBody {
    snapshot_offset: i64,
    /// Ascending by producer id.
    producers: Vec<SnapshotProducer>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct SnapshotProducer {
    producer_id: i64,
    producer_epoch: i16,
    /// Oldest first.
    batches: Vec<SnapshotBatch>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug)]
struct SnapshotBatch {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
}

impl From<&BatchMetadata> for SnapshotBatch {
    fn from(batch: &BatchMetadata) -> Self {
        Self {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            first_offset: batch.first_offset.0,
            last_offset: batch.last_offset.0,
            max_timestamp: batch.max_timestamp.0,
        }
    }
}

impl SnapshotBody {
    /// Rebuilds the table, checking what `record` and `encode_snapshot`
    /// guarantee so a damaged but well-formed archive is not trusted.
    fn into_table(self) -> std::result::Result<(Offset, ProducerStateTable), Corruption> {
        if self.snapshot_offset < 0 {
            return Err(Corruption::Negative {
                what: "snapshot offset",
                value: self.snapshot_offset,
            });
        }
        let mut producers = BTreeMap::new();
        let mut previous_id = None;
        for (entry, producer) in self.producers.into_iter().enumerate() {
            let id = ProducerId(producer.producer_id);
            if previous_id.is_some_and(|previous| previous >= id) {
                return Err(Corruption::NotAscending {
                    what: "producer",
                    entry,
                });
            }
            previous_id = Some(id);
            if producer.batches.is_empty() || producer.batches.len() > MAX_CACHED_BATCHES {
                return Err(Corruption::CachedBatchCount {
                    producer_id: id.0,
                    count: producer.batches.len(),
                    max: MAX_CACHED_BATCHES,
                });
            }
            let mut previous_last_offset = -1;
            let mut batches = Vec::with_capacity(MAX_CACHED_BATCHES);
            for (entry, batch) in producer.batches.into_iter().enumerate() {
                if batch.first_offset <= previous_last_offset
                    || batch.last_offset < batch.first_offset
                {
                    return Err(Corruption::NotAscending {
                        what: "cached batch offsets",
                        entry,
                    });
                }
                previous_last_offset = batch.last_offset;
                batches.push(BatchMetadata {
                    first_sequence: batch.first_sequence,
                    last_sequence: batch.last_sequence,
                    first_offset: Offset(batch.first_offset),
                    last_offset: Offset(batch.last_offset),
                    max_timestamp: TimestampMs(batch.max_timestamp),
                });
            }
            if previous_last_offset >= self.snapshot_offset {
                return Err(Corruption::BatchPastSnapshot {
                    producer_id: id.0,
                    last_offset: previous_last_offset,
                    snapshot_offset: self.snapshot_offset,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch: ProducerEpoch(producer.producer_epoch),
                    batches,
                },
            );
        }
        Ok((
            Offset(self.snapshot_offset),
            ProducerStateTable { producers },
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const PRODUCER: ProducerId = ProducerId(7);

    fn batch(epoch: i16, first_sequence: i32, last_sequence: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: PRODUCER,
            producer_epoch: ProducerEpoch(epoch),
            first_sequence,
            last_sequence,
            max_timestamp: TimestampMs(1_000),
        }
    }

    /// Records in a batch after the first: `last - first` modulo the wrap
    /// from `i32::MAX` to 0.
    fn span(first: i32, last: i32) -> i32 {
        if last >= first {
            last - first
        } else {
            (i32::MAX - first) + last + 1
        }
    }

    /// The last sequence of a batch of `span + 1` records starting at `first`.
    fn last_of(first: i32, span: i32) -> i32 {
        if first > i32::MAX - span {
            span - (i32::MAX - first) - 1
        } else {
            first + span
        }
    }

    /// A partition log end and table, appending like the log would.
    struct Partition {
        table: ProducerStateTable,
        log_end: Offset,
    }

    impl Partition {
        fn new() -> Self {
            Self {
                table: ProducerStateTable::new(),
                log_end: Offset::ZERO,
            }
        }

        fn produce(&mut self, batch: ProducerBatch) -> Result<SequenceCheck> {
            let check = self.table.check(&batch)?;
            if check == SequenceCheck::Accept {
                let records = i64::from(span(batch.first_sequence, batch.last_sequence)) + 1;
                let first = self.log_end;
                let last = first.plus(records - 1);
                self.table.record(&batch, first, last);
                self.log_end = last.next();
            }
            Ok(check)
        }
    }

    #[test]
    fn unknown_producer_is_accepted_at_any_sequence() {
        let table = ProducerStateTable::new();
        for first in [0, 1, 42, i32::MAX] {
            assert_eq!(
                table.check(&batch(3, first, first)).unwrap(),
                SequenceCheck::Accept
            );
        }
    }

    #[test]
    fn in_order_batches_are_accepted_and_a_gap_is_refused() {
        let mut p = Partition::new();
        assert_eq!(p.produce(batch(0, 0, 4)).unwrap(), SequenceCheck::Accept);
        assert_eq!(p.produce(batch(0, 5, 9)).unwrap(), SequenceCheck::Accept);
        match p.produce(batch(0, 11, 12)) {
            Err(Error::OutOfOrderSequence {
                producer_id,
                expected,
                received,
            }) => assert_eq!((producer_id, expected, received), (PRODUCER, 10, 11)),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.log_end, Offset(10), "refused batch was not appended");
    }

    #[test]
    fn retry_of_any_of_the_last_five_batches_is_a_duplicate_with_its_offsets() {
        let mut p = Partition::new();
        for n in 0..7 {
            p.produce(batch(0, n * 2, n * 2 + 1)).unwrap();
        }
        let entry = p.table.get(PRODUCER).unwrap();
        assert_eq!(entry.batches().len(), MAX_CACHED_BATCHES);
        for n in 2..7 {
            let expected = BatchMetadata {
                first_sequence: n * 2,
                last_sequence: n * 2 + 1,
                first_offset: Offset(i64::from(n) * 2),
                last_offset: Offset(i64::from(n) * 2 + 1),
                max_timestamp: TimestampMs(1_000),
            };
            assert_eq!(
                p.produce(batch(0, n * 2, n * 2 + 1)).unwrap(),
                SequenceCheck::Duplicate(expected)
            );
        }
        assert!(
            matches!(
                p.produce(batch(0, 2, 3)),
                Err(Error::OutOfOrderSequence { expected: 14, .. })
            ),
            "a batch older than the cache is out of order, as in Kafka"
        );
        assert!(
            matches!(
                p.produce(batch(0, 12, 12)),
                Err(Error::OutOfOrderSequence { .. })
            ),
            "same first sequence but different last is not a duplicate"
        );
        assert_eq!(p.log_end, Offset(14));
    }

    #[test]
    fn older_epoch_is_fenced() {
        let mut p = Partition::new();
        p.produce(batch(5, 0, 0)).unwrap();
        match p.produce(batch(4, 1, 1)) {
            Err(Error::ProducerFenced {
                current, received, ..
            }) => {
                assert_eq!((current, received), (ProducerEpoch(5), ProducerEpoch(4)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn newer_epoch_must_start_at_zero_and_resets_the_cache() {
        let mut p = Partition::new();
        p.produce(batch(0, 0, 9)).unwrap();
        assert!(matches!(
            p.produce(batch(1, 10, 10)),
            Err(Error::OutOfOrderSequence {
                expected: 0,
                received: 10,
                ..
            })
        ));
        assert_eq!(p.produce(batch(1, 0, 0)).unwrap(), SequenceCheck::Accept);
        let entry = p.table.get(PRODUCER).unwrap();
        assert_eq!(entry.epoch(), ProducerEpoch(1));
        assert_eq!(entry.batches().len(), 1, "epoch 0's batches are gone");
        assert!(matches!(
            p.produce(batch(0, 10, 10)),
            Err(Error::ProducerFenced { .. })
        ));
    }

    #[test]
    fn sequence_wraps_from_max_to_zero() {
        let mut p = Partition::new();
        p.produce(batch(0, i32::MAX - 1, i32::MAX)).unwrap();
        assert_eq!(p.produce(batch(0, 0, 3)).unwrap(), SequenceCheck::Accept);
        let mut q = Partition::new();
        q.produce(batch(0, i32::MAX - 1, 1)).unwrap();
        assert_eq!(q.produce(batch(0, 2, 2)).unwrap(), SequenceCheck::Accept);
        assert_eq!(next_sequence(i32::MAX), 0);
    }

    #[test]
    fn truncate_start_forgets_producers_wholly_before_the_log_start() {
        let mut p = Partition::new();
        p.produce(batch(0, 0, 1)).unwrap(); // 0..=1
        p.produce(ProducerBatch {
            producer_id: ProducerId(8),
            ..batch(0, 0, 2)
        })
        .unwrap(); // 2..=4
        p.table.truncate_start(Offset(2));
        assert!(p.table.get(PRODUCER).is_none());
        p.table.truncate_start(Offset(4));
        assert_eq!(p.table.len(), 1, "producer 8's last batch still ends at 4");
        p.table.truncate_start(Offset(5));
        assert!(p.table.is_empty());
    }

    #[test]
    fn producers_expire_once_their_last_timestamp_is_old_enough() {
        let mut p = Partition::new();
        p.produce(batch(0, 0, 0)).unwrap(); // timestamp 1_000
        assert_eq!(
            p.table.get(PRODUCER).unwrap().last_timestamp(),
            TimestampMs(1_000)
        );
        p.table.remove_expired(TimestampMs(1_999), 1_000);
        assert_eq!(p.table.len(), 1);
        p.table.remove_expired(TimestampMs(2_000), 1_000);
        assert!(p.table.is_empty());
        p.produce(batch(0, 57, 57)).unwrap();
        p.table.remove_expired(TimestampMs(i64::MIN), i64::MAX);
        assert_eq!(p.table.len(), 1, "no overflow on extreme clocks");
    }

    #[test]
    #[should_panic(expected = "does not follow")]
    fn recording_offsets_that_go_backwards_is_an_engine_bug() {
        let mut table = ProducerStateTable::new();
        table.record(&batch(0, 0, 0), Offset(5), Offset(5));
        table.record(&batch(0, 1, 1), Offset(5), Offset(5));
    }

    fn sample_table() -> (Offset, ProducerStateTable) {
        let mut p = Partition::new();
        for id in [9, 3, 5] {
            for n in 0..(id % 7) {
                p.produce(ProducerBatch {
                    producer_id: ProducerId(id.into()),
                    producer_epoch: ProducerEpoch(id as i16),
                    first_sequence: n,
                    last_sequence: n,
                    max_timestamp: TimestampMs(i64::from(n) * 10),
                })
                .unwrap();
            }
        }
        (p.log_end, p.table)
    }

    #[test]
    fn snapshot_round_trips_deterministically_from_any_alignment() {
        let (offset, table) = sample_table();
        let bytes = table.encode_snapshot(offset);
        assert_eq!(bytes, table.clone().encode_snapshot(offset));
        for shift in 0..16 {
            let mut shifted = vec![0u8; shift];
            shifted.extend_from_slice(&bytes);
            let (decoded_offset, decoded) =
                ProducerStateTable::decode_snapshot(Path::new("s"), &shifted[shift..]).unwrap();
            assert_eq!(decoded_offset, offset);
            assert_eq!(decoded, table);
        }
        let empty = ProducerStateTable::new().encode_snapshot(Offset::ZERO);
        assert_eq!(
            ProducerStateTable::decode_snapshot(Path::new("s"), &empty).unwrap(),
            (Offset::ZERO, ProducerStateTable::new())
        );
    }

    #[test]
    #[should_panic(expected = "would not cover")]
    fn snapshot_below_a_cached_batch_is_an_engine_bug() {
        let (offset, table) = sample_table();
        let _ = table.encode_snapshot(Offset(offset.0 - 1));
    }

    #[test]
    fn every_single_byte_flip_of_a_snapshot_is_corruption_not_a_panic() {
        let (offset, table) = sample_table();
        let bytes = table.encode_snapshot(offset);
        let path = Path::new("/data/t-0/00000000000000000010.snapshot");
        for position in 0..bytes.len() {
            for xor in [0x01u8, 0x10, 0x80, 0xff, 0x5a] {
                let mut damaged = bytes.clone();
                damaged[position] ^= xor;
                match ProducerStateTable::decode_snapshot(path, &damaged) {
                    Err(Error::CorruptCheckpoint { path: reported, .. }) => {
                        assert_eq!(reported, path);
                    }
                    other => panic!("byte {position} ^ {xor:#x}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn well_framed_snapshots_breaking_invariants_are_corruption() {
        fn body(snapshot_offset: i64, producers: Vec<(i64, Vec<(i64, i64)>)>) -> Vec<u8> {
            let body = SnapshotBody {
                snapshot_offset,
                producers: producers
                    .into_iter()
                    .map(|(producer_id, batches)| SnapshotProducer {
                        producer_id,
                        producer_epoch: 0,
                        batches: batches
                            .into_iter()
                            .map(|(first_offset, last_offset)| SnapshotBatch {
                                first_sequence: 0,
                                last_sequence: 0,
                                first_offset,
                                last_offset,
                                max_timestamp: 0,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            checkpoint::encode_frame(
                PRODUCER_SNAPSHOT_MAGIC,
                PRODUCER_SNAPSHOT_VERSION,
                &checkpoint::to_rkyv_bytes(&body),
            )
        }
        let path = Path::new("s");
        assert!(
            ProducerStateTable::decode_snapshot(path, &body(10, vec![(1, vec![(0, 0)])])).is_ok()
        );
        for (name, bytes) in [
            ("negative offset", body(-1, vec![])),
            ("no batches", body(10, vec![(1, vec![])])),
            (
                "too many batches",
                body(10, vec![(1, (0..6).map(|o| (o, o)).collect())]),
            ),
            (
                "repeated producer",
                body(10, vec![(1, vec![(0, 0)]), (1, vec![(1, 1)])]),
            ),
            (
                "unordered producers",
                body(10, vec![(2, vec![(0, 0)]), (1, vec![(1, 1)])]),
            ),
            (
                "overlapping batches",
                body(10, vec![(1, vec![(0, 3), (3, 4)])]),
            ),
            ("inverted batch", body(10, vec![(1, vec![(4, 3)])])),
            ("negative batch offset", body(10, vec![(1, vec![(-1, 0)])])),
            ("batch past snapshot", body(10, vec![(1, vec![(5, 10)])])),
            (
                "garbage",
                checkpoint::encode_frame(
                    PRODUCER_SNAPSHOT_MAGIC,
                    PRODUCER_SNAPSHOT_VERSION,
                    &[0xab; 40],
                ),
            ),
        ] {
            assert!(
                matches!(
                    ProducerStateTable::decode_snapshot(path, &bytes),
                    Err(Error::CorruptCheckpoint { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn snapshot_file_names_follow_kafka() {
        assert_eq!(
            snapshot_file_name(Offset(1_234)),
            "00000000000000001234.snapshot"
        );
        assert_eq!(
            parse_snapshot_file_name(&snapshot_file_name(Offset(i64::MAX))),
            Some(Offset(i64::MAX))
        );
        assert_eq!(
            parse_snapshot_file_name("00000000000000001234.snapshot"),
            Some(Offset(1_234))
        );
        for name in [
            "1234.snapshot",
            "00000000000000001234.log",
            "00000000000000001234.snapshot.tmp",
            "+0000000000000001234.snapshot",
            "99999999999999999999.snapshot",
            "0000000000000000123x.snapshot",
            ".snapshot",
        ] {
            assert_eq!(parse_snapshot_file_name(name), None, "{name}");
        }
    }

    /// (first sequence, last sequence, first offset, last offset).
    type CachedBatch = (i32, i32, i64, i64);

    /// The sequence rules written directly from Kafka's description, over
    /// plain tuples, to check the table against.
    #[derive(Default)]
    struct Model {
        /// producer -> (epoch, cached (first seq, last seq, first offset, last offset)).
        producers: HashMap<i64, (i16, Vec<CachedBatch>)>,
        log_end: i64,
    }

    /// The outcome the model expects for a batch.
    #[derive(Debug, PartialEq)]
    enum Expected {
        Accept,
        Duplicate(i64, i64),
        Fenced,
        OutOfOrder(i32),
    }

    impl Model {
        fn expect(&self, id: i64, epoch: i16, first: i32, last: i32) -> Expected {
            let Some((known_epoch, cached)) = self.producers.get(&id) else {
                return Expected::Accept;
            };
            if epoch < *known_epoch {
                return Expected::Fenced;
            }
            if epoch > *known_epoch {
                return if first == 0 {
                    Expected::Accept
                } else {
                    Expected::OutOfOrder(0)
                };
            }
            if let Some(&(_, _, first_offset, last_offset)) =
                cached.iter().find(|&&(f, l, _, _)| (f, l) == (first, last))
            {
                return Expected::Duplicate(first_offset, last_offset);
            }
            let (_, last_cached, _, _) = *cached.last().unwrap();
            let next = if last_cached == i32::MAX {
                0
            } else {
                last_cached + 1
            };
            if first == next {
                Expected::Accept
            } else {
                Expected::OutOfOrder(next)
            }
        }

        fn append(&mut self, id: i64, epoch: i16, first: i32, last: i32, records: i64) {
            let (first_offset, last_offset) = (self.log_end, self.log_end + records - 1);
            self.log_end += records;
            let state = self.producers.entry(id).or_insert((epoch, Vec::new()));
            if state.0 != epoch {
                *state = (epoch, Vec::new());
            }
            state.1.push((first, last, first_offset, last_offset));
            if state.1.len() > 5 {
                state.1.remove(0);
            }
        }

        /// A first sequence worth trying: the expected next one, a cached
        /// batch's (a retry), zero, or anything.
        fn pick_batch(&self, id: i64, kind: u8, any: i32, extra_records: i32) -> (i32, i32) {
            let cached = self
                .producers
                .get(&id)
                .map(|(_, cached)| cached.as_slice())
                .unwrap_or_default();
            let first = match (kind, cached.last()) {
                (0, Some(&(_, last, _, _))) => {
                    if last == i32::MAX {
                        0
                    } else {
                        last + 1
                    }
                }
                (1, Some(_)) => {
                    return {
                        let (first, last, _, _) = cached[any as usize % cached.len()];
                        (first, last)
                    }
                }
                (2, _) => 0,
                _ => any,
            };
            (first, last_of(first, extra_records))
        }
    }

    /// A batch a producer sends.
    #[derive(Clone, Debug)]
    struct Produce {
        id: i64,
        epoch: i16,
        kind: u8,
        any: i32,
        extra_records: i32,
    }

    fn produce() -> impl Strategy<Value = Produce> {
        (
            0..3i64,
            0..3i16,
            0..4u8,
            prop_oneof![0..12i32, Just(i32::MAX - 1), Just(i32::MAX)],
            0..3i32,
        )
            .prop_map(|(id, epoch, kind, any, extra_records)| Produce {
                id,
                epoch,
                kind,
                any,
                extra_records,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every produce gets the model's verdict, accepted batches are cached
        /// exactly as the model caches them, and the table survives a snapshot
        /// round trip at every step.
        #[test]
        fn sequence_rules_match_the_model(ops in proptest::collection::vec(produce(), 1..80)) {
            let mut table = ProducerStateTable::new();
            let mut model = Model::default();
            for Produce { id, epoch, kind, any, extra_records } in ops {
                let (first, last) = model.pick_batch(id, kind, any, extra_records);
                let batch = ProducerBatch {
                    producer_id: ProducerId(id),
                    producer_epoch: ProducerEpoch(epoch),
                    first_sequence: first,
                    last_sequence: last,
                    max_timestamp: TimestampMs(model.log_end),
                };
                let expected = model.expect(id, epoch, first, last);
                let actual = match table.check(&batch) {
                    Ok(SequenceCheck::Accept) => Expected::Accept,
                    Ok(SequenceCheck::Duplicate(meta)) => Expected::Duplicate(meta.first_offset.0, meta.last_offset.0),
                    Err(Error::ProducerFenced { .. }) => Expected::Fenced,
                    Err(Error::OutOfOrderSequence { expected, .. }) => Expected::OutOfOrder(expected),
                    Err(other) => panic!("unexpected error {other}"),
                };
                prop_assert_eq!(&actual, &expected);
                if actual == Expected::Accept {
                    let records = i64::from(span(first, last)) + 1;
                    table.record(&batch, Offset(model.log_end), Offset(model.log_end + records - 1));
                    model.append(id, epoch, first, last, records);
                }
                prop_assert_eq!(table.len(), model.producers.len());
                for (id, (epoch, cached)) in &model.producers {
                    let entry = table.get(ProducerId(*id)).unwrap();
                    prop_assert_eq!(entry.epoch(), ProducerEpoch(*epoch));
                    let actual: Vec<_> = entry.batches().iter()
                        .map(|b| (b.first_sequence, b.last_sequence, b.first_offset.0, b.last_offset.0))
                        .collect();
                    prop_assert_eq!(&actual, cached);
                }
                let bytes = table.encode_snapshot(Offset(model.log_end));
                let (offset, decoded) = ProducerStateTable::decode_snapshot(Path::new("s"), &bytes).unwrap();
                prop_assert_eq!(offset, Offset(model.log_end));
                prop_assert_eq!(&decoded, &table);
            }
        }

        /// Whatever bytes a snapshot file holds, decoding returns, never panics.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ProducerStateTable::decode_snapshot(Path::new("s"), &bytes);
            let framed = checkpoint::encode_frame(PRODUCER_SNAPSHOT_MAGIC, PRODUCER_SNAPSHOT_VERSION, &bytes);
            let _ = ProducerStateTable::decode_snapshot(Path::new("s"), &framed);
        }
    }
}
