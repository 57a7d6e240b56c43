//! OffsetForLeaderEpoch: for a leader epoch, the largest epoch the log knows
//! at or below it and the offset where the next epoch starts (the log end
//! for the current epoch), so a consumer or follower can tell where its log
//! diverges (KIP-101, KIP-320).
//!
//! The partition's leader epoch comes from the metadata image (a single
//! node leads every partition it created in epoch 0). An epoch the log does not
//! know (newer than the current one, or negative) answers epoch -1 and
//! offset -1 with no error, as Kafka does. The current epoch answers the log
//! end even before the first append stamps it into the log, as Kafka's
//! leader, which records its epoch when it becomes leader, does. A
//! `current_leader_epoch` older than the partition's is fenced, a newer one
//! unknown.
//! Consumers (`replica_id` -1) and followers get the same answer: every
//! partition's leader is here.

use std::rc::Rc;

use fjord_engine::{LeaderEpoch, TopicPartition};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::ApiSupport;
use crate::error::engine_error_code;
use crate::partition;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::OffsetForLeaderEpoch,
    min: 2,
    max: 4,
};

/// The (epoch, end offset) answer for one partition, or the error code.
async fn end_offset(
    broker: &Broker,
    partition: TopicPartition,
    wanted: &OffsetForLeaderPartition,
) -> Result<(i32, i64), i16> {
    let state = partition::led_here(broker, &partition, wanted.current_leader_epoch)
        .map_err(|error| error.code())?;
    let found = broker
        .shard
        .end_offset_for_epoch(partition.clone(), LeaderEpoch(wanted.leader_epoch))
        .await
        .map_err(|error| engine_error_code(&error))?;
    match found {
        Some(end) => Ok((end.epoch.0, end.end_offset.0)),
        None if wanted.leader_epoch == state.leader_epoch.0 => broker
            .shard
            .offsets(partition)
            .await
            .map(|offsets| (state.leader_epoch.0, offsets.log_end.0))
            .map_err(|error| engine_error_code(&error)),
        None => Ok((-1, -1)),
    }
}

/// Answers OffsetForLeaderEpoch.
pub async fn handle(
    broker: &Rc<Broker>,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in &topic.partitions {
            let partition = TopicPartition::new(topic.topic.0.to_string(), wanted.partition);
            let result = EpochEndOffset::default().with_partition(wanted.partition);
            partitions.push(match end_offset(broker, partition, wanted).await {
                Ok((epoch, offset)) => result.with_leader_epoch(epoch).with_end_offset(offset),
                Err(code) => result
                    .with_error_code(code)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
