//! The active controller of the simulation: the metadata log modelled as
//! one ordered list of committed images (openraft has its own tests, so
//! the quorum is not simulated), with the controller's real decisions on
//! it: broker sessions ([`BrokerSessions`]: registration, heartbeats,
//! controlled shutdown, fencing on expiry, and the elections of
//! [`crate::controller::election`] that follow), AlterPartition
//! ([`crate::controller::alter_partition::alter_partition`]), every change
//! applied by [`MetadataImage::apply`].

use std::time::Duration;

use crate::controller::election::{elect_leader, ElectionRules, UNCLEAN_LEADER_ELECTION_ENABLE};
use crate::controller::liveness::BrokerSessions;
use crate::metadata::records::{
    BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType, LeaderRecoveryState, MetadataRecord,
    PartitionEpoch, PartitionRecord, TopicId, TopicRecord,
};
use crate::metadata::{ApplyError, MetadataImage, PartitionImage};
use fjord_engine::LeaderEpoch;

/// The simulated topic's name.
pub const TOPIC: &str = "sim";

/// The simulated topic's id.
pub const TOPIC_ID: TopicId = TopicId([7; 16]);

/// The committed metadata and the active controller's memory.
pub struct Controller {
    /// `images[i]` is the image after the first `i` commits.
    images: Vec<MetadataImage>,
    sessions: BrokerSessions,
}

impl Controller {
    /// An empty metadata log; sessions expire after `session_timeout`.
    pub fn new(session_timeout: Duration, unclean_leader_election: bool) -> Self {
        Self {
            images: vec![MetadataImage::default()],
            sessions: BrokerSessions::new(session_timeout, unclean_leader_election),
        }
    }

    /// The active controller's broker sessions, with the image they decide
    /// on.
    pub fn sessions(&mut self) -> (&mut BrokerSessions, &MetadataImage) {
        let image = self.images.last().expect("the log starts with an image");
        (&mut self.sessions, image)
    }

    /// What the active controller's elections go by.
    pub fn rules(&self) -> &ElectionRules {
        self.sessions.rules()
    }

    /// The index of the last commit.
    pub fn committed(&self) -> usize {
        self.images.len() - 1
    }

    /// The image after the last commit.
    pub fn image(&self) -> &MetadataImage {
        self.image_at(self.committed())
    }

    /// The image after commit `index`.
    pub fn image_at(&self, index: usize) -> &MetadataImage {
        &self.images[index]
    }

    /// Commits `records` as one entry of the metadata log; returns its
    /// index, or `None` when there is nothing to commit.
    ///
    /// # Errors
    /// The [`ApplyError`] of a record the controller's decisions should
    /// never have produced; nothing is committed.
    pub fn commit(&mut self, records: &[MetadataRecord]) -> Result<Option<usize>, ApplyError> {
        if records.is_empty() {
            return Ok(None);
        }
        let next = self.image().apply(records)?;
        self.images.push(next);
        Ok(Some(self.committed()))
    }

    /// The next broker epoch: the index the registration will get, as
    /// Kafka's epoch is its record's offset.
    pub fn next_broker_epoch(&self) -> BrokerEpoch {
        BrokerEpoch(i64::try_from(self.images.len()).unwrap_or(i64::MAX))
    }
}

/// The records that create the topic: `replicas[p]` for partition `p`,
/// every replica in the ISR, led by its first eligible replica; then, if
/// `unclean_override`, its `unclean.leader.election.enable=true` override
/// (in the controller's order: topic, partitions, configs).
pub fn create_topic(
    image: &MetadataImage,
    rules: &ElectionRules,
    replicas: &[Vec<BrokerId>],
    unclean_override: bool,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic(TopicRecord {
        name: TOPIC.to_owned(),
        topic_id: TOPIC_ID,
    })];
    for (partition_id, replicas) in (0..).zip(replicas) {
        let mut partition = PartitionImage {
            replicas: replicas.clone(),
            isr: replicas.clone(),
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
            leader: BrokerId::NONE,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            leader_recovery_state: LeaderRecoveryState::Recovered,
        };
        partition.leader = elect_leader(image, rules, &partition, &partition.isr);
        records.push(MetadataRecord::Partition(PartitionRecord {
            partition_id,
            topic_id: TOPIC_ID,
            replicas: partition.replicas,
            isr: partition.isr,
            removing_replicas: Vec::new(),
            adding_replicas: Vec::new(),
            leader: partition.leader,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
        }));
    }
    if unclean_override {
        records.push(MetadataRecord::Config(ConfigRecord {
            resource_type: ConfigResourceType::Topic,
            resource_name: TOPIC.to_owned(),
            name: UNCLEAN_LEADER_ELECTION_ENABLE.to_owned(),
            value: Some("true".to_owned()),
        }));
    }
    records
}
