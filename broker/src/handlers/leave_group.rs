//! LeaveGroup: members leave at once instead of waiting for their session
//! to expire, and the group rebalances. v3+ batches members (KIP-345: an
//! operator removes static members by `group.instance.id`); a static
//! member's id must match its instance id, or it is `FENCED_INSTANCE_ID`.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{ApiKey, LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::Group;
use crate::groups::store_group;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::LeaveGroup,
    min: 0,
    max: 5,
};

/// Removes one member; `UNKNOWN_MEMBER_ID` sentinel `""` with an instance
/// id means "whoever holds this instance id".
fn leave_one(
    group: &mut Group,
    member_id: &str,
    instance_id: Option<&str>,
) -> Result<(), ResponseError> {
    let member_id = match instance_id {
        Some(instance) => {
            let Some(registered) = group.static_member(instance).cloned() else {
                return Err(ResponseError::UnknownMemberId);
            };
            if !member_id.is_empty() && member_id != registered {
                return Err(ResponseError::FencedInstanceId);
            }
            registered
        }
        None => member_id.to_owned(),
    };
    if !group.members.contains_key(&member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    group.remove_member(&member_id);
    Ok(())
}

/// Answers LeaveGroup.
pub async fn handle(
    broker: &Rc<Broker>,
    request: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.to_string();
    let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|member| (member.member_id.clone(), member.group_instance_id.clone()))
            .collect()
    } else {
        vec![(request.member_id.clone(), None)]
    };
    let outcome = coordinator.with_group(&group_id, |group| {
        let Some(group) = group else {
            return Err(ResponseError::UnknownMemberId);
        };
        let results: Vec<Result<(), ResponseError>> = leaving
            .iter()
            .map(|(member_id, instance_id)| leave_one(group, member_id, instance_id.as_deref()))
            .collect();
        let emptied = results.iter().any(Result::is_ok)
            && group.rebalance_after_removal(coordinator.settings.timings, Instant::now());
        Ok((results, emptied))
    });
    let (results, top_error) = match outcome {
        Ok(Ok((results, emptied))) => {
            if emptied {
                if let Err(error) = store_group(broker, &group_id).await {
                    tracing::warn!(group = %group_id, ?error, "cannot store the emptied group");
                }
            }
            (results, None)
        }
        Ok(Err(error)) | Err(error) => (Vec::new(), Some(error)),
    };
    if version < 3 {
        let error = top_error.or_else(|| results.first().and_then(|result| result.err()));
        return LeaveGroupResponse::default()
            .with_error_code(error.map_or(0, |error| error.code()));
    }
    let members = leaving
        .into_iter()
        .zip(
            results
                .iter()
                .map(|result| result.err())
                .chain(std::iter::repeat(top_error)),
        )
        .map(|((member_id, instance_id), error)| {
            MemberResponse::default()
                .with_member_id(member_id)
                .with_group_instance_id(instance_id)
                .with_error_code(error.map_or(0, |error| error.code()))
        })
        .collect();
    LeaveGroupResponse::default()
        .with_error_code(top_error.map_or(0, |error| error.code()))
        .with_members(if top_error.is_some() {
            Vec::new()
        } else {
            members
        })
}
