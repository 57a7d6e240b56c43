//! The metadata image: the cluster metadata at one point of the record log,
//! immutable once built, and the pure function that applies records to it.
//!
//! [`MetadataImage::apply`] takes an image and records and returns the next
//! image, or an [`ApplyError`] and no change: it reads no clock, does no I/O
//! and knows nothing of Kafka's wire error codes (the controller maps its
//! errors). Each record is checked against the image before it applies:
//! topics and partitions it names exist (or, when it creates them, do not),
//! replica lists hold no broker twice, the ISR is a subset of the replicas,
//! the leader is in the ISR or there is none, and no epoch (leader,
//! partition, broker) and no producer id block goes back.
//!
//! Applying a batch clones the image once (topics are shared `Arc`s, so a
//! clone copies pointers) and then changes only what the records touch.

use std::collections::BTreeMap;
use std::sync::Arc;

use fjord_engine::{LeaderEpoch, ProducerId, TopicPartition};
use uuid::Uuid;

use super::records::{
    BrokerCoresRecord, BrokerEndpoint, BrokerEpoch, BrokerFencingRecord, BrokerId, ConfigRecord,
    ConfigResourceType, LeaderRecoveryRecord, LeaderRecoveryState, MetadataRecord,
    PartitionChangeRecord, PartitionEpoch, PartitionRecord, ProducerIdsRecord,
    RegisterBrokerRecord, RemoveTopicRecord, TopicId, TopicRecord,
};

/// One partition's replication state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    /// The replicas, in preferred-leader order; never empty, no duplicates.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas: a subset of `replicas`.
    pub isr: Vec<BrokerId>,
    /// Replicas a reassignment is removing: a subset of `replicas`.
    pub removing_replicas: Vec<BrokerId>,
    /// Replicas a reassignment is adding: a subset of `replicas`.
    pub adding_replicas: Vec<BrokerId>,
    /// The leader, a member of `isr`, or [`BrokerId::NONE`].
    pub leader: BrokerId,
    /// Bumped when the leader changes.
    pub leader_epoch: LeaderEpoch,
    /// Bumped by every change to the partition.
    pub partition_epoch: PartitionEpoch,
    /// Whether its leader came from an unclean election not yet recovered
    /// from (KIP-704).
    pub leader_recovery_state: LeaderRecoveryState,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    /// The topic name.
    pub name: String,
    /// The topic id (KIP-516).
    pub id: TopicId,
    /// The partitions; partition `i` is at index `i`.
    pub partitions: Vec<PartitionImage>,
    /// Config overrides by Kafka name, sorted by name, each name once; the
    /// rest take the broker defaults.
    pub configs: Vec<(String, String)>,
}

impl TopicImage {
    /// The topic id as a UUID.
    #[must_use]
    pub fn uuid(&self) -> Uuid {
        self.id.uuid()
    }

    /// How many partitions the topic has.
    #[must_use]
    pub fn partition_count(&self) -> i32 {
        // Partition ids are i32s and the image holds them densely from 0.
        i32::try_from(self.partitions.len()).unwrap_or(i32::MAX)
    }

    /// Partition `index`, if the topic has it.
    #[must_use]
    pub fn partition(&self, index: i32) -> Option<&PartitionImage> {
        self.partitions.get(usize::try_from(index).ok()?)
    }

    /// The override of config `name`, if the topic has one.
    #[must_use]
    pub fn config(&self, name: &str) -> Option<&str> {
        self.configs
            .binary_search_by(|(key, _)| key.as_str().cmp(name))
            .ok()
            .map(|index| self.configs[index].1.as_str())
    }
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    /// Its `node.id`.
    pub id: BrokerId,
    /// The process that registered.
    pub incarnation_id: Uuid,
    /// The epoch of this registration.
    pub epoch: BrokerEpoch,
    /// Its listeners.
    pub endpoints: Vec<BrokerEndpoint>,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
    /// Whether it is fenced.
    pub fenced: bool,
    /// How many cores (shards) it runs, once its `BrokerCoresRecord` is in
    /// (registrations written before the record have none).
    pub cores: Option<u32>,
}

/// The metadata every request sees; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataImage {
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    /// Topic names by id: the same topics as `topics`.
    topic_names: BTreeMap<TopicId, String>,
    /// Registered brokers by id.
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// The first producer id no block has taken yet.
    pub next_producer_id: ProducerId,
}

