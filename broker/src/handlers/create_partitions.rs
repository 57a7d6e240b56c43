//! CreatePartitions: grows a topic's partition count (never shrinks it),
//! honours `validate_only`, and creates the new partitions on their shards.
//! A manual assignment needs one replica list per new partition, each
//! checked as CreateTopics checks them (distinct live brokers, as many as
//! the topic's replication factor), else `INVALID_REPLICA_ASSIGNMENT`; a
//! count that does not grow the topic is `INVALID_PARTITIONS` first, as in
//! Kafka. Internal topics keep their partition count (`__consumer_offsets`
//! places groups by it).

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::controller::MetadataError;
use crate::metadata::records::BrokerId as MetadataBrokerId;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::CreatePartitions,
    min: 0,
    max: 3,
};

fn error(code: ResponseError, message: String) -> MetadataError {
    MetadataError {
        code: code.code(),
        message,
    }
}

/// Checks a request's manual assignment, if any, of the partitions that
/// grow `topic` from `current` (a count that does not grow it is the
/// controller's to refuse).
fn check_assignments(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    current: i32,
) -> Result<(), MetadataError> {
    let Some(assignments) = &topic.assignments else {
        return Ok(());
    };
    let added = i64::from(topic.count) - i64::from(current);
    if added <= 0 {
        return Ok(());
    }
    if assignments.len() as i64 != added {
        return Err(error(
            ResponseError::InvalidReplicaAssignment,
            format!(
                "attempted to add {added} additional partition(s), but {} assignment(s) were \
                 specified",
                assignments.len()
            ),
        ));
    }
    // New partitions get as many replicas as the topic's first has.
    let replication_factor = broker
        .controller
        .image()
        .topics
        .get(topic.name.0.as_str())
        .and_then(|existing| existing.partition(0))
        .map(|first| first.replicas.len());
    for (assignment, partition) in assignments.iter().zip(current..) {
        topics::check_replica_assignment(
            broker,
            partition,
            &assignment.broker_ids,
            replication_factor,
        )?;
    }
    Ok(())
}

async fn create_one(
    broker: &Rc<Broker>,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), MetadataError> {
    let name = topic.name.0.to_string();
    let Some(current) = broker
        .controller
        .image()
        .topics
        .get(&name)
        .map(|metadata| metadata.partition_count())
    else {
        return Err(error(
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name:?}"),
        ));
    };
    if topics::is_internal(&name) {
        // Groups are placed by the partition count of __consumer_offsets:
        // growing it would lose every group whose partition changes.
        return Err(error(
            ResponseError::InvalidTopicException,
            format!("the partitions of internal topic {name} cannot change"),
        ));
    }
    check_assignments(broker, topic, current)?;
    let assignment = topic.assignments.as_ref().map(|assignments| {
        assignments
            .iter()
            .map(|assignment| {
                assignment
                    .broker_ids
                    .iter()
                    .map(|id| MetadataBrokerId(id.0))
                    .collect()
            })
            .collect()
    });
    topics::add_partitions(broker, &name, topic.count, assignment, validate_only).await
}

/// Answers CreatePartitions.
pub async fn handle(
    broker: &Rc<Broker>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let duplicate = request
            .topics
            .iter()
            .filter(|other| other.name == topic.name)
            .count()
            > 1;
        let outcome = if duplicate {
            Err(error(
                ResponseError::InvalidRequest,
                "duplicate topic in request".to_owned(),
            ))
        } else {
            create_one(broker, topic, request.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result,
            Err(error) => result
                .with_error_code(error.code)
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
