//! The Kafka client `fjordctl` and `fjord-bench` share.
//!
//! Why our own and not librdkafka or a Rust client crate: both tools need to
//! see exactly what goes on the wire (the bench encodes a Produce frame once
//! and rewrites only its correlation id; fjordctl reports broker error codes
//! by name), and a blocking std socket per broker is all an operator's tool
//! or a thread-per-connection load generator needs. The codecs come from the
//! `kafka-protocol` crate, like the broker's.
//!
//! Fixed API versions, chosen because Apache Kafka 2.1 through 4.x and fjord
//! all serve them: Produce v7, Fetch v11, Metadata v8, `CreateTopics` v4,
//! `DeleteTopics` v3, `ListOffsets` v4, `DescribeConfigs` v2,
//! `IncrementalAlterConfigs` v0 (Kafka 2.3+) and `DescribeCluster` v0 (Kafka
//! 2.8+, the only flexible one).

pub mod connection;
pub mod group;
pub mod records;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{describe_quorum_request, describe_quorum_response};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, DescribeQuorumRequest, DescribeQuorumResponse, FetchRequest,
    FetchResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

pub use connection::Connection;

use crate::error::Error;

/// Produce request version.
pub const PRODUCE_VERSION: i16 = 7;
/// Fetch request version.
pub const FETCH_VERSION: i16 = 11;
/// Metadata request version.
pub const METADATA_VERSION: i16 = 8;
/// `CreateTopics` request version.
pub const CREATE_TOPICS_VERSION: i16 = 4;
/// `DeleteTopics` request version.
pub const DELETE_TOPICS_VERSION: i16 = 3;
/// `ListOffsets` request version.
pub const LIST_OFFSETS_VERSION: i16 = 4;
/// `DescribeConfigs` request version.
pub const DESCRIBE_CONFIGS_VERSION: i16 = 2;
/// `IncrementalAlterConfigs` request version.
pub const INCREMENTAL_ALTER_CONFIGS_VERSION: i16 = 0;
/// `DescribeCluster` request version, when the broker serves no later one.
pub const DESCRIBE_CLUSTER_VERSION: i16 = 0;
/// `DescribeCluster` version that reports fenced brokers (KIP-1073).
pub const DESCRIBE_CLUSTER_FENCED_VERSION: i16 = 2;
/// `DescribeQuorum` request version.
pub const DESCRIBE_QUORUM_VERSION: i16 = 1;
/// The metadata quorum's topic.
const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// `ListOffsets` timestamp meaning "the log start offset".
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp meaning "the log end offset".
pub const LATEST_TIMESTAMP: i64 = -1;
/// How long admin requests let the broker work (`timeout_ms`).
pub const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// How long a created topic may take to get a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The config resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;

/// `name` as a topic name.
#[must_use]
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// `Ok` for error code 0, else [`Error::Broker`] naming the code and
/// `what` failed, with the broker's message if it sent one.
///
/// # Errors
/// As described.
pub fn check(what: &str, error_code: i16, message: Option<&str>) -> Result<(), Error> {
    if error_code == 0 {
        return Ok(());
    }
    let name = match ResponseError::try_from_code(error_code) {
        Some(ResponseError::Unknown(_)) | None => format!("error code {error_code}"),
        Some(known) => format!("{known:?}"),
    };
    Err(Error::Broker {
        what: what.to_owned(),
        error: match message {
            Some(message) if !message.is_empty() => format!("{name}: {message}"),
            _ => name,
        },
    })
}

/// A partition and the address of its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLeader {
    /// Partition index.
    pub partition: i32,
    /// The leader's advertised `host:port`.
    pub address: String,
}

/// How to create a topic.
#[derive(Clone, Debug, Default)]
pub struct TopicSpec {
    /// `num_partitions`; -1 for the broker's default.
    pub partitions: i32,
    /// `replication_factor`; -1 for the broker's default.
    pub replication_factor: i16,
    /// Topic configs, `(name, value)`.
    pub configs: Vec<(String, String)>,
}

/// One topic config as `DescribeConfigs` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigEntry {
    /// The config's Kafka name.
    pub name: String,
    /// Its value; `None` when sensitive or unset.
    pub value: Option<String>,
    /// Whether the topic overrides the default (source `TOPIC_CONFIG`).
    pub is_override: bool,
    /// Whether it can be altered.
    pub read_only: bool,
}

