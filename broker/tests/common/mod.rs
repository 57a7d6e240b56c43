//! Helpers for the broker's integration tests: a seeded generator, valid
//! encoded requests of every served API and version (to mutate), and the
//! test kit's launcher ([`fjord_broker::testkit`]) running the real `fjord`
//! binary on a free port with timed-out sockets, so a hang fails a test
//! instead of blocking it.

use bytes::Bytes;
use fjord_broker::handlers::SUPPORTED;
use fjord_engine::batch::build_batch;
use fjord_engine::testkit::Rng;
use fjord_engine::TimestampMs;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AlterConfigsRequest, CreatePartitionsRequest, DeleteRecordsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, DescribeLogDirsRequest, DescribeQuorumRequest,
    DescribeTopicPartitionsRequest, ElectLeadersRequest, IncrementalAlterConfigsRequest,
    OffsetForLeaderEpochRequest,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest, ProducerId,
    RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupHeartbeatRequest, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;

#[allow(unused_imports, reason = "each test binary uses some of them")]
pub use fjord_broker::testkit::{
    broker_port, raise_memlock_limit, request_body, run_until_exit, sized, Broker, Connection,
    Ending, Launch, IO_TIMEOUT,
};

/// This crate's `fjord` binary, which its tests start brokers from.
pub fn fjord() -> Launch {
    Launch::Binary(env!("CARGO_BIN_EXE_fjord").into())
}

/// The bad-input tests' random source, seeded from `FJORD_BAD_INPUT_SEED`
/// (decimal or 0x-hex) or `default`.
pub fn bad_input_rng(test: &str, default: u64) -> Rng {
    Rng::from_env("FJORD_BAD_INPUT_SEED", test, default)
}

/// `data` as hex, for failure messages.
pub fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    data.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

/// A group id for `name`'s requests of one version.
fn group(name: &str, version: i16) -> GroupId {
    GroupId(StrBytes::from_string(format!("{name}-group-v{version}")))
}

pub fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// A valid one-record batch for partition data.
pub fn one_record_batch(value: &[u8]) -> Bytes {
    Bytes::from(build_batch(
        &[(Some(b"key".as_slice()), Some(value))],
        TimestampMs(1_700_000_000_000),
        None,
    ))
}

/// A Produce of `records` to partition 0 of `name`.
pub fn produce(name: &str, acks: i16, records: Bytes) -> RequestKind {
    RequestKind::Produce(
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic(name))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records))])]),
    )
}

/// A Fetch of partition 0 of `name` from `offset`, waiting at most
/// `max_wait_ms`, outside any fetch session.
pub fn fetch(name: &str, offset: i64, max_wait_ms: i32) -> RequestKind {
    session_fetch(0, -1, &[(name, offset)], &[], max_wait_ms)
}

/// A Fetch in session `id` at `epoch` (KIP-227) of `partitions` (topic,
/// offset; all partition 0), forgetting `forgotten` topics' partition 0.
pub fn session_fetch(
    id: i32,
    epoch: i32,
    partitions: &[(&str, i64)],
    forgotten: &[&str],
    max_wait_ms: i32,
) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_id(id)
            .with_session_epoch(epoch)
            .with_topics(
                partitions
                    .iter()
                    .map(|&(name, offset)| {
                        FetchTopic::default()
                            .with_topic(topic(name))
                            .with_partitions(vec![FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(offset)
                                .with_current_leader_epoch(-1)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(1 << 20)])
                    })
                    .collect(),
            )
            .with_forgotten_topics_data(
                forgotten
                    .iter()
                    .map(|name| {
                        ForgottenTopic::default()
                            .with_topic(topic(name))
                            .with_partitions(vec![0])
                    })
                    .collect(),
            ),
    )
}

/// A Metadata request for `names`.
pub fn metadata(names: &[&str]) -> RequestKind {
    RequestKind::Metadata(
        MetadataRequest::default().with_topics(Some(
            names
                .iter()
                .map(|name| MetadataRequestTopic::default().with_name(Some(topic(name))))
                .collect(),
        )),
    )
}

/// A CreateTopics of one single-partition topic with `configs`.
pub fn create_topic(name: &str, configs: &[(&str, &str)]) -> RequestKind {
    RequestKind::CreateTopics(
        CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(
                    configs
                        .iter()
                        .map(|(key, value)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string((*key).to_owned()))
                                .with_value(Some(StrBytes::from_string((*value).to_owned())))
                        })
                        .collect(),
                )]),
    )
}

pub fn api_versions() -> RequestKind {
    RequestKind::ApiVersions(
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("bad-input"))
            .with_client_software_version(StrBytes::from_static_str("1.0")),
    )
}

/// Kafka's config resource type for topics.
const TOPIC_RESOURCE: i8 = 2;

/// A populated request of `api_key` that encodes at `version`, or `None`
/// where kafka-protocol cannot encode that version (Produce v0-v2).
pub fn sample_request(api_key: ApiKey, version: i16, name: &str) -> Option<RequestKind> {
    group_sample_request(api_key, version, name)
        .or_else(|| consumer_group_sample_request(api_key, version, name))
        .or_else(|| describe_sample_request(api_key, name))
        .or_else(|| leadership_sample_request(api_key, name))
        .or_else(|| other_sample_request(api_key, version, name))
}

