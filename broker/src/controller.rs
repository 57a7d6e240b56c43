//! The controller: turns metadata changes into records, has the controller
//! quorum commit them, and serves the image they give.
//!
//! Every change (create, grow or delete a topic, alter its configs, take a
//! producer id block, register this broker at start) is validated against
//! the current image with Kafka's rules and errors, turned into
//! [`MetadataRecord`]s, applied to a copy of the image (which checks the
//! records' own invariants), and proposed to the [`quorum`] (openraft): it
//! is acknowledged once the quorum has committed it, durably, and applied
//! it, which publishes the new image. A topic a client saw created
//! survives a restart, and a producer id is never handed out before the
//! block holding it is committed. The quorum snapshots the image itself,
//! so a start replays a bounded log.
//!
//! Changes are serialized by a mutex, so each is validated against the
//! image every earlier one left; they run on a shard's blocking pool
//! ([`crate::topics::on_controller`]) and wait there for the quorum's
//! `fdatasync`, never on a data shard.
//!
//! # The quorum, for now
//! Every node is, for now, a quorum of one voter, itself, with no
//! controller listener ([`QuorumConfig::lone_voter`]): the single node by
//! design, and a node configured as part of a cluster until brokers follow
//! and forward to a shared quorum, as the README says ("each is still its
//! own controller").
//!
//! # Upgrading in place
//! A directory written before the quorum holds the local metadata log
//! ([`log`], in the same `__cluster_metadata-0` directory under other file
//! names) or, older, the legacy file ([`legacy`]). On a start whose quorum
//! has committed no metadata yet, their image is proposed as the quorum's
//! first change; only once that is committed are the old files removed. A
//! start that finds old files next to a quorum that already holds metadata
//! (an earlier start crashed between the two) only removes them.

pub mod alter_partition;
pub mod election;
pub mod forward;
mod heartbeats;
pub mod legacy;
pub mod liveness;
pub mod log;
pub mod placement;
pub mod quorum;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fjord_engine::config::LogConfig;
use fjord_engine::error::Corruption;
use fjord_engine::{LeaderEpoch, ProducerId};
use futures_lite::future::block_on;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::config::{BrokerConfig, HostPort, Quorum as ClusterQuorum};
use crate::metadata::records::{
    BrokerEndpoint, BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType, MetadataRecord,
    PartitionEpoch, PartitionRecord, ProducerIdsRecord, RemoveTopicRecord, TopicId, TopicRecord,
};
use crate::metadata::{ApplyError, MetadataImage, PartitionImage, TopicImage};
use alter_partition::{alter_partition, IsrProposal, Proposer};
use election::{after_config_change, movable_leaderships, ElectionRefusal, ElectionType};
use forward::{Answer, Change, Done, ElectionOutcome, Endpoint, Outcome, Refusal};
use liveness::{BrokerSessions, Heartbeat, LivenessError, Registered, Registration};
use log::{LogError, MetadataLog, METADATA_LOG_DIR_NAME};
use placement::{place_replicas, PlacementBroker, PlacementError, PlacementStart};
use quorum::{
    Leader, NodeId, ProposeError, Quorum, QuorumConfig, QuorumDescription, QuorumError,
    QuorumHandle, VoterDescription,
};

/// How long a metadata change may take, forwarding, elections and the
/// commit included (Kafka's default `request.timeout.ms`).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait before a change asks again for a leader that is unknown,
/// unreachable or moving.
const CHANGE_RETRY_WAIT: Duration = Duration::from_millis(50);
/// How long the quorum leader may take to describe the quorum before
/// this node describes it as it sees it: a leader answers in moments, and
/// one cut off (an election pending) must not hold `DescribeQuorum` long.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The wait before a registration refused as a duplicate is tried again.
const REGISTRATION_RETRY_WAIT: Duration = Duration::from_millis(200);
/// How often a topic config edit is computed again after the leader found
/// it computed from an older image.
const STALE_RETRIES_MAX: usize = 5;
/// Producer ids are handed out from persisted blocks of this size, so a
/// restart never reuses one.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;
/// Kafka's `SecurityProtocol` id of `PLAINTEXT`, the only listener kind.
const PLAINTEXT: i16 = 0;

/// The metadata quorum: who leads it and how far each voter has the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumView {
    /// The leader (the active controller), or [`BrokerId::NONE`].
    pub leader: BrokerId,
    /// The leader's epoch (its Raft term).
    pub leader_epoch: i32,
    /// The offset after the last committed metadata record.
    pub high_watermark: i64,
    /// The voters.
    pub voters: Vec<VoterView>,
    /// The observers: broker-only nodes following the log as learners.
    pub observers: Vec<VoterView>,
}

/// One voter of the metadata quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoterView {
    /// Its node id.
    pub id: BrokerId,
    /// The offset after the last record it holds, as the leader knows it.
    pub log_end_offset: i64,
    /// When the leader last heard from it (ms since the epoch), if known.
    pub last_fetch_ms: Option<i64>,
    /// When it last had everything the leader had, if known.
    pub last_caught_up_ms: Option<i64>,
}

/// A failed metadata change: the Kafka error and a message for the client.
#[derive(Debug)]
pub struct MetadataError {
    /// The Kafka error code.
    pub code: i16,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for MetadataError {}

/// Why the controller cannot start: [`Controller::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The metadata log cannot be read, cut or created, or is corrupt.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The records recovered from the log do not apply to the image.
    #[error("replaying {}: {source}", dir.display())]
    Replay {
        /// The metadata log directory.
        dir: PathBuf,
        /// The record's fault.
        #[source]
        source: ApplyError,
    },
    /// Reading, removing or syncing the legacy metadata file (or the data
    /// directory holding it) failed.
    #[error("{context} {}: {source}", path.display())]
    LegacyIo {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The legacy metadata file does not decode; it is kept.
    #[error("{}: {source}", path.display())]
    CorruptLegacy {
        /// The legacy file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Corruption,
    },
    /// The records converted from the legacy file do not apply to the
    /// image; the file is kept.
    #[error("converting {}: {source}", path.display())]
    ConvertLegacy {
        /// The legacy file.
        path: PathBuf,
        /// The record's fault.
        #[source]
        source: ApplyError,
    },
    /// A controller node without a controller listener (the configuration
    /// refuses it; a caller building one by hand may not).
    #[error("a controller needs a listener named in controller.listener.names")]
    NoControllerListener,
    /// A voter's host does not resolve to an address.
    #[error("controller.quorum.voters: cannot resolve voter {node}'s address {address}: {reason}")]
    UnresolvableVoter {
        /// The voter's id.
        node: i32,
        /// Its `host:port`.
        address: String,
        /// Why.
        reason: String,
    },
    /// `node.id` is negative, which no quorum member's is (the
    /// configuration refuses it; a caller building one by hand may not).
    #[error("node.id {node} is negative")]
    NegativeNodeId {
        /// The id.
        node: i32,
    },
    /// The heartbeat thread cannot be started.
    #[error("starting the broker heartbeat thread: {0}")]
    Heartbeats(#[source] std::io::Error),
    /// The controller quorum cannot start or did not become the leader.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The metadata of the local log or the legacy file could not be
    /// committed to the quorum; the old files are kept.
    #[error("upgrading the metadata of {} into the controller quorum: {source}", dir.display())]
    Upgrade {
        /// The metadata log directory.
        dir: PathBuf,
        /// The quorum's error.
        #[source]
        source: ProposeError,
    },
    /// This broker's registration could not be made durable.
    #[error("registering broker {node}: {source}")]
    Register {
        /// This broker's id.
        node: i32,
        /// The controller's error.
        #[source]
        source: MetadataError,
    },
}

impl MetadataError {
    fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: error.code(),
            message: message.into(),
        }
    }
}

impl From<LogError> for MetadataError {
    fn from(error: LogError) -> Self {
        Self::new(ResponseError::KafkaStorageError, error.to_string())
    }
}

impl From<ProposeError> for MetadataError {
    /// `NOT_CONTROLLER` where another controller, or none yet, leads (or the
    /// quorum is shutting down): the client retries, as with Kafka's
    /// controller moving. `KAFKA_STORAGE_ERROR` where the quorum stopped on
    /// a failure (a storage error, mostly) or the change is too large to
    /// write; `UNKNOWN_SERVER_ERROR` for a committed change that did not
    /// apply, which validation should have caught.
    fn from(error: ProposeError) -> Self {
        let code = match &error {
            ProposeError::NotLeader { .. } | ProposeError::Stopped => ResponseError::NotController,
            ProposeError::Timeout { .. } => ResponseError::RequestTimedOut,
            ProposeError::NotALearner { .. } => ResponseError::InvalidRequest,
            ProposeError::Batch(_) | ProposeError::Fatal(_) => ResponseError::KafkaStorageError,
            ProposeError::Rejected { .. } | ProposeError::Membership(_) => {
                tracing::error!(%error, "the controller's change was not applied");
                ResponseError::UnknownServerError
            }
        };
        Self::new(code, error.to_string())
    }
}

