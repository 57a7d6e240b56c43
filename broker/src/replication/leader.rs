//! What a partition's leader knows of its followers, and what it decides
//! from that: the high watermark and the ISR changes to propose.
//!
//! Pure state, no I/O and no clock of its own (times come in as
//! milliseconds), so the simulation drives exactly this code. Kafka's
//! rules:
//! - A follower's log end is the offset it fetches from: it fetches only
//!   what it has appended (and, unless `write.caching`, flushed).
//! - A follower is *caught up* at a fetch whose offset reaches the leader's
//!   log end at that moment, or the leader's log end at its previous fetch
//!   (Kafka's `Replica.updateFetchState`): a follower that keeps up with a
//!   busy leader never looks behind.
//! - The high watermark is the lowest log end over the ISR, counting the
//!   members of an ISR expansion still in flight (Kafka's "maximal ISR"): a
//!   replica that may join must have everything below the high watermark,
//!   or electing it would lose committed records. It does not move while
//!   the committed ISR is smaller than `min.insync.replicas`, nor past a
//!   member whose log end this leader has not heard since it took over.
//! - An ISR member not caught up for `replica.lag.time.max.ms` is proposed
//!   out; a replica whose log end reaches both the high watermark and the
//!   start of this leader's epoch is proposed in. One proposal at a time;
//!   the leader acts on the committed ISR only, which comes back through
//!   the metadata image.
//! - Each follower's fetch names its broker epoch (KIP-903); the proposal
//!   carries the epoch each member fetched with, so the controller refuses
//!   to add a replica that restarted since (it may have lost unflushed
//!   records it had acknowledged fetching): it must catch up again under
//!   its new epoch. A fetch with an older epoch than one already seen
//!   comes from a previous incarnation and is refused.
//! - A partition whose leader came from an unclean election is
//!   *recovering* (KIP-704) until its leader says otherwise; having taken
//!   the leadership (its epoch recorded in the log, so nothing is left to
//!   recover in fjord), the leader's next proposal names it recovered, as
//!   Kafka's leader does at once, even with the ISR unchanged. Every
//!   proposal names the partition recovered.

use std::collections::BTreeMap;

use fjord_engine::{LeaderEpoch, Offset};

use crate::metadata::records::{BrokerEpoch, BrokerId, LeaderRecoveryState, PartitionEpoch};
use crate::metadata::PartitionImage;

/// A follower's progress as its fetches report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Its log end, once it fetched in this leader's epoch.
    log_end: Option<Offset>,
    /// When it was last caught up.
    last_caught_up_ms: i64,
    /// When it last fetched, and the leader's log end then.
    last_fetch_ms: i64,
    leader_end_at_last_fetch: Offset,
    /// The broker epoch of its latest fetch that named one.
    broker_epoch: Option<BrokerEpoch>,
}

/// Who fetches: a replica's broker and the epoch of its registration as
/// its Fetch names it (`ReplicaState.ReplicaEpoch`, -1 where unknown:
/// Fetch before v15, or a broker not registered yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Follower {
    /// The broker.
    pub broker: BrokerId,
    /// Its registration's epoch, or -1.
    pub broker_epoch: BrokerEpoch,
}

impl From<BrokerId> for Follower {
    /// A follower whose fetch names no broker epoch.
    fn from(broker: BrokerId) -> Self {
        Self {
            broker,
            broker_epoch: BrokerEpoch(-1),
        }
    }
}

/// An ISR change sent to the controller and not yet seen committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrChange {
    /// The ISR proposed.
    pub isr: Vec<BrokerId>,
    /// The leader epoch it was made in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch it was made from.
    pub partition_epoch: PartitionEpoch,
    /// The broker epoch each follower in `isr` last fetched with, where
    /// known (KIP-903's `NewIsrWithEpochs`; absent is Kafka's -1).
    pub broker_epochs: BTreeMap<BrokerId, BrokerEpoch>,
}

/// A leader's view of one partition's replicas.
#[derive(Clone, Debug)]
pub struct LeaderState {
    /// This broker.
    pub node: BrokerId,
    /// The epoch this broker leads in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the committed state below.
    pub partition_epoch: PartitionEpoch,
    /// Every replica.
    pub replicas: Vec<BrokerId>,
    /// The committed ISR.
    pub isr: Vec<BrokerId>,
    /// The leader's log end when it took over: a replica joins the ISR only
    /// once it has everything of earlier epochs.
    pub epoch_start: Offset,
    /// The committed state is recovering from an unclean election.
    recovering: bool,
    followers: BTreeMap<BrokerId, Progress>,
    pending: Option<IsrChange>,
}

