//! A follower's log fed its leader's batches: what it must end with
//! (the leader's bytes, leader epochs and producer state), what it must
//! refuse whole, and that truncation and recovery keep it so. Run on the
//! in-memory storage; the leader's log is an ordinary one appended to as
//! the produce path does.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::future::block_on;

use super::PartitionLog;
use crate::batch::{build_batch, compute_crc, BatchHeader};
use crate::cache::BatchCache;
use crate::clock::SystemClock;
use crate::config::LogConfig;
use crate::error::Error;
use crate::producer_state::ProducerStateTable;
use crate::storage::memory::{Faults, MemoryStorage};
use crate::testkit::Rng;
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampMs, TopicPartition};

type Log = PartitionLog<MemoryStorage>;

const DATA_DIR: &str = "/data";

/// Segments small enough that the workloads below roll several times.
fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(storage: &MemoryStorage, cache_key: u64) -> Log {
    block_on(PartitionLog::open(
        storage.clone(),
        Rc::new(SystemClock),
        Path::new(DATA_DIR),
        TopicPartition::new("t", 0),
        config(),
        Rc::new(RefCell::new(BatchCache::new(0))),
        cache_key,
    ))
    .expect("open")
}

fn producer_state(log: &Log) -> ProducerStateTable {
    log.state.borrow().producers.clone()
}

/// Every batch of `log` from `from` to its end, as stored.
fn batches_from(log: &Log, from: Offset) -> Vec<Bytes> {
    let end = log.offsets().log_end;
    let mut batches = Vec::new();
    let mut next = from;
    while next < end {
        let read = block_on(log.read(next, 1 << 16, end)).expect("read");
        let last = read.batches.last().expect("a batch before the log end");
        next = BatchHeader::parse(last)
            .expect("header")
            .last_offset()
            .next();
        batches.extend(read.batches);
    }
    batches
}

fn header(batch: &[u8]) -> BatchHeader {
    BatchHeader::parse(batch).expect("header")
}

fn value(rng: &mut Rng) -> Vec<u8> {
    let len = rng.between(10, 400) as usize;
    rng.bytes(len)
}

/// An idempotent producer as the leader sees it: its id, epoch and next
/// sequence, and every batch it sent (as sent, base offset 0).
struct Producer {
    id: ProducerId,
    epoch: ProducerEpoch,
    next_sequence: i32,
    sent: Vec<Vec<u8>>,
}

impl Producer {
    fn new(id: i64) -> Self {
        Self {
            id: ProducerId(id),
            epoch: ProducerEpoch(0),
            next_sequence: 0,
            sent: Vec::new(),
        }
    }

    fn batch(&mut self, rng: &mut Rng) -> Vec<u8> {
        let values: Vec<Vec<u8>> = (0..rng.between(1, 4)).map(|_| value(rng)).collect();
        let records: Vec<_> = values.iter().map(|v| (None, Some(&v[..]))).collect();
        let batch = build_batch(
            &records,
            TimestampMs(1_000 + rng.between(0, 1000) as i64),
            Some((self.id, self.epoch, self.next_sequence)),
        );
        self.next_sequence += i32::try_from(values.len()).expect("few records");
        self.sent.push(batch.clone());
        batch
    }

    fn bump_epoch(&mut self) {
        self.epoch = ProducerEpoch(self.epoch.0 + 1);
        self.next_sequence = 0;
    }
}

/// A leader log written through `epochs` leader epochs: plain batches and
/// the batches of two idempotent producers (one bumping its epoch), an
/// epoch taken with no batch, and a gap left by nothing (a leader never has
/// one; compaction's gaps are tested on their own).
fn leader_workload(seed: u64) -> (Log, Vec<Producer>) {
    let mut rng = Rng::new(seed);
    let leader = open(&MemoryStorage::new(seed), 0);
    let mut producers = vec![Producer::new(7), Producer::new(8)];
    for epoch in [0, 1, 3, 4] {
        let epoch = LeaderEpoch(epoch);
        leader.assign_leader_epoch(epoch);
        for _ in 0..rng.between(5, 30) {
            let batch = match rng.below(3) {
                0 => {
                    let values = [value(&mut rng), value(&mut rng)];
                    let records: Vec<_> = values.iter().map(|v| (None, Some(&v[..]))).collect();
                    build_batch(&records, TimestampMs(500), None)
                }
                choice => producers[choice as usize - 1].batch(&mut rng),
            };
            let info = block_on(leader.append(&batch, epoch)).expect("leader append");
            assert!(!info.duplicate);
        }
        producers[1].bump_epoch();
    }
    // Epoch 5 is taken and writes nothing: a follower learns of it only
    // from the leader's answers, never from a batch.
    leader.assign_leader_epoch(LeaderEpoch(5));
    (leader, producers)
}

