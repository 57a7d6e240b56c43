//! The simulated cluster: brokers with their partition logs and
//! replication state, the controller, producers, and a network, driven by
//! one event queue on a simulated clock, every random choice from one
//! seeded generator.
//!
//! Each broker does what fjord's broker does, with the same pure pieces:
//! the role loop (`replication::run`: lead what the image gives it with a
//! [`LeaderState`], follow the rest), the follower's fetcher (fetch from
//! the log end with the last epoch, truncate by [`truncation_offset`] on a
//! diverging epoch, append, flush, take the leader's high watermark capped
//! at the log end), the leader's side of a replica fetch
//! (`read_for_follower`: [`diverging_epoch`], then the follower's progress
//! and the high watermark, then the read, a fetch with no data waiting up
//! to `replica.fetch.wait.max.ms`), produce (`NOT_ENOUGH_REPLICAS` before
//! the append, the acks=all wait for the high watermark with its errors),
//! ISR proposals on every image and every second, and the broker's lifecycle
//! (register, wait until unfenced, heartbeat; restart after a crash).
//!
//! Faults: crashes (kill -9, or power loss: the unflushed tail of each
//! log is partly lost), clean stops, SIGSTOP-like
//! pauses (every event for the broker waits), isolated brokers and cut
//! links, controller failovers (a new active controller knows no session
//! contact: [`crate::controller::liveness::BrokerSessions::activate`]),
//! and messages dropped, delayed and reordered. After the fault phase
//! everything heals, and the cluster must settle: every partition led,
//! every replica in the ISR with the leader's log.
//!
//! A family may enable unclean leader election, each seed either as the
//! brokers' default or as the topic's override: the controller's own
//! elections then lead a partition whose whole ISR is down from a live
//! replica outside it, marked recovering until its leader reports
//! recovered (the leader's first proposal does, as fjord's does).
//!
//! Timeouts are Kafka's defaults scaled down about sevenfold, keeping
//! their ratios, so that a run sees many lag times in few events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use fjord_engine::testkit::Rng;
use fjord_engine::{LeaderEpoch, Offset};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::controller::{self, Controller, TOPIC};
use super::oracle::{Oracle, Violation};
use super::replica_log::{Batch, ReplicaLog};
use crate::config::ReplicationConfig;
use crate::controller::alter_partition::{alter_partition, IsrProposal, Proposer};
use crate::controller::election::{is_live, rebalancing_elections};
use crate::controller::liveness::{Heartbeat, LivenessError, Registered, Registration};
use crate::metadata::records::{BrokerEpoch, BrokerId, LeaderRecoveryState, MetadataRecord};
use crate::metadata::{MetadataImage, PartitionImage};
use crate::replication::leader::{
    diverging_epoch, truncation_offset, Follower, IsrChange, LeaderState,
};

/// The `replica.*` settings of the simulated brokers, Kafka's defaults
/// scaled down (see the module documentation); `min.insync.replicas` and
/// `unclean.leader.election.enable` are set by each family of seeds
/// ([`Shape`]), not here.
const SETTINGS: ReplicationConfig = ReplicationConfig {
    replica_fetch_max_bytes: 1 << 20,
    replica_fetch_wait_max: Duration::from_millis(500),
    replica_fetch_min_bytes: 1,
    replica_fetch_response_max_bytes: 10 << 20,
    replica_fetch_backoff: Duration::from_millis(200),
    replica_lag_time_max: Duration::from_secs(4),
    unclean_leader_election_enable: false,
    min_insync_replicas: 1,
    controlled_shutdown_enable: true,
    auto_leader_rebalance_enable: true,
    leader_imbalance_check_interval: Duration::from_secs(5),
    leader_imbalance_per_broker_percentage: 10,
};

/// `broker.heartbeat.interval.ms`.
const HEARTBEAT_INTERVAL_MS: i64 = 400;

/// `leader.imbalance.check.interval.seconds`, in milliseconds.
fn rebalance_interval_ms() -> i64 {
    i64::try_from(SETTINGS.leader_imbalance_check_interval.as_millis()).unwrap_or(i64::MAX)
}
/// `broker.session.timeout.ms`.
const SESSION_TIMEOUT_MS: u64 = 2_000;
/// How long a replica fetch may take beyond its wait before the fetcher
/// gives up on it.
const FETCH_DEADLINE_SLACK_MS: i64 = 1_500;
/// How often the role loop looks at the image and the ISRs again without
/// a new image.
const ROLE_RETRY_INTERVAL_MS: i64 = 1_000;
/// How long an AlterPartition may take to commit.
const ALTER_PARTITION_TIMEOUT_MS: i64 = 2_000;
/// The producers' `request.timeout.ms`, also their requests' `timeout_ms`.
const REQUEST_TIMEOUT_MS: i64 = 3_000;
/// The producers' `delivery.timeout.ms`.
const DELIVERY_TIMEOUT_MS: i64 = 15_000;
/// The producers' `retry.backoff.ms`.
const RETRY_BACKOFF_MS: i64 = 100;
/// When the topic is created: every broker has registered by then.
const CREATE_TOPIC_AT_MS: i64 = 1_500;
/// How long the cluster has to settle once the faults end and the
/// producers' last batches are delivered or given up.
const SETTLE_MS: i64 = 3 * LAG_TIME_MAX_MS + 8_000;
/// How often the run looks whether the cluster settled, once healed.
const SETTLED_CHECK_INTERVAL_MS: i64 = 500;

/// `replica.lag.time.max.ms`.
const LAG_TIME_MAX_MS: i64 = SETTINGS.replica_lag_time_max.as_millis() as i64;
/// `replica.fetch.wait.max.ms`.
const FETCH_WAIT_MAX_MS: i64 = SETTINGS.replica_fetch_wait_max.as_millis() as i64;
/// `replica.fetch.backoff.ms`.
const FETCH_BACKOFF_MS: i64 = SETTINGS.replica_fetch_backoff.as_millis() as i64;

/// The kind of cluster a family of seeds runs.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// How many brokers, at least and at most.
    pub brokers: (usize, usize),
    /// How many partitions, at least and at most.
    pub partitions: (usize, usize),
    /// The replication factor (capped by the broker count).
    pub replication_factor: usize,
    /// `min.insync.replicas`.
    pub min_insync: usize,
    /// `unclean.leader.election.enable`: each seed sets it either as the
    /// brokers' default or as the topic's override.
    pub unclean_leader_election: bool,
}

/// Where a run sets `unclean.leader.election.enable=true`: both are read
/// by [`crate::controller::election::ElectionRules::unclean_enabled`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UncleanSetting {
    /// The brokers' default.
    Broker,
    /// The topic's override, a `ConfigRecord` created with it.
    Topic,
}

/// One run's parameters, drawn from its seed.
#[derive(Clone, Debug)]
struct Config {
    brokers: usize,
    partitions: usize,
    replication_factor: usize,
    min_insync: usize,
    /// Where unclean leader election is enabled, if it is.
    unclean_leader_election: Option<UncleanSetting>,
    /// Messages dropped, per thousand.
    drop_per_mille: u64,
    /// The longest ordinary network delay.
    delay_max_ms: i64,
    /// Messages delayed far longer, per thousand.
    long_delay_per_mille: u64,
    /// `replica.fetch.max.bytes`, in batches.
    fetch_max_batches: usize,
    /// The acks of each producer.
    producer_acks: Vec<i16>,
    /// How long producers write and faults strike.
    fault_phase_ms: i64,
    /// The mean time between faults.
    fault_interval_ms: u64,
    /// How many brokers a fault may affect at once (down, paused or cut
    /// off), the controller counting as one when it fails over.
    faults_at_once: usize,
}

impl Config {
    fn draw(shape: &Shape, rng: &mut Rng) -> Self {
        let brokers = usize::try_from(rng.between(shape.brokers.0 as u64, shape.brokers.1 as u64))
            .unwrap_or(3);
        let partitions =
            usize::try_from(rng.between(shape.partitions.0 as u64, shape.partitions.1 as u64))
                .unwrap_or(1);
        let producers = rng.between(1, 3);
        Self {
            brokers,
            partitions,
            replication_factor: shape.replication_factor.min(brokers),
            min_insync: shape.min_insync,
            unclean_leader_election: shape
                .unclean_leader_election
                .then(|| *rng.pick(&[UncleanSetting::Broker, UncleanSetting::Topic])),
            drop_per_mille: *rng.pick(&[0, 2, 10, 40]),
            delay_max_ms: *rng.pick(&[2, 10, 40]),
            long_delay_per_mille: *rng.pick(&[0, 5, 20]),
            fetch_max_batches: *rng.pick(&[1, 3, 50]),
            producer_acks: (0..producers)
                .map(|_| if rng.chance(3, 4) { -1 } else { 1 })
                .collect(),
            fault_phase_ms: i64::try_from(rng.between(10_000, 30_000)).unwrap_or(20_000),
            fault_interval_ms: *rng.pick(&[1_000, 2_500, 6_000]),
            faults_at_once: *rng.pick(&[1, 1, 2]),
        }
    }
}

