//! Model-based test of log compaction: a seeded workload of keyed writes,
//! tombstones, plain and compressed batches, cleaning passes with offset maps
//! of every size, clean restarts, crashes, and crashes at every step of a
//! cleaning pass (an injected I/O failure at its n-th write, sync, rename or
//! removal, then a power loss), checked against a model of every record
//! written.
//!
//! Guards against: a key's latest value lost by a pass or by a crash during
//! one; a superseded record surviving a complete pass; a tombstone removed
//! before `delete.retention.ms` has passed since a pass first kept it;
//! records altered, duplicated or out of offset order; a fetch at an offset
//! the cleaner removed returning anything but the next batch; a swap left
//! half done (old and cleaned segments both served) after a crash.
//!
//! `FJORD_MODEL_SEED=<n>` replays one seed; `FJORD_MODEL_CASES=<n>` sets how
//! many seeds run (default 60); `FJORD_MODEL_STEPS=<n>` the steps per seed.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;
use common::{no_cache, small_segments, try_open};
use fjord_engine::batch::{build_batch, records_in, BatchHeader, Compression};
use fjord_engine::cache::BatchCache;
use fjord_engine::codec;
use fjord_engine::config::{CleanupPolicy, LogConfig};
use fjord_engine::error::RecordFault;
use fjord_engine::log::cleaner::OFFSET_MAP_ENTRY_BYTES;
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::memory::{Faults, MemoryStorage};
use fjord_engine::testkit::{keyed_batch, run_model_seeds, Rng, SeedRuns};
use fjord_engine::{Error, LeaderEpoch, Offset, TimestampMs};
use futures_lite::future::block_on;

