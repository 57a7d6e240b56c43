//! Disk failure scenarios for one partition log on in-memory storage with
//! injected faults: failed writes and fdatasyncs, short writes, torn tails,
//! bit rot in segments and checkpoints, lost index files. Each test's header
//! names the failure it guards against.

mod common;

use common::{decode, fill_partition, no_cache, offsets, partition_dir, small_segments, try_open};
use fjord_engine::batch::build_batch;
use fjord_engine::config::LogConfig;
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::memory::{Faults, MemoryStorage};
use fjord_engine::storage::Storage;
use fjord_engine::{Error, LeaderEpoch, Offset, TimestampMs};
use futures_lite::future::block_on;

type Log = PartitionLog<MemoryStorage>;

fn value_of(offset: i64) -> Vec<u8> {
    format!("value-{offset}-{}", "x".repeat(300)).into_bytes()
}

/// Appends `count` one-record batches whose values name their offsets.
fn append_records(log: &Log, count: usize) -> Offset {
    block_on(async {
        let mut end = log.offsets().log_end;
        for _ in 0..count {
            let batch = build_batch(&[(None, Some(&value_of(end.0)))], TimestampMs(end.0), None);
            let info = log.append(&batch, LeaderEpoch(0)).await.expect("append");
            assert_eq!(info.base_offset, end);
            end = info.last_offset.next();
        }
        end
    })
}

/// Reads `from..to` one batch at a time and checks every record's value.
fn check_records(log: &Log, from: Offset, to: Offset) {
    let mut next = from;
    while next < to {
        let read = block_on(log.read(next, 1, to))
            .unwrap_or_else(|error| panic!("read at {next}: {error}"));
        assert_eq!(read.batches.len(), 1, "one batch at {next}");
        let (header, records) = decode(&read.batches[0]);
        assert_eq!(header.base_offset, next);
        assert_eq!(records[0].value.as_deref(), Some(&value_of(next.0)[..]));
        next = header.last_offset().next();
    }
}

fn open(storage: &MemoryStorage, config: &LogConfig, cache_key: u64) -> Log {
    try_open(storage, config, &no_cache(), cache_key).expect("open")
}

/// Guards against a partition that keeps taking appends after the disk
/// failed a write, when the bytes past its last flush are unknown; and
/// against losing flushed records or readable written ones because of it.
#[test]
fn write_error_poisons_the_partition_until_reopened() {
    let storage = MemoryStorage::new(11);
    let config = small_segments(1 << 20);
    let log = open(&storage, &config, 0);
    let flushed = append_records(&log, 10);
    block_on(log.flush()).expect("flush");
    let written = append_records(&log, 5);

    storage.set_faults(Faults {
        write_error_in: Some(0),
        ..Faults::default()
    });
    let batch = build_batch(&[(None, Some(b"lost"))], TimestampMs(0), None);
    let failed = block_on(log.append(&batch, LeaderEpoch(0)));
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    let again = block_on(log.append(&batch, LeaderEpoch(0)));
    assert!(matches!(again, Err(Error::Poisoned { .. })), "{again:?}");
    let flush = block_on(log.flush());
    assert!(matches!(flush, Err(Error::Poisoned { .. })), "{flush:?}");
    assert_eq!(
        log.offsets().log_end,
        written,
        "the failed batch is not visible"
    );
    check_records(&log, Offset::ZERO, written);

    storage.crash();
    let log = open(&storage, &config, 1);
    let end = log.offsets().log_end;
    assert!(flushed <= end && end <= written, "recovered to {end}");
    check_records(&log, Offset::ZERO, end);
    assert_eq!(append_records(&log, 1), end.next(), "appends continue");
}

/// Guards against treating data as durable after fdatasync failed (the
/// kernel may have dropped the dirty pages: retrying the sync and
/// succeeding would silently lose them), i.e. against the "fsyncgate" bug.
#[test]
fn fdatasync_error_poisons_the_partition() {
    let storage = MemoryStorage::new(12);
    let config = small_segments(1 << 20);
    let log = open(&storage, &config, 0);
    let flushed = append_records(&log, 10);
    block_on(log.flush()).expect("flush");
    let written = append_records(&log, 5);

    storage.set_faults(Faults {
        sync_error_in: Some(0),
        ..Faults::default()
    });
    let failed = block_on(log.flush());
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    assert_eq!(log.offsets().flushed, flushed, "nothing counted as flushed");
    let batch = build_batch(&[(None, Some(b"late"))], TimestampMs(0), None);
    let append = block_on(log.append(&batch, LeaderEpoch(0)));
    assert!(matches!(append, Err(Error::Poisoned { .. })), "{append:?}");
    let flush = block_on(log.flush());
    assert!(matches!(flush, Err(Error::Poisoned { .. })), "{flush:?}");
    check_records(&log, Offset::ZERO, written);

    storage.crash();
    let log = open(&storage, &config, 1);
    let end = log.offsets().log_end;
    assert!(flushed <= end && end <= written, "recovered to {end}");
    check_records(&log, Offset::ZERO, end);
}

