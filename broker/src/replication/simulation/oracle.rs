//! The invariants the simulation checks after every step, and what it
//! must remember to check them:
//!
//! - **The committed log.** Every replica's records below its high
//!   watermark are committed; the oracle keeps the committed log of each
//!   partition (extended whenever some replica's high watermark passes its
//!   end) and checks that every replica agrees with it below its own high
//!   watermark. So the committed prefix is never rewritten and replicas
//!   agree below the lowest of their high watermarks. One exception, the
//!   acks=1 contract: a leader acknowledges those records unflushed and
//!   the high watermark may pass them on the strength of a follower that
//!   is later fenced out of the ISR; a power loss of the leader then loses
//!   them for good. So committed records no ISR member holds any more are
//!   cut from the committed log (an acks=all record among them is a
//!   violation), and a replica still holding them is compared only below
//!   the cut until a truncation brings it back there.
//! - **Acknowledged records.** An acks=all batch, once acknowledged, is in
//!   the committed log at the offset it was acknowledged with, and in the
//!   log of every member of the partition's committed ISR, alive or not
//!   (its disk is): an election from the ISR then keeps it. The one way to
//!   lose it is an unclean election of a replica that lacks it: the
//!   batches of older epochs the elected replica lacks when the election
//!   is committed are forfeited, and so are those a deposed leader (one
//!   that does not know yet) acknowledges later in an older epoch, if the
//!   elected replica lacked them then. Everything else stays bound by the
//!   rules above; in particular whatever the new leader's epochs
//!   acknowledge is never lost. The branch that lives on is the log of the
//!   partition's first leader since the election (the elected replica may
//!   still fetch from a deposed leader before it learns), and the latest
//!   unclean election decides: a later one may bring back a branch an
//!   earlier one deposed. The unclean election's ISR is the new leader
//!   alone, so the cut below takes the committed log back to what that
//!   leader holds; a replica holding a batch off that branch is compared
//!   only below it until it truncates it away.
//! - **Leaders.** A leader epoch has one leader, in the images and among
//!   the brokers acting as leaders; a leader's high watermark never goes
//!   back within its epoch.
//! - **Images.** The ISR is never empty and holds the leader. A new leader
//!   comes from the previous ISR, unless the run allows unclean elections,
//!   no member of that ISR is eligible, and the new leader becomes the
//!   whole ISR with the partition marked recovering (KIP-704). A partition
//!   is marked recovering by such an election only; while it is, its ISR
//!   does not grow, and it becomes recovered only by its leader's report,
//!   before any follower joins that leader's ISR.
//!
//! Verification is incremental: the prefix of each replica already found
//! equal to the committed log is not compared again until a truncation or
//! a crash shortens it.

use std::collections::BTreeMap;

use fjord_engine::{LeaderEpoch, Offset};

use super::replica_log::{Batch, ReplicaLog};
use crate::controller::election::ElectionRules;
use crate::metadata::records::{BrokerId, LeaderRecoveryState};
use crate::metadata::{MetadataImage, PartitionImage};

/// A broken invariant, described for the failure message.
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fails with the formatted message.
macro_rules! violation {
    ($($arg:tt)*) => {
        return Err(Violation(format!($($arg)*)))
    };
}

/// What the oracle knows of one partition.
#[derive(Default)]
struct PartitionFacts {
    committed: Vec<Batch>,
    /// Acknowledged acks=all batches by base offset.
    acked: BTreeMap<Offset, Batch>,
    /// Those not yet looked up in the committed log.
    acked_unchecked: Vec<Batch>,
    /// Per broker, the prefix of its log known equal to `committed`.
    verified: Vec<Offset>,
    /// Per broker, where the committed log was cut below records it
    /// holds, until its log ends there again.
    stale: Vec<Option<Offset>>,
    /// Acknowledged acks=all batches an unclean election forfeited.
    forfeited: Vec<Batch>,
    /// The latest unclean election: it decides which branch lives on (an
    /// earlier one may have deposed a branch that a later one, of a
    /// replica on it, brings back).
    unclean_election: Option<UncleanElection>,
}