impl LeaderState {
    /// The state of a leader that took over `partition` at `now_ms` with
    /// its log ending at `log_end`. ISR members count as caught up now, as
    /// in Kafka: a new leader gives each of them a full lag time.
    #[must_use]
    pub fn new(node: BrokerId, partition: &PartitionImage, log_end: Offset, now_ms: i64) -> Self {
        let followers = partition
            .replicas
            .iter()
            .filter(|&&replica| replica != node)
            .map(|&replica| {
                let caught_up = if partition.isr.contains(&replica) {
                    now_ms
                } else {
                    0
                };
                (
                    replica,
                    Progress {
                        last_caught_up_ms: caught_up,
                        ..Progress::default()
                    },
                )
            })
            .collect();
        Self {
            node,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            epoch_start: log_end,
            recovering: partition.leader_recovery_state == LeaderRecoveryState::Recovering,
            followers,
            pending: None,
        }
    }

    /// Takes the committed state of `partition` (same leader epoch): a new
    /// ISR ends the proposal in flight, whether it was accepted or not.
    pub fn update(&mut self, partition: &PartitionImage, now_ms: i64) {
        debug_assert_eq!(partition.leader_epoch, self.leader_epoch);
        if partition.partition_epoch != self.partition_epoch {
            self.pending = None;
        }
        for &replica in &partition.replicas {
            if replica != self.node {
                let progress = self.followers.entry(replica).or_default();
                if partition.isr.contains(&replica) && !self.isr.contains(&replica) {
                    // Joined: its lag counts from now.
                    progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
                }
            }
        }
        self.followers
            .retain(|replica, _| partition.replicas.contains(replica));
        self.partition_epoch = partition.partition_epoch;
        self.replicas.clone_from(&partition.replicas);
        self.isr.clone_from(&partition.isr);
        self.recovering = partition.leader_recovery_state == LeaderRecoveryState::Recovering;
    }

    /// Records a fetch by `follower` from `fetch_offset` at `now_ms`, when
    /// the leader's log ended at `leader_end`. Returns whether the fetch
    /// counts: `follower` is a replica, and its broker epoch is not older
    /// than one it fetched with before (Kafka's stale fetch state: a fetch
    /// of a previous incarnation). The caller refuses others.
    pub fn on_fetch(
        &mut self,
        follower: impl Into<Follower>,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: i64,
    ) -> bool {
        let follower = follower.into();
        let Some(progress) = self.followers.get_mut(&follower.broker) else {
            return false;
        };
        if follower.broker_epoch.0 >= 0 {
            if progress
                .broker_epoch
                .is_some_and(|seen| seen > follower.broker_epoch)
            {
                return false;
            }
            progress.broker_epoch = Some(follower.broker_epoch);
        }
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.leader_end_at_last_fetch && progress.last_fetch_ms > 0 {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end = Some(fetch_offset.min(leader_end));
        progress.last_fetch_ms = now_ms;
        progress.leader_end_at_last_fetch = leader_end;
        true
    }

    /// The ISR the high watermark is computed over: the committed one and
    /// any member an expansion in flight adds.
    fn maximal_isr(&self) -> impl Iterator<Item = BrokerId> + '_ {
        let joining = self
            .pending
            .iter()
            .flat_map(|pending| pending.isr.iter().copied())
            .filter(|replica| !self.isr.contains(replica));
        self.isr.iter().copied().chain(joining)
    }

    /// The high watermark the ISR allows with the leader's log at
    /// `leader_end`, or `None` while it may not move: the ISR is below
    /// `min_insync` or a member has not fetched in this epoch.
    #[must_use]
    pub fn high_watermark(&self, leader_end: Offset, min_insync: usize) -> Option<Offset> {
        if self.isr.len() < min_insync {
            return None;
        }
        let mut low = leader_end;
        for member in self.maximal_isr() {
            if member == self.node {
                continue;
            }
            low = low.min(self.followers.get(&member)?.log_end?);
        }
        Some(low)
    }