impl From<ApplyError> for MetadataError {
    /// The controller validates every change before it makes records, so a
    /// record the image refuses is a controller bug: reported, not applied.
    fn from(error: ApplyError) -> Self {
        tracing::error!(%error, "the controller made a metadata record that does not apply");
        Self::new(
            ResponseError::UnknownServerError,
            format!("metadata record refused: {error}"),
        )
    }
}

struct ControllerState {
    /// This broker's registration epoch.
    broker_epoch: BrokerEpoch,
    /// The log entry of that registration: the broker has caught up once it
    /// applied it.
    registered_at: Option<u64>,
    /// The registration it was, to register again with if a leader lost it.
    registration: Option<Change>,
    /// Ids of the current producer id block not handed out yet.
    producer_ids: Range<i64>,
    /// Blocks taken by this broker so far: a block taken while another
    /// thread took one too is not used.
    producer_ids_taken: u64,
}

/// `auto.leader.rebalance.enable`, `leader.imbalance.check.interval.seconds`
/// and `leader.imbalance.per.broker.percentage`.
#[derive(Clone, Copy, Debug)]
struct AutoLeaderRebalance {
    enable: bool,
    check_interval: Duration,
    imbalance_percentage: u32,
}

/// The active controller's broker sessions and the term they belong to.
struct Sessions {
    term: Option<u64>,
    sessions: BrokerSessions,
}

/// Orders metadata changes through the quorum; see the module
/// documentation. Dropping it shuts the quorum down.
pub struct Controller {
    node: BrokerId,
    log_defaults: LogConfig,
    /// `controlled.shutdown.enable`.
    controlled_shutdown_enable: bool,
    /// `auto.leader.rebalance.enable` and its settings.
    auto_leader_rebalance: AutoLeaderRebalance,
    /// Held while a change is validated and committed.
    state: Mutex<ControllerState>,
    /// The broker sessions this node keeps while it leads the quorum.
    sessions: Mutex<Sessions>,
    /// Where the sessions' clock starts.
    clock_origin: Instant,
    /// Dropped with the controller, which stops the heartbeat thread.
    heartbeat_stop: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    quorum: QuorumHandle,
}

impl Controller {
    /// Starts the controller quorum on `config.metadata_log_dir`, waits
    /// until this node leads it, upgrades the metadata a directory of an
    /// earlier version holds into it (see the module documentation), and
    /// registers this broker.
    ///
    /// # Errors
    /// [`OpenError`] if the quorum cannot start or does not elect this node
    /// within `initial.broker.registration.timeout.ms`, if old metadata
    /// cannot be read, is corrupt or cannot be committed, or if the
    /// registration cannot be committed.
    pub fn open(config: &BrokerConfig) -> Result<Arc<Self>, OpenError> {
        let dir = config.metadata_log_dir.join(METADATA_LOG_DIR_NAME);
        let node = BrokerId(config.node_id);
        let node_id = NodeId::try_from(config.node_id).map_err(|_| OpenError::NegativeNodeId {
            node: config.node_id,
        })?;
        let mut voters = BTreeMap::new();
        let mut quorum_config = match &config.cluster.quorum {
            ClusterQuorum::SingleNode => QuorumConfig::lone_voter(node_id, dir.clone()),
            ClusterQuorum::Configured {
                voters: configured, ..
            } => {
                voters = resolve_voters(configured)?;
                if config.cluster.process_roles.is_controller() {
                    let listen = config
                        .cluster
                        .controller_listener
                        .as_ref()
                        .map(|listener| listener.address)
                        .ok_or(OpenError::NoControllerListener)?;
                    QuorumConfig::voter(node_id, voters.clone(), listen, dir.clone())
                } else {
                    // A broker-only node listens for the leader's
                    // replication on a port of the OS's choosing, on its
                    // client listener's address, and tells the leader.
                    let listen = SocketAddr::new(config.listener.ip(), 0);
                    QuorumConfig::learner(node_id, voters.clone(), listen, dir.clone())
                }
            }
        };
        quorum_config.election_timeout = config.cluster.quorum_election_timeout;
        quorum_config.fetch_timeout = config.cluster.quorum_fetch_timeout;
        quorum_config.request_timeout = config.cluster.quorum_request_timeout;
        let quorum = Quorum::start(quorum_config)?;
        let start_timeout = config.cluster.initial_broker_registration_timeout;
        if !config.cluster.process_roles.is_controller() {
            join_as_learner(
                &quorum,
                node,
                &voters,
                &config.advertised_host,
                start_timeout,
            )?;
        }
        block_on(quorum.await_caught_up(start_timeout))?;
        if quorum.leader() == Leader::ThisNode {
            upgrade_previous_metadata(&quorum, &dir, &config.data_dir, node)?;
        }
        let controller = Arc::new(Self {
            node,
            log_defaults: config.log_defaults.clone(),
            controlled_shutdown_enable: config.replication.controlled_shutdown_enable,
            auto_leader_rebalance: AutoLeaderRebalance {
                enable: config.replication.auto_leader_rebalance_enable,
                check_interval: config.replication.leader_imbalance_check_interval,
                imbalance_percentage: config.replication.leader_imbalance_per_broker_percentage,
            },
            state: Mutex::new(ControllerState {
                broker_epoch: BrokerEpoch::NONE,
                registered_at: None,
                registration: None,
                producer_ids: 0..0,
                producer_ids_taken: 0,
            }),
            sessions: Mutex::new(Sessions {
                term: None,
                sessions: BrokerSessions::new(
                    config.cluster.broker_session_timeout,
                    config.replication.unclean_leader_election_enable,
                ),
            }),
            clock_origin: Instant::now(),
            heartbeat_stop: Mutex::new(None),
            quorum,
        });
        // Other controllers forward their changes here while this one
        // leads; a weak reference, so that the quorum's thread does not
        // keep its own controller alive.
        let serving = Arc::downgrade(&controller);
        controller.quorum.serve_changes(Arc::new(move |change| {
            serving
                .upgrade()
                .ok_or_else(|| not_controller("this controller is shutting down"))?
                .make(&change, CHANGE_TIMEOUT)
        }));
        let registration_failed = |source: MetadataError| OpenError::Register {
            node: config.node_id,
            source,
        };
        controller
            .register(config, start_timeout)
            .map_err(|refusal| registration_failed(refusal.into()))?;
        controller
            .await_unfenced(start_timeout)
            .map_err(registration_failed)?;
        heartbeats::start(&controller, config.cluster.broker_heartbeat_interval)
            .map_err(OpenError::Heartbeats)?;
        Ok(controller)
    }

