//! The sending side of the controller quorum's network: openraft's
//! [`RaftNetworkFactory`] and one [`RaftNetwork`] client per peer and use,
//! each over its own TCP connection ([`super::rpc`] frames).
//!
//! A connection is opened on first use and dropped on any failure; the
//! next call opens a new one, but not before the peer's backoff has passed
//! (doubling from [`BACKOFF_MIN`] to `controller.quorum.request.timeout.ms`
//! per failed attempt, reset by an answer), so a dead peer costs one
//! refused connect per backoff, not one per heartbeat. The backoff is kept
//! per peer across clients: openraft opens a new client for every election
//! round. Every call (connect, send, answer) must finish within
//! `controller.quorum.request.timeout.ms`.
//!
//! Each answered call records the time as the peer's last contact, which
//! `DescribeQuorum` reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use tokio::net::TcpStream;

use super::error::RpcError;
use super::handle::QuorumDescription;
use super::rpc::{self, Request, Response};
use super::types::{ControllerNode, MetadataTypes, NodeId};
use crate::controller::forward::{Change, Outcome};

/// The first wait before reconnecting to a peer that failed.
pub const BACKOFF_MIN: Duration = Duration::from_millis(20);

/// The peers' reconnection backoffs and last contacts, shared by every
/// client of this node.
#[derive(Debug)]
pub struct Peers {
    node_id: NodeId,
    request_timeout: Duration,
    states: BTreeMap<NodeId, Mutex<PeerState>>,
}

#[derive(Debug, Default)]
struct PeerState {
    /// No connection attempt before this.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Option<Duration>,
    /// When the peer last answered.
    last_contact: Option<Instant>,
}

impl Peers {
    /// The peers of `node_id` among `voters`.
    #[must_use]
    pub fn new(
        node_id: NodeId,
        voters: impl Iterator<Item = NodeId>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            node_id,
            request_timeout,
            states: voters
                .filter(|&id| id != node_id)
                .map(|id| (id, Mutex::new(PeerState::default())))
                .collect(),
        }
    }

    /// When `peer` last answered this node, if ever.
    #[must_use]
    pub fn last_contact(&self, peer: NodeId) -> Option<Instant> {
        self.state(peer, |state| state.last_contact).flatten()
    }

    fn state<T>(&self, peer: NodeId, f: impl FnOnce(&mut PeerState) -> T) -> Option<T> {
        let state = self.states.get(&peer)?;
        Some(f(&mut state.lock().unwrap_or_else(PoisonError::into_inner)))
    }

    fn failed(&self, peer: NodeId) {
        let ceiling = self.request_timeout.max(BACKOFF_MIN);
        self.state(peer, |state| {
            let wait = state.backoff.unwrap_or(BACKOFF_MIN);
            state.retry_at = Some(Instant::now() + wait);
            state.backoff = Some((wait * 2).min(ceiling));
        });
    }

    fn answered(&self, peer: NodeId) {
        self.state(peer, |state| {
            state.retry_at = None;
            state.backoff = None;
            state.last_contact = Some(Instant::now());
        });
    }

    fn retry_at(&self, peer: NodeId) -> Option<Instant> {
        self.state(peer, |state| state.retry_at).flatten()
    }
}

/// openraft's network factory: a [`PeerClient`] per peer and use.
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    /// The network of the node `peers` belongs to.
    #[must_use]
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<MetadataTypes> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ControllerNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr,
            connection: None,
            peers: Arc::clone(&self.peers),
        }
    }
}

/// The client of one peer; see the module documentation.
pub struct PeerClient {
    target: NodeId,
    addr: SocketAddr,
    connection: Option<TcpStream>,
    peers: Arc<Peers>,
}

/// Why a call got no answer.
enum CallError {
    /// No connection could be had, or it broke: back off.
    Unreachable(RpcError),
    /// No answer in time.
    Timeout,
    /// The request is over the frame maximum.
    TooLarge(RpcError),
    /// The answer was not a message of the protocol.
    Network(RpcError),
}

