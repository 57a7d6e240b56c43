//! DeleteGroups: removes empty groups and their offsets, writing Kafka's
//! tombstones (every offset, then the group) so the deletion survives a
//! restart. A group with members is `NON_EMPTY_GROUP`; an unknown one
//! `GROUP_ID_NOT_FOUND`.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::groups::append;
use crate::groups::records::RecordKey;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DeleteGroups,
    min: 0,
    max: 2,
};

async fn delete(broker: &Broker, group_id: &str) -> Result<(), ResponseError> {
    let coordinator = &broker.groups;
    let (decided, epoch) = coordinator.with_partition_for_write(group_id, |partition| {
        let Some(group) = partition.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound);
        };
        if !group.is_empty() {
            return Err(ResponseError::NonEmptyGroup);
        }
        let mut tombstones: Vec<_> = group
            .offsets
            .keys()
            .map(|(topic, partition)| {
                let key = RecordKey::Offset {
                    group: group_id.to_owned(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (key.encode(), None)
            })
            .collect();
        tombstones.push((RecordKey::Group(group_id.to_owned()).encode(), None));
        partition.groups.remove(group_id);
        Ok(tombstones)
    })?;
    let tombstones = decided?;
    append(broker, epoch, &tombstones).await?;
    Ok(())
}

/// Answers DeleteGroups.
pub async fn handle(broker: &Rc<Broker>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let outcome = delete(broker, group_id.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(outcome.err().map_or(0, |error| error.code())),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
