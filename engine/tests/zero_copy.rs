//! Zero-copy reads on real segment files (`O_DIRECT` storage), read twice
//! from a cold start: the first pass reads unverified data once, verifies
//! and returns it as bytes; the second sends verified ranges found through
//! the offset index without reading. Both must yield every batch, whole,
//! in offset order, with the bytes that were written. Guards against a
//! range that ends inside a batch or at a batch past the high watermark,
//! skips a batch between index entries, or loses the verified prefix; and
//! against trusting the part of a reopened active segment that recovery
//! did not scan.

mod common;

use std::os::unix::fs::FileExt;
use std::rc::Rc;

use bytes::Bytes;
use common::{fill_partition, fill_partitions, offsets};
use fjord_engine::batch::{crc_matches, split_batches};
use fjord_engine::config::LogConfig;
use fjord_engine::log::read_ahead::ReadAheadBudget;
use fjord_engine::log::ReadData;
use fjord_engine::shard::{self, EngineConfig, Shard};
use fjord_engine::{Error, Offset, TopicPartition};

const BATCHES: i64 = 200;
const FETCH_BYTES: usize = 7_000;

fn value_of(offset: i64) -> Vec<u8> {
    format!(
        "{offset:05}-{}",
        "z".repeat(900 + (offset as usize * 37) % 500)
    )
    .into_bytes()
}

/// Bytes of one read, and whether it came as a file range.
async fn read_once(
    shard: &Shard,
    partition: &TopicPartition,
    offset: Offset,
    bound: Offset,
) -> (Vec<u8>, bool) {
    let log = shard.local_log(partition).expect("partition is local");
    let read = log
        .read_zero_copy(offset, FETCH_BYTES, bound)
        .await
        .expect("read");
    match read.data {
        ReadData::Batches(batches) => (batches.concat(), false),
        ReadData::File(range) => {
            let mut bytes = vec![0; usize::try_from(range.len).unwrap()];
            range
                .file
                .read_exact_at(&mut bytes, range.position)
                .expect("range inside the file");
            (bytes, true)
        }
    }
}

/// Reads the whole partition as a consumer does, returning how many reads
/// were file ranges.
async fn read_all(shard: &Shard, partition: &TopicPartition, bound: Offset) -> usize {
    let mut next = Offset(0);
    let mut file_ranges = 0;
    while next < bound {
        let (bytes, from_file) = read_once(shard, partition, next, bound).await;
        assert!(!bytes.is_empty(), "nothing at {next:?} below {bound:?}");
        file_ranges += usize::from(from_file);
        let mut progressed = false;
        for batch in split_batches(&bytes) {
            let batch = batch.expect("whole batches only");
            assert!(crc_matches(batch), "a served batch has a bad CRC");
            let base = i64::from_be_bytes(batch[..8].try_into().unwrap());
            assert!(base < bound.0, "batch {base} is past the bound {bound:?}");
            if base < next.0 {
                // Ranges may begin at an index entry before the offset.
                continue;
            }
            assert_eq!(base, next.0, "a batch is missing before {base}");
            let value = value_of(base);
            assert!(
                batch.windows(value.len()).any(|window| window == value),
                "batch {base} does not hold its value"
            );
            next = Offset(base + 1);
            progressed = true;
        }
        assert!(progressed, "a read at {next:?} returned only older batches");
    }
    file_ranges
}

fn cold_config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = 1;
    config.cache_bytes_per_shard = 0;
    config.io_memory_bytes = 1 << 20;
    config
}

/// Segments of 64 KiB with an index entry every 2 KiB: several segments,
/// and reads that start between index entries.
fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 2048,
        ..LogConfig::default()
    }
}

/// A data directory whose partition `name`-0 holds `BATCHES` batches
/// written with `log_config`, closed cleanly; with the engine config that
/// reads it cold and the partition.
fn filled(name: &str, log_config: LogConfig) -> (tempfile::TempDir, EngineConfig, TopicPartition) {
    let dir = tempfile::tempdir().unwrap();
    let config = cold_config(dir.path());
    let partition = TopicPartition::new(name, 0);
    fill_partition(&config, &partition, log_config, BATCHES, value_of);
    (dir, config, partition)
}

