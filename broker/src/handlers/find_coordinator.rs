//! FindCoordinator: this node coordinates every group (single node), once
//! `__consumer_offsets` exists. Batched keys (v4+) are answered one by one.
//! Transactions have no coordinator yet: key type 1 (a transactional id)
//! gets `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`, as InitProducerId does,
//! which clients treat as fatal at once. `COORDINATOR_NOT_AVAILABLE` would
//! be retried: `init_transactions()` would block for its whole timeout
//! before failing.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::server::Broker;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::FindCoordinator,
    min: 0,
    max: 6,
};

const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

fn find(broker: &Broker, key: StrBytes, key_type: i8) -> Coordinator {
    let answer = Coordinator::default()
        .with_key(key)
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    let error = match key_type {
        GROUP_KEY
            if broker
                .controller
                .image()
                .topics
                .contains_key(CONSUMER_OFFSETS_TOPIC) =>
        {
            return answer
                .with_node_id(BrokerId(broker.config.node_id))
                .with_host(StrBytes::from_string(broker.config.advertised_host.clone()))
                .with_port(i32::from(broker.config.advertised_port));
        }
        GROUP_KEY => ResponseError::CoordinatorNotAvailable,
        TRANSACTION_KEY => ResponseError::TransactionalIdAuthorizationFailed,
        _ => ResponseError::InvalidRequest,
    };
    answer
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_static_str(
            if key_type == TRANSACTION_KEY {
                "transactions are not supported yet"
            } else if key_type == GROUP_KEY {
                "the group coordinator is starting"
            } else {
                "unknown key type"
            },
        )))
}

/// Answers FindCoordinator.
#[must_use]
pub fn handle(
    broker: &Broker,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| find(broker, key, request.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let found = find(broker, request.key, request.key_type);
    FindCoordinatorResponse::default()
        .with_error_code(found.error_code)
        .with_error_message(found.error_message.filter(|_| version >= 1))
        .with_node_id(found.node_id)
        .with_host(found.host)
        .with_port(found.port)
}
