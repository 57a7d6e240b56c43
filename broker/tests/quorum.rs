//! The controller quorum on openraft, in process, over real TCP on
//! 127.0.0.1: a single voter that commits and survives restarts (from its
//! log and from a snapshot), three voters that elect one leader, replicate
//! to every image, fail over when the leader stops, answer `NotLeader` on a
//! follower, and bring a voter whose log lost its tail back up to date.
//!
//! Timeouts are short (a fetch timeout of 300 ms) so elections take a
//! fraction of a second; every wait is bounded by [`DEADLINE`] and fails
//! the test rather than hang it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjord_broker::controller::quorum::log_store::SEGMENT_SUFFIX;
use fjord_broker::controller::quorum::rpc::{self, Request};
use fjord_broker::controller::quorum::state_machine::SNAPSHOT_FILE;
use fjord_broker::controller::quorum::types::Rejection;
use fjord_broker::controller::quorum::{NodeId, ProposeError, Quorum, QuorumConfig, QuorumHandle};
use fjord_broker::metadata::records::{BrokerEpoch, BrokerId, MetadataRecord, ProducerIdsRecord};
use fjord_broker::testkit::broker_port;
use fjord_engine::checkpoint::FRAME_HEADER_BYTES;
use fjord_engine::ProducerId;
use futures_lite::future::block_on;
use openraft::raft::{InstallSnapshotRequest, VoteRequest};
use openraft::{SnapshotMeta, Vote};
use tempfile::TempDir;

/// How long any wait for an election, a replication or a restart may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a proposal may wait for its commit.
const PROPOSE_TIMEOUT: Duration = DEADLINE;

/// One distinct change: the producer id block ending at `n * 1000`, so the
/// image's next producer id tells how many changes it holds.
fn change(n: i64) -> Vec<MetadataRecord> {
    vec![MetadataRecord::ProducerIds(ProducerIdsRecord {
        broker_id: BrokerId(1),
        broker_epoch: BrokerEpoch(0),
        next_producer_id: ProducerId(n * 1000),
    })]
}

/// Sends the members' logs to the test's output, filtered by `RUST_LOG`
/// (`RUST_LOG=openraft=info` shows elections and replication).
fn log_to_test_output() {
    // Another test of the binary may have installed it already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Voters on their own ports and directories, each started or stopped.
struct Cluster {
    voters: BTreeMap<NodeId, SocketAddr>,
    scratch: TempDir,
    nodes: BTreeMap<NodeId, Option<QuorumHandle>>,
    snapshot_interval_entries: u64,
}

impl Cluster {
    fn new(size: u64) -> Self {
        Self::with_snapshots(size, 1000)
    }

    fn with_snapshots(size: u64, snapshot_interval_entries: u64) -> Self {
        log_to_test_output();
        let voters = (1..=size)
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], broker_port()))))
            .collect();
        let mut cluster = Self {
            voters,
            scratch: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            snapshot_interval_entries,
        };
        for id in 1..=size {
            cluster.start(id);
        }
        cluster
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.scratch
            .path()
            .join(format!("node-{id}"))
            .join("__cluster_metadata-0")
    }

    fn start(&mut self, id: NodeId) {
        let mut config = QuorumConfig::new(id, self.voters.clone(), self.dir(id)).unwrap();
        config.fetch_timeout = Duration::from_millis(300);
        config.election_timeout = Duration::from_millis(150);
        config.request_timeout = Duration::from_millis(500);
        config.snapshot_interval_entries = self.snapshot_interval_entries;
        config.entries_kept_after_snapshot = 0;
        self.nodes.insert(id, Some(Quorum::start(config).unwrap()));
    }

    fn stop(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap().take().unwrap();
        node.shutdown().unwrap();
    }

    fn node(&self, id: NodeId) -> &QuorumHandle {
        self.nodes[&id].as_ref().unwrap()
    }

    fn running(&self) -> impl Iterator<Item = (NodeId, &QuorumHandle)> {
        self.nodes
            .iter()
            .filter_map(|(&id, node)| node.as_ref().map(|node| (id, node)))
    }

    /// The leader every running voter agrees on, once there is one.
    fn leader(&self) -> NodeId {
        let mut agreed = None;
        wait_until("the running voters agree on a leader", || {
            let leaders: Vec<Option<NodeId>> = self
                .running()
                .map(|(_, node)| block_on(node.describe()).unwrap().leader)
                .collect();
            agreed = leaders[0].filter(|leader| {
                leaders.iter().all(|other| *other == Some(*leader)) && self.nodes[leader].is_some()
            });
            agreed.is_some()
        });
        agreed.unwrap()
    }

    /// Waits until every running voter's image holds `changes` changes.
    fn wait_for_changes(&self, changes: i64) {
        for (id, node) in self.running() {
            wait_until(&format!("voter {id} applies {changes} changes"), || {
                node.image().next_producer_id == ProducerId(changes * 1000)
            });
        }
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(SEGMENT_SUFFIX))
        .max()
        .unwrap()
}

