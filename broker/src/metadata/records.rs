//! The metadata records: every change to the cluster metadata is a sequence
//! of these, in the shapes of Kafka's KRaft records
//! (`metadata/src/main/resources/common/metadata/*.json` in Apache Kafka,
//! named after them and with their fields). Applied in order by
//! [`crate::metadata::image::MetadataImage::apply`], they build the image
//! every handler reads.
//!
//! # Encoding
//! Records are plain Rust values with rkyv derives: the controller's log and
//! snapshot files store rkyv archives of them (inside CRC-checked frames,
//! see [`crate::controller::log`]). rkyv lays out an enum by variant index
//! and a struct by field order, so the on-disk format is these declarations:
//! new record kinds are appended to [`MetadataRecord`], never inserted or
//! reordered, and changing a record's fields means a new frame version.

use fjord_engine::{LeaderEpoch, ProducerId};
use uuid::Uuid;

/// A broker's `node.id`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct BrokerId(pub i32);

impl BrokerId {
    /// "No broker": a partition without a leader has this as its leader, as
    /// Kafka's `-1`.
    pub const NONE: BrokerId = BrokerId(-1);
}

/// A topic's id (KIP-516): a UUID, never the all-zero one, never reused.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// The id as a UUID.
    #[must_use]
    pub fn uuid(self) -> Uuid {
        Uuid::from_bytes(self.0)
    }

    /// Whether this is the all-zero UUID, which Kafka reserves for "no id".
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.0 == [0; 16]
    }
}

impl From<Uuid> for TopicId {
    fn from(uuid: Uuid) -> Self {
        Self(*uuid.as_bytes())
    }
}

impl std::fmt::Display for BrokerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for BrokerEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.uuid().fmt(f)
    }
}

/// A broker's epoch: the offset of its latest `RegisterBrokerRecord`, as in
/// Kafka, so a later registration always has a larger one.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct BrokerEpoch(pub i64);

impl BrokerEpoch {
    /// "Not a registered broker's request", Kafka's `-1` (a snapshot's
    /// `ProducerIdsRecord` carries it).
    pub const NONE: BrokerEpoch = BrokerEpoch(-1);
}

/// A partition's epoch: bumped by every change to the partition (replicas,
/// ISR, leader), so a stale AlterPartition can be refused.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct PartitionEpoch(pub i32);

/// One metadata change. Variants are only ever appended (see the module
/// documentation).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    /// Kafka's `RegisterBrokerRecord` (api key 0).
    RegisterBroker(RegisterBrokerRecord),
    /// Kafka's `TopicRecord` (api key 2).
    Topic(TopicRecord),
    /// Kafka's `PartitionRecord` (api key 3).
    Partition(PartitionRecord),
    /// Kafka's `ConfigRecord` (api key 4).
    Config(ConfigRecord),
    /// Kafka's `PartitionChangeRecord` (api key 5).
    PartitionChange(PartitionChangeRecord),
    /// Kafka's `RemoveTopicRecord` (api key 9).
    RemoveTopic(RemoveTopicRecord),
    /// Kafka's `ProducerIdsRecord` (api key 15).
    ProducerIds(ProducerIdsRecord),
    /// Kafka's `FenceBrokerRecord` (api key 7).
    FenceBroker(BrokerFencingRecord),
    /// Kafka's `UnfenceBrokerRecord` (api key 8).
    UnfenceBroker(BrokerFencingRecord),
    /// fjord's own: how many cores (shards) a registration runs.
    BrokerCores(BrokerCoresRecord),
    /// Kafka's `LeaderRecoveryState` field of `PartitionRecord` and
    /// `PartitionChangeRecord` (KIP-704), as a record of its own.
    LeaderRecovery(LeaderRecoveryRecord),
}

/// Whether a partition's leader came from an unclean election and has
/// not yet taken it as recovered (KIP-704, Kafka's `LeaderRecoveryState`):
/// while it is recovering, the ISR may not grow beyond the leader.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum LeaderRecoveryState {
    /// Kafka's 0: the normal state.
    #[default]
    Recovered,
    /// Kafka's 1: elected uncleanly, recovery not yet done.
    Recovering,
}

/// A partition's leader recovery state changed (KIP-704). Kafka carries it
/// as a field of `PartitionRecord` and `PartitionChangeRecord`; a record of
/// its own (rather than a field, which would change those records' rkyv
/// layout) leaves the metadata logs and snapshots already written
/// readable. It follows the `PartitionChangeRecord` it goes with in one
/// batch (that one bumps the partition epoch), or the partition's
/// `PartitionRecord` in a snapshot; a partition without one is recovered.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LeaderRecoveryRecord {
    /// The partition index within its topic.
    pub partition_id: i32,
    /// The topic it belongs to.
    pub topic_id: TopicId,
    /// The new state.
    pub state: LeaderRecoveryState,
}

