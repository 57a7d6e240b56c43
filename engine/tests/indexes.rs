//! Segment indexes as Kafka bounds and spaces them: an offset index entry
//! every `index.interval.bytes`, a time index entry at the same points when
//! the greatest timestamp grew, both within `segment.index.bytes`, a segment
//! rolling when an index is full, and a closing time index entry holding
//! the segment's greatest timestamp. Each test's header names what it
//! guards against.

mod common;

use std::path::Path;

use common::{no_cache, partition_dir, segment_bases, small_segments, try_open};
use fjord_engine::batch::build_batch;
use fjord_engine::config::LogConfig;
use fjord_engine::index::{OffsetIndex, TimeIndex};
use fjord_engine::log::PartitionLog;
use fjord_engine::segment::segment_file_name;
use fjord_engine::storage::memory::MemoryStorage;
use fjord_engine::storage::Storage;
use fjord_engine::testkit::{run_model_seeds, Rng, SeedRuns};
use fjord_engine::{LeaderEpoch, Offset, TimestampMs};
use futures_lite::future::block_on;

type Log = PartitionLog<MemoryStorage>;

/// One appended batch, as the test remembers it.
#[derive(Clone, Copy, Debug)]
struct Appended {
    base: Offset,
    last: Offset,
    timestamp: TimestampMs,
}

fn open(storage: &MemoryStorage, config: &LogConfig, cache_key: u64) -> Log {
    try_open(storage, config, &no_cache(), cache_key).expect("open")
}

/// Appends a batch of `records` records all stamped `timestamp`.
fn append(log: &Log, records: usize, timestamp: TimestampMs) -> Appended {
    let values: Vec<Vec<u8>> = (0..records)
        .map(|n| format!("record {n} at {}", timestamp.0).into_bytes())
        .collect();
    let pairs: Vec<_> = values
        .iter()
        .map(|value| (None, Some(&value[..])))
        .collect();
    let batch = build_batch(&pairs, timestamp, None);
    let info = block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
    Appended {
        base: info.base_offset,
        last: info.last_offset,
        timestamp,
    }
}

fn read_file(storage: &MemoryStorage, path: &Path) -> Option<Vec<u8>> {
    block_on(storage.read_file(path)).expect("read")
}

/// What ListOffsets by timestamp must answer: the first batch from the log
/// start on whose timestamp reaches `target`.
fn expected_lookup(
    batches: &[Appended],
    log_start: Offset,
    target: TimestampMs,
) -> Option<(Offset, TimestampMs)> {
    batches
        .iter()
        .find(|batch| batch.last >= log_start && batch.timestamp >= target)
        .map(|batch| (batch.base.max(log_start), batch.timestamp))
}

fn check_lookups(log: &Log, batches: &[Appended], context: &str) {
    let log_start = log.offsets().log_start;
    let mut targets: Vec<i64> = batches.iter().map(|batch| batch.timestamp.0).collect();
    targets.extend(batches.iter().map(|batch| batch.timestamp.0 + 1));
    targets.extend([i64::MIN / 2, 0, i64::MAX / 2]);
    for target in targets {
        let target = TimestampMs(target);
        let found = block_on(log.offset_for_timestamp(target)).expect("lookup");
        assert_eq!(
            found,
            expected_lookup(batches, log_start, target),
            "{context}: offset for timestamp {}",
            target.0
        );
    }
}

