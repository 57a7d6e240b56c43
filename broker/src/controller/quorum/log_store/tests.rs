//! The log store against openraft's own storage test suite, and its
//! recovery of the files a crash or corruption leaves.

use openraft::storage::RaftLogStorageExt;
use openraft::testing::{blank_ent, log_id, StoreBuilder, Suite};
use tempfile::TempDir;

use super::*;
use crate::controller::quorum::state_machine::StateMachine;

struct Builder;

impl StoreBuilder<MetadataTypes, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> StoreResult<(TempDir, LogStore, StateMachine)> {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let log = LogStore::open(scratch.path()).expect("a fresh log opens");
        let image = Arc::new(arc_swap::ArcSwap::from_pointee(
            crate::metadata::MetadataImage::default(),
        ));
        let state_machine =
            StateMachine::open(scratch.path(), image, tokio::sync::watch::channel(0).0)
                .expect("a fresh state machine");
        Ok((scratch, log, state_machine))
    }
}

/// openraft's conformance suite for `RaftLogStorage` and
/// `RaftStateMachine`: log state, reads, appends, truncation, purge, vote,
/// membership recovery, applying, snapshot transfer.
///
/// Left out are the suite's cases that append a log with a hole (entry 1
/// into an empty log, say), which the v2 storage contract forbids and
/// this store refuses as out of order: `last_membership_in_log`,
/// `last_membership_in_log_multi_step`,
/// `get_membership_from_log_and_empty_sm`,
/// `get_membership_from_log_le_sm_last_applied`,
/// `get_membership_from_log_gt_sm_last_applied_{1,2}`,
/// `get_initial_state_membership_from_log_and_sm`,
/// `get_initial_state_last_log_lt_sm`,
/// `get_initial_state_re_apply_committed`.
#[test]
fn the_store_passes_openrafts_storage_suite() {
    type Cases = Suite<MetadataTypes, LogStore, StateMachine, Builder, TempDir>;
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            run(async {
                let (_scratch, log, state_machine) = Builder.build().await?;
                Cases::$case(log, state_machine).await
            })
            .unwrap_or_else(|error| panic!("{}: {error}", stringify!($case)));
        )*};
    }
    cases!(
        last_membership_in_log_initial,
        get_membership_initial,
        get_membership_from_empty_log_and_sm,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_log_ids,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
    run(Cases::transfer_snapshot(&Builder)).unwrap();
}

fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

fn entries(term: u64, indexes: std::ops::Range<u64>) -> Vec<Entry<MetadataTypes>> {
    indexes.map(|index| blank_ent(term, 1, index)).collect()
}

fn reopen(dir: &Path) -> (LogStore, LogState<MetadataTypes>, Vec<Entry<MetadataTypes>>) {
    let mut log = LogStore::open(dir).unwrap();
    let (state, read) = run(async {
        let state = log.get_log_state().await.unwrap();
        let read = log.try_get_log_entries(..).await.unwrap();
        (state, read)
    });
    (log, state, read)
}

#[test]
fn appended_entries_and_the_vote_survive_reopening() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(async {
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.blocking_append(entries(1, 0..4)).await.unwrap();
    });
    drop(log);
    let (mut log, state, read) = reopen(scratch.path());
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 3)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(read, entries(1, 0..4));
    assert_eq!(run(log.read_vote()).unwrap(), Some(Vote::new(3, 2)));
}

/// Only the last append can be unsynced: a torn frame at the end of the
/// last segment is cut, and appends resume at the entry it held.
#[test]
fn a_torn_tail_is_cut_and_appends_resume_after_the_last_whole_entry() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(log.blocking_append(entries(1, 0..2))).unwrap();
    let segment = segment_path(scratch.path(), 0);
    let whole = fs::metadata(&segment).unwrap().len();
    run(log.blocking_append(entries(1, 2..3))).unwrap();
    drop(log);
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(whole + 7).unwrap();
    let (mut log, state, read) = reopen(scratch.path());
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(read, entries(1, 0..2));
    assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
    run(log.blocking_append(entries(2, 2..4))).unwrap();
    drop(log);
    let (_, _, read) = reopen(scratch.path());
    assert_eq!(read, [entries(1, 0..2), entries(2, 2..4)].concat());
}