/// Feeds `batches` to `follower` in runs of random length, as fetches
/// bring them.
fn replicate(follower: &Log, batches: &[Bytes], rng: &mut Rng) {
    let mut rest = batches;
    while !rest.is_empty() {
        let take = rng.between(1, 6).min(rest.len() as u64) as usize;
        let (run, after) = rest.split_at(take);
        let info = block_on(follower.append_as_follower(run)).expect("follower append");
        assert_eq!(info.base_offset, header(&run[0]).base_offset);
        assert_eq!(info.last_offset, header(&run[take - 1]).last_offset());
        rest = after;
    }
}

/// Guards against a follower whose copy differs from its leader's in any
/// way a failover would expose: rewritten bytes (offsets, epochs,
/// timestamps, CRCs), a leader-epoch history that answers
/// OffsetForLeaderEpoch otherwise, or producer state that lets a retried
/// batch in twice once the follower leads.
#[test]
fn a_follower_fed_the_leaders_batches_ends_identical_to_it() {
    for seed in 1..=8 {
        let (leader, mut producers) = leader_workload(seed);
        let follower = open(&MemoryStorage::new(seed + 100), 1);
        let batches = batches_from(&leader, Offset::ZERO);
        replicate(&follower, &batches, &mut Rng::new(seed));

        assert_eq!(follower.offsets().log_end, leader.offsets().log_end);
        assert_eq!(
            batches_from(&follower, Offset::ZERO),
            batches,
            "seed {seed}"
        );
        let mut expected_epochs = leader.leader_epochs();
        assert_eq!(
            expected_epochs.pop().map(|(epoch, _)| epoch),
            Some(LeaderEpoch(5))
        );
        assert_eq!(follower.leader_epochs(), expected_epochs, "seed {seed}");
        assert_eq!(
            producer_state(&follower),
            producer_state(&leader),
            "seed {seed}"
        );
        assert!(follower.segment_count() > 1, "the follower rolled segments");

        // The follower takes over and gets every producer's retries.
        follower.assign_leader_epoch(LeaderEpoch(6));
        let end = follower.offsets().log_end;
        for producer in &mut producers {
            let last = producer.sent.last().expect("sent").clone();
            let retried = block_on(follower.append(&last, LeaderEpoch(6))).expect("retry");
            assert!(retried.duplicate, "seed {seed}: a retry is a duplicate");
            let original = block_on(leader.append(&last, LeaderEpoch(5))).expect("retry");
            assert_eq!(
                (retried.base_offset, retried.last_offset),
                (original.base_offset, original.last_offset),
                "seed {seed}: the retry is answered with the original's offsets"
            );
            producer.next_sequence += 10;
            let skipped = producer.batch(&mut Rng::new(seed));
            let gap = block_on(follower.append(&skipped, LeaderEpoch(6)));
            assert!(
                matches!(gap, Err(Error::OutOfOrderSequence { .. })),
                "seed {seed}: {gap:?}"
            );
        }
        assert_eq!(follower.offsets().log_end, end, "nothing was appended");
    }
}

