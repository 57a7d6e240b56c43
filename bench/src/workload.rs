//! What the benchmarks append: record batches built once and reused.

use bytes::Bytes;
use fjord_engine::batch::{build_batch, KeyValue};
use fjord_engine::{TimestampMs, TopicPartition};

/// The topic every engine benchmark writes.
pub const TOPIC: &str = "fjord-bench";

/// The benchmark's partitions, `0..count`.
///
/// # Panics
/// If `count` exceeds `i32::MAX` (Kafka partition indexes are `i32`).
#[must_use]
pub fn partitions(count: usize) -> Vec<TopicPartition> {
    (0..count)
        .map(|index| {
            TopicPartition::new(
                TOPIC,
                i32::try_from(index).expect("partition count fits an i32"),
            )
        })
        .collect()
}

/// An uncompressed, non-idempotent record batch of as many `record_bytes`
/// values as fit in `batch_bytes` (at least one), as a producer with
/// `batch.size = batch_bytes` would send it. Values are pseudo-random so the
/// batch does not look like zeros to anything that might compress or dedupe.
///
/// # Panics
/// If `record_bytes` is 0.
#[must_use]
pub fn batch(record_bytes: usize, batch_bytes: usize) -> Bytes {
    assert!(record_bytes > 0, "records carry at least one byte");
    let mut count = (batch_bytes / record_bytes).max(1);
    let payload = pseudo_random_bytes(record_bytes * count, 0x9e37_79b9_7f4a_7c15);
    loop {
        let records: Vec<KeyValue<'_>> = payload
            .chunks_exact(record_bytes)
            .take(count)
            .map(|value| (None, Some(value)))
            .collect();
        let built = build_batch(&records, TimestampMs::now(), None);
        if built.len() <= batch_bytes || count == 1 {
            return Bytes::from(built);
        }
        count -= 1;
    }
}

/// `len` bytes of xorshift64 output from `seed`.
#[must_use]
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
