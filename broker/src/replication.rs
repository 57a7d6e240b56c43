//! Partition replication, Kafka's ISR model: every partition has a leader
//! and followers on other brokers; followers fetch the leader's batches
//! with Kafka's own Fetch and append them as they are; the in-sync
//! replicas decide what is committed (the high watermark).
//!
//! Roles come from the metadata image only. Each shard runs [`run`] for
//! the partitions it owns: on every image it takes leadership of the
//! partitions the image gives this broker (recording the new leader epoch
//! at its log end, so a follower's diverging epoch is found against it),
//! hands the partitions it follows to the fetcher of their leader
//! ([`fetcher`]: one connection per shard and leader, so replication
//! traffic is spread over the cores like the partitions; the connection
//! lands on the leader's shard with the same index ([`crate::steering`]),
//! which owns the same partitions when both brokers run the same `cores`;
//! otherwise the leader reads each partition on the shard that owns it,
//! wherever the connection landed), and proposes the ISR changes its leaders' follower progress
//! calls for ([`leader::LeaderState`]) to the controller, acting on the
//! committed ISR only. Roles and ISRs are looked at on every image and
//! every second.
//!
//! The leaders' state is shared by every shard ([`Replication`], one
//! `std::sync::Mutex`, never held across an `.await`): a follower's Fetch
//! may arrive on any shard, and its bookkeeping runs on the partition's
//! owning shard with the log ([`fjord_engine::shard::Shard::on_log`]).
//!
//! Durability: a follower fetches from its log end, so the offset it
//! reports is what it has appended; unless the topic sets
//! `write.caching=true` it also flushes before it fetches again, so an
//! acks=all record is acknowledged only once every ISR member flushed it.

pub mod fetcher;
pub mod leader;
mod link;
#[cfg(test)]
mod simulation;

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fjord_engine::shard::Queue;
use fjord_engine::{LeaderEpoch, Offset, TopicPartition};

use crate::config::ReplicationConfig;
use crate::controller::alter_partition::IsrProposal;
use crate::controller::election::is_live;
use crate::image_follower::next_round;
use crate::metadata::records::{BrokerId, LeaderRecoveryState};
use crate::metadata::{MetadataImage, PartitionImage};
use crate::partition::PartitionError;
use crate::server::Broker;
use leader::{Follower, IsrChange, LeaderState};

/// The leaders' state of every partition this broker leads, shared by
/// every shard.
pub struct Replication {
    node: BrokerId,
    /// The settings (`replica.*`).
    pub settings: ReplicationConfig,
    leaders: Mutex<HashMap<TopicPartition, LeaderState>>,
    started: Instant,
}

/// A fetch from a broker that is not a replica of the partition.
#[derive(Debug)]
pub struct NotAReplica;

