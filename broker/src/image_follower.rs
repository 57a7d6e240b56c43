//! Brokers act on committed images: this broker's partitions are brought in
//! line with every metadata image the controller quorum publishes, whoever
//! made the change.
//!
//! A change committed through another node reaches this one only as a new
//! image (the quorum's state machine stores it after applying the committed
//! entries). Each round diffs the image handled last against the current
//! one and, for the replicas the image assigns this broker:
//! - deletes the data of every partition of a topic that disappeared (by
//!   topic id: a topic deleted and recreated under the same name between
//!   two images is deleted, then created empty) or no longer assigned here;
//! - then creates (or opens) every partition newly assigned here, with the
//!   topic's log config, up to [`CONCURRENT_CREATES_MAX`] at once;
//! - gives the held partitions of a topic whose overrides changed their new
//!   configuration.
//!
//! Deletions run before creations, so a recreated topic never opens on the
//! old one's data. A deletion or creation that fails is logged and kept
//! for the next round (the next image or period), a creation only while
//! the current image still assigns that topic id's partition here and only
//! once any deletion of the same directory succeeded; nothing panics, and
//! without a new image nothing is retried more often than every
//! [`RETRY_INTERVAL`].
//!
//! # Why one serialized follower, also for the admin paths
//! The node that handled an admin request must hold the new partitions
//! before it answers (a client produces at once), so the admin paths in
//! [`crate::topics`] run a round ([`ImageFollower::catch_up`]) right after
//! their commit. Rounds of every shard share one lock and one "image
//! handled": were the admin path to act on its own, a topic deleted and
//! recreated through this node between two rounds would look, to the next
//! round, like a topic to delete, and its new data (already produced to)
//! would go.
//!
//! # When rounds run
//! The image lives in an `ArcSwap` written by the controller's own thread,
//! which also counts its publications in a `tokio::sync::watch` (whose
//! futures need no runtime): shard 0 runs a round as soon as one is
//! published, and every [`RETRY_INTERVAL`] while something failed.
//!
//! # Partitions on disk the image does not assign here
//! Every partition this broker creates records its topic id in its
//! directory (Kafka's `partition.metadata`). The engine opens every
//! partition directory it finds at start; of those the first image (caught
//! up before the broker serves) does not assign this broker, one recording
//! an id no topic of the image has is of a topic deleted while the broker
//! was down, and is deleted. Any other is left as it is, with a warning:
//! without an id (a directory written before ids were recorded), no image
//! proves its topic was removed, and deleting data on that guess could lose
//! acknowledged records. A directory recording another id than the image's
//! topic of its name is replaced when that partition is created here.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_engine::TopicPartition;

use crate::meta_properties::KafkaUuid;
use crate::metadata::records::{BrokerId, TopicId};
use crate::metadata::{MetadataImage, TopicImage};
use crate::server::Broker;

/// How long rounds without a new image leave what failed alone before
/// retrying it: a failing disk is not asked (and logged about) at every
/// round. A new image retries it at once.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Partitions created (or deleted) at once: their directory and file syncs
/// overlap (a first start creates the 50 of `__consumer_offsets`), and a
/// topic of many partitions still does not spawn a task per partition.
pub const CONCURRENT_CREATES_MAX: usize = 32;

/// A partition operation of a round that failed; it is retried by the
/// next round.
#[derive(Debug)]
pub struct Failure {
    /// The partition.
    pub partition: TopicPartition,
    /// What failed.
    pub error: fjord_engine::Error,
}

/// What this broker did with the images so far, shared by every shard.
pub struct ImageFollower {
    state: tokio::sync::Mutex<Followed>,
}

