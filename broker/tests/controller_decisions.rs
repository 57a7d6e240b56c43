//! Deterministic simulation of the controller's decisions about brokers:
//! registrations, heartbeats, session expiry, controller failover, and the
//! leader elections that follow, driven from a seed through the same
//! functions the controller runs (`controller::liveness`,
//! `controller::election`, and `controller::new_partitions` to place the
//! topics' replicas), every record applied to the image with the image's
//! own checks.
//!
//! Simulated: three to five brokers (with racks or without) that heartbeat,
//! crash (stop heartbeating), restart with a new incarnation (refused while
//! the old session is live), send a heartbeat with a stale epoch, ask to be
//! fenced, ask for a controlled shutdown; partition leaders proposing ISR
//! changes (AlterPartition), some from a stale view or malformed, naming
//! the broker epochs their followers fetched with (KIP-903); topics
//! switching `unclean.leader.election.enable` (its broker default chosen
//! per seed); the controller expiring sessions; a new active controller
//! that knows no contact times nor shutdowns. Time is the simulation's.
//!
//! Checked after every step: a partition's leader is an unfenced member of
//! its ISR; there is none only when no ISR member is eligible (unfenced and
//! never in controlled shutdown since it registered) and, where the topic
//! allows unclean elections, no replica is; an unclean election leaves the
//! partition recovering (KIP-704), and a recovering ISR holds only its
//! leader; ISRs never empty; the leader
//! epoch moves up by one exactly when the leader changes, one leader per
//! epoch, and the partition epoch never goes back; a broker in controlled
//! shutdown is never elected, and after its shutdown leads nothing it
//! could hand over and sits in no ISR it could leave; AlterPartition
//! commits exactly what a model of Kafka's rules accepts and refuses the
//! rest with the model's error; a broker heard from within the session
//! timeout is never fenced by expiry; one not heard from for longer is
//! fenced by it; duplicate and stale requests are refused as Kafka does.
//!
//! `FJORD_MODEL_SEED=<n>` replays one seed; `FJORD_MODEL_CASES=<n>` sets how
//! many seeds run; `FJORD_MODEL_STEPS=<n>` the steps per seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use fjord_broker::controller::alter_partition::{alter_partition, IsrProposal, Proposer};
use fjord_broker::controller::election::{
    after_config_change, movable_leaderships, UNCLEAN_LEADER_ELECTION_ENABLE,
};
use fjord_broker::controller::liveness::{
    BrokerSessions, Heartbeat, LivenessError, Registered, Registration,
};
use fjord_broker::controller::new_partitions;
use fjord_broker::metadata::records::{
    BrokerEndpoint, BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType, LeaderRecoveryState,
    MetadataRecord, PartitionEpoch, TopicId, TopicRecord,
};
use fjord_broker::metadata::{MetadataImage, PartitionImage};
use fjord_engine::testkit::{run_model_seeds, Rng, SeedRuns};
use fjord_engine::LeaderEpoch;
use uuid::Uuid;

const DEFAULTS: SeedRuns = SeedRuns {
    cases: 60,
    steps: 400,
};
const SESSION_TIMEOUT_MS: i64 = 9_000;
const TOPICS: [&str; 3] = ["orders", "events", "__consumer_offsets"];

/// One simulated broker process.
#[derive(Clone, Debug)]
struct SimulatedBroker {
    id: BrokerId,
    rack: Option<String>,
    /// How many shards it runs.
    cores: u32,
    incarnation: Uuid,
    /// The epoch its current registration got, once registered.
    epoch: Option<BrokerEpoch>,
    /// Whether the process runs (and heartbeats).
    running: bool,
    /// The last time the controller heard from this incarnation.
    last_contact_ms: Option<i64>,
}