/// A lone voter is its own quorum: it elects itself, commits and applies
/// each change, and a restart from its directory rebuilds the same image
/// from the log, with nothing from a snapshot.
#[test]
fn a_single_voter_commits_and_restarts_from_its_log_with_the_same_image() {
    let mut cluster = Cluster::new(1);
    assert_eq!(cluster.leader(), 1);
    let mut last = None;
    for n in 1..=5 {
        let at = block_on(cluster.node(1).propose(&change(n), PROPOSE_TIMEOUT)).unwrap();
        assert!(Some(at) > last, "{at:?} after {last:?}");
        last = Some(at);
        assert_eq!(
            cluster.node(1).image().next_producer_id,
            ProducerId(n * 1000)
        );
    }
    let before = cluster.node(1).image();
    cluster.stop(1);
    assert!(!cluster.dir(1).join(SNAPSHOT_FILE).exists());
    cluster.start(1);
    wait_until("the restarted voter replays its log", || {
        *cluster.node(1).image() == *before
    });
    let at = block_on(cluster.node(1).propose(&change(6), PROPOSE_TIMEOUT)).unwrap();
    assert!(Some(at) > last);
}

/// With a snapshot every 3 entries and none kept behind it, the log's
/// first segment is purged: the restart must rebuild the image from the
/// snapshot plus the entries after it.
#[test]
fn a_single_voter_restarts_from_its_snapshot_with_the_same_image() {
    let mut cluster = Cluster::with_snapshots(1, 3);
    cluster.leader();
    for n in 1..=10 {
        block_on(cluster.node(1).propose(&change(n), PROPOSE_TIMEOUT)).unwrap();
    }
    let dir = cluster.dir(1);
    wait_until("a snapshot is taken and the log purged", || {
        dir.join(SNAPSHOT_FILE).exists() && !dir.join(format!("{:020}{SEGMENT_SUFFIX}", 0)).exists()
    });
    let before = cluster.node(1).image();
    cluster.stop(1);
    cluster.start(1);
    wait_until("the restarted voter rebuilds its image", || {
        *cluster.node(1).image() == *before
    });
    block_on(cluster.node(1).propose(&change(11), PROPOSE_TIMEOUT)).unwrap();
    assert_eq!(cluster.node(1).image().next_producer_id, ProducerId(11_000));
}

/// Three voters elect exactly one leader, and what it commits reaches every
/// voter's image; `DescribeQuorum` on the leader reports the commit and each
/// voter's progress.
#[test]
fn three_voters_elect_one_leader_and_replicate_to_every_image() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader();
    for n in 1..=3 {
        block_on(cluster.node(leader).propose(&change(n), PROPOSE_TIMEOUT)).unwrap();
    }
    cluster.wait_for_changes(3);
    let mut description = None;
    wait_until("the leader sees every voter caught up", || {
        let described = block_on(cluster.node(leader).describe()).unwrap();
        let caught_up = described.voters.iter().all(|voter| {
            voter.matched_index.map(|index| index + 1) == Some(described.high_watermark)
        });
        description = Some(described);
        caught_up
    });
    let description = description.unwrap();
    assert_eq!(description.leader, Some(leader));
    assert!(description.leader_epoch >= 1);
    // The membership entry, the leader's blank entry, three changes.
    assert!(description.high_watermark >= 5, "{description:?}");
    assert_eq!(description.voters.len(), 3);
    for voter in &description.voters {
        assert!(voter.last_contact.is_some(), "{description:?}");
    }
}

/// A follower cannot order changes: it answers `NotLeader` naming the leader
/// and its controller address, so the caller can go there.
#[test]
fn proposing_on_a_follower_answers_not_leader_naming_the_leader() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let answer = block_on(cluster.node(follower).propose(&change(1), PROPOSE_TIMEOUT));
    match answer {
        Err(ProposeError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, cluster.voters[&leader]);
        }
        other => panic!("expected NotLeader naming {leader}, got {other:?}"),
    }
    assert_eq!(
        cluster.node(follower).image().next_producer_id,
        ProducerId(0)
    );
}

/// When the leader stops, the other two elect one of themselves within the
/// deadline and changes go on; the old leader rejoins as a follower and
/// catches up.
#[test]
fn stopping_the_leader_elects_another_and_proposals_continue() {
    let mut cluster = Cluster::new(3);
    let old = cluster.leader();
    block_on(cluster.node(old).propose(&change(1), PROPOSE_TIMEOUT)).unwrap();
    cluster.wait_for_changes(1);
    cluster.stop(old);
    let new = cluster.leader();
    assert_ne!(new, old);
    block_on(cluster.node(new).propose(&change(2), PROPOSE_TIMEOUT)).unwrap();
    cluster.wait_for_changes(2);
    cluster.start(old);
    cluster.wait_for_changes(2);
    block_on(
        cluster
            .node(cluster.leader())
            .propose(&change(3), PROPOSE_TIMEOUT),
    )
    .unwrap();
    cluster.wait_for_changes(3);
}

