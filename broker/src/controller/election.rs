//! Leader elections the controller makes when a broker's fencing changes,
//! as pure functions from an image to the `PartitionChangeRecord`s that
//! follow, so the simulation drives exactly the code the controller runs.
//!
//! Kafka's rules (KRaft, without eligible leader replicas): a leader comes
//! only from the ISR, in the partition's replica order (so the preferred
//! leader wins when it can), and only among unfenced brokers; unclean
//! election is the replication issue's. A fenced broker leaves every ISR it
//! is in, except that an ISR never becomes empty: its last member stays, so
//! the partition stays offline (leader none) until that broker returns,
//! rather than electing a replica that may lack acknowledged records.

use crate::metadata::records::{BrokerId, MetadataRecord, PartitionChangeRecord};
use crate::metadata::{MetadataImage, PartitionImage};

/// Whether `broker` is registered and unfenced in `image`.
#[must_use]
pub fn is_live(image: &MetadataImage, broker: BrokerId) -> bool {
    image
        .brokers
        .get(&broker)
        .is_some_and(|registration| !registration.fenced)
}

/// The leader `partition` gets with `isr`: its first replica that is in
/// `isr` and live, or [`BrokerId::NONE`].
#[must_use]
pub fn elect_leader(
    image: &MetadataImage,
    partition: &PartitionImage,
    isr: &[BrokerId],
) -> BrokerId {
    partition
        .replicas
        .iter()
        .copied()
        .find(|&replica| isr.contains(&replica) && is_live(image, replica))
        .unwrap_or(BrokerId::NONE)
}

/// The changes after `broker` was fenced (`image` already shows it
/// fenced): it leaves every ISR that keeps another member, and every
/// partition it led gets a new leader from the rest of its ISR, or none.
#[must_use]
pub fn after_fencing(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    changes(image, |partition| {
        if partition.leader != broker && !partition.isr.contains(&broker) {
            return None;
        }
        let isr: Vec<BrokerId> = if partition.isr.len() > 1 {
            partition
                .isr
                .iter()
                .copied()
                .filter(|&member| member != broker)
                .collect()
        } else {
            partition.isr.clone()
        };
        let leader = if partition.leader == broker {
            elect_leader(image, partition, &isr)
        } else {
            partition.leader
        };
        Some((isr, leader))
    })
}

/// The changes after `broker` was unfenced (`image` already shows it
/// unfenced): every leaderless partition whose ISR it is in gets a leader.
#[must_use]
pub fn after_unfencing(image: &MetadataImage, broker: BrokerId) -> Vec<MetadataRecord> {
    changes(image, |partition| {
        if partition.leader != BrokerId::NONE || !partition.isr.contains(&broker) {
            return None;
        }
        Some((
            partition.isr.clone(),
            elect_leader(image, partition, &partition.isr),
        ))
    })
}

/// A `PartitionChangeRecord` for every partition whose (ISR, leader)
/// `decide` changes, carrying only what changed.
fn changes(
    image: &MetadataImage,
    mut decide: impl FnMut(&PartitionImage) -> Option<(Vec<BrokerId>, BrokerId)>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (partition_id, partition) in (0..).zip(&topic.partitions) {
            let Some((isr, leader)) = decide(partition) else {
                continue;
            };
            let isr_changed = isr != partition.isr;
            let leader_changed = leader != partition.leader;
            if isr_changed || leader_changed {
                records.push(MetadataRecord::PartitionChange(PartitionChangeRecord {
                    partition_id,
                    topic_id: topic.id,
                    isr: isr_changed.then_some(isr),
                    leader: leader_changed.then_some(leader),
                    replicas: None,
                    removing_replicas: None,
                    adding_replicas: None,
                }));
            }
        }
    }
    records
}
