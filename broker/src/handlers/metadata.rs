//! Metadata: brokers, topics and partitions from the metadata image, with
//! auto-creation of unknown topics when `auto.create.topics.enable` is on and
//! the client allows it. Asked for them, every topic answered by name
//! carries its authorized operations (v8+) and the response the cluster's
//! (v8-v10), as [`crate::authorized_operations`] describes: librdkafka's
//! `DescribeTopics` and `DescribeCluster` read them here.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::advertised::advertised_brokers;
use crate::authorized_operations::{authorized_operations, Resource};
use crate::metadata::TopicImage;
use crate::partition::PartitionState;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Metadata,
    min: 0,
    max: 12,
};

/// Where a partition lives, as Metadata and DescribeTopicPartitions report
/// it.
pub(super) struct Placement {
    /// The leader's node id.
    pub leader: BrokerId,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// Every replica's node id, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

impl Placement {
    /// Partition `index` of `topic` as the metadata image has it.
    ///
    /// # Panics
    /// If `topic` has no partition `index`: callers go by its count.
    pub(super) fn of(topic: &TopicImage, index: i32) -> Self {
        let state = PartitionState::from(
            topic
                .partition(index)
                .expect("an index below the topic's partition count"),
        );
        let ids = |brokers: &[crate::metadata::records::BrokerId]| {
            brokers.iter().map(|broker| BrokerId(broker.0)).collect()
        };
        Self {
            leader: BrokerId(state.leader.0),
            leader_epoch: state.leader_epoch.0,
            replicas: ids(&state.replicas),
            isr: ids(&state.isr),
        }
    }
}

fn describe(topic: &TopicImage, operations: i32) -> MetadataResponseTopic {
    let partitions = (0..topic.partition_count())
        .map(|index| {
            let placement = Placement::of(topic, index);
            // A partition whose ISR has no live member has no leader
            // (controller::election): clients retry until it has one.
            let error = if placement.leader.0 < 0 {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(index)
                .with_leader_id(placement.leader)
                .with_leader_epoch(placement.leader_epoch)
                .with_replica_nodes(placement.replicas)
                .with_isr_nodes(placement.isr)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.uuid())
        .with_is_internal(topics::is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(operations)
}

/// The unfenced brokers, at their client endpoints.
fn brokers(broker: &Broker) -> Vec<MetadataResponseBroker> {
    advertised_brokers(&broker.controller.image(), false)
        .into_iter()
        .map(|advertised| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(advertised.id.0))
                .with_host(StrBytes::from_string(advertised.host))
                .with_port(i32::from(advertised.port))
                .with_rack(advertised.rack.map(StrBytes::from_string))
        })
        .collect()
}

fn unknown(name: String, error: i16, operations: i32) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name))))
        .with_error_code(error)
        .with_topic_authorized_operations(operations)
}

/// Answers Metadata.
pub async fn handle(
    broker: &Rc<Broker>,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let image = broker.controller.image();
    // Every topic answered by name carries them, known or not, as in Kafka.
    let operations =
        authorized_operations(Resource::Topic, request.include_topic_authorized_operations);
    let topics = match request.topics {
        // Null (or, before v1, empty) means every topic.
        None => image
            .topics
            .values()
            .map(|topic| describe(topic, operations))
            .collect(),
        Some(requested) if requested.is_empty() && version == 0 => image
            .topics
            .values()
            .map(|topic| describe(topic, operations))
            .collect(),
        Some(requested) => {
            let mut topics = Vec::with_capacity(requested.len());
            for wanted in requested {
                let Some(name) = wanted.name.map(|name| name.0.to_string()) else {
                    // By topic id (v10+): KIP-848 consumers resolve the
                    // ids of their assignment this way.
                    if let Some(topic) = image.topic_by_id(wanted.topic_id) {
                        topics.push(describe(topic, operations));
                        continue;
                    }
                    topics.push(
                        MetadataResponseTopic::default()
                            .with_topic_id(wanted.topic_id)
                            .with_error_code(ResponseError::UnknownTopicId.code()),
                    );
                    continue;
                };
                if let Some(topic) = broker.controller.image().topics.get(&name) {
                    topics.push(describe(topic, operations));
                    continue;
                }
                if topics::is_internal(&name) {
                    // Created by its coordinator at start, never by clients.
                    topics.push(unknown(
                        name,
                        ResponseError::LeaderNotAvailable.code(),
                        operations,
                    ));
                    continue;
                }
                let may_create = broker.config.auto_create_topics
                    && (version < 4 || request.allow_auto_topic_creation);
                if !may_create {
                    topics.push(unknown(
                        name,
                        ResponseError::UnknownTopicOrPartition.code(),
                        operations,
                    ));
                    continue;
                }
                match topics::create_topic(
                    broker,
                    &name,
                    broker.config.num_partitions,
                    1,
                    None,
                    Vec::new(),
                )
                .await
                {
                    Ok(topic) => topics.push(describe(&topic, operations)),
                    Err(error) if error.code == ResponseError::TopicAlreadyExists.code() => {
                        match broker.controller.image().topics.get(&name) {
                            Some(topic) => topics.push(describe(topic, operations)),
                            None => {
                                topics.push(unknown(
                                    name,
                                    ResponseError::LeaderNotAvailable.code(),
                                    operations,
                                ));
                            }
                        }
                    }
                    Err(error) => topics.push(unknown(name, error.code, operations)),
                }
            }
            topics
        }
    };
    let controller = BrokerId(broker.controller.controller_for_clients().0);
    MetadataResponse::default()
        .with_brokers(brokers(broker))
        .with_cluster_id(
            broker
                .config
                .cluster_id
                .map(|id| StrBytes::from_string(id.to_string())),
        )
        .with_controller_id(controller)
        .with_topics(topics)
        // Asked for in v8-v10 only (KIP-700 moved it to DescribeCluster).
        .with_cluster_authorized_operations(authorized_operations(
            Resource::Cluster,
            request.include_cluster_authorized_operations,
        ))
}
