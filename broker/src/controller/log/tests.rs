//! Recovery of the files a crash or corruption can leave; the seeded
//! workload with snapshots, restarts and torn tails is
//! `broker/tests/metadata_model.rs`.

use super::*;
use crate::metadata::records::{BrokerEpoch, BrokerId, ProducerIdsRecord};
use fjord_engine::ProducerId;

/// A batch of one record, distinct for each `n`.
fn batch(n: i64) -> Vec<MetadataRecord> {
    vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
        broker_id: BrokerId(1),
        broker_epoch: BrokerEpoch(0),
        next_producer_id: ProducerId(n),
    })]
}

fn open(dir: &Path) -> (MetadataLog, Recovered) {
    MetadataLog::open(dir).unwrap()
}

fn flip_byte(path: &Path, position: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn batches_survive_reopening_in_order() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    assert_eq!(log.append(&batch(1)).unwrap(), Offset(0));
    let two = [batch(2), batch(3)].concat();
    assert_eq!(log.append(&two).unwrap(), Offset(1));
    drop(log);
    let (log, recovered) = open(scratch.path());
    assert_eq!(recovered.batches, [batch(1), two]);
    assert_eq!(log.next_offset(), Offset(3));
    assert_eq!(log.records_since_snapshot(), 3);
}

/// A crash after a snapshot was renamed into place but before the older
/// segments were deleted leaves them behind: their batches are in the
/// snapshot and must not be replayed again.
#[test]
fn segments_left_below_a_snapshot_are_skipped() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    log.append(&batch(2)).unwrap();
    let old_segment = segment_path(scratch.path(), Offset(0));
    let old_bytes = fs::read(&old_segment).unwrap();
    log.snapshot(&batch(2)).unwrap();
    assert!(!old_segment.exists());
    log.append(&batch(3)).unwrap();
    drop(log);
    fs::write(&old_segment, &old_bytes).unwrap();
    let (log, recovered) = open(scratch.path());
    assert_eq!(recovered.snapshot, batch(2));
    assert_eq!(recovered.batches, [batch(3)]);
    assert_eq!(log.next_offset(), Offset(3));
    assert!(!old_segment.exists());
}

/// Only the last append can be unsynced: an invalid batch in an earlier
/// segment is corruption, not a torn tail to cut.
#[test]
fn a_corrupt_batch_before_the_last_segment_fails_the_open() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    let first_frame = fs::metadata(segment_path(scratch.path(), Offset(0)))
        .unwrap()
        .len() as usize;
    log.append(&batch(2)).unwrap();
    drop(log);
    // Split the segment in two, as a roll that failed after the snapshot
    // leaves them.
    let segment = segment_path(scratch.path(), Offset(0));
    let bytes = fs::read(&segment).unwrap();
    fs::write(&segment, &bytes[..first_frame]).unwrap();
    fs::write(
        segment_path(scratch.path(), Offset(1)),
        &bytes[first_frame..],
    )
    .unwrap();
    let (_, recovered) = open(scratch.path());
    assert_eq!(recovered.batches, [batch(1), batch(2)]);
    flip_byte(&segment, FRAME_HEADER_BYTES + 2);
    let error = MetadataLog::open(scratch.path()).unwrap_err();
    assert!(
        matches!(
            error,
            LogError::CorruptFrame {
                position: 0,
                reason: Corruption::CrcMismatch { .. },
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_snapshot_that_does_not_decode_fails_the_open() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    log.snapshot(&batch(1)).unwrap();
    drop(log);
    flip_byte(
        &snapshot_path(scratch.path(), Offset(1)),
        FRAME_HEADER_BYTES,
    );
    let error = MetadataLog::open(scratch.path()).unwrap_err();
    assert!(error.to_string().contains("CRC"), "{error}");
}

#[test]
fn a_gap_between_segments_fails_the_open() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    drop(log);
    fs::write(segment_path(scratch.path(), Offset(5)), b"").unwrap();
    let error = MetadataLog::open(scratch.path()).unwrap_err();
    assert!(error.to_string().contains("ends at offset 1"), "{error}");
}

#[test]
fn a_torn_tail_is_cut_and_appends_resume_after_the_last_whole_batch() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    let segment = segment_path(scratch.path(), Offset(0));
    let whole = fs::metadata(&segment).unwrap().len();
    log.append(&batch(2)).unwrap();
    drop(log);
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(whole + 5).unwrap();
    let (mut log, recovered) = open(scratch.path());
    assert_eq!(recovered.batches, [batch(1)]);
    assert_eq!(recovered.cut_bytes, 5);
    assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
    assert_eq!(log.append(&batch(3)).unwrap(), Offset(1));
    drop(log);
    let (_, recovered) = open(scratch.path());
    assert_eq!(recovered.batches, [batch(1), batch(3)]);
}

#[test]
fn a_snapshot_being_written_at_the_crash_is_discarded() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    drop(log);
    let temporary = scratch
        .path()
        .join(format!("{:020}{SNAPSHOT_SUFFIX}{TEMPORARY_SUFFIX}", 1));
    fs::write(&temporary, b"half a snap").unwrap();
    let (_, recovered) = open(scratch.path());
    assert!(recovered.snapshot.is_empty());
    assert_eq!(recovered.batches, [batch(1)]);
    assert!(!temporary.exists());
}

/// After a failed write the log cannot know what reached the disk: it
/// refuses appends and snapshots until a restart recovers it.
#[test]
fn a_failed_append_poisons_the_log_until_it_is_reopened() {
    let scratch = tempfile::tempdir().unwrap();
    let (mut log, _) = open(scratch.path());
    log.append(&batch(1)).unwrap();
    // A read-only handle makes the next write fail.
    log.segment = File::open(segment_path(scratch.path(), Offset(0))).unwrap();
    assert!(matches!(log.append(&batch(2)), Err(LogError::Io { .. })));
    assert!(matches!(
        log.append(&batch(3)),
        Err(LogError::Poisoned { .. })
    ));
    assert!(matches!(
        log.snapshot(&batch(1)),
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(log.next_offset(), Offset(1));
    drop(log);
    let (mut log, recovered) = open(scratch.path());
    assert_eq!(recovered.batches, [batch(1)]);
    assert_eq!(log.append(&batch(4)).unwrap(), Offset(1));
}
