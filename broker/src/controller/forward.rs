//! Metadata changes as messages: what a node that does not lead the
//! controller quorum sends the one that does, and what it gets back.
//!
//! Kafka 4 forwards every admin request to the active controller, which
//! validates it against the latest image and commits its records; a broker
//! never writes metadata from its own, possibly older, image. fjord does
//! the same: [`crate::controller::Controller`] turns each change it is asked
//! for into a [`Change`] and carries it out itself when this node leads the
//! quorum, or sends it over the controller listener to the leader
//! (`quorum::rpc::Request::Forward`), whose controller carries it out
//! exactly as a local one. The answer says which log entry holds the
//! change, so the forwarding node can wait until its own image has applied
//! it before it answers its client (what the client changed is then what
//! this broker serves).
//!
//! One change is computed where it is asked for, from that node's image:
//! a topic config edit (`IncrementalAlterConfigs`' operations are applied
//! to the overrides the asking node sees). It travels with the overrides it
//! started from, and the leader refuses it as [`Refusal::stale`] when its
//! own differ; the asking node then waits for the leader's image and
//! computes the edit again.
//!
//! The types are serde types (postcard on the wire, like the rest of the
//! controller RPCs), with plain integers for ids: the metadata record
//! types are rkyv-only.

use serde::{Deserialize, Serialize};

/// A metadata change, as a node asks the quorum leader to make it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// CreateTopics for one topic.
    CreateTopic {
        /// Its name.
        name: String,
        /// How many partitions.
        partitions: i32,
        /// Replicas per partition.
        replication_factor: i16,
        /// A manual assignment: the replicas of each partition.
        assignment: Option<Vec<Vec<i32>>>,
        /// Config overrides.
        configs: Vec<(String, String)>,
    },
    /// CreatePartitions for one topic.
    AddPartitions {
        /// The topic.
        name: String,
        /// The new partition count.
        count: i32,
        /// A manual assignment of the new partitions.
        assignment: Option<Vec<Vec<i32>>>,
        /// Check only.
        validate_only: bool,
    },
    /// DeleteTopics for one topic.
    DeleteTopic {
        /// The topic.
        name: String,
    },
    /// A topic's config overrides replaced by `overrides`, computed from
    /// `current` (see the module documentation).
    ReplaceTopicConfigs {
        /// The topic.
        name: String,
        /// The overrides the change was computed from.
        current: Vec<(String, String)>,
        /// The overrides after it.
        overrides: Vec<(String, String)>,
        /// Check only.
        validate_only: bool,
    },
    /// `AllocateProducerIds`: a block of producer ids for a broker.
    AllocateProducerIds {
        /// The broker.
        broker: i32,
        /// Its registration epoch.
        epoch: i64,
    },
    /// `BrokerRegistration`: a broker's start.
    RegisterBroker {
        /// The broker.
        broker: i32,
        /// Its incarnation: one per process start.
        incarnation_id: [u8; 16],
        /// Its listeners.
        endpoints: Vec<Endpoint>,
        /// `broker.rack`.
        rack: Option<String>,
        /// How many cores (shards) it runs.
        cores: u32,
    },
    /// A broker-only node asks to follow the metadata log as a learner of
    /// the quorum, reached at `addr` (its quorum listener, `host:port`).
    AddLearner {
        /// The broker.
        broker: i32,
        /// Where the leader replicates to it.
        addr: String,
    },
    /// `BrokerHeartbeat`: a broker is alive.
    Heartbeat {
        /// The broker.
        broker: i32,
        /// Its registration epoch.
        epoch: i64,
        /// Whether it has applied the metadata log up to its registration.
        caught_up: bool,
        /// Whether it asks to be fenced (it is shutting down).
        want_fence: bool,
    },
    /// `AlterPartition` for one partition: its leader proposes a new ISR
    /// (see [`super::alter_partition`]).
    AlterPartition {
        /// The proposing broker.
        broker: i32,
        /// Its registration epoch.
        epoch: i64,
        /// What it proposes.
        proposal: IsrChange,
    },
    /// A broker shutting down asks to hand its leaderships over (Kafka's
    /// controlled shutdown, `BrokerHeartbeat` with `WantShutDown`).
    ControlledShutdown {
        /// The broker.
        broker: i32,
        /// Its registration epoch.
        epoch: i64,
    },
    /// `ElectLeaders`: an administrator's elections.
    ElectLeaders {
        /// Kafka's `UNCLEAN` type, else `PREFERRED`.
        unclean: bool,
        /// The (topic, partition)s, or every partition.
        partitions: Option<Vec<(String, i32)>>,
    },
}

/// An ISR proposal ([`super::alter_partition::IsrProposal`]) on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsrChange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch the proposer leads in.
    pub leader_epoch: i32,
    /// The partition epoch the proposal was made from.
    pub partition_epoch: i32,
    /// The proposed ISR.
    pub isr: Vec<i32>,
    /// (broker, broker epoch) of the members whose epoch the leader knows.
    pub broker_epochs: Vec<(i32, i64)>,
    /// The leader is still recovering from an unclean election (KIP-704).
    pub recovering: bool,
}

/// One listener of a registering broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener name.
    pub name: String,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: u16,
    /// Kafka's security protocol id.
    pub security_protocol: i16,
}

/// What a change gave, beyond the image it left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    /// Nothing: the image tells the rest.
    Nothing,
    /// The partition count before `AddPartitions`.
    PreviousPartitionCount(i32),
    /// The producer ids `start..end`.
    ProducerIds {
        /// The first id.
        start: i64,
        /// Past the last id.
        end: i64,
    },
    /// The registration's epoch.
    BrokerEpoch(i64),
    /// Whether the broker is fenced after its heartbeat.
    Heartbeat {
        /// Fenced.
        fenced: bool,
    },
    /// What a controlled shutdown has yet to move.
    ControlledShutdown {
        /// Partitions the broker still leads whose ISR has another
        /// eligible member (0 once the change is committed, unless a
        /// broker became eligible meanwhile).
        leaderships_left: u32,
    },
    /// Each partition's outcome of `ElectLeaders`.
    Elections(Vec<ElectionOutcome>),
}

/// One partition's outcome of `ElectLeaders`, with Kafka's error code
/// (0: a leader was elected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionOutcome {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Kafka's error code.
    pub code: i16,
    /// Why, when it failed.
    pub message: Option<String>,
}

/// A change carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The log entry that holds the change, if it wrote one (a
    /// `validate_only` change or one that changes nothing writes none).
    pub applied_index: Option<u64>,
    /// What it gave.
    pub done: Done,
}

/// A change refused, with Kafka's error code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Kafka's error code.
    pub code: i16,
    /// Why.
    pub message: String,
    /// Set when the change was computed from an image older than the
    /// leader's: the index the leader had applied, for the asking node to
    /// wait for before computing it again.
    pub stale: Option<u64>,
}

/// The leader's answer to a forwarded change.
pub type Outcome = Result<Answer, Refusal>;
