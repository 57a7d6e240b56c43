//! AlterPartition: a partition leader's proposal of a new ISR, checked
//! with Kafka's rules and turned into the `PartitionChangeRecord` that
//! commits it, as a pure function of the image and the election rules, so
//! the simulation drives exactly the code the controller runs.
//!
//! The leader proposes; the controller commits; the leader acts on the
//! committed ISR only. A proposal names the broker epoch of the proposer's
//! registration and the leader and partition epochs it last saw, so a
//! proposal made from a stale view (the leadership moved, another change
//! landed first) is refused rather than undoing a newer decision. Kafka's
//! codes, each with the reason a leader needs:
//!
//! - `STALE_BROKER_EPOCH`: the proposer's registration is not the current
//!   one (it restarted, or was fenced and registered again).
//! - `UNKNOWN_TOPIC_OR_PARTITION`: no such partition (deleted meanwhile).
//! - `NOT_LEADER_OR_FOLLOWER`: the proposer does not lead the partition.
//! - `FENCED_LEADER_EPOCH`: its leader epoch is not the partition's.
//! - `INVALID_UPDATE_VERSION`: its partition epoch is not the partition's
//!   (another change landed): wait for the next image and propose again.
//! - `INVALID_REQUEST`: an empty ISR, one without the leader, or one naming
//!   a broker twice.
//! - `INELIGIBLE_REPLICA`: a broker the ISR would gain is not a replica,
//!   is fenced, is in controlled shutdown, or fetched with another broker
//!   epoch than its current registration's (KIP-903: it restarted since it
//!   caught up, and may have lost unflushed records; it must catch up
//!   again under its new epoch). Members it keeps are not checked: fencing
//!   removes those. A joining member with no epoch named is not checked
//!   for it (Kafka's -1).
//!
//! - `INVALID_REQUEST` too, for the leader recovery state (KIP-704): a
//!   proposal that keeps a partition recovering (its leader came from an
//!   unclean election and has not recovered) may not grow its ISR beyond
//!   the leader, and a recovered partition may not go back to recovering.
//!
//! The committed change keeps the leader and bumps the partition epoch; a
//! proposal of a recovered partition names it recovered, and a leader that
//! took over a recovering one names it recovered once it has (Kafka's
//! leader does so at once: fjord's has no state to rebuild beyond its log);
//! a proposal of the current ISR and recovery state commits nothing.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use super::election::ElectionRules;
use super::forward::IsrChange;
use crate::metadata::records::{
    BrokerEpoch, BrokerId, LeaderRecoveryRecord, LeaderRecoveryState, MetadataRecord,
    PartitionChangeRecord, PartitionEpoch,
};
use crate::metadata::{MetadataImage, PartitionImage};
use fjord_engine::LeaderEpoch;

/// A leader's proposal of a new ISR for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsrProposal {
    /// The topic.
    pub topic: String,
    /// The partition index.
    pub partition: i32,
    /// The leader epoch the proposer leads in.
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the state the proposal was made from.
    pub partition_epoch: PartitionEpoch,
    /// The proposed ISR, the leader included.
    pub isr: Vec<BrokerId>,
    /// The broker epoch each member fetched with, where the leader knows
    /// it (KIP-903's `NewIsrWithEpochs`).
    pub broker_epochs: BTreeMap<BrokerId, BrokerEpoch>,
    /// The leader recovery state the leader is in (KIP-704).
    pub leader_recovery_state: LeaderRecoveryState,
}

impl From<&IsrChange> for IsrProposal {
    fn from(change: &IsrChange) -> Self {
        Self {
            topic: change.topic.clone(),
            partition: change.partition,
            leader_epoch: LeaderEpoch(change.leader_epoch),
            partition_epoch: PartitionEpoch(change.partition_epoch),
            isr: change.isr.iter().copied().map(BrokerId).collect(),
            broker_epochs: change
                .broker_epochs
                .iter()
                .map(|&(broker, epoch)| (BrokerId(broker), BrokerEpoch(epoch)))
                .collect(),
            leader_recovery_state: if change.recovering {
                LeaderRecoveryState::Recovering
            } else {
                LeaderRecoveryState::Recovered
            },
        }
    }
}