/// The cluster as `DescribeCluster` and `DescribeQuorum` report it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterInfo {
    /// The cluster id.
    pub cluster_id: String,
    /// The active controller's node id.
    pub controller_id: i32,
    /// Every broker, fenced ones too where the broker reports them.
    pub brokers: Vec<BrokerInfo>,
    /// The metadata quorum, if the broker answers `DescribeQuorum`.
    pub quorum: Option<QuorumInfo>,
}

/// One broker of [`ClusterInfo`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct BrokerInfo {
    /// Its node id.
    pub id: i32,
    /// `host:port`.
    pub address: String,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Whether it is fenced (only `DescribeCluster` v2 tells).
    pub fenced: bool,
}

/// The metadata quorum as `DescribeQuorum` reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct QuorumInfo {
    /// The leader's node id (-1: none).
    pub leader_id: i32,
    /// The leader's epoch.
    pub leader_epoch: i32,
    /// The offset after the last committed metadata record.
    pub high_watermark: i64,
    /// The voters.
    pub voters: Vec<VoterInfo>,
    /// The observers: broker-only nodes following the log.
    pub observers: Vec<VoterInfo>,
}

/// One voter (or observer) of [`QuorumInfo`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct VoterInfo {
    /// Its node id.
    pub id: i32,
    /// The offset after the last record it holds.
    pub log_end_offset: i64,
    /// How many committed records it lacks.
    pub lag: i64,
    /// When the leader last heard from it (ms since the epoch), -1 if unknown.
    pub last_fetch_ms: i64,
}

/// A client of one cluster: a connection to the bootstrap server for
/// metadata and admin requests, and one per partition leader for Produce,
/// Fetch and `ListOffsets`, opened on first use.
pub struct Client {
    id: String,
    bootstrap: Connection,
    /// At most one connection per broker of the cluster.
    leaders: BTreeMap<String, Connection>,
}

impl Client {
    /// Connects to `bootstrap_server`.
    ///
    /// # Errors
    /// [`Error::Connect`] if it does not accept.
    pub fn connect(bootstrap_server: &str, client_id: &str) -> Result<Self, Error> {
        Ok(Self {
            id: client_id.to_owned(),
            bootstrap: Connection::open(bootstrap_server, client_id)?,
            leaders: BTreeMap::new(),
        })
    }

    /// The connection to `address`, opened if it is not open yet.
    ///
    /// # Errors
    /// [`Error::Connect`] if it does not accept.
    ///
    /// # Panics
    /// Never: the connection is in the map once opened.
    pub fn connection_to(&mut self, address: &str) -> Result<&mut Connection, Error> {
        if address == self.bootstrap.address() {
            return Ok(&mut self.bootstrap);
        }
        if !self.leaders.contains_key(address) {
            let connection = Connection::open(address, &self.id)?;
            self.leaders.insert(address.to_owned(), connection);
        }
        Ok(self.leaders.get_mut(address).expect("inserted above"))
    }