/// An unclean election of a leader for `epoch` from outside the ISR.
struct UncleanElection {
    epoch: LeaderEpoch,
    /// The elected replica's log when the election was committed.
    elected: ReplicaLog,
    /// The branch that lives on: the log of the partition's first leader
    /// since the election, `elected` until then (as a follower of a leader
    /// that does not know it was deposed, the elected replica may still
    /// fetch in between).
    branch: ReplicaLog,
    /// Whether the partition was led since.
    led: bool,
}

impl UncleanElection {
    /// Whether the election may lose acknowledged `batch`: of an older
    /// epoch, and lacking from the elected replica's log when it was
    /// elected.
    fn forfeits(&self, batch: &Batch) -> bool {
        batch.epoch < self.epoch && self.elected.batch_at(batch.base) != Some(batch)
    }

    /// Whether `batch` is on a branch the election deposed: of an older
    /// epoch, and not on the branch that lives on.
    fn deposes(&self, batch: &Batch) -> bool {
        batch.epoch < self.epoch && self.branch.batch_at(batch.base) != Some(batch)
    }
}

impl PartitionFacts {
    fn committed_end(&self) -> Offset {
        self.committed.last().map_or(Offset::ZERO, Batch::end)
    }

    /// The committed batch starting at `base`, if any.
    fn committed_at(&self, base: Offset) -> Option<&Batch> {
        let at = self
            .committed
            .binary_search_by_key(&base, |committed| committed.base);
        at.ok().map(|at| &self.committed[at])
    }

    /// Whether the latest unclean election may lose acknowledged `batch`.
    fn forfeitable(&self, batch: &Batch) -> bool {
        self.unclean_election
            .as_ref()
            .is_some_and(|election| election.forfeits(batch))
    }

    /// An unclean election elected a replica whose log is `elected`, for
    /// `epoch`: forfeits the acknowledged batches it may lose, and starts
    /// a new branch ([`PartitionFacts::new_branch`]).
    fn unclean_election(&mut self, epoch: LeaderEpoch, elected: &ReplicaLog) {
        let election = self.unclean_election.insert(UncleanElection {
            epoch,
            elected: elected.clone(),
            branch: elected.clone(),
            led: false,
        });
        let forfeited = &mut self.forfeited;
        self.acked.retain(|_, batch| {
            if election.forfeits(batch) {
                forfeited.push(*batch);
            }
            !election.forfeits(batch)
        });
        self.acked_unchecked
            .retain(|batch| !election.forfeits(batch));
        self.new_branch();
    }

    /// The branch that lives on changed: the cuts made so far were made
    /// against a branch it deposes or brings back. From now on its log
    /// tells which replicas are on a deposed branch, and the next check
    /// cuts the committed log again to what the ISR (its leader alone)
    /// holds.
    fn new_branch(&mut self) {
        self.stale.fill(None);
    }

    /// Where `log` first holds a batch on a branch the latest unclean
    /// election deposed, from `from` up to `until`: the replica is
    /// compared only below it, until it truncates it away.
    fn first_deposed(&self, log: &ReplicaLog, from: Offset, until: Offset) -> Option<Offset> {
        let election = self.unclean_election.as_ref()?;
        log.read(from, usize::MAX)
            .iter()
            .take_while(|batch| batch.base < until)
            .find(|batch| election.deposes(batch))
            .map(|batch| batch.base)
    }
}

/// See the module documentation.
pub struct Oracle {
    /// Whether the run allows unclean leader elections.
    unclean_allowed: bool,
    partitions: Vec<PartitionFacts>,
    /// Who acted as leader of each (partition, epoch).
    claims: BTreeMap<(usize, LeaderEpoch), BrokerId>,
    /// The leader each (partition, epoch) had in the images.
    image_leaders: BTreeMap<(usize, LeaderEpoch), BrokerId>,
    /// The highest high watermark each (partition, epoch) had on its
    /// leader.
    leader_high_watermarks: BTreeMap<(usize, LeaderEpoch), Offset>,
}

