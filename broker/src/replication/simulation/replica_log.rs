//! One replica's log of one partition, in memory, with the durability
//! contract of `fjord_engine::log::PartitionLog` that replication leans on,
//! and the engine's own leader-epoch cache ([`LeaderEpochCache`]):
//!
//! - an append is *written*: a kill -9 keeps it; it is durable once
//!   flushed. A crash keeps the flushed prefix and, of the batches after
//!   it, as many as the crash chose (all of them for a kill -9, any prefix
//!   for a power loss: a torn tail is cut by recovery);
//! - the leader epochs and the high watermark live in memory and reach the
//!   partition checkpoint at each flush and truncation; a restart takes
//!   the checkpointed ones and completes the epochs from the batches it
//!   recovered (an epoch newer than the latest starts at its first batch),
//!   then cuts them to the recovered log;
//! - a follower's append takes the leader's batches as they are: the
//!   first at or past the log end, each past the one before; it first
//!   drops the epochs starting at or past the first batch (one this
//!   replica took as leader and never wrote in), then takes every epoch
//!   newer than its latest from the batches;
//! - a truncation removes whole batches and is durable at once; at or
//!   past the log end it only drops the epochs starting there (the
//!   engine's `truncate_to`);
//! - the high watermark only moves forward, capped at the log end, except
//!   that a truncation or a crash pulls it down to the new end.

use fjord_engine::leader_epoch::LeaderEpochCache;
use fjord_engine::{LeaderEpoch, Offset};

/// One record batch: its records are numbered `first_record..` across the
/// whole simulation, so a record is known wherever it lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Its first offset.
    pub base: Offset,
    /// How many records it holds (at least one).
    pub records: i64,
    /// The leader epoch that wrote it.
    pub epoch: LeaderEpoch,
    /// The simulation-wide number of its first record.
    pub first_record: u64,
}

impl Batch {
    /// The offset after its last record.
    #[must_use]
    pub fn end(&self) -> Offset {
        self.base.plus(self.records)
    }
}

/// A follower was handed a batch below its log end or overlapping the
/// one before (the engine's `OffsetMismatch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotContiguous {
    /// The log end.
    pub log_end: Offset,
    /// The batch's base offset.
    pub base: Offset,
}

/// What the partition checkpoint holds.
#[derive(Clone, Debug, Default)]
struct Checkpoint {
    epochs: LeaderEpochCache,
    high_watermark: Offset,
}

/// One replica's log; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct ReplicaLog {
    batches: Vec<Batch>,
    epochs: LeaderEpochCache,
    high_watermark: Offset,
    flushed: Offset,
    checkpoint: Checkpoint,
}

impl ReplicaLog {
    /// The offset the next batch gets.
    #[must_use]
    pub fn log_end(&self) -> Offset {
        self.batches.last().map_or(Offset::ZERO, Batch::end)
    }

    /// The high watermark.
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// Everything below this survives any crash.
    #[must_use]
    pub fn flushed(&self) -> Offset {
        self.flushed
    }

    /// The batches, in offset order.
    #[must_use]
    pub fn batches(&self) -> &[Batch] {
        &self.batches
    }

    /// The newest leader epoch the cache knows: a follower's
    /// `last_fetched_epoch` (the fetcher takes the cache's last entry).
    #[must_use]
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch on this log (the engine's
    /// `end_offset_for_epoch`).
    #[must_use]
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, Offset)> {
        self.epochs.end_offset_for(epoch, self.log_end())
    }

    /// A new leader records its epoch at the log end.
    pub fn assign_leader_epoch(&mut self, epoch: LeaderEpoch) {
        let end = self.log_end();
        self.epochs.assign(epoch, end);
    }

    /// Appends `records` records numbered from `first_record` as the
    /// leader of `epoch`.
    ///
    /// # Panics
    /// If `epoch` is older than the cache's newest, as the engine asserts.
    pub fn append_as_leader(
        &mut self,
        epoch: LeaderEpoch,
        first_record: u64,
        records: i64,
    ) -> Batch {
        if let Some(latest) = self.epochs.latest_epoch() {
            assert!(epoch >= latest, "leader epoch went backwards");
        }
        let batch = Batch {
            base: self.log_end(),
            records,
            epoch,
            first_record,
        };
        self.epochs.assign(epoch, batch.base);
        self.batches.push(batch);
        batch
    }

    /// Appends the leader's batches as they are.
    ///
    /// # Errors
    /// [`NotContiguous`] (nothing appended) when a batch starts below the
    /// log end or the end of the batch before.
    pub fn append_as_follower(&mut self, batches: &[Batch]) -> Result<(), NotContiguous> {
        let mut end = self.log_end();
        for batch in batches {
            if batch.base < end {
                return Err(NotContiguous {
                    log_end: end,
                    base: batch.base,
                });
            }
            end = batch.end();
        }
        if let Some(first) = batches.first() {
            self.epochs.truncate_from_end(first.base);
        }
        for batch in batches {
            self.replay_leader_epoch(batch);
            self.batches.push(*batch);
        }
        Ok(())
    }

    /// Takes `batch`'s epoch when it is newer than every known one.
    fn replay_leader_epoch(&mut self, batch: &Batch) {
        if self
            .epochs
            .latest_epoch()
            .is_none_or(|latest| batch.epoch > latest)
        {
            self.epochs.assign(batch.epoch, batch.base);
        }
    }

    /// Makes everything appended durable and checkpoints.
    pub fn flush(&mut self) {
        self.flushed = self.log_end();
        self.write_checkpoint();
    }

    fn write_checkpoint(&mut self) {
        self.checkpoint = Checkpoint {
            epochs: self.epochs.clone(),
            high_watermark: self.high_watermark,
        };
    }