    /// Heartbeats until the leader unfences this broker (it has caught up
    /// with the metadata log), as a Kafka broker does before it serves.
    fn await_unfenced(&self, timeout: Duration) -> Result<(), MetadataError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.heartbeat()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(not_controller(format!(
                    "broker {} was not unfenced within {} ms",
                    self.node,
                    timeout.as_millis()
                ))
                .into());
            }
            std::thread::sleep(CHANGE_RETRY_WAIT);
        }
    }

    /// Shuts the quorum down, waiting for its thread (what dropping the
    /// controller does, with the error reported).
    ///
    /// # Errors
    /// What stopped the quorum, if it failed.
    pub fn shutdown(self) -> Result<(), QuorumError> {
        self.quorum.shutdown()
    }

    fn lock(&self) -> MutexGuard<'_, ControllerState> {
        // A panic while holding the lock cannot leave the state half-changed:
        // the image changes only when the quorum applies a committed change.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Why the quorum member of this node stopped, if it failed (see
    /// [`QuorumHandle::failure`]): the broker cannot go on without it.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.quorum.failure()
    }

    /// The current image.
    #[must_use]
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// The broker clients are told to send admin requests to (Metadata's
    /// and DescribeCluster's `controller_id`): the quorum leader when it is
    /// a live broker, which makes changes without forwarding them; else
    /// this broker, which forwards them.
    #[must_use]
    pub fn controller_for_clients(&self) -> BrokerId {
        let Leader::Other { id, .. } = self.quorum.leader() else {
            return self.node;
        };
        i32::try_from(id)
            .ok()
            .map(BrokerId)
            .filter(|leader| {
                self.image()
                    .unfenced_brokers()
                    .any(|registration| registration.id == *leader)
            })
            .unwrap_or(self.node)
    }

    /// A receiver that sees a change whenever a new image is published.
    #[must_use]
    pub fn image_published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.quorum.image_published()
    }

    /// The metadata quorum as `DescribeQuorum` reports it: the quorum
    /// leader's description (this node's own when the leader does not
    /// answer within [`DESCRIBE_TIMEOUT`]), offsets being Raft log indexes (the high watermark
    /// and a voter's log end are the index after the last entry committed
    /// or held). Without an answer (the quorum stopped) there is no leader.
    pub async fn quorum(&self) -> QuorumView {
        match self.quorum.describe_leader(DESCRIBE_TIMEOUT).await {
            Ok(description) => quorum_view(&description),
            Err(error) => {
                tracing::warn!(%error, "cannot describe the controller quorum");
                QuorumView {
                    leader: BrokerId::NONE,
                    leader_epoch: -1,
                    high_watermark: -1,
                    voters: Vec::new(),
                    observers: Vec::new(),
                }
            }
        }
    }

    /// The topic named `name` in the current image.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if there is none.
    fn topic(&self, name: &str) -> Result<Arc<TopicImage>, MetadataError> {
        self.image()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_topic(name))
    }

    /// Validates `records` against the current image (the image refuses
    /// records that break its invariants), then has the quorum commit them;
    /// returns the index of their entry once this node has applied it
    /// (`None` for no records: nothing is written).
    /// Taking the locked state proves the caller holds the lock, so the
    /// image it validated against is the one the change lands on.
    fn commit(
        &self,
        _locked: &mut ControllerState,
        records: &[MetadataRecord],
    ) -> Result<Option<u64>, MetadataError> {
        if records.is_empty() {
            return Ok(None);
        }
        self.image().apply(records)?;
        let applied = block_on(self.quorum.propose(records, CHANGE_TIMEOUT))?;
        Ok(Some(applied.index))
    }

    /// Makes `change`: here when this node leads the quorum, otherwise by
    /// forwarding it to the leader and waiting until this node has applied
    /// it (see [`forward`]). While no leader is known, or the leader
    /// cannot be reached or is moving, it tries again until
    /// [`CHANGE_TIMEOUT`] has passed, then answers `NOT_CONTROLLER`, which
    /// clients retry.
    fn change(&self, change: &Change, timeout: Duration) -> Result<Answer, Refusal> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(reason) = self.quorum.failure() {
                // No retry can succeed: the broker is stopping.
                return Err(Refusal {
                    code: ResponseError::KafkaStorageError.code(),
                    message: format!("this node's controller quorum member failed: {reason}"),
                    stale: None,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last_error = match self.quorum.leader() {
                Leader::ThisNode => match self.make(change, remaining) {
                    Err(refusal)
                        if refusal.code == ResponseError::NotController.code()
                            && !remaining.is_zero() =>
                    {
                        refusal.message
                    }
                    made => return made,
                },
                Leader::Other { id, addr } => {
                    match block_on(self.quorum.forward(addr, change.clone(), remaining)) {
                        Ok(Ok(answer)) => {
                            if let Some(index) = answer.applied_index {
                                block_on(self.quorum.await_applied(index, remaining))
                                    .map_err(|error| not_controller(error.to_string()))?;
                            }
                            return Ok(answer);
                        }
                        Ok(Err(refusal)) if refusal.code != ResponseError::NotController.code() => {
                            return Err(refusal);
                        }
                        Ok(Err(refusal)) => refusal.message,
                        Err(error) => format!("forwarding to controller {id} at {addr}: {error}"),
                    }
                }
                Leader::Unknown => "no controller leader is known".to_owned(),
            };
            if Instant::now() >= deadline {
                return Err(not_controller(last_error));
            }
            // An election or a leader's start takes a fetch timeout or so:
            // this blocking thread waits a little before asking again.
            std::thread::sleep(CHANGE_RETRY_WAIT.min(remaining));
        }
    }

    /// Makes `change` on this node, which must lead the quorum and have
    /// applied everything committed before its term; what a forwarded
    /// change runs on the leader.
    fn make(&self, change: &Change, timeout: Duration) -> Outcome {
        if self.quorum.leader() != Leader::ThisNode {
            return Err(not_controller(
                "this node does not lead the controller quorum",
            ));
        }
        block_on(self.quorum.await_leadership(timeout))
            .map_err(|error| not_controller(error.to_string()))?;
        let answer = |applied_index, done| Answer {
            applied_index,
            done,
        };
        match change {
            Change::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignment,
                configs,
            } => self
                .make_topic(
                    name,
                    *partitions,
                    *replication_factor,
                    assignment.as_deref(),
                    configs,
                )
                .map(|index| answer(index, Done::Nothing)),
            Change::AddPartitions {
                name,
                count,
                assignment,
                validate_only,
            } => self
                .make_partitions(name, *count, assignment.as_deref(), *validate_only)
                .map(|(index, previous)| answer(index, Done::PreviousPartitionCount(previous))),
            Change::DeleteTopic { name } => self
                .make_deletion(name)
                .map(|index| answer(index, Done::Nothing)),
            Change::ReplaceTopicConfigs {
                name,
                current,
                overrides,
                validate_only,
            } => self.make_topic_configs(name, current, overrides, *validate_only),
            Change::AllocateProducerIds { broker, epoch } => {
                self.make_producer_id_block(BrokerId(*broker), BrokerEpoch(*epoch))
            }
            Change::RegisterBroker {
                broker,
                incarnation_id,
                endpoints,
                rack,
                cores,
            } => self
                .make_registration(Registration {
                    broker_id: BrokerId(*broker),
                    incarnation_id: Uuid::from_bytes(*incarnation_id),
                    endpoints: endpoints.iter().map(broker_endpoint).collect(),
                    rack: rack.clone(),
                    cores: *cores,
                })
                .map(|(index, epoch)| answer(index, Done::BrokerEpoch(epoch.0))),
            Change::AddLearner { broker, addr } => self
                .make_learner(*broker, addr)
                .map(|index| answer(index, Done::Nothing)),
            Change::Heartbeat {
                broker,
                epoch,
                caught_up,
                want_fence,
            } => self.make_heartbeat(Heartbeat {
                broker_id: BrokerId(*broker),
                epoch: BrokerEpoch(*epoch),
                caught_up: *caught_up,
                want_fence: *want_fence,
            }),
            Change::AlterPartition {
                broker,
                epoch,
                proposal,
            } => self
                .make_isr_change(BrokerId(*broker), BrokerEpoch(*epoch), proposal)
                .map(|index| answer(index, Done::Nothing)),
            Change::ControlledShutdown { broker, epoch } => {
                self.make_controlled_shutdown(BrokerId(*broker), BrokerEpoch(*epoch))
            }
            Change::ElectLeaders {
                unclean,
                partitions,
            } => self.make_elections(*unclean, partitions.as_deref()),
        }
    }

    fn make_producer_id_block(&self, broker: BrokerId, epoch: BrokerEpoch) -> Outcome {
        let mut state = self.lock();
        let (index, ids) = self.take_producer_id_block(&mut state, broker, epoch)?;
        Ok(Answer {
            applied_index: Some(index),
            done: Done::ProducerIds {
                start: ids.start,
                end: ids.end,
            },
        })
    }

    /// Registers this broker (a new epoch for each start), fenced until
    /// its heartbeats say it has caught up.
    fn register(&self, config: &BrokerConfig, timeout: Duration) -> Result<(), Refusal> {
        let change = Change::RegisterBroker {
            broker: self.node.0,
            incarnation_id: *Uuid::new_v4().as_bytes(),
            endpoints: vec![Endpoint {
                name: crate::advertised::CLIENT_LISTENER.to_owned(),
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                security_protocol: PLAINTEXT,
            }],
            rack: config.cluster.broker_rack.clone(),
            cores: u32::try_from(config.cores).unwrap_or(u32::MAX),
        };
        self.lock().registration = Some(change.clone());
        // A registration the leader refuses as a duplicate is this node's
        // previous process, killed, whose session has not expired yet
        // (another live process with this node.id would be refused for
        // good): Kafka's broker tries again, and so does this one.
        let deadline = Instant::now() + timeout;
        loop {
            match self.register_again(&change) {
                Err(refusal)
                    if refusal.code == ResponseError::DuplicateBrokerRegistration.code()
                        && Instant::now() < deadline =>
                {
                    tracing::info!(reason = %refusal.message, "waiting to register");
                    std::thread::sleep(REGISTRATION_RETRY_WAIT);
                }
                registered => return registered,
            }
        }
    }

    fn register_again(&self, change: &Change) -> Result<(), Refusal> {
        let answer = self.change(change, CHANGE_TIMEOUT)?;
        match answer.done {
            Done::BrokerEpoch(epoch) => {
                let mut state = self.lock();
                state.broker_epoch = BrokerEpoch(epoch);
                state.registered_at = answer.applied_index;
                Ok(())
            }
            other => Err(unexpected_answer(&other).into()),
        }
    }

    /// Sends this broker's heartbeat to the quorum leader; returns whether
    /// the broker is fenced after it. A heartbeat the leader refuses for a
    /// stale or unknown registration (a leader that lost it, or fenced and
    /// replaced it) registers the broker again.
    ///
    /// # Errors
    /// `NOT_CONTROLLER` while no leader answers; what the registration
    /// meets.
    pub fn heartbeat(&self) -> Result<bool, MetadataError> {
        let (epoch, registered_at, registration) = {
            let state = self.lock();
            (
                state.broker_epoch,
                state.registered_at,
                state.registration.clone(),
            )
        };
        let caught_up = self.quorum.applied_index() >= registered_at;
        let change = Change::Heartbeat {
            broker: self.node.0,
            epoch: epoch.0,
            caught_up,
            want_fence: false,
        };
        match self.change(&change, CHANGE_TIMEOUT) {
            Ok(Answer {
                done: Done::Heartbeat { fenced },
                ..
            }) => Ok(fenced),
            Ok(answer) => Err(unexpected_answer(&answer.done)),
            Err(refusal)
                if refusal.code == ResponseError::StaleBrokerEpoch.code()
                    || refusal.code == ResponseError::BrokerIdNotRegistered.code() =>
            {
                tracing::warn!(reason = %refusal.message, "registering this broker again");
                let registration = registration.ok_or_else(|| MetadataError::from(refusal))?;
                self.register_again(&registration)?;
                Ok(true)
            }
            Err(refusal) => Err(refusal.into()),
        }
    }

    /// Asks the quorum leader to fence this broker, which is shutting down
    /// (Kafka's controlled shutdown, without leaderships to move while
    /// partitions have one replica): its next start registers at once,
    /// without waiting for this session to expire. Gives up after
    /// `timeout` (the last nodes of a cluster stopping have no quorum).
    pub fn fence_for_shutdown(&self, timeout: Duration) {
        let epoch = self.lock().broker_epoch;
        let change = Change::Heartbeat {
            broker: self.node.0,
            epoch: epoch.0,
            caught_up: true,
            want_fence: true,
        };
        match self.change(&change, timeout) {
            Ok(_) => tracing::info!("fenced this broker for its shutdown"),
            Err(refusal) => tracing::warn!(
                reason = %refusal.message,
                "this broker was not fenced for its shutdown; its next start waits for its \
                 session to expire"
            ),
        }
    }

    /// Has the quorum leader commit `proposal`, this broker's (the
    /// partition's leader's) new ISR for one partition, with Kafka's
    /// AlterPartition rules ([`alter_partition`]), and returns the
    /// partition as this node's image shows it once it has applied the
    /// change (a proposal of the current ISR commits nothing and returns the
    /// current state). The broker id and epoch are this node's
    /// registration's.
    ///
    /// # Errors
    /// A [`MetadataError`] whose code tells what to do:
    /// `INVALID_UPDATE_VERSION` or `FENCED_LEADER_EPOCH` (the proposal was
    /// made from a stale partition state: wait for the next image and
    /// propose again from it), `NOT_LEADER_OR_FOLLOWER` (this broker no
    /// longer leads), `STALE_BROKER_EPOCH`, `INELIGIBLE_REPLICA`,
    /// `INVALID_REQUEST`, `UNKNOWN_TOPIC_OR_PARTITION`; `NOT_CONTROLLER`,
    /// `REQUEST_TIMED_OUT` or `KAFKA_STORAGE_ERROR` if it could not be
    /// committed within `timeout`.
    pub fn alter_partition(
        &self,
        proposal: &IsrProposal,
        timeout: Duration,
    ) -> Result<PartitionImage, MetadataError> {
        let change = Change::AlterPartition {
            broker: self.node.0,
            epoch: self.lock().broker_epoch.0,
            proposal: proposal.into(),
        };
        self.change(&change, timeout)?;
        self.image()
            .topics
            .get(&proposal.topic)
            .and_then(|topic| topic.partition(proposal.partition))
            .cloned()
            .ok_or_else(|| {
                MetadataError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!(
                        "partition {}-{} was deleted meanwhile",
                        proposal.topic, proposal.partition
                    ),
                )
            })
    }

    fn make_isr_change(
        &self,
        broker: BrokerId,
        epoch: BrokerEpoch,
        proposal: &forward::IsrChange,
    ) -> Result<Option<u64>, Refusal> {
        let proposer = Proposer { broker, epoch };
        let proposal = IsrProposal::from(proposal);
        let mut state = self.lock();
        let image = self.image();
        let records = self
            .with_sessions(&image, |sessions, _| {
                alter_partition(&image, sessions.rules(), proposer, &proposal)
            })
            .map_err(|error| MetadataError::new(error.kafka_error(), error.to_string()))?;
        Ok(self.commit(&mut state, &records)?)
    }

    /// Kafka's controlled shutdown, when `controlled.shutdown.enable`: asks
    /// the quorum leader to move every leadership of this broker to another
    /// eligible ISR member and take it out of the ISRs, and to elect it
    /// nowhere until it is fenced ([`election::after_controlled_shutdown`]),
    /// asking again (of a new leader too) until the leader answers that
    /// nothing is left to move and this node has applied that, or `timeout`
    /// passes. Partitions whose ISR has no other eligible member stay led
    /// by this broker; [`Controller::fence_for_shutdown`] then ends them.
    /// Does nothing with `controlled.shutdown.enable=false`.
    ///
    /// With a quorum, one commit moves everything, so a short `timeout`
    /// suffices; the broker's exit bounds it by a heartbeat interval, as
    /// the fencing that follows, since without a quorum (the last nodes of
    /// a cluster stopping) it would wait out the whole `timeout`. Kafka's
    /// `controlled.shutdown.max.retries` and
    /// `controlled.shutdown.retry.backoff.ms` are ZooKeeper-era keys that
    /// KRaft ignores; fjord does not take them.
    ///
    /// # Errors
    /// `REQUEST_TIMED_OUT` if leaderships are left at `timeout`;
    /// `NOT_CONTROLLER` if no quorum leader answered; `STALE_BROKER_EPOCH`
    /// if this registration is no longer the broker's.
    pub fn shut_down_controlled(&self, timeout: Duration) -> Result<(), MetadataError> {
        if !self.controlled_shutdown_enable {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let change = Change::ControlledShutdown {
                broker: self.node.0,
                epoch: self.lock().broker_epoch.0,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let answer = self.change(&change, remaining)?;
            let left = match answer.done {
                Done::ControlledShutdown { leaderships_left } => leaderships_left,
                other => return Err(unexpected_answer(&other)),
            };
            if left == 0 {
                tracing::info!("controlled shutdown: this broker's leaderships moved away");
                return Ok(());
            }
            if Instant::now() + CHANGE_RETRY_WAIT >= deadline {
                return Err(MetadataError::new(
                    ResponseError::RequestTimedOut,
                    format!(
                        "controlled shutdown: {left} leadership(s) of broker {} still to move \
                         after {} ms",
                        self.node,
                        timeout.as_millis()
                    ),
                ));
            }
            std::thread::sleep(CHANGE_RETRY_WAIT);
        }
    }

    fn make_controlled_shutdown(&self, broker: BrokerId, epoch: BrokerEpoch) -> Outcome {
        let mut state = self.lock();
        let image = self.image();
        let records = self
            .with_sessions(&image, |sessions, now_ms| {
                sessions.controlled_shutdown(&image, broker, epoch, now_ms)
            })
            .map_err(liveness_refusal)?;
        let applied_index = self.commit(&mut state, &records)?;
        let after = self.image();
        let left = self.with_sessions(&after, |sessions, _| {
            movable_leaderships(&after, sessions.rules(), broker)
        });
        Ok(Answer {
            applied_index,
            done: Done::ControlledShutdown {
                leaderships_left: u32::try_from(left).unwrap_or(u32::MAX),
            },
        })
    }

    /// Kafka's ElectLeaders: has the quorum leader elect, for each of
    /// `partitions` (or every partition), its preferred replica or, with
    /// [`ElectionType::Unclean`], any eligible replica if it has no leader
    /// ([`election::requested_election`]). Returns each partition's
    /// outcome; asked for every partition, only those where something was
    /// elected or refused for another reason than `ELECTION_NOT_NEEDED`,
    /// as Kafka answers.
    ///
    /// # Errors
    /// `NOT_CONTROLLER`, `REQUEST_TIMED_OUT` or `KAFKA_STORAGE_ERROR` if
    /// the elections could not be committed within `timeout`.
    pub fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
        timeout: Duration,
    ) -> Result<Vec<ElectionOutcome>, MetadataError> {
        let change = Change::ElectLeaders {
            unclean: kind == ElectionType::Unclean,
            partitions,
        };
        match self.change(&change, timeout)?.done {
            Done::Elections(outcomes) => Ok(outcomes),
            other => Err(unexpected_answer(&other)),
        }
    }

    fn make_elections(&self, unclean: bool, asked: Option<&[(String, i32)]>) -> Outcome {
        let kind = if unclean {
            ElectionType::Unclean
        } else {
            ElectionType::Preferred
        };
        let mut state = self.lock();
        let image = self.image();
        let every_partition: Vec<(String, i32)>;
        let partitions = if let Some(partitions) = asked {
            partitions
        } else {
            every_partition = image
                .topics
                .values()
                .flat_map(|topic| {
                    (0..topic.partition_count()).map(|index| (topic.name.clone(), index))
                })
                .collect();
            &every_partition
        };
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        self.with_sessions(&image, |sessions, _| {
            for (topic_name, index) in partitions {
                let found = image
                    .topics
                    .get(topic_name)
                    .and_then(|topic| Some((topic, topic.partition(*index)?)));
                let result = match found {
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("no partition {topic_name}-{index}"),
                    )),
                    Some((topic, partition)) => election::requested_election(
                        &image,
                        sessions.rules(),
                        kind,
                        topic,
                        *index,
                        partition,
                    )
                    .map_err(|refusal| election_refusal(refusal, topic_name, *index)),
                };
                let (code, message) = match result {
                    Ok(changes) => {
                        records.extend(changes);
                        (0, None)
                    }
                    Err((ResponseError::ElectionNotNeeded, _)) if asked.is_none() => continue,
                    Err((error, message)) => (error.code(), Some(message)),
                };
                outcomes.push(ElectionOutcome {
                    topic: topic_name.clone(),
                    partition: *index,
                    code,
                    message,
                });
            }
        });
        let applied_index = self.commit(&mut state, &records)?;
        Ok(Answer {
            applied_index,
            done: Done::Elections(outcomes),
        })
    }

    /// On the quorum leader, with `auto.leader.rebalance.enable`: gives
    /// leaderships back to their preferred replicas where a broker's
    /// imbalance passed `leader.imbalance.per.broker.percentage`
    /// ([`election::rebalancing_elections`]). Elsewhere it does nothing.
    ///
    /// # Errors
    /// `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR` if the elections cannot
    /// be committed.
    pub fn rebalance_leaders(&self) -> Result<(), MetadataError> {
        if !self.auto_leader_rebalance.enable || self.quorum.leader() != Leader::ThisNode {
            return Ok(());
        }
        let mut state = self.lock();
        let image = self.image();
        let records = self.with_sessions(&image, |sessions, _| {
            election::rebalancing_elections(
                &image,
                sessions.rules(),
                self.auto_leader_rebalance.imbalance_percentage,
            )
        });
        if !records.is_empty() {
            tracing::info!(
                partitions = records.len(),
                "giving leaderships back to their preferred replicas"
            );
        }
        self.commit(&mut state, &records)?;
        Ok(())
    }

    /// On the quorum leader: fences every broker whose session expired
    /// (`broker.session.timeout.ms` without a heartbeat), with the leader
    /// elections that follow. Elsewhere it does nothing.
    ///
    /// # Errors
    /// `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR` if the fencing cannot be
    /// committed.
    pub fn expire_sessions(&self) -> Result<(), MetadataError> {
        if self.quorum.leader() != Leader::ThisNode {
            return Ok(());
        }
        let mut state = self.lock();
        let image = self.image();
        let records =
            self.with_sessions(&image, |sessions, now_ms| sessions.expire(&image, now_ms));
        for record in &records {
            if let MetadataRecord::FenceBroker(fencing) = record {
                tracing::warn!(
                    broker = fencing.id.0,
                    "fencing a broker: no heartbeat within broker.session.timeout.ms"
                );
            }
        }
        self.commit(&mut state, &records)?;
        Ok(())
    }

    /// Runs `decide` on the broker sessions with the controller's clock,
    /// after giving every broker a fresh session if this node's leadership
    /// began since they were last used (contact times are the active
    /// controller's memory only).
    fn with_sessions<T>(
        &self,
        image: &MetadataImage,
        decide: impl FnOnce(&mut BrokerSessions, i64) -> T,
    ) -> T {
        let now_ms = i64::try_from(self.clock_origin.elapsed().as_millis()).unwrap_or(i64::MAX);
        let term = self.quorum.term();
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sessions.term != Some(term) {
            sessions.sessions.activate(image, now_ms);
            sessions.term = Some(term);
        }
        decide(&mut sessions.sessions, now_ms)
    }

    /// Commits a registration (or finds it is a retry); returns its entry's
    /// index, if it wrote one, and the epoch.
    fn make_registration(
        &self,
        registration: Registration,
    ) -> Result<(Option<u64>, BrokerEpoch), Refusal> {
        let mut state = self.lock();
        let image = self.image();
        let from_this_process = matches!(
            &state.registration,
            Some(Change::RegisterBroker { incarnation_id, .. })
                if *incarnation_id == registration.incarnation_id.into_bytes()
        );
        // Kafka's broker epoch is the offset of the registration: past
        // every committed entry, so past every earlier registration's (and
        // past the last epoch of an upgraded image, from another log).
        let high_watermark = block_on(self.quorum.describe())
            .map_err(|error| not_controller(error.to_string()))?
            .high_watermark;
        let previous = image
            .brokers
            .get(&registration.broker_id)
            .map_or(BrokerEpoch::NONE, |current| current.epoch);
        let next_epoch = BrokerEpoch(
            i64::try_from(high_watermark)
                .unwrap_or(i64::MAX)
                .max(previous.0 + 1),
        );
        let registered = self
            .with_sessions(&image, |sessions, now_ms| {
                if from_this_process {
                    // This node leads the quorum: the registration of its
                    // node id that is not this process's is of a process
                    // that is gone (a voter's node id is one process).
                    sessions.forget(registration.broker_id);
                }
                sessions.register(&image, registration, next_epoch, now_ms)
            })
            .map_err(liveness_refusal)?;
        match registered {
            Registered::Existing(epoch) => Ok((None, epoch)),
            Registered::New { epoch, records } => Ok((self.commit(&mut state, &records)?, epoch)),
        }
    }

    /// Adds broker `broker` as a learner at `addr`, or moves it there,
    /// unless it is live at another address: then another process has its
    /// node id, and moving the learner would take the log away from the
    /// live one (`DUPLICATE_BROKER_REGISTRATION`, which a restarted broker
    /// retries until its old session has expired).
    fn make_learner(&self, broker: i32, addr: &str) -> Result<Option<u64>, Refusal> {
        let invalid = |message: String| {
            Refusal::from(MetadataError::new(ResponseError::InvalidRequest, message))
        };
        let id = NodeId::try_from(broker)
            .map_err(|_| invalid(format!("broker id {broker} is negative")))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| invalid(format!("{addr:?} is not a socket address")))?;
        let broker = BrokerId(broker);
        let _state = self.lock();
        let image = self.image();
        let live = self.with_sessions(&image, |sessions, now_ms| {
            sessions.is_live(&image, broker, now_ms)
        });
        if live && self.quorum.learner_addr(id) != Some(addr) {
            return Err(liveness_refusal(LivenessError::DuplicateRegistration {
                broker,
            }));
        }
        block_on(self.quorum.add_learner(id, addr)).map_err(Refusal::from)
    }

    /// A heartbeat: renews the broker's session and unfences it once it
    /// has caught up, committing that with the elections that follow.
    fn make_heartbeat(&self, heartbeat: Heartbeat) -> Outcome {
        let mut state = self.lock();
        let image = self.image();
        let records = self
            .with_sessions(&image, |sessions, now_ms| {
                sessions.heartbeat(&image, heartbeat, now_ms)
            })
            .map_err(liveness_refusal)?;
        let applied_index = self.commit(&mut state, &records)?;
        let fenced = self
            .image()
            .brokers
            .get(&heartbeat.broker_id)
            .is_none_or(|registration| registration.fenced);
        Ok(Answer {
            applied_index,
            done: Done::Heartbeat { fenced },
        })
    }

    /// The log configuration of `topic`: broker defaults plus its overrides.
    #[must_use]
    pub fn log_config_for(&self, topic: &str) -> LogConfig {
        let mut config = self.log_defaults.clone();
        if let Some(metadata) = self.image().topics.get(topic) {
            for (key, value) in &metadata.configs {
                // Overrides were validated when set.
                let _ = config.set(key, value);
            }
        }
        config
    }

    /// The override of config `key` for `topic`, if it has one.
    #[must_use]
    pub fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        self.image()
            .topics
            .get(topic)?
            .config(key)
            .map(str::to_owned)
    }

    /// Validates a topic creation without making it.
    ///
    /// # Errors
    /// `INVALID_TOPIC_EXCEPTION`, `INVALID_REQUEST` (for Kafka's reserved
    /// `__cluster_metadata`), `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`, `INVALID_CONFIG` or
    /// `TOPIC_ALREADY_EXISTS`, with a message.
    pub fn validate_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        self.validate_topic_in(&self.image(), name, partitions, replication_factor, configs)
    }

    fn validate_topic_in(
        &self,
        image: &MetadataImage,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        if !fjord_engine::types::is_valid_topic_name(name) {
            return Err(MetadataError::new(
                ResponseError::InvalidTopicException,
                format!("topic name {name:?} must be 1-249 characters of [a-zA-Z0-9._-] and not . or .."),
            ));
        }
        if name == fjord_engine::types::CLUSTER_METADATA_TOPIC {
            return Err(MetadataError::new(
                ResponseError::InvalidRequest,
                format!("Creation of internal topic {name} is prohibited."),
            ));
        }
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(MetadataError::new(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be between 1 and {PARTITIONS_MAX}"),
            ));
        }
        // The same check placement makes, before anything else is built.
        place_replicas(
            &placement_brokers(image),
            0..0,
            replication_factor,
            PlacementStart::from_seed([0; 16]),
        )
        .map_err(placement_error)?;
        let config = self.validate_topic_configs(configs)?;
        if image.topics.contains_key(name) {
            return Err(MetadataError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        Ok(config)
    }

    /// Validates a topic's config overrides (Kafka names, values Kafka would
    /// accept) and returns the log configuration they give: the broker
    /// defaults with the overrides applied.
    ///
    /// # Errors
    /// `INVALID_CONFIG` for an unknown name or a bad value, with a message.
    pub fn validate_topic_configs(
        &self,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        let mut config = self.log_defaults.clone();
        for (key, value) in configs {
            if BROKER_SIDE_TOPIC_CONFIGS.contains(&key.as_str()) {
                validate_broker_side_topic_config(key, value)?;
                continue;
            }
            config.set(key, value).map_err(|error| {
                MetadataError::new(ResponseError::InvalidConfig, error.to_string())
            })?;
        }
        Ok(config)
    }

    /// Replaces the config overrides of `name` with what `new_overrides`
    /// computes from the current ones (AlterConfigs replaces them all,
    /// IncrementalAlterConfigs edits them), validated like CreateTopics: a
    /// `ConfigRecord` per override set, changed or removed, durable before
    /// it is published. With `validate_only` nothing changes. Returns the
    /// topic's new log configuration, for its live partitions.
    ///
    /// `new_overrides` runs on this node's image; if the leader's overrides
    /// differ (a change this node has not applied yet), it runs again once
    /// this node has caught up (see [`forward`]).
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `new_overrides`' error,
    /// `INVALID_REQUEST` for a key given twice, `INVALID_CONFIG`,
    /// `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR` if it cannot be persisted.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        validate_only: bool,
        new_overrides: impl Fn(&[(String, String)]) -> Result<Vec<(String, String)>, MetadataError>,
    ) -> Result<LogConfig, MetadataError> {
        for _ in 0..STALE_RETRIES_MAX {
            let current = self.topic(name)?.configs.clone();
            let overrides = normalized_overrides(new_overrides(&current)?)?;
            let config = self.validate_topic_configs(&overrides)?;
            let change = Change::ReplaceTopicConfigs {
                name: name.to_owned(),
                current,
                overrides,
                validate_only,
            };
            match self.change(&change, CHANGE_TIMEOUT) {
                Ok(_) => {
                    if !validate_only {
                        tracing::info!(topic = name, "altered topic configs");
                    }
                    return Ok(config);
                }
                Err(Refusal {
                    stale: Some(index), ..
                }) => block_on(self.quorum.await_applied(index, CHANGE_TIMEOUT))
                    .map_err(|error| MetadataError::from(not_controller(error.to_string())))?,
                Err(refusal) => return Err(refusal.into()),
            }
        }
        Err(not_controller(format!(
            "the configs of topic {name:?} kept changing meanwhile"
        ))
        .into())
    }

    fn make_topic_configs(
        &self,
        name: &str,
        current: &[(String, String)],
        overrides: &[(String, String)],
        validate_only: bool,
    ) -> Outcome {
        let mut state = self.lock();
        let topic = self.topic(name)?;
        if topic.configs != current {
            return Err(Refusal {
                code: ResponseError::NotController.code(),
                message: format!("the configs of topic {name:?} changed meanwhile"),
                stale: Some(self.quorum.applied_index().unwrap_or_default()),
            });
        }
        let overrides = normalized_overrides(overrides.to_vec())?;
        self.validate_topic_configs(&overrides)?;
        if validate_only {
            return Ok(Answer {
                applied_index: None,
                done: Done::Nothing,
            });
        }
        let config_record = |key: &str, value: Option<&str>| {
            MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: name.to_owned(),
                name: key.to_owned(),
                value: value.map(str::to_owned),
            })
        };
        let removed = topic
            .configs
            .iter()
            .filter(|(key, _)| !overrides.iter().any(|(new_key, _)| new_key == key))
            .map(|(key, _)| config_record(key, None));
        let set = overrides
            .iter()
            .filter(|(key, value)| topic.config(key) != Some(value.as_str()))
            .map(|(key, value)| config_record(key, Some(value)));
        let mut records: Vec<MetadataRecord> = removed.chain(set).collect();
        // A topic that now allows unclean elections gets leaders for its
        // offline partitions at once, as Kafka's controller does.
        let image = self.image();
        let after = image.apply(&records)?;
        records.extend(self.with_sessions(&image, |sessions, _| {
            after_config_change(&after, sessions.rules(), name)
        }));
        Ok(Answer {
            applied_index: self.commit(&mut state, &records)?,
            done: Done::Nothing,
        })
    }

    /// Grows `name` to `count` partitions (CreatePartitions), durable before
    /// it is published. With `validate_only` nothing changes. Returns the
    /// previous partition count; the new partitions are the caller's to
    /// create on their shards.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_PARTITIONS` unless
    /// `count` is larger than the current count and at most
    /// [`PARTITIONS_MAX`], `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR`.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<BrokerId>]>,
        validate_only: bool,
    ) -> Result<i32, MetadataError> {
        let change = Change::AddPartitions {
            name: name.to_owned(),
            count,
            assignment: assignment.map(assignment_ids),
            validate_only,
        };
        match self.change(&change, CHANGE_TIMEOUT)?.done {
            Done::PreviousPartitionCount(previous) => Ok(previous),
            other => Err(unexpected_answer(&other)),
        }
    }

    fn make_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<i32>]>,
        validate_only: bool,
    ) -> Result<(Option<u64>, i32), Refusal> {
        let mut state = self.lock();
        let topic = self.topic(name)?;
        let previous = topic.partition_count();
        check_partition_increase(previous, count)?;
        if validate_only {
            return Ok((None, previous));
        }
        let replication_factor = topic
            .partitions
            .first()
            .map_or(1, |partition| partition.replicas.len() as i16);
        let assignment = assignment.map(assignment_brokers);
        let records = new_partitions(
            &self.image(),
            topic.id,
            previous..count,
            replication_factor,
            assignment.as_deref(),
        )?;
        Ok((self.commit(&mut state, &records)?, previous))
    }

    /// Creates a topic after [`Controller::validate_topic`]: its
    /// `TopicRecord`, a `PartitionRecord` per partition and a
    /// `ConfigRecord` per override, as one durable batch.
    ///
    /// # Errors
    /// As `validate_topic`, or `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR` if
    /// it cannot be persisted.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<&[Vec<BrokerId>]>,
        configs: Vec<(String, String)>,
    ) -> Result<Arc<TopicImage>, MetadataError> {
        let change = Change::CreateTopic {
            name: name.to_owned(),
            partitions,
            replication_factor,
            assignment: assignment.map(assignment_ids),
            configs,
        };
        self.change(&change, CHANGE_TIMEOUT)?;
        self.topic(name)
    }

    fn make_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<&[Vec<i32>]>,
        configs: &[(String, String)],
    ) -> Result<Option<u64>, Refusal> {
        let mut state = self.lock();
        let image = self.image();
        self.validate_topic_in(&image, name, partitions, replication_factor, configs)?;
        let topic_id = loop {
            let id = TopicId::from(Uuid::new_v4());
            if !id.is_zero() && image.topic_by_id(id.uuid()).is_none() {
                break id;
            }
        };
        let mut records = vec![MetadataRecord::Topic(TopicRecord {
            name: name.to_owned(),
            topic_id,
        })];
        let assignment = assignment.map(assignment_brokers);
        records.extend(new_partitions(
            &image,
            topic_id,
            0..partitions,
            replication_factor,
            assignment.as_deref(),
        )?);
        records.extend(configs.iter().map(|(key, value)| {
            MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: name.to_owned(),
                name: key.clone(),
                value: Some(value.clone()),
            })
        }));
        Ok(self.commit(&mut state, &records)?)
    }

    /// Removes a topic, its partitions and configs from the metadata (a
    /// `RemoveTopicRecord`) and returns it as this node last knew it; its
    /// partitions' data is the caller's to delete.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if it does not exist, `NOT_CONTROLLER`
    /// or `KAFKA_STORAGE_ERROR`.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<TopicImage>, MetadataError> {
        let topic = self.topic(name)?;
        self.change(
            &Change::DeleteTopic {
                name: name.to_owned(),
            },
            CHANGE_TIMEOUT,
        )?;
        Ok(topic)
    }

    fn make_deletion(&self, name: &str) -> Result<Option<u64>, Refusal> {
        let mut state = self.lock();
        let topic = self.topic(name)?;
        let record = MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id: topic.id });
        Ok(self.commit(&mut state, &[record])?)
    }

    /// A new idempotent producer id for this broker, never handed out
    /// before, even across restarts: ids come from a block this broker took
    /// with `AllocateProducerIds` from the quorum leader, durable before the
    /// first of them is returned.
    ///
    /// # Errors
    /// As [`Controller::allocate_producer_ids`].
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let (epoch, taken) = {
            let mut state = self.lock();
            if let Some(id) = state.producer_ids.next() {
                return Ok(id);
            }
            (state.broker_epoch, state.producer_ids_taken)
        };
        // The block is taken without the lock: on a node that does not
        // lead, the leader takes it (and this node's lock) meanwhile.
        let block = self.allocate_producer_ids(self.node, epoch)?;
        let mut state = self.lock();
        if state.producer_ids_taken == taken {
            state.producer_ids = block;
            state.producer_ids_taken += 1;
        }
        state
            .producer_ids
            .next()
            .ok_or_else(|| not_controller("producer id blocks were taken meanwhile").into())
    }

    /// `AllocateProducerIds`: the next block of [`PRODUCER_ID_BLOCK`]
    /// producer ids for broker `broker` at registration epoch `epoch`,
    /// durable before it is returned, so no two brokers and no two starts
    /// of one ever get the same id.
    ///
    /// # Errors
    /// `STALE_BROKER_EPOCH` unless `broker` is registered with `epoch`;
    /// `NOT_CONTROLLER` or `KAFKA_STORAGE_ERROR` if the block cannot be
    /// persisted.
    pub fn allocate_producer_ids(
        &self,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<Range<i64>, MetadataError> {
        let change = Change::AllocateProducerIds {
            broker: broker.0,
            epoch: epoch.0,
        };
        match self.change(&change, CHANGE_TIMEOUT)?.done {
            Done::ProducerIds { start, end } => Ok(start..end),
            other => Err(unexpected_answer(&other)),
        }
    }

    fn take_producer_id_block(
        &self,
        state: &mut ControllerState,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<(u64, Range<i64>), MetadataError> {
        let image = self.image();
        let registered = image
            .brokers
            .get(&broker)
            .is_some_and(|registration| registration.epoch == epoch);
        if !registered {
            return Err(MetadataError::new(
                ResponseError::StaleBrokerEpoch,
                format!("broker {broker} is not registered with epoch {epoch}"),
            ));
        }
        let start = image.next_producer_id.0;
        let end = start + PRODUCER_ID_BLOCK;
        let record = MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: broker,
            broker_epoch: epoch,
            next_producer_id: ProducerId(end),
        });
        let index = self.commit(state, &[record])?;
        Ok((index.unwrap_or_default(), start..end))
    }
}