/// The first segment file of `partition` under `dir`.
fn first_segment(dir: &tempfile::TempDir, partition: &TopicPartition) -> std::path::PathBuf {
    dir.path()
        .join(partition.dir_name())
        .join("00000000000000000000.log")
}

/// Flips every bit of the byte at `position` of `segment`, durably.
fn flip_byte(segment: &std::path::Path, position: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment)
        .expect("segment file");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, position).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], position).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn cold_reads_verify_once_then_serve_index_bounded_file_ranges() {
    let (_dir, config, partition) = filled("zero-copy-paths", small_segments());
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let partition = partition.clone();
        async move {
            let offsets = offsets(&shard, &partition).await;
            assert_eq!(offsets.log_end, Offset(BATCHES));
            let first = read_all(&shard, &partition, offsets.log_end).await;
            let second = read_all(&shard, &partition, offsets.log_end).await;
            // A bound below the end: nothing at or past it is served.
            let bounded = read_all(&shard, &partition, Offset(BATCHES / 2 + 3)).await;
            (first, second, bounded)
        }
    })
    .unwrap();
    let (first, second, bounded) = outcomes[0];
    assert!(
        second > first,
        "verified data is sent as file ranges: {first} file reads cold, {second} warm"
    );
    assert!(bounded > 0);
}

/// After a clean shutdown the active segment reopens with its recovery
/// point at its end, so recovery scans none of it: its batches were never
/// checked by this process, and a byte flipped on disk meanwhile must be
/// found by the read, never sent as a file range.
#[test]
fn a_reopened_active_segment_is_verified_before_it_is_sent() {
    let log_config = LogConfig {
        index_interval_bytes: 2048,
        ..LogConfig::default()
    };
    let (dir, config, partition) = filled("reopened-active", log_config);
    let segment = first_segment(&dir, &partition);
    // The last byte of the first batch: a record byte its CRC covers.
    let mut header = [0u8; 12];
    std::fs::File::open(&segment)
        .unwrap()
        .read_exact_at(&mut header, 0)
        .unwrap();
    let first_batch_end = 12 + u64::from(u32::from_be_bytes(header[8..12].try_into().unwrap()));
    flip_byte(&segment, first_batch_end - 1);
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let partition = partition.clone();
        async move {
            let log = shard.local_log(&partition).expect("partition is local");
            let read = log
                .read_zero_copy(Offset(0), FETCH_BYTES, Offset(BATCHES))
                .await;
            match read {
                Err(Error::CorruptLog { .. }) => None,
                Err(other) => Some(format!("unexpected error {other}")),
                Ok(read) => Some(match read.data {
                    ReadData::File(range) => format!("sent as a file range: {range:?}"),
                    ReadData::Batches(batches) => format!("{} batches returned", batches.len()),
                }),
            }
        }
    })
    .unwrap();
    assert_eq!(outcomes[0], None, "a corrupt batch was served");
}

