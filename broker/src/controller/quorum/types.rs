//! The openraft type configuration of the controller quorum: what a Raft
//! log entry carries, how a voter is named and where it is reached.
//!
//! An entry's payload is one metadata change: the records the controller
//! turned it into, applied together or not at all. It travels and rests as
//! the rkyv archive of the records ([`MetadataBatch`]), so
//! [`crate::metadata::records`] stays rkyv-only while openraft's own types
//! (votes, log ids, memberships) are encoded with serde; the archive is
//! decoded once, by the state machine that applies it.

use std::fmt;
use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddr};

use fjord_engine::error::Corruption;
use serde::{Deserialize, Serialize};

use crate::controller::log::{decode_archive, BATCH_BYTES_MAX};
use crate::metadata::records::MetadataRecord;
use crate::metadata::ApplyError;

openraft::declare_raft_types!(
    /// The controller quorum's openraft types.
    pub MetadataTypes:
        D = MetadataBatch,
        R = BatchOutcome,
        NodeId = u64,
        Node = ControllerNode,
        Entry = openraft::Entry<MetadataTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A voter's Kafka `node.id`, as openraft numbers nodes.
pub type NodeId = u64;

/// The records of one metadata change, as the rkyv archive of a
/// `Vec<MetadataRecord>`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    archive: Vec<u8>,
}

impl MetadataBatch {
    /// The batch of `records`.
    ///
    /// # Errors
    /// [`BatchError::Empty`] for no records (a change without records is no
    /// change), [`BatchError::TooLarge`] for an archive over
    /// [`BATCH_BYTES_MAX`], the bound the metadata log and the quorum's
    /// frames share.
    ///
    /// # Panics
    /// Never in practice: archiving records into memory has no failure but
    /// allocation, which aborts.
    pub fn encode(records: &[MetadataRecord]) -> Result<Self, BatchError> {
        if records.is_empty() {
            return Err(BatchError::Empty);
        }
        let archive = rkyv::to_bytes::<rkyv::rancor::Error>(&records.to_vec())
            .expect("archiving records into memory cannot fail")
            .into_vec();
        if archive.len() > BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge {
                bytes: archive.len(),
            });
        }
        Ok(Self { archive })
    }

    /// The records, decoded and validated.
    ///
    /// # Errors
    /// [`Corruption::InvalidArchive`] if the bytes are not an archive of
    /// records (they came from a peer or a file).
    pub fn decode(&self) -> Result<Vec<MetadataRecord>, Corruption> {
        decode_archive(&self.archive)
    }
}

impl fmt::Debug for MetadataBatch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "MetadataBatch({} bytes)", self.archive.len())
    }
}

/// A batch that cannot be proposed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No records.
    #[error("a metadata change needs at least one record")]
    Empty,
    /// Records whose archive exceeds [`BATCH_BYTES_MAX`].
    #[error("a metadata batch of {bytes} bytes exceeds the {BATCH_BYTES_MAX}-byte maximum")]
    TooLarge {
        /// The archive's size.
        bytes: usize,
    },
}

/// What applying one committed entry did, as the state machine answers the
/// proposer. A batch that does not apply to the image it was committed on
/// leaves the image unchanged on every voter alike (the check is a pure
/// function of the image and the records), and its proposer learns why.
///
/// openraft requires serde on this type although it never leaves the node
/// that applied the entry; the reason is not serialized (an [`ApplyError`]
/// is not a wire type), so a decoded outcome only says whether it applied.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Whether the batch changed the image.
    pub applied: bool,
    /// Why it did not, on the node that applied it.
    #[serde(skip)]
    pub rejection: Option<Rejection>,
}

/// Why a committed batch left the image unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A record broke a rule of the image.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The entry is not an archive of records.
    #[error("the committed batch does not decode: {0}")]
    Undecodable(#[from] Corruption),
}

/// A voter as the quorum's membership names it: where its controller
/// listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    /// The controller listener's address.
    pub addr: SocketAddr,
}

/// openraft requires a default node; it is never a voter's address.
impl Default for ControllerNode {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        }
    }
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(formatter)
    }
}
