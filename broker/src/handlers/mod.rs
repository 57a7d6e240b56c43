//! One file per Kafka API, each declaring the versions it serves; this
//! registry lists them all and routes decoded requests to them.
//!
//! ApiVersions advertises exactly [`SUPPORTED`], so a client never sends a
//! version a handler does not implement.

use std::net::SocketAddr;
use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};

use crate::error::BrokerError;
use crate::fetch_codec::ZeroCopyFetch;
use crate::server::Broker;

pub mod alter_configs;
pub mod api_versions;
pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

/// The versions of one API that fjord serves.
#[derive(Clone, Copy, Debug)]
pub struct ApiSupport {
    /// The API.
    pub key: ApiKey,
    /// Oldest version served.
    pub min: i16,
    /// Newest version served.
    pub max: i16,
}

/// Every API fjord serves.
pub const SUPPORTED: &[ApiSupport] = &[
    produce::SUPPORT,
    fetch::SUPPORT,
    list_offsets::SUPPORT,
    metadata::SUPPORT,
    api_versions::SUPPORT,
    create_topics::SUPPORT,
    delete_topics::SUPPORT,
    init_producer_id::SUPPORT,
    offset_for_leader_epoch::SUPPORT,
    delete_records::SUPPORT,
    describe_configs::SUPPORT,
    alter_configs::SUPPORT,
    describe_log_dirs::SUPPORT,
    create_partitions::SUPPORT,
    incremental_alter_configs::SUPPORT,
    describe_cluster::SUPPORT,
    describe_quorum::SUPPORT,
    describe_topic_partitions::SUPPORT,
    elect_leaders::SUPPORT,
    find_coordinator::SUPPORT,
    join_group::SUPPORT,
    sync_group::SUPPORT,
    heartbeat::SUPPORT,
    leave_group::SUPPORT,
    offset_commit::SUPPORT,
    offset_fetch::SUPPORT,
    list_groups::SUPPORT,
    describe_groups::SUPPORT,
    delete_groups::SUPPORT,
    offset_delete::SUPPORT,
    consumer_group_heartbeat::SUPPORT,
    consumer_group_describe::SUPPORT,
];

/// The served versions of `key`, if it is served.
#[must_use]
pub fn support_for(key: ApiKey) -> Option<ApiSupport> {
    SUPPORTED.iter().copied().find(|support| support.key == key)
}

/// What a handler answers.
pub enum Reply {
    /// A response the crate's codec encodes.
    Encoded(ResponseKind),
    /// A Fetch response whose records are sent without copying
    /// ([`crate::fetch_codec`]).
    Fetch(ZeroCopyFetch),
}

/// A request whose handler has begun: a Produce request has its appends in
/// line ([`produce::line_up`]); any other request starts when dispatched.
pub enum Begun {
    /// A Produce request, in line on its partitions.
    Produce(produce::ProduceInLine),
    /// Any other request.
    Request(Box<RequestKind>),
}

/// Begins `request`: the part of its handling that fixes its order among
/// the connection's requests. The connection calls this for each request
/// before it reads the next.
pub async fn begin(broker: &Rc<Broker>, request: RequestKind) -> Begun {
    match request {
        RequestKind::Produce(request) => Begun::Produce(produce::line_up(broker, request).await),
        other => Begun::Request(Box::new(other)),
    }
}

/// Runs the handler for `request`, from the client at `peer`. `Ok(None)`
/// means no response is sent (Produce with `acks=0`).
///
/// # Errors
/// A [`BrokerError`] that makes the connection close.
pub async fn dispatch(
    broker: &Rc<Broker>,
    header: &RequestHeader,
    request: Begun,
    peer: Option<SocketAddr>,
) -> Result<Option<Reply>, BrokerError> {
    match request {
        Begun::Produce(in_line) => Ok(in_line
            .answer()
            .await
            .map(|response| Reply::Encoded(ResponseKind::Produce(response)))),
        Begun::Request(request) => run(broker, header, *request, peer).await,
    }
}

