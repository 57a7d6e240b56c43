//! SyncGroup: the leader hands in the assignment computed from JoinGroup;
//! every member gets its own. The assignment is stored in
//! `__consumer_offsets` (an acks=all write) before anyone gets it, so a
//! coordinator restart or a new coordinator brings the group back Stable
//! in the same generation. Followers wait until the leader's SyncGroup
//! lands or a new rebalance starts; a coordinator that loses the group's
//! partition meanwhile answers them `NOT_COORDINATOR`.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::{Group, GroupState};
use crate::groups::records::RecordKey;
use crate::groups::{append, wait_for};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::SyncGroup,
    min: 0,
    max: 5,
};

/// What the first look at the group decided.
enum Step {
    Answer(Result<Bytes, ResponseError>),
    /// The leader's assignment, to store before it applies.
    Store(Vec<u8>, HashMap<String, Bytes>),
    /// A follower waits for the leader.
    Wait,
}

fn check(group: Option<&mut Group>, request: &SyncGroupRequest) -> Result<(), ResponseError> {
    let member_id = request.member_id.as_str();
    let Some(group) = group else {
        return Err(ResponseError::UnknownMemberId);
    };
    group.check_fenced(member_id, request.group_instance_id.as_deref())?;
    if !group.members.contains_key(member_id) {
        return Err(ResponseError::UnknownMemberId);
    }
    if request.generation_id != group.generation {
        return Err(ResponseError::IllegalGeneration);
    }
    let mismatch = |asked: &Option<StrBytes>, actual: &Option<String>| {
        asked
            .as_ref()
            .is_some_and(|asked| actual.as_deref() != Some(asked.as_str()))
    };
    if mismatch(&request.protocol_type, &group.protocol_type)
        || mismatch(&request.protocol_name, &group.protocol_name)
    {
        return Err(ResponseError::InconsistentGroupProtocol);
    }
    Ok(())
}

fn first_step(group: Option<&mut Group>, request: &SyncGroupRequest) -> Step {
    let mut group = group;
    if let Err(error) = check(group.as_deref_mut(), request) {
        return Step::Answer(Err(error));
    }
    let Some(group) = group else {
        return Step::Answer(Err(ResponseError::UnknownMemberId));
    };
    let member_id = request.member_id.as_str();
    if let Some(member) = group.members.get_mut(member_id) {
        member.last_heartbeat = std::time::Instant::now();
    }
    match group.state {
        GroupState::Empty => Step::Answer(Err(ResponseError::UnknownMemberId)),
        GroupState::PreparingRebalance => Step::Answer(Err(ResponseError::RebalanceInProgress)),
        GroupState::Stable => Step::Answer(Ok(group.members[member_id].assignment.clone())),
        GroupState::CompletingRebalance if group.leader.as_deref() == Some(member_id) => {
            let assignments: HashMap<String, Bytes> = request
                .assignments
                .iter()
                .filter(|assignment| group.members.contains_key(assignment.member_id.as_str()))
                .map(|assignment| {
                    (
                        assignment.member_id.to_string(),
                        assignment.assignment.clone(),
                    )
                })
                .collect();
            let mut stored = group.to_stored();
            for member in &mut stored.members {
                member.assignment = assignments
                    .get(&member.member_id)
                    .cloned()
                    .unwrap_or_default();
            }
            Step::Store(stored.encode(), assignments)
        }
        GroupState::CompletingRebalance => Step::Wait,
    }
}

fn failed(error: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(error.code())
}

/// Answers SyncGroup.
pub async fn handle(broker: &Rc<Broker>, request: SyncGroupRequest) -> SyncGroupResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let generation = request.generation_id;
    let decided = coordinator.with_partition_for_write(&group_id, |partition| {
        first_step(partition.groups.get_mut(&group_id), &request)
    });
    let (step, epoch) = match decided {
        Ok(decided) => decided,
        Err(error) => return failed(error),
    };
    let outcome = match step {
        Step::Answer(outcome) => outcome,
        Step::Store(value, assignments) => {
            let key = RecordKey::Group(group_id.clone()).encode();
            let stored = append(broker, epoch, &[(key, Some(value))]).await;
            coordinator
                .with_partition_in(epoch, |partition| {
                    let group = partition.groups.get_mut(&group_id).filter(|group| {
                        group.generation == generation
                            && group.state == GroupState::CompletingRebalance
                    });
                    let Some(group) = group else {
                        return Err(ResponseError::RebalanceInProgress);
                    };
                    if let Err(error) = stored {
                        group.prepare_rebalance(
                            coordinator.settings.timings,
                            std::time::Instant::now(),
                        );
                        return Err(error);
                    }
                    group.complete_sync(&assignments);
                    Ok(group
                        .members
                        .get(&member_id)
                        .map(|member| member.assignment.clone())
                        .unwrap_or_default())
                })
                .and_then(|outcome| outcome)
        }
        Step::Wait => {
            let timeout = coordinator
                .with_group(&group_id, |group| {
                    group
                        .and_then(|group| group.members.get(&member_id))
                        .map(|member| member.rebalance_timeout.max(member.session_timeout))
                })
                .ok()
                .flatten()
                .unwrap_or_default();
            let waited = wait_for(broker, &group_id, timeout, |group| {
                let Some(group) = group else {
                    return Some(Err(ResponseError::UnknownMemberId));
                };
                let Some(member) = group.members.get(&member_id) else {
                    return Some(Err(ResponseError::UnknownMemberId));
                };
                if group.generation != generation {
                    return Some(Err(ResponseError::RebalanceInProgress));
                }
                match group.state {
                    GroupState::Stable => Some(Ok(member.assignment.clone())),
                    GroupState::CompletingRebalance => None,
                    GroupState::PreparingRebalance | GroupState::Empty => {
                        Some(Err(ResponseError::RebalanceInProgress))
                    }
                }
            })
            .await;
            match waited {
                Ok(Some(outcome)) => outcome,
                Ok(None) => Err(ResponseError::RebalanceInProgress),
                Err(error) => Err(error),
            }
        }
    };
    match outcome {
        Ok(assignment) => {
            let (protocol_type, protocol_name) = coordinator
                .with_group(&group_id, |group| {
                    group.map(|group| (group.protocol_type.clone(), group.protocol_name.clone()))
                })
                .ok()
                .flatten()
                .unwrap_or_default();
            SyncGroupResponse::default()
                .with_protocol_type(protocol_type.map(StrBytes::from_string))
                .with_protocol_name(protocol_name.map(StrBytes::from_string))
                .with_assignment(assignment)
        }
        Err(error) => failed(error),
    }
}