/// Guards against a short write (the device took only part of an aligned
/// write) leaving a hole in the segment that the log then treats as written.
#[test]
fn short_writes_are_completed_transparently() {
    let storage = MemoryStorage::new(13);
    let config = small_segments(1 << 20);
    let log = open(&storage, &config, 0);
    let big = vec![42u8; 3 * 4096 + 100];
    let mut end = Offset::ZERO;
    for round in 0..6 {
        storage.set_faults(Faults {
            short_write_in: Some(round % 2),
            ..Faults::default()
        });
        let batch = build_batch(&[(None, Some(&big[..]))], TimestampMs(round as i64), None);
        let info = block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
        assert_eq!(info.base_offset, end);
        end = append_records(&log, 1);
        assert_eq!(end, info.last_offset.plus(2));
    }
    block_on(log.close()).expect("close");
    let log = open(&storage, &config, 1);
    assert_eq!(log.offsets().log_end, end);
    let mut next = Offset::ZERO;
    while next < end {
        let read = block_on(log.read(next, 1, end)).expect("read");
        let (header, records) = decode(&read.batches[0]);
        let value = records[0].value.as_deref().expect("value");
        assert!(
            value == &big[..] || value == &value_of(next.0)[..],
            "batch at {next} reads back intact"
        );
        next = header.last_offset().next();
    }
}

/// Guards against recovery keeping a half-written batch at the tail (torn at
/// a sector boundary by a power loss), or cutting too much, or appends after
/// recovery landing at the wrong offset or position.
#[test]
fn torn_tail_after_crash_is_truncated_and_appends_continue() {
    let config = small_segments(16 * 1024);
    let mut partial = 0;
    for seed in 0..64 {
        let storage = MemoryStorage::new(seed);
        let log = open(&storage, &config, 0);
        let flushed = append_records(&log, 20);
        block_on(log.flush()).expect("flush");
        let written = append_records(&log, 3 + seed as usize % 20);
        storage.crash();

        let log = open(&storage, &config, 1);
        let end = log.offsets().log_end;
        assert!(
            flushed <= end && end <= written,
            "seed {seed}: recovered to {end}"
        );
        if flushed < end && end < written {
            partial += 1;
        }
        check_records(&log, Offset::ZERO, end);
        let after = append_records(&log, 5);
        assert_eq!(after, end.plus(5), "seed {seed}: appends continue at {end}");
        block_on(log.close()).expect("close");
        let log = open(&storage, &config, 2);
        assert_eq!(log.offsets().log_end, after, "seed {seed}");
        check_records(&log, Offset::ZERO, after);
    }
    assert!(partial > 0, "some crashes kept part of the unflushed tail");
}

/// Guards against serving a batch whose bytes rotted on disk in a closed
/// segment (which recovery trusts without reading), and against one bad
/// segment making the rest of the log unreadable.
#[test]
fn corrupt_batch_in_a_closed_segment_is_never_served() {
    let storage = MemoryStorage::new(14);
    let config = small_segments(4096);
    let log = open(&storage, &config, 0);
    let end = append_records(&log, 60);
    block_on(log.close()).expect("close");
    assert!(log.segment_count() >= 3, "several segments");
    let first_segment = partition_dir().join(fjord_engine::segment::segment_file_name(
        Offset::ZERO,
        "log",
    ));
    // Inside the first batch's value.
    storage.corrupt(&first_segment, 200, b"rot");

    let log = open(&storage, &config, 1);
    assert_eq!(
        log.offsets().log_end,
        end,
        "recovery does not rescan trusted segments"
    );
    let read = block_on(log.read(Offset::ZERO, 1 << 20, end));
    assert!(matches!(read, Err(Error::CorruptLog { .. })), "{read:?}");
    // No read returns the corrupt batch; later segments read fine.
    let mut next = Offset(1);
    let mut served = 0;
    while next < end {
        match block_on(log.read(next, 1, end)) {
            Ok(read) => {
                let (header, records) = decode(&read.batches[0]);
                assert_ne!(header.base_offset, Offset::ZERO);
                assert_eq!(
                    records[0].value.as_deref(),
                    Some(&value_of(header.base_offset.0)[..])
                );
                next = header.last_offset().next();
                served += 1;
            }
            Err(Error::CorruptLog { .. }) => next = next.next(),
            Err(error) => panic!("read at {next}: {error}"),
        }
    }
    assert!(
        served >= 40,
        "the other segments still read ({served} batches)"
    );
}

/// Guards against a checkpoint damaged on disk crashing the broker at
/// startup (or being silently ignored) instead of being reported.
#[test]
fn corrupt_checkpoint_is_reported_on_open() {
    let storage = MemoryStorage::new(15);
    let config = small_segments(4096);
    let log = open(&storage, &config, 0);
    append_records(&log, 30);
    block_on(log.close()).expect("close");
    let checkpoint = partition_dir().join(fjord_engine::checkpoint::PARTITION_CHECKPOINT_FILE);
    for position in [0, 5, 12, 20] {
        let original = block_on(storage.read_file(&checkpoint))
            .unwrap()
            .expect("checkpoint");
        storage.corrupt(&checkpoint, position, &[original[position] ^ 0x55]);
        let opened = try_open(&storage, &config, &no_cache(), 1);
        assert!(
            matches!(opened, Err(Error::CorruptCheckpoint { .. })),
            "byte {position}: {:?}",
            opened.err()
        );
        storage.corrupt(&checkpoint, position, &[original[position]]);
    }
    let log = open(&storage, &config, 2);
    check_records(&log, Offset::ZERO, Offset(30));
}

