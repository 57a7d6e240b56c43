//! DescribeCluster: the cluster id and its brokers (the registered ones
//! that are not fenced, and from v2 the fenced ones too if asked, flagged:
//! KIP-1073). A single node is the only broker and the controller. Only the broker endpoint type is served
//! (as Kafka's brokers do); asking it for controller endpoints is
//! `UNSUPPORTED_ENDPOINT_TYPE`. Asked for them, the cluster's authorized
//! operations are every cluster operation ([`crate::authorized_operations`]).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::advertised::advertised_brokers;
use crate::authorized_operations::{authorized_operations, Resource};
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeCluster,
    min: 0,
    max: 2,
};

/// `endpoint_type` for broker listeners.
const BROKER_ENDPOINTS: i8 = 1;

/// Answers DescribeCluster.
#[must_use]
pub fn handle(broker: &Broker, request: &DescribeClusterRequest) -> DescribeClusterResponse {
    let controller = BrokerId(broker.controller.controller_for_clients().0);
    let response = DescribeClusterResponse::default()
        // Set at start from meta.properties (see `BrokerConfig::cluster_id`).
        .with_cluster_id(StrBytes::from_string(
            broker
                .config
                .cluster_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
        ))
        .with_controller_id(controller)
        // A v0 request decodes as asking for brokers, the only type v0 has.
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_authorized_operations(authorized_operations(
            Resource::Cluster,
            request.include_cluster_authorized_operations,
        ));
    if request.endpoint_type != BROKER_ENDPOINTS {
        return response
            .with_controller_id(BrokerId(-1))
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "fjord serves only the broker endpoint type",
            )));
    }
    let brokers = advertised_brokers(&broker.controller.image(), request.include_fenced_brokers)
        .into_iter()
        .map(|advertised| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(advertised.id.0))
                .with_host(StrBytes::from_string(advertised.host))
                .with_port(i32::from(advertised.port))
                .with_rack(advertised.rack.map(StrBytes::from_string))
                .with_is_fenced(advertised.fenced)
        })
        .collect();
    response.with_brokers(brokers)
}