/// The state behind the follower's lock. Both sets hold at most the
/// partitions of the images handled: a retry is dropped once the image no
/// longer asks for it.
struct Followed {
    /// The image the partitions were last brought in line with (the empty
    /// image before the first round).
    handled: Arc<MetadataImage>,
    /// Partitions whose data must still be deleted.
    deletes: BTreeSet<TopicPartition>,
    /// Partitions still to be created, with the id of the topic they
    /// belong to.
    creates: BTreeMap<TopicPartition, TopicId>,
    /// When the last round that left something to retry ended.
    last_failed: Option<Instant>,
}

impl Default for ImageFollower {
    fn default() -> Self {
        Self {
            state: tokio::sync::Mutex::new(Followed {
                handled: Arc::new(MetadataImage::default()),
                deletes: BTreeSet::new(),
                creates: BTreeMap::new(),
                last_failed: None,
            }),
        }
    }
}

impl ImageFollower {
    /// Brings this broker's partitions in line with the current image (see
    /// the module documentation), waiting for a round another shard is
    /// running. Returns the operations that failed, which the next round
    /// retries.
    pub async fn catch_up(&self, broker: &Rc<Broker>) -> Vec<Failure> {
        let mut state = self.state.lock().await;
        let current = broker.controller.image();
        let nothing_due = (state.deletes.is_empty() && state.creates.is_empty())
            || state
                .last_failed
                .is_some_and(|failed| failed.elapsed() < RETRY_INTERVAL);
        if Arc::ptr_eq(&current, &state.handled) && nothing_due {
            return Vec::new();
        }
        let node = BrokerId(broker.config.node_id);
        let previous = Arc::clone(&state.handled);
        let reconfigured = plan(&previous, &current, node, &mut state);
        // A creation waits for a deletion of the same directory, and is
        // dropped once the image no longer assigns its topic's partition
        // here.
        state.creates.retain(|partition, id| {
            current.topics.get(&*partition.topic).is_some_and(|topic| {
                topic.id == *id && held(topic, node).any(|index| index == partition.partition)
            })
        });
        let mut failures = Vec::new();
        let deletes: Vec<TopicPartition> = state.deletes.iter().cloned().collect();
        let failed_to = "deleting partition data failed; retrying";
        for partition in bounded(broker, deletes, delete_partition, failed_to, &mut failures).await
        {
            state.deletes.remove(&partition);
        }
        let creates: Vec<TopicPartition> = state
            .creates
            .keys()
            .filter(|partition| !state.deletes.contains(partition))
            .cloned()
            .collect();
        let failed_to = "cannot open partition; retrying";
        for partition in bounded(broker, creates, create_partition, failed_to, &mut failures).await
        {
            state.creates.remove(&partition);
        }
        for partition in reconfigured {
            if state.creates.contains_key(&partition) {
                // Created later with the topic's configuration then.
                continue;
            }
            let config = broker.controller.log_config_for(&partition.topic);
            if let Err(error) = broker.shard.set_config(partition.clone(), config).await {
                tracing::warn!(%partition, %error, "cannot reconfigure partition");
                failures.push(Failure { partition, error });
            }
        }
        state.handled = current;
        state.last_failed =
            (!state.deletes.is_empty() || !state.creates.is_empty()).then(Instant::now);
        failures
    }
}

/// The first round at start, diffed against the empty image: opens every
/// partition the image assigns this broker that the engine did not find on
/// disk, and warns of those it found that the image does not assign here.
/// Runs on shard 0 before it serves.
pub async fn start(broker: &Rc<Broker>) {
    broker.image_follower.catch_up(broker).await;
    settle_unassigned_partitions(broker).await;
}

/// A round whenever a new image is published, and every
/// [`RETRY_INTERVAL`] while something is left to retry, until the broker
/// stops. Runs on shard 0 after [`start`].
pub async fn follow(broker: Rc<Broker>) {
    let mut published = broker.controller.image_published();
    while next_round(&broker, &mut published, RETRY_INTERVAL).await {
        broker.image_follower.catch_up(&broker).await;
    }
}

