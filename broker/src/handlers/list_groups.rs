//! ListGroups: every group this coordinator holds, with its protocol type,
//! state (v4+, filterable) and type (v5+, KIP-848: `classic` or
//! `consumer`).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ListGroups,
    min: 0,
    max: 5,
};

const CLASSIC_TYPE: &str = "classic";
const CONSUMER_TYPE: &str = "consumer";

/// Answers ListGroups.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: &ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|state| state.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|kind| kind.to_lowercase())
        .collect();
    let mut groups = Vec::new();
    let visited = broker.groups.visit_groups(|group| {
        let (state, group_type, protocol_type) = match &group.consumer {
            Some(consumer) => (consumer.state_name(), CONSUMER_TYPE, Some("consumer")),
            None => (
                group.state.name(),
                CLASSIC_TYPE,
                group.protocol_type.as_deref(),
            ),
        };
        if !states.is_empty() && !states.contains(&state.to_lowercase()) {
            return;
        }
        if !types.is_empty() && !types.iter().any(|kind| kind == group_type) {
            return;
        }
        groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.id.clone())))
                .with_protocol_type(StrBytes::from_string(
                    protocol_type.unwrap_or_default().to_owned(),
                ))
                .with_group_state(if version >= 4 {
                    StrBytes::from_static_str(state)
                } else {
                    StrBytes::default()
                })
                .with_group_type(if version >= 5 {
                    StrBytes::from_static_str(group_type)
                } else {
                    StrBytes::default()
                }),
        );
    });
    if visited.is_none() {
        return ListGroupsResponse::default()
            .with_error_code(ResponseError::CoordinatorLoadInProgress.code());
    }
    groups.sort_by(|left, right| left.group_id.cmp(&right.group_id));
    ListGroupsResponse::default().with_groups(groups)
}