    /// The ISR change to propose now, if any and none is in flight: members
    /// not caught up for `lag_max_ms` leave (never the leader), replicas
    /// that reached `high_watermark` and the epoch's start join. `live`
    /// says which brokers may join (registered and unfenced). A recovering
    /// partition gets a proposal even with its ISR unchanged: it names the
    /// partition recovered.
    pub fn propose(
        &mut self,
        high_watermark: Offset,
        now_ms: i64,
        lag_max_ms: i64,
        live: impl Fn(BrokerId) -> bool,
    ) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let mut isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|&member| {
                member == self.node
                    || self.followers.get(&member).is_some_and(|progress| {
                        now_ms.saturating_sub(progress.last_caught_up_ms) <= lag_max_ms
                    })
            })
            .collect();
        for (&replica, progress) in &self.followers {
            // Kafka looks at a replica's joining when it fetches; here the
            // check is periodic, so a replica must also be caught up by the
            // lag rule, or one that stopped fetching where an idle leader's
            // high watermark stands would be put back at once.
            let caught_up = progress
                .log_end
                .is_some_and(|end| end >= high_watermark && end >= self.epoch_start)
                && now_ms.saturating_sub(progress.last_caught_up_ms) <= lag_max_ms;
            // Only replicas outside the committed ISR join: a member
            // dropped above is not put back in the same proposal.
            if !self.isr.contains(&replica) && caught_up && live(replica) {
                isr.push(replica);
            }
        }
        if isr == self.isr && !self.recovering {
            return None;
        }
        // Replica order, as Kafka lists an ISR.
        isr.sort_by_key(|member| self.replicas.iter().position(|replica| replica == member));
        let broker_epochs = isr
            .iter()
            .filter_map(|member| {
                let epoch = self.followers.get(member)?.broker_epoch?;
                Some((*member, epoch))
            })
            .collect();
        let proposal = IsrChange {
            isr,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            broker_epochs,
        };
        self.pending = Some(proposal.clone());
        Some(proposal)
    }

    /// Forgets the proposal in flight (the controller refused it or could
    /// not be reached): the next [`LeaderState::propose`] decides again.
    pub fn proposal_failed(&mut self, proposal: &IsrChange) {
        if self.pending.as_ref() == Some(proposal) {
            self.pending = None;
        }
    }

    /// The ISR change in flight, if any.
    #[must_use]
    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    /// The log end of `follower` as last reported in this epoch.
    #[must_use]
    pub fn follower_log_end(&self, follower: BrokerId) -> Option<Offset> {
        self.followers.get(&follower)?.log_end
    }
}

/// The leader's check of a follower's fetch (KIP-595's diverging epoch,
/// KIP-279's rule): `local` is this log's answer to "where does epoch
/// `last_fetched_epoch` end" (the largest epoch at or below it and that
/// epoch's end). The follower diverged when this log does not have its
/// epoch, or ends it before the follower's fetch offset: it is then told
/// that epoch and end.
#[must_use]
pub fn diverging_epoch(
    local: Option<(LeaderEpoch, Offset)>,
    last_fetched_epoch: i32,
    fetch_offset: Offset,
) -> Option<(LeaderEpoch, Offset)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end) = local?;
    (epoch.0 != last_fetched_epoch || fetch_offset > end).then_some((epoch, end))
}

