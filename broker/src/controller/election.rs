//! Leader elections the controller makes when a broker's fencing or
//! shutdown changes, or a topic's configs do, as pure functions from an
//! image to the `PartitionChangeRecord`s that follow, so the simulation
//! drives exactly the code the controller runs.
//!
//! Kafka's rules (KRaft, without eligible leader replicas): a leader comes
//! from the ISR, in the partition's replica order (so the preferred leader
//! wins when it can), and only among *eligible* brokers: unfenced and not
//! in controlled shutdown. A fenced broker leaves every ISR it is in,
//! except that an ISR never becomes empty: its last member stays, so the
//! partition stays offline (leader none) until that broker returns, rather
//! than electing a replica that may lack acknowledged records. A topic
//! with `unclean.leader.election.enable=true` (or the broker default of
//! that name) takes that risk instead: a partition with no eligible ISR
//! member gets the first eligible replica in replica order as leader, with
//! an ISR of that replica alone, when a broker is fenced or unfenced or
//! the config is switched on, as Kafka does. Such a partition is marked
//! recovering (KIP-704) until its new leader, having taken the leadership,
//! says it recovered ([`super::alter_partition`]); meanwhile its ISR may
//! not grow.
//!
//! A broker in controlled shutdown ([`after_controlled_shutdown`]) hands
//! every leadership it can to the first eligible member of the rest of the
//! ISR and leaves every ISR that keeps another member; a partition whose
//! ISR has no other eligible member stays with it until it is fenced.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::records::{
    BrokerId, LeaderRecoveryRecord, LeaderRecoveryState, MetadataRecord, PartitionChangeRecord,
};
use crate::metadata::{MetadataImage, PartitionImage, TopicImage};

/// The topic config (and broker default) that allows unclean elections.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// What elections need to know beyond the image: the active controller's
/// memory of brokers in controlled shutdown, and the broker default of
/// `unclean.leader.election.enable`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElectionRules {
    /// Brokers in controlled shutdown: unfenced, but neither elected nor
    /// added to an ISR until they are fenced or register again.
    pub shutting_down: BTreeSet<BrokerId>,
    /// `unclean.leader.election.enable` for topics that do not set it.
    pub unclean_leader_election_default: bool,
}

impl ElectionRules {
    /// Whether `broker` may lead or join an ISR: registered, unfenced, and
    /// not in controlled shutdown.
    #[must_use]
    pub fn is_eligible(&self, image: &MetadataImage, broker: BrokerId) -> bool {
        is_live(image, broker) && !self.shutting_down.contains(&broker)
    }

    /// Whether `topic` allows unclean leader elections: its override, else
    /// the broker default.
    #[must_use]
    pub fn unclean_enabled(&self, topic: &TopicImage) -> bool {
        topic
            .config(UNCLEAN_LEADER_ELECTION_ENABLE)
            .map_or(self.unclean_leader_election_default, |value| {
                value.trim().eq_ignore_ascii_case("true")
            })
    }
}

/// Whether `broker` is registered and unfenced in `image`.
#[must_use]
pub fn is_live(image: &MetadataImage, broker: BrokerId) -> bool {
    image
        .brokers
        .get(&broker)
        .is_some_and(|registration| !registration.fenced)
}

/// The leader `partition` gets with `isr`: its first replica that is in
/// `isr` and eligible, or [`BrokerId::NONE`].
#[must_use]
pub fn elect_leader(
    image: &MetadataImage,
    rules: &ElectionRules,
    partition: &PartitionImage,
    isr: &[BrokerId],
) -> BrokerId {
    partition
        .replicas
        .iter()
        .copied()
        .find(|&replica| isr.contains(&replica) && rules.is_eligible(image, replica))
        .unwrap_or(BrokerId::NONE)
}

/// What a decision leaves a partition with.
struct Decided {
    isr: Vec<BrokerId>,
    leader: BrokerId,
    /// The leader comes from outside the ISR: the partition is marked
    /// recovering (KIP-704).
    unclean: bool,
}

impl Decided {
    fn clean(isr: Vec<BrokerId>, leader: BrokerId) -> Self {
        Self {
            isr,
            leader,
            unclean: false,
        }
    }
}

/// What a partition gets from an election with `isr`: a leader from
/// `isr`, else, if `unclean_allowed`, the first eligible replica alone
/// (unclean), else none.
fn elect(
    image: &MetadataImage,
    rules: &ElectionRules,
    unclean_allowed: bool,
    partition: &PartitionImage,
    isr: Vec<BrokerId>,
) -> Decided {
    let leader = elect_leader(image, rules, partition, &isr);
    if leader != BrokerId::NONE || !unclean_allowed {
        return Decided::clean(isr, leader);
    }
    match partition
        .replicas
        .iter()
        .copied()
        .find(|&replica| rules.is_eligible(image, replica))
    {
        Some(replica) => Decided {
            isr: vec![replica],
            leader: replica,
            unclean: true,
        },
        None => Decided::clean(isr, BrokerId::NONE),
    }
}