    /// Moves the high watermark up to `offset`, capped at the log end.
    pub fn advance_high_watermark(&mut self, offset: Offset) {
        let capped = offset.min(self.log_end());
        if capped > self.high_watermark {
            self.high_watermark = capped;
        }
    }

    /// Removes every batch holding an offset at or after `offset` (a batch
    /// holding it goes whole); returns the new log end.
    pub fn truncate_to(&mut self, offset: Offset) -> Offset {
        if offset >= self.log_end() {
            let end = self.log_end();
            self.epochs.truncate_from_end(end);
            return end;
        }
        let keep = self.batches.partition_point(|batch| batch.end() <= offset);
        self.batches.truncate(keep);
        let end = self.log_end();
        self.high_watermark = self.high_watermark.min(end);
        self.flushed = self.flushed.min(end);
        self.epochs.truncate_from_end(end);
        self.write_checkpoint();
        end
    }

    /// The batches from the one holding `offset`, at most `max_batches`.
    #[must_use]
    pub fn read(&self, offset: Offset, max_batches: usize) -> &[Batch] {
        let from = self.batches.partition_point(|batch| batch.end() <= offset);
        let to = from.saturating_add(max_batches).min(self.batches.len());
        &self.batches[from..to]
    }

    /// The batch starting at `base`, if the log has one.
    #[must_use]
    pub fn batch_at(&self, base: Offset) -> Option<&Batch> {
        let index = self.batches.partition_point(|batch| batch.base < base);
        self.batches.get(index).filter(|batch| batch.base == base)
    }

    /// How many batches past the flushed offset a crash could keep.
    #[must_use]
    pub fn unflushed_batches(&self) -> usize {
        self.batches.len()
            - self
                .batches
                .partition_point(|batch| batch.end() <= self.flushed)
    }

    /// The log a restart recovers after a crash that kept `kept_unflushed`
    /// of the batches past the flushed offset.
    pub fn crash(&mut self, kept_unflushed: usize) {
        let flushed_batches = self.batches.len() - self.unflushed_batches();
        self.batches.truncate(flushed_batches + kept_unflushed);
        let end = self.log_end();
        self.epochs = self.checkpoint.epochs.clone();
        for batch in self.batches.clone() {
            self.replay_leader_epoch(&batch);
        }
        self.epochs.truncate_from_end(end);
        self.high_watermark = self.checkpoint.high_watermark.min(end);
        self.flushed = self.flushed.min(end);
        self.write_checkpoint();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(epochs_and_records: &[(i32, i64)]) -> ReplicaLog {
        let mut log = ReplicaLog::default();
        let mut record = 0;
        for &(epoch, records) in epochs_and_records {
            log.append_as_leader(LeaderEpoch(epoch), record, records);
            record += 10;
        }
        log
    }

    #[test]
    fn truncation_removes_whole_batches_and_their_epochs() {
        let mut log = log_with(&[(1, 3), (2, 3), (2, 2)]);
        log.flush();
        log.advance_high_watermark(Offset(8));
        assert_eq!(log.truncate_to(Offset(4)), Offset(3));
        assert_eq!(log.high_watermark(), Offset(3));
        assert_eq!(log.flushed(), Offset(3));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        // At or past the end: only an epoch taken there goes.
        log.assign_leader_epoch(LeaderEpoch(5));
        assert_eq!(log.truncate_to(Offset(3)), Offset(3));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        assert_eq!(log.log_end(), Offset(3));
    }

    #[test]
    fn a_crash_keeps_the_flushed_prefix_and_the_checkpointed_epochs() {
        let mut log = log_with(&[(1, 2)]);
        log.advance_high_watermark(Offset(2));
        log.flush();
        log.append_as_leader(LeaderEpoch(3), 20, 2);
        log.append_as_leader(LeaderEpoch(3), 30, 2);
        log.advance_high_watermark(Offset(6));
        log.assign_leader_epoch(LeaderEpoch(4));
        let mut kill = log.clone();
        kill.crash(2);
        assert_eq!(kill.log_end(), Offset(6));
        // Epoch 3 was never checkpointed: recovery finds it in the
        // batches; epoch 4 covers nothing and is gone.
        assert_eq!(kill.latest_epoch(), Some(LeaderEpoch(3)));
        assert_eq!(
            kill.end_offset_for_epoch(LeaderEpoch(3)),
            Some((LeaderEpoch(3), Offset(6)))
        );
        assert_eq!(kill.high_watermark(), Offset(2));
        log.crash(1);
        assert_eq!(log.log_end(), Offset(4));
        assert_eq!(log.flushed(), Offset(2));
        log.crash(0);
        assert_eq!(log.log_end(), Offset(2));
        assert_eq!(log.latest_epoch(), Some(LeaderEpoch(1)));
        assert_eq!(
            log.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(2)))
        );
    }

    #[test]
    fn a_follower_appends_the_leaders_batches_past_its_log_end() {
        let leader = log_with(&[(1, 2), (2, 3)]);
        let mut follower = ReplicaLog::default();
        follower.append_as_follower(&leader.batches()[..1]).unwrap();
        let error = follower
            .append_as_follower(leader.read(Offset(0), 5))
            .unwrap_err();
        assert_eq!(
            error,
            NotContiguous {
                log_end: Offset(2),
                base: Offset(0)
            }
        );
        // An epoch it took as leader and never wrote in goes.
        follower.assign_leader_epoch(LeaderEpoch(5));
        follower.append_as_follower(&leader.batches()[1..]).unwrap();
        assert_eq!(follower.batches(), leader.batches());
        assert_eq!(
            follower.end_offset_for_epoch(LeaderEpoch(1)),
            Some((LeaderEpoch(1), Offset(2)))
        );
    }
}
