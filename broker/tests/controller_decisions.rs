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
//! fenced; the controller expiring sessions; a new active controller that
//! knows no contact times. Time is the simulation's.
//!
//! Checked after every step: a partition's leader is an unfenced member of
//! its ISR, or there is none only when no ISR member is unfenced; ISRs never
//! empty; the leader epoch moves up by one exactly when the leader changes
//! and the partition epoch never goes back; a broker heard from within the
//! session timeout is never fenced by expiry; one not heard from for longer
//! is fenced by it; duplicate and stale requests are refused as Kafka does.
//!
//! `FJORD_MODEL_SEED=<n>` replays one seed; `FJORD_MODEL_CASES=<n>` sets how
//! many seeds run; `FJORD_MODEL_STEPS=<n>` the steps per seed.

use std::time::Duration;

use fjord_broker::controller::liveness::{
    BrokerSessions, Heartbeat, LivenessError, Registered, Registration,
};
use fjord_broker::controller::new_partitions;
use fjord_broker::metadata::records::{
    BrokerEndpoint, BrokerEpoch, BrokerId, MetadataRecord, TopicId, TopicRecord,
};
use fjord_broker::metadata::MetadataImage;
use fjord_engine::testkit::{run_model_seeds, Rng, SeedRuns};
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
        Self {
            seed,
            step: 0,
            rng,
            now_ms: 1_000_000,
            image: MetadataImage::default(),
            sessions: BrokerSessions::new(Duration::from_millis(SESSION_TIMEOUT_MS as u64)),
            brokers,
            next_epoch: 1,
        }
    }

    fn context(&self) -> String {
        format!("seed {} step {} (t={})", self.seed, self.step, self.now_ms)
    }

    /// Applies `records` to the image one by one, checking the invariants
    /// that relate each image to the one before, then the leaders.
    fn commit(&mut self, records: &[MetadataRecord]) {
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
                    }
                    assert!(new.partition_epoch >= old.partition_epoch, "{context}");
                }
            }
            self.image = next;
        }
        self.check_leaders();
    }

    fn check_leaders(&self) {
        let live = |id: BrokerId| self.image.brokers.get(&id).is_some_and(|b| !b.fenced);
        for (name, topic) in &self.image.topics {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let context = format!("{}: {name}-{index} {partition:?}", self.context());
                assert!(!partition.isr.is_empty(), "{context}: empty ISR");
                if partition.leader == BrokerId::NONE {
                    assert!(
                        !partition.isr.iter().any(|&member| live(member)),
                        "{context}: leaderless with a live ISR member"
                    );
                } else {
                    assert!(partition.isr.contains(&partition.leader), "{context}");
                    assert!(live(partition.leader), "{context}: fenced leader");
                }
            }
        }
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
            self.commit(&records);
        }
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
                80..=94 => self.expire(),
                _ => {
                    // Another controller takes over: it knows no contact
                    // times and gives every broker a fresh session.
                    self.sessions =
                        BrokerSessions::new(Duration::from_millis(SESSION_TIMEOUT_MS as u64));
                    self.sessions.activate(&self.image, self.now_ms);
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

#[test]
fn brokers_sessions_and_leaders_stay_consistent_through_crashes_and_failovers() {
    run_model_seeds(DEFAULTS, |seed, steps| Simulation::new(seed).run(steps));
}