    /// Metadata of `topics`, or of every topic with `None`; never creates
    /// a topic.
    ///
    /// # Errors
    /// Network or protocol failures (per-topic errors are in the response).
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, Error> {
        let request = MetadataRequest::default()
            .with_topics(topics.map(|topics| {
                topics
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        self.bootstrap
            .call(ApiKey::Metadata, METADATA_VERSION, &request)
    }

    /// Every partition of `topic` with its leader, sorted by partition,
    /// creating the topic first (with `create`) if the cluster does not know
    /// it, and waiting until every partition has a leader.
    ///
    /// # Errors
    /// [`Error::Broker`] if the topic is missing and `create` is `None`,
    /// creation fails, or leaders do not appear within 30 s.
    ///
    /// # Panics
    /// Never: a topic without an error code is in the response.
    pub fn partition_leaders(
        &mut self,
        topic: &str,
        create: Option<&TopicSpec>,
    ) -> Result<Vec<PartitionLeader>, Error> {
        let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
        let mut created = false;
        loop {
            let metadata = self.metadata(Some(&[topic.to_owned()]))?;
            let brokers: BTreeMap<i32, String> = metadata
                .brokers
                .iter()
                .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
                .collect();
            let found = metadata
                .topics
                .iter()
                .find(|candidate| candidate.name.as_ref().is_some_and(|name| name.0 == *topic));
            let error = found.map_or(Some(ResponseError::UnknownTopicOrPartition), |found| {
                ResponseError::try_from_code(found.error_code)
            });
            match (error, create) {
                (None, _) => {
                    let found = found.expect("no error means the topic is in the response");
                    let leaders: Option<Vec<PartitionLeader>> = found
                        .partitions
                        .iter()
                        .map(|partition| {
                            brokers
                                .get(&partition.leader_id.0)
                                .filter(|_| partition.error_code == 0)
                                .map(|address| PartitionLeader {
                                    partition: partition.partition_index,
                                    address: address.clone(),
                                })
                        })
                        .collect();
                    if let Some(mut leaders) = leaders.filter(|leaders| !leaders.is_empty()) {
                        leaders.sort_by_key(|leader| leader.partition);
                        return Ok(leaders);
                    }
                }
                (Some(ResponseError::UnknownTopicOrPartition), Some(spec)) if !created => {
                    self.create_topic(topic, spec, true)?;
                    created = true;
                }
                (Some(ResponseError::UnknownTopicOrPartition), None) => {
                    return Err(Error::Broker {
                        what: format!("topic {topic}"),
                        error: "does not exist".to_owned(),
                    });
                }
                (
                    Some(
                        ResponseError::UnknownTopicOrPartition | ResponseError::LeaderNotAvailable,
                    ),
                    _,
                ) => {}
                (Some(error), _) => {
                    return check(&format!("metadata for {topic}"), error.code(), None)
                        .map(|()| Vec::new());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Broker {
                    what: format!("topic {topic}"),
                    error: format!("no leader for every partition after {TOPIC_READY_TIMEOUT:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates `name`; with `exist_ok`, a topic that already exists is
    /// success.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn create_topic(
        &mut self,
        name: &str,
        spec: &TopicSpec,
        exist_ok: bool,
    ) -> Result<(), Error> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(spec.partitions)
                .with_replication_factor(spec.replication_factor)
                .with_configs(
                    spec.configs
                        .iter()
                        .map(|(key, value)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(key.clone()))
                                .with_value(Some(StrBytes::from_string(value.clone())))
                        })
                        .collect(),
                )]);
        let response: CreateTopicsResponse =
            self.bootstrap
                .call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)?;
        for topic in &response.topics {
            if exist_ok && topic.error_code == ResponseError::TopicAlreadyExists.code() {
                continue;
            }
            check(
                &format!("creating topic {name}"),
                topic.error_code,
                topic.error_message.as_deref(),
            )?;
        }
        Ok(())
    }

    /// Deletes `names`.
    ///
    /// # Errors
    /// [`Error::Broker`] naming the first topic that was not deleted.
    pub fn delete_topics(&mut self, names: &[String]) -> Result<(), Error> {
        let request = DeleteTopicsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topic_names(names.iter().map(|name| topic_name(name)).collect());
        let response: DeleteTopicsResponse =
            self.bootstrap
                .call(ApiKey::DeleteTopics, DELETE_TOPICS_VERSION, &request)?;
        for topic in &response.responses {
            let name = topic.name.as_ref().map_or("?", |name| &name.0);
            check(
                &format!("deleting topic {name}"),
                topic.error_code,
                topic.error_message.as_deref(),
            )?;
        }
        Ok(())
    }

    /// Every config of `topic`, sorted by name.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error for the topic.
    pub fn describe_topic_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>, Error> {
        const TOPIC_CONFIG_SOURCE: i8 = 1;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configuration_keys(None),
        ]);
        let response: DescribeConfigsResponse =
            self.bootstrap
                .call(ApiKey::DescribeConfigs, DESCRIBE_CONFIGS_VERSION, &request)?;
        let mut entries = Vec::new();
        for result in &response.results {
            check(
                &format!("describing the configs of {topic}"),
                result.error_code,
                result.error_message.as_deref(),
            )?;
            entries.extend(result.configs.iter().map(|config| ConfigEntry {
                name: config.name.to_string(),
                value: config.value.as_ref().map(ToString::to_string),
                is_override: config.config_source == TOPIC_CONFIG_SOURCE,
                read_only: config.read_only,
            }));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Sets `set` and removes `delete` (back to the default) on `topic`,
    /// leaving its other configs alone.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn alter_topic_configs(
        &mut self,
        topic: &str,
        set: &[(String, String)],
        delete: &[String],
    ) -> Result<(), Error> {
        const SET: i8 = 0;
        const DELETE: i8 = 1;
        let configs = set
            .iter()
            .map(|(key, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(SET)
                    .with_value(Some(StrBytes::from_string(value.clone())))
            })
            .chain(delete.iter().map(|key| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.clone()))
                    .with_config_operation(DELETE)
                    .with_value(None)
            }))
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configs(configs),
        ]);
        let response: IncrementalAlterConfigsResponse = self.bootstrap.call(
            ApiKey::IncrementalAlterConfigs,
            INCREMENTAL_ALTER_CONFIGS_VERSION,
            &request,
        )?;
        for resource in &response.responses {
            check(
                &format!("altering the configs of {topic}"),
                resource.error_code,
                resource.error_message.as_deref(),
            )?;
        }
        Ok(())
    }

    /// The cluster id, controller and brokers.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn describe_cluster(&mut self) -> Result<ClusterInfo, Error> {
        let served = self.api_versions()?;
        let reports_fencing = served
            .get(&(ApiKey::DescribeCluster as i16))
            .is_some_and(|&max| max >= DESCRIBE_CLUSTER_FENCED_VERSION);
        let (version, request) = if reports_fencing {
            (
                DESCRIBE_CLUSTER_FENCED_VERSION,
                DescribeClusterRequest::default().with_include_fenced_brokers(true),
            )
        } else {
            (DESCRIBE_CLUSTER_VERSION, DescribeClusterRequest::default())
        };
        let response: DescribeClusterResponse =
            self.bootstrap
                .call(ApiKey::DescribeCluster, version, &request)?;
        check(
            "describing the cluster",
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let quorum = if served
            .get(&(ApiKey::DescribeQuorum as i16))
            .is_some_and(|&max| max >= DESCRIBE_QUORUM_VERSION)
        {
            Some(self.describe_quorum()?)
        } else {
            None
        };
        Ok(ClusterInfo {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .iter()
                .map(|broker| BrokerInfo {
                    id: broker.broker_id.0,
                    address: format!("{}:{}", broker.host, broker.port),
                    rack: broker.rack.as_ref().map(ToString::to_string),
                    fenced: broker.is_fenced,
                })
                .collect(),
            quorum,
        })
    }

    /// The metadata quorum (`__cluster_metadata-0`) from `DescribeQuorum`.
    ///
    /// # Errors
    /// Network or protocol failures, or the broker's error.
    pub fn describe_quorum(&mut self) -> Result<QuorumInfo, Error> {
        let request = DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(TopicName(StrBytes::from_static_str(CLUSTER_METADATA_TOPIC)))
                .with_partitions(vec![
                    describe_quorum_request::PartitionData::default().with_partition_index(0)
                ]),
        ]);
        let response: DescribeQuorumResponse =
            self.bootstrap
                .call(ApiKey::DescribeQuorum, DESCRIBE_QUORUM_VERSION, &request)?;
        check(
            "describing the metadata quorum",
            response.error_code,
            response.error_message.as_deref(),
        )?;
        let partition = response
            .topics
            .first()
            .and_then(|topic| topic.partitions.first())
            .ok_or_else(|| Error::Broker {
                what: "describing the metadata quorum".to_owned(),
                error: "the answer names no partition".to_owned(),
            })?;
        check(
            "describing the metadata quorum",
            partition.error_code,
            partition.error_message.as_deref(),
        )?;
        let replica = |voter: &describe_quorum_response::ReplicaState| VoterInfo {
            id: voter.replica_id.0,
            log_end_offset: voter.log_end_offset,
            lag: (partition.high_watermark - voter.log_end_offset).max(0),
            last_fetch_ms: voter.last_fetch_timestamp,
        };
        Ok(QuorumInfo {
            leader_id: partition.leader_id.0,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: partition.current_voters.iter().map(replica).collect(),
            observers: partition.observers.iter().map(replica).collect(),
        })
    }
}