impl From<&IsrProposal> for IsrChange {
    fn from(proposal: &IsrProposal) -> Self {
        Self {
            topic: proposal.topic.clone(),
            partition: proposal.partition,
            leader_epoch: proposal.leader_epoch.0,
            partition_epoch: proposal.partition_epoch.0,
            isr: proposal.isr.iter().map(|broker| broker.0).collect(),
            broker_epochs: proposal
                .broker_epochs
                .iter()
                .map(|(broker, epoch)| (broker.0, epoch.0))
                .collect(),
            recovering: proposal.leader_recovery_state == LeaderRecoveryState::Recovering,
        }
    }
}

/// Who proposes: a broker and the epoch of its registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposer {
    /// The broker.
    pub broker: BrokerId,
    /// Its registration's epoch, as it knows it.
    pub epoch: BrokerEpoch,
}

/// Why a proposal is refused; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlterPartitionError {
    /// The proposer's registration is not the current one.
    #[error("broker {broker} proposes with epoch {epoch}, not its registration's")]
    StaleBrokerEpoch {
        /// The proposer.
        broker: BrokerId,
        /// The epoch it gave.
        epoch: BrokerEpoch,
    },
    /// No such topic or partition.
    #[error("unknown partition {topic}-{partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The proposer does not lead the partition.
    #[error("broker {broker} does not lead {topic}-{partition} (its leader is {leader})")]
    NotLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The proposer.
        broker: BrokerId,
        /// The partition's leader.
        leader: BrokerId,
    },
    /// The proposal's leader epoch is not the partition's.
    #[error("leader epoch {} of the proposal is not the partition's {}", proposed.0, current.0)]
    FencedLeaderEpoch {
        /// The proposal's.
        proposed: LeaderEpoch,
        /// The partition's.
        current: LeaderEpoch,
    },
    /// The proposal's partition epoch is not the partition's.
    #[error("partition epoch {} of the proposal is not the partition's {}", proposed.0, current.0)]
    InvalidUpdateVersion {
        /// The proposal's.
        proposed: PartitionEpoch,
        /// The partition's.
        current: PartitionEpoch,
    },
    /// The ISR is malformed.
    #[error("invalid ISR {isr:?}: {reason}")]
    InvalidIsr {
        /// The proposed ISR.
        isr: Vec<BrokerId>,
        /// What is wrong.
        reason: &'static str,
    },
    /// A broker the ISR would gain may not join it.
    #[error("broker {broker} may not join the ISR: {reason}")]
    IneligibleReplica {
        /// The broker.
        broker: BrokerId,
        /// Why.
        reason: &'static str,
    },
}

impl AlterPartitionError {
    /// Kafka's error for it.
    #[must_use]
    pub fn kafka_error(&self) -> ResponseError {
        match self {
            Self::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
            Self::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
            Self::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            Self::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            Self::InvalidUpdateVersion { .. } => ResponseError::InvalidUpdateVersion,
            Self::InvalidIsr { .. } => ResponseError::InvalidRequest,
            Self::IneligibleReplica { .. } => ResponseError::IneligibleReplica,
        }
    }
}

