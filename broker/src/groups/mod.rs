//! The group coordinator: consumer groups (Kafka's classic protocol) and
//! their committed offsets, kept in the internal topic `__consumer_offsets`.
//!
//! A group belongs to the partition `abs(hashCode(group id)) %
//! offsets.topic.num.partitions` (Kafka's rule, so tools that compute it
//! agree), and every change to it is a record in that partition: offset
//! commits, group metadata after each completed rebalance, tombstones for
//! deletions and expiry, all in Kafka's schemas ([`records`]). A commit is
//! acknowledged as an acks=all write: once its record is committed on the
//! partition's in-sync replicas.
//!
//! This broker coordinates the groups of the partitions it leads, and
//! follows their leadership as the metadata images change it
//! ([`leadership`]): a partition it comes to lead is read back from the
//! log (its groups answer `COORDINATOR_LOAD_IN_PROGRESS` meanwhile), one
//! it stops leading is dropped (`NOT_COORDINATOR`, so clients look the
//! coordinator up again). Every write names the leader epoch whose state
//! it was decided on ([`CoordinatorEpoch`]) and is refused in any other:
//! a decision made on one leadership's state never lands in another's log.
//!
//! A connection's requests run on whichever shard accepted it, so the state
//! is shared by all shards: one [`std::sync::Mutex`] per `__consumer_offsets`
//! partition, never held across an `.await`. Requests that wait (JoinGroup
//! until the join phase ends, SyncGroup until the leader assigns) listen on
//! the group's [`event_listener::Event`] with a glommio timer as a bound;
//! shard 0 ticks every [`TICK`] to end join phases at their deadline and
//! expire sessions, and every `offsets.retention.check.interval.ms` to
//! expire offsets of empty groups.

pub mod consumer;
pub mod group;
pub mod leadership;
pub mod records;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::batch::{build_batch, records as batch_records, BatchHeader};
use fjord_engine::shard::{ReadBound, ReadRequest};
use fjord_engine::{LeaderEpoch, TimestampMs, TopicPartition};
use kafka_protocol::ResponseError;

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::metadata::records::BrokerId;
use crate::partition;
use crate::server::Broker;
use crate::topics::CONSUMER_OFFSETS_TOPIC;
use group::{CommittedOffset, Group, GroupTimings};
use records::{OffsetValue, RecordDecodeError, RecordKey};

/// How often shard 0 ends join phases at their deadline and expires
/// sessions: the precision of those timeouts.
pub const TICK: Duration = Duration::from_millis(100);
/// Bytes read per request while loading a partition.
const LOAD_READ_BYTES: usize = 1 << 20;
/// `offset.metadata.max.bytes`' default: longer commit metadata is refused.
pub const OFFSET_METADATA_MAX_BYTES: usize = 4096;

/// Kafka's group -> `__consumer_offsets` partition:
/// `Utils.abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode`
/// over UTF-16 code units and `Utils.abs` = `& 0x7fffffff`.
#[must_use]
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let hash = group_id.encode_utf16().fold(0_i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) % partitions.max(1)
}

/// The coordinator settings from the broker configuration.
#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    /// `offsets.topic.num.partitions`.
    pub partitions: i32,
    /// Join timing.
    pub timings: GroupTimings,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout: Duration,
    /// `offsets.retention.minutes`.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub retention_check_interval: Duration,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848).
    pub consumer_heartbeat_interval: Duration,
    /// `group.consumer.session.timeout.ms` (KIP-848).
    pub consumer_session_timeout: Duration,
    /// `group.consumer.assignors`, short names, the first the default.
    pub consumer_assignors: Vec<String>,
}

impl CoordinatorSettings {
    /// From the broker configuration.
    #[must_use]
    pub fn from_config(config: &BrokerConfig) -> Self {
        let config = &config.group_coordinator;
        Self {
            partitions: config.offsets_topic_num_partitions,
            timings: GroupTimings {
                initial_rebalance_delay: config.group_initial_rebalance_delay,
            },
            min_session_timeout: config.group_min_session_timeout,
            max_session_timeout: config.group_max_session_timeout,
            offsets_retention: config.offsets_retention,
            retention_check_interval: config.offsets_retention_check_interval,
            consumer_heartbeat_interval: config.consumer_heartbeat_interval,
            consumer_session_timeout: config.consumer_session_timeout,
            consumer_assignors: config.consumer_assignors.clone(),
        }
    }
}

