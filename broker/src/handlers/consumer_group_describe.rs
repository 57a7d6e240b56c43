//! ConsumerGroupDescribe (KIP-848): epochs, assignor and each member's
//! current and target assignment of consumer-protocol groups. A classic or
//! unknown group is `GROUP_ID_NOT_FOUND`, as in Kafka, which admin clients
//! take as the cue to ask DescribeGroups instead.

use std::rc::Rc;

use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::consumer::{self, ConsumerGroup};
use crate::metadata::MetadataImage;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ConsumerGroupDescribe,
    min: 0,
    max: 1,
};

/// KIP-1099's member type of a consumer-protocol member.
const CONSUMER_MEMBER_TYPE: i8 = 1;

fn assignment(image: &MetadataImage, assignment: &consumer::Assignment) -> Assignment {
    Assignment::default().with_topic_partitions(
        assignment
            .iter()
            .map(|(topic_id, partitions)| {
                let name = image
                    .topic_by_id(*topic_id)
                    .map(|topic| topic.name.clone())
                    .unwrap_or_default();
                TopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions.iter().copied().collect())
            })
            .collect(),
    )
}

fn describe(image: &MetadataImage, group: &ConsumerGroup, version: i16) -> DescribedGroup {
    let members = group
        .members
        .iter()
        .map(|(id, member)| {
            Member::default()
                .with_member_id(StrBytes::from_string(id.clone()))
                .with_instance_id(member.instance_id.clone().map(StrBytes::from_string))
                .with_rack_id(member.rack_id.clone().map(StrBytes::from_string))
                .with_member_epoch(member.epoch)
                .with_client_id(StrBytes::from_string(member.client_id.clone()))
                .with_client_host(StrBytes::from_string(member.client_host.clone()))
                .with_subscribed_topic_names(
                    member
                        .subscribed
                        .iter()
                        .map(|name| TopicName(StrBytes::from_string(name.clone())))
                        .collect(),
                )
                .with_assignment(assignment(image, &member.assigned))
                .with_target_assignment(assignment(
                    image,
                    &group.target.get(id).cloned().unwrap_or_default(),
                ))
                .with_member_type(if version >= 1 {
                    CONSUMER_MEMBER_TYPE
                } else {
                    -1
                })
        })
        .collect();
    DescribedGroup::default()
        .with_group_state(StrBytes::from_static_str(group.state_name()))
        .with_group_epoch(group.epoch)
        .with_assignment_epoch(group.assignment_epoch)
        .with_assignor_name(StrBytes::from_string(group.assignor.clone()))
        .with_members(members)
}

/// Answers ConsumerGroupDescribe.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: ConsumerGroupDescribeRequest,
    version: i16,
) -> ConsumerGroupDescribeResponse {
    let image = broker.controller.image();
    let groups = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            let described = broker.groups.with_group(group_id.as_str(), |group| {
                group
                    .and_then(|group| group.consumer.as_ref())
                    .map(|consumer| describe(&image, consumer, version))
            });
            let described = match described {
                Ok(Some(described)) => described,
                Ok(None) => DescribedGroup::default()
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Group {} not found.",
                        group_id.as_str()
                    )))),
                Err(error) => DescribedGroup::default().with_error_code(error.code()),
            };
            described
                .with_group_id(group_id)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
