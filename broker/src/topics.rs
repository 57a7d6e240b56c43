//! Creating and deleting topics: the metadata change plus the partitions on
//! their owning shards, shared by CreateTopics, DeleteTopics and Metadata's
//! auto-creation.

use std::rc::Rc;
use std::sync::Arc;

use fjord_engine::shard::{Request, Response};
use fjord_engine::TopicPartition;
use kafka_protocol::ResponseError;

use crate::metadata::{MetadataError, TopicMetadata};
use crate::server::Broker;

/// Creates `name` in the metadata and its partitions on their shards.
///
/// # Errors
/// The controller's validation errors, or `KAFKA_STORAGE_ERROR` if a
/// partition cannot be created.
pub async fn create_topic(
    broker: &Rc<Broker>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: Vec<(String, String)>,
) -> Result<Arc<TopicMetadata>, MetadataError> {
    let topic = broker
        .controller
        .create_topic(name, partitions, replication_factor, configs)?;
    let config = broker.controller.log_config_for(name);
    for partition in 0..partitions {
        let partition = TopicPartition::new(name, partition);
        let owner = broker.shard.owner_of(&partition);
        match broker
            .shard
            .call(owner, Request::Create(partition, config.clone()))
            .await
        {
            Response::Done | Response::Failed(fjord_engine::Error::PartitionExists(_)) => {}
            Response::Failed(error) => {
                return Err(MetadataError {
                    code: ResponseError::KafkaStorageError.code(),
                    message: error.to_string(),
                })
            }
            other => unreachable!("Create answers Done or Failed, not {other:?}"),
        }
    }
    tracing::info!(topic = name, partitions, "created topic");
    Ok(topic)
}

/// Removes `name` from the metadata and deletes its partitions' data.
///
/// # Errors
/// `UNKNOWN_TOPIC_OR_PARTITION` if there is no such topic.
pub async fn delete_topic(broker: &Rc<Broker>, name: &str) -> Result<TopicMetadata, MetadataError> {
    let topic = broker.controller.delete_topic(name)?;
    for partition in 0..topic.partitions {
        let partition = TopicPartition::new(name, partition);
        let owner = broker.shard.owner_of(&partition);
        if let Response::Failed(error) = broker
            .shard
            .call(owner, Request::Delete(partition.clone()))
            .await
        {
            tracing::warn!(%partition, %error, "deleting partition data failed");
        }
    }
    tracing::info!(topic = name, "deleted topic");
    Ok(topic)
}

/// Raises the high watermark of every partition this shard recovered to its
/// log end, before the shard serves anyone: this single broker is the whole
/// ISR, so every record recovery kept is replicated to all of it. Without
/// this, records acknowledged before a restart would stay invisible to
/// consumers until the next produce.
pub async fn commit_recovered_partitions(broker: &Rc<Broker>) {
    let Response::Partitions(partitions) = broker
        .shard
        .call(broker.shard.id(), Request::ListPartitions)
        .await
    else {
        return;
    };
    for partition in partitions {
        if let Ok(log) = broker.shard.local_log(&partition) {
            log.advance_high_watermark(log.offsets().log_end);
        }
    }
}

/// Makes sure every partition in the metadata exists on its shard (after a
/// crash between the metadata change and the partition creation).
pub async fn reconcile_partitions(broker: &Rc<Broker>) {
    for topic in broker.controller.image().topics.values() {
        let config = broker.controller.log_config_for(&topic.name);
        for partition in 0..topic.partitions {
            let partition = TopicPartition::new(topic.name.clone(), partition);
            let owner = broker.shard.owner_of(&partition);
            match broker
                .shard
                .call(owner, Request::Create(partition.clone(), config.clone()))
                .await
            {
                Response::Done | Response::Failed(fjord_engine::Error::PartitionExists(_)) => {}
                other => tracing::error!(%partition, ?other, "cannot open partition"),
            }
        }
    }
}