impl Oracle {
    /// Knows nothing yet of `partitions` partitions on `brokers` brokers;
    /// `unclean_allowed` when the run enables unclean leader elections.
    pub fn new(partitions: usize, brokers: usize, unclean_allowed: bool) -> Self {
        Self {
            unclean_allowed,
            partitions: (0..partitions)
                .map(|_| PartitionFacts {
                    verified: vec![Offset::ZERO; brokers],
                    stale: vec![None; brokers],
                    ..PartitionFacts::default()
                })
                .collect(),
            claims: BTreeMap::new(),
            image_leaders: BTreeMap::new(),
            leader_high_watermarks: BTreeMap::new(),
        }
    }

    /// How many acks=all batches were acknowledged.
    pub fn acked_batches(&self) -> usize {
        self.partitions
            .iter()
            .map(|facts| facts.acked.len() + facts.forfeited.len())
            .sum()
    }

    /// How many acknowledged acks=all batches unclean elections forfeited
    /// that the committed log does not hold.
    pub fn acked_batches_lost(&self) -> usize {
        self.partitions
            .iter()
            .map(|facts| {
                facts
                    .forfeited
                    .iter()
                    .filter(|&batch| facts.committed_at(batch.base) != Some(batch))
                    .count()
            })
            .sum()
    }

    /// `broker` took leadership of `partition` in `epoch`, its log `log`:
    /// the first leader after an unclean election is the replica elected
    /// (or, if that one never led, the same replica elected again from the
    /// ISR it was left alone in), and its log now is the branch that lives.
    ///
    /// # Errors
    /// Another broker acted as leader of that epoch.
    pub fn lead(
        &mut self,
        partition: usize,
        epoch: LeaderEpoch,
        broker: BrokerId,
        log: &ReplicaLog,
    ) -> Result<(), Violation> {
        let claimed = *self.claims.entry((partition, epoch)).or_insert(broker);
        if claimed != broker {
            violation!(
                "partition {partition} epoch {}: broker {broker} leads it, but broker {claimed} did",
                epoch.0
            );
        }
        let facts = &mut self.partitions[partition];
        if let Some(election) = facts
            .unclean_election
            .as_mut()
            .filter(|election| !election.led && epoch >= election.epoch)
        {
            election.branch = log.clone();
            election.led = true;
            facts.new_branch();
        }
        Ok(())
    }

    /// The leader of `partition` acknowledged `batch` to an acks=all
    /// producer.
    ///
    /// # Errors
    /// Another batch was acknowledged at that offset.
    pub fn acknowledged(&mut self, partition: usize, batch: Batch) -> Result<(), Violation> {
        let facts = &mut self.partitions[partition];
        if facts.forfeitable(&batch) {
            // A leader deposed by an unclean election of a replica that
            // lacks the batch: it may be lost.
            facts.forfeited.push(batch);
            return Ok(());
        }
        facts.acked_unchecked.push(batch);
        let acked = facts.acked.entry(batch.base).or_insert(batch);
        if *acked != batch {
            violation!(
                "partition {partition}: {batch:?} acknowledged where {acked:?} was acknowledged"
            );
        }
        Ok(())
    }

    /// The log of `broker` for `partition` was cut to end at `end`.
    pub fn shortened(&mut self, partition: usize, broker: usize, end: Offset) {
        let verified = &mut self.partitions[partition].verified[broker];
        *verified = (*verified).min(end);
    }

