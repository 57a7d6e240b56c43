//! Creating, growing, reconfiguring and deleting topics: the metadata change
//! plus the partitions on their owning shards, shared by CreateTopics,
//! CreatePartitions, AlterConfigs, IncrementalAlterConfigs, DeleteTopics and
//! Metadata's auto-creation, and the check of the manual replica
//! assignments CreateTopics and CreatePartitions accept.
//!
//! Every controller change runs on the shard's blocking pool
//! ([`on_controller`]): it waits for the controller quorum to commit it,
//! an `fdatasync` at least (the whole-file rewrite the metadata log once
//! replaced took 9 ms on a busy disk, and on the shard's own thread it held
//! every append on the core for as long).
//!
//! The partitions themselves are the image follower's to create,
//! reconfigure and delete ([`crate::image_follower`]): each change runs a
//! round of it right after its commit, so the client's answer comes once
//! this broker's partitions match the new image.

use std::rc::Rc;
use std::sync::Arc;

use kafka_protocol::messages::BrokerId;
use kafka_protocol::ResponseError;

use crate::config::BrokerConfig;
use crate::controller::{Controller, MetadataError};
use crate::metadata::records::BrokerId as MetadataBrokerId;
use crate::metadata::TopicImage;
use crate::server::Broker;

/// The internal topic holding consumer groups and their offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The internal topic of the transaction coordinator.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Whether `name` is one of Kafka's internal topics: reported
/// `is_internal` by Metadata, and closed to clients' produce and delete.
#[must_use]
pub fn is_internal(name: &str) -> bool {
    name == CONSUMER_OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// The topic configs `__consumer_offsets` is created with: the one place
/// that sets them (Kafka's `offsets.topic.*` broker keys).
#[must_use]
pub fn consumer_offsets_configs(config: &BrokerConfig) -> Vec<(String, String)> {
    vec![
        // Only the latest commit per group and partition matters, and
        // tombstones remove deleted groups: the log cleaner keeps the
        // topic (and the load at start) as small as the live state.
        ("cleanup.policy".to_owned(), "compact".to_owned()),
        (
            "segment.bytes".to_owned(),
            config
                .group_coordinator
                .offsets_topic_segment_bytes
                .to_string(),
        ),
    ]
}

/// The replication factor `__consumer_offsets` is created with:
/// `offsets.topic.replication.factor`, capped at the live (unfenced)
/// brokers, as Kafka caps it, so a cluster smaller than the factor (a
/// single node, with the default 3) can still create it. It stays at what
/// it was created with when brokers join later.
#[must_use]
pub fn consumer_offsets_replication_factor(configured: i16, live_brokers: usize) -> i16 {
    let live = i16::try_from(live_brokers).unwrap_or(i16::MAX).max(1);
    configured.min(live)
}

/// Runs `change` on the controller from the shard's blocking pool, so that
/// syncing the metadata log never holds the core; see the module
/// documentation.
///
/// # Errors
/// `change`'s error.
pub async fn on_controller<T: Send + 'static>(
    broker: &Broker,
    change: impl FnOnce(&Controller) -> Result<T, MetadataError> + Send + 'static,
) -> Result<T, MetadataError> {
    let controller = Arc::clone(&broker.controller);
    glommio::executor()
        .spawn_blocking(move || change(&controller))
        .await
}

/// The brokers a manual replica assignment may name: those registered and
/// not fenced, by id.
fn live_brokers(broker: &Broker) -> Vec<i32> {
    broker
        .controller
        .image()
        .unfenced_brokers()
        .map(|registration| registration.id.0)
        .collect()
}

