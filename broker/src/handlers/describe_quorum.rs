//! `DescribeQuorum` (KIP-595): the metadata quorum's leader, its epoch, the
//! high watermark of the metadata log and each voter's progress, for the
//! `__cluster_metadata` partition (the only one a quorum has), as
//! `kafka-metadata-quorum.sh describe --status/--replication` shows it.
//! Version 2 (KIP-853's voter directory ids and listeners) is not served.

use kafka_protocol::messages::describe_quorum_response::{PartitionData, ReplicaState, TopicData};
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::controller::VoterView;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeQuorum,
    min: 0,
    max: 1,
};

/// Answers `DescribeQuorum`.
pub async fn handle(broker: &Broker, request: &DescribeQuorumRequest) -> DescribeQuorumResponse {
    let quorum = broker.controller.quorum().await;
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let is_metadata_topic =
                topic.topic_name.0.as_str() == fjord_engine::types::CLUSTER_METADATA_TOPIC;
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let answer =
                        PartitionData::default().with_partition_index(partition.partition_index);
                    if !is_metadata_topic || partition.partition_index != 0 {
                        return answer
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "the metadata quorum has only __cluster_metadata-0",
                            )))
                            .with_leader_id(BrokerId(-1))
                            .with_leader_epoch(-1)
                            .with_high_watermark(-1);
                    }
                    let replica = |voter: &VoterView| {
                        ReplicaState::default()
                            .with_replica_id(BrokerId(voter.id.0))
                            .with_log_end_offset(voter.log_end_offset)
                            .with_last_fetch_timestamp(voter.last_fetch_ms.unwrap_or(-1))
                            .with_last_caught_up_timestamp(voter.last_caught_up_ms.unwrap_or(-1))
                    };
                    let voters = quorum.voters.iter().map(replica).collect();
                    let observers = quorum.observers.iter().map(replica).collect();
                    answer
                        .with_leader_id(BrokerId(quorum.leader.0))
                        .with_leader_epoch(quorum.leader_epoch)
                        .with_high_watermark(quorum.high_watermark)
                        .with_current_voters(voters)
                        .with_observers(observers)
                })
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}
