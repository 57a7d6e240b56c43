//! What a controller quorum member needs to start, with Kafka's names and
//! defaults, and how those map onto openraft's settings.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::error::QuorumError;
use super::types::NodeId;
use crate::metadata::MetadataImage;

/// Kafka's default `controller.quorum.election.timeout.ms`.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 1000;
/// Kafka's default `controller.quorum.fetch.timeout.ms`.
pub const FETCH_TIMEOUT_MS_DEFAULT: u64 = 2000;
/// Kafka's default `controller.quorum.request.timeout.ms`.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 2000;
/// Entries between two snapshots of the image.
pub const SNAPSHOT_INTERVAL_ENTRIES_DEFAULT: u64 = 1000;
/// Entries kept in the log after a snapshot covers them, so a follower a
/// little behind catches up from the log rather than a whole snapshot.
pub const ENTRIES_KEPT_AFTER_SNAPSHOT_DEFAULT: u64 = 100;

/// The address a lone voter (see [`QuorumConfig::lone_voter`]) stands under
/// in the membership: port 0 of the unspecified address, which no one can
/// dial.
pub const LONE_VOTER_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A controller quorum member's settings.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This controller's `node.id`.
    pub node_id: NodeId,
    /// `controller.quorum.voters`: every voter's id and controller
    /// listener address, this node's included.
    pub voters: BTreeMap<NodeId, SocketAddr>,
    /// Where this member listens for its peers; `None` for a lone voter,
    /// which never sends or receives a message.
    pub listen: Option<SocketAddr>,
    /// Whether this member is a learner: a broker-only node, which follows
    /// the log the voters commit and never votes.
    pub learner: bool,
    /// The log directory (`metadata.log.dir/__cluster_metadata-0`).
    pub dir: PathBuf,
    /// `controller.quorum.election.timeout.ms`: how much a follower's
    /// election timer is randomized by, on top of the fetch timeout, so
    /// candidates rarely collide.
    pub election_timeout: Duration,
    /// `controller.quorum.fetch.timeout.ms`: how long a follower goes
    /// without hearing from the leader before it becomes a candidate; the
    /// leader sends a heartbeat every quarter of it.
    pub fetch_timeout: Duration,
    /// `controller.quorum.request.timeout.ms`: how long an RPC to a peer
    /// may take.
    pub request_timeout: Duration,
    /// Entries between two snapshots.
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub entries_kept_after_snapshot: u64,
    /// Where every applied image is published.
    pub image: Arc<ArcSwap<MetadataImage>>,
}

impl QuorumConfig {
    /// The settings of voter `node_id` of `voters` with Kafka's defaults, an
    /// image starting empty, listening on its own address in `voters`.
    ///
    /// # Errors
    /// [`QuorumError::NotAVoter`] if `voters` does not name `node_id`.
    pub fn new(
        node_id: NodeId,
        voters: BTreeMap<NodeId, SocketAddr>,
        dir: PathBuf,
    ) -> Result<Self, QuorumError> {
        let listen = *voters
            .get(&node_id)
            .ok_or(QuorumError::NotAVoter { node_id })?;
        Ok(Self::with_listener(node_id, voters, Some(listen), dir))
    }

    /// The settings of voter `node_id` of `voters` with Kafka's defaults, an
    /// image starting empty, listening on `listen` (the controller
    /// listener, which may bind a wildcard address where `voters` names a
    /// reachable one).
    #[must_use]
    pub fn voter(
        node_id: NodeId,
        voters: BTreeMap<NodeId, SocketAddr>,
        listen: SocketAddr,
        dir: PathBuf,
    ) -> Self {
        Self::with_listener(node_id, voters, Some(listen), dir)
    }

    /// The settings of learner `node_id` (a broker-only node) of the quorum
    /// of `voters`, listening on `listen` for the leader's replication.
    #[must_use]
    pub fn learner(
        node_id: NodeId,
        voters: BTreeMap<NodeId, SocketAddr>,
        listen: SocketAddr,
        dir: PathBuf,
    ) -> Self {
        Self {
            learner: true,
            ..Self::with_listener(node_id, voters, Some(listen), dir)
        }
    }

    /// The settings of a quorum whose only voter is `node_id`, with Kafka's
    /// defaults and no listener: a lone voter elects itself and commits
    /// alone, so nothing ever dials it. Its address in the membership is
    /// [`LONE_VOTER_ADDRESS`], which says as much.
    #[must_use]
    pub fn lone_voter(node_id: NodeId, dir: PathBuf) -> Self {
        let voters = BTreeMap::from([(node_id, LONE_VOTER_ADDRESS)]);
        Self::with_listener(node_id, voters, None, dir)
    }

    fn with_listener(
        node_id: NodeId,
        voters: BTreeMap<NodeId, SocketAddr>,
        listen: Option<SocketAddr>,
        dir: PathBuf,
    ) -> Self {
        Self {
            node_id,
            voters,
            listen,
            learner: false,
            dir,
            election_timeout: Duration::from_millis(ELECTION_TIMEOUT_MS_DEFAULT),
            fetch_timeout: Duration::from_millis(FETCH_TIMEOUT_MS_DEFAULT),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            snapshot_interval_entries: SNAPSHOT_INTERVAL_ENTRIES_DEFAULT,
            entries_kept_after_snapshot: ENTRIES_KEPT_AFTER_SNAPSHOT_DEFAULT,
            image: Arc::new(ArcSwap::from_pointee(MetadataImage::default())),
        }
    }

    /// openraft's settings for these: its election timer runs from the
    /// fetch timeout to the fetch timeout plus the election timeout (Kafka
    /// randomizes elections by up to the election timeout), heartbeats
    /// every quarter of the fetch timeout.
    ///
    /// # Errors
    /// [`QuorumError::Config`] if openraft refuses them (a zero timeout).
    pub fn raft_config(&self) -> Result<openraft::Config, QuorumError> {
        let fetch_timeout_ms = millis(self.fetch_timeout);
        let config = openraft::Config {
            cluster_name: "fjord-controller".to_owned(),
            election_timeout_min: fetch_timeout_ms,
            election_timeout_max: fetch_timeout_ms.saturating_add(millis(self.election_timeout)),
            heartbeat_interval: (fetch_timeout_ms / 4).max(1),
            install_snapshot_timeout: millis(self.request_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                self.snapshot_interval_entries,
            ),
            max_in_snapshot_log_to_keep: self.entries_kept_after_snapshot,
            ..openraft::Config::default()
        };
        Ok(config.validate()?)
    }
}

/// `duration` in whole milliseconds, saturating.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