/// Where a follower cuts its log when the leader answered that epoch
/// `leader_epoch` ends at `leader_end` there (KIP-279): `local` is the
/// follower's own end of that epoch (its largest epoch at or below it).
/// With the same epoch, the lower end; with an earlier one, the end of
/// that one (the next fetch asks about it); never past `log_end`.
#[must_use]
pub fn truncation_offset(
    local: Option<(LeaderEpoch, Offset)>,
    leader_epoch: LeaderEpoch,
    leader_end: Offset,
    log_end: Offset,
) -> Offset {
    let end = match local {
        Some((epoch, end)) if epoch == leader_epoch => end.min(leader_end),
        Some((_, end)) => end,
        None => leader_end,
    };
    end.min(log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: BrokerId = BrokerId(1);
    const B: BrokerId = BrokerId(2);
    const C: BrokerId = BrokerId(3);

    fn partition(isr: &[i32]) -> PartitionImage {
        PartitionImage {
            replicas: vec![LEADER, B, C],
            isr: isr.iter().map(|&id| BrokerId(id)).collect(),
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
            leader: LEADER,
            leader_epoch: LeaderEpoch(4),
            partition_epoch: PartitionEpoch(7),
            leader_recovery_state: LeaderRecoveryState::Recovered,
        }
    }

    #[test]
    fn the_high_watermark_is_the_lowest_isr_log_end_once_every_member_fetched() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2, 3]), Offset(10), 1_000);
        assert_eq!(state.high_watermark(Offset(20), 1), None);
        state.on_fetch(B, Offset(15), Offset(20), 1_010);
        assert_eq!(state.high_watermark(Offset(20), 1), None);
        state.on_fetch(C, Offset(12), Offset(20), 1_010);
        assert_eq!(state.high_watermark(Offset(20), 1), Some(Offset(12)));
        state.on_fetch(C, Offset(20), Offset(20), 1_020);
        assert_eq!(state.high_watermark(Offset(20), 1), Some(Offset(15)));
    }

    #[test]
    fn the_high_watermark_holds_while_the_isr_is_below_min_insync() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2]), Offset(0), 0);
        state.on_fetch(B, Offset(5), Offset(5), 10);
        assert_eq!(state.high_watermark(Offset(5), 2), Some(Offset(5)));
        state.update(
            &PartitionImage {
                partition_epoch: PartitionEpoch(8),
                ..partition(&[1])
            },
            20,
        );
        assert_eq!(state.high_watermark(Offset(5), 2), None);
        assert_eq!(state.high_watermark(Offset(5), 1), Some(Offset(5)));
    }

    #[test]
    fn a_lagging_member_is_proposed_out_and_a_caught_up_replica_in() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2, 3]), Offset(0), 0);
        state.on_fetch(B, Offset(0), Offset(0), 100);
        state.on_fetch(C, Offset(0), Offset(0), 100);
        // B keeps up with a busy leader: each fetch reaches the end the
        // leader had at the one before.
        state.on_fetch(B, Offset(0), Offset(50), 5_000);
        state.on_fetch(B, Offset(50), Offset(90), 12_000);
        let proposal = state.propose(Offset(0), 12_000, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B]);
        // One proposal in flight at a time.
        assert_eq!(state.propose(Offset(0), 12_000, 10_000, |_| true), None);
        state.update(
            &PartitionImage {
                partition_epoch: PartitionEpoch(8),
                ..partition(&[1, 2])
            },
            12_500,
        );
        // C comes back, reaches the high watermark: proposed in, in
        // replica order; until it is committed the high watermark counts C.
        state.on_fetch(C, Offset(90), Offset(90), 13_000);
        let proposal = state.propose(Offset(50), 13_000, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B, C]);
        state.on_fetch(B, Offset(90), Offset(95), 13_100);
        assert_eq!(state.high_watermark(Offset(95), 1), Some(Offset(90)));
    }

    #[test]
    fn a_replica_joins_only_once_it_has_the_epoch_start_and_is_live() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2]), Offset(40), 0);
        state.on_fetch(B, Offset(40), Offset(40), 10);
        state.on_fetch(C, Offset(30), Offset(40), 10);
        assert_eq!(state.propose(Offset(30), 20, 10_000, |_| true), None);
        state.on_fetch(C, Offset(40), Offset(40), 30);
        assert_eq!(state.propose(Offset(40), 40, 10_000, |id| id != C), None);
        let proposal = state.propose(Offset(40), 40, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B, C]);
        state.proposal_failed(&proposal);
        assert!(state.propose(Offset(40), 40, 10_000, |_| true).is_some());
    }

    #[test]
    fn divergence_is_found_by_the_followers_last_epoch() {
        let local = Some((LeaderEpoch(3), Offset(100)));
        assert_eq!(diverging_epoch(local, -1, Offset(500)), None);
        assert_eq!(diverging_epoch(local, 3, Offset(100)), None);
        assert_eq!(
            diverging_epoch(local, 3, Offset(101)),
            Some((LeaderEpoch(3), Offset(100)))
        );
        // The follower has epoch 4, which this log never had: it ends
        // where this log's epoch 3 does.
        assert_eq!(
            diverging_epoch(local, 4, Offset(90)),
            Some((LeaderEpoch(3), Offset(100)))
        );
        assert_eq!(diverging_epoch(None, 4, Offset(90)), None);
    }

    #[test]
    fn a_follower_truncates_to_the_lower_end_of_a_shared_epoch_or_its_own_earlier_one() {
        let same = Some((LeaderEpoch(3), Offset(120)));
        assert_eq!(
            truncation_offset(same, LeaderEpoch(3), Offset(100), Offset(130)),
            Offset(100)
        );
        let earlier = Some((LeaderEpoch(2), Offset(80)));
        assert_eq!(
            truncation_offset(earlier, LeaderEpoch(3), Offset(100), Offset(130)),
            Offset(80)
        );
        assert_eq!(
            truncation_offset(None, LeaderEpoch(3), Offset(100), Offset(60)),
            Offset(60)
        );
    }

    #[test]
    fn a_replica_that_stopped_fetching_is_not_put_back_on_an_idle_partition() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2, 3]), Offset(0), 0);
        state.on_fetch(B, Offset(10), Offset(10), 1_000);
        state.on_fetch(C, Offset(10), Offset(10), 1_000);
        // C stops fetching; the partition is idle, so C's log end is the
        // high watermark.
        state.on_fetch(B, Offset(10), Offset(10), 20_000);
        let proposal = state.propose(Offset(10), 20_000, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B]);
        state.update(
            &PartitionImage {
                partition_epoch: PartitionEpoch(8),
                ..partition(&[1, 2])
            },
            20_100,
        );
        state.on_fetch(B, Offset(10), Offset(10), 21_000);
        assert_eq!(state.propose(Offset(10), 21_000, 10_000, |_| true), None);
        // C fetches again, caught up: it joins.
        state.on_fetch(C, Offset(10), Offset(10), 22_000);
        let proposal = state.propose(Offset(10), 22_000, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B, C]);
    }

    fn incarnation(broker: BrokerId, epoch: i64) -> Follower {
        Follower {
            broker,
            broker_epoch: BrokerEpoch(epoch),
        }
    }

    /// Guards against an expansion that lets the controller add a replica
    /// without knowing which incarnation caught up (KIP-903), and against
    /// a fetch of a previous incarnation, still in flight, counting for
    /// the restarted one.
    #[test]
    fn a_proposal_names_the_broker_epoch_each_member_fetched_with() {
        let mut state = LeaderState::new(LEADER, &partition(&[1, 2]), Offset(0), 0);
        assert!(state.on_fetch(incarnation(B, 11), Offset(10), Offset(10), 100));
        assert!(state.on_fetch(incarnation(C, 20), Offset(10), Offset(10), 100));
        let proposal = state.propose(Offset(10), 100, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER, B, C]);
        assert_eq!(
            proposal.broker_epochs,
            BTreeMap::from([(B, BrokerEpoch(11)), (C, BrokerEpoch(20))])
        );
        state.proposal_failed(&proposal);

        // C restarted (a new registration): its old incarnation's fetches
        // no longer count; a fetch naming no epoch keeps the one known.
        assert!(state.on_fetch(incarnation(C, 25), Offset(4), Offset(10), 200));
        assert!(!state.on_fetch(incarnation(C, 20), Offset(10), Offset(10), 210));
        assert_eq!(state.follower_log_end(C), Some(Offset(4)));
        assert!(state.on_fetch(C, Offset(10), Offset(10), 220));
        let proposal = state.propose(Offset(10), 220, 10_000, |_| true).unwrap();
        assert_eq!(proposal.broker_epochs.get(&C), Some(&BrokerEpoch(25)));
    }

    /// Guards against a leader elected uncleanly that never says it
    /// recovered (the controller would refuse every replica joining its
    /// ISR, for good).
    #[test]
    fn a_leader_of_a_recovering_partition_proposes_it_recovered() {
        let recovering = PartitionImage {
            leader_recovery_state: LeaderRecoveryState::Recovering,
            ..partition(&[1])
        };
        let mut state = LeaderState::new(LEADER, &recovering, Offset(10), 0);
        let proposal = state.propose(Offset(10), 10, 10_000, |_| true).unwrap();
        assert_eq!(proposal.isr, vec![LEADER], "the ISR unchanged");
        assert_eq!(state.propose(Offset(10), 10, 10_000, |_| true), None);
        state.update(
            &PartitionImage {
                partition_epoch: PartitionEpoch(8),
                ..partition(&[1])
            },
            20,
        );
        assert_eq!(state.propose(Offset(10), 20, 10_000, |_| true), None);
    }

    #[test]
    fn fetches_by_non_replicas_are_refused() {
        let mut state = LeaderState::new(LEADER, &partition(&[1]), Offset(0), 0);
        assert!(!state.on_fetch(BrokerId(9), Offset(0), Offset(0), 1));
        assert!(!state.on_fetch(LEADER, Offset(0), Offset(0), 1));
    }
}
