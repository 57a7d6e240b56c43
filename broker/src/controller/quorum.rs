//! The controller quorum: the metadata log replicated by Raft among the
//! `controller.quorum.voters`, on openraft (the maintained Rust Raft
//! library; fjord writes no consensus of its own).
//!
//! Each entry of the Raft log is one metadata change (the records of one
//! [`crate::controller`] operation); committed entries are applied in order
//! to the [`crate::metadata::MetadataImage`] and every new image is
//! published. The pieces, one per file:
//!
//! - [`types`]: openraft's type configuration (entry payload, node id and
//!   address);
//! - [`log_store`]: the Raft log and vote on disk;
//! - [`state_machine`]: the image, its snapshots;
//! - [`rpc`], [`network`], [`server`]: the RPCs between controllers over
//!   TCP;
//! - [`config`]: the settings, with Kafka's names and defaults;
//! - [`handle`]: the `fjord-controller` thread and the handle to it;
//! - [`error`]: the errors.
//!
//! The [`crate::controller::Controller`] runs one member and proposes
//! every change through its [`QuorumHandle`].

pub mod config;
pub mod error;
pub mod handle;
pub mod log_store;
pub mod network;
pub mod rpc;
pub mod server;
pub mod state_machine;
pub mod types;

pub use config::QuorumConfig;
pub use error::{ProposeError, QuorumError, RpcError};
pub use handle::{AppliedAt, Leader, Quorum, QuorumDescription, QuorumHandle, VoterDescription};
pub use types::{ControllerNode, NodeId};
