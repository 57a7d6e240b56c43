//! Admin APIs on the wire, against the real `fjord` binary, for what no
//! real client exercises: OffsetForLeaderEpoch (a consumer validates its
//! position only after a leader change, which a single node never has),
//! the newest versions of DescribeLogDirs, DescribeConfigs and
//! DescribeCluster, and Metadata's authorized operations in every version,
//! whose responses carry fields other versions lack (the codec refuses to
//! encode a field a version does not have, which would drop the response).
//!
//! Requests are encoded and responses decoded with the `kafka-protocol`
//! crate, the codecs the broker itself uses.

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use common::Connection;

use bytes::Bytes;
use fjord_tools::client::records::{encode_batch, Codec, OutgoingRecord};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    DescribeLogDirsRequest, MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

/// The admin steps these tests share, on the test kit's raw connection.
trait AdminSteps {
    fn create_topic(&mut self, name: &str);
    fn produce(&mut self, name: &str, count: usize);
    fn end_offset_for_epoch(
        &mut self,
        version: i16,
        topic: &str,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> (i16, i32, i64);
}

impl AdminSteps for Connection {
    fn create_topic(&mut self, name: &str) {
        let request = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let ResponseKind::CreateTopics(response) =
            self.call(ApiKey::CreateTopics, 7, &request.into())
        else {
            panic!("not a CreateTopics response");
        };
        assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
    }

    fn produce(&mut self, name: &str, count: usize) {
        let records: Vec<OutgoingRecord> = (0..count)
            .map(|index| OutgoingRecord {
                value: Some(Bytes::from(format!("record {index}"))),
                ..OutgoingRecord::default()
            })
            .collect();
        let batch = encode_batch(&records, 1_700_000_000_000, Codec::None).unwrap();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(name))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let ResponseKind::Produce(response) = self.call(ApiKey::Produce, 9, &request.into()) else {
            panic!("not a Produce response");
        };
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "{partition:?}");
    }

    /// (error code, leader epoch, end offset) of partition 0 of `topic`.
    fn end_offset_for_epoch(
        &mut self,
        version: i16,
        topic: &str,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> (i16, i32, i64) {
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_leader_epoch(leader_epoch)])]);
        let ResponseKind::OffsetForLeaderEpoch(response) =
            self.call(ApiKey::OffsetForLeaderEpoch, version, &request.into())
        else {
            panic!("not an OffsetForLeaderEpoch response");
        };
        let answer = &response.topics[0].partitions[0];
        (answer.error_code, answer.leader_epoch, answer.end_offset)
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// A consumer or follower asking where epoch 0 ends learns the log end; an
/// epoch the log never had answers -1/-1 (Kafka's UNDEFINED), and a stale or
/// future `current_leader_epoch` is fenced or unknown, in every version.
#[test]
fn offset_for_leader_epoch_answers_the_end_of_the_current_epoch() {
    let fjord = common::Broker::start(common::fjord(), &[]);
    let mut connection = fjord.connect();
    connection.create_topic("epochs");
    for version in 2..=4 {
        assert_eq!(
            connection.end_offset_for_epoch(version, "epochs", -1, 0),
            (0, 0, 0)
        );
    }
    connection.produce("epochs", 3);
    connection.produce("epochs", 2);
    for version in 2..=4 {
        assert_eq!(
            connection.end_offset_for_epoch(version, "epochs", -1, 0),
            (0, 0, 5)
        );
        assert_eq!(
            connection.end_offset_for_epoch(version, "epochs", 0, 0),
            (0, 0, 5)
        );
        assert_eq!(
            connection.end_offset_for_epoch(version, "epochs", -1, 3),
            (0, -1, -1)
        );
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        assert_eq!(
            connection.end_offset_for_epoch(version, "missing", -1, 0),
            (unknown, -1, -1)
        );
    }
    let future = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(
        connection.end_offset_for_epoch(4, "epochs", 1, 0),
        (future, -1, -1)
    );
}

