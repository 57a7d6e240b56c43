//! Produce-path cost of checking a batch: `validate_incoming` (framing,
//! header, CRC-32C and the record walk) and the CRC alone, on uncompressed
//! batches of 1 KiB records, in bytes per second. The gap between the two is
//! what the record walk costs on top of the CRC pass.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fjord_engine::batch::{build_batch, compute_crc, validate_incoming, KeyValue};
use fjord_engine::{ProducerEpoch, ProducerId, TimestampMs};

const RECORD_VALUE_BYTES: usize = 1024;
const BATCH_SIZES_BYTES: [usize; 2] = [64 * 1024, 1024 * 1024];

/// An idempotent batch of about `batch_bytes` bytes of 1 KiB values with
/// 16-byte keys, as a producer with `batch.size = batch_bytes` sends it.
fn batch_of(batch_bytes: usize) -> Vec<u8> {
    let key = [7_u8; 16];
    let value = vec![42_u8; RECORD_VALUE_BYTES];
    let records: Vec<KeyValue<'_>> = (0..batch_bytes / RECORD_VALUE_BYTES)
        .map(|_| (Some(&key[..]), Some(&value[..])))
        .collect();
    build_batch(
        &records,
        TimestampMs(1_700_000_000_000),
        Some((ProducerId(1), ProducerEpoch(0), 0)),
    )
}

fn batch_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_validation");
    for batch_bytes in BATCH_SIZES_BYTES {
        let batch = batch_of(batch_bytes);
        let max_message_bytes = batch.len();
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let label = format!("{}KiB", batch_bytes / 1024);
        group.bench_with_input(
            BenchmarkId::new("validate_incoming", &label),
            &batch,
            |b, batch| {
                b.iter(|| validate_incoming(black_box(batch), max_message_bytes));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("compute_crc", &label),
            &batch,
            |b, batch| {
                b.iter(|| compute_crc(black_box(batch)));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, batch_validation);
criterion_main!(benches);
