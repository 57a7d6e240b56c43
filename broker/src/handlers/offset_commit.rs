//! OffsetCommit: stores a group's consumed positions. A member of an
//! active group must name its current generation; a consumer outside any
//! group (generation -1, no member id) may commit to an empty group, as
//! Kafka allows. The answer comes once the commit's record is committed to
//! `__consumer_offsets` as an acks=all write: an acknowledged commit
//! survives a crash and a change of coordinator. A write the partition
//! refuses answers as Kafka's coordinator does ([`crate::groups::write_error`]).

use std::rc::Rc;
use std::time::Instant;

use fjord_engine::{TimestampMs, TopicPartition};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::{CommittedOffset, Group, GroupState};
use crate::groups::records::{OffsetValue, RecordKey};
use crate::groups::{append, OFFSET_METADATA_MAX_BYTES};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::OffsetCommit,
    min: 2,
    max: 9,
};

/// Kafka's `validateOffsetCommit`: generations for classic groups, member
/// epochs for consumer-protocol (KIP-848) groups.
fn validate(group: Option<&mut Group>, request: &OffsetCommitRequest) -> Result<(), ResponseError> {
    let generation = request.generation_id_or_member_epoch;
    let member_id = request.member_id.as_str();
    let simple = generation < 0 && member_id.is_empty() && request.group_instance_id.is_none();
    let Some(group) = group else {
        return if simple {
            Ok(())
        } else {
            Err(ResponseError::IllegalGeneration)
        };
    };
    if simple {
        return if group.is_empty() {
            Ok(())
        } else {
            Err(ResponseError::UnknownMemberId)
        };
    }
    if let Some(consumer) = &group.consumer {
        // KIP-848: the member's epoch stands in for the generation.
        return consumer.check_commit(member_id, generation);
    }
    group.check_fenced(member_id, request.group_instance_id.as_deref())?;
    let Some(member) = group.members.get_mut(member_id) else {
        return Err(ResponseError::UnknownMemberId);
    };
    member.last_heartbeat = Instant::now();
    if generation != group.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    if group.state == GroupState::CompletingRebalance {
        return Err(ResponseError::RebalanceInProgress);
    }
    Ok(())
}

/// The response: each partition's own error, else the write's outcome.
fn respond(
    request: &OffsetCommitRequest,
    outcomes: Vec<Vec<Result<usize, ResponseError>>>,
    written: Result<i64, ResponseError>,
) -> OffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .zip(outcomes)
        .map(|(topic, partitions)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(partitions)
                .map(|(partition, outcome)| {
                    let error = match (outcome, written) {
                        (Err(error), _) | (Ok(_), Err(error)) => error.code(),
                        (Ok(_), Ok(_)) => 0,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(error)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Answers OffsetCommit.
pub async fn handle(broker: &Rc<Broker>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.to_string();
    // The coordinator epoch the commit was validated in, which its write
    // and its application are bound to.
    let validated = if group_id.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        coordinator
            .with_partition_for_write(&group_id, |partition| {
                validate(partition.groups.get_mut(&group_id), &request)
            })
            .and_then(|(outcome, epoch)| outcome.map(|()| epoch))
    };
    let image = broker.controller.image();
    let now_ms = TimestampMs::now().0;
    // Per partition: its error, or the index of its record in the batch.
    let mut records = Vec::new();
    let mut to_apply = Vec::new();
    let mut outcomes: Vec<Vec<Result<usize, ResponseError>>> =
        Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let outcome = if let Err(error) = validated {
                Err(error)
            } else if !image.contains(&TopicPartition::new(
                topic.name.to_string(),
                partition.partition_index,
            )) {
                Err(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > OFFSET_METADATA_MAX_BYTES {
                Err(ResponseError::OffsetMetadataTooLarge)
            } else {
                let value = OffsetValue {
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata,
                    commit_timestamp_ms: now_ms,
                };
                let key = RecordKey::Offset {
                    group: group_id.clone(),
                    topic: topic.name.to_string(),
                    partition: partition.partition_index,
                };
                records.push((key.encode(), Some(value.encode())));
                to_apply.push((topic.name.to_string(), partition.partition_index, value));
                Ok(records.len() - 1)
            };
            partitions.push(outcome);
        }
        outcomes.push(partitions);
    }
    let written = match validated {
        Ok(epoch) => append(broker, epoch, &records).await,
        Err(error) => Err(error),
    };
    if let (Ok(base_offset), Ok(epoch), false) = (written, validated, to_apply.is_empty()) {
        // Not applied if the partition was unloaded meanwhile: the
        // committed record is read back by whoever loads it next.
        let applied = coordinator.with_partition_in(epoch, |partition| {
            let group = partition
                .groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(group_id.clone()));
            for (index, (topic, partition, value)) in to_apply.into_iter().enumerate() {
                let record_offset = base_offset + i64::try_from(index).unwrap_or(i64::MAX);
                group.apply_offset(
                    topic,
                    partition,
                    CommittedOffset {
                        value,
                        record_offset,
                    },
                );
            }
        });
        if let Err(error) = applied {
            tracing::info!(group = %group_id, ?error, "committed offsets not applied");
        }
    }
    respond(&request, outcomes, written)
}