const DEFAULTS: SeedRuns = SeedRuns {
    cases: 60,
    steps: 300,
};
const KEYS: u64 = 24;
const DELETE_RETENTION_MS: i64 = 2_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelRecord {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// Everything ever written (all of it flushed), each key's latest offset,
/// and when a pass first kept each tombstone.
#[derive(Default)]
struct Model {
    records: BTreeMap<Offset, ModelRecord>,
    latest: BTreeMap<Vec<u8>, Offset>,
    tombstone_first_cleaned: BTreeMap<Offset, i64>,
    last_clean_ms: i64,
}

/// One batch as read back, with its records decoded.
struct ReadBatch {
    header: BatchHeader,
    records: Vec<(Offset, ModelRecord)>,
}

fn decode_batch(bytes: &Bytes) -> ReadBatch {
    let header = BatchHeader::parse(bytes).expect("header");
    assert!(
        fjord_engine::batch::crc_matches(bytes),
        "read batch fails its CRC"
    );
    let section = codec::decompress(
        header.compression().expect("codec"),
        bytes.slice(fjord_engine::batch::BATCH_HEADER_BYTES..header.total_bytes()),
    )
    .expect("decompress");
    let records = records_in(&header, &section)
        .map(|record| {
            let record = record.expect("record decodes");
            (
                header.base_offset.plus(i64::from(record.offset_delta)),
                ModelRecord {
                    key: record.key.expect("every record has a key").to_vec(),
                    value: record.value.map(<[u8]>::to_vec),
                },
            )
        })
        .collect();
    ReadBatch { header, records }
}

/// Every batch from the log start to the log end, read as consumers do.
fn read_all(log: &PartitionLog<MemoryStorage>) -> Vec<ReadBatch> {
    let offsets = log.offsets();
    let mut cursor = offsets.log_start;
    let mut batches = Vec::new();
    while cursor < offsets.log_end {
        let read = block_on(log.read(cursor, 16 << 10, offsets.log_end)).expect("read");
        if read.batches.is_empty() {
            break;
        }
        for bytes in &read.batches {
            let batch = decode_batch(bytes);
            assert!(
                batch.header.last_offset() >= cursor,
                "read returned a batch before the requested offset"
            );
            cursor = batch.header.last_offset().next();
            batches.push(batch);
        }
    }
    batches
}

struct Run {
    seed: u64,
    rng: Rng,
    storage: MemoryStorage,
    cache: Rc<RefCell<BatchCache>>,
    config: LogConfig,
    log: Option<PartitionLog<MemoryStorage>>,
    opens: u64,
    model: Model,
    now_ms: i64,
}

impl Run {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let storage = MemoryStorage::new(seed);
        let cache = Rc::new(RefCell::new(BatchCache::new(
            rng.between(0, 1) as usize * (64 << 10),
        )));
        let mut config = small_segments(4096 * rng.between(1, 3));
        config.cleanup_policy = if rng.chance(1, 4) {
            CleanupPolicy {
                delete: true,
                compact: true,
            }
        } else {
            CleanupPolicy::COMPACT
        };
        config.min_cleanable_dirty_ratio = [0.0, 0.2, 0.5][rng.between(0, 2) as usize];
        config.delete_retention_ms = DELETE_RETENTION_MS;
        let log = try_open(&storage, &config, &cache, 0).expect("open");
        Self {
            seed,
            rng,
            storage,
            cache,
            config,
            log: Some(log),
            opens: 1,
            model: Model::default(),
            now_ms: 1_000_000,
        }
    }

    fn log(&self) -> &PartitionLog<MemoryStorage> {
        self.log.as_ref().expect("log is open")
    }

    fn reopen(&mut self, crash: bool) {
        let log = self.log.take().expect("log is open");
        if crash {
            drop(log);
            self.storage.crash();
        } else {
            let _ = block_on(log.close());
            drop(log);
        }
        self.storage.set_faults(Faults::default());
        let log = try_open(&self.storage, &self.config, &self.cache, self.opens)
            .unwrap_or_else(|error| panic!("seed {}: reopen failed: {error}", self.seed));
        self.opens += 1;
        // Everything was flushed, so nothing may be lost: consumers may read
        // all of it.
        log.advance_high_watermark(log.offsets().log_end);
        self.log = Some(log);
    }

    fn append(&mut self) {
        let count = self.rng.between(1, 5) as usize;
        let mut owned = Vec::new();
        for _ in 0..count {
            let key = format!("key-{}", self.rng.between(0, KEYS - 1)).into_bytes();
            let value = if self.rng.chance(1, 8) {
                None
            } else {
                let len = self.rng.between(1, 200) as usize;
                Some(self.rng.bytes(len))
            };
            owned.push((key, value));
        }
        let mut batch = Bytes::from(keyed_batch(&owned, TimestampMs(self.now_ms)));
        if self.rng.chance(1, 3) {
            let codec = [Compression::Gzip, Compression::Lz4, Compression::Zstd]
                [self.rng.between(0, 2) as usize];
            batch = codec::recompress(batch, codec).expect("compress");
        }
        let info = block_on(self.log().append(&batch, LeaderEpoch(0))).expect("append");
        block_on(self.log().flush()).expect("flush");
        self.log().advance_high_watermark(info.last_offset.next());
        for (index, (key, value)) in owned.into_iter().enumerate() {
            let offset = info.base_offset.plus(index as i64);
            self.model.latest.insert(key.clone(), offset);
            self.model
                .records
                .insert(offset, ModelRecord { key, value });
        }
    }

    fn keyless_append_is_refused(&self) {
        let batch = build_batch(&[(None, Some(b"v"))], TimestampMs(self.now_ms), None);
        let refused = block_on(self.log().append(&batch, LeaderEpoch(0)));
        assert!(
            matches!(
                &refused,
                Err(Error::InvalidRecords { fault: RecordFault::KeylessInCompactedTopic, records })
                    if records.iter().map(|record| record.batch_index).eq([0])
            ),
            "seed {}: {refused:?}",
            self.seed
        );
    }

    fn budget(&mut self) -> usize {
        OFFSET_MAP_ENTRY_BYTES * [5, 12, 1 << 16][self.rng.between(0, 2) as usize]
    }

    fn clean(&mut self) {
        let budget = self.budget();
        let now = TimestampMs(self.now_ms);
        let stats = block_on(self.log().clean(now, budget))
            .unwrap_or_else(|error| panic!("seed {}: clean failed: {error}", self.seed));
        if stats.segments_written == 0 {
            return;
        }
        self.note_pass(stats.first_dirty_offset);
        let batches = self.verify();
        // Below the cleaner checkpoint, only each key's latest record there
        // is left (a later one may still be in the part not cleaned).
        let mut latest_below = BTreeMap::new();
        for (offset, record) in self.model.records.range(..stats.first_dirty_offset) {
            latest_below.insert(record.key.clone(), *offset);
        }
        for batch in &batches {
            for (offset, record) in &batch.records {
                if *offset < stats.first_dirty_offset {
                    assert_eq!(
                        latest_below[&record.key], *offset,
                        "seed {}: superseded record at {offset:?} survived a pass",
                        self.seed
                    );
                }
            }
        }
    }

    /// A pass that fails at its `n`-th I/O of one kind, then a power loss.
    fn crash_during_clean(&mut self) {
        let n = Some(self.rng.between(0, 12));
        let faults = match self.rng.between(0, 2) {
            0 => Faults {
                write_error_in: n,
                ..Faults::default()
            },
            1 => Faults {
                sync_error_in: n,
                ..Faults::default()
            },
            _ => Faults {
                dir_error_in: n,
                ..Faults::default()
            },
        };
        let budget = self.budget();
        self.storage.set_faults(faults);
        let now = TimestampMs(self.now_ms);
        let outcome = block_on(self.log().clean(now, budget));
        self.storage.set_faults(Faults::default());
        match outcome {
            Ok(stats) if stats.segments_written > 0 => self.note_pass(stats.first_dirty_offset),
            Ok(_) => {}
            // The pass may have committed (and recovery completes it), giving
            // the tombstones it kept a horizon from now; which ones is not
            // known, so every tombstone not yet given one may go from then on.
            Err(_) => self.note_pass(Offset(i64::MAX)),
        }
        self.reopen(true);
        self.verify();
    }

    /// Records a pass at the current time that mapped the log below
    /// `mapped_end`: the latest tombstones there got their delete horizon.
    fn note_pass(&mut self, mapped_end: Offset) {
        self.model.last_clean_ms = self.now_ms;
        for &offset in self.model.latest.values() {
            if offset < mapped_end && self.model.records[&offset].value.is_none() {
                self.model
                    .tombstone_first_cleaned
                    .entry(offset)
                    .or_insert(self.now_ms);
            }
        }
    }

    /// Checks the whole log against the model; returns what it read.
    fn verify(&self) -> Vec<ReadBatch> {
        let seed = self.seed;
        let batches = read_all(self.log());
        let mut previous: Option<Offset> = None;
        let mut present = BTreeMap::new();
        for batch in &batches {
            if let Some(previous) = previous {
                assert!(
                    batch.header.base_offset > previous,
                    "seed {seed}: batches out of offset order"
                );
            }
            previous = Some(batch.header.last_offset());
            for (offset, record) in &batch.records {
                assert_eq!(
                    self.model.records.get(offset),
                    Some(record),
                    "seed {seed}: record at {offset:?} is not what was written"
                );
                assert!(
                    present.insert(*offset, record.clone()).is_none(),
                    "seed {seed}: offset {offset:?} served twice"
                );
            }
        }
        for (key, &offset) in &self.model.latest {
            let record = &self.model.records[&offset];
            if present.contains_key(&offset) {
                continue;
            }
            assert!(
                record.value.is_none(),
                "seed {seed}: latest value of {key:?} at {offset:?} is lost"
            );
            let first_cleaned = self.model.tombstone_first_cleaned.get(&offset);
            assert!(
                first_cleaned
                    .is_some_and(|&first| self.model.last_clean_ms >= first + DELETE_RETENTION_MS),
                "seed {seed}: tombstone at {offset:?} removed before delete.retention.ms"
            );
        }
        self.check_fetches(&batches);
        batches
    }

    /// A fetch at any offset, removed or not, starts with the first batch
    /// holding an offset at or after it.
    fn check_fetches(&self, batches: &[ReadBatch]) {
        let offsets = self.log().offsets();
        if offsets.log_start >= offsets.high_watermark {
            return;
        }
        let mut rng = Rng::new(self.seed ^ offsets.log_end.0 as u64);
        for _ in 0..8 {
            let target =
                rng.offset_between(offsets.log_start, Offset(offsets.high_watermark.0 - 1));
            let read = block_on(self.log().read(target, 1, offsets.high_watermark)).expect("read");
            let expected = batches
                .iter()
                .find(|batch| batch.header.last_offset() >= target)
                .map(|batch| batch.header.base_offset);
            let got = read
                .batches
                .first()
                .map(|bytes| BatchHeader::parse(bytes).expect("header").base_offset);
            assert_eq!(
                got, expected,
                "seed {}: fetch at {target:?} did not return the next batch",
                self.seed
            );
        }
    }

    fn step(&mut self) {
        self.now_ms += self.rng.between(0, 400) as i64;
        match self.rng.between(0, 99) {
            0..=59 => self.append(),
            60..=74 => self.clean(),
            75..=79 => self.crash_during_clean(),
            80..=83 => {
                self.reopen(false);
                self.verify();
            }
            84..=87 => {
                self.reopen(true);
                self.verify();
            }
            88 => self.keyless_append_is_refused(),
            _ => {
                self.verify();
            }
        }
    }
}