/// Guards against a follower that appends part of a fetch whose batches do
/// not follow its log (a stale or misrouted response, a log that diverged
/// without being truncated): every batch is refused, nothing changes.
#[test]
fn batches_that_do_not_follow_the_log_are_refused_whole() {
    let (leader, _) = leader_workload(11);
    let batches = batches_from(&leader, Offset::ZERO);
    let follower = open(&MemoryStorage::new(12), 1);
    block_on(follower.append_as_follower(&batches[..4])).expect("append");
    let before = (
        follower.offsets(),
        follower.leader_epochs(),
        producer_state(&follower),
    );
    let refused = |run: &[Bytes]| {
        let result = block_on(follower.append_as_follower(run));
        assert!(
            matches!(result, Err(Error::OffsetMismatch { .. })),
            "{result:?}"
        );
        assert_eq!(
            (
                follower.offsets(),
                follower.leader_epochs(),
                producer_state(&follower)
            ),
            before,
            "a refused append changes nothing"
        );
    };
    // Starting below the log end: a batch the follower already has.
    refused(&batches[3..6]);
    // Going back within the run: the next batch, then an earlier one.
    refused(&[batches[4].clone(), batches[5].clone(), batches[5].clone()]);
    refused(&[batches[5].clone(), batches[4].clone()]);
    let error = block_on(follower.append_as_follower(&batches[2..3])).unwrap_err();
    let end = header(&batches[3]).last_offset().next();
    assert!(
        matches!(error, Error::OffsetMismatch { expected, found }
            if expected == end && found == header(&batches[2]).base_offset),
        "{error:?}"
    );
    let nothing: &[Bytes] = &[];
    assert!(matches!(
        block_on(follower.append_as_follower(nothing)),
        Err(Error::InvalidBatch(_))
    ));
    // The rest, in order, still goes in.
    replicate(&follower, &batches[4..], &mut Rng::new(3));
    assert_eq!(batches_from(&follower, Offset::ZERO), batches);
}

/// Guards against storing a batch damaged between the leader's disk and
/// the follower's (the follower's copy would fail every later read and a
/// failover would serve it), or one cut short.
#[test]
fn a_corrupt_or_short_batch_is_refused() {
    let (leader, _) = leader_workload(13);
    let batches = batches_from(&leader, Offset::ZERO);
    let follower = open(&MemoryStorage::new(14), 1);
    block_on(follower.append_as_follower(&batches[..2])).expect("append");
    let before = follower.offsets();
    let mut flipped = batches[2].to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let short = batches[2].slice(..batches[2].len() - 1);
    let mut long = batches[2].to_vec();
    long.push(0);
    for bad in [Bytes::from(flipped), short, Bytes::from(long)] {
        let run = [bad, batches[3].clone()];
        let result = block_on(follower.append_as_follower(&run));
        assert!(matches!(result, Err(Error::InvalidBatch(_))), "{result:?}");
        assert_eq!(follower.offsets(), before);
    }
    replicate(&follower, &batches[2..], &mut Rng::new(5));
    assert_eq!(batches_from(&follower, Offset::ZERO), batches);
}