    /// Checks a newly committed image against the one before it; `rules`
    /// are what the controller's elections went by, `logs` as for
    /// [`Oracle::check`]. Forfeits what an unclean election may lose.
    ///
    /// # Errors
    /// An empty ISR, a leader outside it, a second leader in an epoch, a
    /// leader elected from outside the previous ISR against the rules of
    /// the module documentation, or a leader recovery state that breaks
    /// them.
    pub fn check_image(
        &mut self,
        before: &MetadataImage,
        after: &MetadataImage,
        rules: &ElectionRules,
        logs: &[&[ReplicaLog]],
    ) -> Result<(), Violation> {
        let Some(topic) = after.topics.get(super::controller::TOPIC) else {
            return Ok(());
        };
        let previous = before.topics.get(super::controller::TOPIC);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.isr.is_empty() {
                violation!("partition {index}: the ISR became empty: {partition:?}");
            }
            if partition.leader != BrokerId::NONE && !partition.isr.contains(&partition.leader) {
                violation!("partition {index}: the leader is not in the ISR: {partition:?}");
            }
            let leader = *self
                .image_leaders
                .entry((index, partition.leader_epoch))
                .or_insert(partition.leader);
            if leader != partition.leader {
                violation!(
                    "partition {index} epoch {}: led by {leader} and then by {}",
                    partition.leader_epoch.0,
                    partition.leader
                );
            }
            let Some(old) = previous.and_then(|topic| topic.partitions.get(index)) else {
                continue;
            };
            let unclean = partition.leader != old.leader
                && partition.leader != BrokerId::NONE
                && !old.isr.contains(&partition.leader);
            if unclean {
                self.unclean_election(index, old, partition, rules, after, logs)?;
            }
            check_leader_recovery(index, old, partition, unclean)?;
        }
        Ok(())
    }

    /// `partition` (`index`) got its leader from outside the ISR of `old`:
    /// allowed as the module documentation says; forfeits what the new
    /// leader lacks.
    fn unclean_election(
        &mut self,
        index: usize,
        old: &PartitionImage,
        partition: &PartitionImage,
        rules: &ElectionRules,
        after: &MetadataImage,
        logs: &[&[ReplicaLog]],
    ) -> Result<(), Violation> {
        let leader = partition.leader;
        if !self.unclean_allowed {
            violation!(
                "partition {index}: {leader} elected from outside the ISR {:?} (unclean election is off)",
                old.isr
            );
        }
        if let Some(member) = old
            .isr
            .iter()
            .find(|&&member| rules.is_eligible(after, member))
        {
            violation!(
                "partition {index}: {leader} elected from outside the ISR {:?} while its member {member} \
                 is eligible",
                old.isr
            );
        }
        if partition.isr != [leader]
            || partition.leader_recovery_state != LeaderRecoveryState::Recovering
        {
            violation!(
                "partition {index}: {leader} elected from outside the ISR {:?} is not the whole ISR \
                 of a recovering partition: {partition:?}",
                old.isr
            );
        }
        let Some(log) = usize::try_from(leader.0 - 1)
            .ok()
            .and_then(|broker| logs.get(broker))
            .map(|logs| &logs[index])
        else {
            violation!("partition {index}: leader {leader} is no broker");
        };
        self.partitions[index].unclean_election(partition.leader_epoch, log);
        Ok(())
    }

    /// Checks every replica against the committed log, extends the
    /// committed log, and checks the acknowledged batches against it and
    /// against the members of the ISR of `image`. `logs[b][p]` is broker
    /// `b`'s log of partition `p`; `leaders` the (partition, epoch, broker)
    /// of every broker acting as a leader.
    ///
    /// # Errors
    /// The first broken invariant of the module documentation.
    pub fn check(
        &mut self,
        logs: &[&[ReplicaLog]],
        leaders: &[(usize, LeaderEpoch, usize)],
        image: &MetadataImage,
    ) -> Result<(), Violation> {
        for &(partition, epoch, broker) in leaders {
            let high_watermark = logs[broker][partition].high_watermark();
            let highest = self
                .leader_high_watermarks
                .entry((partition, epoch))
                .or_insert(high_watermark);
            if high_watermark < *highest {
                violation!(
                    "partition {partition} epoch {}: the high watermark of leader {} went back from {} to {high_watermark}",
                    epoch.0,
                    broker + 1,
                    *highest
                );
            }
            *highest = high_watermark;
        }
        let topic = image.topics.get(super::controller::TOPIC);
        for (index, facts) in self.partitions.iter_mut().enumerate() {
            let state = topic.and_then(|topic| topic.partitions.get(index));
            if let Some(state) = state {
                cut_to_isr(index, state, logs, facts)?;
            }
            for (broker, broker_logs) in logs.iter().enumerate() {
                verify_replica(index, broker, &broker_logs[index], facts)?;
            }
            for batch in std::mem::take(&mut facts.acked_unchecked) {
                let committed = facts.committed_at(batch.base);
                if committed != Some(&batch) {
                    violation!(
                        "partition {index}: acknowledged {batch:?} is not in the committed log \
                         (there: {committed:?})"
                    );
                }
            }
            if let Some(state) = state {
                check_isr_holds_acked(index, state, logs, facts)?;
            }
        }
        Ok(())
    }

    /// The committed log of `partition`.
    pub fn committed(&self, partition: usize) -> &[Batch] {
        &self.partitions[partition].committed
    }
}