struct Simulation {
    seed: u64,
    step: u64,
    rng: Rng,
    now_ms: i64,
    image: MetadataImage,
    sessions: BrokerSessions,
    brokers: Vec<SimulatedBroker>,
    next_epoch: i64,
    /// The broker default of `unclean.leader.election.enable`.
    unclean_default: bool,
    /// The brokers the active controller must remember in controlled
    /// shutdown: marked by a shutdown, forgotten when fenced, registered
    /// again, or by a controller that takes over.
    shutting_down: BTreeSet<BrokerId>,
    /// The brokers that asked for a controlled shutdown since they last
    /// registered or were fenced, whatever the controller remembers.
    ever_shut_down: BTreeSet<BrokerId>,
    /// The leader of each (topic, partition, leader epoch) seen.
    leaders_by_epoch: BTreeMap<(String, usize, LeaderEpoch), BrokerId>,
}

impl Simulation {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let count = rng.between(3, 5) as i32;
        let racks = rng.chance(1, 2);
        let brokers = (1..=count)
            .map(|id| SimulatedBroker {
                id: BrokerId(id),
                rack: racks.then(|| format!("rack-{}", id % 2)),
                cores: 1 + (rng.next_u64() % 8) as u32,
                incarnation: Uuid::from_u128(u128::from(rng.next_u64())),
                epoch: None,
                running: true,
                last_contact_ms: None,
            })
            .collect();
        let unclean_default = rng.chance(1, 3);
        Self {
            seed,
            step: 0,
            rng,
            now_ms: 1_000_000,
            image: MetadataImage::default(),
            sessions: BrokerSessions::new(
                Duration::from_millis(SESSION_TIMEOUT_MS as u64),
                unclean_default,
            ),
            brokers,
            next_epoch: 1,
            unclean_default,
            shutting_down: BTreeSet::new(),
            ever_shut_down: BTreeSet::new(),
            leaders_by_epoch: BTreeMap::new(),
        }
    }

    /// Whether `topic` allows unclean elections, read from its configs
    /// here rather than through the controller's code.
    fn unclean_allowed(&self, topic: &str) -> bool {
        self.image.topics[topic]
            .configs
            .iter()
            .find(|(key, _)| key == UNCLEAN_LEADER_ELECTION_ENABLE)
            .map_or(self.unclean_default, |(_, value)| value == "true")
    }

    fn live(&self, broker: BrokerId) -> bool {
        self.image
            .brokers
            .get(&broker)
            .is_some_and(|registration| !registration.fenced)
    }

    /// A broker fenced or registered again is no longer shutting down.
    fn forget_shutdowns_of_fenced(&mut self) {
        let image = &self.image;
        let fenced = |broker: &BrokerId| {
            image
                .brokers
                .get(broker)
                .is_none_or(|registration| registration.fenced)
        };
        self.shutting_down.retain(|broker| !fenced(broker));
        self.ever_shut_down.retain(|broker| !fenced(broker));
    }

    fn context(&self) -> String {
        format!("seed {} step {} (t={})", self.seed, self.step, self.now_ms)
    }

    /// Applies `records` to the image one by one, checking the invariants
    /// that relate each image to the one before, then the leaders.
    fn commit(&mut self, records: &[MetadataRecord]) {
        let before_batch = self.image.clone();
        for record in records {
            let next = self.image.apply([record]).unwrap_or_else(|error| {
                panic!("{}: {record:?} does not apply: {error}", self.context())
            });
            for (name, topic) in &next.topics {
                let Some(before) = self.image.topics.get(name) else {
                    continue;
                };
                for (index, (old, new)) in
                    before.partitions.iter().zip(&topic.partitions).enumerate()
                {
                    let context = format!("{}: {name}-{index}", self.context());
                    if new.leader == old.leader {
                        assert_eq!(new.leader_epoch, old.leader_epoch, "{context}");
                    } else {
                        assert_eq!(new.leader_epoch.0, old.leader_epoch.0 + 1, "{context}");
                        assert!(
                            !self.shutting_down.contains(&new.leader),
                            "{context}: elected broker {} in controlled shutdown",
                            new.leader
                        );
                    }
                    assert!(new.partition_epoch >= old.partition_epoch, "{context}");
                }
            }
            self.image = next;
        }
        self.check_unclean_elections(&before_batch);
        self.forget_shutdowns_of_fenced();
        self.check_leaders();
    }

    /// A batch that gave a partition a leader from outside its ISR left it
    /// recovering (KIP-704).
    fn check_unclean_elections(&self, before: &MetadataImage) {
        for (name, topic) in &self.image.topics {
            let Some(old_topic) = before.topics.get(name) else {
                continue;
            };
            for (index, (old, new)) in old_topic
                .partitions
                .iter()
                .zip(&topic.partitions)
                .enumerate()
            {
                let unclean = new.leader != BrokerId::NONE
                    && new.leader != old.leader
                    && !old.isr.contains(&new.leader);
                assert!(
                    !unclean || new.leader_recovery_state == LeaderRecoveryState::Recovering,
                    "{}: {name}-{index} elected {} uncleanly and is not recovering",
                    self.context(),
                    new.leader
                );
            }
        }
    }

    fn check_leaders(&mut self) {
        let eligible = |id: BrokerId| self.live(id) && !self.ever_shut_down.contains(&id);
        let mut seen = Vec::new();
        for (name, topic) in &self.image.topics {
            let unclean = self.unclean_allowed(name);
            for (index, partition) in topic.partitions.iter().enumerate() {
                let context = format!("{}: {name}-{index} {partition:?}", self.context());
                assert!(!partition.isr.is_empty(), "{context}: empty ISR");
                if partition.leader == BrokerId::NONE {
                    assert!(
                        !partition.isr.iter().any(|&member| eligible(member)),
                        "{context}: leaderless with an eligible ISR member"
                    );
                    assert!(
                        !unclean || !partition.replicas.iter().any(|&replica| eligible(replica)),
                        "{context}: leaderless with an eligible replica and unclean elections on"
                    );
                } else {
                    assert!(partition.isr.contains(&partition.leader), "{context}");
                    assert!(self.live(partition.leader), "{context}: fenced leader");
                }
                if partition.leader_recovery_state == LeaderRecoveryState::Recovering {
                    assert_eq!(partition.isr.len(), 1, "{context}: a recovering ISR grew");
                }
                seen.push((
                    (name.clone(), index, partition.leader_epoch),
                    partition.leader,
                    context,
                ));
            }
        }
        for (key, leader, context) in seen {
            let first = *self.leaders_by_epoch.entry(key).or_insert(leader);
            assert_eq!(first, leader, "{context}: two leaders in one epoch");
        }
        assert_eq!(
            self.sessions.rules().shutting_down,
            self.shutting_down,
            "{}: the controller's memory of shutdowns",
            self.context()
        );
    }

    fn take_epoch(&mut self) -> BrokerEpoch {
        self.next_epoch += 1;
        BrokerEpoch(self.next_epoch)
    }

    fn register(&mut self, index: usize) {
        let broker = self.brokers[index].clone();
        let registration = Registration {
            broker_id: broker.id,
            incarnation_id: broker.incarnation,
            endpoints: vec![BrokerEndpoint {
                name: "PLAINTEXT".to_owned(),
                host: "localhost".to_owned(),
                port: 9092,
                security_protocol: 0,
            }],
            rack: broker.rack.clone(),
            cores: broker.cores,
        };
        let current = self.image.brokers.get(&broker.id).cloned();
        let epoch = self.take_epoch();
        let outcome = self
            .sessions
            .register(&self.image, registration, epoch, self.now_ms);
        let context = self.context();
        match outcome {
            Ok(Registered::Existing(epoch)) => {
                assert_eq!(
                    Some(epoch),
                    broker.epoch,
                    "{context}: a retry gets its epoch"
                );
                self.brokers[index].last_contact_ms = Some(self.now_ms);
            }
            Ok(Registered::New { epoch, records }) => {
                if let Some(current) = &current {
                    let other_live = !current.fenced
                        && current.incarnation_id != broker.incarnation
                        && self
                            .last_contact_of(broker.id)
                            .is_some_and(|last| self.now_ms - last <= SESSION_TIMEOUT_MS);
                    assert!(!other_live, "{context}: registered over a live session");
                }
                self.shutting_down.remove(&broker.id);
                self.ever_shut_down.remove(&broker.id);
                self.commit(&records);
                let registered = &self.image.brokers[&broker.id];
                assert!(
                    registered.fenced,
                    "{context}: a new registration starts fenced"
                );
                assert_eq!(registered.epoch, epoch, "{context}");
                assert_eq!(
                    registered.cores,
                    Some(broker.cores),
                    "{context}: the registration carries its cores"
                );
                let simulated = &mut self.brokers[index];
                simulated.epoch = Some(epoch);
                simulated.last_contact_ms = Some(self.now_ms);
            }
            Err(LivenessError::DuplicateRegistration { broker: refused }) => {
                assert_eq!(refused, broker.id, "{context}");
                let current = current.expect("a duplicate of an existing registration");
                assert!(
                    !current.fenced,
                    "{context}: a fenced registration may be replaced"
                );
                assert_ne!(current.incarnation_id, broker.incarnation, "{context}");
            }
            Err(error) => panic!("{context}: registration: {error}"),
        }
    }

    /// When the controller last heard from whichever incarnation holds
    /// `broker`'s registration.
    fn last_contact_of(&self, broker: BrokerId) -> Option<i64> {
        self.brokers
            .iter()
            .find(|simulated| simulated.id == broker)
            .and_then(|simulated| simulated.last_contact_ms)
    }

    fn heartbeat(&mut self, index: usize, want_fence: bool) {
        let broker = self.brokers[index].clone();
        let Some(epoch) = broker.epoch else {
            return self.register(index);
        };
        let stale = self.rng.chance(1, 10);
        let sent_epoch = if stale {
            BrokerEpoch(epoch.0 - 1)
        } else {
            epoch
        };
        let result = self.sessions.heartbeat(
            &self.image,
            Heartbeat {
                broker_id: broker.id,
                epoch: sent_epoch,
                caught_up: true,
                want_fence,
            },
            self.now_ms,
        );
        let context = self.context();
        let registered_epoch = self.image.brokers[&broker.id].epoch;
        match result {
            Ok(records) => {
                assert_eq!(
                    sent_epoch, registered_epoch,
                    "{context}: stale epoch accepted"
                );
                self.commit(&records);
                self.brokers[index].last_contact_ms = Some(self.now_ms);
                let fenced = self.image.brokers[&broker.id].fenced;
                assert_eq!(fenced, want_fence, "{context}: heartbeat outcome");
            }
            Err(LivenessError::StaleEpoch { .. }) => {
                assert_ne!(
                    sent_epoch, registered_epoch,
                    "{context}: current epoch refused"
                );
            }
            Err(error) => panic!("{context}: heartbeat: {error}"),
        }
    }

    fn expire(&mut self) {
        let before = self.image.clone();
        let records = self.sessions.expire(&self.image, self.now_ms);
        self.commit(&records);
        let context = self.context();
        for registration in before.brokers.values() {
            let last = self.last_contact_of(registration.id);
            let heard_within = last.is_some_and(|last| self.now_ms - last <= SESSION_TIMEOUT_MS);
            let fenced_now = self.image.brokers[&registration.id].fenced;
            if !registration.fenced && heard_within {
                assert!(
                    !fenced_now,
                    "{context}: broker {} fenced within its session",
                    registration.id
                );
            }
            if !heard_within {
                assert!(
                    fenced_now,
                    "{context}: broker {} outlived its session",
                    registration.id
                );
            }
        }
    }

    fn create_topics(&mut self) {
        let brokers = self.image.unfenced_brokers().count() as u64;
        for name in TOPICS {
            let topic_id =
                TopicId(*Uuid::from_u128(u128::from(self.rng.next_u64()) | 1).as_bytes());
            let partitions = self.rng.between(1, 8) as i32;
            let factor = self.rng.between(1, brokers) as i16;
            let mut records = vec![MetadataRecord::Topic(TopicRecord {
                name: name.to_owned(),
                topic_id,
            })];
            records.extend(
                new_partitions(&self.image, topic_id, 0..partitions, factor, None)
                    .expect("enough brokers"),
            );
            if self.rng.chance(1, 3) {
                records.push(unclean_config(name, Some(self.rng.chance(1, 2))));
            }
            self.commit(&records);
        }
    }

    /// A topic's `unclean.leader.election.enable` set or removed, with the
    /// elections the controller makes after it.
    fn switch_unclean(&mut self) {
        let name = *self.rng.pick(&TOPICS);
        let value = match self.rng.below(3) {
            0 => None,
            choice => Some(choice == 1),
        };
        let config = vec![unclean_config(name, value)];
        let after = self.image.apply(&config).expect("a config applies");
        let elections = after_config_change(&after, self.sessions.rules(), name);
        self.commit(&config.into_iter().chain(elections).collect::<Vec<_>>());
    }

    /// A controlled shutdown of a running broker, sometimes with a stale
    /// epoch; then it leads nothing it could hand over and sits in no ISR
    /// it could leave.
    fn controlled_shutdown(&mut self, index: usize) {
        let broker = self.brokers[index].clone();
        let Some(epoch) = broker.epoch.filter(|_| broker.running) else {
            return;
        };
        let stale = self.rng.chance(1, 10);
        let sent_epoch = if stale {
            BrokerEpoch(epoch.0 - 1)
        } else {
            epoch
        };
        let registered = self.image.brokers[&broker.id].clone();
        let result =
            self.sessions
                .controlled_shutdown(&self.image, broker.id, sent_epoch, self.now_ms);
        let context = self.context();
        let records = match result {
            Ok(records) => records,
            Err(LivenessError::StaleEpoch { .. }) => {
                assert_ne!(
                    sent_epoch, registered.epoch,
                    "{context}: current epoch refused"
                );
                return;
            }
            Err(error) => panic!("{context}: controlled shutdown: {error}"),
        };
        assert_eq!(
            sent_epoch, registered.epoch,
            "{context}: stale epoch accepted"
        );
        self.brokers[index].last_contact_ms = Some(self.now_ms);
        if registered.fenced {
            assert!(
                records.is_empty(),
                "{context}: a fenced broker has nothing to move"
            );
            return;
        }
        self.shutting_down.insert(broker.id);
        self.ever_shut_down.insert(broker.id);
        self.commit(&records);
        let eligible = |id: BrokerId| self.live(id) && !self.shutting_down.contains(&id);
        for (name, topic) in &self.image.topics {
            for (number, partition) in topic.partitions.iter().enumerate() {
                let context = format!("{context}: {name}-{number} {partition:?}");
                let others = partition.isr.iter().filter(|&&member| member != broker.id);
                if partition.leader == broker.id {
                    assert!(
                        !others.clone().any(|&member| eligible(member)),
                        "{context}: still leads with an eligible ISR member"
                    );
                } else if partition.isr.contains(&broker.id) {
                    assert_eq!(partition.isr, [broker.id], "{context}: stayed in the ISR");
                }
            }
        }
        assert_eq!(
            movable_leaderships(&self.image, self.sessions.rules(), broker.id),
            0,
            "{context}"
        );
    }

    /// A partition leader's ISR proposal, often from a stale view or
    /// malformed; the controller's verdict must be the model's.
    fn alter_partition(&mut self) {
        let name = *self.rng.pick(&TOPICS);
        let topic = self.image.topics[name].clone();
        let number = self.rng.index(topic.partitions.len());
        let partition = topic.partitions[number].clone();
        let mut proposer = partition.leader;
        if proposer == BrokerId::NONE || self.rng.chance(1, 10) {
            proposer = self.brokers[self.rng.index(self.brokers.len())].id;
        }
        let Some(registration) = self.image.brokers.get(&proposer).cloned() else {
            return;
        };
        let mut epoch = registration.epoch;
        if self.rng.chance(1, 20) {
            epoch = BrokerEpoch(epoch.0 - 1);
        }
        let mut proposal = IsrProposal {
            topic: name.to_owned(),
            partition: i32::try_from(number).expect("few partitions"),
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr: self.proposed_isr(&partition),
            broker_epochs: BTreeMap::new(),
            // A leader names the partition recovered (it has taken the
            // leadership); a malformed one sometimes recovering.
            leader_recovery_state: if self.rng.chance(1, 10) {
                LeaderRecoveryState::Recovering
            } else {
                LeaderRecoveryState::Recovered
            },
        };
        // The epochs the leader saw its followers fetch with: mostly their
        // registration's, sometimes a previous incarnation's (they
        // restarted since), sometimes unknown.
        for &member in &proposal.isr {
            let Some(registration) = self.image.brokers.get(&member) else {
                continue;
            };
            match self.rng.below(8) {
                0 => {}
                1 => {
                    let previous = BrokerEpoch(registration.epoch.0 - 1);
                    proposal.broker_epochs.insert(member, previous);
                }
                _ => {
                    proposal.broker_epochs.insert(member, registration.epoch);
                }
            }
        }
        match self.rng.below(20) {
            0 => proposal.leader_epoch = LeaderEpoch(proposal.leader_epoch.0 - 1),
            1 => proposal.partition_epoch = PartitionEpoch(proposal.partition_epoch.0 + 1),
            2 => proposal.isr.clear(),
            3 => proposal.isr.retain(|&member| member != proposer),
            4 => proposal.isr.push(proposer),
            5 => proposal.isr.push(BrokerId(99)),
            6 => proposal.partition = 1_000,
            _ => {}
        }
        let expected = self.expected_verdict(proposer, epoch, &partition, &proposal);
        let result = alter_partition(
            &self.image,
            self.sessions.rules(),
            Proposer {
                broker: proposer,
                epoch,
            },
            &proposal,
        );
        let context = format!("{}: {proposal:?} by {proposer}", self.context());
        match (result, expected) {
            (Ok(records), Ok(())) => {
                self.commit(&records);
                let after = &self.image.topics[name].partitions[number];
                assert_eq!(after.isr, proposal.isr, "{context}");
                assert_eq!(after.leader, partition.leader, "{context}");
                assert_eq!(after.leader_epoch, partition.leader_epoch, "{context}");
                assert_eq!(
                    after.leader_recovery_state, proposal.leader_recovery_state,
                    "{context}"
                );
                let bump = i32::from(
                    proposal.isr != partition.isr
                        || proposal.leader_recovery_state != partition.leader_recovery_state,
                );
                assert_eq!(
                    after.partition_epoch.0,
                    partition.partition_epoch.0 + bump,
                    "{context}"
                );
            }
            (Err(error), Err(expected)) => {
                assert_eq!(error.kafka_error(), expected, "{context}: {error}");
            }
            (result, expected) => panic!("{context}: got {result:?}, the model says {expected:?}"),
        }
    }

    /// An ISR a leader could propose: the current one less a follower,
    /// or with a replica added, or as it is.
    fn proposed_isr(&mut self, partition: &PartitionImage) -> Vec<BrokerId> {
        let mut isr = partition.isr.clone();
        let followers: Vec<BrokerId> = isr
            .iter()
            .copied()
            .filter(|&member| member != partition.leader)
            .collect();
        let outside: Vec<BrokerId> = partition
            .replicas
            .iter()
            .copied()
            .filter(|replica| !isr.contains(replica))
            .collect();
        match self.rng.below(3) {
            0 if !followers.is_empty() => {
                let leaving = *self.rng.pick(&followers);
                isr.retain(|&member| member != leaving);
            }
            1 if !outside.is_empty() => isr.push(*self.rng.pick(&outside)),
            _ => {}
        }
        isr
    }

    /// Kafka's AlterPartition rules, written out again for the model.
    fn expected_verdict(
        &self,
        proposer: BrokerId,
        epoch: BrokerEpoch,
        partition: &PartitionImage,
        proposal: &IsrProposal,
    ) -> Result<(), kafka_protocol::ResponseError> {
        use kafka_protocol::ResponseError as Kafka;
        if self.image.brokers[&proposer].epoch != epoch {
            return Err(Kafka::StaleBrokerEpoch);
        }
        let Some(current) = self.image.topics[&proposal.topic].partition(proposal.partition) else {
            return Err(Kafka::UnknownTopicOrPartition);
        };
        assert_eq!(current, partition);
        if partition.leader != proposer {
            return Err(Kafka::NotLeaderOrFollower);
        }
        if proposal.leader_epoch != partition.leader_epoch {
            return Err(Kafka::FencedLeaderEpoch);
        }
        if proposal.partition_epoch != partition.partition_epoch {
            return Err(Kafka::InvalidUpdateVersion);
        }
        let distinct: BTreeSet<BrokerId> = proposal.isr.iter().copied().collect();
        if proposal.isr.is_empty()
            || !proposal.isr.contains(&proposer)
            || distinct.len() != proposal.isr.len()
        {
            return Err(Kafka::InvalidRequest);
        }
        let recovering = proposal.leader_recovery_state == LeaderRecoveryState::Recovering;
        if recovering
            && (proposal.isr.len() > 1
                || partition.leader_recovery_state == LeaderRecoveryState::Recovered)
        {
            return Err(Kafka::InvalidRequest);
        }
        let another_incarnation = |member: &BrokerId| {
            proposal
                .broker_epochs
                .get(member)
                .is_some_and(|&epoch| self.image.brokers[member].epoch != epoch)
        };
        let joining_ineligible = proposal.isr.iter().any(|member| {
            !partition.isr.contains(member)
                && (!partition.replicas.contains(member)
                    || !self.live(*member)
                    || self.shutting_down.contains(member)
                    || another_incarnation(member))
        });
        if joining_ineligible {
            return Err(Kafka::IneligibleReplica);
        }
        Ok(())
    }

    fn run(mut self, steps: u64) {
        // Every broker registers and is unfenced, then the topics are made.
        for index in 0..self.brokers.len() {
            self.register(index);
            self.heartbeat_current(index);
        }
        self.create_topics();
        for _ in 0..steps {
            self.step += 1;
            self.now_ms += self.rng.between(0, 3_000) as i64;
            let index = self.rng.index(self.brokers.len());
            match self.rng.below(100) {
                0..=59 => {
                    let want_fence = self.rng.chance(1, 30);
                    if self.brokers[index].running {
                        self.heartbeat(index, want_fence);
                    }
                }
                60..=69 => self.brokers[index].running = false,
                70..=79 => {
                    if !self.brokers[index].running {
                        let simulated = &mut self.brokers[index];
                        simulated.running = true;
                        simulated.incarnation = Uuid::from_u128(u128::from(self.rng.next_u64()));
                        simulated.epoch = None;
                        self.register(index);
                    }
                }
                80..=88 => self.expire(),
                89..=92 => self.alter_partition(),
                93 | 94 => self.controlled_shutdown(index),
                95 => self.switch_unclean(),
                _ => {
                    // Another controller takes over: it knows no contact
                    // times nor shutdowns and gives every broker a fresh
                    // session.
                    self.sessions = BrokerSessions::new(
                        Duration::from_millis(SESSION_TIMEOUT_MS as u64),
                        self.unclean_default,
                    );
                    self.sessions.activate(&self.image, self.now_ms);
                    self.shutting_down.clear();
                    let now = self.now_ms;
                    for broker in &mut self.brokers {
                        if self.image.brokers.contains_key(&broker.id) {
                            broker.last_contact_ms = Some(now);
                        }
                    }
                }
            }
        }
    }

    /// A heartbeat with the current epoch that must unfence the broker.
    fn heartbeat_current(&mut self, index: usize) {
        let broker = self.brokers[index].clone();
        let epoch = broker.epoch.expect("registered");
        let records = self
            .sessions
            .heartbeat(
                &self.image,
                Heartbeat {
                    broker_id: broker.id,
                    epoch,
                    caught_up: true,
                    want_fence: false,
                },
                self.now_ms,
            )
            .expect("a current heartbeat is accepted");
        self.commit(&records);
        assert!(!self.image.brokers[&broker.id].fenced, "{}", self.context());
    }
}

/// `name`'s `unclean.leader.election.enable` set to `value`, or removed.
fn unclean_config(name: &str, value: Option<bool>) -> MetadataRecord {
    MetadataRecord::Config(ConfigRecord {
        resource_type: ConfigResourceType::Topic,
        resource_name: name.to_owned(),
        name: UNCLEAN_LEADER_ELECTION_ENABLE.to_owned(),
        value: value.map(|value| value.to_string()),
    })
}

#[test]
fn brokers_sessions_and_leaders_stay_consistent_through_crashes_and_failovers() {
    run_model_seeds(DEFAULTS, |seed, steps| Simulation::new(seed).run(steps));
}