/// How many cores (shards) a broker registration runs, committed with the
/// registration: replication links a follower's shard to the leader's
/// shard of each partition, so every broker must know how its peers are
/// sharded. Kafka has no such field; a record of its own (rather than a
/// field of [`RegisterBrokerRecord`]) leaves the archives of existing
/// registrations readable.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerCoresRecord {
    /// The broker's `node.id`.
    pub id: BrokerId,
    /// The epoch of the registration it applies to.
    pub epoch: BrokerEpoch,
    /// Its number of shards, at least 1.
    pub cores: u32,
}

/// A broker registration was fenced (it may not lead or stay in an ISR:
/// its session expired, or it asked to be) or unfenced (it caught up with
/// the metadata log after registering): Kafka's `FenceBrokerRecord` and
/// `UnfenceBrokerRecord`, which have the same fields.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerFencingRecord {
    /// The broker's `node.id`.
    pub id: BrokerId,
    /// The epoch of the registration it applies to.
    pub epoch: BrokerEpoch,
}

/// A broker joined (or rejoined) the cluster.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RegisterBrokerRecord {
    /// The broker's `node.id`.
    pub broker_id: BrokerId,
    /// Random per broker process: tells a restart from a duplicate request.
    pub incarnation_id: [u8; 16],
    /// The epoch the controller gave this registration.
    pub broker_epoch: BrokerEpoch,
    /// Where clients and other brokers reach it.
    pub endpoints: Vec<BrokerEndpoint>,
    /// `broker.rack`, if set.
    pub rack: Option<String>,
    /// Whether the broker is fenced (may not lead or be in an ISR).
    pub fenced: bool,
}

/// One listener of a registered broker.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerEndpoint {
    /// The listener name (`PLAINTEXT`).
    pub name: String,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (0 is `PLAINTEXT`).
    pub security_protocol: i16,
}

/// A topic was created; its partitions follow as [`PartitionRecord`]s.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicRecord {
    /// The topic name.
    pub name: String,
    /// Its id.
    pub topic_id: TopicId,
}

/// A partition was created (or, in a snapshot, is): its whole state.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionRecord {
    /// The partition index within its topic.
    pub partition_id: i32,
    /// The topic it belongs to.
    pub topic_id: TopicId,
    /// The replicas, in preferred-leader order.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Replicas being removed by a reassignment.
    pub removing_replicas: Vec<BrokerId>,
    /// Replicas being added by a reassignment.
    pub adding_replicas: Vec<BrokerId>,
    /// The leader, or [`BrokerId::NONE`].
    pub leader: BrokerId,
    /// The leader's epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition's epoch.
    pub partition_epoch: PartitionEpoch,
}

/// Part of a partition's state changed; a field left `None` is unchanged.
/// Applying one bumps the partition epoch, and the leader epoch when the
/// leader changes.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionChangeRecord {
    /// The partition index within its topic.
    pub partition_id: i32,
    /// The topic it belongs to.
    pub topic_id: TopicId,
    /// The new in-sync replicas.
    pub isr: Option<Vec<BrokerId>>,
    /// The new leader; `Some(BrokerId::NONE)` leaves it leaderless.
    pub leader: Option<BrokerId>,
    /// The new replicas.
    pub replicas: Option<Vec<BrokerId>>,
    /// The new replicas being removed.
    pub removing_replicas: Option<Vec<BrokerId>>,
    /// The new replicas being added.
    pub adding_replicas: Option<Vec<BrokerId>>,
}

/// A topic was deleted, with its partitions and configs.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RemoveTopicRecord {
    /// The deleted topic's id.
    pub topic_id: TopicId,
}

/// The kind of resource a [`ConfigRecord`] configures (Kafka's
/// `ConfigResource.Type`). Only topics have dynamic configs so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ConfigResourceType {
    /// A topic, by name (Kafka's type 2).
    Topic,
}

/// A config override was set, or removed (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ConfigRecord {
    /// What kind of resource.
    pub resource_type: ConfigResourceType,
    /// Which one (a topic name).
    pub resource_name: String,
    /// The config key (Kafka's name).
    pub name: String,
    /// The new value; `None` removes the override.
    pub value: Option<String>,
}

/// A block of producer ids was handed to a broker: every id below
/// `next_producer_id` is taken, forever.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerIdsRecord {
    /// The broker the block went to.
    pub broker_id: BrokerId,
    /// That broker's epoch when it asked ([`BrokerEpoch::NONE`] in a
    /// snapshot).
    pub broker_epoch: BrokerEpoch,
    /// The first id of the next block.
    pub next_producer_id: ProducerId,
}
