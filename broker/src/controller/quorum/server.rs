//! The receiving side of the controller quorum's network: the controller
//! listener, handing each peer's requests to the local Raft node (and
//! forwarded metadata changes to the local controller, through its
//! [`ChangeHandler`]; descriptions of the quorum, for a member that does
//! not lead) and writing its answers back, one at a time per connection, in
//! order.
//!
//! At most [`CONNECTIONS_MAX`] connections are served at once (a voter
//! keeps one per replication stream and election round of each peer); a
//! connection over it is closed at once. A connection that sends a frame
//! the protocol refuses (too large, damaged, undecodable) is closed, and
//! so is one that sends a snapshot chunk ending past
//! [`SNAPSHOT_BYTES_MAX`]: openraft writes a chunk at the offset it states,
//! so the receiving buffer would grow to whatever a peer claims.

use std::sync::{Arc, OnceLock};

use kafka_protocol::ResponseError;
use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::error::RpcError;
use super::handle::Describer;
use super::rpc::{self, Request, Response};
use super::types::MetadataTypes;
use crate::controller::forward::{Change, Outcome, Refusal};

/// What carries out a forwarded change: the local controller, which runs
/// it as this node's own (it blocks until the change is committed, so it
/// runs on the runtime's blocking pool).
pub type ChangeHandler = Arc<dyn Fn(Change) -> Outcome + Send + Sync>;

/// The handler, set once the controller exists; the listener is up before
/// (the quorum must elect a leader for the controller to start).
pub type ChangeHandlerSlot = Arc<OnceLock<ChangeHandler>>;

/// Most peer connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// The largest snapshot a member accepts from a leader. A snapshot is the
/// image's records: a million partitions take about 100 MiB.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// Serves `listener` until the runtime stops.
pub(super) async fn serve(
    listener: TcpListener,
    raft: Raft<MetadataTypes>,
    changes: ChangeHandlerSlot,
    describer: Arc<Describer>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, say: the listener itself is fine.
                tracing::warn!(%error, "accepting a controller connection");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, "refusing a controller connection over {CONNECTIONS_MAX}");
            continue;
        };
        let raft = raft.clone();
        let changes = Arc::clone(&changes);
        let describer = Arc::clone(&describer);
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &raft, &changes, &describer).await {
                if !matches!(&error, RpcError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
                {
                    tracing::warn!(%peer, %error, "closing a controller connection");
                }
            }
            drop(permit);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    raft: &Raft<MetadataTypes>,
    changes: &ChangeHandlerSlot,
    describer: &Describer,
) -> Result<(), RpcError> {
    stream.set_nodelay(true)?;
    loop {
        let request: Request = rpc::read(&mut stream).await?;
        let response = match request {
            Request::AppendEntries(request) => {
                Response::AppendEntries(raft.append_entries(request).await)
            }
            Request::Vote(request) => Response::Vote(raft.vote(request).await),
            Request::InstallSnapshot(request) => {
                let end = request.offset.saturating_add(request.data.len() as u64);
                if end > SNAPSHOT_BYTES_MAX {
                    return Err(RpcError::SnapshotTooLarge {
                        end,
                        max: SNAPSHOT_BYTES_MAX,
                    });
                }
                Response::InstallSnapshot(raft.install_snapshot(request).await)
            }
            Request::Forward(change) => Response::Forward(carry_out(changes, change).await),
            Request::Describe => Response::Describe(
                describer
                    .describe(raft)
                    .await
                    .map_err(|fatal| fatal.to_string()),
            ),
        };
        let frame = rpc::encode(&response)?;
        rpc::write(&mut stream, &frame).await?;
    }
}

async fn carry_out(changes: &ChangeHandlerSlot, change: Change) -> Outcome {
    let Some(handler) = changes.get().cloned() else {
        return Err(Refusal {
            code: ResponseError::NotController.code(),
            message: "this controller is still starting".to_owned(),
            stale: None,
        });
    };
    tokio::task::spawn_blocking(move || handler(change))
        .await
        .unwrap_or_else(|_| {
            Err(Refusal {
                code: ResponseError::UnknownServerError.code(),
                message: "the controller failed while making the change".to_owned(),
                stale: None,
            })
        })
}