impl Default for MetadataImage {
    fn default() -> Self {
        Self {
            topics: BTreeMap::new(),
            topic_names: BTreeMap::new(),
            brokers: BTreeMap::new(),
            next_producer_id: ProducerId(0),
        }
    }
}

/// A record that does not apply to the image it was given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A `TopicRecord` names a topic that exists.
    #[error("topic {name:?} already exists")]
    TopicNameExists {
        /// The name.
        name: String,
    },
    /// A `TopicRecord` reuses an id.
    #[error("topic id {id} is already taken")]
    TopicIdExists {
        /// The id.
        id: TopicId,
    },
    /// A `TopicRecord` with the all-zero id.
    #[error("topic {name:?} has the all-zero topic id")]
    ZeroTopicId {
        /// The topic's name.
        name: String,
    },
    /// A record names a topic id that does not exist.
    #[error("no topic has id {id}")]
    UnknownTopicId {
        /// The id.
        id: TopicId,
    },
    /// A `ConfigRecord` names a topic that does not exist.
    #[error("no topic is named {name:?}")]
    UnknownTopicName {
        /// The name.
        name: String,
    },
    /// A `PartitionRecord` that neither replaces a partition nor adds the
    /// next one (partitions are numbered densely from 0).
    #[error("topic {topic} has {count} partitions: partition {partition} cannot be added")]
    PartitionGap {
        /// The topic id.
        topic: TopicId,
        /// The partition id in the record.
        partition: i32,
        /// The topic's partition count.
        count: i32,
    },
    /// A `PartitionChangeRecord` for a partition that does not exist.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// The topic id.
        topic: TopicId,
        /// The partition id.
        partition: i32,
    },
    /// The replicas, ISR or leader a record gives break a rule.
    #[error("partition {partition} of topic {topic}: {reason}")]
    InvalidReplicas {
        /// The topic id.
        topic: TopicId,
        /// The partition id.
        partition: i32,
        /// Which rule.
        reason: &'static str,
    },
    /// A `PartitionRecord` that replaces a partition with older epochs.
    #[error(
        "partition {partition} of topic {topic}: epochs (leader {leader_epoch}, partition \
         {partition_epoch}) go back from (leader {current_leader_epoch}, partition \
         {current_partition_epoch})"
    )]
    EpochWentBack {
        /// The topic id.
        topic: TopicId,
        /// The partition id.
        partition: i32,
        /// The record's leader epoch.
        leader_epoch: i32,
        /// The record's partition epoch.
        partition_epoch: i32,
        /// The image's leader epoch.
        current_leader_epoch: i32,
        /// The image's partition epoch.
        current_partition_epoch: i32,
    },
    /// A `RegisterBrokerRecord` whose epoch is not above the registration it
    /// replaces.
    #[error("broker {broker} registers with epoch {epoch}, not above its current {current}")]
    BrokerEpochWentBack {
        /// The broker id.
        broker: i32,
        /// The record's epoch.
        epoch: i64,
        /// The current registration's epoch.
        current: i64,
    },
    /// A fencing record for a broker registration that does not exist (no
    /// such broker, or another epoch).
    #[error("broker {broker} has no registration with epoch {epoch}")]
    UnknownBrokerRegistration {
        /// The broker id.
        broker: i32,
        /// The record's epoch.
        epoch: i64,
    },
    /// A `BrokerCoresRecord` of zero cores.
    #[error("broker {broker} registers with no cores")]
    NoCores {
        /// The broker id.
        broker: i32,
    },
    /// A `ProducerIdsRecord` that does not move the next producer id forward.
    #[error("next producer id {next} is not above the current {current}")]
    ProducerIdsWentBack {
        /// The record's next producer id.
        next: i64,
        /// The image's.
        current: i64,
    },
}

