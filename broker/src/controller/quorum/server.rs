//! The receiving side of the controller quorum's network: the controller
//! listener, handing each peer's requests to the local Raft node and
//! writing its answers back, one at a time per connection, in order.
//!
//! At most [`CONNECTIONS_MAX`] connections are served at once (a voter
//! keeps one per replication stream and election round of each peer); a
//! connection over it is closed at once. A connection that sends a frame
//! the protocol refuses (too large, damaged, undecodable) is closed.

use std::sync::Arc;

use openraft::Raft;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::error::RpcError;
use super::rpc::{self, Request, Response};
use super::types::MetadataTypes;

/// Most peer connections served at once.
pub const CONNECTIONS_MAX: usize = 64;

/// Serves `listener` until the runtime stops.
pub async fn serve(listener: TcpListener, raft: Raft<MetadataTypes>) {
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
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &raft).await {
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
                Response::InstallSnapshot(raft.install_snapshot(request).await)
            }
        };
        let frame = rpc::encode(&response)?;
        rpc::write(&mut stream, &frame).await?;
    }
}