/// A flipped bit in the last segment's last frame is a corrupt tail: cut
/// like a torn one.
#[test]
fn a_corrupt_last_frame_is_cut() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(log.blocking_append(entries(1, 0..3))).unwrap();
    drop(log);
    let segment = segment_path(scratch.path(), 0);
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&segment, bytes).unwrap();
    let (_, state, read) = reopen(scratch.path());
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 1)));
    assert_eq!(read, entries(1, 0..2));
}

/// A truncated suffix stays truncated across a restart, and entries of the
/// new leader's term take its place.
#[test]
fn truncation_and_purge_are_durable() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(async {
        log.blocking_append(entries(1, 0..6)).await.unwrap();
        log.truncate(log_id(1, 1, 4)).await.unwrap();
        log.blocking_append(entries(2, 4..8)).await.unwrap();
        log.purge(log_id(2, 1, 5)).await.unwrap();
        log.blocking_append(entries(2, 8..9)).await.unwrap();
    });
    drop(log);
    // The purge started a new segment at 8 and deleted none (entries 6 and
    // 7 share the first segment with purged ones).
    assert!(segment_path(scratch.path(), 0).exists());
    assert!(segment_path(scratch.path(), 8).exists());
    let (mut log, state, read) = reopen(scratch.path());
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 8)));
    assert_eq!(read, entries(2, 6..9));
    run(log.purge(log_id(2, 1, 7))).unwrap();
    assert!(!segment_path(scratch.path(), 0).exists());
    drop(log);
    let (_, state, read) = reopen(scratch.path());
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 7)));
    assert_eq!(read, entries(2, 8..9));
}

/// A purge past the end of the log (a snapshot installed from the leader)
/// leaves no entries, and appends continue after the snapshot.
#[test]
fn a_purge_past_the_end_restarts_the_log_after_it() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(async {
        log.blocking_append(entries(1, 0..2)).await.unwrap();
        log.purge(log_id(3, 2, 10)).await.unwrap();
        log.blocking_append(entries(3, 11..12)).await.unwrap();
    });
    drop(log);
    let (_, state, read) = reopen(scratch.path());
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 2, 10)));
    assert_eq!(read, entries(3, 11..12));
    assert!(!segment_path(scratch.path(), 0).exists());
}

/// Damage before the last segment is not a torn tail: the open fails
/// rather than drop entries a quorum may have counted.
#[test]
fn a_corrupt_frame_before_the_last_segment_fails_the_open() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(async {
        log.blocking_append(entries(1, 0..3)).await.unwrap();
        log.purge(log_id(1, 1, 0)).await.unwrap();
        log.blocking_append(entries(1, 3..4)).await.unwrap();
    });
    drop(log);
    let segment = segment_path(scratch.path(), 0);
    let mut bytes = fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(&segment, bytes).unwrap();
    let error = LogStore::open(scratch.path()).err().unwrap();
    assert!(matches!(error, QuorumError::CorruptFrame { .. }), "{error}");
}

#[test]
fn a_committed_id_the_log_does_not_hold_is_ignored() {
    let scratch = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(scratch.path()).unwrap();
    run(async {
        log.blocking_append(entries(1, 0..3)).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
    });
    drop(log);
    let (mut log, _, _) = reopen(scratch.path());
    assert_eq!(run(log.read_committed()).unwrap(), Some(log_id(1, 1, 2)));
    run(log.truncate(log_id(1, 1, 2))).unwrap();
    drop(log);
    let (mut log, _, _) = reopen(scratch.path());
    assert_eq!(run(log.read_committed()).unwrap(), None);
}