/// How this broker stands towards one `__consumer_offsets` partition, as
/// the last reconcile round ([`leadership`]) or load left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Coordination {
    /// No metadata image looked at yet (the broker is starting):
    /// `COORDINATOR_LOAD_IN_PROGRESS`.
    #[default]
    Starting,
    /// Another broker leads the partition, or none does: `NOT_COORDINATOR`.
    NotCoordinator,
    /// Led here in this epoch; its groups are being read back from the
    /// log: `COORDINATOR_LOAD_IN_PROGRESS`.
    Loading(LeaderEpoch),
    /// Led here in this epoch, but reading it back failed; the next round
    /// tries again: `COORDINATOR_LOAD_IN_PROGRESS` (forgetting commits
    /// would be worse than waiting).
    LoadFailed(LeaderEpoch),
    /// Led here in this epoch and loaded: its groups are served.
    Active(LeaderEpoch),
}

impl Coordination {
    /// The leader epoch whose groups are served.
    ///
    /// # Errors
    /// The Kafka error a group request gets while they are not served.
    pub fn served(self) -> GroupResult<LeaderEpoch> {
        match self {
            Self::Active(leader_epoch) => Ok(leader_epoch),
            Self::NotCoordinator => Err(ResponseError::NotCoordinator),
            Self::Starting | Self::Loading(_) | Self::LoadFailed(_) => {
                Err(ResponseError::CoordinatorLoadInProgress)
            }
        }
    }
}

/// The groups of one `__consumer_offsets` partition.
#[derive(Debug, Default)]
pub struct PartitionGroups {
    /// Whether this broker coordinates them, and in which leader epoch.
    pub coordination: Coordination,
    /// Groups by id (empty unless [`Coordination::Active`]).
    pub groups: HashMap<String, Group>,
}

/// A `__consumer_offsets` partition and the leader epoch in which this
/// broker loaded it: what a write of the coordinator is bound to. Kafka's
/// coordinator epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoordinatorEpoch {
    /// The partition.
    pub partition: i32,
    /// The leader epoch its groups were loaded in.
    pub leader_epoch: LeaderEpoch,
}

/// The coordinator shared by every shard; see the module documentation.
#[derive(Debug)]
pub struct GroupCoordinator {
    /// Its settings.
    pub settings: CoordinatorSettings,
    partitions: Vec<Mutex<PartitionGroups>>,
    /// Whether this broker is creating `__consumer_offsets` (at the first
    /// FindCoordinator, as Kafka, so that the brokers of a cluster started
    /// together are all there to hold its replicas).
    creating_offsets_topic: std::sync::atomic::AtomicBool,
}

/// A failed group operation: the Kafka error.
pub type GroupResult<T> = Result<T, ResponseError>;

