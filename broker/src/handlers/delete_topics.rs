//! DeleteTopics: removes topics from the metadata and deletes their data;
//! internal topics (`__consumer_offsets`) are refused.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::server::Broker;
use crate::topics;

/// Versions served (v6 may name topics by id).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DeleteTopics,
    min: 1,
    max: 6,
};

/// Answers DeleteTopics.
pub async fn handle(broker: &Rc<Broker>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // v0-v5 send names; v6 sends (name or id) states.
    let mut wanted: Vec<(Option<String>, uuid::Uuid)> = request
        .topic_names
        .iter()
        .map(|name| (Some(name.0.to_string()), uuid::Uuid::nil()))
        .collect();
    wanted.extend(request.topics.iter().map(|state| {
        (
            state.name.as_ref().map(|name| name.0.to_string()),
            state.topic_id,
        )
    }));
    let mut results = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = name.or_else(|| {
            broker
                .controller
                .image()
                .topic_by_id(id)
                .map(|topic| topic.name.clone())
        });
        let result = DeletableTopicResult::default().with_topic_id(id);
        let Some(name) = name else {
            results.push(result.with_error_code(ResponseError::UnknownTopicId.code()));
            continue;
        };
        let result = result.with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
        if topics::is_internal(&name) {
            // Kafka refuses to delete its internal topics: groups and
            // their offsets live there.
            results.push(
                result
                    .with_error_code(ResponseError::InvalidTopicException.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "internal topics cannot be deleted",
                    ))),
            );
            continue;
        }
        results.push(match topics::delete_topic(broker, &name).await {
            Ok(topic) => result.with_topic_id(topic.uuid()),
            Err(error) => result
                .with_error_code(error.code)
                .with_error_message(Some(StrBytes::from_string(error.message))),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}
