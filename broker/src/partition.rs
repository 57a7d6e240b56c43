//! The partition layer: what handlers call to append to and read from a
//! partition, between the Kafka handlers above and the engine's shards
//! below.
//!
//! Whether this broker leads a partition, in which leader epoch and with
//! which in-sync replicas, comes from the metadata image's partition
//! records, never from constants: a single node is the same code, with
//! this node as the leader and the whole ISR as data. Every operation
//! checks the client's view first (`NOT_LEADER_OR_FOLLOWER` on a broker
//! that does not lead; `FENCED_LEADER_EPOCH` / `UNKNOWN_LEADER_EPOCH` for a
//! stale or future `current_leader_epoch`, KIP-320), then runs on the
//! owning shard. Fetch checks each partition here once ([`led_here`]),
//! before it shares out the response's budget, and then reads from the
//! engine up to the high watermark, which is also the last stable offset
//! while there are no transactions. An `acks=-1` append answers once the
//! high watermark, which the ISR moves ([`crate::replication`]), passes
//! it.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::log::AppendInfo;
use fjord_engine::shard::{AppendRequest, LocalFuture, ReadBound};
use fjord_engine::{LeaderEpoch, TopicPartition};
use kafka_protocol::ResponseError;

use crate::error::engine_error_code;
use crate::metadata::image::PartitionImage;
use crate::metadata::records::BrokerId;
use crate::replication;
use crate::server::Broker;

/// `current_leader_epoch` when the client does not know it (`-1`): not
/// checked, as Kafka.
pub const NO_LEADER_EPOCH: i32 = -1;

/// A partition's replication state as this broker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader, or [`BrokerId::NONE`].
    pub leader: BrokerId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// Every replica, preferred leader first.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
}

impl From<&PartitionImage> for PartitionState {
    fn from(image: &PartitionImage) -> Self {
        Self {
            leader: image.leader,
            leader_epoch: image.leader_epoch,
            replicas: image.replicas.clone(),
            isr: image.isr.clone(),
        }
    }
}

/// Why a partition operation was refused or failed.
#[derive(Debug)]
pub enum PartitionError {
    /// The topic or partition does not exist.
    Unknown,
    /// This broker does not lead the partition; the leader the image
    /// names (or [`BrokerId::NONE`]) and its epoch, for clients to go there
    /// (KIP-951).
    NotLeader {
        /// The current leader.
        leader: BrokerId,
        /// Its epoch.
        leader_epoch: LeaderEpoch,
    },
    /// The client's leader epoch is older than the partition's.
    FencedLeaderEpoch,
    /// The client's leader epoch is newer than this broker knows.
    UnknownLeaderEpoch,
    /// acks=all with the ISR smaller than `min.insync.replicas`: nothing
    /// was appended.
    NotEnoughReplicas,
    /// acks=all appended, but the ISR became smaller than
    /// `min.insync.replicas` before the ISR had the records.
    NotEnoughReplicasAfterAppend,
    /// acks=all appended, but the ISR did not have the records within the
    /// request's timeout.
    TimedOut,
    /// The engine failed.
    Engine(fjord_engine::Error),
}

impl PartitionError {
    /// The Kafka error code a client acts on.
    #[must_use]
    pub fn code(&self) -> i16 {
        match self {
            Self::Unknown => ResponseError::UnknownTopicOrPartition.code(),
            Self::NotLeader { .. } => ResponseError::NotLeaderOrFollower.code(),
            Self::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch.code(),
            Self::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch.code(),
            Self::NotEnoughReplicas => ResponseError::NotEnoughReplicas.code(),
            Self::NotEnoughReplicasAfterAppend => {
                ResponseError::NotEnoughReplicasAfterAppend.code()
            }
            Self::TimedOut => ResponseError::RequestTimedOut.code(),
            Self::Engine(error) => engine_error_code(error),
        }
    }
}

impl std::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("unknown topic or partition"),
            Self::NotLeader { .. } => f.write_str("this broker does not lead the partition"),
            Self::FencedLeaderEpoch => f.write_str("the leader epoch is older than the leader's"),
            Self::UnknownLeaderEpoch => f.write_str("the leader epoch is newer than the leader's"),
            Self::NotEnoughReplicas => {
                f.write_str("the in-sync replicas are fewer than min.insync.replicas")
            }
            Self::NotEnoughReplicasAfterAppend => f.write_str(
                "appended, but the in-sync replicas fell below min.insync.replicas before they had it",
            ),
            Self::TimedOut => f.write_str("the in-sync replicas did not have it in time"),
            Self::Engine(error) => error.fmt(f),
        }
    }
}

