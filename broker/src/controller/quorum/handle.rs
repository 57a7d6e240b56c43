//! Starting a controller quorum member on its own thread, and the handle
//! the rest of the broker talks to it through.
//!
//! The member runs on a dedicated OS thread, `fjord-controller`, in a tokio
//! current-thread runtime: its election timers must not wait behind a busy
//! data shard, and openraft needs tokio. The handle is `Send + Sync` and
//! its futures need no runtime (they await tokio's runtime-agnostic
//! channels), so a glommio shard or a blocking thread can use it. Requests
//! reach the thread through a queue of at most [`COMMANDS_QUEUED_MAX`]
//! commands; a proposer waits for room.
//!
//! # Forming the quorum
//! Every voter, on start, asks openraft to initialize the membership of
//! `controller.quorum.voters` if its own log is empty; openraft refuses
//! once the log holds anything. All voters pass the same membership, and
//! openraft documents that initializing several nodes with the same one is
//! safe (the membership entry is identical, at log id zero), so the first
//! start of a fresh voter set needs no coordination and a restart never
//! re-initializes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use openraft::error::{ClientWriteError, Fatal, InitializeError, RaftError};
use openraft::Raft;
use openraft::RaftMetrics;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::{millis, QuorumConfig};
use super::error::{ProposeError, QuorumError, RpcError};
use super::log_store::LogStore;
use super::network::{self, Network, Peers};
use super::server::{self, ChangeHandler, ChangeHandlerSlot};
use super::state_machine::StateMachine;
use super::types::{ControllerNode, MetadataBatch, MetadataTypes, NodeId};
use crate::controller::forward::{Change, Outcome};
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataImage;

/// The wait before a member that found it does not lead after all looks
/// for the leader again.
const LEADER_RECHECK_WAIT: Duration = Duration::from_millis(50);
/// Most requests waiting for the controller thread.
pub const COMMANDS_QUEUED_MAX: usize = 256;

/// Where a proposal landed: its entry's index and the leader's term
/// (Kafka's leader epoch of the metadata log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AppliedAt {
    /// The entry's index.
    pub index: u64,
    /// The term it was written in.
    pub term: u64,
}

/// The quorum as this member sees it, for `DescribeQuorum`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumDescription {
    /// The leader this member knows of.
    pub leader: Option<NodeId>,
    /// The current term (the leader epoch).
    pub leader_epoch: u64,
    /// The high watermark: the index after the last committed entry.
    pub high_watermark: u64,
    /// The last applied entry's index.
    pub last_applied: Option<u64>,
    /// The voters, by id.
    pub voters: Vec<VoterDescription>,
    /// The learners (broker-only nodes following the log), by id.
    pub observers: Vec<VoterDescription>,
}

/// One voter (or observer) in a [`QuorumDescription`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterDescription {
    /// Its `node.id`.
    pub id: NodeId,
    /// The last index the leader knows it holds (only a leader knows; for
    /// itself, its own last entry).
    pub matched_index: Option<u64>,
    /// How long since it last answered this member (zero for itself).
    pub last_contact: Option<Duration>,
}

type WriteResult = Result<
    openraft::raft::ClientWriteResponse<MetadataTypes>,
    ClientWriteError<NodeId, ControllerNode>,
>;

enum Command {
    Propose {
        batch: MetadataBatch,
        timeout: Duration,
        reply: oneshot::Sender<Result<WriteResult, ProposeError>>,
    },
    Describe {
        reply: oneshot::Sender<Result<QuorumDescription, Fatal<NodeId>>>,
    },
    DescribeRemote {
        leader: SocketAddr,
        timeout: Duration,
        reply: oneshot::Sender<Result<QuorumDescription, RpcError>>,
    },
    AwaitLeadership {
        timeout: Duration,
        reply: oneshot::Sender<Result<(), QuorumError>>,
    },
    AwaitCaughtUp {
        timeout: Duration,
        reply: oneshot::Sender<Result<(), QuorumError>>,
    },
    AwaitApplied {
        index: u64,
        timeout: Duration,
        reply: oneshot::Sender<Result<(), QuorumError>>,
    },
    AddLearner {
        id: NodeId,
        addr: SocketAddr,
        reply: oneshot::Sender<Result<Option<u64>, ProposeError>>,
    },
    Forward {
        leader: SocketAddr,
        change: Change,
        timeout: Duration,
        reply: oneshot::Sender<Result<Outcome, RpcError>>,
    },
}