impl Replication {
    /// The replication of broker `node`.
    #[must_use]
    pub fn new(node: i32, settings: ReplicationConfig) -> Self {
        Self {
            node: BrokerId(node),
            settings,
            leaders: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicPartition, LeaderState>> {
        // A panic elsewhere cannot leave a leader's state half-written:
        // every update is one method of `LeaderState`.
        self.leaders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds since this broker started: the leaders' clock.
    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes `image`'s state of `partition`, which this broker leads; a
    /// new leader epoch starts at `log_end`. Returns whether the epoch is
    /// new here (the caller then records it in the log).
    pub fn lead(
        &self,
        partition: &TopicPartition,
        image: &PartitionImage,
        log_end: Offset,
    ) -> bool {
        let now = self.now_ms();
        let mut leaders = self.lock();
        match leaders.get_mut(partition) {
            Some(state) if state.leader_epoch == image.leader_epoch => {
                state.update(image, now);
                false
            }
            _ => {
                leaders.insert(
                    partition.clone(),
                    LeaderState::new(self.node, image, log_end, now),
                );
                true
            }
        }
    }

    /// Forgets the leader state of `partition` (led elsewhere now, or gone).
    pub fn resign(&self, partition: &TopicPartition) {
        self.lock().remove(partition);
    }

    /// The leader epoch this broker leads `partition` in, if it does.
    #[must_use]
    pub fn leader_epoch(&self, partition: &TopicPartition) -> Option<LeaderEpoch> {
        self.lock().get(partition).map(|state| state.leader_epoch)
    }

    /// The high watermark the ISR of `partition` allows with the leader's
    /// log ending at `leader_end`; `None` if this broker does not lead it
    /// or the high watermark may not move.
    #[must_use]
    pub fn high_watermark(
        &self,
        partition: &TopicPartition,
        leader_end: Offset,
        min_insync: usize,
    ) -> Option<Offset> {
        self.lock()
            .get(partition)?
            .high_watermark(leader_end, min_insync)
    }

    /// Records a fetch of `partition` by `follower` from `fetch_offset`;
    /// returns the high watermark it allows, as
    /// [`Replication::high_watermark`].
    ///
    /// # Errors
    /// [`NotAReplica`] if this broker does not lead `partition`, `follower`
    /// is not one of its replicas, or the fetch names an older broker
    /// epoch than one it fetched with before.
    pub fn follower_fetched(
        &self,
        partition: &TopicPartition,
        follower: Follower,
        fetch_offset: Offset,
        leader_end: Offset,
        min_insync: usize,
    ) -> Result<Option<Offset>, NotAReplica> {
        let now = self.now_ms();
        let mut leaders = self.lock();
        let state = leaders.get_mut(partition).ok_or(NotAReplica)?;
        if !state.on_fetch(follower, fetch_offset, leader_end, now) {
            return Err(NotAReplica);
        }
        Ok(state.high_watermark(leader_end, min_insync))
    }

    /// The ISR change `partition` calls for now, with its high watermark
    /// at `high_watermark`; see [`LeaderState::propose`].
    pub fn propose(
        &self,
        partition: &TopicPartition,
        high_watermark: Offset,
        image: &MetadataImage,
    ) -> Option<IsrChange> {
        let now = self.now_ms();
        let lag_max =
            i64::try_from(self.settings.replica_lag_time_max.as_millis()).unwrap_or(i64::MAX);
        self.lock()
            .get_mut(partition)?
            .propose(high_watermark, now, lag_max, |broker| {
                is_live(image, broker)
            })
    }

    /// Whether `proposal` is still the ISR change in flight for
    /// `partition` (no image has ended it).
    #[must_use]
    pub fn in_flight(&self, partition: &TopicPartition, proposal: &IsrChange) -> bool {
        self.lock()
            .get(partition)
            .is_some_and(|state| state.pending() == Some(proposal))
    }

    /// Forgets a proposal the controller did not commit.
    pub fn proposal_failed(&self, partition: &TopicPartition, proposal: &IsrChange) {
        if let Some(state) = self.lock().get_mut(partition) {
            state.proposal_failed(proposal);
        }
    }

    /// How far each follower of `partition` is behind `leader_end`, for
    /// describes: `(follower, lag)`; `None` for one not heard from in this
    /// epoch.
    #[must_use]
    pub fn follower_lags(
        &self,
        partition: &TopicPartition,
        leader_end: Offset,
    ) -> Vec<(BrokerId, Option<i64>)> {
        let leaders = self.lock();
        let Some(state) = leaders.get(partition) else {
            return Vec::new();
        };
        state
            .replicas
            .iter()
            .filter(|&&replica| replica != self.node)
            .map(|&replica| {
                (
                    replica,
                    state
                        .follower_log_end(replica)
                        .map(|end| leader_end.0 - end.0),
                )
            })
            .collect()
    }
}

/// Moves the high watermark of `partition`, which this broker leads, to
/// what its ISR allows now that an append is written: the ISR may be this
/// broker alone (the records are then committed at once, unless
/// `min.insync.replicas` or an ISR expansion in flight holds them).
///
/// # Errors
/// [`PartitionError::Engine`] if the partition is gone from its shard.
pub async fn commit_written(
    broker: &Broker,
    partition: &TopicPartition,
) -> Result<(), PartitionError> {
    let replication = Arc::clone(&broker.replication);
    let min_insync = min_insync_replicas(broker, &partition.topic);
    let target = partition.clone();
    broker
        .shard
        .on_log(
            partition.clone(),
            Queue::Default,
            move |_, log| async move {
                if let Some(high_watermark) =
                    replication.high_watermark(&target, log.offsets().log_end, min_insync)
                {
                    log.advance_high_watermark(high_watermark);
                }
                Ok(())
            },
        )
        .await?;
    Ok(())
}

/// `min.insync.replicas` of `topic`: its override, else the broker's.
#[must_use]
pub fn min_insync_replicas(broker: &Broker, topic: &str) -> usize {
    broker
        .controller
        .topic_config(topic, "min.insync.replicas")
        .and_then(|value| value.parse().ok())
        .unwrap_or(broker.config.replication.min_insync_replicas)
}

/// Whether `topic` acknowledges acks=all records once written rather than
/// flushed on every ISR member (`write.caching=true`).
#[must_use]
pub fn write_caching(broker: &Broker, topic: &str) -> bool {
    broker
        .controller
        .topic_config(topic, "write.caching")
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Follows the image's roles for the partitions this shard owns until the
/// broker stops; see the module documentation.
pub async fn run(broker: Rc<Broker>) {
    let mut published = broker.controller.image_published();
    let mut fetchers = fetcher::Fetchers::default();
    loop {
        apply_roles(&broker, &mut fetchers).await;
        propose_isr_changes(&broker);
        if !next_round(&broker, &mut published, ROLE_RETRY_INTERVAL).await {
            break;
        }
    }
    fetchers.stop_all().await;
}

/// How often roles and ISRs are looked at again without a new image:
/// partitions the image follower opened since, followers that caught up
/// (Kafka looks at every fetch; a second is well within any lag time) or
/// fell behind for `replica.lag.time.max.ms`.
const ROLE_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Gives every partition this shard owns the role the current image gives
/// it.
async fn apply_roles(broker: &Rc<Broker>, fetchers: &mut fetcher::Fetchers) {
    let image = broker.controller.image();
    let node = BrokerId(broker.config.node_id);
    let Ok(owned) = broker.shard.list_partitions(broker.shard.id()).await else {
        return;
    };
    let mut followed = BTreeSet::new();
    for partition in owned {
        let Some(state) = image
            .topics
            .get(&*partition.topic)
            .and_then(|topic| topic.partition(partition.partition))
        else {
            broker.replication.resign(&partition);
            continue;
        };
        if state.leader == node {
            take_leadership(broker, &partition, state);
        } else {
            broker.replication.resign(&partition);
            if state.leader != BrokerId::NONE && state.replicas.contains(&node) {
                followed.insert(partition.clone());
                fetchers.follow(broker, &image, partition, state);
            }
        }
    }
    fetchers.retain(|partition| followed.contains(partition));
}

/// Makes this broker the leader of `partition` in `state`'s epoch: a new
/// epoch is recorded at the log end, and the high watermark moves to what
/// the committed ISR allows.
fn take_leadership(broker: &Broker, partition: &TopicPartition, state: &PartitionImage) {
    let Ok(log) = broker.shard.local_log(partition) else {
        return;
    };
    let log_end = log.offsets().log_end;
    if broker.replication.lead(partition, state, log_end) {
        tracing::info!(
            %partition,
            epoch = state.leader_epoch.0,
            %log_end,
            "leading"
        );
        log.assign_leader_epoch(state.leader_epoch);
    }
    let min_insync = min_insync_replicas(broker, &partition.topic);
    if let Some(high_watermark) =
        broker
            .replication
            .high_watermark(partition, log.offsets().log_end, min_insync)
    {
        log.advance_high_watermark(high_watermark);
    }
}

/// Sends the controller the ISR changes this shard's leaders call for, each
/// on the blocking pool (the controller call waits for the commit); the
/// committed ISR comes back in an image.
fn propose_isr_changes(broker: &Rc<Broker>) {
    let image = broker.controller.image();
    for partition in owned_leaders(broker) {
        let Ok(log) = broker.shard.local_log(&partition) else {
            continue;
        };
        let Some(proposal) = broker
            .replication
            .propose(&partition, log.high_watermark(), &image)
        else {
            continue;
        };
        tracing::info!(
            %partition,
            isr = ?proposal.isr,
            "proposing an ISR change"
        );
        glommio::spawn_local(send_isr_change(Rc::clone(broker), partition, proposal)).detach();
    }
}

/// What the leader does after the controller answered an ISR change with
/// an error (Kafka's `handleAlterPartitionError`).
#[derive(Debug, PartialEq, Eq)]
enum AfterRefusal {
    /// Not applied, and the leader's state is current: decide again.
    Forget,
    /// The controller has a newer partition state: the next image brings
    /// it and ends the proposal.
    AwaitImage,
    /// Whether it was committed is unknown (a timeout, no controller):
    /// send it again while it is still the one in flight. Forgetting it
    /// could drop an expansion the controller did commit, and the leader
    /// would then acknowledge records the new member lacks.
    Resend,
}

fn after_refusal(code: i16) -> AfterRefusal {
    use kafka_protocol::ResponseError as E;
    if code == E::IneligibleReplica.code() {
        AfterRefusal::Forget
    } else if [
        E::UnknownTopicOrPartition.code(),
        E::NotLeaderOrFollower.code(),
        E::FencedLeaderEpoch.code(),
        E::InvalidUpdateVersion.code(),
        E::StaleBrokerEpoch.code(),
    ]
    .contains(&code)
    {
        AfterRefusal::AwaitImage
    } else {
        AfterRefusal::Resend
    }
}

/// Sends `proposal` for `partition` to the controller until it is
/// answered for sure, on the blocking pool (the controller call waits for
/// the commit); the committed ISR comes back in an image.
async fn send_isr_change(broker: Rc<Broker>, partition: TopicPartition, proposal: IsrChange) {
    loop {
        let controller = Arc::clone(&broker.controller);
        let sent = IsrProposal {
            topic: partition.topic.to_string(),
            partition: partition.partition,
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            isr: proposal.isr.clone(),
            broker_epochs: proposal.broker_epochs.clone(),
            // A leader that proposes has taken the leadership: recovered.
            leader_recovery_state: LeaderRecoveryState::Recovered,
        };
        let outcome = glommio::executor()
            .spawn_blocking(move || controller.alter_partition(&sent, ALTER_PARTITION_TIMEOUT))
            .await;
        let Err(error) = outcome else {
            return;
        };
        tracing::info!(%partition, %error, "ISR change not committed");
        match after_refusal(error.code) {
            AfterRefusal::Forget => {
                broker.replication.proposal_failed(&partition, &proposal);
                return;
            }
            AfterRefusal::AwaitImage => return,
            AfterRefusal::Resend => {
                glommio::timer::sleep(ROLE_RETRY_INTERVAL).await;
                if broker.is_stopping() || !broker.replication.in_flight(&partition, &proposal) {
                    return;
                }
            }
        }
    }
}

/// How long one ISR change may take to commit.
const ALTER_PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

/// The partitions this shard owns and this broker leads.
fn owned_leaders(broker: &Broker) -> Vec<TopicPartition> {
    let shard = broker.shard.id();
    broker
        .replication
        .lock()
        .keys()
        .filter(|partition| broker.shard.owner_of(partition) == shard)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::ResponseError;

    use super::*;

    #[test]
    fn only_an_ineligible_replica_forgets_a_proposal_and_unknown_outcomes_resend_it() {
        assert_eq!(
            after_refusal(ResponseError::IneligibleReplica.code()),
            AfterRefusal::Forget
        );
        for stale in [
            ResponseError::InvalidUpdateVersion,
            ResponseError::FencedLeaderEpoch,
            ResponseError::NotLeaderOrFollower,
        ] {
            assert_eq!(after_refusal(stale.code()), AfterRefusal::AwaitImage);
        }
        for unknown in [ResponseError::RequestTimedOut, ResponseError::NotController] {
            assert_eq!(after_refusal(unknown.code()), AfterRefusal::Resend);
        }
    }
}
