//! The controller quorum's errors: why it cannot start or keep its files,
//! why an RPC frame is refused, and why a proposal was not applied.

use std::net::SocketAddr;
use std::path::PathBuf;

use fjord_engine::error::Corruption;

use super::types::{BatchError, NodeId, Rejection};
use crate::controller::log::LogError;

/// A failure of the quorum's storage, network or thread.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// A file of the log or the state machine cannot be read or written;
    /// the log's own framing errors are [`LogError`]s too.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A frame of a file is whole but its payload is not what the quorum
    /// writes there (an entry, vote, log id or snapshot metadata).
    #[error("corrupt controller quorum file {}: at byte {position}: {source}", path.display())]
    Undecodable {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        position: u64,
        /// The decoder's complaint.
        #[source]
        source: postcard::Error,
    },
    /// Entries whose indexes do not follow each other (a gap or overlap
    /// within or between segments, or after the purged prefix).
    #[error("corrupt controller quorum log {}: entry {found} where entry {expected} belongs", path.display())]
    OutOfOrder {
        /// The segment.
        path: PathBuf,
        /// The index that belongs there.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// A frame of a file is damaged.
    #[error("corrupt controller quorum file {}: at byte {position}: {reason}", path.display())]
    CorruptFrame {
        /// The file.
        path: PathBuf,
        /// Where the frame starts.
        position: u64,
        /// What is wrong with it.
        #[source]
        reason: Corruption,
    },
    /// An earlier write or sync failed: what reached the disk is unknown,
    /// so the log refuses writes until a restart recovers it.
    #[error("the controller quorum log refuses writes after an earlier failure")]
    Poisoned,
    /// The snapshot's records do not rebuild an image.
    #[error("the controller snapshot does not apply: {0}")]
    SnapshotDoesNotApply(#[source] crate::metadata::ApplyError),
    /// The quorum's settings are inconsistent.
    #[error("invalid controller quorum configuration: {0}")]
    Config(#[source] Box<openraft::ConfigError>),
    /// This node is not among `controller.quorum.voters`.
    #[error("node.id {node_id} is not among the controller.quorum.voters")]
    NotAVoter {
        /// This node's id.
        node_id: NodeId,
    },
    /// A learner's node id is among the voters.
    #[error("node.id {node_id} is among the controller.quorum.voters, so it cannot be a learner")]
    LearnerIsAVoter {
        /// This node's id.
        node_id: NodeId,
    },
    /// The controller listener cannot be bound.
    #[error("binding the controller listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The controller thread or its runtime cannot be started.
    #[error("starting the controller thread: {0}")]
    Thread(#[source] std::io::Error),
    /// openraft refused to start or stopped on a fatal error.
    #[error("the controller quorum stopped: {0}")]
    Raft(#[source] Box<openraft::error::Fatal<NodeId>>),
    /// This member did not become the leader in time.
    #[error("controller {node_id} did not become the quorum leader within {timeout_ms} ms")]
    NotLeading {
        /// This node's id.
        node_id: NodeId,
        /// How long it waited.
        timeout_ms: u64,
    },
    /// No leader was known, or this member had not applied what it knew
    /// committed, in time.
    #[error("the controller quorum did not catch up within {timeout_ms} ms")]
    NotCaughtUp {
        /// How long it waited.
        timeout_ms: u64,
    },
    /// The log holds other voters than `controller.quorum.voters`.
    #[error(
        "the metadata log was written by the controller quorum {stored}, but \
         controller.quorum.voters is {configured}; the voters of a quorum cannot change \
         (a single node's data directory cannot join a cluster)"
    )]
    VotersChanged {
        /// The voters in the log (`id@address`; a single node's own is
        /// `0.0.0.0:0`).
        stored: String,
        /// The configured voters.
        configured: String,
    },
    /// The controller thread ended before answering.
    #[error("the controller thread is gone")]
    Stopped,
}

/// Why an RPC between controllers failed, or a frame of one was refused.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The socket failed or closed.
    #[error("controller RPC I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A header stating a frame over the maximum: refused before reading
    /// (or allocating) the payload.
    #[error("a controller RPC frame of {bytes} bytes exceeds the {max}-byte maximum")]
    TooLarge {
        /// The size the header states.
        bytes: u64,
        /// The maximum.
        max: usize,
    },
    /// A damaged frame.
    #[error("corrupt controller RPC frame: {0}")]
    Corrupt(#[from] Corruption),
    /// A frame whose payload is not a message of the protocol.
    #[error("undecodable controller RPC message: {0}")]
    Decode(#[from] postcard::Error),
    /// No answer within `controller.quorum.request.timeout.ms`.
    #[error("no answer within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// A snapshot chunk reaching past the largest snapshot accepted:
    /// refused before the snapshot buffer grows to it.
    #[error("a snapshot chunk ending at byte {end} exceeds the {max}-byte snapshot maximum")]
    SnapshotTooLarge {
        /// Where the chunk ends.
        end: u64,
        /// The maximum.
        max: u64,
    },
    /// The peer's connection failed recently: no new one before its
    /// backoff has passed.
    #[error("backing off after a failed connection to the peer")]
    BackingOff,
    /// A response of another RPC than the one asked.
    #[error("the peer answered a different RPC")]
    Mismatched,
    /// The peer could not answer the request.
    #[error("the peer refused: {0}")]
    Refused(String),
}

/// Why a proposal was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows, with its
    /// controller address.
    #[error("not the controller leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id and controller address, if known.
        leader: Option<(NodeId, SocketAddr)>,
    },
    /// The records cannot form a batch.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The batch was committed but did not apply to the image (which is
    /// unchanged on every voter).
    #[error("the metadata change was committed at index {index} but not applied: {reason}")]
    Rejected {
        /// The entry's index.
        index: u64,
        /// Why.
        #[source]
        reason: Rejection,
    },
    /// openraft's answer to a membership change, which a metadata batch
    /// never is.
    #[error(transparent)]
    Membership(Box<openraft::error::ChangeMembershipError<NodeId>>),
    /// The quorum was shut down.
    #[error("the controller quorum is shut down")]
    Stopped,
    /// A voter asked to become a learner.
    #[error("node {id} is a voter of the controller quorum, not a learner")]
    NotALearner {
        /// The node.
        id: NodeId,
    },
    /// Not committed in time: the change may still be committed later.
    #[error("the metadata change was not committed within {timeout_ms} ms")]
    Timeout {
        /// How long it waited.
        timeout_ms: u64,
    },
    /// openraft stopped on a fatal error (a storage failure, say).
    #[error("the controller quorum stopped: {0}")]
    Fatal(#[source] Box<openraft::error::Fatal<NodeId>>),
}

impl From<openraft::ConfigError> for QuorumError {
    fn from(error: openraft::ConfigError) -> Self {
        Self::Config(Box::new(error))
    }
}

impl From<openraft::error::Fatal<NodeId>> for QuorumError {
    fn from(error: openraft::error::Fatal<NodeId>) -> Self {
        Self::Raft(Box::new(error))
    }
}

impl From<openraft::error::Fatal<NodeId>> for ProposeError {
    fn from(error: openraft::error::Fatal<NodeId>) -> Self {
        Self::Fatal(Box::new(error))
    }
}