/// openraft's view of the member, updated by its own thread.
type Metrics = watch::Receiver<RaftMetrics<NodeId, ControllerNode>>;

/// Starts controller quorum members.
pub struct Quorum;

impl Quorum {
    /// Opens the log in `config.dir`, binds `config.listen` (if set), and
    /// starts the
    /// member on its `fjord-controller` thread; returns once the member
    /// runs (and, on a fresh voter set, has initialized the membership).
    ///
    /// # Errors
    /// [`QuorumError`] if this node is not a voter, the settings are
    /// invalid, the listener cannot be bound, the log cannot be recovered,
    /// or openraft refuses to start.
    pub fn start(config: QuorumConfig) -> Result<QuorumHandle, QuorumError> {
        if config.learner == config.voters.contains_key(&config.node_id) {
            return Err(if config.learner {
                QuorumError::LearnerIsAVoter {
                    node_id: config.node_id,
                }
            } else {
                QuorumError::NotAVoter {
                    node_id: config.node_id,
                }
            });
        }
        let raft_config = Arc::new(config.raft_config()?);
        let listener = match config.listen {
            Some(addr) => {
                let bind = |source| QuorumError::Bind { addr, source };
                let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
                listener.set_nonblocking(true).map_err(bind)?;
                let bound = listener.local_addr().map_err(bind)?;
                Some((bound, listener))
            }
            None => None,
        };
        let listening = listener.as_ref().map(|(bound, _)| *bound);
        let log_store = LogStore::open(&config.dir)?;
        let (publications, image_published) = watch::channel(0);
        let state_machine =
            StateMachine::open(&config.dir, Arc::clone(&config.image), publications)?;
        let peers = Arc::new(Peers::new(
            config.node_id,
            config.voters.keys().copied(),
            config.request_timeout,
        ));
        let (commands, receiver) = mpsc::channel(COMMANDS_QUEUED_MAX);
        let (started, start_result) = std::sync::mpsc::sync_channel(1);
        let changes = ChangeHandlerSlot::default();
        let member = Member {
            node_id: config.node_id,
            learner: config.learner,
            voters: config.voters.clone(),
            describer: Arc::new(Describer {
                node_id: config.node_id,
                voters: config.voters.keys().copied().collect(),
                peers: Arc::clone(&peers),
            }),
            changes: Arc::clone(&changes),
        };
        let thread = std::thread::Builder::new()
            .name("fjord-controller".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(QuorumError::Thread(error)));
                        return Ok(());
                    }
                };
                runtime.block_on(member.run(
                    raft_config,
                    listener,
                    log_store,
                    state_machine,
                    receiver,
                    started,
                ))
            })
            .map_err(QuorumError::Thread)?;
        let metrics = match start_result.recv() {
            Ok(Ok(metrics)) => metrics,
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(QuorumError::Stopped),
        };
        Ok(QuorumHandle {
            node_id: config.node_id,
            listening,
            image_published,
            commands: Some(commands),
            image: config.image,
            metrics,
            changes,
            thread: Some(thread),
        })
    }
}

/// What the controller thread runs.
struct Member {
    node_id: NodeId,
    learner: bool,
    voters: BTreeMap<NodeId, SocketAddr>,
    describer: Arc<Describer>,
    changes: ChangeHandlerSlot,
}

