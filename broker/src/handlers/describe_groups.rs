//! DescribeGroups: state, protocol and members of each group; members'
//! metadata and assignments only when the group is Stable (they are
//! incomplete during a rebalance), as Kafka reports them. An unknown group
//! is reported `Dead` (v0-5) or `GROUP_ID_NOT_FOUND` (v6+).

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{ApiKey, DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::{Group, GroupState};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeGroups,
    min: 0,
    max: 6,
};

fn describe(group: &Group) -> DescribedGroup {
    if let Some(consumer) = &group.consumer {
        // Consumer-protocol groups are described by ConsumerGroupDescribe.
        return DescribedGroup::default()
            .with_group_state(StrBytes::from_static_str(consumer.state_name()))
            .with_protocol_type(StrBytes::from_static_str("consumer"));
    }
    let stable = group.state == GroupState::Stable;
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = group
        .members
        .iter()
        .map(|(id, member)| {
            let described = DescribedGroupMember::default()
                .with_member_id(StrBytes::from_string(id.clone()))
                .with_group_instance_id(member.instance_id.clone().map(StrBytes::from_string))
                .with_client_id(StrBytes::from_string(member.client_id.clone()))
                .with_client_host(StrBytes::from_string(member.client_host.clone()));
            if stable {
                described
                    .with_member_metadata(member.metadata_for(&protocol))
                    .with_member_assignment(member.assignment.clone())
            } else {
                described
            }
        })
        .collect();
    DescribedGroup::default()
        .with_group_state(StrBytes::from_static_str(group.state.name()))
        .with_protocol_type(StrBytes::from_string(
            group.protocol_type.clone().unwrap_or_default(),
        ))
        .with_protocol_data(StrBytes::from_string(if stable {
            protocol
        } else {
            String::new()
        }))
        .with_members(members)
}

/// Answers DescribeGroups.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let described = broker.groups.with_group(group_id.as_str(), |group| {
                group.map(|group| describe(group))
            });
            let described = match described {
                Ok(Some(described)) => described,
                Ok(None) if version >= 6 => DescribedGroup::default()
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "group {} not found",
                        group_id.as_str()
                    ))))
                    .with_group_state(StrBytes::from_static_str("Dead")),
                Ok(None) => {
                    DescribedGroup::default().with_group_state(StrBytes::from_static_str("Dead"))
                }
                Err(error) => DescribedGroup::default().with_error_code(error.code()),
            };
            described
                .with_group_id(group_id)
                .with_authorized_operations(i32::MIN)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
