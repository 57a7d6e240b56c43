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
//!   (its disk is): an election from the ISR then keeps it.
//! - **Leaders.** A leader epoch has one leader, in the images and among
//!   the brokers acting as leaders; a leader's high watermark never goes
//!   back within its epoch.
//! - **Images.** The ISR is never empty and holds the leader; a new leader
//!   comes from the previous ISR (unclean election is off).
//!
//! Verification is incremental: the prefix of each replica already found
//! equal to the committed log is not compared again until a truncation or
//! a crash shortens it.

use std::collections::BTreeMap;

use fjord_engine::{LeaderEpoch, Offset};

use super::replica_log::{Batch, ReplicaLog};
use crate::metadata::records::BrokerId;
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
}

impl PartitionFacts {
    fn committed_end(&self) -> Offset {
        self.committed.last().map_or(Offset::ZERO, Batch::end)
    }
}

/// See the module documentation.
pub struct Oracle {
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
    /// Knows nothing yet of `partitions` partitions on `brokers` brokers.
    pub fn new(partitions: usize, brokers: usize) -> Self {
        Self {
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
        self.partitions.iter().map(|facts| facts.acked.len()).sum()
    }

    /// `broker` took leadership of `partition` in `epoch`.
    ///
    /// # Errors
    /// Another broker acted as leader of that epoch.
    pub fn lead(
        &mut self,
        partition: usize,
        epoch: LeaderEpoch,
        broker: BrokerId,
    ) -> Result<(), Violation> {
        let claimed = *self.claims.entry((partition, epoch)).or_insert(broker);
        if claimed != broker {
            violation!(
                "partition {partition} epoch {}: broker {broker} leads it, but broker {claimed} did",
                epoch.0
            );
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

    /// Checks a newly committed image against the one before it.
    ///
    /// # Errors
    /// An empty ISR, a leader outside it, a second leader in an epoch, or
    /// a leader elected from outside the previous ISR.
    pub fn check_image(
        &mut self,
        before: &MetadataImage,
        after: &MetadataImage,
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
            if partition.leader != old.leader
                && partition.leader != BrokerId::NONE
                && !old.isr.contains(&partition.leader)
            {
                violation!(
                    "partition {index}: {} elected from outside the ISR {:?} (unclean election is off)",
                    partition.leader,
                    old.isr
                );
            }
        }
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
            for batch in facts.acked_unchecked.drain(..) {
                let at = facts
                    .committed
                    .binary_search_by_key(&batch.base, |committed| committed.base);
                let committed = at.ok().map(|at| &facts.committed[at]);
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

/// Compares `log` (of `broker`) with the committed log below its high
/// watermark, from where it was verified before, and extends the
/// committed log when the high watermark passes its end.
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
