//! FindCoordinator: a group's coordinator is the leader of its
//! `__consumer_offsets` partition (Kafka's rule) in the latest image, named
//! with its client endpoint; `COORDINATOR_NOT_AVAILABLE` until that topic
//! exists (the first FindCoordinator for a group creates it, as in Kafka:
//! by then the brokers of a cluster started together have registered, and
//! `offsets.topic.replication.factor` is capped at fewer of them) and while
//! the partition has no live leader (an election is
//! under way, or every in-sync replica is down), which clients retry. The
//! leader's coordinator follows the same images
//! ([`crate::groups::leadership`]), so a client sent there finds the group
//! loaded or loading, never refused. Batched keys (v4+) are answered one
//! by one.
//! Transactions have no coordinator yet: key type 1 (a transactional id)
//! gets `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`, as InitProducerId does,
//! which clients treat as fatal at once. `COORDINATOR_NOT_AVAILABLE` would
//! be retried: `init_transactions()` would block for its whole timeout
//! before failing.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::advertised::{advertised_brokers, AdvertisedBroker};
use crate::groups::partition_for;
use crate::metadata::MetadataImage;
use crate::server::Broker;
use crate::topics::{ensure_consumer_offsets, CONSUMER_OFFSETS_TOPIC};

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::FindCoordinator,
    min: 0,
    max: 6,
};

const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

fn find(broker: &Broker, key: StrBytes, key_type: i8) -> Coordinator {
    let group_id = key.to_string();
    let answer = Coordinator::default()
        .with_key(key)
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    let (error, message) = match key_type {
        GROUP_KEY => match group_coordinator(
            &broker.controller.image(),
            &group_id,
            broker.groups.settings.partitions,
        ) {
            Ok(coordinator) => {
                return answer
                    .with_node_id(BrokerId(coordinator.id.0))
                    .with_host(StrBytes::from_string(coordinator.host))
                    .with_port(i32::from(coordinator.port));
            }
            Err(reason) => (ResponseError::CoordinatorNotAvailable, reason),
        },
        TRANSACTION_KEY => (
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported yet",
        ),
        _ => (ResponseError::InvalidRequest, "unknown key type"),
    };
    answer
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_static_str(message)))
}

/// The coordinator of `group_id`: the live leader of its partition of
/// `__consumer_offsets` (of `partitions`).
///
/// # Errors
/// Why there is none: the topic does not exist yet, or the partition has
/// no live leader.
fn group_coordinator(
    image: &MetadataImage,
    group_id: &str,
    partitions: i32,
) -> Result<AdvertisedBroker, &'static str> {
    let topic = image
        .topics
        .get(CONSUMER_OFFSETS_TOPIC)
        .ok_or("the group coordinator is starting")?;
    let leader = topic
        .partition(partition_for(group_id, partitions))
        .map(|partition| partition.leader)
        .ok_or("the group coordinator is starting")?;
    advertised_brokers(image, false)
        .into_iter()
        .find(|broker| broker.id == leader)
        .ok_or("the group's partition of __consumer_offsets has no live leader")
}

/// Starts creating `__consumer_offsets` in the background if it does not
/// exist and this broker is not creating it already.
fn create_offsets_topic(broker: &Rc<Broker>) {
    let exists = broker
        .controller
        .image()
        .topics
        .contains_key(CONSUMER_OFFSETS_TOPIC);
    if exists || !broker.groups.claim_offsets_topic_creation() {
        return;
    }
    let broker = Rc::clone(broker);
    glommio::spawn_local(async move {
        if let Err(error) = ensure_consumer_offsets(&broker).await {
            tracing::warn!(error = %error.message, "cannot create __consumer_offsets yet");
        }
        broker.groups.release_offsets_topic_creation();
    })
    .detach();
}

/// Answers FindCoordinator.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if request.key_type == GROUP_KEY {
        create_offsets_topic(broker);
    }
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| find(broker, key, request.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = find(broker, request.key, request.key_type);
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(found.error_message.filter(|_| version >= 1))
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}