/// What a run did, to show that the seeds exercise what they should.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// acks=all batches acknowledged.
    pub acked_batches: usize,
    /// Leader changes to a broker, in the images.
    pub elections: usize,
    /// Those to a broker outside the ISR.
    pub unclean_elections: usize,
    /// acks=all batches acknowledged and then lost to an unclean
    /// election.
    pub acked_batches_lost: usize,
    /// Partitions left without a leader.
    pub offline: usize,
    /// ISR shrinks committed (the leader kept).
    pub isr_shrinks: usize,
    /// ISR expansions committed.
    pub isr_expansions: usize,
    /// Follower truncations that removed records.
    pub truncations: usize,
    /// Crashes, clean stops included.
    pub crashes: usize,
    /// Leaderships given back to preferred replicas.
    pub rebalances: usize,
    /// Events handled.
    pub events: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Self) {
        self.acked_batches += other.acked_batches;
        self.elections += other.elections;
        self.unclean_elections += other.unclean_elections;
        self.acked_batches_lost += other.acked_batches_lost;
        self.offline += other.offline;
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expansions += other.isr_expansions;
        self.truncations += other.truncations;
        self.crashes += other.crashes;
        self.rebalances += other.rebalances;
        self.events += other.events;
    }
}

/// A place messages go to and come from; brokers by index (broker id
/// minus one).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Controller,
    Broker(usize),
    Producer(usize),
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Controller => f.write_str("controller"),
            Self::Broker(broker) => write!(f, "broker {}", broker + 1),
            Self::Producer(producer) => write!(f, "producer {producer}"),
        }
    }
}

/// A follower's fetch of one partition.
#[derive(Clone, Debug)]
struct FetchRequest {
    follower: usize,
    follower_incarnation: u64,
    /// The follower's registration epoch when it sent the fetch (KIP-903),
    /// -1 before it registered.
    follower_epoch: BrokerEpoch,
    request: u64,
    partition: usize,
    current_leader_epoch: LeaderEpoch,
    fetch_offset: Offset,
    last_fetched_epoch: i32,
}

/// The leader's answer: a refusal, or its high watermark with batches or
/// a diverging epoch.
#[derive(Clone, Debug)]
struct FetchAnswer {
    request: u64,
    partition: usize,
    result: Result<FetchData, ResponseError>,
}

#[derive(Clone, Debug)]
struct FetchData {
    high_watermark: Offset,
    diverging: Option<(LeaderEpoch, Offset)>,
    batches: Vec<Batch>,
}

#[derive(Clone, Debug)]
struct ProduceRequest {
    producer: usize,
    request: u64,
    partition: usize,
    acks: i16,
    first_record: u64,
    records: i64,
}

#[derive(Clone, Debug)]
enum Message {
    Register {
        broker: usize,
        incarnation_id: Uuid,
    },
    /// The answers to a registration and a heartbeat carry the last
    /// commit: the broker's metadata log catches up at least that far.
    Registered {
        result: Result<BrokerEpoch, LivenessError>,
        committed: usize,
    },
    Heartbeat(Heartbeat),
    ControlledShutdown {
        broker: usize,
        epoch: BrokerEpoch,
    },
    HeartbeatAnswer {
        result: Result<bool, LivenessError>,
        committed: usize,
    },
    Image(usize),
    AlterPartition {
        broker: usize,
        broker_epoch: BrokerEpoch,
        partition: usize,
        request: u64,
        proposal: IsrChange,
    },
    AlterPartitionAnswer {
        request: u64,
        result: Result<(), ResponseError>,
    },
    Fetch(FetchRequest),
    FetchAnswer(FetchAnswer),
    Produce(ProduceRequest),
    ProduceAnswer {
        request: u64,
        result: Result<Offset, ResponseError>,
    },
    Metadata {
        producer: usize,
        partition: usize,
    },
    MetadataAnswer {
        leader: BrokerId,
    },
}

/// A message on the wire, addressed to one incarnation of its recipient
/// (a restarted broker or a new active controller has none of the old
/// one's connections).
#[derive(Clone, Debug)]
struct Envelope {
    from: Node,
    /// The sender's incarnation: an answer goes to it, and to no later one.
    from_incarnation: u64,
    to: Node,
    incarnation: u64,
    message: Message,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Heartbeat,
    Roles,
    Fetch(usize),
    FetchTimeout { partition: usize, request: u64 },
    AlterTimeout(u64),
    ParkedFetchDue(u64),
    AckDeadline,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver(Envelope),
    Broker {
        broker: usize,
        incarnation: u64,
        timer: Timer,
    },
    ControllerTick {
        term: u64,
    },
    ControllerUp {
        term: u64,
    },
    Producer {
        producer: usize,
        generation: u64,
    },
    ProducerTimeout {
        producer: usize,
        request: u64,
    },
    CreateTopic,
    Fault,
    Restart(usize),
    Resume {
        broker: usize,
        incarnation: u64,
    },
    Heal(u64),
    EndOfFaults,
    CheckSettled,
}

impl Event {
    /// The broker whose process handles the event, if one does.
    fn broker(&self) -> Option<usize> {
        match self {
            Self::Deliver(Envelope {
                to: Node::Broker(broker),
                ..
            })
            | Self::Broker { broker, .. } => Some(*broker),
            _ => None,
        }
    }
}

struct Scheduled {
    at: i64,
    sequence: u64,
    /// Boxed: the queue moves its entries around.
    event: Box<Event>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// A cut in the network.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// The node reaches no one.
    Isolated(Node),
    /// The two nodes do not reach each other.
    Link(Node, Node),
}

impl Cut {
    fn separates(self, a: Node, b: Node) -> bool {
        match self {
            Self::Isolated(node) => node == a || node == b,
            Self::Link(x, y) => (x, y) == (a, b) || (x, y) == (b, a),
        }
    }
}

/// A partition a broker follows, as its fetcher knows it.
#[derive(Clone, Copy, Debug)]
struct Following {
    leader: usize,
    leader_epoch: LeaderEpoch,
    in_flight: Option<u64>,
    backoff_until: i64,
}

/// An acks=all append waiting for the high watermark.
#[derive(Clone, Copy, Debug)]
struct PendingAck {
    producer: usize,
    request: u64,
    partition: usize,
    batch: Batch,
    leader_epoch: LeaderEpoch,
    deadline: i64,
}

/// A running broker process: everything here is lost by a crash.
struct Process {
    incarnation: u64,
    incarnation_id: Uuid,
    paused: bool,
    /// The events that reached it while paused, in order.
    stalled: Vec<Event>,
    /// The index of the image it has.
    image: usize,
    /// Its registration's epoch, which is also its index in the log.
    registration: Option<BrokerEpoch>,
    /// Unfenced once: it serves clients and replicates.
    serving: bool,
    leaders: BTreeMap<usize, LeaderState>,
    following: BTreeMap<usize, Following>,
    parked: BTreeMap<u64, FetchRequest>,
    acks: Vec<PendingAck>,
    alters: BTreeMap<u64, (usize, IsrChange)>,
}

/// A broker: its disk and, while it runs, its process.
struct BrokerSlot {
    logs: Vec<ReplicaLog>,
    process: Option<Process>,
}

/// A batch a producer is delivering.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    first_record: u64,
    records: i64,
    created: i64,
}

struct Producer {
    partition: usize,
    acks: i16,
    leader: Option<usize>,
    delivery: Option<Delivery>,
    in_flight: Option<u64>,
    generation: u64,
}

/// Where a run stopped, for the failure message.
#[derive(Debug)]
pub struct Failure {
    /// The simulated time.
    pub at_ms: i64,
    /// What broke.
    pub violation: Violation,
}

/// The simulated cluster; see the module documentation.
pub struct World {
    rng: Rng,
    config: Config,
    now: i64,
    sequence: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    controller: Controller,
    /// The active controller's term; none is active while `None`.
    controller_term: Option<u64>,
    /// When the active controller next looks for leaderships to give back
    /// to preferred replicas (`auto.leader.rebalance.enable`).
    next_rebalance: i64,
    terms: u64,
    brokers: Vec<BrokerSlot>,
    producers: Vec<Producer>,
    cuts: BTreeMap<u64, Cut>,
    oracle: Oracle,
    stats: Stats,
    next_id: u64,
    next_record: u64,
    faults_end: i64,
    end: i64,
    tracing: bool,
}

/// Prints a line of the trace when tracing, formatting nothing otherwise.
macro_rules! trace {
    ($world:expr, $($arg:tt)*) => {
        if $world.tracing {
            eprintln!("{:>7} ms  {}", $world.now, format!($($arg)*));
        }
    };
}

/// The state of partition `partition` in `image`.
fn partition_state(image: &MetadataImage, partition: usize) -> Option<&PartitionImage> {
    image
        .topics
        .get(TOPIC)
        .and_then(|topic| topic.partition(i32::try_from(partition).ok()?))
}

/// `disks[b][p]`: broker `b`'s log of partition `p`, as the oracle takes
/// them.
fn disks(brokers: &[BrokerSlot]) -> Vec<&[ReplicaLog]> {
    brokers.iter().map(|slot| &slot.logs[..]).collect()
}

