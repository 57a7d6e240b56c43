//! CPU cost of the append path without a disk: `PartitionLog::append` of
//! 64 KiB batches (1 KiB records) on `MemoryStorage`, driven with
//! `futures_lite::future::block_on`, in bytes per second. It covers
//! validation (CRC-32C and the record walk), offset assignment and the
//! header rewrite, the copy into an aligned buffer with the tail block, and
//! index upkeep, plus `MemoryStorage`'s own copies; no fdatasync.
//!
//! Segments roll at 64 MiB and retention keeps 256 MiB, applied outside the
//! timed appends, so memory stays bounded however many iterations run.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord_engine::batch::{build_batch, KeyValue};
use fjord_engine::cache::BatchCache;
use fjord_engine::clock::SystemClock;
use fjord_engine::config::LogConfig;
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::memory::MemoryStorage;
use fjord_engine::{LeaderEpoch, TimestampMs, TopicPartition};
use futures_lite::future::block_on;

const BATCH_BYTES: usize = 64 * 1024;
const RECORD_VALUE_BYTES: usize = 1024;
const RETENTION_EVERY_APPENDS: u64 = 256;

/// A batch of at most 64 KiB of 1 KiB values.
fn batch() -> Vec<u8> {
    let value: Vec<u8> = (0..RECORD_VALUE_BYTES)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let mut count = BATCH_BYTES / RECORD_VALUE_BYTES;
    loop {
        let records: Vec<KeyValue<'_>> = (0..count).map(|_| (None, Some(&value[..]))).collect();
        let built = build_batch(&records, TimestampMs(1_700_000_000_000), None);
        if built.len() <= BATCH_BYTES {
            return built;
        }
        count -= 1;
    }
}

fn open_log() -> PartitionLog<MemoryStorage> {
    let config = LogConfig {
        segment_bytes: 64 << 20,
        retention_bytes: 256 << 20,
        retention_ms: -1,
        ..LogConfig::default()
    };
    block_on(PartitionLog::open(
        MemoryStorage::new(7),
        Rc::new(SystemClock),
        Path::new("/data"),
        TopicPartition::new("bench", 0),
        config,
        Rc::new(RefCell::new(BatchCache::new(64 << 20))),
        0,
    ))
    .expect("opening a log on empty memory storage")
}

fn memory_append(c: &mut Criterion) {
    let batch = batch();
    let log = open_log();
    let mut group = c.benchmark_group("memory_append");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("64KiB", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for iteration in 0..iterations {
                let started = Instant::now();
                block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
                timed += started.elapsed();
                if iteration % RETENTION_EVERY_APPENDS == 0 {
                    log.advance_high_watermark(log.offsets().log_end);
                    block_on(log.enforce_retention(TimestampMs::now())).expect("retention");
                }
            }
            timed
        });
    });
    group.finish();
}

criterion_group!(benches, memory_append);
criterion_main!(benches);