/// The changes after `broker` was fenced (`image` already shows it
/// fenced): it leaves every ISR that keeps another member, and every
/// partition it led gets a new leader from the rest of its ISR, or
/// (unclean, if allowed) from its replicas, or none.
#[must_use]
pub fn after_fencing(
    image: &MetadataImage,
    rules: &ElectionRules,
    broker: BrokerId,
) -> Vec<MetadataRecord> {
    changes(image, |topic, partition| {
        if partition.leader != broker && !partition.isr.contains(&broker) {
            return None;
        }
        let isr = without(&partition.isr, broker);
        let isr = if isr.is_empty() {
            partition.isr.clone()
        } else {
            isr
        };
        Some(if partition.leader == broker {
            elect(image, rules, rules.unclean_enabled(topic), partition, isr)
        } else {
            Decided::clean(isr, partition.leader)
        })
    })
}

/// The changes after `broker` was unfenced (`image` already shows it
/// unfenced): every leaderless partition whose ISR it is in gets a leader,
/// and so does, if its topic allows unclean elections, every leaderless
/// partition it is a replica of.
#[must_use]
pub fn after_unfencing(
    image: &MetadataImage,
    rules: &ElectionRules,
    broker: BrokerId,
) -> Vec<MetadataRecord> {
    changes(image, |topic, partition| {
        let concerned = partition.isr.contains(&broker)
            || (partition.replicas.contains(&broker) && rules.unclean_enabled(topic));
        if partition.leader != BrokerId::NONE || !concerned {
            return None;
        }
        Some(elect(
            image,
            rules,
            rules.unclean_enabled(topic),
            partition,
            partition.isr.clone(),
        ))
    })
}

/// The changes after `topic`'s configs changed: each of its leaderless
/// partitions gets a leader if one can be elected now (unclean elections
/// switched on).
#[must_use]
pub fn after_config_change(
    image: &MetadataImage,
    rules: &ElectionRules,
    topic: &str,
) -> Vec<MetadataRecord> {
    changes(image, |candidate, partition| {
        if candidate.name != topic || partition.leader != BrokerId::NONE {
            return None;
        }
        Some(elect(
            image,
            rules,
            rules.unclean_enabled(candidate),
            partition,
            partition.isr.clone(),
        ))
    })
}

/// The changes when `broker` enters controlled shutdown (`rules` already
/// count it as shutting down): each partition it leads whose ISR has
/// another eligible member gets the first of them (in replica order) as
/// leader, and it leaves every ISR that keeps another member, except
/// those of the partitions it still leads. No unclean election: its own
/// records would go with the leadership.
#[must_use]
pub fn after_controlled_shutdown(
    image: &MetadataImage,
    rules: &ElectionRules,
    broker: BrokerId,
) -> Vec<MetadataRecord> {
    changes(image, |_, partition| {
        if !partition.isr.contains(&broker) {
            return None;
        }
        let rest = without(&partition.isr, broker);
        if partition.leader == broker {
            let leader = elect_leader(image, rules, partition, &rest);
            return (leader != BrokerId::NONE).then(|| Decided::clean(rest, leader));
        }
        (!rest.is_empty()).then(|| Decided::clean(rest, partition.leader))
    })
}

/// How many partitions `broker` leads whose ISR has another eligible
/// member: the leaderships a controlled shutdown has yet to move.
#[must_use]
pub fn movable_leaderships(
    image: &MetadataImage,
    rules: &ElectionRules,
    broker: BrokerId,
) -> usize {
    image
        .topics
        .values()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| {
            partition.leader == broker
                && partition
                    .isr
                    .iter()
                    .any(|&member| member != broker && rules.is_eligible(image, member))
        })
        .count()
}

/// The elections an administrator asks for with ElectLeaders
/// (`kafka-leader-election.sh --election-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// The partition's first replica, its preferred leader, if it is an
    /// eligible ISR member (Kafka's type 0).
    Preferred,
    /// A leader for a leaderless partition: an eligible ISR member, else
    /// the first eligible replica alone, whatever the topic's
    /// `unclean.leader.election.enable` says (Kafka's type 1).
    Unclean,
}

/// Why an election asked for does not happen (Kafka's ElectLeaders
/// errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionRefusal {
    /// The partition already has the leader asked for
    /// (`ELECTION_NOT_NEEDED`).
    NotNeeded,
    /// The preferred replica is not an eligible ISR member
    /// (`PREFERRED_LEADER_NOT_AVAILABLE`).
    PreferredNotAvailable,
    /// No replica is eligible (`ELIGIBLE_LEADERS_NOT_AVAILABLE`).
    NoEligibleReplica,
}