/// A transaction marker: a control batch of producer 7, built as the
/// leader would write it at `base` in `epoch`.
fn control_batch(base: Offset, epoch: LeaderEpoch) -> Bytes {
    let mut batch = build_batch(
        &[(Some(&[0, 0, 0, 0][..]), Some(&[0, 0, 0, 0, 0, 0][..]))],
        TimestampMs(2_000),
        Some((ProducerId(7), ProducerEpoch(0), 0)),
    );
    // The attributes' low byte (offset 22): transactional and control.
    batch[22] |= 0x30;
    // baseSequence (offset 53) is -1 in a control batch.
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    crate::batch::set_base_offset(&mut batch, base);
    crate::batch::set_partition_leader_epoch(&mut batch, epoch);
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

/// Guards against a follower that loses its leader's epochs, producer state
/// or batches when it restarts: after a kill its recovery scans what it
/// wrote since the last checkpoint (which holds no epoch of those batches)
/// and must rebuild the same state; a clean reopen must too. Gaps a
/// compacted leader log has, and transaction markers, replicate like any
/// batch.
#[test]
fn a_reopened_follower_log_recovers_the_state_it_had() {
    let (leader, _) = leader_workload(15);
    let batches = batches_from(&leader, Offset::ZERO);
    let storage = MemoryStorage::new(16);
    let follower = open(&storage, 1);
    replicate(&follower, &batches, &mut Rng::new(7));
    // A gap, as the cleaner leaves one, then a transaction marker.
    let end = follower.offsets().log_end;
    let marker = control_batch(end.plus(5), LeaderEpoch(4));
    let info =
        block_on(follower.append_as_follower(std::slice::from_ref(&marker))).expect("marker");
    assert_eq!(info.base_offset, end.plus(5));
    assert_eq!(follower.offsets().log_end, end.plus(6));
    assert_eq!(
        producer_state(&follower),
        producer_state(&leader),
        "a marker has no sequence"
    );
    block_on(follower.flush()).expect("flush");
    let state = |log: &Log| {
        (
            log.offsets().log_end,
            log.leader_epochs(),
            producer_state(log),
            batches_from(log, Offset::ZERO),
        )
    };
    let expected = state(&follower);
    assert_eq!(expected.3.last(), Some(&marker));

    let killed = open(&storage.copy(), 2);
    assert_eq!(state(&killed), expected, "after a kill");
    block_on(follower.close()).expect("close");
    let reopened = open(&storage, 3);
    assert_eq!(state(&reopened), expected, "after a clean close");
}

/// Guards against truncation leaving producer state or epochs of the cut
/// records behind (the follower would refuse the leader's next batches or
/// answer OffsetForLeaderEpoch with epochs that wrote nothing), and
/// against a follower that cannot go on from the offset it truncated to.
#[test]
fn a_truncated_follower_continues_from_the_leaders_batches() {
    let (leader, _) = leader_workload(17);
    let batches = batches_from(&leader, Offset::ZERO);
    let follower = open(&MemoryStorage::new(18), 1);
    let keep = batches.len() / 2;
    replicate(&follower, &batches[..keep], &mut Rng::new(9));
    // A tail the leader never had: this node led epoch 9 for a while.
    let cut = follower.offsets().log_end;
    follower.assign_leader_epoch(LeaderEpoch(9));
    let mut divergent = Producer::new(7);
    divergent.epoch = ProducerEpoch(5);
    let mut rng = Rng::new(19);
    for _ in 0..6 {
        block_on(follower.append(&divergent.batch(&mut rng), LeaderEpoch(9))).expect("append");
    }
    assert_eq!(
        follower.leader_epochs().last(),
        Some(&(LeaderEpoch(9), cut))
    );

    assert_eq!(block_on(follower.truncate_to(cut)).expect("truncate"), cut);
    // What a follower that never had the tail holds.
    let reference = open(&MemoryStorage::new(21), 2);
    replicate(&reference, &batches[..keep], &mut Rng::new(9));
    assert_eq!(follower.leader_epochs(), reference.leader_epochs());
    assert_eq!(producer_state(&follower), producer_state(&reference));

    replicate(&follower, &batches[keep..], &mut Rng::new(10));
    assert_eq!(batches_from(&follower, Offset::ZERO), batches);
    let mut expected_epochs = leader.leader_epochs();
    expected_epochs.pop();
    assert_eq!(follower.leader_epochs(), expected_epochs);
    assert_eq!(producer_state(&follower), producer_state(&leader));

    // Deeper, below the recovery point and several segments back: the
    // producer state comes from an older segment's snapshot.
    block_on(follower.checkpoint_recovery_point()).expect("checkpoint");
    let keep = batches.len() / 4;
    let cut = header(&batches[keep]).base_offset;
    assert!(cut < follower.state.borrow().recovery_point);
    let segments = follower.segment_count();
    assert_eq!(block_on(follower.truncate_to(cut)).expect("truncate"), cut);
    assert!(follower.segment_count() < segments);
    let reference = open(&MemoryStorage::new(22), 3);
    replicate(&reference, &batches[..keep], &mut Rng::new(11));
    assert_eq!(follower.leader_epochs(), reference.leader_epochs());
    assert_eq!(producer_state(&follower), producer_state(&reference));
    replicate(&follower, &batches[keep..], &mut Rng::new(12));
    assert_eq!(batches_from(&follower, Offset::ZERO), batches);
    assert_eq!(producer_state(&follower), producer_state(&leader));
}

/// Guards against a new leader whose epoch, taken at its log end before any
/// batch of it exists, is missing from OffsetForLeaderEpoch's answers (a
/// follower of the old epoch would not learn where it ends), and against a
/// node that keeps such an epoch once it follows another leader whose
/// batches go there.
#[test]
fn an_epoch_taken_at_the_log_end_answers_before_any_batch() {
    let log = open(&MemoryStorage::new(20), 1);
    let batch = build_batch(&[(None, Some(b"v"))], TimestampMs(1), None);
    for _ in 0..10 {
        block_on(log.append(&batch, LeaderEpoch(0))).expect("append");
    }
    log.assign_leader_epoch(LeaderEpoch(2));
    let end = Offset(10);
    assert_eq!(
        log.leader_epochs(),
        vec![(LeaderEpoch(0), Offset::ZERO), (LeaderEpoch(2), end)]
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(0)),
        Some((LeaderEpoch(0), end))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(1)),
        Some((LeaderEpoch(0), end))
    );
    assert_eq!(
        log.end_offset_for_epoch(LeaderEpoch(2)),
        Some((LeaderEpoch(2), end))
    );

    // It lost the leadership before writing; the new leader of epoch 3
    // still has epoch 1 records there.
    let mut theirs = BytesFrom::new(end);
    let run = [theirs.next(LeaderEpoch(1)), theirs.next(LeaderEpoch(3))];
    block_on(log.append_as_follower(&run)).expect("append");
    assert_eq!(
        log.leader_epochs(),
        vec![
            (LeaderEpoch(0), Offset::ZERO),
            (LeaderEpoch(1), end),
            (LeaderEpoch(3), end.next()),
        ]
    );
}

