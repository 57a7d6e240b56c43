//! CreateTopics: validates names, partition counts, replication factors and
//! configs (Kafka's names), honours `validate_only`, and creates each topic's
//! partitions on their shards.

use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::Broker;
use crate::topics;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::CreateTopics,
    min: 2,
    max: 7,
};

/// Answers CreateTopics.
pub async fn handle(broker: &Rc<Broker>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
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
        let configs: Vec<(String, String)> = topic
            .configs
            .iter()
            .filter_map(|config| {
                Some((config.name.to_string(), config.value.as_ref()?.to_string()))
            })
            .collect();
        let outcome = if request.validate_only {
            broker
                .controller
                .validate_topic(&name, partitions, replication_factor, &configs)
                .map(|_| None)
        } else {
            topics::create_topic(broker, &name, partitions, replication_factor, configs)
                .await
                .map(Some)
        };
        let result = CreatableTopicResult::default()
            .with_name(topic.name)
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor);
        results.push(match outcome {
            Ok(created) => match created {
                Some(created) => result.with_topic_id(created.uuid()),
                None => result,
            },
            Err(error) => result
                .with_error_code(error.code)
                .with_error_message(Some(StrBytes::from_string(error.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}
