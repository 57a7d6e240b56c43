//! DeleteRecords: moves a partition's log start offset (low watermark) up to
//! the given offset, `-1` meaning the high watermark, and deletes the
//! segments wholly below it. An offset above the high watermark is
//! `OFFSET_OUT_OF_RANGE`; one below the current start changes nothing. The
//! answer carries the low watermark after the deletion. Internal topics
//! are refused (`INVALID_TOPIC_EXCEPTION`), as in Kafka.

use std::rc::Rc;

use fjord_engine::{Offset, TopicPartition};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::error::engine_error_code;
use crate::partition;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DeleteRecords,
    min: 0,
    max: 2,
};

/// The offset that means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Deletes the records of `partition` below `offset`; the new low watermark
/// or the Kafka error code.
async fn delete_one(broker: &Broker, partition: TopicPartition, offset: i64) -> Result<i64, i16> {
    partition::led_here(broker, &partition, partition::NO_LEADER_EPOCH)
        .map_err(|error| error.code())?;
    if topics::is_internal(&partition.topic) {
        // As Kafka: the group coordinator's records are not the client's to
        // delete.
        return Err(ResponseError::InvalidTopicException.code());
    }
    if !broker
        .controller
        .log_config_for(&partition.topic)
        .cleanup_policy
        .delete
    {
        // As Kafka: deleting records is retention by hand, which a topic
        // whose cleanup.policy lacks `delete` does not allow.
        return Err(ResponseError::PolicyViolation.code());
    }
    let offset = match offset {
        HIGH_WATERMARK => {
            broker
                .shard
                .offsets(partition.clone())
                .await
                .map_err(|error| engine_error_code(&error))?
                .high_watermark
        }
        offset if offset < 0 => return Err(ResponseError::OffsetOutOfRange.code()),
        offset => Offset(offset),
    };
    broker
        .shard
        .delete_records(partition, offset)
        .await
        .map(|low_watermark| low_watermark.0)
        .map_err(|error| engine_error_code(&error))
}

/// Answers DeleteRecords.
pub async fn handle(broker: &Rc<Broker>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for wanted in topic.partitions {
            let partition = TopicPartition::new(topic.name.0.to_string(), wanted.partition_index);
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(wanted.partition_index);
            partitions.push(match delete_one(broker, partition, wanted.offset).await {
                Ok(low_watermark) => result.with_low_watermark(low_watermark),
                Err(code) => result.with_low_watermark(-1).with_error_code(code),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
