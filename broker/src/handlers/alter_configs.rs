//! AlterConfigs (the legacy, non-incremental API): replaces a topic's whole
//! set of config overrides with the ones given, validated like CreateTopics,
//! persisted through the controller and applied to the live partitions.
//! A config given without a value is left out of the new set (it falls back
//! to the broker default), as Kafka does.
//!
//! Broker resources are refused with `INVALID_REQUEST`: fjord has no dynamic
//! broker configs; they are set in `server.properties` and need a restart.

use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::describe_configs::resource_type;
use super::ApiSupport;
use crate::controller::MetadataError;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::AlterConfigs,
    min: 0,
    max: 2,
};

/// Checks that a resource to alter is a topic, the only kind fjord alters.
///
/// # Errors
/// `INVALID_REQUEST` with a message for a broker, a broker logger or an
/// unknown resource type.
pub fn alterable_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<(), MetadataError> {
    let message = match resource_type {
        resource_type::TOPIC => return Ok(()),
        resource_type::BROKER if name.is_empty() || name == broker.config.node_id.to_string() => {
            "fjord has no dynamic broker configs: set them in server.properties and restart"
                .to_owned()
        }
        resource_type::BROKER => format!(
            "unexpected broker id, expected {} or empty string, but received {name:?}",
            broker.config.node_id
        ),
        resource_type::BROKER_LOGGER => {
            "fjord has no dynamically configurable broker loggers".to_owned()
        }
        other => format!("unsupported resource type {other}"),
    };
    Err(MetadataError {
        code: ResponseError::InvalidRequest.code(),
        message,
    })
}

/// Answers AlterConfigs.
pub async fn handle(broker: &Rc<Broker>, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let overrides: Vec<(String, String)> = resource
            .configs
            .iter()
            .filter_map(|config| {
                Some((config.name.to_string(), config.value.as_ref()?.to_string()))
            })
            .collect();
        let outcome = match alterable_resource(broker, resource.resource_type, &name) {
            Ok(()) => {
                topics::alter_topic_configs(broker, &name, request.validate_only, move |_| {
                    Ok(overrides.clone())
                })
                .await
            }
            Err(error) => Err(error),
        };
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name);
        responses.push(match outcome {
            Ok(()) => response,
            Err(error) => response
                .with_error_code(error.code)
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}
