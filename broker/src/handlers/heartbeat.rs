//! Heartbeat: keeps a member's session alive and tells it when a rebalance
//! started (`REBALANCE_IN_PROGRESS`), as Kafka's coordinator does.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::{ApiKey, HeartbeatRequest, HeartbeatResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::group::{Group, GroupState};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Heartbeat,
    min: 0,
    max: 4,
};

fn beat(group: Option<&mut Group>, request: &HeartbeatRequest) -> Result<(), ResponseError> {
    let Some(group) = group else {
        return Err(ResponseError::UnknownMemberId);
    };
    let member_id = request.member_id.as_str();
    group.check_fenced(member_id, request.group_instance_id.as_deref())?;
    let state = group.state;
    let generation = group.generation;
    let Some(member) = group.members.get_mut(member_id) else {
        return Err(ResponseError::UnknownMemberId);
    };
    match state {
        GroupState::Empty => Err(ResponseError::UnknownMemberId),
        GroupState::PreparingRebalance => {
            member.last_heartbeat = Instant::now();
            Err(ResponseError::RebalanceInProgress)
        }
        GroupState::CompletingRebalance | GroupState::Stable
            if request.generation_id != generation =>
        {
            Err(ResponseError::IllegalGeneration)
        }
        GroupState::CompletingRebalance | GroupState::Stable => {
            member.last_heartbeat = Instant::now();
            Ok(())
        }
    }
}

/// Answers Heartbeat.
#[must_use]
pub fn handle(broker: &Rc<Broker>, request: &HeartbeatRequest) -> HeartbeatResponse {
    let outcome = broker
        .groups
        .with_group(request.group_id.as_str(), |group| beat(group, request))
        .and_then(|outcome| outcome);
    HeartbeatResponse::default().with_error_code(outcome.err().map_or(0, |error| error.code()))
}