/// A reader catching up from disk, with the shard's read-ahead between its
/// reads as `Shard::read_zero_copy` does it, gets every batch once and in
/// order, across segment boundaries, from chunks read ahead: each chunk
/// holds budget while it waits and gives it back when a read claims it.
#[test]
fn read_ahead_feeds_a_sequential_reader_across_segments() {
    let (_dir, config, partition) = filled("read-ahead", small_segments());
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let partition = partition.clone();
        async move {
            let log = shard.local_log(&partition).expect("partition is local");
            let budget = ReadAheadBudget::new(1 << 20);
            let (mut next, mut reads, mut claimed) = (Offset(0), 0, 0);
            while next < Offset(BATCHES) {
                let held = budget.used();
                let read = log
                    .read_zero_copy(next, FETCH_BYTES, Offset(BATCHES))
                    .await
                    .expect("read");
                reads += 1;
                if held > 0 && budget.used() == 0 {
                    claimed += 1;
                }
                let ReadData::Batches(batches) = read.data else {
                    panic!("a first pass reads unverified data");
                };
                for batch in batches.iter().flat_map(|bytes| split_batches(bytes)) {
                    let batch = batch.expect("whole batches only");
                    assert!(crc_matches(batch));
                    let base = i64::from_be_bytes(batch[..8].try_into().unwrap());
                    if base < next.0 {
                        continue;
                    }
                    assert_eq!(base, next.0, "a batch is missing before {base}");
                    assert!(batch
                        .windows(value_of(base).len())
                        .any(|window| window == value_of(base)));
                    next = Offset(base + 1);
                }
                if log.read_ahead_due() {
                    log.read_ahead(FETCH_BYTES, &budget).await;
                }
            }
            let left_over = budget.used();
            (reads, claimed, left_over)
        }
    })
    .unwrap();
    let (reads, claimed, left_over) = outcomes[0];
    // Only the first read and the one after the last chunk lack a chunk.
    assert!(
        claimed + 1 >= reads - 1,
        "{claimed} of {reads} reads found their chunk read ahead"
    );
    // Past the log end there is nothing to read ahead.
    assert_eq!(left_over, 0);
}

/// Chunks read ahead are unchecked bytes: the read that claims one
/// verifies it, so a batch corrupted on disk before it was read ahead is
/// refused, never served.
#[test]
fn a_corrupt_batch_read_ahead_is_refused_when_claimed() {
    let (dir, config, partition) = filled("read-ahead-corrupt", LogConfig::default());
    let segment = first_segment(&dir, &partition);
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let partition = partition.clone();
        let segment = segment.clone();
        async move {
            let log = shard.local_log(&partition).expect("partition is local");
            let budget = ReadAheadBudget::new(1 << 20);
            let first = log
                .read_zero_copy(Offset(0), FETCH_BYTES, Offset(BATCHES))
                .await
                .expect("intact");
            let ReadData::Batches(batches) = first.data else {
                panic!("unverified data is read");
            };
            let stop: usize = batches.iter().map(Bytes::len).sum();
            let next = batches
                .last()
                .map(|batch| {
                    let base = i64::from_be_bytes(batch[..8].try_into().unwrap());
                    let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
                    Offset(base + i64::from(last_delta) + 1)
                })
                .unwrap();
            // A record byte of the batch right after the first read.
            flip_byte(&segment, stop as u64 + 100);
            assert!(log.read_ahead_due());
            assert!(log.read_ahead(FETCH_BYTES, &budget).await.is_some());
            let claimed = log.read_zero_copy(next, FETCH_BYTES, Offset(BATCHES)).await;
            matches!(claimed, Err(Error::CorruptLog { .. }))
        }
    })
    .unwrap();
    assert!(outcomes[0], "the corrupt batch read ahead was served");
}

/// Partitions of the descriptor test.
const MANY_PARTITIONS: i32 = 64;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists this process's descriptors")
        .count()
}

/// A consumer reading many partitions from disk must not leave the broker
/// holding a descriptor per partition read: reading 10,000 partitions kept
/// a second descriptor open for each and ran a broker out of them
/// (`bench/RESULTS.md`, session 8). Each read's descriptor lives as long as
/// its file range.
#[test]
fn reading_many_partitions_from_disk_keeps_no_descriptor_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let config = cold_config(dir.path());
    let partitions: Vec<TopicPartition> = (0..MANY_PARTITIONS)
        .map(|index| TopicPartition::new("many", index))
        .collect();
    fill_partitions(&config, &partitions, LogConfig::default(), 20, value_of);
    let growth = shard::run(&config, move |shard: Rc<Shard>| {
        let partitions = partitions.clone();
        async move {
            let before = open_descriptors();
            for _pass in 0..2 {
                for partition in &partitions {
                    let end = offsets(&shard, partition).await.log_end;
                    read_all(&shard, partition, end).await;
                }
            }
            open_descriptors().saturating_sub(before)
        }
    })
    .unwrap()[0];
    assert!(
        growth < 8,
        "{growth} descriptors more after reading {MANY_PARTITIONS} partitions twice"
    );
}