impl From<fjord_engine::Error> for PartitionError {
    fn from(error: fjord_engine::Error) -> Self {
        Self::Engine(error)
    }
}

/// The state of `partition` in the current metadata image.
///
/// # Errors
/// [`PartitionError::Unknown`] if its topic or index does not exist.
pub fn state(
    broker: &Broker,
    partition: &TopicPartition,
) -> Result<PartitionState, PartitionError> {
    let image = broker.controller.image();
    image
        .topics
        .get(&*partition.topic)
        .and_then(|topic| topic.partition(partition.partition))
        .map(PartitionState::from)
        .ok_or(PartitionError::Unknown)
}

/// The state of `partition` if this broker leads it in the epoch the
/// client names (`current_leader_epoch`, or [`NO_LEADER_EPOCH`]).
///
/// # Errors
/// [`PartitionError::Unknown`], [`PartitionError::NotLeader`] (naming the
/// leader),
/// [`PartitionError::FencedLeaderEpoch`] or
/// [`PartitionError::UnknownLeaderEpoch`].
pub fn led_here(
    broker: &Broker,
    partition: &TopicPartition,
    current_leader_epoch: i32,
) -> Result<PartitionState, PartitionError> {
    let state = state(broker, partition)?;
    if current_leader_epoch != NO_LEADER_EPOCH {
        if current_leader_epoch < state.leader_epoch.0 {
            return Err(PartitionError::FencedLeaderEpoch);
        }
        if current_leader_epoch > state.leader_epoch.0 {
            return Err(PartitionError::UnknownLeaderEpoch);
        }
    }
    if state.leader != BrokerId(broker.config.node_id) {
        return Err(PartitionError::NotLeader {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        });
    }
    Ok(state)
}

/// Whether this broker is the partition's only replica: then an append is
/// committed (the high watermark passes it) as soon as it is written. With
/// other replicas, even outside the ISR, the leader's replication state
/// decides ([`replication::Replication::high_watermark`]): an ISR
/// expansion in flight counts, or a record could be acknowledged that the
/// joining member lacks.
fn sole_replica(broker: &Broker, state: &PartitionState) -> bool {
    state.replicas == [BrokerId(broker.config.node_id)]
}

/// An append's answer: its offsets once it is as durable as its `acks`
/// asked.
pub type PendingAppend = LocalFuture<Result<AppendInfo, PartitionError>>;

/// How long a group coordinator's write may wait for the ISR (Kafka's
/// `offsets.commit.timeout.ms` default).
pub const OFFSETS_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The engine append of a request's batches for `partition`, which this
/// broker leads in `state`: flushed for `acks=-1` unless the topic sets
/// `write.caching`, committed at once when this broker is the whole ISR
/// and `min.insync.replicas` allows it.
///
/// # Errors
/// [`PartitionError::NotEnoughReplicas`] for `acks=-1` when the ISR is
/// smaller than `min.insync.replicas`.
fn leader_append(
    broker: &Broker,
    state: &PartitionState,
    partition: TopicPartition,
    batches: Vec<Bytes>,
    acks: i16,
) -> Result<AppendRequest, PartitionError> {
    let min_insync = replication::min_insync_replicas(broker, &partition.topic);
    if acks == -1 && state.isr.len() < min_insync {
        return Err(PartitionError::NotEnoughReplicas);
    }
    Ok(AppendRequest {
        flush: acks == -1 && !replication::write_caching(broker, &partition.topic),
        advance_high_watermark: sole_replica(broker, state) && min_insync <= 1,
        partition,
        batches,
        leader_epoch: state.leader_epoch,
    })
}

/// Hands a request's batches for `partition`, which this broker was just
/// checked ([`led_here`]) to lead in `state`, to its shard, and returns,
/// once they have their place in the partition's admission line, the
/// future of their answer: `acks=1` answers once they are written,
/// `acks=-1` once every ISR member has them (flushed, unless the topic
/// sets `write.caching`) and the high watermark passed them, within
/// `timeout`. An `acks=-1` append is refused with `NOT_ENOUGH_REPLICAS`
/// when the ISR is smaller than `min.insync.replicas`, before anything is
/// appended.
pub async fn submit_append_as_leader(
    broker: &Rc<Broker>,
    state: &PartitionState,
    partition: TopicPartition,
    batches: Vec<Bytes>,
    acks: i16,
    timeout: Duration,
) -> PendingAppend {
    let deadline = Instant::now() + timeout;
    let append = match leader_append(broker, state, partition.clone(), batches, acks) {
        Ok(append) => append,
        Err(error) => return Box::pin(async { Err(error) }),
    };
    // An only replica's append is committed once written (flushed for
    // acks=all): the engine moves the high watermark itself.
    let committed_when_written = append.advance_high_watermark;
    let written = broker.shard.submit_append(append).await;
    let replicated = !sole_replica(broker, state);
    let broker = Rc::clone(broker);
    let leader_epoch = state.leader_epoch;
    Box::pin(async move {
        let info = written.await?;
        if replicated {
            replication::commit_written(&broker, &partition).await?;
        }
        // A duplicate's original may still be on its way to the disk.
        if acks == -1 && (!committed_when_written || info.duplicate) {
            await_committed(
                &broker,
                &partition,
                leader_epoch,
                info.last_offset,
                deadline,
            )
            .await?;
        }
        Ok(info)
    })
}