/// Every closed segment's index files: at most `segment.index.bytes` each,
/// and the time index ends with the segment's greatest timestamp.
fn check_closed_index_files(storage: &MemoryStorage, config: &LogConfig, batches: &[Appended]) {
    let bases = segment_bases(storage);
    let dir = partition_dir();
    for (number, &base) in bases.iter().enumerate() {
        let Some(&next) = bases.get(number + 1) else {
            break;
        };
        let offsets = read_file(storage, &dir.join(segment_file_name(base, "index")))
            .expect("a closed segment has its offset index");
        let times = read_file(storage, &dir.join(segment_file_name(base, "timeindex")))
            .expect("a closed segment has its time index");
        let bound = config.segment_index_bytes as usize;
        assert!(
            offsets.len() <= bound,
            "segment {base}: .index of {} bytes",
            offsets.len()
        );
        assert!(
            times.len() <= bound,
            "segment {base}: .timeindex of {} bytes",
            times.len()
        );
        OffsetIndex::decode(base, &offsets).expect("offset index decodes");
        let times = TimeIndex::decode(base, &times).expect("time index decodes");
        let greatest = batches
            .iter()
            .filter(|batch| batch.base >= base && batch.base < next)
            .map(|batch| batch.timestamp)
            .max();
        if config.segment_index_bytes >= 12 {
            assert_eq!(
                times.max_timestamp(),
                greatest,
                "segment {base}: the time index must end with its greatest timestamp"
            );
        }
    }
}

/// Guards against an index growing past `segment.index.bytes` (Kafka
/// preallocates index files of that size and refuses to append past it)
/// and against a segment whose index is full taking more batches instead
/// of rolling, as Kafka's `LogSegment.shouldRoll` does.
#[test]
fn indexes_stay_within_segment_index_bytes_and_a_full_index_rolls_the_segment() {
    let storage = MemoryStorage::new(1);
    let mut config = small_segments(1 << 20);
    // An entry at every batch; room for 5 offset entries and 3 time
    // entries, one of them kept for the closing entry.
    config.index_interval_bytes = 0;
    config.segment_index_bytes = 40;
    let log = open(&storage, &config, 0);
    let batches: Vec<Appended> = (0..60)
        .map(|n| append(&log, 1, TimestampMs(1_000 + n)))
        .collect();
    // The time index is full after two entries: every segment holds two
    // batches, the segment size having nothing to do with it.
    assert_eq!(log.segment_count(), 30, "a full index rolls the segment");
    check_lookups(&log, &batches, "before close");
    block_on(log.close()).expect("close");
    check_closed_index_files(&storage, &config, &batches);

    let log = open(&storage, &config, 1);
    check_lookups(&log, &batches, "after reopen");
    let more = append(&log, 1, TimestampMs(5_000));
    assert_eq!(more.base, Offset(60));
}

/// Guards against an index of `segment.index.bytes` too small for even one
/// entry (Kafka accepts 4): every write goes to a segment of its own, and
/// reads and lookups scan, but nothing breaks. (With no time entry, a
/// closed segment's greatest timestamp is not known after a restart, and
/// time retention keeps it.)
#[test]
fn an_index_with_room_for_nothing_rolls_every_write() {
    let storage = MemoryStorage::new(2);
    let mut config = small_segments(1 << 20);
    config.segment_index_bytes = 4;
    let log = open(&storage, &config, 0);
    let batches: Vec<Appended> = (0..5)
        .map(|n| append(&log, 3, TimestampMs(100 * n)))
        .collect();
    assert_eq!(log.segment_count(), 5);
    check_lookups(&log, &batches, "no index entries");
    block_on(log.close()).expect("close");
    for base in segment_bases(&storage) {
        let path = partition_dir().join(segment_file_name(base, "index"));
        assert_eq!(read_file(&storage, &path).map(|bytes| bytes.len()), Some(0));
    }
}

/// Guards against sparse time index entries (one per `index.interval.bytes`
/// when the greatest timestamp grew, not one per batch) making ListOffsets
/// by timestamp miss records, or a segment's greatest timestamp being
/// underestimated after a clean restart, a crash (recovery scans from the
/// recovery point's index entry) or a truncation: retention would then
/// delete records younger than `retention.ms`. Timestamps go backwards
/// now and then, as producers' clocks do. Replay one seed with
/// `FJORD_MODEL_SEED=<n>`.
#[test]
fn sparse_time_entries_keep_lookups_and_retention_exact_across_restarts_and_crashes() {
    run_model_seeds(
        SeedRuns {
            cases: 40,
            steps: 300,
        },
        run_seed,
    );
}