/// The changes an election of `kind` makes to partition `partition_id` of
/// `topic`: its `PartitionChangeRecord`, and for a leader from outside the
/// ISR the `LeaderRecoveryRecord` marking it recovering.
///
/// # Errors
/// [`ElectionRefusal`] when it changes nothing.
pub fn requested_election(
    image: &MetadataImage,
    rules: &ElectionRules,
    kind: ElectionType,
    topic: &TopicImage,
    partition_id: i32,
    partition: &PartitionImage,
) -> Result<Vec<MetadataRecord>, ElectionRefusal> {
    let decided = match kind {
        ElectionType::Preferred => {
            let preferred = partition.replicas[0];
            if partition.leader == preferred {
                return Err(ElectionRefusal::NotNeeded);
            }
            if !partition.isr.contains(&preferred) || !rules.is_eligible(image, preferred) {
                return Err(ElectionRefusal::PreferredNotAvailable);
            }
            Decided::clean(partition.isr.clone(), preferred)
        }
        ElectionType::Unclean => {
            if partition.leader != BrokerId::NONE {
                return Err(ElectionRefusal::NotNeeded);
            }
            let decided = elect(image, rules, true, partition, partition.isr.clone());
            if decided.leader == BrokerId::NONE {
                return Err(ElectionRefusal::NoEligibleReplica);
            }
            decided
        }
    };
    let records = change_records(topic, partition_id, partition, decided);
    if records.is_empty() {
        return Err(ElectionRefusal::NotNeeded);
    }
    Ok(records)
}

/// The preferred-leader elections of `auto.leader.rebalance.enable`: for
/// every broker that does not lead more than `imbalance_percentage` percent
/// of the partitions it is the preferred leader of (Kafka's
/// `leader.imbalance.per.broker.percentage`), each of those partitions where
/// it is an eligible ISR member gets it back as leader. Leaderships moved by
/// failover or a controlled shutdown thus return once their broker is back
/// in sync, and a restarted cluster does not stay led by the node that
/// came back first.
#[must_use]
pub fn rebalancing_elections(
    image: &MetadataImage,
    rules: &ElectionRules,
    imbalance_percentage: u32,
) -> Vec<MetadataRecord> {
    // Per preferred broker: (partitions it prefers, those it does not lead).
    let mut preferred_counts: BTreeMap<BrokerId, (u64, u64)> = BTreeMap::new();
    for partition in image.topics.values().flat_map(|topic| &topic.partitions) {
        let counts = preferred_counts.entry(partition.replicas[0]).or_default();
        counts.0 += 1;
        counts.1 += u64::from(partition.leader != partition.replicas[0]);
    }
    let imbalanced: BTreeSet<BrokerId> = preferred_counts
        .into_iter()
        .filter(|(_, (preferred, not_led))| {
            not_led * 100 > preferred * u64::from(imbalance_percentage)
        })
        .map(|(broker, _)| broker)
        .collect();
    if imbalanced.is_empty() {
        return Vec::new();
    }
    changes(image, |_, partition| {
        let preferred = partition.replicas[0];
        (partition.leader != preferred
            && imbalanced.contains(&preferred)
            && partition.isr.contains(&preferred)
            && rules.is_eligible(image, preferred))
        .then(|| Decided::clean(partition.isr.clone(), preferred))
    })
}

fn without(isr: &[BrokerId], broker: BrokerId) -> Vec<BrokerId> {
    isr.iter()
        .copied()
        .filter(|&member| member != broker)
        .collect()
}

/// The changes of every partition whose (ISR, leader) `decide` changes
/// ([`change_records`]).
fn changes(
    image: &MetadataImage,
    mut decide: impl FnMut(&TopicImage, &PartitionImage) -> Option<Decided>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (partition_id, partition) in (0..).zip(&topic.partitions) {
            let Some(decided) = decide(topic, partition) else {
                continue;
            };
            records.extend(change_records(topic, partition_id, partition, decided));
        }
    }
    records
}

/// The `PartitionChangeRecord` that gives `partition` (`partition_id` of
/// `topic`) what was `decided`, carrying only what changed, followed for
/// an unclean election by the `LeaderRecoveryRecord` marking it
/// recovering unless it already is (Kafka's `PartitionChangeBuilder`);
/// none if nothing changes.
fn change_records(
    topic: &TopicImage,
    partition_id: i32,
    partition: &PartitionImage,
    decided: Decided,
) -> Vec<MetadataRecord> {
    let Decided {
        isr,
        leader,
        unclean,
    } = decided;
    let isr_changed = isr != partition.isr;
    let leader_changed = leader != partition.leader;
    if !isr_changed && !leader_changed {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::PartitionChange(PartitionChangeRecord {
        partition_id,
        topic_id: topic.id,
        isr: isr_changed.then_some(isr),
        leader: leader_changed.then_some(leader),
        replicas: None,
        removing_replicas: None,
        adding_replicas: None,
    })];
    if unclean && partition.leader_recovery_state != LeaderRecoveryState::Recovering {
        records.push(MetadataRecord::LeaderRecovery(LeaderRecoveryRecord {
            partition_id,
            topic_id: topic.id,
            state: LeaderRecoveryState::Recovering,
        }));
    }
    records
}