impl GroupCoordinator {
    /// A coordinator with nothing loaded yet.
    #[must_use]
    pub fn new(settings: CoordinatorSettings) -> Self {
        let count = usize::try_from(settings.partitions.max(1)).unwrap_or(1);
        Self {
            settings,
            partitions: (0..count).map(|_| Mutex::default()).collect(),
            creating_offsets_topic: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Claims the creation of `__consumer_offsets` for the caller: `false`
    /// while another request of this broker is creating it.
    pub fn claim_offsets_topic_creation(&self) -> bool {
        !self
            .creating_offsets_topic
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Ends a creation claimed with
    /// [`GroupCoordinator::claim_offsets_topic_creation`].
    pub fn release_offsets_topic_creation(&self) {
        self.creating_offsets_topic
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The `__consumer_offsets` partition of `group_id`.
    #[must_use]
    pub fn partition_of(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.settings.partitions)
    }

    fn lock_partition(&self, partition: i32) -> MutexGuard<'_, PartitionGroups> {
        let index = usize::try_from(partition).unwrap_or(0) % self.partitions.len();
        // Every change under the lock is a few field updates that cannot
        // panic half-way; a poisoned lock still holds consistent groups.
        self.partitions[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How this broker stands towards `__consumer_offsets` partition
    /// `partition`.
    #[must_use]
    pub fn coordination(&self, partition: i32) -> Coordination {
        self.lock_partition(partition).coordination
    }

    /// Runs `change` on the groups of `group_id`'s partition.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` if this broker does not lead the partition,
    /// `COORDINATOR_LOAD_IN_PROGRESS` until it is loaded.
    pub fn with_partition<T>(
        &self,
        group_id: &str,
        change: impl FnOnce(&mut PartitionGroups) -> T,
    ) -> GroupResult<T> {
        self.with_partition_for_write(group_id, change)
            .map(|(answer, _)| answer)
    }

    /// [`Self::with_partition`] for a change to write: also returns the
    /// coordinator epoch the state it saw belongs to, for [`append`].
    ///
    /// # Errors
    /// As [`Self::with_partition`].
    pub fn with_partition_for_write<T>(
        &self,
        group_id: &str,
        change: impl FnOnce(&mut PartitionGroups) -> T,
    ) -> GroupResult<(T, CoordinatorEpoch)> {
        let index = self.partition_of(group_id);
        let mut partition = self.lock_partition(index);
        let leader_epoch = partition.coordination.served()?;
        let epoch = CoordinatorEpoch {
            partition: index,
            leader_epoch,
        };
        Ok((change(&mut partition), epoch))
    }

    /// Runs `change` on the groups of `epoch`'s partition if they are
    /// still those of that leader epoch: what applies a write's outcome.
    ///
    /// # Errors
    /// `NOT_COORDINATOR` once the partition was unloaded or loaded again.
    pub fn with_partition_in<T>(
        &self,
        epoch: CoordinatorEpoch,
        change: impl FnOnce(&mut PartitionGroups) -> T,
    ) -> GroupResult<T> {
        let mut partition = self.lock_partition(epoch.partition);
        if partition.coordination != Coordination::Active(epoch.leader_epoch) {
            return Err(ResponseError::NotCoordinator);
        }
        Ok(change(&mut partition))
    }

    /// Runs `change` on `group_id` if it exists.
    ///
    /// # Errors
    /// As [`Self::with_partition`].
    pub fn with_group<T>(
        &self,
        group_id: &str,
        change: impl FnOnce(Option<&mut Group>) -> T,
    ) -> GroupResult<T> {
        self.with_partition(group_id, |partition| {
            change(partition.groups.get_mut(group_id))
        })
    }

    /// Runs `visit` on every group of every partition coordinated here;
    /// `None` if some partition is still loading.
    pub fn visit_groups(&self, mut visit: impl FnMut(&Group)) -> Option<()> {
        for partition in 0..self.settings.partitions {
            let partition = self.lock_partition(partition);
            match partition.coordination.served() {
                Ok(_) => partition.groups.values().for_each(&mut visit),
                Err(ResponseError::NotCoordinator) => {}
                Err(_) => return None,
            }
        }
        Some(())
    }

    /// Checks a session timeout against the broker's bounds.
    ///
    /// # Errors
    /// `INVALID_SESSION_TIMEOUT` outside them.
    pub fn check_session_timeout(&self, timeout_ms: i32) -> GroupResult<Duration> {
        let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        if timeout < self.settings.min_session_timeout
            || timeout > self.settings.max_session_timeout
        {
            return Err(ResponseError::InvalidSessionTimeout);
        }
        Ok(timeout)
    }
}

/// Re-runs `check` on `group_id` each time the group changes until it
/// answers, for at most `timeout`. `Ok(None)` if the time ran out or the
/// broker is shutting down (a waiting request must not hold it up).
///
/// # Errors
/// As [`GroupCoordinator::with_partition`]: `NOT_COORDINATOR` once the
/// partition is unloaded, which wakes every waiter.
pub async fn wait_for<T>(
    broker: &Broker,
    group_id: &str,
    timeout: Duration,
    mut check: impl FnMut(Option<&mut Group>) -> Option<T>,
) -> GroupResult<Option<T>> {
    let coordinator = &broker.groups;
    let deadline = Instant::now() + timeout;
    loop {
        if broker.is_stopping() {
            return Ok(None);
        }
        let (answer, listener) = coordinator.with_group(group_id, |group| match group {
            Some(group) => {
                let listener = group.changed.listen();
                (check(Some(group)), Some(listener))
            }
            None => (check(None), None),
        })?;
        if let Some(answer) = answer {
            return Ok(Some(answer));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(None);
        }
        // Looks at the stop flag at least every tick.
        let pause = glommio::timer::sleep(remaining.min(TICK));
        match listener {
            Some(listener) => futures_lite::future::or(listener, pause).await,
            None => pause.await,
        }
    }
}

/// A record to write: key and value (`None`: a tombstone).
pub type KeyValueRecord = (Vec<u8>, Option<Vec<u8>>);

/// Appends `records` as one batch to `epoch`'s `__consumer_offsets`
/// partition as an acks=all write, if this broker still leads it in that
/// epoch, and waits until the write is committed. Returns the offset of
/// the first record.
///
/// # Errors
/// `NOT_COORDINATOR` if the partition is no longer led here in `epoch`
/// (by the image or by the coordinator's own state, which follows the
/// image a round later); else the coordinator error Kafka maps the
/// partition's error to ([`write_error`]).
pub async fn append(
    broker: &Broker,
    epoch: CoordinatorEpoch,
    records: &[KeyValueRecord],
) -> GroupResult<i64> {
    if records.is_empty() {
        return Ok(-1);
    }
    let partition = TopicPartition::new(CONSUMER_OFFSETS_TOPIC, epoch.partition);
    let node = BrokerId(broker.config.node_id);
    let led_in_epoch = partition::state(broker, &partition)
        .is_ok_and(|state| state.leader == node && state.leader_epoch == epoch.leader_epoch);
    let loaded_in_epoch =
        broker.groups.coordination(epoch.partition) == Coordination::Active(epoch.leader_epoch);
    if !(led_in_epoch && loaded_in_epoch) {
        return Err(ResponseError::NotCoordinator);
    }
    let pairs: Vec<_> = records
        .iter()
        .map(|(key, value)| (Some(key.as_slice()), value.as_deref()))
        .collect();
    let batch = build_batch(&pairs, TimestampMs::now(), None);
    // acks=-1: answered once the high watermark passes the batch.
    match partition::append(broker, partition.clone(), vec![Bytes::from(batch)], -1).await {
        Ok(info) => Ok(info.base_offset.0),
        Err(error) => {
            tracing::warn!(%partition, %error, "cannot write to the group log");
            Err(write_error(error.code()))
        }
    }
}

/// The coordinator error for a write to the group log that failed with
/// `code`, as Kafka's group coordinator maps them
/// (`GroupCoordinatorService.handleOperationException`, and
/// `GroupMetadataManager` for `NOT_ENOUGH_REPLICAS_AFTER_APPEND`): a write
/// that could not be replicated is retried against the same coordinator
/// (`COORDINATOR_NOT_AVAILABLE`), one whose partition moved or whose disk
/// failed sends the client to look the coordinator up again
/// (`NOT_COORDINATOR`), and a batch too large is the server's fault.
#[must_use]
pub fn write_error(code: i16) -> ResponseError {
    use ResponseError as E;
    match E::try_from_code(code) {
        Some(
            E::UnknownTopicOrPartition
            | E::NotEnoughReplicas
            | E::NotEnoughReplicasAfterAppend
            | E::RequestTimedOut,
        ) => E::CoordinatorNotAvailable,
        Some(
            E::NotLeaderOrFollower
            | E::FencedLeaderEpoch
            | E::UnknownLeaderEpoch
            | E::KafkaStorageError,
        ) => E::NotCoordinator,
        Some(E::MessageTooLarge | E::RecordListTooLarge | E::InvalidFetchSize | E::Unknown(_))
        | None => E::UnknownServerError,
        Some(other) => other,
    }
}

/// Writes the metadata of `group_id` as it is now (or a tombstone if it is
/// gone).
///
/// # Errors
/// As [`GroupCoordinator::with_partition`] and [`append`].
pub async fn store_group(broker: &Broker, group_id: &str) -> GroupResult<()> {
    let (value, epoch) = broker
        .groups
        .with_partition_for_write(group_id, |partition| {
            partition
                .groups
                .get(group_id)
                .map(|group| group.to_stored().encode())
        })?;
    let key = RecordKey::Group(group_id.to_owned()).encode();
    append(broker, epoch, &[(key, value)]).await?;
    Ok(())
}

/// Reads `__consumer_offsets` partition `index` back into groups, up to
/// its log end: what a new leader's coordinator starts from, since its
/// log is the one every replica will agree with.
///
/// # Errors
/// The engine's, if the partition cannot be read.
async fn read_partition(
    broker: &Broker,
    index: i32,
) -> Result<HashMap<String, Group>, BrokerError> {
    let partition = TopicPartition::new(CONSUMER_OFFSETS_TOPIC, index);
    let offsets = broker.shard.offsets(partition.clone()).await?;
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut next = offsets.log_start;
    let now = Instant::now();
    while next < offsets.log_end {
        let read = ReadRequest {
            partition: partition.clone(),
            offset: next,
            max_bytes: LOAD_READ_BYTES,
            upper_bound: offsets.log_end,
            bound: ReadBound::LogEnd,
        };
        let batches = broker.shard.read(read).await?.batches;
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            let header = BatchHeader::parse(&batch)?;
            next = header.last_offset().next();
            if header.is_control() {
                continue;
            }
            let records = match batch_records(&batch) {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(%partition, offset = header.base_offset.0, %error, "skipping a batch of the group log");
                    continue;
                }
            };
            for record in records {
                let record = record?;
                let offset = header.base_offset.0 + i64::from(record.offset_delta);
                if let Err(error) = apply_record(&mut groups, record.key, record.value, offset, now)
                {
                    tracing::warn!(%partition, offset, %error, "skipping a record of the group log");
                }
            }
        }
    }
    Ok(groups)
}

fn apply_record(
    groups: &mut HashMap<String, Group>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    record_offset: i64,
    now: Instant,
) -> Result<(), RecordDecodeError> {
    let key = RecordKey::decode(key.ok_or(RecordDecodeError::MissingKey)?)?;
    match key {
        RecordKey::Offset {
            group,
            topic,
            partition,
        } => match value {
            Some(value) => {
                let value = OffsetValue::decode(value)?;
                groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(group))
                    .apply_offset(
                        topic,
                        partition,
                        CommittedOffset {
                            value,
                            record_offset,
                        },
                    );
            }
            None => {
                if let Some(group) = groups.get_mut(&group) {
                    group.offsets.remove(&(topic, partition));
                }
            }
        },
        RecordKey::Group(id) => match value {
            Some(value) => {
                let stored = records::GroupValue::decode(value)?;
                let offsets = groups
                    .remove(&id)
                    .map(|group| group.offsets)
                    .unwrap_or_default();
                let mut group = Group::from_stored(id.clone(), stored, now);
                group.offsets = offsets;
                groups.insert(id, group);
            }
            None => {
                groups.remove(&id);
            }
        },
    }
    Ok(())
}

/// Shard 0's coordinator work until shutdown: following the leadership of
/// `__consumer_offsets` ([`leadership::follow`], whose first round is the
/// load at start) and the expiry of members and offsets ([`run_expiry`]).
pub async fn run(broker: Rc<Broker>) {
    let following = glommio::spawn_local(leadership::follow(Rc::clone(&broker)));
    run_expiry(broker).await;
    following.await;
}

/// Shard 0's background work until shutdown: every [`TICK`] ends join
/// phases at their deadline and expires sessions (storing groups that
/// became empty); every retention check interval expires offsets of empty
/// groups and removes empty groups with no offsets left, writing their
/// tombstones.
pub async fn run_expiry(broker: Rc<Broker>) {
    let mut next_retention_check = Instant::now() + broker.groups.settings.retention_check_interval;
    while !broker.is_stopping() {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        let check_retention = now >= next_retention_check;
        if check_retention {
            next_retention_check = now + broker.groups.settings.retention_check_interval;
        }
        for partition in 0..broker.groups.settings.partitions {
            let Some(expired) = expire_partition(&broker.groups, partition, now, check_retention)
            else {
                continue;
            };
            for group_id in expired.emptied {
                if let Err(error) = store_group(&broker, &group_id).await {
                    tracing::warn!(group = %group_id, ?error, "cannot store the emptied group");
                }
            }
            if let Err(error) = append(&broker, expired.epoch, &expired.tombstones).await {
                tracing::warn!(
                    partition,
                    ?error,
                    "cannot write expired offsets' tombstones"
                );
            }
        }
    }
}

/// What one expiry pass over a partition's groups left to write.
struct Expired {
    /// The leadership the pass ran in.
    epoch: CoordinatorEpoch,
    /// Groups that lost their last member.
    emptied: Vec<String>,
    /// Tombstones of expired offsets and removed groups.
    tombstones: Vec<KeyValueRecord>,
}

/// Expires members, and offsets if `check_retention`, of `partition`'s
/// groups; `None` unless they are served here.
fn expire_partition(
    coordinator: &GroupCoordinator,
    partition: i32,
    now: Instant,
    check_retention: bool,
) -> Option<Expired> {
    let settings = &coordinator.settings;
    let mut state = coordinator.lock_partition(partition);
    let epoch = CoordinatorEpoch {
        partition,
        leader_epoch: state.coordination.served().ok()?,
    };
    let mut emptied = Vec::new();
    let mut tombstones = Vec::new();
    let now_ms = TimestampMs::now().0;
    let retention_ms = i64::try_from(settings.offsets_retention.as_millis()).unwrap_or(i64::MAX);
    let mut dead = Vec::new();
    for (id, group) in &mut state.groups {
        let (_, became_empty) = group.expire_members(settings.timings, now);
        if became_empty {
            emptied.push(id.clone());
        }
        if let Some(consumer) = &mut group.consumer {
            consumer.expire_members(settings.consumer_session_timeout, now);
        }
        if !check_retention || !group.is_empty() {
            continue;
        }
        // Kafka: a group with a protocol expires all its offsets once it
        // has been empty for the retention period; offsets committed
        // outside any group (simple consumers) expire one by one.
        let expired: Vec<(String, i32)> = group
            .offsets
            .iter()
            .filter(|(_, committed)| {
                let since = if group.protocol_type.is_some() {
                    group.state_timestamp_ms
                } else {
                    committed.value.commit_timestamp_ms
                };
                since.saturating_add(retention_ms) <= now_ms
            })
            .map(|(key, _)| key.clone())
            .collect();
        for (topic, index) in expired {
            group.offsets.remove(&(topic.clone(), index));
            tombstones.push((
                RecordKey::Offset {
                    group: id.clone(),
                    topic,
                    partition: index,
                }
                .encode(),
                None,
            ));
        }
        if group.offsets.is_empty() {
            dead.push(id.clone());
        }
    }
    for id in dead {
        state.groups.remove(&id);
        emptied.retain(|emptied| *emptied != id);
        tombstones.push((RecordKey::Group(id).encode(), None));
    }
    Some(Expired {
        epoch,
        emptied,
        tombstones,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offsets of an empty group with a protocol expire all together once
    /// the group has been empty for the retention time, then the group
    /// goes; each expiry is a tombstone to write.
    #[test]
    fn offsets_of_long_empty_groups_expire_with_tombstones() {
        let settings = CoordinatorSettings {
            partitions: 1,
            timings: GroupTimings {
                initial_rebalance_delay: Duration::ZERO,
            },
            min_session_timeout: Duration::from_secs(1),
            max_session_timeout: Duration::from_secs(60),
            offsets_retention: Duration::from_secs(60),
            retention_check_interval: Duration::from_secs(1),
            consumer_heartbeat_interval: Duration::from_secs(1),
            consumer_session_timeout: Duration::from_secs(10),
            consumer_assignors: vec!["uniform".to_owned()],
        };
        let coordinator = GroupCoordinator::new(settings);
        let committed = |commit_timestamp_ms| CommittedOffset {
            value: OffsetValue {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms,
            },
            record_offset: 0,
        };
        let now_ms = TimestampMs::now().0;
        {
            let mut partition = coordinator.lock_partition(0);
            partition.coordination = Coordination::Active(LeaderEpoch(0));
            let mut old = Group::new("old".to_owned());
            old.protocol_type = Some("consumer".to_owned());
            old.state_timestamp_ms = now_ms - 61_000;
            old.apply_offset("t".to_owned(), 0, committed(now_ms));
            let mut recent = Group::new("recent".to_owned());
            recent.protocol_type = Some("consumer".to_owned());
            recent.apply_offset("t".to_owned(), 0, committed(now_ms - 3_600_000));
            partition.groups.insert("old".to_owned(), old);
            partition.groups.insert("recent".to_owned(), recent);
        }
        let expired = expire_partition(&coordinator, 0, Instant::now(), true).unwrap();
        let keys: Vec<RecordKey> = expired
            .tombstones
            .iter()
            .map(|(key, value)| {
                assert!(value.is_none());
                RecordKey::decode(key).unwrap()
            })
            .collect();
        assert_eq!(
            keys,
            [
                RecordKey::Offset {
                    group: "old".to_owned(),
                    topic: "t".to_owned(),
                    partition: 0
                },
                RecordKey::Group("old".to_owned())
            ]
        );
        let partition = coordinator.lock_partition(0);
        assert!(!partition.groups.contains_key("old"));
        assert_eq!(partition.groups["recent"].offsets.len(), 1);
    }

    /// Values from Java: `"my-group".hashCode()` is -1906497762 (partition
    /// 36 of 50), `"".hashCode()` is 0, and `"polygenelubricants".hashCode()`
    /// is `Integer.MIN_VALUE`, which `Utils.abs` maps to 0.
    #[test]
    fn groups_map_to_partitions_as_in_kafka() {
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Non-ASCII: hashCode works on UTF-16 units ("é" is 0xe9).
        assert_eq!(partition_for("é", 50), 0xe9 % 50);
        // Negative hash: "Aa" * many overflows.
        let negative = "zzzzzzzzzz";
        let java: i32 = negative.chars().fold(0_i32, |hash, c| {
            hash.wrapping_mul(31).wrapping_add(c as i32)
        });
        assert!(java < 0);
        assert_eq!(partition_for(negative, 50), (java & 0x7fff_ffff) % 50);
    }

    /// The partition layer's errors become the coordinator errors Kafka
    /// answers for a failed write.
    #[test]
    fn write_errors_map_to_coordinator_errors_as_in_kafka() {
        use ResponseError as E;
        for (partition_error, coordinator_error) in [
            (E::NotEnoughReplicas, E::CoordinatorNotAvailable),
            (E::NotEnoughReplicasAfterAppend, E::CoordinatorNotAvailable),
            (E::RequestTimedOut, E::CoordinatorNotAvailable),
            (E::UnknownTopicOrPartition, E::CoordinatorNotAvailable),
            (E::NotLeaderOrFollower, E::NotCoordinator),
            (E::FencedLeaderEpoch, E::NotCoordinator),
            (E::KafkaStorageError, E::NotCoordinator),
            (E::MessageTooLarge, E::UnknownServerError),
            (E::CorruptMessage, E::CorruptMessage),
        ] {
            assert_eq!(
                write_error(partition_error.code()),
                coordinator_error,
                "{partition_error:?}"
            );
        }
        assert_eq!(write_error(i16::MAX), E::UnknownServerError);
    }
}