/// A node that took an epoch at its log end and lost the leadership
/// before writing follows a leader that never had that epoch: the leader
/// answers that the node's previous epoch ends at this very log end, and
/// the truncation there must drop the unwritten epoch, or the next fetch
/// gets the same answer, forever (found by the replication simulation:
/// `seed_100_a_follower_with_an_epoch_it_never_wrote_in_catches_up`).
#[test]
fn a_truncation_at_the_log_end_drops_an_epoch_never_written_in() {
    let log = open(&MemoryStorage::new(21), 1);
    let batch = build_batch(&[(None, Some(b"v"))], TimestampMs(1), None);
    for _ in 0..3 {
        block_on(log.append(&batch, LeaderEpoch(1))).expect("append");
    }
    log.assign_leader_epoch(LeaderEpoch(2));
    let end = Offset(3);
    assert_eq!(block_on(log.truncate_to(end)).expect("truncate"), end);
    assert_eq!(log.leader_epochs(), vec![(LeaderEpoch(1), Offset::ZERO)]);
    assert_eq!(log.offsets().log_end, end);
    assert_eq!(block_on(log.truncate_to(Offset(9))).expect("truncate"), end);
    assert_eq!(log.leader_epochs(), vec![(LeaderEpoch(1), Offset::ZERO)]);
}

/// The index of the first batch at or after `from` holding more than one
/// record: DeleteRecords can leave the log start inside it.
fn multi_record_batch_from(batches: &[Bytes], from: usize) -> usize {
    (from..batches.len())
        .find(|&index| header(&batches[index]).last_offset() > header(&batches[index]).base_offset)
        .expect("the workload writes two-record batches")
}

/// Guards against a follower that was away while retention or
/// DeleteRecords moved its leader's log start past its log end: it must
/// drop everything it holds and go on from the leader's log start, with
/// no leader epoch or producer of the dropped records left, even when
/// that log start lies inside a batch (the follower starts again at the
/// batch's base to take it, then follows the leader's log start).
#[test]
fn a_follower_behind_the_leaders_log_start_starts_afresh_there() {
    let (leader, _) = leader_workload(23);
    let batches = batches_from(&leader, Offset::ZERO);
    let follower = open(&MemoryStorage::new(24), 1);
    replicate(&follower, &batches[..batches.len() / 4], &mut Rng::new(25));
    let follower_end = follower.offsets().log_end;
    let leader_end = leader.offsets().log_end;
    leader.advance_high_watermark(leader_end);
    let straddling = multi_record_batch_from(&batches, batches.len() / 2);
    let leader_start = header(&batches[straddling]).base_offset.next();
    assert!(leader_start > follower_end);
    block_on(leader.delete_records(leader_start)).expect("delete records");

    // Below its log end the leader's log start is refused, as a full
    // truncation there could leave old records above the new start.
    assert!(matches!(
        block_on(follower.truncate_fully_and_start_at(Offset::ZERO)),
        Err(Error::OffsetOutOfRange { .. })
    ));
    block_on(follower.truncate_fully_and_start_at(leader_start)).expect("truncate fully");
    let offsets = follower.offsets();
    assert_eq!(
        (offsets.log_start, offsets.high_watermark, offsets.log_end),
        (leader_start, leader_start, leader_start)
    );
    assert_eq!(follower.segment_count(), 1);
    assert!(follower.leader_epochs().is_empty());
    assert_eq!(producer_state(&follower), ProducerStateTable::default());

    // The leader answers from the batch holding its log start.
    let from_leader = batches_from(&leader, leader_start);
    assert_eq!(from_leader[0], batches[straddling]);
    assert!(matches!(
        block_on(follower.append_as_follower(&from_leader[..1])),
        Err(Error::OffsetMismatch { .. })
    ));
    let base = header(&from_leader[0]).base_offset;
    block_on(follower.truncate_fully_and_start_at(base)).expect("start at the batch");
    replicate(&follower, &from_leader, &mut Rng::new(26));
    follower.advance_high_watermark(leader_end);
    block_on(follower.delete_records(leader_start)).expect("follow the log start");
    let offsets = |log: &Log| {
        let offsets = log.offsets();
        (offsets.log_start, offsets.high_watermark, offsets.log_end)
    };
    assert_eq!(offsets(&follower), offsets(&leader));
    assert_eq!(batches_from(&follower, leader_start), from_leader);
    let mut expected_epochs = leader.leader_epochs();
    expected_epochs.pop();
    assert_eq!(follower.leader_epochs(), expected_epochs);
}

