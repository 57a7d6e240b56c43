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
use tokio::sync::{mpsc, oneshot};

use super::config::{millis, QuorumConfig};
use super::error::{ProposeError, QuorumError};
use super::log_store::LogStore;
use super::network::{Network, Peers};
use super::server;
use super::state_machine::StateMachine;
use super::types::{ControllerNode, MetadataBatch, MetadataTypes, NodeId};
use crate::metadata::records::MetadataRecord;
use crate::metadata::MetadataImage;

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
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// One voter in a [`QuorumDescription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoterDescription {
    /// Its `node.id`.
    pub id: NodeId,
    /// The last index the leader knows it holds (only a leader knows; for
    /// itself, its own last entry).
    pub matched_index: Option<u64>,
    /// How long since it last answered this member (zero for itself).
    pub last_contact: Option<Duration>,
}

type WriteReceiver = oneshot::Receiver<
    Result<
        openraft::raft::ClientWriteResponse<MetadataTypes>,
        ClientWriteError<NodeId, ControllerNode>,
    >,
>;

enum Command {
    Propose {
        batch: MetadataBatch,
        reply: oneshot::Sender<Result<WriteReceiver, Fatal<NodeId>>>,
    },
    Describe {
        reply: oneshot::Sender<Result<QuorumDescription, Fatal<NodeId>>>,
    },
    AwaitLeadership {
        timeout: Duration,
        reply: oneshot::Sender<Result<(), QuorumError>>,
    },
}

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
        if !config.voters.contains_key(&config.node_id) {
            return Err(QuorumError::NotAVoter {
                node_id: config.node_id,
            });
        }
        let raft_config = Arc::new(config.raft_config()?);
        let listener = match config.listen {
            Some(addr) => {
                let bind = |source| QuorumError::Bind { addr, source };
                let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
                listener.set_nonblocking(true).map_err(bind)?;
                Some((addr, listener))
            }
            None => None,
        };
        let log_store = LogStore::open(&config.dir)?;
        let state_machine = StateMachine::open(&config.dir, Arc::clone(&config.image))?;
        let peers = Arc::new(Peers::new(
            config.node_id,
            config.voters.keys().copied(),
            config.request_timeout,
        ));
        let (commands, receiver) = mpsc::channel(COMMANDS_QUEUED_MAX);
        let (started, start_result) = std::sync::mpsc::sync_channel(1);
        let member = Member {
            node_id: config.node_id,
            voters: config.voters.clone(),
            peers: Arc::clone(&peers),
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
        let handle = QuorumHandle {
            commands: Some(commands),
            image: config.image,
            thread: Some(thread),
        };
        match start_result.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(QuorumError::Stopped),
        }
    }
}

/// What the controller thread runs.
struct Member {
    node_id: NodeId,
    voters: BTreeMap<NodeId, SocketAddr>,
    peers: Arc<Peers>,
}

impl Member {
    async fn run(
        self,
        raft_config: Arc<openraft::Config>,
        listener: Option<(SocketAddr, std::net::TcpListener)>,
        log_store: LogStore,
        state_machine: StateMachine,
        mut commands: mpsc::Receiver<Command>,
        started: std::sync::mpsc::SyncSender<Result<(), QuorumError>>,
    ) -> Result<(), QuorumError> {
        let raft = match self
            .start_raft(raft_config, listener, log_store, state_machine)
            .await
        {
            Ok(raft) => {
                let _ = started.send(Ok(()));
                raft
            }
            Err(error) => {
                let _ = started.send(Err(error));
                return Ok(());
            }
        };
        while let Some(command) = commands.recv().await {
            match command {
                Command::Propose { batch, reply } => {
                    let _ = reply.send(raft.client_write_ff(batch).await);
                }
                Command::Describe { reply } => {
                    let _ = reply.send(self.describe(&raft).await);
                }
                Command::AwaitLeadership { timeout, reply } => {
                    // Waits on its own task: the member keeps answering.
                    let raft = raft.clone();
                    let node_id = self.node_id;
                    tokio::spawn(async move {
                        let _ = reply.send(await_leadership(&raft, node_id, timeout).await);
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
        let network = Network::new(Arc::clone(&self.peers));
        let raft = Raft::new(self.node_id, raft_config, network, log_store, state_machine).await?;
        if let Some(listener) = listener {
            tokio::spawn(server::serve(listener, raft.clone()));
        }
        let members: BTreeMap<NodeId, ControllerNode> = self
            .voters
            .iter()
            .map(|(&id, &addr)| (id, ControllerNode { addr }))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(raft),
            Err(RaftError::APIError(InitializeError::NotInMembers(_))) => {
                Err(QuorumError::NotAVoter {
                    node_id: self.node_id,
                })
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal.into()),
        }
    }

    async fn describe(
        &self,
        raft: &Raft<MetadataTypes>,
    ) -> Result<QuorumDescription, Fatal<NodeId>> {
        let metrics = raft.metrics().borrow().clone();
        let committed = raft.with_raft_state(|state| state.committed).await?;
        let voters = self
            .voters
            .keys()
            .map(|&id| {
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
            })
            .collect();
        Ok(QuorumDescription {
            leader: metrics.current_leader,
            leader_epoch: metrics.current_term,
            high_watermark: committed.map_or(0, |committed| committed.index + 1),
            last_applied: metrics.last_applied.map(|applied| applied.index),
            voters,
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

/// The handle of a running member; see the module documentation. Dropping
/// it shuts the member down like [`QuorumHandle::shutdown`].
pub struct QuorumHandle {
    commands: Option<mpsc::Sender<Command>>,
    image: Arc<ArcSwap<MetadataImage>>,
    thread: Option<JoinHandle<Result<(), QuorumError>>>,
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
    pub async fn propose(&self, records: &[MetadataRecord]) -> Result<AppliedAt, ProposeError> {
        let batch = MetadataBatch::encode(records)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Propose { batch, reply })
            .await
            .map_err(|_| ProposeError::Stopped)?;
        let written = answer.await.map_err(|_| ProposeError::Stopped)??;
        match written.await.map_err(|_| ProposeError::Stopped)? {
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
            Err(ClientWriteError::ForwardToLeader(forward)) => Err(ProposeError::NotLeader {
                leader: forward
                    .leader_id
                    .zip(forward.leader_node.map(|node| node.addr)),
            }),
            Err(ClientWriteError::ChangeMembershipError(error)) => {
                Err(ProposeError::Membership(Box::new(error)))
            }
        }
    }

    /// The latest applied image.
    #[must_use]
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
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

impl Drop for QuorumHandle {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if let Err(error) = self.stop() {
                tracing::warn!(%error, "the controller quorum stopped with an error");
            }
        }
    }
}