/// The leader recovery state of `partition` (`index`) after `old`, with
/// `unclean` whether its leader just came from outside the ISR: see the
/// module documentation.
fn check_leader_recovery(
    index: usize,
    old: &PartitionImage,
    partition: &PartitionImage,
    unclean: bool,
) -> Result<(), Violation> {
    let was_recovering = old.leader_recovery_state == LeaderRecoveryState::Recovering;
    let recovering = partition.leader_recovery_state == LeaderRecoveryState::Recovering;
    if recovering && !was_recovering && !unclean {
        violation!(
            "partition {index}: marked recovering without an unclean election: {old:?} then {partition:?}"
        );
    }
    if !was_recovering {
        return Ok(());
    }
    if let Some(joined) = partition
        .isr
        .iter()
        .find(|&&member| !(old.isr.contains(&member) || (unclean && member == partition.leader)))
    {
        if recovering {
            violation!(
                "partition {index}: {joined} joined the ISR {:?} while it is recovering",
                partition.isr
            );
        }
        violation!(
            "partition {index}: {joined} joined the ISR {:?} before leader {} reported it recovered",
            partition.isr,
            old.leader
        );
    }
    if !recovering && (partition.leader != old.leader || partition.leader_epoch != old.leader_epoch)
    {
        violation!(
            "partition {index}: recovered by another than its leader's report: {old:?} then {partition:?}"
        );
    }
    Ok(())
}

/// Compares `log` (of `broker`) with the committed log below its high
/// watermark, from where it was verified before, and extends the
/// committed log when the high watermark passes its end. A replica
/// holding records cut from the committed log, or a batch on a branch an
/// unclean election deposed, is compared only below them.
fn verify_replica(
    partition: usize,
    broker: usize,
    log: &ReplicaLog,
    facts: &mut PartitionFacts,
) -> Result<(), Violation> {
    let mut high_watermark = log.high_watermark();
    if let Some(cut) = facts.stale[broker] {
        if log.log_end() <= cut {
            facts.stale[broker] = None;
        } else {
            high_watermark = high_watermark.min(cut);
        }
    }
    let verified = facts.verified[broker];
    if let Some(deposed) = facts.first_deposed(log, verified, high_watermark) {
        high_watermark = high_watermark.min(deposed);
    }
    if high_watermark <= verified {
        return Ok(());
    }
    let committed_end = facts.committed_end();
    let compared_to = high_watermark.min(committed_end);
    if compared_to > verified {
        let ours = log.read(verified, usize::MAX);
        let theirs_from = facts
            .committed
            .partition_point(|batch| batch.end() <= verified);
        let mut theirs = facts.committed[theirs_from..].iter();
        for batch in ours.iter().take_while(|batch| batch.base < compared_to) {
            let expected = theirs.next();
            if expected != Some(batch) {
                violation!(
                    "partition {partition}: broker {} has {batch:?} below its high watermark {high_watermark}, \
                     where the committed log has {expected:?}",
                    broker + 1
                );
            }
        }
    }
    if high_watermark > committed_end {
        let start = log.read(committed_end, usize::MAX);
        if start
            .first()
            .is_some_and(|batch| batch.base != committed_end)
        {
            violation!(
                "partition {partition}: broker {} has no batch starting at the committed end {committed_end}",
                broker + 1
            );
        }
        facts.committed.extend(
            start
                .iter()
                .take_while(|batch| batch.base < high_watermark)
                .copied(),
        );
    }
    facts.verified[broker] = high_watermark;
    Ok(())
}