/// The newest versions encode: DescribeLogDirs v4 with volume sizes,
/// DescribeConfigs v4 with types and documentation, DescribeCluster v1.
#[test]
fn newest_admin_versions_encode_their_extra_fields() {
    let fjord = common::Broker::start(common::fjord(), &[]);
    let mut connection = fjord.connect();
    connection.create_topic("sized");
    connection.produce("sized", 4);
    for version in 1..=4 {
        let ResponseKind::DescribeLogDirs(response) = connection.call(
            ApiKey::DescribeLogDirs,
            version,
            // Null topics: every partition.
            &DescribeLogDirsRequest::default().with_topics(None).into(),
        ) else {
            panic!("not a DescribeLogDirs response");
        };
        let result = &response.results[0];
        assert_eq!(result.error_code, 0, "{response:?}");
        let topic = result
            .topics
            .iter()
            .find(|topic| &*topic.name.0 == "sized")
            .unwrap();
        assert!(topic.partitions[0].partition_size > 0, "{topic:?}");
        if version >= 4 {
            assert!(
                result.total_bytes > 0 && result.usable_bytes >= 0,
                "{result:?}"
            );
        }
    }
    for version in 1..=4 {
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(version >= 3)
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("sized"))]);
        let ResponseKind::DescribeConfigs(response) =
            connection.call(ApiKey::DescribeConfigs, version, &request.into())
        else {
            panic!("not a DescribeConfigs response");
        };
        let configs = &response.results[0].configs;
        let retention = configs
            .iter()
            .find(|config| &*config.name == "retention.ms")
            .unwrap();
        assert_eq!(retention.value.as_deref(), Some("604800000"));
        assert_eq!(retention.config_source, 5, "DEFAULT_CONFIG");
        assert!(!retention.synonyms.is_empty());
        if version >= 3 {
            assert_eq!(retention.config_type, 5, "LONG");
            assert!(retention.documentation.is_some());
        }
    }
    for version in 0..=1 {
        let ResponseKind::DescribeCluster(response) = connection.call(
            ApiKey::DescribeCluster,
            version,
            &DescribeClusterRequest::default().into(),
        ) else {
            panic!("not a DescribeCluster response");
        };
        assert_eq!(response.error_code, 0);
        // The id the node generated on its first start and keeps in
        // meta.properties.
        let meta = std::fs::read_to_string(fjord.data_dir().join("meta.properties")).unwrap();
        assert!(
            meta.contains(&format!("cluster.id={}\n", &*response.cluster_id)),
            "{meta}"
        );
        assert_eq!(response.cluster_id.len(), 22);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.controller_id, response.brokers[0].broker_id);
    }
}

/// Topic operations when no authorizer restricts them, as Kafka answers:
/// `READ` 3, `WRITE` 4, `CREATE` 5, `DELETE` 6, `ALTER` 7, `DESCRIBE` 8,
/// `DESCRIBE_CONFIGS` 10, `ALTER_CONFIGS` 11.
const TOPIC_OPERATIONS: i32 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;
/// Cluster operations likewise: `CREATE` 5, `ALTER` 7, `DESCRIBE` 8,
/// `CLUSTER_ACTION` 9, `DESCRIBE_CONFIGS` 10, `ALTER_CONFIGS` 11,
/// `IDEMPOTENT_WRITE` 12.
const CLUSTER_OPERATIONS: i32 = 1 << 5 | 1 << 7 | 1 << 8 | 1 << 9 | 1 << 10 | 1 << 11 | 1 << 12;
/// Kafka's value for operations not asked for.
const OMITTED: i32 = i32::MIN;

/// Metadata carries authorized operations when asked, in every version that
/// has them: each topic's from v8 on, known or not, and the cluster's in
/// v8-v10 only (KIP-700 moved it to DescribeCluster). librdkafka asks for
/// the cluster's at v10 and kafka-python for the topics' at v12; this
/// guards the other versions, whose responses the codec must still encode.
#[test]
fn metadata_carries_authorized_operations_in_the_versions_that_have_them() {
    let fjord = common::Broker::start(common::fjord(), &[]);
    let mut connection = fjord.connect();
    connection.create_topic("operated");
    for version in 0..=12 {
        for asked in [false, true] {
            let topic_field = version >= 8;
            let cluster_field = (8..=10).contains(&version);
            // An unknown topic where the request can forbid creating it.
            let names: &[&str] = if version >= 4 {
                &["operated", "never-created"]
            } else {
                &["operated"]
            };
            let mut request = MetadataRequest::default()
                .with_topics(Some(
                    names
                        .iter()
                        .map(|name| {
                            MetadataRequestTopic::default().with_name(Some(topic_name(name)))
                        })
                        .collect(),
                ))
                .with_include_topic_authorized_operations(asked && topic_field)
                .with_include_cluster_authorized_operations(asked && cluster_field);
            if version >= 4 {
                request = request.with_allow_auto_topic_creation(false);
            }
            let ResponseKind::Metadata(response) =
                connection.call(ApiKey::Metadata, version, &request.into())
            else {
                panic!("not a Metadata response");
            };
            let expected_topic = if asked && topic_field {
                TOPIC_OPERATIONS
            } else {
                OMITTED
            };
            let expected_cluster = if asked && cluster_field {
                CLUSTER_OPERATIONS
            } else {
                OMITTED
            };
            assert_eq!(response.topics.len(), names.len(), "v{version}");
            for topic in &response.topics {
                assert_eq!(
                    topic.topic_authorized_operations, expected_topic,
                    "v{version} asked={asked} {topic:?}"
                );
            }
            assert_eq!(
                response.cluster_authorized_operations, expected_cluster,
                "v{version} asked={asked}"
            );
        }
    }
}