/// `overrides` sorted by key.
///
/// # Errors
/// `INVALID_REQUEST` for a key given twice.
fn normalized_overrides(
    mut overrides: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, MetadataError> {
    overrides.sort();
    if let Some(pair) = overrides.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(MetadataError::new(
            ResponseError::InvalidRequest,
            format!("duplicate config key {}", pair[0].0),
        ));
    }
    Ok(overrides)
}

fn assignment_ids(assignment: &[Vec<BrokerId>]) -> Vec<Vec<i32>> {
    assignment
        .iter()
        .map(|replicas| replicas.iter().map(|broker| broker.0).collect())
        .collect()
}

fn assignment_brokers(assignment: &[Vec<i32>]) -> Vec<Vec<BrokerId>> {
    assignment
        .iter()
        .map(|replicas| replicas.iter().copied().map(BrokerId).collect())
        .collect()
}

fn broker_endpoint(endpoint: &Endpoint) -> BrokerEndpoint {
    BrokerEndpoint {
        name: endpoint.name.clone(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        security_protocol: endpoint.security_protocol,
    }
}

/// Kafka's error for a registration or heartbeat the sessions refuse.
fn liveness_refusal(error: LivenessError) -> Refusal {
    let code = match error {
        LivenessError::DuplicateRegistration { .. } => ResponseError::DuplicateBrokerRegistration,
        LivenessError::NotRegistered { .. } => ResponseError::BrokerIdNotRegistered,
        LivenessError::StaleEpoch { .. } => ResponseError::StaleBrokerEpoch,
    };
    Refusal {
        code: code.code(),
        message: error.to_string(),
        stale: None,
    }
}

/// Kafka's error for an election refused on `topic`-`partition`.
fn election_refusal(
    refusal: ElectionRefusal,
    topic: &str,
    partition: i32,
) -> (ResponseError, String) {
    match refusal {
        ElectionRefusal::NotNeeded => (
            ResponseError::ElectionNotNeeded,
            format!("{topic}-{partition} already has the leader asked for"),
        ),
        ElectionRefusal::PreferredNotAvailable => (
            ResponseError::PreferredLeaderNotAvailable,
            format!("the preferred replica of {topic}-{partition} is not a live in-sync replica"),
        ),
        ElectionRefusal::NoEligibleReplica => (
            ResponseError::EligibleLeadersNotAvailable,
            format!("no replica of {topic}-{partition} is live"),
        ),
    }
}

fn not_controller(message: impl Into<String>) -> Refusal {
    Refusal {
        code: ResponseError::NotController.code(),
        message: message.into(),
        stale: None,
    }
}

fn unexpected_answer(done: &Done) -> MetadataError {
    MetadataError::new(
        ResponseError::UnknownServerError,
        format!("the controller answered {done:?} to another change"),
    )
}

impl From<MetadataError> for Refusal {
    fn from(error: MetadataError) -> Self {
        Self {
            code: error.code,
            message: error.message,
            stale: None,
        }
    }
}

impl From<Refusal> for MetadataError {
    fn from(refusal: Refusal) -> Self {
        Self {
            code: refusal.code,
            message: refusal.message,
        }
    }
}

impl From<ProposeError> for Refusal {
    fn from(error: ProposeError) -> Self {
        MetadataError::from(error).into()
    }
}

impl From<ApplyError> for Refusal {
    fn from(error: ApplyError) -> Self {
        MetadataError::from(error).into()
    }
}

/// The brokers replicas may be placed on: the registered, unfenced ones.
fn placement_brokers(image: &MetadataImage) -> Vec<PlacementBroker> {
    image
        .unfenced_brokers()
        .map(|broker| PlacementBroker {
            id: broker.id,
            rack: broker.rack.clone(),
        })
        .collect()
}

fn placement_error(error: PlacementError) -> MetadataError {
    MetadataError::new(ResponseError::InvalidReplicationFactor, error.to_string())
}

/// The `PartitionRecord`s of new partitions `indexes` of a topic, their
/// replicas as the request's manual `assignment` gives them (one list per
/// new partition, checked by the handler), else placed over the unfenced
/// brokers as Kafka places them ([`placement`], striped from a start the
/// topic's id fixes, so a topic that grows keeps its striping); every
/// replica in the ISR (the partitions are empty) and the first one leading
/// at epoch 0.
///
/// # Errors
/// `INVALID_REPLICATION_FACTOR` if placement cannot place them,
/// `INVALID_REPLICA_ASSIGNMENT` for an assignment of the wrong length or
/// with an empty list.
pub fn new_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    indexes: Range<i32>,
    replication_factor: i16,
    assignment: Option<&[Vec<BrokerId>]>,
) -> Result<Vec<MetadataRecord>, MetadataError> {
    let placed = match assignment {
        Some(assignment) if assignment.len() == indexes.len() => assignment.to_vec(),
        Some(assignment) => {
            return Err(MetadataError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} partition(s) are added, but {} assignment(s) were given",
                    indexes.len(),
                    assignment.len()
                ),
            ))
        }
        None => place_replicas(
            &placement_brokers(image),
            indexes.clone(),
            replication_factor,
            PlacementStart::from_seed(topic_id.0),
        )
        .map_err(placement_error)?,
    };
    if placed.iter().any(Vec::is_empty) {
        return Err(MetadataError::new(
            ResponseError::InvalidReplicaAssignment,
            "a partition's replica list is empty".to_owned(),
        ));
    }
    Ok(indexes
        .zip(placed)
        .map(|(partition_id, replicas)| {
            MetadataRecord::Partition(PartitionRecord {
                partition_id,
                topic_id,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            })
        })
        .collect())
}