fn broker_id(broker: usize) -> BrokerId {
    BrokerId(i32::try_from(broker).unwrap_or(i32::MAX - 1) + 1)
}

fn broker_index(id: BrokerId) -> Option<usize> {
    usize::try_from(id.0 - 1).ok()
}

impl World {
    /// A cluster of the `shape` the seed of `rng` draws.
    pub fn new(shape: &Shape, mut rng: Rng, tracing: bool) -> Self {
        let config = Config::draw(shape, &mut rng);
        let faults_end = CREATE_TOPIC_AT_MS + config.fault_phase_ms;
        let end = faults_end + DELIVERY_TIMEOUT_MS + SETTLE_MS;
        let mut world = Self {
            rng,
            now: 0,
            sequence: 0,
            queue: BinaryHeap::new(),
            controller: Controller::new(
                Duration::from_millis(SESSION_TIMEOUT_MS),
                config.unclean_leader_election == Some(UncleanSetting::Broker),
            ),
            controller_term: Some(0),
            next_rebalance: rebalance_interval_ms(),
            terms: 0,
            brokers: (0..config.brokers)
                .map(|_| BrokerSlot {
                    logs: vec![ReplicaLog::default(); config.partitions],
                    process: None,
                })
                .collect(),
            producers: config
                .producer_acks
                .iter()
                .enumerate()
                .map(|(index, &acks)| Producer {
                    partition: index % config.partitions,
                    acks,
                    leader: None,
                    delivery: None,
                    in_flight: None,
                    generation: 0,
                })
                .collect(),
            cuts: BTreeMap::new(),
            oracle: Oracle::new(
                config.partitions,
                config.brokers,
                config.unclean_leader_election.is_some(),
            ),
            stats: Stats::default(),
            next_id: 0,
            next_record: 0,
            faults_end,
            end,
            tracing,
            config,
        };
        trace!(world, "{:?}", world.config);
        for broker in 0..world.brokers.len() {
            world.start(broker);
        }
        world.schedule(0, Event::ControllerTick { term: 0 });
        world.schedule(CREATE_TOPIC_AT_MS, Event::CreateTopic);
        world.schedule(CREATE_TOPIC_AT_MS + 500, Event::Fault);
        world.schedule(faults_end, Event::EndOfFaults);
        world.schedule(faults_end, Event::CheckSettled);
        for producer in 0..world.producers.len() {
            world.wake_producer(producer, CREATE_TOPIC_AT_MS + 200);
        }
        world
    }

    /// Runs until the cluster settled after the faults, checking the
    /// invariants after every event.
    ///
    /// # Errors
    /// The first broken invariant, or the cluster not settled in time.
    pub fn run(mut self) -> Result<Stats, Failure> {
        while let Some(Reverse(next)) = self.queue.pop() {
            if next.at > self.end {
                break;
            }
            self.now = next.at;
            self.stats.events += 1;
            if matches!(*next.event, Event::CheckSettled) && self.settled() {
                self.stats.acked_batches = self.oracle.acked_batches();
                self.stats.acked_batches_lost = self.oracle.acked_batches_lost();
                return Ok(self.stats);
            }
            let outcome = self.handle(*next.event).and_then(|()| self.check());
            if let Err(violation) = outcome {
                return Err(Failure {
                    at_ms: self.now,
                    violation,
                });
            }
        }
        Err(Failure {
            at_ms: self.now,
            violation: self
                .check_settled()
                .err()
                .unwrap_or_else(|| Violation("producers still delivering".to_owned())),
        })
    }

    /// Whether the producers are done and the cluster settled.
    fn settled(&self) -> bool {
        self.producers
            .iter()
            .all(|producer| producer.delivery.is_none() && producer.in_flight.is_none())
            && self.check_settled().is_ok()
    }