/// Waits for the next round of a loop that follows the metadata images:
/// a newly published image, or `interval` (a closed channel, the quorum
/// stopping, leaves the periodic rounds); `false` once the broker stops.
pub async fn next_round(
    broker: &Broker,
    published: &mut tokio::sync::watch::Receiver<u64>,
    interval: Duration,
) -> bool {
    let stopping = futures_lite::future::or(
        futures_lite::future::or(
            async {
                if published.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                false
            },
            async {
                glommio::timer::sleep(interval).await;
                false
            },
        ),
        async {
            broker.until_stopping().await;
            true
        },
    )
    .await;
    !stopping
}

/// The partitions of `topic` the image assigns `node` a replica of.
pub fn held(topic: &TopicImage, node: BrokerId) -> impl Iterator<Item = i32> + '_ {
    topic
        .partitions
        .iter()
        .zip(0..)
        .filter(move |(partition, _)| partition.replicas.contains(&node))
        .map(|(_, index)| index)
}

/// Adds to `state` what `node` must delete and create to go from
/// `previous` to `current`, and returns the held partitions whose topic's
/// configuration changed.
fn plan(
    previous: &MetadataImage,
    current: &MetadataImage,
    node: BrokerId,
    state: &mut Followed,
) -> Vec<TopicPartition> {
    let mut reconfigured = Vec::new();
    let add_creates = |state: &mut Followed, topic: &TopicImage, indexes: &[i32]| {
        for &index in indexes {
            state
                .creates
                .insert(TopicPartition::new(topic.name.clone(), index), topic.id);
        }
    };
    for (name, old) in &previous.topics {
        let old_held: Vec<i32> = held(old, node).collect();
        match current.topics.get(name) {
            Some(new) if Arc::ptr_eq(old, new) => {}
            Some(new) if new.id == old.id => {
                let new_held: Vec<i32> = held(new, node).collect();
                for index in old_held.iter().filter(|index| !new_held.contains(index)) {
                    state
                        .deletes
                        .insert(TopicPartition::new(name.clone(), *index));
                }
                let added: Vec<i32> = new_held
                    .iter()
                    .copied()
                    .filter(|index| !old_held.contains(index))
                    .collect();
                add_creates(state, new, &added);
                if old.configs != new.configs {
                    reconfigured.extend(
                        new_held
                            .iter()
                            .filter(|index| old_held.contains(index))
                            .map(|index| TopicPartition::new(name.clone(), *index)),
                    );
                }
            }
            // Gone, or another topic under the same name.
            _ => {
                for index in old_held {
                    state
                        .deletes
                        .insert(TopicPartition::new(name.clone(), index));
                }
            }
        }
    }
    for (name, new) in &current.topics {
        let known = previous
            .topics
            .get(name)
            .is_some_and(|old| old.id == new.id);
        if !known {
            let indexes: Vec<i32> = held(new, node).collect();
            add_creates(state, new, &indexes);
        }
    }
    reconfigured
}

