//! OffsetFetch: a group's committed offsets, for the partitions asked or
//! (null topics, v2+) all of them. A partition without a commit gets offset
//! -1 and no error, as in Kafka. v8+ asks for several groups at once.
//! `require_stable` is accepted: without transactions no offset is pending.
//! v9's member id and epoch are checked for consumer-protocol groups.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::records::OffsetValue;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::OffsetFetch,
    min: 1,
    max: 9,
};

/// One partition's answer: its committed offset, if any.
type Fetched = (i32, Option<OffsetValue>);

/// The committed offsets of `group_id`: for `wanted` (topic, partitions),
/// or every committed one when `None`.
fn fetch_group(
    broker: &Broker,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<Fetched>)>, ResponseError> {
    broker.groups.with_group(group_id, |group| {
        if let Some(wanted) = wanted {
            return wanted
                .into_iter()
                .map(|(topic, partitions)| {
                    let fetched = partitions
                        .into_iter()
                        .map(|partition| {
                            let value = group
                                .as_ref()
                                .and_then(|group| group.offsets.get(&(topic.clone(), partition)))
                                .map(|committed| committed.value.clone());
                            (partition, value)
                        })
                        .collect();
                    (topic, fetched)
                })
                .collect();
        }
        {
            let mut topics: Vec<(String, Vec<Fetched>)> = Vec::new();
            for ((topic, partition), committed) in
                group.iter().flat_map(|group| group.offsets.iter())
            {
                if topics.last().is_none_or(|(last, _)| last != topic) {
                    topics.push((topic.clone(), Vec::new()));
                }
                if let Some((_, partitions)) = topics.last_mut() {
                    partitions.push((*partition, Some(committed.value.clone())));
                }
            }
            topics
        }
    })
}

fn metadata_of(value: Option<&OffsetValue>) -> StrBytes {
    StrBytes::from_string(
        value
            .map(|value| value.metadata.clone())
            .unwrap_or_default(),
    )
}

/// v9+: a KIP-848 member names itself and its epoch; like OffsetCommit,
/// an unknown member or a stale epoch is refused for a consumer-protocol
/// group. Other groups ignore them, as Kafka does.
fn check_member(
    broker: &Broker,
    group_id: &str,
    member: Option<(&str, i32)>,
) -> Result<(), ResponseError> {
    let Some((member_id, epoch)) = member else {
        return Ok(());
    };
    broker.groups.with_group(group_id, |group| {
        match group.and_then(|group| group.consumer.as_ref()) {
            Some(consumer) => consumer.check_commit(member_id, epoch),
            None => Ok(()),
        }
    })?
}

/// v8+: several groups in one request.
fn handle_batched(broker: &Broker, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group| {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name.to_string(), topic.partition_indexes))
                    .collect()
            });
            let answer = OffsetFetchResponseGroup::default().with_group_id(group.group_id.clone());
            let member = group
                .member_id
                .as_ref()
                .filter(|_| group.member_epoch >= 0)
                .map(|member_id| (member_id.as_str(), group.member_epoch));
            let checked = check_member(broker, group.group_id.as_str(), member);
            match checked.and_then(|()| fetch_group(broker, group.group_id.as_str(), wanted)) {
                Err(error) => answer.with_error_code(error.code()),
                Ok(topics) => answer.with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(index, value)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(index)
                                                .with_committed_offset(
                                                    value.as_ref().map_or(-1, |value| value.offset),
                                                )
                                                .with_committed_leader_epoch(
                                                    value
                                                        .as_ref()
                                                        .map_or(-1, |value| value.leader_epoch),
                                                )
                                                .with_metadata(Some(metadata_of(value.as_ref())))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

/// Answers OffsetFetch.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    if version >= 8 {
        return handle_batched(broker, request);
    }
    let requested: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.to_string(), topic.partition_indexes))
            .collect()
    });
    let (topics, error) = match fetch_group(broker, request.group_id.as_str(), requested.clone()) {
        Ok(topics) => (topics, None),
        Err(error) => {
            // v1 has no top-level error: every partition carries it.
            let topics = requested
                .unwrap_or_default()
                .into_iter()
                .map(|(topic, partitions)| {
                    (
                        topic,
                        partitions.into_iter().map(|index| (index, None)).collect(),
                    )
                })
                .collect();
            (topics, Some(error))
        }
    };
    let partition_error = if version < 2 {
        error.map_or(0, |error| error.code())
    } else {
        0
    };
    let topics = topics
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, value)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(
                                    value.as_ref().map_or(-1, |value| value.offset),
                                )
                                .with_committed_leader_epoch(
                                    value.as_ref().map_or(-1, |value| value.leader_epoch),
                                )
                                .with_metadata(Some(metadata_of(value.as_ref())))
                                .with_error_code(partition_error)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default()
        .with_topics(topics)
        .with_error_code(if version >= 2 {
            error.map_or(0, |error| error.code())
        } else {
            0
        })
}