impl Member {
    async fn run(
        self,
        raft_config: Arc<openraft::Config>,
        listener: Option<(SocketAddr, std::net::TcpListener)>,
        log_store: LogStore,
        state_machine: StateMachine,
        mut commands: mpsc::Receiver<Command>,
        started: std::sync::mpsc::SyncSender<Result<Metrics, QuorumError>>,
    ) -> Result<(), QuorumError> {
        let raft = match self
            .start_raft(raft_config, listener, log_store, state_machine)
            .await
        {
            Ok(raft) => {
                let _ = started.send(Ok(raft.metrics()));
                raft
            }
            Err(error) => {
                let _ = started.send(Err(error));
                return Ok(());
            }
        };
        while let Some(command) = commands.recv().await {
            match command {
                Command::Propose {
                    batch,
                    timeout,
                    reply,
                } => {
                    // Appended in order here; the commit is awaited on a
                    // task of its own, so the member keeps answering.
                    let written = raft.client_write_ff(batch).await;
                    tokio::spawn(async move {
                        let outcome = match written {
                            Err(fatal) => Err(ProposeError::from(fatal)),
                            Ok(written) => match tokio::time::timeout(timeout, written).await {
                                Ok(Ok(result)) => Ok(result),
                                Ok(Err(_)) => Err(ProposeError::Stopped),
                                Err(_) => Err(ProposeError::Timeout {
                                    timeout_ms: millis(timeout),
                                }),
                            },
                        };
                        let _ = reply.send(outcome);
                    });
                }
                Command::Describe { reply } => {
                    let _ = reply.send(self.describer.describe(&raft).await);
                }
                Command::DescribeRemote {
                    leader,
                    timeout,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let _ = reply.send(network::describe(leader, timeout).await);
                    });
                }
                Command::AwaitLeadership { timeout, reply } => {
                    // Waits on its own task: the member keeps answering.
                    let raft = raft.clone();
                    let node_id = self.node_id;
                    tokio::spawn(async move {
                        let _ = reply.send(await_leadership(&raft, node_id, timeout).await);
                    });
                }
                Command::AwaitCaughtUp { timeout, reply } => {
                    let raft = raft.clone();
                    let node_id = self.node_id;
                    tokio::spawn(async move {
                        let _ = reply.send(await_caught_up(&raft, node_id, timeout).await);
                    });
                }
                Command::AwaitApplied {
                    index,
                    timeout,
                    reply,
                } => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let applied = raft
                            .wait(Some(timeout))
                            .applied_index_at_least(Some(index), "the change is applied here")
                            .await;
                        let _ =
                            reply.send(applied.map(|_| ()).map_err(|_| QuorumError::NotCaughtUp {
                                timeout_ms: millis(timeout),
                            }));
                    });
                }
                Command::AddLearner { id, addr, reply } => {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(add_learner(&raft, id, addr).await);
                    });
                }
                Command::Forward {
                    leader,
                    change,
                    timeout,
                    reply,
                } => {
                    tokio::spawn(async move {
                        let _ = reply.send(network::forward(leader, change, timeout).await);
                    });
                }
            }
        }
        raft.shutdown().await.map_err(|_| QuorumError::Stopped)?;
        Ok(())
    }

    async fn start_raft(
        &self,
        raft_config: Arc<openraft::Config>,
        listener: Option<(SocketAddr, std::net::TcpListener)>,
        log_store: LogStore,
        state_machine: StateMachine,
    ) -> Result<Raft<MetadataTypes>, QuorumError> {
        let listener = match listener {
            Some((addr, listener)) => Some(
                tokio::net::TcpListener::from_std(listener)
                    .map_err(|source| QuorumError::Bind { addr, source })?,
            ),
            None => None,
        };
        let network = Network::new(Arc::clone(&self.describer.peers));
        let raft = Raft::new(self.node_id, raft_config, network, log_store, state_machine).await?;
        if let Some(listener) = listener {
            tokio::spawn(server::serve(
                listener,
                raft.clone(),
                Arc::clone(&self.changes),
                Arc::clone(&self.describer),
            ));
        }
        let members: BTreeMap<NodeId, ControllerNode> = self
            .voters
            .iter()
            .map(|(&id, &addr)| (id, ControllerNode { addr }))
            .collect();
        // Initializing a log that holds entries is refused, and openraft
        // logs the refusal as an error: ask first.
        if raft.is_initialized().await? {
            self.check_stored_voters(&raft)?;
            return Ok(raft);
        }
        if self.learner {
            // A learner's membership comes from the leader, once a voter
            // has added it (see `QuorumHandle::add_learner`).
            return Ok(raft);
        }
        match raft.initialize(members).await {
            Ok(()) => Ok(raft),
            // Another voter's membership reached this one meanwhile.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                self.check_stored_voters(&raft)?;
                Ok(raft)
            }
            Err(RaftError::APIError(InitializeError::NotInMembers(_))) => {
                Err(QuorumError::NotAVoter {
                    node_id: self.node_id,
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    /// A log that already holds a membership must hold the configured
    /// one: Kafka's static voters never change, and a node started with
    /// other voters than its log's (a single node's log given a cluster's
    /// voters, say) would otherwise go on as a quorum of its own.
    fn check_stored_voters(&self, raft: &Raft<MetadataTypes>) -> Result<(), QuorumError> {
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let stored: BTreeMap<NodeId, SocketAddr> = membership
            .voter_ids()
            .map(|id| {
                let addr = membership
                    .get_node(&id)
                    .map_or(ControllerNode::default().addr, |node| node.addr);
                (id, addr)
            })
            .collect();
        if stored == self.voters {
            return Ok(());
        }
        Err(QuorumError::VotersChanged {
            stored: voters_text(&stored),
            configured: voters_text(&self.voters),
        })
    }
}

/// What describes the quorum, on the member's thread and for the peers
/// that ask it over the network.
pub(super) struct Describer {
    node_id: NodeId,
    voters: Vec<NodeId>,
    peers: Arc<Peers>,
}

impl Describer {
    /// The quorum as `raft` sees it (a leader knows how far each voter
    /// and observer has the log; a follower only itself).
    pub(super) async fn describe(
        &self,
        raft: &Raft<MetadataTypes>,
    ) -> Result<QuorumDescription, Fatal<NodeId>> {
        let metrics = raft.metrics().borrow().clone();
        let committed = raft.with_raft_state(|state| state.committed).await?;
        let replica = |id: NodeId| {
            if id == self.node_id {
                VoterDescription {
                    id,
                    matched_index: metrics.last_log_index,
                    last_contact: Some(Duration::ZERO),
                }
            } else {
                VoterDescription {
                    id,
                    matched_index: metrics
                        .replication
                        .as_ref()
                        .and_then(|replication| replication.get(&id).copied().flatten())
                        .map(|matched| matched.index),
                    last_contact: self.peers.last_contact(id).map(|at| at.elapsed()),
                }
            }
        };
        let voters = self.voters.iter().map(|&id| replica(id)).collect();
        let observers = metrics
            .membership_config
            .membership()
            .learner_ids()
            .map(replica)
            .collect();
        Ok(QuorumDescription {
            leader: metrics.current_leader,
            leader_epoch: metrics.current_term,
            high_watermark: committed.map_or(0, |committed| committed.index + 1),
            last_applied: metrics.last_applied.map(|applied| applied.index),
            voters,
            observers,
        })
    }
}

/// Resolves once `node_id` leads and has applied every change committed
/// before its term, or fails after `timeout`.
async fn await_leadership(
    raft: &Raft<MetadataTypes>,
    node_id: NodeId,
    timeout: Duration,
) -> Result<(), QuorumError> {
    let leading = async {
        raft.wait(None)
            .metrics(
                |metrics| metrics.current_leader == Some(node_id),
                "this member leads",
            )
            .await
            .map_err(|_| QuorumError::Stopped)?;
        match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
            // Leadership moved on meanwhile.
            Err(RaftError::APIError(_)) => Err(QuorumError::NotLeading {
                node_id,
                timeout_ms: millis(timeout),
            }),
        }
    };
    tokio::time::timeout(timeout, leading)
        .await
        .map_err(|_| QuorumError::NotLeading {
            node_id,
            timeout_ms: millis(timeout),
        })?
}

/// Resolves once a leader is known and this member has applied every entry
/// it knows to be committed (on the leader: every entry committed before
/// its term), or fails after `timeout`.
async fn await_caught_up(
    raft: &Raft<MetadataTypes>,
    node_id: NodeId,
    timeout: Duration,
) -> Result<(), QuorumError> {
    let not_caught_up = || QuorumError::NotCaughtUp {
        timeout_ms: millis(timeout),
    };
    let caught_up = async {
        loop {
            let metrics = raft
                .wait(None)
                .metrics(
                    |metrics| metrics.current_leader.is_some(),
                    "a leader is known",
                )
                .await
                .map_err(|_| QuorumError::Stopped)?;
            if metrics.current_leader != Some(node_id) {
                let committed = raft.with_raft_state(|state| state.committed).await?;
                raft.wait(None)
                    .applied_index_at_least(committed.map(|log_id| log_id.index), "caught up")
                    .await
                    .map_err(|_| QuorumError::Stopped)?;
                return Ok(());
            }
            match raft.ensure_linearizable().await {
                Ok(_) => return Ok(()),
                Err(RaftError::Fatal(fatal)) => return Err(fatal.into()),
                // A restarted member names itself leader from the vote it
                // kept until it hears otherwise: wait for a leader again.
                Err(RaftError::APIError(_)) => {
                    tokio::time::sleep(LEADER_RECHECK_WAIT).await;
                }
            }
        }
    };
    tokio::time::timeout(timeout, caught_up)
        .await
        .map_err(|_| not_caught_up())?
}

/// Makes `id` a learner reached at `addr`, or moves a learner it already
/// is to `addr` (a broker-only node listens on a new port at each start);
/// returns the index of the membership entry, if one was written.
async fn add_learner(
    raft: &Raft<MetadataTypes>,
    id: NodeId,
    addr: SocketAddr,
) -> Result<Option<u64>, ProposeError> {
    let node = ControllerNode { addr };
    let (known, is_voter) = {
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        (
            membership.get_node(&id).copied(),
            membership.voter_ids().any(|voter| voter == id),
        )
    };
    let written = match known {
        Some(known) if known == node => return Ok(None),
        // A voter's address is its configuration's, never a learner's.
        Some(_) if is_voter => return Err(ProposeError::NotALearner { id }),
        Some(_) => {
            raft.change_membership(
                openraft::ChangeMembers::SetNodes(BTreeMap::from([(id, node)])),
                true,
            )
            .await
        }
        None => raft.add_learner(id, node, false).await,
    };
    match written {
        Ok(response) => Ok(Some(response.log_id.index)),
        Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        Err(RaftError::APIError(error)) => Err(write_refused(error)),
    }
}

/// What a write openraft refused means to its proposer.
fn write_refused(error: ClientWriteError<NodeId, ControllerNode>) -> ProposeError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => ProposeError::NotLeader {
            leader: forward
                .leader_id
                .zip(forward.leader_node.map(|node| node.addr)),
        },
        ClientWriteError::ChangeMembershipError(error) => ProposeError::Membership(Box::new(error)),
    }
}