impl PeerClient {
    async fn call(&mut self, request: &Request) -> Result<Response, CallError> {
        let frame = rpc::encode(request).map_err(CallError::TooLarge)?;
        if self.connection.is_none() {
            let retry_at = self.peers.retry_at(self.target);
            if retry_at.is_some_and(|retry_at| Instant::now() < retry_at) {
                return Err(CallError::Unreachable(RpcError::BackingOff));
            }
        }
        let timeout = self.peers.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(&frame)).await {
            Ok(Ok(response)) => {
                self.peers.answered(self.target);
                Ok(response)
            }
            Ok(Err(error)) => match error {
                RpcError::Io(_) => {
                    self.peers.failed(self.target);
                    Err(CallError::Unreachable(error))
                }
                other => Err(CallError::Network(other)),
            },
            // The connection went with the dropped exchange.
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Sends `frame` and reads the answer on the peer's connection, opened
    /// if there is none; the connection is kept only if both succeed.
    async fn exchange(&mut self, frame: &[u8]) -> Result<Response, RpcError> {
        let mut connection = if let Some(connection) = self.connection.take() {
            connection
        } else {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            stream
        };
        rpc::write(&mut connection, frame).await?;
        let response = rpc::read(&mut connection).await?;
        self.connection = Some(connection);
        Ok(response)
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        error: CallError,
        entries: usize,
    ) -> RPCError<NodeId, ControllerNode, E> {
        match error {
            CallError::Unreachable(error) => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.peers.node_id,
                target: self.target,
                timeout: self.peers.request_timeout,
            }),
            CallError::TooLarge(_) if entries > 1 => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries as u64 / 2))
            }
            CallError::TooLarge(error) | CallError::Network(error) => {
                RPCError::Network(NetworkError::new(&error))
            }
        }
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<NodeId, E>,
    ) -> RPCError<NodeId, ControllerNode, RaftError<NodeId, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }

    fn mismatched<E: std::error::Error>() -> RPCError<NodeId, ControllerNode, E> {
        RPCError::Network(NetworkError::new(&RpcError::Mismatched))
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, ControllerNode, RaftError<NodeId, E>>>;

impl RaftNetwork<MetadataTypes> for PeerClient {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<MetadataTypes>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = request.entries.len();
        match self.call(&Request::AppendEntries(request)).await {
            Ok(Response::AppendEntries(answer)) => answer.map_err(|error| self.remote(error)),
            Ok(_) => Err(Self::mismatched()),
            Err(error) => Err(self.rpc_error(RPCTypes::AppendEntries, error, entries)),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<MetadataTypes>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(&Request::InstallSnapshot(request)).await {
            Ok(Response::InstallSnapshot(answer)) => answer.map_err(|error| self.remote(error)),
            Ok(_) => Err(Self::mismatched()),
            Err(error) => Err(self.rpc_error(RPCTypes::InstallSnapshot, error, 0)),
        }
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(&Request::Vote(request)).await {
            Ok(Response::Vote(answer)) => answer.map_err(|error| self.remote(error)),
            Ok(_) => Err(Self::mismatched()),
            Err(error) => Err(self.rpc_error(RPCTypes::Vote, error, 0)),
        }
    }

    /// The wait between replication attempts to an unreachable peer: the
    /// same doubling as reconnections.
    fn backoff(&self) -> Backoff {
        let ceiling = self.peers.request_timeout.max(BACKOFF_MIN);
        Backoff::new(std::iter::successors(Some(BACKOFF_MIN), move |wait| {
            Some((*wait * 2).min(ceiling))
        }))
    }
}

/// Sends `change` to the leader's controller listener at `addr` on a
/// connection of its own and returns its answer, all within `timeout`
/// (the leader answers once the change is committed).
///
/// # Errors
/// [`RpcError`] if the leader cannot be reached or does not answer in time.
pub async fn forward(
    addr: SocketAddr,
    change: Change,
    timeout: Duration,
) -> Result<Outcome, RpcError> {
    match call_once(addr, &Request::Forward(change), timeout).await? {
        Response::Forward(outcome) => Ok(outcome),
        _ => Err(RpcError::Mismatched),
    }
}

/// Asks the leader's controller listener at `addr` how it sees the quorum,
/// within `timeout`.
///
/// # Errors
/// [`RpcError`] if the leader cannot be reached, does not answer in time,
/// or cannot describe the quorum.
pub async fn describe(addr: SocketAddr, timeout: Duration) -> Result<QuorumDescription, RpcError> {
    match call_once(addr, &Request::Describe, timeout).await? {
        Response::Describe(Ok(description)) => Ok(description),
        Response::Describe(Err(reason)) => Err(RpcError::Refused(reason)),
        _ => Err(RpcError::Mismatched),
    }
}

/// One request and its answer on a connection of their own.
async fn call_once(
    addr: SocketAddr,
    request: &Request,
    timeout: Duration,
) -> Result<Response, RpcError> {
    let frame = rpc::encode(request)?;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        rpc::write(&mut stream, &frame).await?;
        rpc::read(&mut stream).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| RpcError::Timeout {
            timeout_ms: super::config::millis(timeout),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls refused during a backoff must not extend it: openraft retries
    /// more often than the backoff, and a backoff pushed forward by every
    /// refused call never ends (a restarted peer would never be reached).
    #[test]
    fn calls_refused_while_backing_off_do_not_extend_the_backoff() {
        // A port nothing listens on: bound, then closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let peers = Arc::new(Peers::new(1, [1, 2].into_iter(), Duration::from_secs(1)));
        let mut client = PeerClient {
            target: 2,
            addr,
            connection: None,
            peers: Arc::clone(&peers),
        };
        let request = Request::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first = runtime.block_on(client.call(&request));
        assert!(matches!(
            first,
            Err(CallError::Unreachable(RpcError::Io(_)))
        ));
        let retry_at = peers.retry_at(2).unwrap();
        let second = runtime.block_on(client.call(&request));
        assert!(matches!(
            second,
            Err(CallError::Unreachable(RpcError::BackingOff))
        ));
        assert_eq!(peers.retry_at(2), Some(retry_at));
        assert!(peers.last_contact(2).is_none());
    }
}