fn run_seed(seed: u64, steps: u64) {
    let mut rng = Rng::new(seed);
    let storage = MemoryStorage::new(rng.next_u64());
    let mut config = small_segments(rng.between(4096, 32 * 1024));
    config.index_interval_bytes = rng.between(0, 2048) as u32;
    config.segment_index_bytes = match rng.below(3) {
        0 => LogConfig::default().segment_index_bytes,
        // Room for at least the closing time entry: below 12 bytes a
        // closed segment's timestamps are unknown after a restart (see
        // `an_index_with_room_for_nothing_rolls_every_write`).
        1 => rng.between(12, 64) as u32,
        _ => rng.between(64, 512) as u32,
    };
    let context = format!("seed {seed}, {config:?}");
    let mut cache_key = 0;
    let mut log = open(&storage, &config, cache_key);
    let mut batches = Vec::new();
    let mut clock = 1_000_000;
    for step in 0..steps {
        clock += rng.between(0, 20) as i64;
        let skew = if rng.chance(1, 5) {
            -(rng.between(0, 500) as i64)
        } else {
            0
        };
        let records = rng.between(1, 4) as usize;
        batches.push(append(&log, records, TimestampMs(clock + skew)));
        match rng.below(40) {
            0 => {
                block_on(log.close()).expect("close");
                cache_key += 1;
                log = open(&storage, &config, cache_key);
                check_lookups(&log, &batches, &format!("{context}, step {step}, reopened"));
            }
            1 => {
                block_on(log.flush()).expect("flush");
                block_on(log.checkpoint_recovery_point()).expect("checkpoint");
                // Appended after the recovery point and flushed: recovery
                // scans them again from the recovery point's index entry.
                // Older than what came before, so that the segment's
                // greatest timestamp is the recovery point's business.
                for _ in 0..rng.between(0, 5) {
                    let older = clock - rng.between(1, 1000) as i64;
                    batches.push(append(&log, 1, TimestampMs(older)));
                }
                block_on(log.flush()).expect("flush");
                drop(log);
                storage.crash();
                cache_key += 1;
                log = open(&storage, &config, cache_key);
                assert_eq!(
                    log.offsets().log_end,
                    batches.last().expect("some").last.next()
                );
                check_lookups(&log, &batches, &format!("{context}, step {step}, crashed"));
            }
            2 if batches.len() > 2 => {
                let keep = rng.between(1, batches.len() as u64 - 1) as usize;
                let end = block_on(log.truncate_to(batches[keep].base)).expect("truncate");
                assert_eq!(end, batches[keep].base);
                batches.truncate(keep);
                check_lookups(
                    &log,
                    &batches,
                    &format!("{context}, step {step}, truncated"),
                );
            }
            _ => {}
        }
    }
    check_lookups(&log, &batches, &context);
    log.advance_high_watermark(log.offsets().log_end);
    block_on(log.close()).expect("close");
    check_closed_index_files(&storage, &config, &batches);

    // Retention deletes exactly the oldest segments whose every record is
    // older than `retention.ms`, judging segments of an earlier run by
    // their time index.
    let bases = segment_bases(&storage);
    let retention_ms = rng.between(0, 3000) as i64;
    let now = TimestampMs(clock);
    let mut expected_start = Offset::ZERO;
    for (number, &base) in bases.iter().enumerate() {
        let Some(&next) = bases.get(number + 1) else {
            break;
        };
        let greatest = batches
            .iter()
            .filter(|batch| batch.base >= base && batch.base < next)
            .map(|batch| batch.timestamp.0)
            .max();
        match greatest {
            Some(greatest) if now.0 - greatest > retention_ms => expected_start = next,
            Some(_) => break,
            None => {}
        }
    }
    config.retention_ms = retention_ms;
    let log = open(&storage, &config, cache_key + 1);
    block_on(log.enforce_retention(now)).expect("retention");
    assert_eq!(
        log.offsets().log_start,
        expected_start,
        "{context}: retention at {} with retention.ms {retention_ms}",
        now.0
    );
    check_lookups(&log, &batches, &format!("{context}, after retention"));
}