/// Checks the replica list a CreateTopics or CreatePartitions request
/// assigns to `partition`, as Kafka's controller does: not empty, no broker
/// twice, every broker live, and `replication_factor` replicas when the
/// topic's factor is already known (every partition of a topic has the
/// same).
///
/// # Errors
/// `INVALID_REPLICA_ASSIGNMENT`, saying which rule the list breaks.
pub fn check_replica_assignment(
    broker: &Broker,
    partition: i32,
    replicas: &[BrokerId],
    replication_factor: Option<usize>,
) -> Result<(), MetadataError> {
    let invalid = |message: String| MetadataError {
        code: ResponseError::InvalidReplicaAssignment.code(),
        message,
    };
    if replicas.is_empty() {
        return Err(invalid(format!(
            "the manual assignment of partition {partition} has an empty replica list"
        )));
    }
    let live = live_brokers(broker);
    let mut sorted: Vec<i32> = replicas.iter().map(|id| id.0).collect();
    sorted.sort_unstable();
    if let Some(unknown) = sorted.iter().find(|id| !live.contains(id)) {
        return Err(invalid(format!(
            "Unknown broker {unknown} in the manual assignment of partition {partition}: \
             the live brokers are {live:?}"
        )));
    }
    if let Some(repeated) = sorted
        .windows(2)
        .find_map(|pair| (pair[0] == pair[1]).then_some(pair[0]))
    {
        return Err(invalid(format!(
            "the manual assignment of partition {partition} names broker {repeated} more than once"
        )));
    }
    match replication_factor {
        Some(factor) if factor != replicas.len() => Err(invalid(format!(
            "the manual assignment of partition {partition} has {} replica(s), but the \
             topic's other partitions have {factor}",
            replicas.len()
        ))),
        _ => Ok(()),
    }
}

/// Creates `__consumer_offsets` if it does not exist yet (shard 0, at
/// start), with `offsets.topic.num.partitions` partitions, and opens the
/// partitions of it this broker holds, for the group coordinator to load.
///
/// # Errors
/// The controller's or the engine's error if it cannot be created or its
/// partitions here cannot be opened.
pub async fn ensure_consumer_offsets(broker: &Rc<Broker>) -> Result<(), MetadataError> {
    let exists = broker
        .controller
        .image()
        .topics
        .contains_key(CONSUMER_OFFSETS_TOPIC);
    if !exists {
        let live_brokers = broker.controller.image().unfenced_brokers().count();
        let created = create_topic(
            broker,
            CONSUMER_OFFSETS_TOPIC,
            broker.config.group_coordinator.offsets_topic_num_partitions,
            consumer_offsets_replication_factor(
                broker
                    .config
                    .group_coordinator
                    .offsets_topic_replication_factor,
                live_brokers,
            ),
            None,
            consumer_offsets_configs(&broker.config),
        )
        .await;
        match created {
            Ok(_) => return Ok(()),
            // Another node of the cluster created it first.
            Err(error) if error.code == ResponseError::TopicAlreadyExists.code() => {}
            Err(error) => return Err(error),
        }
    }
    // Created before this start or by another node: its partitions here
    // open once this broker has acted on the image that holds it.
    act_on_commit(broker, CONSUMER_OFFSETS_TOPIC).await
}

/// Creates `name` in the metadata, its replicas as `assignment` gives them
/// (one list per partition) or placed by the controller, and the
/// partitions this broker holds a replica of on their shards.
///
/// # Errors
/// The controller's validation errors, or `KAFKA_STORAGE_ERROR` if a
/// partition cannot be created.
pub async fn create_topic(
    broker: &Rc<Broker>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    assignment: Option<Vec<Vec<MetadataBrokerId>>>,
    configs: Vec<(String, String)>,
) -> Result<Arc<TopicImage>, MetadataError> {
    let owned_name = name.to_owned();
    let topic = on_controller(broker, move |controller| {
        controller.create_topic(
            &owned_name,
            partitions,
            replication_factor,
            assignment.as_deref(),
            configs,
        )
    })
    .await?;
    act_on_commit(broker, name).await?;
    tracing::info!(topic = name, partitions, "created topic");
    Ok(topic)
}

