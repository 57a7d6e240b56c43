//! InitProducerId: hands idempotent producers a fresh producer id, epoch 0.
//! Ids come from blocks persisted by the controller, so a restart never
//! hands out an id whose old sequences are still in some partition's state.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::controller::Controller;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::InitProducerId,
    min: 0,
    max: 4,
};

/// Answers InitProducerId.
pub async fn handle(
    broker: &Rc<Broker>,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // Transactions come with the transaction coordinator.
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    match topics::on_controller(broker, Controller::allocate_producer_id).await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => response.with_error_code(error.code),
    }
}
