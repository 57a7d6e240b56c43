//! Read-path cost of finding where to start: `OffsetIndex::lookup` on an
//! index of 100k entries (a full 1 GiB segment at the default
//! `index.interval.bytes` of 4 KiB has about 260k), for targets spread
//! over the whole segment, before its start and past its end.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fjord_engine::index::OffsetIndex;
use fjord_engine::Offset;

const ENTRIES: u32 = 100_000;
const BASE_OFFSET: i64 = 1_000_000;
/// Offsets and bytes between two entries (16 batches of 1 KiB records).
const OFFSETS_PER_ENTRY: u32 = 16;
const BYTES_PER_ENTRY: u32 = 4096;
const TARGETS: usize = 4096;

fn index() -> OffsetIndex {
    let mut index = OffsetIndex::new(Offset(BASE_OFFSET));
    for entry in 0..ENTRIES {
        index.append(
            Offset(BASE_OFFSET + i64::from(entry * OFFSETS_PER_ENTRY)),
            entry * BYTES_PER_ENTRY,
        );
    }
    index
}

/// Pseudo-random targets over the indexed range, so branch prediction and
/// caches see a realistic mix rather than one hot path.
fn targets() -> Vec<Offset> {
    let span = u64::from(ENTRIES * OFFSETS_PER_ENTRY);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..TARGETS)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Offset(BASE_OFFSET + (state % span) as i64)
        })
        .collect()
}

fn index_lookup(c: &mut Criterion) {
    let index = index();
    assert_eq!(index.len(), ENTRIES as usize);
    let targets = targets();
    let mut group = c.benchmark_group("index_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("100k_entries/random", |b| {
        let mut next = 0;
        b.iter(|| {
            next = (next + 1) % TARGETS;
            index.lookup(black_box(targets[next]))
        });
    });
    group.bench_function("100k_entries/last", |b| {
        let last = Offset(BASE_OFFSET + i64::from(ENTRIES * OFFSETS_PER_ENTRY));
        b.iter(|| index.lookup(black_box(last)));
    });
    group.bench_function("100k_entries/before_base", |b| {
        b.iter(|| index.lookup(black_box(Offset(0))));
    });
    group.finish();
}

criterion_group!(benches, index_lookup);
criterion_main!(benches);
