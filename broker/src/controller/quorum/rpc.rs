//! The controller quorum's wire protocol: openraft's three RPCs
//! (`AppendEntries`, `Vote`, `InstallSnapshot`), and metadata changes
//! forwarded to the leader ([`crate::controller::forward`]), with their
//! answers, over TCP, one request and its response at a time per
//! connection.
//!
//! A message is a frame of the metadata log's framing (magic `FJQR`,
//! version, payload length, CRC-32C; see [`fjord_engine::checkpoint`])
//! around the message's postcard encoding. postcard: openraft's messages
//! are serde types; postcard is compact (varints, no field names), has a
//! specified, stable wire format (1.0), and never needs a
//! self-describing format (no openraft RPC type uses one). The header is
//! read first and a stated length over [`RPC_FRAME_BYTES_MAX`] is refused
//! before anything is allocated for the payload; the CRC catches a damaged
//! payload before postcard reads it.

use fjord_engine::checkpoint::{decode_frame, encode_frame, FRAME_HEADER_BYTES};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::RpcError;
use super::handle::QuorumDescription;
use super::log_store::encode_postcard;
use super::types::{MetadataTypes, NodeId};
use crate::controller::forward::{Change, Outcome};
use crate::controller::log::BATCH_BYTES_MAX;

const RPC_MAGIC: [u8; 4] = *b"FJQR";
const RPC_VERSION: u16 = 1;
/// The largest frame sent or accepted: one metadata batch (the largest
/// entry) with room for an `AppendEntries` request's other fields. A request
/// of several entries over it is split by openraft (the sender answers
/// "payload too large"); snapshot chunks (`snapshot_max_chunk_size`) are
/// far smaller.
pub const RPC_FRAME_BYTES_MAX: usize = BATCH_BYTES_MAX + (1 << 20);
// The payload length sits at bytes 6..10 of the header.
const _: () = assert!(FRAME_HEADER_BYTES >= 10);
const _: () = assert!(RPC_FRAME_BYTES_MAX <= u32::MAX as usize);

/// A request from a leader or candidate.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Replicate entries (or a heartbeat).
    AppendEntries(AppendEntriesRequest<MetadataTypes>),
    /// Ask for a vote.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<MetadataTypes>),
    /// A metadata change for the leader's controller to make.
    Forward(Change),
    /// The quorum as the leader sees it, for `DescribeQuorum`.
    Describe,
}

/// The answer to a [`Request`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Request::Forward`].
    Forward(Outcome),
    /// To [`Request::Describe`]: the description, or why there is none.
    Describe(Result<QuorumDescription, String>),
}

/// The frame of `message`.
///
/// # Errors
/// [`RpcError::TooLarge`] for a frame over [`RPC_FRAME_BYTES_MAX`].
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, RpcError> {
    let frame = encode_frame(RPC_MAGIC, RPC_VERSION, &encode_postcard(message));
    if frame.len() > RPC_FRAME_BYTES_MAX {
        return Err(RpcError::TooLarge {
            bytes: frame.len() as u64,
            max: RPC_FRAME_BYTES_MAX,
        });
    }
    Ok(frame)
}

/// Writes `frame` and flushes it.
///
/// # Errors
/// [`RpcError::Io`] if the socket fails.
pub async fn write<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> Result<(), RpcError> {
    writer.write_all(frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one message.
///
/// # Errors
/// [`RpcError::TooLarge`] for a header stating a frame over
/// [`RPC_FRAME_BYTES_MAX`] (nothing more is read), [`RpcError::Io`] if the
/// socket fails or closes, [`RpcError::Corrupt`] or
/// [`RpcError::Decode`] for a frame that is not a whole, undamaged
/// message.
pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<T, RpcError> {
    let mut header = [0; FRAME_HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let stated = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    let frame_bytes = FRAME_HEADER_BYTES as u64 + u64::from(stated);
    if frame_bytes > RPC_FRAME_BYTES_MAX as u64 {
        return Err(RpcError::TooLarge {
            bytes: frame_bytes,
            max: RPC_FRAME_BYTES_MAX,
        });
    }
    let mut frame = vec![0; frame_bytes as usize];
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    reader.read_exact(&mut frame[FRAME_HEADER_BYTES..]).await?;
    let payload = decode_frame(RPC_MAGIC, RPC_VERSION, &frame)?;
    Ok(postcard::from_bytes(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header claiming a 4 GiB payload must be refused from the header
    /// alone: the reader never allocates what a peer merely states.
    #[test]
    fn a_frame_with_an_absurd_length_is_refused_before_allocating() {
        let mut frame = encode(&Request::Vote(VoteRequest::new(
            openraft::Vote::new(1, 1),
            None,
        )))
        .unwrap();
        frame[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = &frame[..];
        let read = futures_lite::future::block_on(read::<Request, _>(&mut reader));
        assert!(
            matches!(read, Err(RpcError::TooLarge { bytes, .. }) if bytes == FRAME_HEADER_BYTES as u64 + u64::from(u32::MAX)),
            "{read:?}"
        );
        // Only the header was consumed.
        assert_eq!(reader.len(), frame.len() - FRAME_HEADER_BYTES);
    }

    #[test]
    fn a_damaged_frame_is_refused_by_its_crc() {
        let mut frame = encode(&Request::Vote(VoteRequest::new(
            openraft::Vote::new(3, 2),
            None,
        )))
        .unwrap();
        let last = frame.len() - 1;
        frame[last] ^= 0x40;
        let read = futures_lite::future::block_on(read::<Request, _>(&mut &frame[..]));
        assert!(
            matches!(
                read,
                Err(RpcError::Corrupt(
                    fjord_engine::error::Corruption::CrcMismatch { .. }
                ))
            ),
            "{read:?}"
        );
    }

    #[test]
    fn a_request_round_trips() {
        let request = Request::Vote(VoteRequest::new(openraft::Vote::new(7, 3), None));
        let frame = encode(&request).unwrap();
        let read: Request = futures_lite::future::block_on(read(&mut &frame[..])).unwrap();
        assert!(matches!(read, Request::Vote(vote) if vote.vote == openraft::Vote::new(7, 3)));
    }
}