/// Waits until the high watermark of `partition` passes `last_offset`,
/// while this broker leads it in `leader_epoch`, until `deadline`.
///
/// # Errors
/// [`PartitionError::NotLeader`] once another broker leads,
/// [`PartitionError::NotEnoughReplicasAfterAppend`] once the ISR is
/// smaller than `min.insync.replicas`, [`PartitionError::TimedOut`].
async fn await_committed(
    broker: &Broker,
    partition: &TopicPartition,
    leader_epoch: LeaderEpoch,
    last_offset: fjord_engine::Offset,
    deadline: Instant,
) -> Result<(), PartitionError> {
    let mut published = broker.controller.image_published();
    loop {
        if broker
            .shard
            .offsets(partition.clone())
            .await?
            .high_watermark
            > last_offset
        {
            return Ok(());
        }
        let state = state(broker, partition)?;
        if state.leader != BrokerId(broker.config.node_id) || state.leader_epoch != leader_epoch {
            return Err(PartitionError::NotLeader {
                leader: state.leader,
                leader_epoch: state.leader_epoch,
            });
        }
        if state.isr.len() < replication::min_insync_replicas(broker, &partition.topic) {
            return Err(PartitionError::NotEnoughReplicasAfterAppend);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PartitionError::TimedOut);
        }
        // The high watermark moved, or the image did (leader, ISR).
        futures_lite::future::or(
            broker.shard.wait_for_any_data(
                vec![(partition.clone(), last_offset)],
                ReadBound::HighWatermark,
                left,
            ),
            async {
                if published.changed().await.is_err() {
                    glommio::timer::sleep(left).await;
                }
            },
        )
        .await;
    }
}

/// Appends as leader and waits for the answer, at most
/// [`OFFSETS_COMMIT_TIMEOUT`] for the ISR; see
/// [`submit_append_as_leader`].
///
/// # Errors
/// As [`led_here`] and [`submit_append_as_leader`], or the engine's.
pub async fn append(
    broker: &Broker,
    partition: TopicPartition,
    batches: Vec<Bytes>,
    acks: i16,
) -> Result<AppendInfo, PartitionError> {
    let deadline = Instant::now() + OFFSETS_COMMIT_TIMEOUT;
    let state = led_here(broker, &partition, NO_LEADER_EPOCH)?;
    let append = leader_append(broker, &state, partition.clone(), batches, acks)?;
    let committed_when_written = append.advance_high_watermark;
    let info = broker.shard.submit_append(append).await.await?;
    if !sole_replica(broker, &state) {
        replication::commit_written(broker, &partition).await?;
    }
    if acks == -1 && (!committed_when_written || info.duplicate) {
        await_committed(
            broker,
            &partition,
            state.leader_epoch,
            info.last_offset,
            deadline,
        )
        .await?;
    }
    Ok(info)
}

/// Raises the high watermark of every partition this shard recovered whose
/// only replica is this broker to its log end, before the shard serves
/// anyone: every record recovery kept is then on every in-sync replica.
/// Without this, records acknowledged before a restart would stay
/// invisible to consumers until the next produce. A partition with other
/// replicas learns its high watermark from them
/// ([`crate::replication`]).
pub async fn commit_recovered_partitions(broker: &Broker) {
    let Ok(partitions) = broker.shard.list_partitions(broker.shard.id()).await else {
        return;
    };
    for partition in partitions {
        let sole = state(broker, &partition).is_ok_and(|state| {
            sole_replica(broker, &state)
                && replication::min_insync_replicas(broker, &partition.topic) <= 1
        });
        if let (true, Ok(log)) = (sole, broker.shard.local_log(&partition)) {
            log.advance_high_watermark(log.offsets().log_end);
        }
    }
}