#[cfg(test)]
mod tests {
    use fjord_engine::LeaderEpoch;

    use super::*;
    use crate::advertised::CLIENT_LISTENER;
    use crate::metadata::records::{
        BrokerEndpoint, BrokerEpoch, BrokerFencingRecord, BrokerId as NodeId, MetadataRecord,
        PartitionChangeRecord, PartitionEpoch, PartitionRecord, RegisterBrokerRecord, TopicId,
        TopicRecord,
    };

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: NodeId(id),
            incarnation_id: [id as u8; 16],
            broker_epoch: BrokerEpoch(1),
            endpoints: vec![BrokerEndpoint {
                name: CLIENT_LISTENER.to_owned(),
                host: format!("broker{id}"),
                port: 9092,
                security_protocol: 0,
            }],
            rack: None,
            fenced: false,
        })
    }

    /// `__consumer_offsets` with partitions led by 1, by 2 (fenced: it was
    /// fenced after the election, as the image allows) and by nobody.
    fn image() -> MetadataImage {
        let topic_id = TopicId([7; 16]);
        let mut records = vec![
            register(1),
            register(2),
            MetadataRecord::Topic(TopicRecord {
                name: CONSUMER_OFFSETS_TOPIC.to_owned(),
                topic_id,
            }),
        ];
        for (partition_id, leader) in [(0, 1), (1, 2), (2, -1)] {
            let replicas = vec![NodeId(if leader < 0 { 1 } else { leader })];
            records.push(MetadataRecord::Partition(PartitionRecord {
                partition_id,
                topic_id,
                isr: replicas.clone(),
                replicas,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader: NodeId(leader),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            }));
        }
        records.push(MetadataRecord::FenceBroker(BrokerFencingRecord {
            id: NodeId(2),
            epoch: BrokerEpoch(1),
        }));
        MetadataImage::default().apply(&records).unwrap()
    }

    /// A group id whose partition of three is `partition`.
    fn group_on(partition: i32) -> String {
        (0..1000)
            .map(|n| format!("group-{n}"))
            .find(|group| partition_for(group, 3) == partition)
            .unwrap()
    }

    #[test]
    fn a_group_is_coordinated_by_the_live_leader_of_its_partition() {
        let image = image();
        let found = group_coordinator(&image, &group_on(0), 3).unwrap();
        assert_eq!((found.id, found.host.as_str()), (NodeId(1), "broker1"));
        let no_leader = Err("the group's partition of __consumer_offsets has no live leader");
        assert_eq!(
            group_coordinator(&image, &group_on(1), 3),
            no_leader,
            "fenced leader"
        );
        assert_eq!(
            group_coordinator(&image, &group_on(2), 3),
            no_leader,
            "no leader"
        );
        assert_eq!(
            group_coordinator(&MetadataImage::default(), &group_on(0), 3),
            Err("the group coordinator is starting"),
            "no offsets topic"
        );
    }

    /// A leadership change moves the coordinator with it: the answer
    /// comes from the latest image, so a client that lost its coordinator
    /// is sent to the new leader, not back to the old one.
    #[test]
    fn the_coordinator_moves_with_its_partition_leader() {
        let moved = image()
            .apply(&[
                register(3),
                MetadataRecord::PartitionChange(PartitionChangeRecord {
                    partition_id: 0,
                    topic_id: TopicId([7; 16]),
                    isr: Some(vec![NodeId(1), NodeId(3)]),
                    leader: Some(NodeId(3)),
                    replicas: Some(vec![NodeId(1), NodeId(3)]),
                    removing_replicas: None,
                    adding_replicas: None,
                }),
            ])
            .unwrap();
        let found = group_coordinator(&moved, &group_on(0), 3).unwrap();
        assert_eq!((found.id, found.host.as_str()), (NodeId(3), "broker3"));
    }
}