    fn schedule(&mut self, at: i64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            sequence: self.sequence,
            event: Box::new(event),
        }));
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn incarnation_of(&self, node: Node) -> Option<u64> {
        match node {
            Node::Controller => self.controller_term,
            Node::Broker(broker) => self.brokers[broker]
                .process
                .as_ref()
                .map(|process| process.incarnation),
            Node::Producer(_) => Some(0),
        }
    }

    fn linked(&self, a: Node, b: Node) -> bool {
        !self.cuts.values().any(|cut| cut.separates(a, b))
    }

    /// Sends `message` to the running incarnation of `to`.
    fn send(&mut self, from: Node, to: Node, message: Message) {
        if let Some(incarnation) = self.incarnation_of(to) {
            self.transmit(from, to, incarnation, message);
        }
    }

    /// Sends `message` to incarnation `incarnation` of `to`: lost when
    /// that one is gone by then, the link is cut or, during the fault
    /// phase, the network drops it; delayed at random otherwise.
    fn transmit(&mut self, from: Node, to: Node, incarnation: u64, message: Message) {
        let from_incarnation = self.incarnation_of(from).unwrap_or(0);
        let faulty = self.now < self.faults_end;
        if !self.linked(from, to) || (faulty && self.rng.chance(self.config.drop_per_mille, 1_000))
        {
            return;
        }
        let mut delay =
            1 + i64::try_from(self.rng.below(self.config.delay_max_ms as u64)).unwrap_or(0);
        if faulty && self.rng.chance(self.config.long_delay_per_mille, 1_000) {
            delay += i64::try_from(self.rng.between(200, 3_000)).unwrap_or(0);
        }
        self.schedule(
            self.now + delay,
            Event::Deliver(Envelope {
                from,
                from_incarnation,
                to,
                incarnation,
                message,
            }),
        );
    }

    fn broker_timer(&mut self, broker: usize, at: i64, timer: Timer) {
        if let Some(incarnation) = self.incarnation_of(Node::Broker(broker)) {
            self.schedule(
                at,
                Event::Broker {
                    broker,
                    incarnation,
                    timer,
                },
            );
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), Violation> {
        if let Some(broker) = event.broker() {
            let incarnation = match &event {
                Event::Deliver(envelope) => envelope.incarnation,
                Event::Broker { incarnation, .. } => *incarnation,
                _ => unreachable!("only broker events name a broker"),
            };
            let Some(process) = self.brokers[broker].process.as_mut() else {
                return Ok(());
            };
            if process.incarnation != incarnation {
                return Ok(());
            }
            if process.paused {
                process.stalled.push(event);
                return Ok(());
            }
            self.handle_at_broker(broker, event)?;
            return self.settle_acks(broker);
        }
        match event {
            Event::Deliver(envelope) => self.deliver_elsewhere(envelope),
            Event::ControllerTick { term } => self.controller_tick(term),
            Event::ControllerUp { term } => {
                self.controller_term = Some(term);
                trace!(self, "controller: term {term} active");
                let (sessions, image) = self.controller.sessions();
                sessions.activate(image, self.now);
                self.controller_tick(term)
            }
            Event::Producer {
                producer,
                generation,
            } => {
                if self.producers[producer].generation == generation {
                    self.producer_step(producer);
                }
                Ok(())
            }
            Event::ProducerTimeout { producer, request } => {
                if self.producers[producer].in_flight == Some(request) {
                    self.producer_failed(producer, "timed out");
                }
                Ok(())
            }
            Event::CreateTopic => self.create_topic(),
            Event::Fault => {
                self.fault();
                Ok(())
            }
            Event::Restart(broker) => {
                if self.brokers[broker].process.is_none() {
                    self.start(broker);
                }
                Ok(())
            }
            Event::Resume {
                broker,
                incarnation,
            } => {
                self.resume(broker, incarnation);
                Ok(())
            }
            Event::Heal(cut) => {
                if let Some(cut) = self.cuts.remove(&cut) {
                    trace!(self, "healed {cut:?}");
                }
                Ok(())
            }
            Event::EndOfFaults => {
                self.end_faults();
                Ok(())
            }
            Event::CheckSettled => {
                self.schedule(self.now + SETTLED_CHECK_INTERVAL_MS, Event::CheckSettled);
                Ok(())
            }
            Event::Broker { .. } => unreachable!("broker events are handled above"),
        }
    }

    fn handle_at_broker(&mut self, broker: usize, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver(envelope) => {
                if !self.linked(envelope.from, envelope.to) {
                    return Ok(());
                }
                self.deliver_to_broker(broker, envelope.from, envelope.message)
            }
            Event::Broker { timer, .. } => self.broker_timer_fired(broker, timer),
            _ => unreachable!("not a broker event"),
        }
    }

    fn process(&self, broker: usize) -> &Process {
        self.brokers[broker]
            .process
            .as_ref()
            .expect("the broker runs")
    }

    fn process_mut(&mut self, broker: usize) -> &mut Process {
        self.brokers[broker]
            .process
            .as_mut()
            .expect("the broker runs")
    }

    fn broker_image(&self, broker: usize) -> &MetadataImage {
        self.controller.image_at(self.process(broker).image)
    }

    // ---- the broker's lifecycle ----

    /// Starts a process on `broker`'s disk: it registers, and serves once
    /// unfenced.
    fn start(&mut self, broker: usize) {
        self.terms += 1;
        let incarnation = self.terms;
        self.brokers[broker].process = Some(Process {
            incarnation,
            incarnation_id: Uuid::from_u128(u128::from(incarnation)),
            paused: false,
            stalled: Vec::new(),
            image: 0,
            registration: None,
            serving: false,
            leaders: BTreeMap::new(),
            following: BTreeMap::new(),
            parked: BTreeMap::new(),
            acks: Vec::new(),
            alters: BTreeMap::new(),
        });
        trace!(
            self,
            "broker {} starts (incarnation {incarnation})",
            broker + 1
        );
        self.broker_timer(broker, self.now, Timer::Heartbeat);
    }

    fn crash(&mut self, broker: usize, power_loss: bool) {
        self.brokers[broker].process = None;
        self.stats.crashes += 1;
        for partition in 0..self.config.partitions {
            let log = &mut self.brokers[broker].logs[partition];
            let unflushed = log.unflushed_batches();
            let kept = if power_loss {
                self.rng.index(unflushed + 1)
            } else {
                unflushed
            };
            log.crash(kept);
            let end = log.log_end();
            self.oracle.shortened(partition, broker, end);
        }
        trace!(
            self,
            "broker {} {}; log ends {:?}",
            broker + 1,
            if power_loss {
                "loses power"
            } else {
                "is killed"
            },
            self.log_ends(broker)
        );
    }

    /// A clean stop: the logs are flushed, then the broker asks the
    /// controller to move its leaderships away and to fence it, and exits
    /// (fjord's `shut_down_controller`); the next start recovers the logs,
    /// all flushed.
    fn stop(&mut self, broker: usize) {
        for log in &mut self.brokers[broker].logs {
            log.flush();
            log.crash(0);
        }
        let process = self.process(broker);
        if let Some(epoch) = process.registration {
            let from = Node::Broker(broker);
            if SETTINGS.controlled_shutdown_enable {
                let shutdown = Message::ControlledShutdown { broker, epoch };
                self.send(from, Node::Controller, shutdown);
            }
            let heartbeat = Heartbeat {
                broker_id: broker_id(broker),
                epoch,
                caught_up: true,
                want_fence: true,
            };
            self.send(from, Node::Controller, Message::Heartbeat(heartbeat));
        }
        self.brokers[broker].process = None;
        self.stats.crashes += 1;
        trace!(self, "broker {} stops cleanly", broker + 1);
    }

    fn resume(&mut self, broker: usize, incarnation: u64) {
        let Some(process) = self.brokers[broker].process.as_mut() else {
            return;
        };
        if process.incarnation != incarnation || !process.paused {
            return;
        }
        process.paused = false;
        let stalled = std::mem::take(&mut process.stalled);
        trace!(
            self,
            "broker {} resumes ({} events waited)",
            broker + 1,
            stalled.len()
        );
        for event in stalled {
            self.schedule(self.now, event);
        }
    }

    fn log_ends(&self, broker: usize) -> Vec<i64> {
        self.brokers[broker]
            .logs
            .iter()
            .map(|log| log.log_end().0)
            .collect()
    }

    fn broker_timer_fired(&mut self, broker: usize, timer: Timer) -> Result<(), Violation> {
        match timer {
            Timer::Heartbeat => {
                self.heartbeat(broker);
                self.broker_timer(broker, self.now + HEARTBEAT_INTERVAL_MS, Timer::Heartbeat);
                Ok(())
            }
            Timer::Roles => {
                self.broker_timer(broker, self.now + ROLE_RETRY_INTERVAL_MS, Timer::Roles);
                self.role_loop(broker)
            }
            Timer::Fetch(partition) => {
                self.fetch(broker, partition);
                Ok(())
            }
            Timer::FetchTimeout { partition, request } => {
                let now = self.now;
                let process = self.process_mut(broker);
                if let Some(following) = process.following.get_mut(&partition) {
                    if following.in_flight == Some(request) {
                        following.in_flight = None;
                        following.backoff_until = now + FETCH_BACKOFF_MS;
                        let at = following.backoff_until;
                        self.broker_timer(broker, at, Timer::Fetch(partition));
                    }
                }
                Ok(())
            }
            Timer::AlterTimeout(request) => {
                self.alter_partition_timed_out(broker, request);
                Ok(())
            }
            Timer::ParkedFetchDue(id) => {
                if let Some(request) = self.process_mut(broker).parked.remove(&id) {
                    self.answer_fetch(broker, &request);
                }
                Ok(())
            }
            Timer::AckDeadline => Ok(()),
        }
    }

    /// Registers, or heartbeats with the registration's epoch: caught up
    /// once its image reaches its registration.
    fn heartbeat(&mut self, broker: usize) {
        let process = self.process(broker);
        let message = match process.registration {
            None => Message::Register {
                broker,
                incarnation_id: process.incarnation_id,
            },
            Some(epoch) => Message::Heartbeat(Heartbeat {
                broker_id: broker_id(broker),
                epoch,
                caught_up: i64::try_from(process.image).unwrap_or(i64::MAX) >= epoch.0,
                want_fence: false,
            }),
        };
        self.send(Node::Broker(broker), Node::Controller, message);
    }

    /// The broker's metadata log reaches commit `index`: the role loop
    /// acts on the new image.
    fn catch_up(&mut self, broker: usize, index: usize) -> Result<(), Violation> {
        let process = self.process_mut(broker);
        if index <= process.image {
            return Ok(());
        }
        process.image = index;
        if process.serving {
            self.role_loop(broker)?;
        }
        Ok(())
    }

    fn deliver_to_broker(
        &mut self,
        broker: usize,
        from: Node,
        message: Message,
    ) -> Result<(), Violation> {
        match message {
            Message::Registered { result, committed } => {
                self.catch_up(broker, committed)?;
                match result {
                    Ok(epoch) => self.process_mut(broker).registration = Some(epoch),
                    Err(error) => {
                        trace!(self, "broker {}: registration refused: {error}", broker + 1);
                    }
                }
                Ok(())
            }
            Message::HeartbeatAnswer { result, committed } => {
                self.catch_up(broker, committed)?;
                match result {
                    Ok(fenced) => {
                        if !fenced && !self.process(broker).serving {
                            self.start_serving(broker)?;
                        }
                    }
                    Err(error) => {
                        trace!(self, "broker {}: heartbeat refused: {error}", broker + 1);
                        self.process_mut(broker).registration = None;
                    }
                }
                Ok(())
            }
            Message::Image(index) => self.catch_up(broker, index),
            Message::AlterPartitionAnswer { request, result } => {
                match result {
                    Ok(()) => {
                        self.process_mut(broker).alters.remove(&request);
                    }
                    Err(error) => {
                        trace!(
                            self,
                            "broker {}: AlterPartition refused: {error:?}",
                            broker + 1
                        );
                        self.alter_partition_refused(broker, request, error);
                    }
                }
                Ok(())
            }
            Message::Fetch(request) => {
                self.leader_fetch(broker, request);
                Ok(())
            }
            Message::FetchAnswer(answer) => self.follower_answer(broker, from, answer),
            Message::Produce(request) => {
                self.produce(broker, &request);
                Ok(())
            }
            Message::Metadata {
                producer,
                partition,
            } => {
                let leader = partition_state(self.broker_image(broker), partition)
                    .map_or(BrokerId::NONE, |state| state.leader);
                self.send(
                    Node::Broker(broker),
                    Node::Producer(producer),
                    Message::MetadataAnswer { leader },
                );
                Ok(())
            }
            _ => unreachable!("not a message for a broker: {message:?}"),
        }
    }

    /// Unfenced: the shards start (fjord's `serve_shard`): recovered
    /// partitions this broker is the whole ISR of are committed, and the
    /// role loop runs.
    fn start_serving(&mut self, broker: usize) -> Result<(), Violation> {
        trace!(self, "broker {} is unfenced and serves", broker + 1);
        let min_insync = self.config.min_insync;
        let node = broker_id(broker);
        let image = self.controller.image_at(self.process(broker).image);
        for (partition, log) in self.brokers[broker].logs.iter_mut().enumerate() {
            let sole = partition_state(image, partition)
                .is_some_and(|state| state.isr == [node] && min_insync <= 1);
            if sole {
                let end = log.log_end();
                log.advance_high_watermark(end);
            }
        }
        self.process_mut(broker).serving = true;
        self.broker_timer(broker, self.now + ROLE_RETRY_INTERVAL_MS, Timer::Roles);
        self.role_loop(broker)
    }

    // ---- roles ----

    /// One turn of fjord's role loop (`replication::run`), on every image
    /// and every second: roles, then ISR proposals.
    fn role_loop(&mut self, broker: usize) -> Result<(), Violation> {
        self.apply_roles(broker)?;
        self.propose_isr_changes(broker);
        Ok(())
    }

    /// Gives every partition this broker replicates the role its image
    /// gives it (fjord's `apply_roles`).
    fn apply_roles(&mut self, broker: usize) -> Result<(), Violation> {
        let node = broker_id(broker);
        for partition in 0..self.config.partitions {
            let Some(state) = partition_state(self.broker_image(broker), partition).cloned() else {
                continue;
            };
            if !state.replicas.contains(&node) {
                continue;
            }
            if state.leader == node {
                self.take_leadership(broker, partition, &state)?;
                continue;
            }
            let process = self.process_mut(broker);
            process.leaders.remove(&partition);
            let Some(leader) = broker_index(state.leader) else {
                process.following.remove(&partition);
                continue;
            };
            let known = process.following.get(&partition);
            if known.is_none_or(|known| {
                known.leader != leader || known.leader_epoch != state.leader_epoch
            }) {
                process.following.insert(
                    partition,
                    Following {
                        leader,
                        leader_epoch: state.leader_epoch,
                        in_flight: None,
                        backoff_until: 0,
                    },
                );
                trace!(
                    self,
                    "broker {} follows {} in partition {partition} epoch {}",
                    broker + 1,
                    state.leader,
                    state.leader_epoch.0
                );
                self.broker_timer(broker, self.now, Timer::Fetch(partition));
            }
        }
        Ok(())
    }

    /// Leads `partition` in `state`'s epoch (fjord's `take_leadership`
    /// and `Replication::lead`): a new epoch starts at the log end; the
    /// high watermark moves to what the ISR allows.
    fn take_leadership(
        &mut self,
        broker: usize,
        partition: usize,
        state: &PartitionImage,
    ) -> Result<(), Violation> {
        let now = self.now;
        let node = broker_id(broker);
        let slot = &mut self.brokers[broker];
        let process = slot.process.as_mut().expect("the broker runs");
        let log = &mut slot.logs[partition];
        process.following.remove(&partition);
        match process.leaders.get_mut(&partition) {
            Some(leader) if leader.leader_epoch == state.leader_epoch => leader.update(state, now),
            _ => {
                let log_end = log.log_end();
                process
                    .leaders
                    .insert(partition, LeaderState::new(node, state, log_end, now));
                log.assign_leader_epoch(state.leader_epoch);
                self.oracle.lead(partition, state.leader_epoch, node, log)?;
                trace!(
                    self,
                    "broker {node} leads partition {partition} epoch {} from {log_end}, ISR {:?}",
                    state.leader_epoch.0,
                    state.isr
                );
            }
        }
        let slot = &mut self.brokers[broker];
        let log = &mut slot.logs[partition];
        let leader = &slot.process.as_ref().expect("the broker runs").leaders[&partition];
        if let Some(high_watermark) = leader.high_watermark(log.log_end(), self.config.min_insync) {
            log.advance_high_watermark(high_watermark);
        }
        Ok(())
    }

    /// Sends the ISR changes this broker's leaders call for.
    fn propose_isr_changes(&mut self, broker: usize) {
        let now = self.now;
        let lag_max = LAG_TIME_MAX_MS;
        let Some(broker_epoch) = self.process(broker).registration else {
            return;
        };
        let image = self.controller.image_at(self.process(broker).image);
        let slot = &mut self.brokers[broker];
        let process = slot.process.as_mut().expect("the broker runs");
        let mut proposals = Vec::new();
        for (&partition, leader) in &mut process.leaders {
            let high_watermark = slot.logs[partition].high_watermark();
            if let Some(proposal) = leader.propose(high_watermark, now, lag_max, |replica| {
                is_live(image, replica)
            }) {
                proposals.push((partition, proposal));
            }
        }
        for (partition, proposal) in proposals {
            trace!(
                self,
                "broker {} proposes ISR {:?} for partition {partition}",
                broker + 1,
                proposal.isr
            );
            self.send_alter_partition(broker, broker_epoch, partition, proposal);
        }
    }

    fn send_alter_partition(
        &mut self,
        broker: usize,
        broker_epoch: BrokerEpoch,
        partition: usize,
        proposal: IsrChange,
    ) {
        let request = self.next_id();
        self.process_mut(broker)
            .alters
            .insert(request, (partition, proposal.clone()));
        self.send(
            Node::Broker(broker),
            Node::Controller,
            Message::AlterPartition {
                broker,
                broker_epoch,
                partition,
                request,
                proposal,
            },
        );
        self.broker_timer(
            broker,
            self.now + ALTER_PARTITION_TIMEOUT_MS,
            Timer::AlterTimeout(request),
        );
    }

    /// The controller refused the proposal of `request`. Only
    /// `INELIGIBLE_REPLICA` says it was not applied and the leader's
    /// partition state is current, so only then does the leader forget it
    /// (Kafka's `handleAlterPartitionError`); any other refusal means the
    /// controller has a newer state, which the next image brings, and
    /// which ends the proposal.
    ///
    /// fjord's `propose_isr_changes` forgets the proposal on every error
    /// instead, a timeout included; when the controller did commit an
    /// expansion, the leader then computes the high watermark without the
    /// member the controller just added, and acknowledges acks=all
    /// records it lacks (seed 1328 of `four_or_five_brokers`).
    fn alter_partition_refused(&mut self, broker: usize, request: u64, error: ResponseError) {
        let process = self.process_mut(broker);
        let Some((partition, proposal)) = process.alters.remove(&request) else {
            return;
        };
        if error == ResponseError::IneligibleReplica {
            if let Some(leader) = process.leaders.get_mut(&partition) {
                leader.proposal_failed(&proposal);
            }
        }
    }

    /// No answer to the proposal of `request`: whether it was committed is
    /// unknown, so the leader keeps it in flight and sends it again while
    /// it still leads in the state it was made from (Kafka's
    /// AlterPartition manager retries likewise).
    fn alter_partition_timed_out(&mut self, broker: usize, request: u64) {
        let process = self.process_mut(broker);
        let Some((partition, proposal)) = process.alters.remove(&request) else {
            return;
        };
        let current = process.leaders.get(&partition).is_some_and(|leader| {
            leader.leader_epoch == proposal.leader_epoch
                && leader.partition_epoch == proposal.partition_epoch
        });
        if let (true, Some(broker_epoch)) = (current, process.registration) {
            self.send_alter_partition(broker, broker_epoch, partition, proposal);
        }
    }

    // ---- the follower ----

    /// Sends the fetch of `partition` from its log end, unless one is out
    /// or the partition backs off.
    fn fetch(&mut self, broker: usize, partition: usize) {
        let now = self.now;
        let request = self.next_id();
        let slot = &mut self.brokers[broker];
        let process = slot.process.as_mut().expect("the broker runs");
        if !process.serving {
            return;
        }
        let Some(following) = process.following.get_mut(&partition) else {
            return;
        };
        if following.in_flight.is_some() {
            return;
        }
        if following.backoff_until > now {
            let at = following.backoff_until;
            self.broker_timer(broker, at, Timer::Fetch(partition));
            return;
        }
        following.in_flight = Some(request);
        let leader = following.leader;
        let log = &slot.logs[partition];
        let fetch = FetchRequest {
            follower: broker,
            follower_incarnation: process.incarnation,
            follower_epoch: process.registration.unwrap_or(BrokerEpoch(-1)),
            request,
            partition,
            current_leader_epoch: following.leader_epoch,
            fetch_offset: log.log_end(),
            last_fetched_epoch: log.latest_epoch().map_or(-1, |epoch| epoch.0),
        };
        self.send(
            Node::Broker(broker),
            Node::Broker(leader),
            Message::Fetch(fetch),
        );
        self.broker_timer(
            broker,
            now + FETCH_WAIT_MAX_MS + FETCH_DEADLINE_SLACK_MS,
            Timer::FetchTimeout { partition, request },
        );
    }

    /// Takes the leader's answer (fjord's `take_answer`): truncates on a
    /// diverging epoch, else appends, flushes and follows the high
    /// watermark; then fetches again.
    fn follower_answer(
        &mut self,
        broker: usize,
        from: Node,
        answer: FetchAnswer,
    ) -> Result<(), Violation> {
        let partition = answer.partition;
        let now = self.now;
        let slot = &mut self.brokers[broker];
        let process = slot.process.as_mut().expect("the broker runs");
        let Some(following) = process.following.get_mut(&partition) else {
            return Ok(());
        };
        if following.in_flight != Some(answer.request) || from != Node::Broker(following.leader) {
            return Ok(());
        }
        following.in_flight = None;
        let log = &mut slot.logs[partition];
        let data = match answer.result {
            Ok(data) => data,
            Err(error) => {
                following.backoff_until = now + FETCH_BACKOFF_MS;
                let at = following.backoff_until;
                trace!(
                    self,
                    "broker {}: fetch of partition {partition} refused: {error:?}",
                    broker + 1
                );
                self.broker_timer(broker, at, Timer::Fetch(partition));
                return Ok(());
            }
        };
        if let Some((epoch, leader_end)) = data.diverging {
            let log_end = log.log_end();
            let end =
                truncation_offset(log.end_offset_for_epoch(epoch), epoch, leader_end, log_end);
            let new_end = log.truncate_to(end);
            self.oracle.shortened(partition, broker, new_end);
            if new_end < log_end {
                self.stats.truncations += 1;
            }
            trace!(
                self,
                "broker {} truncates partition {partition} from {log_end} to {new_end} (leader's epoch {} ends at {leader_end})",
                broker + 1,
                epoch.0
            );
        } else {
            // A batch wholly below the log end is skipped, as the fetcher's
            // `batches_from` does; one that straddles it means the logs
            // disagree.
            let log_end = log.log_end();
            let batches: Vec<Batch> = data
                .batches
                .iter()
                .filter(|batch| batch.end() > log_end)
                .copied()
                .collect();
            if !batches.is_empty() {
                if let Err(mismatch) = log.append_as_follower(&batches) {
                    return Err(Violation(format!(
                        "partition {partition}: broker {} was sent batches that do not follow its log: {mismatch:?}, {:?}",
                        broker + 1,
                        batches
                    )));
                }
                log.flush();
            }
            let end = log.log_end();
            log.advance_high_watermark(data.high_watermark.min(end));
        }
        self.broker_timer(broker, now, Timer::Fetch(partition));
        Ok(())
    }

    // ---- the leader ----

    /// A follower's fetch: answered now when it has data or is refused,
    /// else parked until data comes or `replica.fetch.wait.max.ms` passes
    /// (fjord's Fetch `handle`).
    fn leader_fetch(&mut self, broker: usize, request: FetchRequest) {
        if !self.process(broker).serving {
            return;
        }
        let answer = self.read_for_follower(broker, &request);
        let complete = match &answer.result {
            Ok(data) => !data.batches.is_empty(),
            Err(_) => true,
        };
        if complete {
            self.transmit(
                Node::Broker(broker),
                Node::Broker(request.follower),
                request.follower_incarnation,
                Message::FetchAnswer(answer),
            );
        } else {
            let id = self.next_id();
            self.process_mut(broker).parked.insert(id, request);
            self.broker_timer(
                broker,
                self.now + FETCH_WAIT_MAX_MS,
                Timer::ParkedFetchDue(id),
            );
        }
    }

    fn answer_fetch(&mut self, broker: usize, request: &FetchRequest) {
        let answer = self.read_for_follower(broker, request);
        self.transmit(
            Node::Broker(broker),
            Node::Broker(request.follower),
            request.follower_incarnation,
            Message::FetchAnswer(answer),
        );
    }

    /// Answers the parked fetches of `partition` that data now waits for.
    fn wake_parked(&mut self, broker: usize, partition: usize) {
        let log_end = self.brokers[broker].logs[partition].log_end();
        let process = self.process_mut(broker);
        let ready: Vec<u64> = process
            .parked
            .iter()
            .filter(|(_, request)| request.partition == partition && request.fetch_offset < log_end)
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            if let Some(request) = self.process_mut(broker).parked.remove(&id) {
                self.answer_fetch(broker, &request);
            }
        }
    }

    /// The leader's read of one partition for a follower (fjord's
    /// `led_here` and `read_for_follower`).
    fn read_for_follower(&mut self, broker: usize, request: &FetchRequest) -> FetchAnswer {
        let partition = request.partition;
        let refuse = |error| FetchAnswer {
            request: request.request,
            partition,
            result: Err(error),
        };
        let now = self.now;
        let min_insync = self.config.min_insync;
        let max_batches = self.config.fetch_max_batches;
        let image = self.controller.image_at(self.process(broker).image);
        let Some(state) = partition_state(image, partition) else {
            return refuse(ResponseError::UnknownTopicOrPartition);
        };
        if request.current_leader_epoch < state.leader_epoch {
            return refuse(ResponseError::FencedLeaderEpoch);
        }
        if request.current_leader_epoch > state.leader_epoch {
            return refuse(ResponseError::UnknownLeaderEpoch);
        }
        if state.leader != broker_id(broker) {
            return refuse(ResponseError::NotLeaderOrFollower);
        }
        let slot = &mut self.brokers[broker];
        let process = slot.process.as_mut().expect("the broker runs");
        let log = &mut slot.logs[partition];
        let local_end = log.end_offset_for_epoch(LeaderEpoch(request.last_fetched_epoch.max(0)));
        if let Some(diverging) =
            diverging_epoch(local_end, request.last_fetched_epoch, request.fetch_offset)
        {
            return FetchAnswer {
                request: request.request,
                partition,
                result: Ok(FetchData {
                    high_watermark: log.high_watermark(),
                    diverging: Some(diverging),
                    batches: Vec::new(),
                }),
            };
        }
        if request.fetch_offset > log.log_end() || request.fetch_offset < Offset::ZERO {
            return refuse(ResponseError::OffsetOutOfRange);
        }
        let Some(leader) = process.leaders.get_mut(&partition) else {
            return refuse(ResponseError::NotLeaderOrFollower);
        };
        let log_end = log.log_end();
        let follower = Follower {
            broker: broker_id(request.follower),
            broker_epoch: request.follower_epoch,
        };
        if !leader.on_fetch(follower, request.fetch_offset, log_end, now) {
            return refuse(ResponseError::NotLeaderOrFollower);
        }
        if let Some(high_watermark) = leader.high_watermark(log_end, min_insync) {
            log.advance_high_watermark(high_watermark);
        }
        FetchAnswer {
            request: request.request,
            partition,
            result: Ok(FetchData {
                high_watermark: log.high_watermark(),
                diverging: None,
                batches: log.read(request.fetch_offset, max_batches).to_vec(),
            }),
        }
    }

    /// A produce request (fjord's `led_here`, `leader_append` and
    /// `submit_append_as_leader`).
    fn produce(&mut self, broker: usize, request: &ProduceRequest) {
        if !self.process(broker).serving {
            return;
        }
        let partition = request.partition;
        let node = broker_id(broker);
        let min_insync = self.config.min_insync;
        let image = self.controller.image_at(self.process(broker).image);
        let state = match partition_state(image, partition) {
            None => Err(ResponseError::UnknownTopicOrPartition),
            Some(state) if state.leader != node => Err(ResponseError::NotLeaderOrFollower),
            Some(state) if request.acks == -1 && state.isr.len() < min_insync => {
                Err(ResponseError::NotEnoughReplicas)
            }
            Some(state) => Ok(state.clone()),
        };
        let state = match state {
            Ok(state) => state,
            Err(error) => {
                self.answer_produce(broker, request, Err(error));
                return;
            }
        };
        let slot = &mut self.brokers[broker];
        let log = &mut slot.logs[partition];
        let batch = log.append_as_leader(state.leader_epoch, request.first_record, request.records);
        if request.acks == -1 {
            log.flush();
        }
        // The high watermark the leader's state allows, over the ISR with
        // any member joining. fjord's `leader_append` instead moves it to
        // the log end when the image's ISR is this broker alone and
        // min.insync.replicas is 1, ignoring an expansion in flight: then
        // an acks=all record is acknowledged that a member the controller
        // just added lacks (seed 35 of `three_brokers_min_insync_one`).
        let leader = slot
            .process
            .as_ref()
            .and_then(|process| process.leaders.get(&partition));
        if let Some(high_watermark) =
            leader.and_then(|leader| leader.high_watermark(log.log_end(), min_insync))
        {
            log.advance_high_watermark(high_watermark);
        }
        trace!(
            self,
            "broker {} appends {batch:?} (acks={}) to partition {partition}",
            broker + 1,
            request.acks
        );
        self.wake_parked(broker, partition);
        if request.acks == -1 {
            let deadline = self.now + REQUEST_TIMEOUT_MS;
            self.process_mut(broker).acks.push(PendingAck {
                producer: request.producer,
                request: request.request,
                partition,
                batch,
                leader_epoch: state.leader_epoch,
                deadline,
            });
            self.broker_timer(broker, deadline, Timer::AckDeadline);
        } else {
            self.answer_produce(broker, request, Ok(batch.base));
        }
    }

    fn answer_produce(
        &mut self,
        broker: usize,
        request: &ProduceRequest,
        result: Result<Offset, ResponseError>,
    ) {
        self.send(
            Node::Broker(broker),
            Node::Producer(request.producer),
            Message::ProduceAnswer {
                request: request.request,
                result,
            },
        );
    }

    /// Answers the acks=all appends that are done (fjord's
    /// `await_committed`): the high watermark passed them, or another
    /// broker leads, or the ISR fell below `min.insync.replicas`, or their
    /// time is up.
    fn settle_acks(&mut self, broker: usize) -> Result<(), Violation> {
        let Some(process) = self.brokers[broker].process.as_ref() else {
            return Ok(());
        };
        if process.acks.is_empty() {
            return Ok(());
        }
        let image = self.controller.image_at(process.image);
        let node = broker_id(broker);
        let mut answers = Vec::new();
        let mut waiting = Vec::new();
        for ack in &process.acks {
            let log = &self.brokers[broker].logs[ack.partition];
            let state = partition_state(image, ack.partition);
            let result = if log.high_watermark() >= ack.batch.end() {
                Ok(ack.batch.base)
            } else if state
                .is_none_or(|state| state.leader != node || state.leader_epoch != ack.leader_epoch)
            {
                Err(ResponseError::NotLeaderOrFollower)
            } else if state.is_some_and(|state| state.isr.len() < self.config.min_insync) {
                Err(ResponseError::NotEnoughReplicasAfterAppend)
            } else if self.now >= ack.deadline {
                Err(ResponseError::RequestTimedOut)
            } else {
                waiting.push(*ack);
                continue;
            };
            answers.push((*ack, result));
        }
        self.process_mut(broker).acks = waiting;
        for (ack, result) in answers {
            if result.is_ok() {
                self.oracle.acknowledged(ack.partition, ack.batch)?;
                trace!(self, "broker {} acknowledges {:?}", broker + 1, ack.batch);
            }
            self.send(
                Node::Broker(broker),
                Node::Producer(ack.producer),
                Message::ProduceAnswer {
                    request: ack.request,
                    result,
                },
            );
        }
        Ok(())
    }

    // ---- the controller ----

    fn deliver_elsewhere(&mut self, envelope: Envelope) -> Result<(), Violation> {
        if self.incarnation_of(envelope.to) != Some(envelope.incarnation)
            || !self.linked(envelope.from, envelope.to)
        {
            return Ok(());
        }
        match envelope.to {
            Node::Controller => {
                self.controller_receives(envelope.from, envelope.from_incarnation, envelope.message)
            }
            Node::Producer(producer) => {
                self.producer_receives(producer, &envelope.message);
                Ok(())
            }
            Node::Broker(_) => unreachable!("broker messages are handled by the broker"),
        }
    }

    fn controller_receives(
        &mut self,
        from: Node,
        incarnation: u64,
        message: Message,
    ) -> Result<(), Violation> {
        let now = self.now;
        match message {
            Message::Register {
                broker,
                incarnation_id,
            } => {
                let registration = Registration {
                    broker_id: broker_id(broker),
                    incarnation_id,
                    endpoints: Vec::new(),
                    rack: None,
                    cores: 1,
                };
                let next_epoch = self.controller.next_broker_epoch();
                let (sessions, image) = self.controller.sessions();
                let result = match sessions.register(image, registration, next_epoch, now) {
                    Ok(Registered::Existing(epoch)) => Ok(epoch),
                    Ok(Registered::New { epoch, records }) => {
                        self.commit(&records)?;
                        Ok(epoch)
                    }
                    Err(error) => Err(error),
                };
                let committed = self.controller.committed();
                self.transmit(
                    Node::Controller,
                    from,
                    incarnation,
                    Message::Registered { result, committed },
                );
            }
            Message::Heartbeat(heartbeat) => {
                let (sessions, image) = self.controller.sessions();
                let result = sessions.heartbeat(image, heartbeat, now);
                let answer = match result {
                    Ok(records) => {
                        self.commit(&records)?;
                        Ok(self
                            .controller
                            .image()
                            .brokers
                            .get(&heartbeat.broker_id)
                            .is_none_or(|registration| registration.fenced))
                    }
                    Err(error) => Err(error),
                };
                let committed = self.controller.committed();
                self.transmit(
                    Node::Controller,
                    from,
                    incarnation,
                    Message::HeartbeatAnswer {
                        result: answer,
                        committed,
                    },
                );
            }
            Message::ControlledShutdown { broker, epoch } => {
                let (sessions, image) = self.controller.sessions();
                if let Ok(records) =
                    sessions.controlled_shutdown(image, broker_id(broker), epoch, now)
                {
                    self.commit(&records)?;
                }
            }
            Message::AlterPartition {
                broker,
                broker_epoch,
                partition,
                request,
                proposal,
            } => {
                let result = self.alter_partition(broker, broker_epoch, partition, proposal)?;
                self.transmit(
                    Node::Controller,
                    from,
                    incarnation,
                    Message::AlterPartitionAnswer { request, result },
                );
            }
            _ => unreachable!("not a message for the controller: {message:?}"),
        }
        Ok(())
    }

    /// The controller's answer to `broker`'s proposal, committed if
    /// accepted.
    fn alter_partition(
        &mut self,
        broker: usize,
        broker_epoch: BrokerEpoch,
        partition: usize,
        proposal: IsrChange,
    ) -> Result<Result<(), ResponseError>, Violation> {
        let proposer = Proposer {
            broker: broker_id(broker),
            epoch: broker_epoch,
        };
        let proposal = IsrProposal {
            topic: TOPIC.to_owned(),
            partition: i32::try_from(partition).unwrap_or(i32::MAX),
            leader_epoch: proposal.leader_epoch,
            partition_epoch: proposal.partition_epoch,
            isr: proposal.isr,
            broker_epochs: proposal.broker_epochs,
            leader_recovery_state: LeaderRecoveryState::Recovered,
        };
        let (sessions, image) = self.controller.sessions();
        match alter_partition(image, sessions.rules(), proposer, &proposal) {
            Ok(records) => {
                self.commit(&records)?;
                Ok(Ok(()))
            }
            Err(error) => Ok(Err(error.kafka_error())),
        }
    }

    /// Fences the brokers whose sessions expired and, every
    /// `leader.imbalance.check.interval.seconds`, gives leaderships back to
    /// preferred replicas (the controller's heartbeat thread), every
    /// heartbeat interval.
    fn controller_tick(&mut self, term: u64) -> Result<(), Violation> {
        if self.controller_term != Some(term) {
            return Ok(());
        }
        let (sessions, image) = self.controller.sessions();
        let records = sessions.expire(image, self.now);
        self.commit(&records)?;
        if SETTINGS.auto_leader_rebalance_enable && self.now >= self.next_rebalance {
            self.next_rebalance = self.now + rebalance_interval_ms();
            let (sessions, image) = self.controller.sessions();
            let records = rebalancing_elections(
                image,
                sessions.rules(),
                SETTINGS.leader_imbalance_per_broker_percentage,
            );
            self.stats.rebalances += records.len();
            self.commit(&records)?;
        }
        self.schedule(
            self.now + HEARTBEAT_INTERVAL_MS,
            Event::ControllerTick { term },
        );
        Ok(())
    }

    fn create_topic(&mut self) -> Result<(), Violation> {
        let brokers = self.config.brokers;
        let replicas: Vec<Vec<BrokerId>> = (0..self.config.partitions)
            .map(|partition| {
                (0..self.config.replication_factor)
                    .map(|replica| broker_id((partition + replica) % brokers))
                    .collect()
            })
            .collect();
        let unclean_override = self.config.unclean_leader_election == Some(UncleanSetting::Topic);
        let (sessions, image) = self.controller.sessions();
        let records =
            controller::create_topic(image, sessions.rules(), &replicas, unclean_override);
        self.commit(&records)
    }

    /// Commits `records`, checks the new image and sends it to every
    /// broker.
    fn commit(&mut self, records: &[MetadataRecord]) -> Result<(), Violation> {
        let index = match self.controller.commit(records) {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(()),
            Err(error) => {
                return Err(Violation(format!(
                    "the controller's records do not apply: {error}: {records:?}"
                )))
            }
        };
        let before = self.controller.image_at(index - 1);
        let after = self.controller.image_at(index);
        let logs = disks(&self.brokers);
        self.oracle
            .check_image(before, after, self.controller.rules(), &logs)?;
        self.count_changes(index);
        for broker in 0..self.brokers.len() {
            self.send(
                Node::Controller,
                Node::Broker(broker),
                Message::Image(index),
            );
        }
        Ok(())
    }

    fn count_changes(&mut self, index: usize) {
        let before = self.controller.image_at(index - 1);
        let after = self.controller.image_at(index);
        let Some(topic) = after.topics.get(TOPIC) else {
            return;
        };
        for (partition, state) in topic.partitions.iter().enumerate() {
            let Some(old) = partition_state(before, partition) else {
                continue;
            };
            if state == old {
                continue;
            }
            if state.leader != old.leader {
                if state.leader == BrokerId::NONE {
                    self.stats.offline += 1;
                } else {
                    self.stats.elections += 1;
                    if !old.isr.contains(&state.leader) {
                        self.stats.unclean_elections += 1;
                    }
                }
            } else if state.isr.len() < old.isr.len() {
                self.stats.isr_shrinks += 1;
            } else if state.isr.len() > old.isr.len() {
                self.stats.isr_expansions += 1;
            }
            trace!(
                self,
                "commit {index}: partition {partition} leader {} epoch {} ISR {:?} (partition epoch {}, {:?})",
                state.leader,
                state.leader_epoch.0,
                state.isr,
                state.partition_epoch.0,
                state.leader_recovery_state
            );
        }
    }

    // ---- producers ----

    fn wake_producer(&mut self, producer: usize, at: i64) {
        let state = &mut self.producers[producer];
        state.generation += 1;
        let generation = state.generation;
        self.schedule(
            at,
            Event::Producer {
                producer,
                generation,
            },
        );
    }

    /// Sends the batch being delivered (a new one during the fault phase)
    /// to the leader the producer knows, or asks a broker who leads.
    fn producer_step(&mut self, producer: usize) {
        let now = self.now;
        let state = &mut self.producers[producer];
        if state.in_flight.is_some() {
            return;
        }
        if state
            .delivery
            .is_some_and(|delivery| now - delivery.created > DELIVERY_TIMEOUT_MS)
        {
            state.delivery = None;
        }
        if state.delivery.is_none() {
            if now >= self.faults_end {
                return;
            }
            let records = i64::try_from(self.rng.between(1, 4)).unwrap_or(1);
            state.delivery = Some(Delivery {
                first_record: self.next_record,
                records,
                created: now,
            });
            self.next_record += 10;
        }
        let Some(leader) = state.leader else {
            let broker = self.rng.index(self.brokers.len());
            let partition = state.partition;
            self.send(
                Node::Producer(producer),
                Node::Broker(broker),
                Message::Metadata {
                    producer,
                    partition,
                },
            );
            self.wake_producer(producer, now + RETRY_BACKOFF_MS);
            return;
        };
        let request = self.next_id();
        let state = &mut self.producers[producer];
        let delivery = state.delivery.expect("a batch is being delivered");
        state.in_flight = Some(request);
        let produce = ProduceRequest {
            producer,
            request,
            partition: state.partition,
            acks: state.acks,
            first_record: delivery.first_record,
            records: delivery.records,
        };
        self.send(
            Node::Producer(producer),
            Node::Broker(leader),
            Message::Produce(produce),
        );
        self.schedule(
            now + REQUEST_TIMEOUT_MS + 500,
            Event::ProducerTimeout { producer, request },
        );
    }

    fn producer_receives(&mut self, producer: usize, message: &Message) {
        match message {
            Message::MetadataAnswer { leader } => {
                let state = &mut self.producers[producer];
                if state.in_flight.is_none() {
                    state.leader = broker_index(*leader);
                    if state.leader.is_some() {
                        self.wake_producer(producer, self.now);
                    }
                }
            }
            Message::ProduceAnswer { request, result } => {
                if self.producers[producer].in_flight != Some(*request) {
                    return;
                }
                match result {
                    Ok(_) => {
                        let state = &mut self.producers[producer];
                        state.in_flight = None;
                        state.delivery = None;
                        let pause = i64::try_from(self.rng.between(20, 400)).unwrap_or(100);
                        self.wake_producer(producer, self.now + pause);
                    }
                    Err(error) => self.producer_failed(producer, &format!("{error:?}")),
                }
            }
            _ => unreachable!("not a message for a producer: {message:?}"),
        }
    }

    /// A request failed: the producer looks the leader up again and
    /// retries after its backoff.
    fn producer_failed(&mut self, producer: usize, why: &str) {
        trace!(self, "producer {producer}: {why}");
        let state = &mut self.producers[producer];
        state.in_flight = None;
        state.leader = None;
        self.wake_producer(producer, self.now + RETRY_BACKOFF_MS);
    }

    // ---- faults ----

    fn live_brokers(&self) -> Vec<usize> {
        (0..self.brokers.len())
            .filter(|&broker| {
                self.brokers[broker]
                    .process
                    .as_ref()
                    .is_some_and(|process| !process.paused)
            })
            .collect()
    }

    /// Strikes one fault at random, and schedules the next.
    fn fault(&mut self) {
        if self.now >= self.faults_end {
            return;
        }
        let interval = self.config.fault_interval_ms;
        let next =
            self.now + i64::try_from(self.rng.between(interval / 4, interval * 2)).unwrap_or(1_000);
        self.schedule(next, Event::Fault);
        let live = self.live_brokers();
        let lag_max = LAG_TIME_MAX_MS;
        let kind = self.rng.below(100);
        if live.is_empty() || self.faults_now() >= self.config.faults_at_once {
            return;
        }
        let broker = *self.rng.pick(&live);
        match kind {
            0..=19 => {
                let power_loss = self.rng.chance(1, 2);
                self.crash(broker, power_loss);
                let down = i64::try_from(self.rng.between(100, 8_000)).unwrap_or(1_000);
                self.schedule(self.now + down, Event::Restart(broker));
            }
            20..=27 => {
                self.stop(broker);
                let down = i64::try_from(self.rng.between(100, 5_000)).unwrap_or(1_000);
                self.schedule(self.now + down, Event::Restart(broker));
            }
            28..=44 => {
                let process = self.process_mut(broker);
                process.paused = true;
                let incarnation = process.incarnation;
                let pause = i64::try_from(
                    self.rng
                        .between(100, u64::try_from(2 * lag_max).unwrap_or(8_000)),
                )
                .unwrap_or(1_000);
                trace!(self, "broker {} paused for {pause} ms", broker + 1);
                self.schedule(
                    self.now + pause,
                    Event::Resume {
                        broker,
                        incarnation,
                    },
                );
            }
            45..=62 => {
                let cut = Cut::Isolated(Node::Broker(broker));
                self.cut(cut);
            }
            63..=79 => {
                let other = self.rng.index(self.brokers.len() + 1);
                let other = if other == self.brokers.len() {
                    Node::Controller
                } else {
                    Node::Broker(other)
                };
                if other != Node::Broker(broker) {
                    self.cut(Cut::Link(Node::Broker(broker), other));
                }
            }
            80..=86 => {
                if let Some(term) = self.controller_term {
                    self.controller_term = None;
                    self.terms += 1;
                    let next = self.terms;
                    let down = i64::try_from(self.rng.between(100, 2_000)).unwrap_or(500);
                    trace!(
                        self,
                        "controller term {term} ends; term {next} in {down} ms"
                    );
                    self.schedule(self.now + down, Event::ControllerUp { term: next });
                }
            }
            _ => {}
        }
    }

    /// How many brokers are down, paused or cut off, and the controller
    /// if it is failing over.
    fn faults_now(&self) -> usize {
        let brokers = (0..self.brokers.len())
            .filter(|&broker| {
                let node = Node::Broker(broker);
                self.brokers[broker]
                    .process
                    .as_ref()
                    .is_none_or(|process| process.paused)
                    || self.cuts.values().any(|cut| match *cut {
                        Cut::Isolated(isolated) => isolated == node,
                        Cut::Link(a, b) => a == node || b == node,
                    })
            })
            .count();
        brokers + usize::from(self.controller_term.is_none())
    }

    fn cut(&mut self, cut: Cut) {
        let id = self.next_id();
        let duration = i64::try_from(self.rng.between(200, 8_000)).unwrap_or(1_000);
        trace!(self, "network: {cut:?} for {duration} ms");
        self.cuts.insert(id, cut);
        self.schedule(self.now + duration, Event::Heal(id));
    }

    /// The fault phase ends: the network heals, paused brokers resume and
    /// stopped ones restart; producers finish their batches.
    fn end_faults(&mut self) {
        trace!(self, "faults end");
        self.cuts.clear();
        for broker in 0..self.brokers.len() {
            match &self.brokers[broker].process {
                None => self.schedule(self.now, Event::Restart(broker)),
                Some(process) if process.paused => {
                    let incarnation = process.incarnation;
                    self.resume(broker, incarnation);
                }
                Some(_) => {}
            }
        }
    }

    // ---- checks ----

    fn check(&mut self) -> Result<(), Violation> {
        let logs = disks(&self.brokers);
        let leaders: Vec<(usize, LeaderEpoch, usize)> = self
            .brokers
            .iter()
            .enumerate()
            .filter_map(|(broker, slot)| Some((broker, slot.process.as_ref()?)))
            .flat_map(|(broker, process)| {
                process
                    .leaders
                    .iter()
                    .map(move |(&partition, leader)| (partition, leader.leader_epoch, broker))
            })
            .collect();
        self.oracle.check(&logs, &leaders, self.controller.image())
    }

    /// Once healed, every partition has a recovered leader, every replica
    /// is in the ISR and holds the leader's log, committed to its end.
    fn check_settled(&self) -> Result<(), Violation> {
        let image = self.controller.image();
        for partition in 0..self.config.partitions {
            let Some(state) = partition_state(image, partition) else {
                return Err(Violation("the topic was never created".to_owned()));
            };
            let Some(leader) = broker_index(state.leader) else {
                return Err(Violation(format!(
                    "not settled: partition {partition} has no leader: {state:?}"
                )));
            };
            if state.leader_recovery_state != LeaderRecoveryState::Recovered {
                return Err(Violation(format!(
                    "not settled: partition {partition} is still recovering: {state:?}"
                )));
            }
            let mut isr = state.isr.clone();
            isr.sort();
            let mut replicas = state.replicas.clone();
            replicas.sort();
            if isr != replicas {
                return Err(Violation(format!(
                    "not settled: partition {partition} has ISR {:?} of replicas {:?}; log ends {:?}",
                    state.isr,
                    state.replicas,
                    (0..self.brokers.len()).map(|broker| self.log_ends(broker)).collect::<Vec<_>>()
                )));
            }
            let expected = self.brokers[leader].logs[partition].batches();
            let leader_end = self.brokers[leader].logs[partition].log_end();
            for replica in &state.replicas {
                let broker = broker_index(*replica).unwrap_or(usize::MAX);
                let log = &self.brokers[broker].logs[partition];
                if log.batches() != expected || log.high_watermark() != leader_end {
                    return Err(Violation(format!(
                        "not settled: partition {partition}: replica {replica} ends at {} with high watermark {}, \
                         its leader {} at {leader_end}",
                        log.log_end(),
                        log.high_watermark(),
                        state.leader
                    )));
                }
            }
            if self.oracle.committed(partition) != expected {
                return Err(Violation(format!(
                    "not settled: partition {partition}: the committed log differs from the leader's"
                )));
            }
        }
        Ok(())
    }
}
