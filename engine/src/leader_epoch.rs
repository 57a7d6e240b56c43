//! The leader epoch cache: which leader epoch wrote which offsets.
//!
//! Kafka's `LeaderEpochFileCache`. Each entry `(epoch, start offset)` says the
//! leader of `epoch` wrote its first batch at `start offset`; the epoch's
//! records run up to the next entry's start (or the log end for the latest).
//! Followers use it through `OffsetForLeaderEpoch` to find where their log
//! diverges from the leader's and truncate there, which is what keeps replicas
//! identical across leader changes.
//!
//! # Invariant
//! Entries are strictly ascending in epoch *and* start offset, and both are
//! non-negative. Every mutation preserves it; [`LeaderEpochCache::from_entries`]
//! refuses input without it.
//!
//! # Durability contract
//! The cache is in memory only. It is persisted in the partition checkpoint
//! (see [`crate::checkpoint::PartitionCheckpoint::leader_epochs`]) with
//! every recovery point; the epochs of batches written since are rebuilt
//! from the batches themselves when the log is recovered (each batch
//! carries its `partitionLeaderEpoch`), as Kafka's segment recovery does.
//! An epoch a new leader recorded at its log end before writing anything
//! is lost by a crash, which is harmless: it covers no data, and the
//! leader records it again when it next takes leadership.

use std::path::Path;

use crate::error::{Corruption, Error, Result};
use crate::types::{LeaderEpoch, Offset};

/// Kafka's `LeaderEpochFileCache`: `(epoch, start offset)` entries ascending
/// in both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl LeaderEpochCache {
    /// An empty cache, for a new partition.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a cache from entries, for loading a checkpoint.
    ///
    /// # Errors
    /// The [`Corruption`] when an epoch or offset is negative or the entries
    /// are not strictly ascending in both epoch and start offset.
    pub fn from_entries(
        entries: Vec<(LeaderEpoch, Offset)>,
    ) -> std::result::Result<Self, Corruption> {
        validate_entries(entries.iter().map(|&(epoch, offset)| (epoch.0, offset.0)))?;
        Ok(Self { entries })
    }

    /// Builds a cache from a partition checkpoint's `leader_epochs`.
    ///
    /// # Errors
    /// [`Error::CorruptCheckpoint`] naming `path` when the entries break the
    /// cache invariant (see [`LeaderEpochCache::from_entries`]).
    pub fn from_checkpoint_entries(path: &Path, entries: &[(i32, i64)]) -> Result<Self> {
        let entries = entries
            .iter()
            .map(|&(epoch, offset)| (LeaderEpoch(epoch), Offset(offset)))
            .collect();
        Self::from_entries(entries).map_err(|reason| Error::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The entries in the form a partition checkpoint stores them.
    #[must_use]
    pub fn to_checkpoint_entries(&self) -> Vec<(i32, i64)> {
        self.entries
            .iter()
            .map(|&(epoch, offset)| (epoch.0, offset.0))
            .collect()
    }

    /// The entries, ascending in epoch and start offset.
    #[must_use]
    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// Whether the cache has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest epoch, `None` when the cache is empty.
    #[must_use]
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|&(epoch, _)| epoch)
    }

    /// Records that `epoch` starts at `start_offset` (a leader taking over at
    /// its log end, or a batch of a new epoch being appended). Returns whether
    /// the cache changed, i.e. whether it must be checkpointed again.
    ///
    /// - An epoch older than the latest is ignored: appends carry
    ///   non-decreasing epochs once a follower has truncated to the leader,
    ///   so an older one is stale information. (Kafka instead trusts the newest
    ///   call and drops the newer epochs; fjord keeps the cache monotonic.)
    /// - The latest epoch again keeps the earlier of the two start offsets.
    /// - Entries starting at or after `start_offset` are removed first, as
    ///   Kafka does when a new epoch starts below them: those epochs wrote
    ///   nothing that survived.
    ///
    /// # Panics
    /// If `epoch` or `start_offset` is negative: batches written before leader
    /// epochs existed carry [`LeaderEpoch::UNKNOWN`] and callers skip them, as
    /// Kafka's do.
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> bool {
        assert!(
            epoch.0 >= 0 && start_offset.0 >= 0,
            "invalid leader epoch entry ({epoch:?}, {start_offset:?})"
        );
        if let Some(&(latest, latest_start)) = self.entries.last() {
            if epoch < latest || (epoch == latest && start_offset >= latest_start) {
                return false;
            }
        }
        self.entries.retain(|&(existing_epoch, existing_start)| {
            existing_epoch < epoch && existing_start < start_offset
        });
        self.entries.push((epoch, start_offset));
        self.debug_check_invariant();
        true
    }

    /// `OffsetForLeaderEpoch`: the end offset of `requested` in this log, as
    /// `(epoch, end offset)`, where the epoch is the largest known one not
    /// above `requested`.
    ///
    /// - `requested` is the latest epoch: `(latest, log_end)`, since the latest
    ///   epoch is still being written.
    /// - Otherwise, with `e` the largest known epoch `<= requested`: `(e, start
    ///   of the first epoch after requested)`, the offset where the follower's
    ///   log may start to diverge.
    /// - `requested` is older than every known epoch (its entries were removed
    ///   by retention): `(requested, start of the first known epoch)`, as
    ///   Kafka answers since 2.1, so a follower truncates to where the leader's
    ///   epoch history begins.
    /// - `None` (Kafka's `UNDEFINED_EPOCH` / `UNDEFINED_EPOCH_OFFSET`, -1/-1):
    ///   the cache is empty, `requested` is negative, or it is newer than the
    ///   latest epoch.
    #[must_use]
    pub fn end_offset_for(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested.0 < 0 {
            return None;
        }
        let latest = self.latest_epoch()?;
        if requested == latest {
            return Some((latest, log_end));
        }
        // Index of the first entry with an epoch above `requested`.
        let higher = self
            .entries
            .partition_point(|&(epoch, _)| epoch <= requested);
        let &(_, next_start) = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].0, next_start)),
            None => Some((requested, next_start)),
        }
    }

    /// Removes the entries starting at or after `end_offset`, after the log was
    /// truncated to end there. Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let keep = self
            .entries
            .partition_point(|&(_, start)| start < end_offset);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Forgets epochs wholly before `start_offset`, after the log start moved
    /// there: entries starting at or before it are dropped, and the last of
    /// them, which spans `start_offset`, comes back starting at `start_offset`.
    /// Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let at_or_before = self
            .entries
            .partition_point(|&(_, start)| start <= start_offset);
        let Some(spanning) = at_or_before.checked_sub(1) else {
            return false;
        };
        if spanning == 0 && self.entries[0].1 == start_offset {
            return false;
        }
        let epoch = self.entries[spanning].0;
        self.entries.drain(..spanning);
        self.entries[0] = (epoch, start_offset);
        self.debug_check_invariant();
        true
    }

    fn debug_check_invariant(&self) {
        debug_assert!(
            validate_entries(
                self.entries
                    .iter()
                    .map(|&(epoch, offset)| (epoch.0, offset.0))
            )
            .is_ok(),
            "leader epoch cache invariant broken: {:?}",
            self.entries
        );
    }
}