/// Brings this broker's partitions in line with the image a change of
/// `name` was just committed to ([`ImageFollower::catch_up`]), so that a
/// client can use them as soon as it has its answer.
///
/// # Errors
/// `KAFKA_STORAGE_ERROR` if an operation on a partition of `name` failed
/// (the follower retries it).
///
/// [`ImageFollower::catch_up`]: crate::image_follower::ImageFollower::catch_up
async fn act_on_commit(broker: &Rc<Broker>, name: &str) -> Result<(), MetadataError> {
    let failures = broker.image_follower.catch_up(broker).await;
    match failures
        .into_iter()
        .find(|failure| *failure.partition.topic == *name)
    {
        Some(failure) => Err(MetadataError {
            code: ResponseError::KafkaStorageError.code(),
            message: format!("{}: {}", failure.partition, failure.error),
        }),
        None => Ok(()),
    }
}

/// Grows `name` to `count` partitions (CreatePartitions): the metadata
/// change, then the new partitions on their shards. A crash in between is
/// repaired at start by [`crate::image_follower::start`].
///
/// # Errors
/// [`Controller::add_partitions`]'s errors, or
/// `KAFKA_STORAGE_ERROR` if a partition cannot be created.
pub async fn add_partitions(
    broker: &Rc<Broker>,
    name: &str,
    count: i32,
    assignment: Option<Vec<Vec<MetadataBrokerId>>>,
    validate_only: bool,
) -> Result<(), MetadataError> {
    let owned_name = name.to_owned();
    let previous = on_controller(broker, move |controller| {
        controller.add_partitions(&owned_name, count, assignment.as_deref(), validate_only)
    })
    .await?;
    if validate_only {
        return Ok(());
    }
    act_on_commit(broker, name).await?;
    tracing::info!(topic = name, previous, count, "added partitions");
    Ok(())
}

/// Replaces the config overrides of `name` with what `new_overrides`
/// computes from the current ones (see
/// [`Controller::alter_topic_configs`]), then gives every
/// live partition of the topic its new configuration. The persisted
/// metadata is what partitions open with after a restart.
///
/// # Errors
/// The controller's errors, or `KAFKA_STORAGE_ERROR` if a partition refuses
/// its new configuration.
pub async fn alter_topic_configs(
    broker: &Rc<Broker>,
    name: &str,
    validate_only: bool,
    new_overrides: impl Fn(&[(String, String)]) -> Result<Vec<(String, String)>, MetadataError>
        + Send
        + 'static,
) -> Result<(), MetadataError> {
    let owned_name = name.to_owned();
    on_controller(broker, move |controller| {
        controller.alter_topic_configs(&owned_name, validate_only, new_overrides)
    })
    .await?;
    if validate_only {
        return Ok(());
    }
    act_on_commit(broker, name).await
}

/// Removes `name` from the metadata and deletes its partitions' data.
///
/// # Errors
/// `UNKNOWN_TOPIC_OR_PARTITION` if there is no such topic.
pub async fn delete_topic(
    broker: &Rc<Broker>,
    name: &str,
) -> Result<Arc<TopicImage>, MetadataError> {
    let owned_name = name.to_owned();
    let topic = on_controller(broker, move |controller| {
        controller.delete_topic(&owned_name)
    })
    .await?;
    // A deletion that fails is logged and retried by the follower; the
    // topic is gone from the metadata either way.
    broker.image_follower.catch_up(broker).await;
    tracing::info!(topic = name, "deleted topic");
    Ok(topic)
}

#[cfg(test)]
mod tests {
    use super::consumer_offsets_replication_factor;

    #[test]
    fn consumer_offsets_take_the_configured_factor_capped_at_the_live_brokers() {
        assert_eq!(consumer_offsets_replication_factor(3, 1), 1);
        assert_eq!(consumer_offsets_replication_factor(3, 2), 2);
        assert_eq!(consumer_offsets_replication_factor(3, 5), 3);
        assert_eq!(consumer_offsets_replication_factor(1, 3), 1);
        // No live broker seen yet: one replica, which placement refuses
        // until a broker is live, rather than a factor of zero.
        assert_eq!(consumer_offsets_replication_factor(3, 0), 1);
    }
}