/// Deletes `partition`'s data; one already gone counts as deleted.
async fn delete_partition(
    broker: Rc<Broker>,
    partition: TopicPartition,
) -> Result<(), fjord_engine::Error> {
    match broker.shard.delete_partition(partition).await {
        Ok(()) | Err(fjord_engine::Error::UnknownPartition(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Creates (or opens) `partition` with its topic's configuration and
/// records its topic id in the directory (`partition.metadata`). One the
/// shard holds already counts as created, unless its directory records
/// another topic id: that is the data of a topic of the same name deleted
/// while this broker was down, which is deleted before the partition is
/// created afresh. A directory recording no id (written before ids were
/// recorded) is taken as this topic's.
async fn create_partition(
    broker: Rc<Broker>,
    partition: TopicPartition,
) -> Result<(), fjord_engine::Error> {
    let Some(topic_id) = broker
        .controller
        .image()
        .topics
        .get(&*partition.topic)
        .map(|topic| topic_id_text(topic.id))
    else {
        // The topic went meanwhile: nothing to create.
        return Ok(());
    };
    let config = broker.controller.log_config_for(&partition.topic);
    match broker
        .shard
        .create_partition(partition.clone(), config.clone())
        .await
    {
        Ok(()) => {}
        Err(fjord_engine::Error::PartitionExists(_)) => {
            match broker.shard.topic_id(partition.clone()).await? {
                Some(recorded) if recorded == topic_id => return Ok(()),
                Some(recorded) => {
                    tracing::warn!(
                        %partition,
                        %recorded,
                        current = %topic_id,
                        "deleting the data of a deleted topic of the same name"
                    );
                    broker.shard.delete_partition(partition.clone()).await?;
                    broker
                        .shard
                        .create_partition(partition.clone(), config)
                        .await?;
                }
                None => {}
            }
        }
        Err(error) => return Err(error),
    }
    broker.shard.set_topic_id(partition, topic_id).await
}

/// A topic id as Kafka writes it in `partition.metadata`.
fn topic_id_text(id: TopicId) -> String {
    KafkaUuid::from(id.uuid()).to_string()
}

/// Runs `operation` on every partition, up to [`CONCURRENT_CREATES_MAX`]
/// at once, and returns those it succeeded on; each failure is logged with
/// `failed_to` and added to `failures`. Every operation started is awaited.
async fn bounded<F, Fut>(
    broker: &Rc<Broker>,
    partitions: Vec<TopicPartition>,
    operation: F,
    failed_to: &str,
    failures: &mut Vec<Failure>,
) -> Vec<TopicPartition>
where
    F: Fn(Rc<Broker>, TopicPartition) -> Fut,
    Fut: std::future::Future<Output = Result<(), fjord_engine::Error>> + 'static,
{
    let mut succeeded = Vec::with_capacity(partitions.len());
    for chunk in partitions.chunks(CONCURRENT_CREATES_MAX) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|partition| glommio::spawn_local(operation(Rc::clone(broker), partition.clone())))
            .collect();
        for (partition, task) in chunk.iter().zip(tasks) {
            match task.await {
                Ok(()) => succeeded.push(partition.clone()),
                Err(error) => {
                    tracing::warn!(%partition, %error, "{failed_to}");
                    failures.push(Failure {
                        partition: partition.clone(),
                        error,
                    });
                }
            }
        }
    }
    succeeded
}

/// Deals with every partition a shard opened at start that the current
/// image does not assign this broker (see the module documentation): one
/// whose directory records a topic id the image (caught up before this
/// runs) has no topic of is of a topic deleted while this broker was down,
/// and is deleted; any other is kept, with a warning.
async fn settle_unassigned_partitions(broker: &Rc<Broker>) {
    let image = broker.controller.image();
    let node = BrokerId(broker.config.node_id);
    let known_ids: BTreeSet<String> = image
        .topics
        .values()
        .map(|topic| topic_id_text(topic.id))
        .collect();
    for shard in 0..broker.shard.shard_count() {
        let partitions = match broker.shard.list_partitions(shard).await {
            Ok(partitions) => partitions,
            Err(error) => {
                tracing::warn!(shard, %error, "cannot list the shard's partitions");
                continue;
            }
        };
        for partition in partitions {
            let assigned = image
                .topics
                .get(&*partition.topic)
                .is_some_and(|topic| held(topic, node).any(|index| index == partition.partition));
            if assigned {
                continue;
            }
            match broker.shard.topic_id(partition.clone()).await {
                Ok(Some(recorded)) if !known_ids.contains(&recorded) => {
                    tracing::info!(%partition, %recorded, "deleting a partition of a deleted topic");
                    if let Err(error) = broker.shard.delete_partition(partition.clone()).await {
                        tracing::warn!(%partition, %error, "deleting partition data failed");
                    }
                }
                _ => tracing::warn!(
                    %partition,
                    "the metadata does not assign this broker a replica of this partition; \
                     its data is kept"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The follower acting on images changed through the controller alone,
    //! never through [`crate::topics`]: what a change committed through
    //! another node of a cluster looks like to this one.

    use std::future::Future;

    use bytes::Bytes;
    use fjord_engine::config::LogConfig;
    use fjord_engine::shard::AppendRequest;
    use fjord_engine::testkit::values_batch;
    use fjord_engine::types::TimestampMs;
    use fjord_engine::LeaderEpoch;

    use super::*;
    use crate::controller::{Controller, MetadataError};
    use crate::in_process::{eventually, on_shard_zero};
    use crate::topics::on_controller;

    /// Runs `scenario` on shard 0 of an in-process broker with the
    /// follower running.
    fn with_follower<F, Fut>(scenario: F) -> Result<(), String>
    where
        F: Fn(Rc<Broker>) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = Result<(), String>> + 'static,
    {
        on_shard_zero(&[], move |broker| {
            let scenario = scenario.clone();
            async move {
                start(&broker).await;
                let following = glommio::spawn_local(follow(Rc::clone(&broker)));
                let outcome = scenario(broker).await;
                // Cancels it: the scenario is over.
                drop(following);
                outcome
            }
        })
    }

    /// Commits `change` through the controller alone.
    async fn commit<T: Send + 'static>(
        broker: &Rc<Broker>,
        change: impl FnOnce(&Controller) -> Result<T, MetadataError> + Send + 'static,
    ) -> Result<T, String> {
        on_controller(broker, change)
            .await
            .map_err(|error| error.message)
    }

    /// The partitions of `topic` every shard holds, sorted by index.
    async fn held_on_shards(broker: &Rc<Broker>, topic: &str) -> Vec<i32> {
        let mut indexes = Vec::new();
        for shard in 0..broker.shard.shard_count() {
            for partition in broker.shard.list_partitions(shard).await.unwrap() {
                if *partition.topic == *topic {
                    indexes.push(partition.partition);
                }
            }
        }
        indexes.sort_unstable();
        indexes
    }

    /// Whether the follower has handled the current image.
    async fn caught_up(broker: &Rc<Broker>) -> bool {
        let state = broker.image_follower.state.lock().await;
        Arc::ptr_eq(&state.handled, &broker.controller.image())
            && state.deletes.is_empty()
            && state.creates.is_empty()
    }

    async fn append_one(broker: &Rc<Broker>, partition: TopicPartition) -> Result<(), String> {
        let batch = values_batch(&[b"kept".to_vec()], TimestampMs(1), None);
        broker
            .shard
            .append(AppendRequest {
                partition,
                batches: vec![Bytes::from(batch)],
                leader_epoch: LeaderEpoch(0),
                flush: false,
                advance_high_watermark: true,
            })
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn log_end(broker: &Rc<Broker>, partition: &TopicPartition) -> Result<i64, String> {
        broker
            .shard
            .offsets(partition.clone())
            .await
            .map(|offsets| offsets.log_end.0)
            .map_err(|error| error.to_string())
    }

    /// A topic created, grown, reconfigured and deleted through the
    /// controller alone: without the follower its partitions would never
    /// open on this broker (a cluster's other nodes), and a deleted one's
    /// data would stay.
    #[test]
    fn partitions_follow_topics_committed_through_the_controller_alone() {
        with_follower(|broker| async move {
            commit(&broker, |controller| {
                controller.create_topic("orders", 3, 1, None, Vec::new())
            })
            .await?;
            eventually("the three partitions open", || async {
                held_on_shards(&broker, "orders").await == [0, 1, 2]
            })
            .await?;
            append_one(&broker, TopicPartition::new("orders", 1)).await?;

            commit(&broker, |controller| {
                controller.add_partitions("orders", 4, None, false)
            })
            .await?;
            eventually("the added partition opens", || async {
                held_on_shards(&broker, "orders").await == [0, 1, 2, 3]
            })
            .await?;

            // A partition of this shard, whose configuration it can read.
            let local = (0..4)
                .map(|index| TopicPartition::new("orders", index))
                .find(|partition| broker.shard.owner_of(partition) == broker.shard.id())
                .ok_or("no partition of orders on shard 0")?;
            commit(&broker, |controller| {
                controller.alter_topic_configs("orders", false, |_| {
                    Ok(vec![("retention.ms".to_owned(), "1234".to_owned())])
                })
            })
            .await?;
            eventually("the new retention.ms reaches the partition", || async {
                broker
                    .shard
                    .local_log(&local)
                    .is_ok_and(|log| log.config().retention_ms == 1234)
            })
            .await?;

            commit(&broker, |controller| controller.delete_topic("orders")).await?;
            // The shards let go of a partition before its files are gone:
            // both must happen.
            eventually(
                "the partitions and their directories are deleted",
                || async {
                    let directory_left =
                        std::fs::read_dir(&broker.config.data_dir).map_or(true, |entries| {
                            entries.flatten().any(|entry| {
                                entry.file_name().to_string_lossy().starts_with("orders-")
                            })
                        });
                    held_on_shards(&broker, "orders").await.is_empty() && !directory_left
                },
            )
            .await?;
            Ok(())
        })
        .unwrap();
    }

    /// A topic deleted and recreated under the same name between two
    /// images the follower handles: told apart by topic id, the old one's
    /// data is deleted before the new one opens, which starts empty
    /// instead of serving the old records as its own.
    #[test]
    fn a_topic_recreated_under_the_same_name_starts_empty() {
        with_follower(|broker| async move {
            commit(&broker, |controller| {
                controller.create_topic("events", 2, 1, None, Vec::new())
            })
            .await?;
            eventually("the follower handles the creation", || caught_up(&broker)).await?;
            let partition = TopicPartition::new("events", 0);
            append_one(&broker, partition.clone()).await?;
            if log_end(&broker, &partition).await? != 1 {
                return Err("the old topic holds its record".to_owned());
            }

            {
                // Both changes land in one image the follower has not seen.
                let _no_round = broker.image_follower.state.lock().await;
                commit(&broker, |controller| {
                    controller.delete_topic("events")?;
                    controller.create_topic("events", 1, 1, None, Vec::new())
                })
                .await?;
            }
            eventually("the follower handles the recreation", || caught_up(&broker)).await?;
            if held_on_shards(&broker, "events").await != [0] {
                return Err("the new topic's one partition, and only it, is held".to_owned());
            }
            match log_end(&broker, &partition).await? {
                0 => Ok(()),
                end => Err(format!(
                    "the recreated topic starts at offset {end}, not empty"
                )),
            }
        })
        .unwrap();
    }

    /// A partition the engine cannot create (a file stands where its
    /// directory goes) fails the round without a panic and is created by a
    /// later one once it can be, with no new image to prompt it.
    #[test]
    fn a_partition_that_cannot_be_created_is_retried_until_it_can() {
        with_follower(|broker| async move {
            let blocker = broker.config.data_dir.join("payments-0");
            std::fs::write(&blocker, b"not a partition").map_err(|error| error.to_string())?;
            commit(&broker, |controller| {
                controller.create_topic("payments", 1, 1, None, Vec::new())
            })
            .await?;
            eventually("the follower tries and fails", || async {
                let state = broker.image_follower.state.lock().await;
                state.last_failed.is_some() && state.creates.len() == 1
            })
            .await?;
            if !held_on_shards(&broker, "payments").await.is_empty() {
                return Err("a partition opened over a file".to_owned());
            }
            std::fs::remove_file(&blocker).map_err(|error| error.to_string())?;
            eventually("the retry creates it", || async {
                held_on_shards(&broker, "payments").await == [0]
            })
            .await
        })
        .unwrap();
    }

    /// A partition no image this broker handled assigned it (data left
    /// from a topic removed while it was down, or another tool's) is never
    /// deleted on the follower's guess: its records are kept.
    #[test]
    fn partitions_no_image_assigned_are_kept() {
        with_follower(|broker| async move {
            let stray = TopicPartition::new("stray", 0);
            broker
                .shard
                .create_partition(stray.clone(), LogConfig::default())
                .await
                .map_err(|error| error.to_string())?;
            append_one(&broker, stray.clone()).await?;
            commit(&broker, |controller| {
                controller.create_topic("other", 1, 1, None, Vec::new())
            })
            .await?;
            eventually("the follower handles the creation", || caught_up(&broker)).await?;
            match log_end(&broker, &stray).await? {
                1 => Ok(()),
                end => Err(format!("the stray partition ends at {end}, not 1")),
            }
        })
        .unwrap();
    }

    /// A directory recording another topic id than the image's topic of
    /// that name holds a deleted topic's data (deleted while this broker
    /// was down): a round that finds it deletes it and creates the
    /// partition afresh, recording the current id; a directory recording
    /// the current id keeps its records.
    #[test]
    fn a_directory_of_another_topic_of_the_same_name_is_replaced() {
        with_follower(|broker| async move {
            commit(&broker, |controller| {
                controller.create_topic("events", 1, 1, None, Vec::new())
            })
            .await?;
            eventually("the follower handles the creation", || caught_up(&broker)).await?;
            let partition = TopicPartition::new("events", 0);
            let current = broker
                .shard
                .topic_id(partition.clone())
                .await
                .map_err(|error| error.to_string())?
                .ok_or("the creation recorded no topic id")?;
            append_one(&broker, partition.clone()).await?;
            // A fresh follower (as at start) keeps a directory of this topic.
            ImageFollower::default().catch_up(&broker).await;
            if log_end(&broker, &partition).await? != 1 {
                return Err("a directory of the current topic lost its record".to_owned());
            }

            let other = topic_id_text(TopicId::from(uuid::Uuid::from_u128(7)));
            broker
                .shard
                .set_topic_id(partition.clone(), other)
                .await
                .map_err(|error| error.to_string())?;
            ImageFollower::default().catch_up(&broker).await;
            if log_end(&broker, &partition).await? != 0 {
                return Err("another topic's records were kept".to_owned());
            }
            let recorded = broker
                .shard
                .topic_id(partition)
                .await
                .map_err(|error| error.to_string())?;
            if recorded != Some(current) {
                return Err(format!("the new directory records {recorded:?}"));
            }
            Ok(())
        })
        .unwrap();
    }

    /// At start, a partition the image does not assign this broker whose
    /// directory records a topic id the image has no topic of is deleted
    /// (its topic was deleted while the broker was down); one recording no
    /// id is kept.
    #[test]
    fn a_partition_of_a_topic_deleted_meanwhile_is_deleted_at_start() {
        with_follower(|broker| async move {
            let gone = TopicPartition::new("gone", 0);
            let unknown = TopicPartition::new("unknown", 0);
            for partition in [&gone, &unknown] {
                broker
                    .shard
                    .create_partition(partition.clone(), LogConfig::default())
                    .await
                    .map_err(|error| error.to_string())?;
                append_one(&broker, partition.clone()).await?;
            }
            let deleted_id = topic_id_text(TopicId::from(uuid::Uuid::from_u128(9)));
            broker
                .shard
                .set_topic_id(gone.clone(), deleted_id)
                .await
                .map_err(|error| error.to_string())?;
            settle_unassigned_partitions(&broker).await;
            if !held_on_shards(&broker, "gone").await.is_empty() {
                return Err("the deleted topic's partition is still held".to_owned());
            }
            match log_end(&broker, &unknown).await? {
                1 => Ok(()),
                end => Err(format!("the partition without an id ends at {end}, not 1")),
            }
        })
        .unwrap();
    }
}
