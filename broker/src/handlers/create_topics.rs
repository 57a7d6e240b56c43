//! CreateTopics: validates names, partition counts, replication factors and
//! configs (Kafka's names), honours `validate_only`, and creates each topic's
//! partitions on their shards.
//!
//! A manual replica assignment (`assignments`, which Kafka's admin clients
//! send with `num_partitions` and `replication_factor` both -1) gives the
//! partition count and the replication factor. It is checked as Kafka's
//! controller does: partitions numbered 0..n-1, each once, each on a
//! non-empty list of distinct live brokers of one common length, else
//! `INVALID_REPLICA_ASSIGNMENT`; an assignment next to a partition count or
//! replication factor other than -1 is `INVALID_REQUEST`.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::ApiSupport;
use crate::controller::{MetadataError, PARTITIONS_MAX};
use crate::metadata::records::BrokerId as MetadataBrokerId;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::CreateTopics,
    min: 2,
    max: 7,
};

/// The partition count, replication factor and manual assignment (one
/// replica list per partition, in partition order) `topic` asks for: its
/// manual assignment's if it has one (see the module documentation), else
/// its own, -1 standing for the broker's defaults, and no assignment.
fn layout(broker: &Broker, topic: &CreatableTopic) -> Result<Layout, MetadataError> {
    let Some(first) = topic.assignments.first() else {
        let partitions = if topic.num_partitions == -1 {
            broker.config.num_partitions
        } else {
            topic.num_partitions
        };
        let replication_factor = if topic.replication_factor == -1 {
            broker.config.default_replication_factor
        } else {
            topic.replication_factor
        };
        return Ok(Layout {
            partitions,
            replication_factor,
            assignment: None,
        });
    };
    let invalid_request = |field: &str| MetadataError {
        code: ResponseError::InvalidRequest.code(),
        message: format!(
            "a manual partition assignment was specified, but {field} was not set to -1"
        ),
    };
    if topic.replication_factor != -1 {
        return Err(invalid_request("the replication factor"));
    }
    if topic.num_partitions != -1 {
        return Err(invalid_request("the number of partitions"));
    }
    let invalid_assignment = |message: String| MetadataError {
        code: ResponseError::InvalidReplicaAssignment.code(),
        message,
    };
    let count = topic.assignments.len();
    if count > PARTITIONS_MAX as usize {
        return Err(MetadataError {
            code: ResponseError::InvalidPartitions.code(),
            message: format!("number of partitions must be between 1 and {PARTITIONS_MAX}"),
        });
    }
    let replication_factor = first.broker_ids.len();
    let mut assigned = vec![false; count];
    for assignment in &topic.assignments {
        let index = assignment.partition_index;
        let slot = usize::try_from(index)
            .ok()
            .and_then(|slot| assigned.get_mut(slot))
            .ok_or_else(|| {
                invalid_assignment(format!(
                    "partition {index} is outside 0..{count}: partitions should be a \
                     consecutive 0-based integer sequence"
                ))
            })?;
        if std::mem::replace(slot, true) {
            return Err(invalid_assignment(format!(
                "found multiple manual partition assignments for partition {index}"
            )));
        }
        topics::check_replica_assignment(
            broker,
            index,
            &assignment.broker_ids,
            Some(replication_factor),
        )?;
    }
    // n distinct indexes in 0..n: every partition is assigned exactly once,
    // to at most as many replicas as there are live brokers.
    let mut assignment = vec![Vec::new(); count];
    for assigned in &topic.assignments {
        if let Some(slot) = usize::try_from(assigned.partition_index)
            .ok()
            .and_then(|index| assignment.get_mut(index))
        {
            *slot = assigned
                .broker_ids
                .iter()
                .map(|id| MetadataBrokerId(id.0))
                .collect();
        }
    }
    Ok(Layout {
        partitions: count as i32,
        replication_factor: i16::try_from(replication_factor).unwrap_or(i16::MAX),
        assignment: Some(assignment),
    })
}

/// What [`layout`] found.
struct Layout {
    partitions: i32,
    replication_factor: i16,
    assignment: Option<Vec<Vec<MetadataBrokerId>>>,
}

/// Creates `topic` (or only validates it): its partition count,
/// replication factor and new id (none when only validated).
async fn create_one(
    broker: &Rc<Broker>,
    topic: &CreatableTopic,
    validate_only: bool,
) -> Result<(i32, i16, Option<Uuid>), MetadataError> {
    let name = topic.name.0.as_str();
    let Layout {
        partitions,
        replication_factor,
        assignment,
    } = layout(broker, topic)?;
    let configs: Vec<(String, String)> = topic
        .configs
        .iter()
        .filter_map(|config| Some((config.name.to_string(), config.value.as_ref()?.to_string())))
        .collect();
    let id = if validate_only {
        broker
            .controller
            .validate_topic(name, partitions, replication_factor, &configs)?;
        None
    } else {
        let created = topics::create_topic(
            broker,
            name,
            partitions,
            replication_factor,
            assignment,
            configs,
        )
        .await?;
        Some(created.uuid())
    };
    Ok((partitions, replication_factor, id))
}

/// Answers CreateTopics.
pub async fn handle(broker: &Rc<Broker>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let outcome = create_one(broker, &topic, request.validate_only).await;
        let result = CreatableTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok((partitions, replication_factor, id)) => result
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_topic_id(id.unwrap_or_default()),
            Err(error) => result
                .with_error_code(error.code)
                .with_error_message(Some(StrBytes::from_string(error.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}