/// A populated request of an API describing brokers, log directories or
/// partitions, `None` for other APIs.
fn describe_sample_request(api_key: ApiKey, name: &str) -> Option<RequestKind> {
    Some(match api_key {
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::DescribeQuorum => {
            RequestKind::DescribeQuorum(DescribeQuorumRequest::default().with_topics(vec![
                kafka_protocol::messages::describe_quorum_request::TopicData::default()
                    .with_topic_name(topic("__cluster_metadata"))
                    .with_partitions(vec![
                        kafka_protocol::messages::describe_quorum_request::PartitionData::default(),
                    ]),
            ]))
        }
        ApiKey::DescribeLogDirs => {
            RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None))
        }
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default()
                .with_topics(vec![TopicRequest::default().with_name(topic(name))])
                .with_response_partition_limit(10)
                .with_cursor(Some(Cursor::default().with_topic_name(topic(name)))),
        ),
        _ => return None,
    })
}

/// A populated request of an API about partition leaders and their
/// epochs, `None` for other APIs.
fn leadership_sample_request(api_key: ApiKey, name: &str) -> Option<RequestKind> {
    Some(match api_key {
        ApiKey::OffsetForLeaderEpoch => RequestKind::OffsetForLeaderEpoch(
            OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![OffsetForLeaderTopic::default()
                    .with_topic(topic(name))
                    .with_partitions(vec![OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(-1)
                        .with_leader_epoch(0)])]),
        ),
        ApiKey::ElectLeaders => RequestKind::ElectLeaders(
            ElectLeadersRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(topic(name))
                    .with_partitions(vec![0])])),
        ),
        _ => return None,
    })
}

/// A populated request of a KIP-848 API, `None` for other APIs.
fn consumer_group_sample_request(api_key: ApiKey, version: i16, name: &str) -> Option<RequestKind> {
    Some(match api_key {
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(group(name, version))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(1_000)
                .with_subscribed_topic_names(Some(vec![topic(name)]))
                .with_topic_partitions(Some(Vec::new())),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![group(name, version)]),
        ),
        _ => return None,
    })
}

/// [`sample_request`] for the APIs other than the group coordinator's.
fn other_sample_request(api_key: ApiKey, version: i16, name: &str) -> Option<RequestKind> {
    Some(match api_key {
        ApiKey::Produce if version < 3 => return None,
        ApiKey::Produce => produce(name, 1, one_record_batch(b"value")),
        ApiKey::Fetch => fetch(name, 0, 10),
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(-2)])]),
        ),
        ApiKey::Metadata => metadata(&[name]),
        ApiKey::ApiVersions if version < 3 => {
            RequestKind::ApiVersions(ApiVersionsRequest::default())
        }
        ApiKey::ApiVersions => api_versions(),
        ApiKey::CreateTopics => create_topic(name, &[("retention.ms", "60000")]),
        ApiKey::DeleteTopics if version < 6 => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topic_names(vec![topic(name)]),
        ),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![
                    DeleteTopicState::default().with_name(Some(topic(name)))
                ]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transaction_timeout_ms(1_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(name.to_owned()))
                .with_configuration_keys(None)]),
        ),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(
            AlterConfigsRequest::default().with_resources(vec![
                kafka_protocol::messages::alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(name.to_owned()))
                    .with_configs(vec![
                        kafka_protocol::messages::alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_value(Some(StrBytes::from_static_str("60000"))),
                    ]),
            ]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(TOPIC_RESOURCE)
                    .with_resource_name(StrBytes::from_string(name.to_owned()))
                    .with_configs(vec![
                        kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("60000"))),
                    ]),
            ]),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(topic(name))
                    .with_count(2)
                    .with_assignments(None)]),
        ),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(0)
                        .with_offset(0)])]),
        ),
        other => panic!("{other:?} is not served"),
    })
}

/// A populated request of a group coordinator API, `None` for other APIs.
fn group_sample_request(api_key: ApiKey, version: i16, name: &str) -> Option<RequestKind> {
    Some(match api_key {
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key(if version < 4 {
                    StrBytes::from_string(name.to_owned())
                } else {
                    StrBytes::default()
                })
                .with_coordinator_keys(if version >= 4 {
                    vec![StrBytes::from_string(name.to_owned())]
                } else {
                    Vec::new()
                }),
        ),
        // A group of its own per version with a short rebalance timeout,
        // so each join completes at once instead of waiting for members
        // of another version's join.
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(group(name, version))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(100)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0\0\0"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group(name, version))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(group(name, version))
                .with_generation_id(1)
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::LeaveGroup if version < 3 => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(group(name, version))
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(group(name, version))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(StrBytes::from_static_str("nobody"))
                ]),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(group(name, version))
                .with_generation_id_or_member_epoch(-1)
                .with_retention_time_ms(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(0)
                        .with_committed_leader_epoch(-1)
                        .with_committed_metadata(Some(StrBytes::from_static_str("m")))])]),
        ),
        ApiKey::OffsetFetch if version >= 8 => RequestKind::OffsetFetch(
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group(name, version))
                .with_member_epoch(-1)
                .with_topics(None)]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(group(name, version))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(topic(name))
                    .with_partition_indexes(vec![0])])),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![group(name, version)]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![group(name, version)]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(group(name, version))
                .with_topics(vec![OffsetDeleteRequestTopic::default()
                    .with_name(topic(name))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ])]),
        ),
        _ => return None,
    })
}

/// Every served (API, version) that kafka-protocol can encode, with a valid
/// encoded frame (no size prefix).
pub fn sample_frames(name: &str) -> Vec<(ApiKey, i16, Bytes)> {
    let mut frames = Vec::new();
    for support in SUPPORTED {
        for version in support.min..=support.max {
            if let Some(request) = sample_request(support.key, version, name) {
                frames.push((
                    support.key,
                    version,
                    request_body(support.key, version, 7, &request),
                ));
            }
        }
    }
    frames
}

/// The error code of the single partition of a Produce response.
pub fn produce_error(response: &ResponseKind) -> (i16, i64) {
    let ResponseKind::Produce(response) = response else {
        panic!("not a Produce response: {response:?}");
    };
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}