fn run_seed(seed: u64, steps: u64) {
    let mut run = Run::new(seed);
    for _ in 0..steps {
        run.step();
    }
    // Long after the last write, passes remove every tombstone and leave
    // exactly one record per live key in the cleaned part.
    run.now_ms += DELETE_RETENTION_MS * 10;
    let mut mapped_end = Offset::ZERO;
    for _ in 0..3 {
        let stats = block_on(run.log().clean(TimestampMs(run.now_ms), 1 << 20)).expect("clean");
        if stats.segments_written > 0 {
            run.note_pass(stats.first_dirty_offset);
            mapped_end = stats.first_dirty_offset;
        }
        run.now_ms += DELETE_RETENTION_MS * 10;
    }
    for batch in run.verify() {
        for (offset, record) in &batch.records {
            assert!(
                *offset >= mapped_end || record.value.is_some(),
                "seed {seed}: tombstone at {offset:?} outlived delete.retention.ms"
            );
        }
    }
}

#[test]
fn compaction_keeps_the_latest_value_per_key_through_crashes() {
    run_model_seeds(DEFAULTS, run_seed);
}

/// Guards against: a cleaning pass dropping the last batch of an idempotent
/// producer once its records are superseded, or changing the batch's producer
/// fields, which would make a retry of that batch look new (appended twice)
/// or out of sequence.
#[test]
fn an_idempotent_producers_emptied_last_batch_is_kept_and_retries_stay_duplicates() {
    let storage = MemoryStorage::new(11);
    let cache = no_cache();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        ..small_segments(4096)
    };
    let log = try_open(&storage, &config, &cache, 0).expect("open");
    let producer = (
        fjord_engine::ProducerId(7),
        fjord_engine::ProducerEpoch(0),
        0,
    );
    let value = vec![1u8; 100];
    let idempotent = build_batch(
        &[(Some(b"a"), Some(&value)), (Some(b"b"), Some(&value))],
        TimestampMs(1),
        Some(producer),
    );
    let filler = vec![2u8; 1000];
    block_on(async {
        let first = log
            .append(&idempotent, LeaderEpoch(0))
            .await
            .expect("append");
        // Another producer supersedes both keys, then enough records roll
        // the segment so the first batch is cleanable.
        let newer = build_batch(
            &[(Some(b"a"), Some(b"new")), (Some(b"b"), None)],
            TimestampMs(2),
            None,
        );
        log.append(&newer, LeaderEpoch(0)).await.expect("append");
        for n in 0..12u8 {
            let key = [b'f', n];
            let batch = build_batch(&[(Some(&key), Some(&filler))], TimestampMs(3), None);
            log.append(&batch, LeaderEpoch(0)).await.expect("append");
        }
        log.flush().await.expect("flush");
        log.advance_high_watermark(log.offsets().log_end);
        let stats = log.clean(TimestampMs(10), 1 << 20).await.expect("clean");
        assert!(stats.records_removed >= 2, "{stats:?}");
        let read = log
            .read(first.base_offset, 1, log.offsets().log_end)
            .await
            .expect("read");
        let header = BatchHeader::parse(&read.batches[0]).expect("header");
        assert_eq!(
            header.base_offset, first.base_offset,
            "the emptied batch is kept"
        );
        assert_eq!(header.record_count, 0);
        assert_eq!(header.last_offset(), first.last_offset);
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            producer
        );
        let retry = log
            .append(&idempotent, LeaderEpoch(0))
            .await
            .expect("retry");
        assert!(retry.duplicate, "a retry after cleaning is a duplicate");
        assert_eq!(retry.base_offset, first.base_offset);
    });
    block_on(log.close()).expect("close");
    drop(log);
    let log = try_open(&storage, &config, &cache, 1).expect("reopen");
    let retry = block_on(log.append(&idempotent, LeaderEpoch(0))).expect("retry");
    assert!(
        retry.duplicate,
        "a retry after cleaning and a restart is a duplicate"
    );
}

/// Guards against: records of a compacted log staying in the active
/// segment, which the cleaner never touches, longer than
/// `max.compaction.lag.ms` promises.
#[test]
fn a_compacted_log_rolls_once_max_compaction_lag_passed() {
    let storage = MemoryStorage::new(12);
    let cache = no_cache();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::COMPACT,
        max_compaction_lag_ms: 1,
        ..small_segments(1 << 20)
    };
    let log = try_open(&storage, &config, &cache, 0).expect("open");
    let batch = build_batch(&[(Some(b"k"), Some(b"v"))], TimestampMs(1), None);
    block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
    std::thread::sleep(std::time::Duration::from_millis(5));
    block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
    assert_eq!(
        log.segment_count(),
        2,
        "the second append rolled the segment"
    );
}