/// Guards against a full truncation that a crash cuts short coming back
/// as a log that is neither the old one nor the new empty one: old
/// records above the new log start, a log start over records that were
/// removed, or leader epochs and producer snapshots of removed records.
/// Every file removal and every checkpoint write of the truncation fails
/// in turn; what a `kill -9` and a power loss at that moment leave must
/// open as one of the two logs.
#[test]
fn a_full_truncation_cut_short_recovers_the_old_log_or_the_new_one() {
    let (leader, _) = leader_workload(27);
    let batches = batches_from(&leader, Offset::ZERO);
    let new_start = leader.offsets().log_end.next();
    let (mut saw_old, mut saw_new) = (false, false);
    let removals = (0..).map(|failing| Faults {
        dir_error_in: Some(failing),
        ..Faults::default()
    });
    let checkpoints = (0..).map(|failing| Faults {
        sync_error_in: Some(failing),
        ..Faults::default()
    });
    for (seed, faults) in (28..).zip(checkpoints.take(2).chain(removals)) {
        let storage = MemoryStorage::new(seed);
        let log = open(&storage, 1);
        replicate(&log, &batches, &mut Rng::new(29));
        block_on(log.flush()).expect("flush");
        block_on(log.checkpoint_recovery_point()).expect("checkpoint");
        assert!(log.segment_count() > 1);
        let old = log.offsets();
        let old_epochs = log.leader_epochs();
        let failing = format!("{faults:?}");
        storage.set_faults(faults);
        let finished = block_on(log.truncate_fully_and_start_at(new_start)).is_ok();
        for restarted in [storage.copy(), storage.after_crash()] {
            let reopened = open(&restarted, 2);
            let offsets = reopened.offsets();
            if offsets.log_end == new_start {
                saw_new = true;
                assert_eq!(offsets.log_start, new_start, "failing {failing}");
                assert_eq!(reopened.segment_count(), 1, "failing {failing}");
                assert!(reopened.leader_epochs().is_empty(), "failing {failing}");
                assert_eq!(producer_state(&reopened), ProducerStateTable::default());
            } else {
                assert!(!finished, "failing {failing}: a finished truncation stays");
                saw_old = true;
                assert_eq!(
                    (offsets.log_start, offsets.log_end),
                    (old.log_start, old.log_end),
                    "failing {failing}"
                );
                assert_eq!(batches_from(&reopened, Offset::ZERO), batches);
                assert_eq!(reopened.leader_epochs(), old_epochs, "failing {failing}");
            }
        }
        if finished && failing.contains("dir_error_in") {
            break;
        }
    }
    assert!(
        saw_old && saw_new,
        "the faults hit before and after the commit"
    );
}

/// One-record batches as a leader stores them, at consecutive offsets.
struct BytesFrom {
    next_offset: Offset,
}

impl BytesFrom {
    fn new(next_offset: Offset) -> Self {
        Self { next_offset }
    }

    fn next(&mut self, epoch: LeaderEpoch) -> Bytes {
        let mut batch = build_batch(&[(None, Some(b"theirs"))], TimestampMs(1), None);
        crate::batch::set_base_offset(&mut batch, self.next_offset);
        crate::batch::set_partition_leader_epoch(&mut batch, epoch);
        self.next_offset = self.next_offset.next();
        Bytes::from(batch)
    }
}
