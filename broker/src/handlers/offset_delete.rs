//! OffsetDelete: removes a group's committed offsets for some partitions,
//! with tombstones. Refused per partition (`GROUP_SUBSCRIBED_TO_TOPIC`)
//! while the group's members subscribe to the topic, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{ApiKey, OffsetDeleteRequest, OffsetDeleteResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::append;
use crate::groups::records::RecordKey;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::OffsetDelete,
    min: 0,
    max: 0,
};

/// Answers OffsetDelete.
pub async fn handle(broker: &Rc<Broker>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let coordinator = &broker.groups;
    let group_id = request.group_id.to_string();
    let decided = coordinator.with_partition_for_write(&group_id, |partition| {
        let Some(group) = partition.groups.get_mut(&group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        let subscribed = if group.is_empty() {
            Vec::new()
        } else {
            group.subscribed_topics().unwrap_or_default()
        };
        let mut tombstones = Vec::new();
        let outcomes: Vec<Vec<i16>> = request
            .topics
            .iter()
            .map(|topic| {
                let name = topic.name.to_string();
                topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        if subscribed.contains(&name) {
                            return ResponseError::GroupSubscribedToTopic.code();
                        }
                        let index = partition.partition_index;
                        if group.offsets.remove(&(name.clone(), index)).is_some() {
                            let key = RecordKey::Offset {
                                group: group_id.clone(),
                                topic: name.clone(),
                                partition: index,
                            };
                            tombstones.push((key.encode(), None));
                        }
                        0
                    })
                    .collect()
            })
            .collect();
        Ok((outcomes, tombstones))
    });
    let decided = decided.and_then(|(decided, epoch)| decided.map(|decided| (decided, epoch)));
    let ((outcomes, tombstones), epoch) = match decided {
        Ok(decided) => decided,
        Err(error) => return OffsetDeleteResponse::default().with_error_code(error.code()),
    };
    if let Err(error) = append(broker, epoch, &tombstones).await {
        return OffsetDeleteResponse::default().with_error_code(error.code());
    }
    let topics = request
        .topics
        .into_iter()
        .zip(outcomes)
        .map(|(topic, codes)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(codes)
                .map(|(partition, code)| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}