fn voters_text(voters: &BTreeMap<NodeId, SocketAddr>) -> String {
    voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The handle of a running member; see the module documentation. Dropping
/// it shuts the member down like [`QuorumHandle::shutdown`].
pub struct QuorumHandle {
    node_id: NodeId,
    /// Where the member's listener is bound, if it has one.
    listening: Option<SocketAddr>,
    /// Changes whenever a new image is published.
    image_published: watch::Receiver<u64>,
    commands: Option<mpsc::Sender<Command>>,
    image: Arc<ArcSwap<MetadataImage>>,
    metrics: Metrics,
    changes: ChangeHandlerSlot,
    thread: Option<JoinHandle<Result<(), QuorumError>>>,
}

/// The quorum leader as a member knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leader {
    /// This member leads.
    ThisNode,
    /// Another voter leads, reached at its controller listener.
    Other {
        /// Its id.
        id: NodeId,
        /// Its controller listener.
        addr: SocketAddr,
    },
    /// No leader is known (an election is on).
    Unknown,
}

// Shards and blocking threads share one handle.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<QuorumHandle>();
};

impl QuorumHandle {
    /// Proposes `records` as one metadata change; resolves once the change
    /// is committed and applied on this member, the leader.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] naming the leader this member knows,
    /// [`ProposeError::Batch`] for no records or too many bytes,
    /// [`ProposeError::Rejected`] if the committed batch did not apply to
    /// the image, [`ProposeError::Stopped`] or [`ProposeError::Fatal`] if
    /// the member is not running.
    pub async fn propose(
        &self,
        records: &[MetadataRecord],
        timeout: Duration,
    ) -> Result<AppliedAt, ProposeError> {
        let batch = MetadataBatch::encode(records)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Propose {
            batch,
            timeout,
            reply,
        })
        .await
        .map_err(|_| ProposeError::Stopped)?;
        match answer.await.map_err(|_| ProposeError::Stopped)?? {
            Ok(response) => {
                let at = AppliedAt {
                    index: response.log_id.index,
                    term: response.log_id.leader_id.term,
                };
                match response.data.rejection {
                    None => Ok(at),
                    Some(reason) => Err(ProposeError::Rejected {
                        index: at.index,
                        reason,
                    }),
                }
            }
            Err(refused) => Err(write_refused(refused)),
        }
    }

    /// The latest applied image.
    #[must_use]
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// A receiver that sees a change whenever a new image is published:
    /// what acting on every image awaits instead of polling (its futures
    /// need no runtime).
    #[must_use]
    pub fn image_published(&self) -> watch::Receiver<u64> {
        self.image_published.clone()
    }

    /// The index of the last entry this member applied.
    #[must_use]
    pub fn applied_index(&self) -> Option<u64> {
        self.metrics
            .borrow()
            .last_applied
            .map(|applied| applied.index)
    }

    /// Why openraft stopped this member, if it did (a storage failure: the
    /// metadata log can no longer be written, so this node can neither
    /// vote nor follow the image).
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.metrics
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string)
    }

    /// Where this member's listener is bound (its port chosen by the OS
    /// when the configuration gave 0), if it has one.
    #[must_use]
    pub fn listening(&self) -> Option<SocketAddr> {
        self.listening
    }

    /// The current term: the metadata log's leader epoch.
    #[must_use]
    pub fn term(&self) -> u64 {
        self.metrics.borrow().current_term
    }

    /// The leader this member knows of.
    #[must_use]
    pub fn leader(&self) -> Leader {
        let metrics = self.metrics.borrow();
        match metrics.current_leader {
            None => Leader::Unknown,
            Some(id) if id == self.node_id => Leader::ThisNode,
            Some(id) => match metrics.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other {
                    id,
                    addr: node.addr,
                },
                None => Leader::Unknown,
            },
        }
    }

    /// Sets what carries out changes other members forward to this one
    /// (once: the controller of this node).
    pub fn serve_changes(&self, handler: ChangeHandler) {
        if self.changes.set(handler).is_err() {
            tracing::warn!("the controller quorum already serves forwarded changes");
        }
    }

    /// Where the membership says node `id` is reached, if it is a member.
    #[must_use]
    pub fn learner_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|node| node.addr)
    }

    /// Makes broker `id` a learner of the quorum reached at `addr` (on the
    /// leader); returns the membership entry's index, if one was written.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] elsewhere, [`ProposeError::NotALearner`]
    /// for a voter's id, or the quorum's failure.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<Option<u64>, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AddLearner { id, addr, reply })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        answer.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Sends `change` to the leader at `leader` and returns its answer.
    ///
    /// # Errors
    /// [`RpcError`] if the leader cannot be reached or does not answer
    /// within `timeout`.
    pub async fn forward(
        &self,
        leader: SocketAddr,
        change: Change,
        timeout: Duration,
    ) -> Result<Outcome, RpcError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Forward {
            leader,
            change,
            timeout,
            reply,
        })
        .await
        .map_err(|_| stopped_rpc())?;
        answer.await.map_err(|_| stopped_rpc())?
    }

    /// Resolves once this member has applied the entry at `index`.
    ///
    /// # Errors
    /// [`QuorumError::NotCaughtUp`] after `timeout`, or
    /// [`QuorumError::Stopped`].
    pub async fn await_applied(&self, index: u64, timeout: Duration) -> Result<(), QuorumError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AwaitApplied {
            index,
            timeout,
            reply,
        })
        .await?;
        answer.await.map_err(|_| QuorumError::Stopped)?
    }

    /// Resolves once a leader is known and this member has applied what it
    /// knows to be committed: what a start waits for before it serves.
    ///
    /// # Errors
    /// [`QuorumError::NotCaughtUp`] after `timeout`, or
    /// [`QuorumError::Stopped`].
    pub async fn await_caught_up(&self, timeout: Duration) -> Result<(), QuorumError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AwaitCaughtUp { timeout, reply }).await?;
        answer.await.map_err(|_| QuorumError::Stopped)?
    }

    /// The quorum as its leader sees it (asked over the controller
    /// listener when another member leads; as this member sees it when no
    /// leader is known or the leader does not answer): only the leader
    /// knows how far the others have the log.
    ///
    /// # Errors
    /// As [`QuorumHandle::describe`].
    pub async fn describe_leader(
        &self,
        timeout: Duration,
    ) -> Result<QuorumDescription, QuorumError> {
        let Leader::Other { addr, id } = self.leader() else {
            return self.describe().await;
        };
        let (reply, answer) = oneshot::channel();
        self.send(Command::DescribeRemote {
            leader: addr,
            timeout,
            reply,
        })
        .await?;
        match answer.await.map_err(|_| QuorumError::Stopped)? {
            Ok(description) => Ok(description),
            Err(error) => {
                tracing::debug!(%error, leader = id, "the quorum leader did not describe the quorum");
                self.describe().await
            }
        }
    }

    /// The quorum as this member sees it.
    ///
    /// # Errors
    /// [`QuorumError::Stopped`] or [`QuorumError::Raft`] if the member is
    /// not running.
    pub async fn describe(&self) -> Result<QuorumDescription, QuorumError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Describe { reply })
            .await
            .map_err(|_| QuorumError::Stopped)?;
        Ok(answer.await.map_err(|_| QuorumError::Stopped)??)
    }

    /// Resolves once this member leads the quorum and its image holds
    /// every change committed before: what a lone voter waits for after
    /// start, before it proposes.
    ///
    /// # Errors
    /// [`QuorumError::NotLeading`] if that does not happen within
    /// `timeout` (another voter leads, or no leader is elected);
    /// [`QuorumError::Stopped`] or [`QuorumError::Raft`] if the member is
    /// not running.
    pub async fn await_leadership(&self, timeout: Duration) -> Result<(), QuorumError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AwaitLeadership { timeout, reply })
            .await
            .map_err(|_| QuorumError::Stopped)?;
        answer.await.map_err(|_| QuorumError::Stopped)?
    }

    async fn send(&self, command: Command) -> Result<(), QuorumError> {
        let commands = self.commands.as_ref().ok_or(QuorumError::Stopped)?;
        commands
            .send(command)
            .await
            .map_err(|_| QuorumError::Stopped)
    }

    /// Stops the member and joins its thread; proposals still waiting fail
    /// with [`ProposeError::Stopped`].
    ///
    /// # Errors
    /// What stopped the member, if it failed.
    ///
    /// # Panics
    /// If the controller thread panicked: the panic goes on here.
    pub fn shutdown(mut self) -> Result<(), QuorumError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), QuorumError> {
        self.commands = None;
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }
}

fn stopped_rpc() -> RpcError {
    RpcError::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the controller thread is gone",
    ))
}

impl Drop for QuorumHandle {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if let Err(error) = self.stop() {
                tracing::warn!(%error, "the controller quorum stopped with an error");
            }
        }
    }
}
