//! Appends are admitted in the order their tickets were taken, whatever
//! order their tasks run in, and a request's batches are admitted together.
//!
//! Guards against a later append overtaking an earlier one on its way into
//! the log. A broker connection takes its appends' tickets one request
//! after the other; the tasks that finish them then run in whatever order
//! the executor picks, and an append may wait for room in the partition's
//! write queue, where a smaller later one would fit first. Clients without
//! idempotence rely on Kafka's order (a connection's requests for a
//! partition are appended in the order they arrive): fjord once put 71 of
//! 300 records of 500 KB out of order.
//!
//! Each seed takes tickets for appends of random sizes (beyond the 16 MiB
//! write queue in total, some of several batches), then runs them on
//! in-memory storage whose writes stay in flight for a turn, polling the
//! unfinished appends in a seeded random order each turn. Every request
//! must get a contiguous range of offsets, and the ranges must follow the
//! ticket order. `FJORD_MODEL_SEED` / `FJORD_MODEL_CASES` as in `model.rs`.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use common::{no_cache, small_segments, try_open};
use fjord_engine::batch::BatchHeader;
use fjord_engine::log::{AppendInfo, PENDING_BYTES_MAX};
use fjord_engine::storage::memory::{Faults, MemoryStorage};
use fjord_engine::testkit::{run_model_seeds, values_batch, Rng, SeedRuns};
use fjord_engine::{LeaderEpoch, TimestampMs};

const DEFAULTS: SeedRuns = SeedRuns {
    cases: 40,
    steps: 60,
};

/// Polls at most this many times per append before the test declares the
/// appends stuck.
const POLLS_PER_APPEND_MAX: usize = 10_000;

type Append<'a> = Pin<Box<dyn Future<Output = fjord_engine::Result<AppendInfo>> + 'a>>;

/// Polls every unfinished future once per turn, in an order `rng` shuffles
/// each turn, until all are done; returns their outputs by index.
fn run_in_random_order(rng: &mut Rng, mut appends: Vec<Append<'_>>) -> Vec<AppendInfo> {
    let mut outputs: Vec<Option<AppendInfo>> = vec![None; appends.len()];
    let mut context = Context::from_waker(Waker::noop());
    let mut polls = 0;
    while outputs.iter().any(Option::is_none) {
        let mut order: Vec<usize> = (0..appends.len())
            .filter(|&index| outputs[index].is_none())
            .collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for index in order {
            polls += 1;
            assert!(
                polls <= POLLS_PER_APPEND_MAX * appends.len(),
                "appends made no progress"
            );
            if let Poll::Ready(result) = appends[index].as_mut().poll(&mut context) {
                outputs[index] = Some(result.expect("append"));
            }
        }
    }
    outputs.into_iter().map(Option::unwrap).collect()
}

fn run_seed(seed: u64, requests: u64) {
    let mut rng = Rng::new(seed);
    let storage = MemoryStorage::new(seed);
    storage.set_faults(Faults {
        writes_in_flight: true,
        ..Faults::default()
    });
    let log = try_open(&storage, &small_segments(64 << 20), &no_cache(), 0).expect("open");
    let bodies: Vec<Vec<Bytes>> = (0..requests)
        .map(|_| {
            let batches = if rng.chance(1, 4) {
                rng.between(2, 3)
            } else {
                1
            };
            (0..batches)
                .map(|_| {
                    let records = rng.between(1, 3) as usize;
                    let size = if rng.chance(1, 3) {
                        rng.between(200_000, 900_000)
                    } else {
                        rng.between(10, 2_000)
                    } as usize;
                    let values = vec![vec![0u8; size / records]; records];
                    Bytes::from(values_batch(&values, TimestampMs(0), None))
                })
                .collect()
        })
        .collect();
    let total: usize = bodies.iter().flatten().map(Bytes::len).sum();
    // Tickets in request order, before any append runs.
    let appends: Vec<Append<'_>> = bodies
        .iter()
        .map(|batches| {
            let ticket = log.admission_ticket();
            Box::pin(log.append_batches(ticket, batches, LeaderEpoch(0))) as Append<'_>
        })
        .collect();
    let answers = run_in_random_order(&mut rng, appends);

    let mut expected_base = fjord_engine::Offset(0);
    for (request, (info, batches)) in answers.iter().zip(&bodies).enumerate() {
        assert_eq!(
            info.base_offset, expected_base,
            "seed {seed}: request {request} was not admitted in ticket order \
             ({total} bytes against a {PENDING_BYTES_MAX}-byte queue)"
        );
        let records: i64 = batches
            .iter()
            .map(|batch| i64::from(BatchHeader::parse(batch).expect("header").record_count))
            .sum();
        assert_eq!(
            info.last_offset.0 - info.base_offset.0 + 1,
            records,
            "seed {seed}: request {request}'s batches are not contiguous"
        );
        expected_base = info.last_offset.next();
    }
    assert_eq!(log.offsets().log_end, expected_base);
}

#[test]
fn appends_are_admitted_in_ticket_order_whatever_order_their_tasks_run() {
    run_model_seeds(DEFAULTS, run_seed);
}