/// Cuts the committed log to what some member of `partition`'s ISR still
/// holds; see the module documentation.
fn cut_to_isr(
    index: usize,
    partition: &PartitionImage,
    logs: &[&[ReplicaLog]],
    facts: &mut PartitionFacts,
) -> Result<(), Violation> {
    let end = facts.committed_end();
    let held = partition
        .isr
        .iter()
        .filter_map(|member| usize::try_from(member.0 - 1).ok())
        .filter_map(|broker| Some(agreement(logs.get(broker)?.get(index)?, broker, facts)))
        .max()
        .unwrap_or(Offset::ZERO);
    if held >= end {
        return Ok(());
    }
    if let Some(batch) = facts.acked.values().find(|batch| batch.end() > held) {
        violation!(
            "partition {index}: acknowledged {batch:?} is lost: the ISR {:?} holds the committed log \
             only up to {held}",
            partition.isr
        );
    }
    let keep = facts.committed.partition_point(|batch| batch.end() <= held);
    facts.committed.truncate(keep);
    let cut = facts.committed_end();
    for (verified, stale) in facts.verified.iter_mut().zip(&mut facts.stale) {
        if *verified > cut {
            *verified = cut;
            *stale = Some(cut);
        }
    }
    Ok(())
}

/// How far `log` (of `broker`) agrees with the committed log.
fn agreement(log: &ReplicaLog, broker: usize, facts: &PartitionFacts) -> Offset {
    let from = facts.verified[broker].min(log.log_end());
    let at = facts.committed.partition_point(|batch| batch.end() <= from);
    let mut agreed = from;
    for (ours, theirs) in log
        .read(from, usize::MAX)
        .iter()
        .zip(&facts.committed[at..])
    {
        if ours != theirs {
            break;
        }
        agreed = ours.end();
    }
    agreed
}

/// Every acknowledged batch is in the log of every member of
/// `partition`'s ISR.
fn check_isr_holds_acked(
    index: usize,
    partition: &PartitionImage,
    logs: &[&[ReplicaLog]],
    facts: &PartitionFacts,
) -> Result<(), Violation> {
    for member in &partition.isr {
        let broker = usize::try_from(member.0 - 1).unwrap_or(usize::MAX);
        let Some(log) = logs.get(broker).map(|logs| &logs[index]) else {
            violation!("partition {index}: ISR member {member} is no broker");
        };
        // Below the verified prefix the log equals the committed log,
        // which holds every acknowledged batch.
        for batch in facts
            .acked
            .range(facts.verified[broker]..)
            .map(|(_, batch)| batch)
        {
            if log.batch_at(batch.base) != Some(batch) {
                violation!(
                    "partition {index}: acknowledged {batch:?} is missing from ISR member {member} \
                     (log end {}, high watermark {}); ISR {:?}",
                    log.log_end(),
                    log.high_watermark(),
                    partition.isr
                );
            }
        }
    }
    Ok(())
}
