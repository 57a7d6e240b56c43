//! ListOffsets: earliest (-2), latest (-1: the high watermark, as consumers
//! see it), max timestamp (-3, KIP-734), or the first offset whose timestamp
//! is at or after a given time. The leader epoch answered (v4+) is the
//! partition's; a stale or future `current_leader_epoch` is refused
//! (KIP-320).
//!
//! As in Kafka, a request from the debugging replica id (-2) is answered
//! by any replica of the partition, not only its leader, and its latest
//! offset is that replica's log end: tools compare the replicas with it
//! (`fjordctl topics describe --replica-lag`).

use std::rc::Rc;

use fjord_engine::shard::OffsetQuery;
use fjord_engine::{TimestampMs, TopicPartition};
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::error::engine_error_code;
use crate::partition;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ListOffsets,
    min: 1,
    max: 7,
};

/// The replica id of a tool asking any replica (Kafka's
/// `DEBUGGING_REPLICA_ID`).
const DEBUGGING_REPLICA: i32 = -2;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

async fn list_one(
    broker: &Rc<Broker>,
    partition: TopicPartition,
    wanted: &ListOffsetsPartition,
    version: i16,
    any_replica: bool,
) -> ListOffsetsPartitionResponse {
    let timestamp = wanted.timestamp;
    let response = ListOffsetsPartitionResponse::default()
        .with_partition_index(partition.partition)
        .with_timestamp(-1)
        .with_offset(-1)
        .with_leader_epoch(-1);
    let checked = if any_replica {
        partition::state(broker, &partition)
    } else {
        partition::led_here(broker, &partition, wanted.current_leader_epoch)
    };
    let state = match checked {
        Ok(state) => state,
        Err(error) => return response.with_error_code(error.code()),
    };
    // Leader epochs are part of the response from v4 on.
    let epoch = if version >= 4 {
        state.leader_epoch.0
    } else {
        -1
    };
    if timestamp == LATEST {
        return match broker.shard.offsets(partition).await {
            Ok(offsets) => response
                .with_offset(if any_replica {
                    offsets.log_end.0
                } else {
                    offsets.high_watermark.0
                })
                .with_leader_epoch(epoch),
            Err(error) => response.with_error_code(engine_error_code(&error)),
        };
    }
    let query = match timestamp {
        EARLIEST => OffsetQuery::Earliest,
        MAX_TIMESTAMP => OffsetQuery::MaxTimestamp,
        at if at >= 0 => OffsetQuery::Timestamp(TimestampMs(at)),
        _ => return response.with_error_code(ResponseError::InvalidRequest.code()),
    };
    match broker.shard.list_offset(partition.clone(), query).await {
        Ok(Some(found)) => response
            .with_offset(found.offset.0)
            .with_timestamp(found.timestamp.0)
            .with_leader_epoch(epoch),
        // No record at or after the timestamp: Kafka answers offset -1.
        Ok(None) => response,
        Err(error) => {
            tracing::warn!(%partition, timestamp, %error, "ListOffsets failed");
            response.with_error_code(engine_error_code(&error))
        }
    }
}

/// Answers ListOffsets.
pub async fn handle(
    broker: &Rc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let any_replica = request.replica_id.0 == DEBUGGING_REPLICA;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let partition_id = TopicPartition::new(name.clone(), partition.partition_index);
            partitions.push(list_one(broker, partition_id, &partition, version, any_replica).await);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
