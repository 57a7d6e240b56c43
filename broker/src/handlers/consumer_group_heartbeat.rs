//! ConsumerGroupHeartbeat (KIP-848): joining, heartbeating, subscribing
//! and leaving in one request; the coordinator answers with the member's
//! epoch and, when it changed, its assignment. The state machine and the
//! server-side assignors are [`crate::groups::consumer`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::consumer::{ConsumerGroup, Heartbeat};
use crate::groups::group::Group;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ConsumerGroupHeartbeat,
    min: 0,
    max: 1,
};

fn failed(error: ResponseError, message: String) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

/// Answers ConsumerGroupHeartbeat.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: &ConsumerGroupHeartbeatRequest,
    client_id: &str,
    peer: Option<SocketAddr>,
) -> ConsumerGroupHeartbeatResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.to_string();
    if group_id.is_empty() {
        return failed(ResponseError::InvalidGroupId, "empty group id".to_owned());
    }
    if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|regex| !regex.is_empty())
    {
        return failed(
            ResponseError::InvalidRegularExpression,
            "regular expression subscriptions are not supported yet".to_owned(),
        );
    }
    let heartbeat = Heartbeat {
        member_id: request.member_id.to_string(),
        epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(ToString::to_string),
        rack_id: request.rack_id.as_ref().map(ToString::to_string),
        rebalance_timeout: Duration::from_millis(
            u64::try_from(request.rebalance_timeout_ms).unwrap_or(0),
        ),
        subscribed: request.subscribed_topic_names.as_ref().map(|names| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<BTreeSet<_>>()
        }),
        server_assignor: request.server_assignor.as_ref().map(ToString::to_string),
        owned: request.topic_partitions.as_ref().map(|topics| {
            topics
                .iter()
                .map(|topic| (topic.topic_id, topic.partitions.iter().copied().collect()))
                .collect()
        }),
        client_id: client_id.to_owned(),
        client_host: peer.map_or_else(String::new, |peer| format!("/{}", peer.ip())),
    };
    let image = broker.controller.image();
    let topics = |name: &str| {
        image
            .topics
            .get(name)
            .map(|topic| (topic.uuid(), topic.partition_count()))
    };
    let assignors = &coordinator.settings.consumer_assignors;
    let answer = coordinator.with_partition(&group_id, |partition| {
        if heartbeat.epoch < 0 && !partition.groups.contains_key(&group_id) {
            return Err((ResponseError::UnknownMemberId, "unknown group".to_owned()));
        }
        let group = partition
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(group_id.clone()));
        if group.consumer.is_none() {
            if !group.is_empty() {
                return Err((
                    ResponseError::GroupIdNotFound,
                    format!("group {group_id} is not a consumer group"),
                ));
            }
            group.consumer = Some(ConsumerGroup::default());
        }
        let consumer = group.consumer.get_or_insert_with(ConsumerGroup::default);
        consumer.heartbeat(heartbeat, &topics, assignors, Instant::now())
    });
    let answer = match answer {
        Err(error) => return failed(error, error.to_string()),
        Ok(Err((error, message))) => return failed(error, message),
        Ok(Ok(answer)) => answer,
    };
    let assignment = answer.assignment.map(|assignment| {
        Assignment::default().with_topic_partitions(
            assignment
                .into_iter()
                .map(|(topic_id, partitions)| {
                    TopicPartitions::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions.into_iter().collect())
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(StrBytes::from_string(answer.member_id)))
        .with_member_epoch(answer.epoch)
        .with_heartbeat_interval_ms(
            i32::try_from(coordinator.settings.consumer_heartbeat_interval.as_millis())
                .unwrap_or(i32::MAX),
        )
        .with_assignment(assignment)
}