/// The records that commit `proposal` (none if it proposes the current
/// ISR), or why it is refused.
///
/// # Errors
/// [`AlterPartitionError`], checked in the order of the module
/// documentation.
pub fn alter_partition(
    image: &MetadataImage,
    rules: &ElectionRules,
    proposer: Proposer,
    proposal: &IsrProposal,
) -> Result<Vec<MetadataRecord>, AlterPartitionError> {
    if image
        .brokers
        .get(&proposer.broker)
        .is_none_or(|registration| registration.epoch != proposer.epoch)
    {
        return Err(AlterPartitionError::StaleBrokerEpoch {
            broker: proposer.broker,
            epoch: proposer.epoch,
        });
    }
    let unknown = || AlterPartitionError::UnknownPartition {
        topic: proposal.topic.clone(),
        partition: proposal.partition,
    };
    let topic = image.topics.get(&proposal.topic).ok_or_else(unknown)?;
    let partition = topic.partition(proposal.partition).ok_or_else(unknown)?;
    if partition.leader != proposer.broker {
        return Err(AlterPartitionError::NotLeader {
            topic: proposal.topic.clone(),
            partition: proposal.partition,
            broker: proposer.broker,
            leader: partition.leader,
        });
    }
    if proposal.leader_epoch != partition.leader_epoch {
        return Err(AlterPartitionError::FencedLeaderEpoch {
            proposed: proposal.leader_epoch,
            current: partition.leader_epoch,
        });
    }
    if proposal.partition_epoch != partition.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion {
            proposed: proposal.partition_epoch,
            current: partition.partition_epoch,
        });
    }
    check_shape(proposer.broker, partition, proposal)?;
    for &member in proposal
        .isr
        .iter()
        .filter(|member| !partition.isr.contains(member))
    {
        let reason = if !partition.replicas.contains(&member) {
            "not a replica of the partition"
        } else if !super::election::is_live(image, member) {
            "fenced"
        } else if rules.shutting_down.contains(&member) {
            "in controlled shutdown"
        } else if proposal.broker_epochs.get(&member).is_some_and(|&epoch| {
            image
                .brokers
                .get(&member)
                .is_none_or(|registration| registration.epoch != epoch)
        }) {
            "it fetched with another broker epoch than its registration's"
        } else {
            continue;
        };
        return Err(AlterPartitionError::IneligibleReplica {
            broker: member,
            reason,
        });
    }
    let isr_changed = proposal.isr != partition.isr;
    let recovery_changed = proposal.leader_recovery_state != partition.leader_recovery_state;
    if !isr_changed && !recovery_changed {
        return Ok(Vec::new());
    }
    // The change bumps the partition epoch, so the leader sees its
    // proposal end, whatever it changed.
    let mut records = vec![MetadataRecord::PartitionChange(PartitionChangeRecord {
        partition_id: proposal.partition,
        topic_id: topic.id,
        isr: isr_changed.then(|| proposal.isr.clone()),
        leader: None,
        replicas: None,
        removing_replicas: None,
        adding_replicas: None,
    })];
    if recovery_changed {
        records.push(MetadataRecord::LeaderRecovery(LeaderRecoveryRecord {
            partition_id: proposal.partition,
            topic_id: topic.id,
            state: proposal.leader_recovery_state,
        }));
    }
    Ok(records)
}

/// The `INVALID_REQUEST` checks: an ISR that is empty, lacks the leader or
/// names a broker twice, and a leader recovery state the partition may
/// not take with it.
fn check_shape(
    leader: BrokerId,
    partition: &PartitionImage,
    proposal: &IsrProposal,
) -> Result<(), AlterPartitionError> {
    let invalid = |reason| AlterPartitionError::InvalidIsr {
        isr: proposal.isr.clone(),
        reason,
    };
    if proposal.isr.is_empty() {
        return Err(invalid("it is empty"));
    }
    if !proposal.isr.contains(&leader) {
        return Err(invalid("it does not hold the leader"));
    }
    let mut sorted = proposal.isr.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(invalid("it names a broker twice"));
    }
    let recovering = proposal.leader_recovery_state == LeaderRecoveryState::Recovering;
    if recovering && proposal.isr.len() > 1 {
        return Err(invalid(
            "it holds more than the leader while the leader is recovering",
        ));
    }
    if recovering && partition.leader_recovery_state == LeaderRecoveryState::Recovered {
        return Err(invalid(
            "a recovered partition cannot go back to recovering",
        ));
    }
    Ok(())
}
