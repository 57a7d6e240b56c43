//! IncrementalAlterConfigs: edits a topic's config overrides one key at a
//! time. `SET` overrides a key, `DELETE` removes its override (it falls back
//! to the broker default), `APPEND` and `SUBTRACT` add or remove items of a
//! list config (`cleanup.policy`, the only one) and are refused with
//! `INVALID_CONFIG` for any other. The result is validated like CreateTopics,
//! persisted through the controller and applied to the live partitions.
//!
//! Broker resources are refused with `INVALID_REQUEST`, as in AlterConfigs.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::alter_configs::alterable_resource;
use super::describe_configs::{config_type, topic_config_spec, topic_default};
use super::ApiSupport;
use crate::controller::MetadataError;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::IncrementalAlterConfigs,
    min: 0,
    max: 1,
};

/// Kafka's `AlterConfigOp.OpType` codes.
pub mod operation {
    /// Override the key with the value.
    pub const SET: i8 = 0;
    /// Remove the key's override.
    pub const DELETE: i8 = 1;
    /// Add the value's items to a list config.
    pub const APPEND: i8 = 2;
    /// Remove the value's items from a list config.
    pub const SUBTRACT: i8 = 3;
}

/// One requested change: key, operation, value.
pub type Operation = (String, i8, Option<String>);

fn error(code: ResponseError, message: String) -> MetadataError {
    MetadataError {
        code: code.code(),
        message,
    }
}

/// The override set after `operations` on `current`; `default_of` gives a
/// key's value when it is not overridden (what `APPEND` and `SUBTRACT`
/// start from). Values are validated afterwards, by the controller.
///
/// # Errors
/// `INVALID_REQUEST` for a key given twice, an unknown operation or a
/// missing value; `INVALID_CONFIG` for a key fjord does not implement or
/// `APPEND`/`SUBTRACT` on a config that is not a list.
pub fn apply_operations(
    current: &[(String, String)],
    operations: &[Operation],
    default_of: impl Fn(&str) -> String,
) -> Result<Vec<(String, String)>, MetadataError> {
    let mut overrides = current.to_vec();
    for (index, (key, op, value)) in operations.iter().enumerate() {
        if operations[..index]
            .iter()
            .any(|(earlier, _, _)| earlier == key)
        {
            return Err(error(
                ResponseError::InvalidRequest,
                format!("duplicate config key {key}"),
            ));
        }
        let Some(spec) = topic_config_spec(key) else {
            return Err(error(
                ResponseError::InvalidConfig,
                format!("unknown topic config {key}"),
            ));
        };
        let existing = overrides.iter().position(|(name, _)| name == key);
        if *op == operation::DELETE {
            if let Some(existing) = existing {
                overrides.remove(existing);
            }
            continue;
        }
        let Some(value) = value else {
            return Err(error(
                ResponseError::InvalidRequest,
                format!("a value is required to alter {key}"),
            ));
        };
        let new_value = match *op {
            operation::SET => value.clone(),
            operation::APPEND | operation::SUBTRACT if spec.config_type == config_type::LIST => {
                let base = existing.map_or_else(|| default_of(key), |at| overrides[at].1.clone());
                edit_list(&base, value, *op == operation::APPEND)
            }
            operation::APPEND | operation::SUBTRACT => {
                return Err(error(
                    ResponseError::InvalidConfig,
                    format!("{key} is not a list config: APPEND and SUBTRACT do not apply"),
                ))
            }
            other => {
                return Err(error(
                    ResponseError::InvalidRequest,
                    format!("unknown config operation {other}"),
                ))
            }
        };
        match existing {
            Some(at) => overrides[at].1 = new_value,
            None => overrides.push((key.clone(), new_value)),
        }
    }
    Ok(overrides)
}

/// `base` (comma-separated) with `items` appended (those not in it yet) or
/// subtracted.
fn edit_list(base: &str, items: &str, append: bool) -> String {
    let mut list: Vec<&str> = base
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    for item in items
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        if append && !list.contains(&item) {
            list.push(item);
        } else if !append {
            list.retain(|kept| *kept != item);
        }
    }
    list.join(",")
}

/// Answers IncrementalAlterConfigs.
pub async fn handle(
    broker: &Rc<Broker>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let operations: Vec<Operation> = resource
            .configs
            .iter()
            .map(|config| {
                (
                    config.name.to_string(),
                    config.config_operation,
                    config.value.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let outcome = match alterable_resource(broker, resource.resource_type, &name) {
            Ok(()) => {
                let config = Arc::clone(&broker.config);
                topics::alter_topic_configs(broker, &name, request.validate_only, move |current| {
                    apply_operations(current, &operations, |key| topic_default(key, &config))
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn op(key: &str, op: i8, value: Option<&str>) -> Operation {
        (key.to_owned(), op, value.map(str::to_owned))
    }

    fn default_of(key: &str) -> String {
        if key == "cleanup.policy" {
            "delete".to_owned()
        } else {
            "0".to_owned()
        }
    }

    #[test]
    fn set_and_delete_edit_only_the_named_keys() {
        let current = pairs(&[("retention.ms", "1"), ("segment.ms", "2")]);
        let next = apply_operations(
            &current,
            &[
                op("retention.ms", operation::DELETE, None),
                op("segment.ms", operation::SET, Some("3")),
                op("flush.ms", operation::SET, Some("4")),
                op("retention.bytes", operation::DELETE, None),
            ],
            default_of,
        )
        .unwrap();
        assert_eq!(next, pairs(&[("segment.ms", "3"), ("flush.ms", "4")]));
    }

    #[test]
    fn append_and_subtract_edit_list_configs_from_their_default() {
        let appended = apply_operations(
            &[],
            &[op("cleanup.policy", operation::APPEND, Some("compact"))],
            default_of,
        )
        .unwrap();
        assert_eq!(appended, pairs(&[("cleanup.policy", "delete,compact")]));
        let subtracted = apply_operations(
            &appended,
            &[op("cleanup.policy", operation::SUBTRACT, Some("delete"))],
            default_of,
        )
        .unwrap();
        assert_eq!(subtracted, pairs(&[("cleanup.policy", "compact")]));
    }

    #[test]
    fn misuse_is_refused_with_kafkas_codes() {
        let code = |operations: &[Operation]| {
            apply_operations(&[], operations, default_of)
                .unwrap_err()
                .code
        };
        let invalid_config = ResponseError::InvalidConfig.code();
        let invalid_request = ResponseError::InvalidRequest.code();
        assert_eq!(
            code(&[op("retention.ms", operation::APPEND, Some("1"))]),
            invalid_config
        );
        assert_eq!(
            code(&[op("no.such.key", operation::SET, Some("1"))]),
            invalid_config
        );
        assert_eq!(code(&[op("retention.ms", 9, Some("1"))]), invalid_request);
        assert_eq!(
            code(&[op("retention.ms", operation::SET, None)]),
            invalid_request
        );
        let twice = [
            op("retention.ms", operation::SET, Some("1")),
            op("retention.ms", operation::DELETE, None),
        ];
        assert_eq!(code(&twice), invalid_request);
    }
}
