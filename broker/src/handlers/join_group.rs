//! JoinGroup: a member enters (or re-enters) a group's rebalance and waits
//! until the join phase ends; the leader gets every member's metadata to
//! compute the assignment. KIP-394 (v4+): a new dynamic member first gets
//! `MEMBER_ID_REQUIRED` with its id. KIP-345: a static member
//! (`group.instance.id`) that restarts replaces its old id and, in a stable
//! group, keeps its assignment without a rebalance. The state machine is
//! [`crate::groups::group`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{ApiKey, JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::{Group, JoinOutcome, JoinRequest, JoinResult, PROTOCOLS_MAX};
use crate::groups::{store_group, wait_for};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::JoinGroup,
    min: 0,
    max: 9,
};

/// Beyond the rebalance timeout, how long a JoinGroup waits before it
/// gives up with `REBALANCE_IN_PROGRESS` (the join phase normally ends by
/// the rebalance timeout; this bounds a wait on a group that vanished).
const WAIT_MARGIN: Duration = Duration::from_secs(5);

fn failed(error: ResponseError, member_id: StrBytes, version: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_member_id(member_id)
        .with_protocol_name((version < 7).then(StrBytes::default))
}

fn answer(result: JoinResult, version: i16) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(
                    instance_id
                        .filter(|_| version >= 5)
                        .map(StrBytes::from_string),
                )
                .with_metadata(metadata)
        })
        .collect();
    let protocol_name = result.protocol_name.map(StrBytes::from_string);
    JoinGroupResponse::default()
        .with_generation_id(result.generation)
        .with_protocol_type(result.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(if version < 7 {
            Some(protocol_name.unwrap_or_default())
        } else {
            protocol_name
        })
        .with_leader(StrBytes::from_string(result.leader))
        .with_skip_assignment(result.skip_assignment && version >= 9)
        .with_member_id(StrBytes::from_string(result.member_id))
        .with_members(members)
}

/// Answers JoinGroup.
pub async fn handle(
    broker: &Rc<Broker>,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: Option<SocketAddr>,
) -> JoinGroupResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.clone();
    if group_id.is_empty() {
        return failed(ResponseError::InvalidGroupId, member_id, version);
    }
    let session_timeout = match coordinator.check_session_timeout(request.session_timeout_ms) {
        Ok(timeout) => timeout,
        Err(error) => return failed(error, member_id, version),
    };
    if request.protocols.len() > PROTOCOLS_MAX {
        return failed(ResponseError::InconsistentGroupProtocol, member_id, version);
    }
    let rebalance_timeout = if version == 0 || request.rebalance_timeout_ms <= 0 {
        session_timeout
    } else {
        Duration::from_millis(u64::try_from(request.rebalance_timeout_ms).unwrap_or(0))
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.as_ref().map(ToString::to_string),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect(),
        session_timeout,
        rebalance_timeout,
        client_id: client_id.to_owned(),
        client_host: peer.map_or_else(String::new, |peer| format!("/{}", peer.ip())),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let timings = coordinator.settings.timings;
    let outcome = coordinator.with_partition(&group_id, |partition| {
        if !join.member_id.is_empty() && !partition.groups.contains_key(&group_id) {
            return JoinOutcome::Done(Err((
                ResponseError::UnknownMemberId,
                "unknown group".to_owned(),
            )));
        }
        let group = partition
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(group_id.clone()));
        if let Some(consumer) = &group.consumer {
            if !consumer.is_empty() {
                return JoinOutcome::Done(Err((
                    ResponseError::InconsistentGroupProtocol,
                    "the group uses the consumer protocol".to_owned(),
                )));
            }
            // An empty consumer-protocol group turns classic (KIP-848).
            group.consumer = None;
        }
        group.join(&join, timings, Instant::now())
    });
    let waiting_id = match outcome {
        Err(error) | Ok(JoinOutcome::Done(Err((error, _)))) => {
            return failed(error, member_id, version)
        }
        Ok(JoinOutcome::Done(Ok(result))) => {
            if request.group_instance_id.is_some() {
                // A static member may have replaced its old id (KIP-345):
                // stored, so the new id survives a coordinator restart.
                if let Err(error) = store_group(broker, &group_id).await {
                    return failed(error, member_id, version);
                }
            }
            return answer(result, version);
        }
        Ok(JoinOutcome::MemberIdRequired(new_id)) => {
            return failed(
                ResponseError::MemberIdRequired,
                StrBytes::from_string(new_id),
                version,
            )
        }
        Ok(JoinOutcome::Wait(id)) => id,
    };
    let waited = wait_for(
        broker,
        &group_id,
        rebalance_timeout + WAIT_MARGIN,
        |group| {
            let Some(member) = group.and_then(|group| group.members.get_mut(&waiting_id)) else {
                return Some(Err(ResponseError::UnknownMemberId));
            };
            member.join_result.take().map(Ok)
        },
    )
    .await;
    let id = StrBytes::from_string(waiting_id.clone());
    match waited {
        Ok(Some(Ok(result))) => answer(result, version),
        Ok(Some(Err(error))) | Err(error) => failed(error, id, version),
        Ok(None) => failed(ResponseError::RebalanceInProgress, id, version),
    }
}