/// Guards against a lost `.index` file (deleted by an operator, or never
/// written before a crash) making a closed segment unreadable: indexes are
/// derived data and reads fall back to scanning.
#[test]
fn deleted_index_file_of_a_closed_segment_is_tolerated() {
    let storage = MemoryStorage::new(16);
    let mut config = small_segments(8192);
    config.index_interval_bytes = 512;
    let log = open(&storage, &config, 0);
    let end = append_records(&log, 60);
    block_on(log.close()).expect("close");
    let index = partition_dir().join(fjord_engine::segment::segment_file_name(
        Offset::ZERO,
        "index",
    ));
    assert!(
        block_on(storage.read_file(&index)).unwrap().is_some(),
        "index exists"
    );
    block_on(storage.remove_file(&index)).expect("remove index");

    let log = open(&storage, &config, 1);
    assert_eq!(log.offsets().log_end, end);
    check_records(&log, Offset::ZERO, end);
    let found = block_on(log.offset_for_timestamp(TimestampMs(7))).expect("by timestamp");
    assert_eq!(found, Some((Offset(7), TimestampMs(7))));
}

/// Guards against a truncation that makes an index-less closed segment the
/// active one, after which appends need an in-memory index.
#[test]
fn truncating_into_a_segment_without_index_files_then_appending() {
    let storage = MemoryStorage::new(17);
    let config = small_segments(8192);
    let log = open(&storage, &config, 0);
    let end = append_records(&log, 60);
    block_on(log.close()).expect("close");
    for extension in ["index", "timeindex"] {
        let path = partition_dir().join(fjord_engine::segment::segment_file_name(
            Offset::ZERO,
            extension,
        ));
        block_on(storage.remove_file(&path)).expect("remove index");
    }
    let log = open(&storage, &config, 1);
    assert!(end > Offset(10));
    assert_eq!(
        block_on(log.truncate_to(Offset(5))).expect("truncate"),
        Offset(5)
    );
    let after = append_records(&log, 40);
    assert_eq!(after, Offset(45));
    check_records(&log, Offset::ZERO, after);
    block_on(log.close()).expect("close");
    let log = open(&storage, &config, 2);
    check_records(&log, Offset::ZERO, after);
    let found = block_on(log.offset_for_timestamp(TimestampMs(3))).expect("by timestamp");
    assert_eq!(found, Some((Offset(3), TimestampMs(3))));
}

/// Zero-copy reads hand the broker a file range to send without reading it,
/// so the engine must verify those bytes some other way: a batch corrupted
/// on disk in a closed segment must make the zero-copy read fail rather
/// than be sent, while intact ranges come back as whole batches.
#[test]
fn zero_copy_reads_verify_before_sending_and_refuse_corrupt_batches() {
    use fjord_engine::log::ReadData;
    use fjord_engine::shard::{self, EngineConfig, Shard};
    use std::rc::Rc;

    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.shards = 1;
    config.cache_bytes_per_shard = 0;
    config.io_memory_bytes = 1 << 20;
    let partition = fjord_engine::TopicPartition::new("zero-copy", 0);
    let log_config = LogConfig {
        segment_bytes: 16 * 1024,
        ..LogConfig::default()
    };
    let appended = 60;
    fill_partition(&config, &partition, log_config, appended, |n| {
        format!("{n:04}-{}", "v".repeat(1000)).into_bytes()
    });
    // Flip a byte inside the second batch of the first (closed) segment.
    let segment = dir
        .path()
        .join("zero-copy-0")
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let second_batch = bytes.len() / 15 + 100;
    bytes[second_batch] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let partition = partition.clone();
        async move {
            let offsets = offsets(&shard, &partition).await;
            assert_eq!(offsets.log_end.0, appended);
            let log = shard.local_log(&partition).expect("partition is local");
            // A later, intact segment (the reopened active one, which
            // recovery did not scan) is read and verified, then served as
            // whole batches.
            let intact = log
                .read_zero_copy(fjord_engine::Offset(50), 4096, offsets.log_end)
                .await
                .expect("intact range");
            let ReadData::Batches(batches) = intact.data else {
                panic!("unverified data must be read, not sent as a file range");
            };
            assert!(!batches.is_empty());
            assert!(batches
                .iter()
                .all(|batch| fjord_engine::batch::crc_matches(batch)));
            // The corrupt segment is refused, never handed out.
            let corrupt = log
                .read_zero_copy(fjord_engine::Offset(0), 1 << 20, offsets.log_end)
                .await;
            matches!(corrupt, Err(fjord_engine::Error::CorruptLog { .. }))
        }
    })
    .unwrap();
    assert_eq!(outcomes, vec![true]);
}