/// Runs the handler of a request that is not a Produce.
async fn run(
    broker: &Rc<Broker>,
    header: &RequestHeader,
    request: RequestKind,
    peer: Option<SocketAddr>,
) -> Result<Option<Reply>, BrokerError> {
    let version = header.request_api_version;
    let client_id = header.client_id.as_deref().unwrap_or_default();
    if let RequestKind::Fetch(request) = request {
        return Ok(Some(Reply::Fetch(
            fetch::handle(broker, request, version).await,
        )));
    }
    Ok(Some(Reply::Encoded(match request {
        RequestKind::ApiVersions(request) => {
            ResponseKind::ApiVersions(api_versions::handle(&request))
        }
        RequestKind::Metadata(request) => {
            ResponseKind::Metadata(metadata::handle(broker, request, version).await)
        }
        RequestKind::ListOffsets(request) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, request, version).await)
        }
        RequestKind::CreateTopics(request) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, request).await)
        }
        RequestKind::DeleteTopics(request) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, request).await)
        }
        RequestKind::InitProducerId(request) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, &request).await)
        }
        RequestKind::OffsetForLeaderEpoch(request) => ResponseKind::OffsetForLeaderEpoch(
            offset_for_leader_epoch::handle(broker, request).await,
        ),
        RequestKind::DeleteRecords(request) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, request).await)
        }
        RequestKind::DescribeConfigs(request) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, &request, version))
        }
        RequestKind::AlterConfigs(request) => {
            ResponseKind::AlterConfigs(alter_configs::handle(broker, request).await)
        }
        RequestKind::DescribeLogDirs(request) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, request, version).await)
        }
        RequestKind::CreatePartitions(request) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, request).await)
        }
        RequestKind::ElectLeaders(request) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(broker, request).await)
        }
        RequestKind::IncrementalAlterConfigs(request) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(broker, request).await,
        ),
        RequestKind::DescribeCluster(request) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, &request))
        }
        RequestKind::DescribeQuorum(request) => {
            ResponseKind::DescribeQuorum(describe_quorum::handle(broker, &request).await)
        }
        RequestKind::DescribeTopicPartitions(request) => ResponseKind::DescribeTopicPartitions(
            describe_topic_partitions::handle(broker, &request),
        ),
        RequestKind::FindCoordinator(request) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(broker, request, version))
        }
        other => run_group_api(broker, other, version, client_id, peer).await?,
    })))
}

/// Runs the handler of a group coordinator request.
async fn run_group_api(
    broker: &Rc<Broker>,
    request: RequestKind,
    version: i16,
    client_id: &str,
    peer: Option<SocketAddr>,
) -> Result<ResponseKind, BrokerError> {
    Ok(match request {
        RequestKind::JoinGroup(request) => ResponseKind::JoinGroup(
            join_group::handle(broker, request, version, client_id, peer).await,
        ),
        RequestKind::SyncGroup(request) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, request).await)
        }
        RequestKind::Heartbeat(request) => {
            ResponseKind::Heartbeat(heartbeat::handle(broker, &request))
        }
        RequestKind::LeaveGroup(request) => {
            ResponseKind::LeaveGroup(leave_group::handle(broker, request, version).await)
        }
        RequestKind::OffsetCommit(request) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, request).await)
        }
        RequestKind::OffsetFetch(request) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, request, version))
        }
        RequestKind::ListGroups(request) => {
            ResponseKind::ListGroups(list_groups::handle(broker, &request, version))
        }
        RequestKind::DescribeGroups(request) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, request, version))
        }
        RequestKind::DeleteGroups(request) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, request).await)
        }
        RequestKind::OffsetDelete(request) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, request).await)
        }
        RequestKind::ConsumerGroupHeartbeat(request) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_group_heartbeat::handle(broker, &request, client_id, peer),
        ),
        RequestKind::ConsumerGroupDescribe(request) => ResponseKind::ConsumerGroupDescribe(
            consumer_group_describe::handle(broker, request, version),
        ),
        other => {
            return Err(BrokerError::Malformed(format!(
                "no handler for {:?}",
                std::mem::discriminant(&other)
            )))
        }
    })
}