/// Each partition's offset at `timestamp` (a time in ms, or
/// [`EARLIEST_TIMESTAMP`] / [`LATEST_TIMESTAMP`]), asked of `connection`
/// (the partitions' leader); -1 where no record is that recent.
///
/// # Errors
/// [`Error::Broker`] with the first partition error, or if a partition is
/// missing from the answer.
pub fn list_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, Error> {
    list_offsets_as(connection, CONSUMER_REPLICA, topic, partitions, timestamp)
}

/// The replica id of a consumer.
const CONSUMER_REPLICA: i32 = -1;

/// The replica id of a tool that asks any replica, not only the leader
/// (Kafka's `DEBUGGING_REPLICA_ID`); its latest offset is that replica's
/// log end.
const DEBUGGING_REPLICA: i32 = -2;

/// The log end of each of `partitions` on the broker behind `connection`,
/// which holds a replica of them (leader or follower).
///
/// # Errors
/// As [`list_offsets`].
pub fn replica_log_ends(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>, Error> {
    list_offsets_as(
        connection,
        DEBUGGING_REPLICA,
        topic,
        partitions,
        LATEST_TIMESTAMP,
    )
}

/// [`list_offsets`] as replica `replica_id`.
fn list_offsets_as(
    connection: &mut Connection,
    replica_id: i32,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, Error> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(replica_id))
        .with_isolation_level(0)
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|partition| {
                        ListOffsetsPartition::default()
                            .with_partition_index(*partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let response: ListOffsetsResponse =
        connection.call(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request)?;
    let mut offsets = BTreeMap::new();
    for answer in &response.topics {
        for partition in &answer.partitions {
            check(
                &format!("listing offsets of {topic}-{}", partition.partition_index),
                partition.error_code,
                None,
            )?;
            offsets.insert(partition.partition_index, partition.offset);
        }
    }
    if offsets.len() != partitions.len() {
        return Err(Error::Protocol(format!(
            "ListOffsets for {topic} did not answer for every partition"
        )));
    }
    Ok(offsets)
}

/// A Produce request of one `batch` for one partition.
#[must_use]
pub fn produce_request(topic: &str, partition: i32, acks: i16, batch: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(ADMIN_TIMEOUT_MS)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

/// The base offset of every partition in a Produce response.
///
/// # Errors
/// [`Error::Broker`] with the first partition error.
pub fn produce_result(response: &ProduceResponse) -> Result<BTreeMap<i32, i64>, Error> {
    let mut offsets = BTreeMap::new();
    for topic in &response.responses {
        for partition in &topic.partition_responses {
            check(
                &format!("producing to {}-{}", topic.name.0, partition.index),
                partition.error_code,
                partition.error_message.as_deref(),
            )?;
            offsets.insert(partition.index, partition.base_offset);
        }
    }
    Ok(offsets)
}

/// How a Fetch waits and how much it takes.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    /// `max_wait_ms`.
    pub max_wait_ms: i32,
    /// `max_bytes`.
    pub max_bytes: i32,
    /// `partition_max_bytes`.
    pub partition_max_bytes: i32,
}

/// A sessionless read-uncommitted Fetch of `topic` from the given
/// `(partition, offset)` positions.
#[must_use]
pub fn fetch_request(topic: &str, positions: &[(i32, i64)], limits: FetchLimits) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(limits.max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(limits.max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(
                positions
                    .iter()
                    .map(|(partition, offset)| {
                        FetchPartition::default()
                            .with_partition(*partition)
                            .with_current_leader_epoch(-1)
                            .with_fetch_offset(*offset)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(limits.partition_max_bytes)
                    })
                    .collect(),
            )])
}

/// Sends a Fetch on `connection` and checks the top-level and partition
/// error codes.
///
/// # Errors
/// Network, protocol, or [`Error::Broker`] with the first error.
pub fn fetch(connection: &mut Connection, request: &FetchRequest) -> Result<FetchResponse, Error> {
    let response: FetchResponse = connection.call(ApiKey::Fetch, FETCH_VERSION, request)?;
    check("fetch", response.error_code, None)?;
    for topic in &response.responses {
        for partition in &topic.partitions {
            check(
                &format!("fetching {}-{}", topic.topic.0, partition.partition_index),
                partition.error_code,
                None,
            )?;
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_are_named() {
        assert!(check("x", 0, None).is_ok());
        let error = check("creating topic t", 36, Some("already there")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "creating topic t: TopicAlreadyExists: already there"
        );
        let unknown = check("x", 999, None).unwrap_err();
        assert_eq!(unknown.to_string(), "x: error code 999");
    }
}