impl MetadataImage {
    /// The registered brokers that are not fenced, by id: those replicas
    /// may be placed on and manual assignments may name.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|registration| !registration.fenced)
    }

    /// Whether `partition` exists: its topic does and has that index.
    #[must_use]
    pub fn contains(&self, partition: &TopicPartition) -> bool {
        self.topics
            .get(&*partition.topic)
            .is_some_and(|topic| topic.partition(partition.partition).is_some())
    }

    /// The topic with this id.
    #[must_use]
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicImage>> {
        let name = self.topic_names.get(&TopicId::from(id))?;
        self.topics.get(name)
    }

    /// The image after `records`, applied in order: all of them, or none
    /// and the error of the first that does not apply.
    ///
    /// # Errors
    /// [`ApplyError`] for the first record that breaks a rule of the module
    /// documentation.
    pub fn apply<'a>(
        &self,
        records: impl IntoIterator<Item = &'a MetadataRecord>,
    ) -> Result<MetadataImage, ApplyError> {
        let mut next = self.clone();
        for record in records {
            next.replay(record)?;
        }
        Ok(next)
    }

    /// Records that rebuild this image when applied to an empty one, in an
    /// order that applies: brokers, then each topic with its partitions and
    /// configs, then the producer id block. A snapshot of the metadata log
    /// is these records.
    #[must_use]
    pub fn records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: broker.id,
                incarnation_id: *broker.incarnation_id.as_bytes(),
                broker_epoch: broker.epoch,
                endpoints: broker.endpoints.clone(),
                rack: broker.rack.clone(),
                fenced: broker.fenced,
            }));
            if let Some(cores) = broker.cores {
                records.push(MetadataRecord::BrokerCores(BrokerCoresRecord {
                    id: broker.id,
                    epoch: broker.epoch,
                    cores,
                }));
            }
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic(TopicRecord {
                name: topic.name.clone(),
                topic_id: topic.id,
            }));
            for (index, partition) in (0..).zip(&topic.partitions) {
                records.push(MetadataRecord::Partition(PartitionRecord {
                    partition_id: index,
                    topic_id: topic.id,
                    replicas: partition.replicas.clone(),
                    isr: partition.isr.clone(),
                    removing_replicas: partition.removing_replicas.clone(),
                    adding_replicas: partition.adding_replicas.clone(),
                    leader: partition.leader,
                    leader_epoch: partition.leader_epoch,
                    partition_epoch: partition.partition_epoch,
                }));
                if partition.leader_recovery_state != LeaderRecoveryState::Recovered {
                    records.push(MetadataRecord::LeaderRecovery(LeaderRecoveryRecord {
                        partition_id: index,
                        topic_id: topic.id,
                        state: partition.leader_recovery_state,
                    }));
                }
            }
            for (name, value) in &topic.configs {
                records.push(MetadataRecord::Config(ConfigRecord {
                    resource_type: ConfigResourceType::Topic,
                    resource_name: topic.name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                }));
            }
        }
        if self.next_producer_id > ProducerId(0) {
            records.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: BrokerId::NONE,
                broker_epoch: BrokerEpoch::NONE,
                next_producer_id: self.next_producer_id,
            }));
        }
        records
    }

    /// Applies one record in place. On error the image may be half
    /// changed: [`MetadataImage::apply`] works on a copy it then drops.
    fn replay(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker(record) => self.register_broker(record),
            MetadataRecord::Topic(record) => self.add_topic(record),
            MetadataRecord::Partition(record) => self.set_partition(record),
            MetadataRecord::Config(record) => self.set_config(record),
            MetadataRecord::PartitionChange(record) => self.change_partition(record),
            MetadataRecord::RemoveTopic(record) => self.remove_topic(record),
            MetadataRecord::ProducerIds(record) => self.take_producer_ids(record),
            MetadataRecord::FenceBroker(record) => self.set_fenced(record, true),
            MetadataRecord::UnfenceBroker(record) => self.set_fenced(record, false),
            MetadataRecord::BrokerCores(record) => self.set_cores(record),
            MetadataRecord::LeaderRecovery(record) => self.set_leader_recovery(record),
        }
    }

    fn set_cores(&mut self, record: &BrokerCoresRecord) -> Result<(), ApplyError> {
        if record.cores == 0 {
            return Err(ApplyError::NoCores {
                broker: record.id.0,
            });
        }
        self.registration_mut(record.id, record.epoch)?.cores = Some(record.cores);
        Ok(())
    }

    /// The registration of `broker` with `epoch`.
    fn registration_mut(
        &mut self,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<&mut BrokerRegistration, ApplyError> {
        self.brokers
            .get_mut(&broker)
            .filter(|registration| registration.epoch == epoch)
            .ok_or(ApplyError::UnknownBrokerRegistration {
                broker: broker.0,
                epoch: epoch.0,
            })
    }

    fn set_fenced(&mut self, record: &BrokerFencingRecord, fenced: bool) -> Result<(), ApplyError> {
        self.registration_mut(record.id, record.epoch)?.fenced = fenced;
        Ok(())
    }

    fn register_broker(&mut self, record: &RegisterBrokerRecord) -> Result<(), ApplyError> {
        if let Some(current) = self.brokers.get(&record.broker_id) {
            if record.broker_epoch <= current.epoch {
                return Err(ApplyError::BrokerEpochWentBack {
                    broker: record.broker_id.0,
                    epoch: record.broker_epoch.0,
                    current: current.epoch.0,
                });
            }
        }
        self.brokers.insert(
            record.broker_id,
            BrokerRegistration {
                id: record.broker_id,
                incarnation_id: Uuid::from_bytes(record.incarnation_id),
                epoch: record.broker_epoch,
                endpoints: record.endpoints.clone(),
                rack: record.rack.clone(),
                fenced: record.fenced,
                cores: None,
            },
        );
        Ok(())
    }

    fn add_topic(&mut self, record: &TopicRecord) -> Result<(), ApplyError> {
        if self.topics.contains_key(&record.name) {
            return Err(ApplyError::TopicNameExists {
                name: record.name.clone(),
            });
        }
        if record.topic_id.is_zero() {
            return Err(ApplyError::ZeroTopicId {
                name: record.name.clone(),
            });
        }
        if self.topic_names.contains_key(&record.topic_id) {
            return Err(ApplyError::TopicIdExists {
                id: record.topic_id,
            });
        }
        self.topic_names
            .insert(record.topic_id, record.name.clone());
        self.topics.insert(
            record.name.clone(),
            Arc::new(TopicImage {
                name: record.name.clone(),
                id: record.topic_id,
                partitions: Vec::new(),
                configs: Vec::new(),
            }),
        );
        Ok(())
    }

    /// The topic with id `id`, to change: unshared from earlier images.
    fn topic_mut(&mut self, id: TopicId) -> Result<&mut TopicImage, ApplyError> {
        let name = self
            .topic_names
            .get(&id)
            .ok_or(ApplyError::UnknownTopicId { id })?;
        let topic = self
            .topics
            .get_mut(name)
            .expect("topic_names and topics hold the same topics");
        Ok(Arc::make_mut(topic))
    }

    fn partition_mut(
        &mut self,
        topic_id: TopicId,
        partition_id: i32,
    ) -> Result<&mut PartitionImage, ApplyError> {
        let topic = self.topic_mut(topic_id)?;
        usize::try_from(partition_id)
            .ok()
            .and_then(|index| topic.partitions.get_mut(index))
            .ok_or(ApplyError::UnknownPartition {
                topic: topic_id,
                partition: partition_id,
            })
    }

    fn set_partition(&mut self, record: &PartitionRecord) -> Result<(), ApplyError> {
        let topic = self.topic_mut(record.topic_id)?;
        let partition = PartitionImage {
            replicas: record.replicas.clone(),
            isr: record.isr.clone(),
            removing_replicas: record.removing_replicas.clone(),
            adding_replicas: record.adding_replicas.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
            // A `LeaderRecoveryRecord` after it says otherwise.
            leader_recovery_state: LeaderRecoveryState::Recovered,
        };
        check_replicas(record.topic_id, record.partition_id, &partition)?;
        let count = topic.partition_count();
        if record.partition_id == count {
            topic.partitions.push(partition);
            return Ok(());
        }
        let gap = ApplyError::PartitionGap {
            topic: record.topic_id,
            partition: record.partition_id,
            count,
        };
        let index = usize::try_from(record.partition_id).map_err(|_| gap.clone())?;
        let current = topic.partitions.get_mut(index).ok_or(gap)?;
        if partition.leader_epoch < current.leader_epoch
            || partition.partition_epoch <= current.partition_epoch
        {
            return Err(ApplyError::EpochWentBack {
                topic: record.topic_id,
                partition: record.partition_id,
                leader_epoch: partition.leader_epoch.0,
                partition_epoch: partition.partition_epoch.0,
                current_leader_epoch: current.leader_epoch.0,
                current_partition_epoch: current.partition_epoch.0,
            });
        }
        *current = partition;
        Ok(())
    }

    fn change_partition(&mut self, record: &PartitionChangeRecord) -> Result<(), ApplyError> {
        let current = self.partition_mut(record.topic_id, record.partition_id)?;
        let leader = record.leader.unwrap_or(current.leader);
        let changed = PartitionImage {
            replicas: record
                .replicas
                .clone()
                .unwrap_or_else(|| current.replicas.clone()),
            isr: record.isr.clone().unwrap_or_else(|| current.isr.clone()),
            removing_replicas: record
                .removing_replicas
                .clone()
                .unwrap_or_else(|| current.removing_replicas.clone()),
            adding_replicas: record
                .adding_replicas
                .clone()
                .unwrap_or_else(|| current.adding_replicas.clone()),
            leader,
            leader_epoch: if leader == current.leader {
                current.leader_epoch
            } else {
                LeaderEpoch(current.leader_epoch.0 + 1)
            },
            partition_epoch: PartitionEpoch(current.partition_epoch.0 + 1),
            leader_recovery_state: current.leader_recovery_state,
        };
        check_replicas(record.topic_id, record.partition_id, &changed)?;
        *current = changed;
        Ok(())
    }

    fn set_leader_recovery(&mut self, record: &LeaderRecoveryRecord) -> Result<(), ApplyError> {
        self.partition_mut(record.topic_id, record.partition_id)?
            .leader_recovery_state = record.state;
        Ok(())
    }

    fn set_config(&mut self, record: &ConfigRecord) -> Result<(), ApplyError> {
        match record.resource_type {
            ConfigResourceType::Topic => {}
        }
        let topic = self.topics.get_mut(&record.resource_name).ok_or_else(|| {
            ApplyError::UnknownTopicName {
                name: record.resource_name.clone(),
            }
        })?;
        let configs = &mut Arc::make_mut(topic).configs;
        let position = configs.binary_search_by(|(key, _)| key.as_str().cmp(&record.name));
        match (position, &record.value) {
            (Ok(index), Some(value)) => configs[index].1.clone_from(value),
            (Err(index), Some(value)) => {
                configs.insert(index, (record.name.clone(), value.clone()));
            }
            (Ok(index), None) => {
                configs.remove(index);
            }
            (Err(_), None) => {}
        }
        Ok(())
    }

    fn remove_topic(&mut self, record: &RemoveTopicRecord) -> Result<(), ApplyError> {
        let name = self
            .topic_names
            .remove(&record.topic_id)
            .ok_or(ApplyError::UnknownTopicId {
                id: record.topic_id,
            })?;
        self.topics.remove(&name);
        Ok(())
    }

    fn take_producer_ids(&mut self, record: &ProducerIdsRecord) -> Result<(), ApplyError> {
        if record.next_producer_id <= self.next_producer_id {
            return Err(ApplyError::ProducerIdsWentBack {
                next: record.next_producer_id.0,
                current: self.next_producer_id.0,
            });
        }
        self.next_producer_id = record.next_producer_id;
        Ok(())
    }
}

/// Checks a partition's replica lists and leader against the rules of the
/// module documentation.
fn check_replicas(
    topic: TopicId,
    partition_id: i32,
    partition: &PartitionImage,
) -> Result<(), ApplyError> {
    let invalid = |reason| ApplyError::InvalidReplicas {
        topic,
        partition: partition_id,
        reason,
    };
    if partition.replicas.is_empty() {
        return Err(invalid("no replicas"));
    }
    let lists = [
        &partition.replicas,
        &partition.isr,
        &partition.removing_replicas,
        &partition.adding_replicas,
    ];
    for list in lists {
        if list
            .iter()
            .enumerate()
            .any(|(index, broker)| list[..index].contains(broker))
        {
            return Err(invalid("a broker is listed twice"));
        }
        if list
            .iter()
            .any(|broker| !partition.replicas.contains(broker))
        {
            return Err(invalid("the ISR and reassignment lists must be replicas"));
        }
    }
    if partition.leader != BrokerId::NONE && !partition.isr.contains(&partition.leader) {
        return Err(invalid("the leader is not in the ISR"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
