//! DescribeTopicPartitions (KIP-966): topics and their partitions (leader,
//! leader epoch, replicas, ISR, eligible leader replicas), a page at a time:
//! what the Java admin client's `describeTopics` asks brokers that serve it,
//! and kafka-python's `describe_topic_partitions`.
//!
//! As in Kafka: the named topics (every topic if none is named) are answered
//! in name order from the `cursor`'s topic and partition on, at most
//! `response_partition_limit` partitions (clamped to 1..=2000, Kafka's
//! `max.request.partition.size.limit`) per response; when that cuts the
//! answer short, `next_cursor` names the first partition left out. A named
//! topic that does not exist is `UNKNOWN_TOPIC_OR_PARTITION` (or
//! `INVALID_TOPIC_EXCEPTION` for an impossible name) and takes no room in
//! the page. A cursor with a negative partition, or whose topic the request
//! does not describe, is `INVALID_REQUEST` for every named topic. Every
//! topic carries its authorized operations (all of them: fjord has no
//! authorizer). A single node has no eligible leader replicas and no
//! offline replicas, so those lists are empty.

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::metadata::Placement;
use super::ApiSupport;
use crate::authorized_operations::{authorized_operations, Resource};
use crate::metadata::TopicImage;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeTopicPartitions,
    min: 0,
    max: 0,
};

/// Most partitions one response describes, whatever the request asks:
/// the default of Kafka's `max.request.partition.size.limit`.
const RESPONSE_PARTITIONS_MAX: i32 = 2000;

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Partitions `first..` of `topic`, at most `room` of them, and the index
/// of the first one left out, if any.
fn page_of(
    topic: &TopicImage,
    first: i32,
    room: i32,
) -> (Vec<DescribeTopicPartitionsResponsePartition>, Option<i32>) {
    let end = topic.partition_count().min(first.saturating_add(room));
    let partitions = (first..end)
        .map(|index| {
            let placement = Placement::of(topic, index);
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(placement.leader)
                .with_leader_epoch(placement.leader_epoch)
                .with_replica_nodes(placement.replicas)
                .with_isr_nodes(placement.isr)
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
                .with_offline_replicas(Vec::new())
        })
        .collect();
    (partitions, (end < topic.partition_count()).then_some(end))
}

/// The answer to a request Kafka refuses as a whole: `error` for every
/// named topic, nothing else.
fn refused(
    request: &DescribeTopicPartitionsRequest,
    error: ResponseError,
) -> DescribeTopicPartitionsResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_error_code(error.code())
                .with_name(Some(topic.name.clone()))
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

/// Answers DescribeTopicPartitions.
#[must_use]
pub fn handle(
    broker: &Broker,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.controller.image();
    let cursor = request.cursor.as_ref();
    let cursor_topic = cursor.map_or("", |cursor| &*cursor.topic_name.0);
    let every_topic = request.topics.is_empty();
    // Sorted and deduplicated: pages follow name order.
    let mut wanted: BTreeSet<&str> = if every_topic {
        image.topics.keys().map(String::as_str).collect()
    } else {
        request.topics.iter().map(|topic| &*topic.name.0).collect()
    };
    // The cursor's topic and those after it.
    let wanted = wanted.split_off(cursor_topic);
    if let Some(cursor) = cursor {
        if cursor.partition_index < 0 || !wanted.contains(cursor_topic) {
            tracing::debug!(?cursor, "DescribeTopicPartitions cursor refused");
            return refused(request, ResponseError::InvalidRequest);
        }
    }
    let operations = authorized_operations(Resource::Topic, true);
    let mut room = request
        .response_partition_limit
        .clamp(1, RESPONSE_PARTITIONS_MAX);
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in wanted {
        if room == 0 {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(0),
            );
            break;
        }
        let answer = DescribeTopicPartitionsResponseTopic::default()
            .with_name(Some(topic_name(name)))
            .with_is_internal(topics::is_internal(name))
            .with_topic_authorized_operations(operations);
        let Some(topic) = image.topics.get(name) else {
            let error = if fjord_engine::types::is_valid_topic_name(name) {
                ResponseError::UnknownTopicOrPartition
            } else {
                ResponseError::InvalidTopicException
            };
            response.topics.push(answer.with_error_code(error.code()));
            continue;
        };
        let first = cursor
            .filter(|cursor| &*cursor.topic_name.0 == name)
            .map_or(0, |cursor| cursor.partition_index);
        let (partitions, left_out) = page_of(topic, first, room);
        room -= partitions.len() as i32;
        response.topics.push(
            answer
                .with_topic_id(topic.uuid())
                .with_partitions(partitions),
        );
        if let Some(index) = left_out {
            response.next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(name))
                    .with_partition_index(index),
            );
            break;
        }
    }
    response
}
