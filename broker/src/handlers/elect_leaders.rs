//! ElectLeaders (`kafka-leader-election.sh`, the admin clients'
//! `elect_leaders`): an administrator has the controller elect each named
//! partition's preferred replica, or, with the `UNCLEAN` type, any live
//! replica of a leaderless partition
//! ([`crate::controller::Controller::elect_leaders`]). Each partition
//! answers on its own: `ELECTION_NOT_NEEDED`,
//! `PREFERRED_LEADER_NOT_AVAILABLE`, `ELIGIBLE_LEADERS_NOT_AVAILABLE` or
//! `UNKNOWN_TOPIC_OR_PARTITION`, as Kafka's controller answers; a partition
//! named twice is `INVALID_REQUEST`. No named partitions means every
//! partition, and then only those where something happened are listed.
//! The answer comes once the elections are committed and this node's image
//! has them, within the request's timeout.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::controller::election::ElectionType;
use crate::server::Broker;
use crate::topics::on_controller;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::ElectLeaders,
    min: 0,
    max: 2,
};

/// Kafka's election type codes (v1+; v0 elects preferred replicas only).
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// The timeout a request with none (or a negative one) gets.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// One partition's line of the response.
fn result(partition: i32, code: i16, message: Option<String>) -> PartitionResult {
    PartitionResult::default()
        .with_partition_id(partition)
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
}

/// Answers ElectLeaders.
pub async fn handle(broker: &Rc<Broker>, request: ElectLeadersRequest) -> ElectLeadersResponse {
    let kind = match request.election_type {
        PREFERRED => ElectionType::Preferred,
        UNCLEAN => ElectionType::Unclean,
        _ => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code());
        }
    };
    // Partitions named twice are refused, the rest elected.
    let mut named: BTreeMap<(TopicName, i32), usize> = BTreeMap::new();
    for topic in request.topic_partitions.iter().flatten() {
        for &partition in &topic.partitions {
            *named.entry((topic.topic.clone(), partition)).or_default() += 1;
        }
    }
    let partitions = request.topic_partitions.as_ref().map(|_| {
        named
            .iter()
            .filter(|(_, &count)| count == 1)
            .map(|((topic, partition), _)| (topic.0.to_string(), *partition))
            .collect::<Vec<_>>()
    });
    let timeout = u64::try_from(request.timeout_ms)
        .ok()
        .filter(|&millis| millis > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let mut by_topic: BTreeMap<TopicName, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, partition), _) in named.iter().filter(|(_, &count)| count > 1) {
        by_topic.entry(topic.clone()).or_default().push(result(
            *partition,
            ResponseError::InvalidRequest.code(),
            Some(format!("{}-{partition} is named more than once", topic.0)),
        ));
    }
    match on_controller(broker, move |controller| {
        controller.elect_leaders(kind, partitions, timeout)
    })
    .await
    {
        Ok(outcomes) => {
            for outcome in outcomes {
                by_topic
                    .entry(TopicName(StrBytes::from_string(outcome.topic)))
                    .or_default()
                    .push(result(outcome.partition, outcome.code, outcome.message));
            }
        }
        Err(error) => {
            // Nothing was elected: every partition asked for carries the
            // controller's error (a retriable NOT_CONTROLLER or timeout).
            for ((topic, partition), _) in named.iter().filter(|(_, &count)| count == 1) {
                by_topic.entry(topic.clone()).or_default().push(result(
                    *partition,
                    error.code,
                    Some(error.message.clone()),
                ));
            }
            if request.topic_partitions.is_none() {
                return ElectLeadersResponse::default().with_error_code(error.code);
            }
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partition_result)| {
                ReplicaElectionResult::default()
                    .with_topic(topic)
                    .with_partition_result(partition_result)
            })
            .collect(),
    )
}