/// Checks the cache invariant on raw `(epoch, start offset)` pairs: both
/// non-negative and strictly ascending.
///
/// # Errors
/// The first violation.
pub(crate) fn validate_entries(
    entries: impl IntoIterator<Item = (i32, i64)>,
) -> std::result::Result<(), Corruption> {
    let mut previous: Option<(i32, i64)> = None;
    for (entry, (epoch, start)) in entries.into_iter().enumerate() {
        if epoch < 0 {
            return Err(Corruption::Negative {
                what: "leader epoch",
                value: i64::from(epoch),
            });
        }
        if start < 0 {
            return Err(Corruption::Negative {
                what: "leader epoch start offset",
                value: start,
            });
        }
        if let Some((previous_epoch, previous_start)) = previous {
            if epoch <= previous_epoch || start <= previous_start {
                return Err(Corruption::NotAscending {
                    what: "leader epoch",
                    entry,
                });
            }
        }
        previous = Some((epoch, start));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache::from_checkpoint_entries(Path::new("test"), entries).unwrap()
    }

    fn raw(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache.to_checkpoint_entries()
    }

    #[test]
    fn new_epochs_append_and_repeats_are_ignored() {
        let mut c = LeaderEpochCache::new();
        assert_eq!(c.latest_epoch(), None);
        assert!(c.assign(LeaderEpoch(0), Offset(0)));
        assert!(
            !c.assign(LeaderEpoch(0), Offset(5)),
            "same epoch, later start"
        );
        assert!(c.assign(LeaderEpoch(2), Offset(10)));
        assert!(!c.assign(LeaderEpoch(2), Offset(10)));
        assert_eq!(raw(&c), [(0, 0), (2, 10)]);
        assert_eq!(c.latest_epoch(), Some(LeaderEpoch(2)));
    }

    #[test]
    fn same_epoch_with_earlier_start_moves_the_start_back() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(c.assign(LeaderEpoch(3), Offset(5)));
        assert_eq!(raw(&c), [(1, 0), (3, 5)]);
        assert!(c.assign(LeaderEpoch(3), Offset(0)));
        assert_eq!(raw(&c), [(3, 0)], "epoch 1 wrote nothing that survived");
    }

    #[test]
    fn older_epoch_is_ignored() {
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(!c.assign(LeaderEpoch(2), Offset(20)));
        assert!(!c.assign(LeaderEpoch(2), Offset(5)));
        assert_eq!(raw(&c), [(1, 0), (3, 10)]);
    }

    #[test]
    fn new_epoch_starting_below_existing_entries_replaces_them() {
        let mut c = cache(&[(1, 0), (3, 10), (4, 20)]);
        assert!(c.assign(LeaderEpoch(6), Offset(10)));
        assert_eq!(raw(&c), [(1, 0), (6, 10)]);
        let mut c = cache(&[(1, 0), (3, 10)]);
        assert!(
            c.assign(LeaderEpoch(5), Offset(10)),
            "epoch 3 wrote nothing"
        );
        assert_eq!(raw(&c), [(1, 0), (5, 10)]);
    }

    #[test]
    #[should_panic(expected = "invalid leader epoch entry")]
    fn unknown_epoch_is_a_caller_bug() {
        LeaderEpochCache::new().assign(LeaderEpoch::UNKNOWN, Offset(0));
    }

    #[test]
    fn end_offset_for_follows_offset_for_leader_epoch() {
        let c = cache(&[(1, 0), (3, 10), (5, 20)]);
        let log_end = Offset(30);
        let at = |epoch| c.end_offset_for(LeaderEpoch(epoch), log_end);
        assert_eq!(at(5), Some((LeaderEpoch(5), Offset(30))), "latest: log end");
        assert_eq!(at(3), Some((LeaderEpoch(3), Offset(20))));
        assert_eq!(
            at(4),
            Some((LeaderEpoch(3), Offset(20))),
            "gap: floor epoch"
        );
        assert_eq!(at(1), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(at(2), Some((LeaderEpoch(1), Offset(10))));
        assert_eq!(
            at(0),
            Some((LeaderEpoch(0), Offset(0))),
            "before first known epoch"
        );
        assert_eq!(at(6), None, "newer than latest");
        assert_eq!(at(-1), None, "undefined epoch");
        assert_eq!(
            LeaderEpochCache::new().end_offset_for(LeaderEpoch(0), log_end),
            None
        );
    }

    #[test]
    fn truncate_from_end_drops_epochs_starting_at_or_after_the_end() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(!c.truncate_from_end(Offset(25)));
        assert!(c.truncate_from_end(Offset(20)));
        assert_eq!(raw(&c), [(1, 0), (3, 10)]);
        assert!(c.truncate_from_end(Offset(0)));
        assert!(c.is_empty());
    }

    #[test]
    fn truncate_from_start_clamps_the_spanning_epoch() {
        let mut c = cache(&[(1, 0), (3, 10), (5, 20)]);
        assert!(!c.truncate_from_start(Offset(0)));
        assert!(c.truncate_from_start(Offset(15)));
        assert_eq!(raw(&c), [(3, 15), (5, 20)]);
        assert!(c.truncate_from_start(Offset(20)));
        assert_eq!(raw(&c), [(5, 20)]);
        assert!(!c.truncate_from_start(Offset(20)));
        assert!(c.truncate_from_start(Offset(99)));
        assert_eq!(raw(&c), [(5, 99)]);
        let mut starts_later = cache(&[(2, 50)]);
        assert!(!starts_later.truncate_from_start(Offset(10)));
        assert_eq!(raw(&starts_later), [(2, 50)]);
    }

    #[test]
    fn from_entries_rejects_non_monotonic_or_negative_entries() {
        for bad in [
            vec![(1, 0), (1, 5)],
            vec![(1, 5), (2, 5)],
            vec![(2, 0), (1, 5)],
            vec![(1, 10), (2, 5)],
            vec![(-1, 0)],
            vec![(0, -1)],
        ] {
            assert!(
                LeaderEpochCache::from_checkpoint_entries(Path::new("p"), &bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(LeaderEpochCache::from_entries(vec![]).is_ok());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Assign(i32, i64),
        TruncateFromEnd(i64),
        TruncateFromStart(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..12i32, 0..60i64).prop_map(|(e, o)| Op::Assign(e, o)),
            1 => (0..60i64).prop_map(Op::TruncateFromEnd),
            1 => (0..60i64).prop_map(Op::TruncateFromStart),
        ]
    }

    proptest! {
        /// Any sequence of mutations keeps the cache valid, round-trips through
        /// checkpoint entries, and answers `OffsetForLeaderEpoch` consistently
        /// with a linear scan.
        #[test]
        fn mutations_preserve_the_invariant(ops in proptest::collection::vec(op(), 0..40)) {
            let mut c = LeaderEpochCache::new();
            for op in ops {
                let before = c.clone();
                let changed = match op {
                    Op::Assign(e, o) => c.assign(LeaderEpoch(e), Offset(o)),
                    Op::TruncateFromEnd(o) => c.truncate_from_end(Offset(o)),
                    Op::TruncateFromStart(o) => c.truncate_from_start(Offset(o)),
                };
                prop_assert_eq!(changed, before != c);
                prop_assert!(validate_entries(raw(&c)).is_ok(), "{:?}", c);
                prop_assert_eq!(&cache(&raw(&c)), &c);
            }
            let log_end = Offset(100);
            for requested in -1..14 {
                let expected = match c.latest_epoch() {
                    None => None,
                    Some(_) if requested < 0 => None,
                    Some(latest) if requested == latest.0 => Some((latest, log_end)),
                    Some(_) => c.entries().iter().find(|(e, _)| e.0 > requested).map(|&(_, next)| {
                        let floor = c.entries().iter().rev().find(|(e, _)| e.0 <= requested);
                        (floor.map_or(LeaderEpoch(requested), |&(e, _)| e), next)
                    }),
                };
                prop_assert_eq!(c.end_offset_for(LeaderEpoch(requested), log_end), expected);
            }
        }
    }
}