/// A follower whose last segment ends in a torn frame (a crash during an
/// append) cuts it on restart and gets the lost entries again from the
/// leader.
#[test]
fn a_torn_log_tail_is_cut_and_the_voter_catches_up_from_the_leader() {
    let mut cluster = Cluster::new(3);
    let leader = cluster.leader();
    for n in 1..=3 {
        block_on(cluster.node(leader).propose(&change(n), PROPOSE_TIMEOUT)).unwrap();
    }
    cluster.wait_for_changes(3);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    let segment = last_segment(&cluster.dir(follower));
    let length = fs::metadata(&segment).unwrap().len();
    // Cut into the middle of the last frame and add garbage after it.
    let mut bytes = fs::read(&segment).unwrap();
    bytes.truncate(length as usize - 5);
    bytes.extend_from_slice(b"torn!");
    bytes[length as usize - 5] ^= 0xff;
    fs::write(&segment, bytes).unwrap();
    cluster.start(follower);
    assert!(fs::metadata(&segment).unwrap().len() < length);
    block_on(cluster.node(leader).propose(&change(4), PROPOSE_TIMEOUT)).unwrap();
    cluster.wait_for_changes(4);
}

/// A voter that was down while the leader snapshotted and purged the
/// entries it lacks cannot catch up from the log: the leader sends it the
/// snapshot (`InstallSnapshot` over the wire), and it installs and keeps it.
#[test]
fn a_voter_behind_the_purged_log_catches_up_from_the_leaders_snapshot() {
    let mut cluster = Cluster::with_snapshots(3, 3);
    let leader = cluster.leader();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.stop(follower);
    for n in 1..=10 {
        block_on(cluster.node(leader).propose(&change(n), PROPOSE_TIMEOUT)).unwrap();
    }
    let leader_dir = cluster.dir(leader);
    wait_until("the leader snapshots and purges its log", || {
        !leader_dir
            .join(format!("{:020}{SEGMENT_SUFFIX}", 0))
            .exists()
    });
    cluster.start(follower);
    cluster.wait_for_changes(10);
    assert!(cluster.dir(follower).join(SNAPSHOT_FILE).exists());
}

/// A committed change that breaks a rule of the image (a producer id
/// block going back) leaves every image as it was, its proposer learns
/// why, and later changes apply.
#[test]
fn a_committed_change_that_does_not_apply_is_rejected_on_every_voter() {
    let cluster = Cluster::new(3);
    let leader = cluster.leader();
    block_on(cluster.node(leader).propose(&change(2), PROPOSE_TIMEOUT)).unwrap();
    let answer = block_on(cluster.node(leader).propose(&change(1), PROPOSE_TIMEOUT));
    assert!(
        matches!(
            answer,
            Err(ProposeError::Rejected {
                reason: Rejection::Apply(_),
                ..
            })
        ),
        "{answer:?}"
    );
    block_on(cluster.node(leader).propose(&change(3), PROPOSE_TIMEOUT)).unwrap();
    cluster.wait_for_changes(3);
}

/// Sends `bytes` to a member's controller listener and expects the member
/// to close the connection without answering.
fn expect_refused(addr: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    // A reset instead of an orderly close is a refusal too.
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.is_empty(), "answered {} bytes", answer.len());
}

/// A peer's frame header stating a 4 GiB payload, or a snapshot chunk at
/// an offset near 2^64, must be refused before the member allocates for
/// it: the connection is closed and the member goes on.
#[test]
fn frames_and_snapshot_chunks_of_absurd_size_are_refused_without_allocating() {
    let cluster = Cluster::new(1);
    cluster.leader();
    let addr = cluster.voters[&1];
    let vote = Request::Vote(VoteRequest::new(Vote::new(1, 1), None));
    let mut frame = rpc::encode(&vote).unwrap();
    frame[6..10].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_refused(addr, &frame[..FRAME_HEADER_BYTES]);
    let chunk = Request::InstallSnapshot(InstallSnapshotRequest {
        vote: Vote::new_committed(9, 2),
        meta: SnapshotMeta::default(),
        offset: u64::MAX - 4,
        data: vec![0; 4],
        done: false,
    });
    expect_refused(addr, &rpc::encode(&chunk).unwrap());
    block_on(cluster.node(1).propose(&change(1), PROPOSE_TIMEOUT)).unwrap();
}