/// Brings the metadata a directory of an earlier version holds into the
/// quorum (see the module documentation): the image of the local metadata
/// log in `dir`, or, if that log holds nothing, of the legacy file of
/// `data_dir`, proposed as one change if the quorum has committed no
/// metadata yet; then the old files are removed, durably.
fn upgrade_previous_metadata(
    quorum: &QuorumHandle,
    dir: &Path,
    data_dir: &Path,
    node: BrokerId,
) -> Result<(), OpenError> {
    let legacy_path = data_dir.join(legacy::LEGACY_METADATA_FILE);
    let legacy_io = |context, path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::LegacyIo {
            context,
            path,
            source,
        }
    };
    let legacy_bytes = match std::fs::read(&legacy_path) {
        Ok(bytes) => Some(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(legacy_io("reading", &legacy_path)(error)),
    };
    let log_exists = log::exists(dir)?;
    if legacy_bytes.is_none() && !log_exists {
        return Ok(());
    }
    if quorum.image().records().is_empty() {
        let (mut image, log_is_empty) = if log_exists {
            recover_log(dir)?
        } else {
            (MetadataImage::default(), true)
        };
        if let (Some(bytes), true) = (&legacy_bytes, log_is_empty) {
            image = convert_legacy(bytes, &image, node, &legacy_path)?;
        }
        let records = image.records();
        if !records.is_empty() {
            block_on(quorum.propose(&records, CHANGE_TIMEOUT)).map_err(|source| {
                OpenError::Upgrade {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        tracing::info!(
            dir = %dir.display(),
            topics = image.topics.len(),
            "upgraded the metadata of an earlier version into the controller quorum"
        );
    }
    if log_exists {
        log::remove(dir)?;
    }
    if legacy_bytes.is_some() {
        std::fs::remove_file(&legacy_path).map_err(legacy_io("removing", &legacy_path))?;
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(legacy_io("syncing", data_dir))?;
    }
    Ok(())
}

/// The image of the local metadata log in `dir`, and whether the log holds
/// no record at all.
fn recover_log(dir: &Path) -> Result<(MetadataImage, bool), OpenError> {
    let (log, recovered) = MetadataLog::open(dir)?;
    let recovery_error = |source| OpenError::Replay {
        dir: dir.to_path_buf(),
        source,
    };
    let mut image = MetadataImage::default()
        .apply(&recovered.snapshot)
        .map_err(recovery_error)?;
    for batch in &recovered.batches {
        image = image.apply(batch).map_err(recovery_error)?;
    }
    tracing::info!(
        dir = %dir.display(),
        replayed = recovered.batches.iter().map(Vec::len).sum::<usize>(),
        cut_bytes = recovered.cut_bytes,
        "local metadata log recovered"
    );
    Ok((image, log.next_offset() == fjord_engine::Offset::ZERO))
}

/// `image` with the legacy file's metadata (`bytes`, read from `path`)
/// added.
fn convert_legacy(
    bytes: &[u8],
    image: &MetadataImage,
    node: BrokerId,
    path: &Path,
) -> Result<MetadataImage, OpenError> {
    let legacy = legacy::decode(bytes).map_err(|source| OpenError::CorruptLegacy {
        path: path.to_path_buf(),
        source,
    })?;
    let records = legacy::records(&legacy, node);
    let upgraded = image
        .apply(&records)
        .map_err(|source| OpenError::ConvertLegacy {
            path: path.to_path_buf(),
            source,
        })?;
    tracing::info!(
        path = %path.display(),
        topics = legacy.topics.len(),
        "converted the legacy metadata file"
    );
    Ok(upgraded)
}

/// What `DescribeQuorum` reports of `description`.
fn quorum_view(description: &QuorumDescription) -> QuorumView {
    let broker = |id: NodeId| i32::try_from(id).map_or(BrokerId::NONE, BrokerId);
    let offset = |index: u64| i64::try_from(index).unwrap_or(i64::MAX);
    let now = SystemTime::now();
    let replica = |voter: &VoterDescription| VoterView {
        id: broker(voter.id),
        log_end_offset: voter
            .matched_index
            .map_or(0, |index| offset(index.saturating_add(1))),
        // The leader fetches from no one.
        last_fetch_ms: (Some(voter.id) != description.leader)
            .then(|| {
                let at = now.checked_sub(voter.last_contact?)?;
                let since_epoch = at.duration_since(UNIX_EPOCH).ok()?;
                i64::try_from(since_epoch.as_millis()).ok()
            })
            .flatten(),
        last_caught_up_ms: None,
    };
    QuorumView {
        leader: description.leader.map_or(BrokerId::NONE, broker),
        leader_epoch: i32::try_from(description.leader_epoch).unwrap_or(i32::MAX),
        high_watermark: offset(description.high_watermark),
        voters: description.voters.iter().map(replica).collect(),
        observers: description.observers.iter().map(replica).collect(),
    }
}

/// Asks the voters, in turn, until the leader answers, to add this
/// broker-only node as a learner reached at its quorum listener's port on
/// `advertised_host`.
fn join_as_learner(
    quorum: &QuorumHandle,
    node: BrokerId,
    voters: &BTreeMap<NodeId, SocketAddr>,
    advertised_host: &str,
    timeout: Duration,
) -> Result<(), OpenError> {
    let port = quorum.listening().map_or(0, |addr| addr.port());
    let addr = (advertised_host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| OpenError::UnresolvableVoter {
            node: node.0,
            address: format!("{advertised_host}:{port}"),
            reason: "the advertised host does not resolve".to_owned(),
        })?;
    let change = Change::AddLearner {
        broker: node.0,
        addr: addr.to_string(),
    };
    let deadline = Instant::now() + timeout;
    // The leader's refusal says more than a voter that is not the leader
    // or cannot be reached: it is what the node reports on giving up.
    let mut refused: Option<String> = None;
    let mut unreachable = String::new();
    loop {
        for (&voter, &voter_addr) in voters {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            match block_on(quorum.forward(voter_addr, change.clone(), remaining)) {
                Ok(Ok(_)) => {
                    tracing::info!(%addr, voter, "following the controller quorum as a learner");
                    return Ok(());
                }
                // This node's previous process, killed, still has a live
                // session: ask again.
                Ok(Err(refusal))
                    if refusal.code == ResponseError::DuplicateBrokerRegistration.code() =>
                {
                    refused = Some(refusal.message);
                }
                Ok(Err(refusal)) if refusal.code == ResponseError::NotController.code() => {
                    unreachable = refusal.message;
                }
                Ok(Err(refusal)) => {
                    return Err(OpenError::Register {
                        node: node.0,
                        source: refusal.into(),
                    });
                }
                Err(error) => unreachable = format!("controller {voter} at {voter_addr}: {error}"),
            }
        }
        if Instant::now() >= deadline {
            let reason = refused.unwrap_or(unreachable);
            return Err(OpenError::Register {
                node: node.0,
                source: not_controller(format!(
                    "no voter added this broker as a learner: {reason}"
                ))
                .into(),
            });
        }
        std::thread::sleep(CHANGE_RETRY_WAIT);
    }
}

/// The voters' controller addresses, each host resolved once at start
/// (the first address it resolves to).
fn resolve_voters(
    voters: &BTreeMap<i32, HostPort>,
) -> Result<BTreeMap<NodeId, SocketAddr>, OpenError> {
    voters
        .iter()
        .map(|(&node, address)| {
            let unresolvable = |reason: String| OpenError::UnresolvableVoter {
                node,
                address: address.to_string(),
                reason,
            };
            let id = NodeId::try_from(node).map_err(|_| OpenError::NegativeNodeId { node })?;
            let addr = (address.host.as_str(), address.port)
                .to_socket_addrs()
                .map_err(|error| unresolvable(error.to_string()))?
                .next()
                .ok_or_else(|| unresolvable("no address".to_owned()))?;
            Ok((id, addr))
        })
        .collect()
}

fn unknown_topic(name: &str) -> MetadataError {
    MetadataError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("unknown topic {name:?}"),
    )
}

/// Kafka's CreatePartitions rule: the count only grows, up to
/// [`PARTITIONS_MAX`].
fn check_partition_increase(current: i32, requested: i32) -> Result<(), MetadataError> {
    let reason = if requested == current {
        format!("topic already has {current} partitions")
    } else if requested < current {
        format!(
            "topic currently has {current} partitions, which is higher than the requested {requested}"
        )
    } else if requested > PARTITIONS_MAX {
        format!("number of partitions must be at most {PARTITIONS_MAX}")
    } else {
        return Ok(());
    };
    Err(MetadataError::new(ResponseError::InvalidPartitions, reason))
}

/// Topic configs the broker (not the engine) interprets; every other topic
/// config is one of [`LogConfig::KEYS`]. `write.caching` is fjord's (as
/// Redpanda's): `false`, the default, acknowledges an `acks=all` record
/// once every ISR member has *flushed* it; `true` once every one has
/// *written* it, Kafka's behaviour.
pub const BROKER_SIDE_TOPIC_CONFIGS: [&str; 4] = [
    "compression.type",
    "min.insync.replicas",
    election::UNCLEAN_LEADER_ELECTION_ENABLE,
    "write.caching",
];

/// Validates one of [`BROKER_SIDE_TOPIC_CONFIGS`].
fn validate_broker_side_topic_config(key: &str, value: &str) -> Result<(), MetadataError> {
    let valid = match key {
        "compression.type" => {
            ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&value)
        }
        "min.insync.replicas" => value.parse::<i32>().is_ok_and(|replicas| replicas >= 1),
        election::UNCLEAN_LEADER_ELECTION_ENABLE | "write.caching" => {
            value.trim().eq_ignore_ascii_case("true") || value.trim().eq_ignore_ascii_case("false")
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(MetadataError::new(
            ResponseError::InvalidConfig,
            format!("invalid value {value:?} for {key}"),
        ))
    }
}

#[cfg(test)]
mod tests;
