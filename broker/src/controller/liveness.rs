//! Which brokers are alive: registrations, heartbeats and session expiry,
//! as KRaft's controller decides them, in a state machine that reads no
//! clock (the caller passes the time) and does no I/O (it returns the
//! records to commit), so the simulation drives the controller's own code.
//!
//! A broker registers (node id, a random incarnation id per process, its
//! listeners and rack) and gets a new broker epoch, fenced. It heartbeats
//! every `broker.heartbeat.interval.ms` with its epoch; once it reports that
//! it has caught up with the metadata log, it is unfenced (and leads the
//! partitions left leaderless that it can lead). A broker with no heartbeat
//! for `broker.session.timeout.ms` is fenced, which moves its leaderships
//! away ([`super::election`]). A registration with another incarnation for
//! a node id whose session is still live is refused (two processes with
//! one `node.id`); the same incarnation registering again gets its epoch
//! back (a retried request). Contact times are the active controller's
//! memory, not records: a controller that takes over gives every broker a
//! fresh session ([`BrokerSessions::activate`]), as Kafka's does.
//!
//! A broker shutting down asks for a controlled shutdown
//! ([`BrokerSessions::controlled_shutdown`]): its leaderships move to other
//! ISR members and it leaves the ISRs ([`super::election`]), and until it
//! is fenced or registers again it is neither elected nor let into an ISR.
//! That mark, too, is the active controller's memory, as in Kafka's
//! `BrokerHeartbeatManager`: a controller that takes over has none, and
//! the broker, which asks until it leads nothing it could hand over, asks
//! the new one again.

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::election::{after_controlled_shutdown, after_fencing, after_unfencing, ElectionRules};
use crate::metadata::records::{
    BrokerCoresRecord, BrokerEndpoint, BrokerEpoch, BrokerFencingRecord, BrokerId, MetadataRecord,
    RegisterBrokerRecord,
};
use crate::metadata::MetadataImage;

/// A broker's registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Its `node.id`.
    pub broker_id: BrokerId,
    /// Random per broker process.
    pub incarnation_id: Uuid,
    /// Its listeners.
    pub endpoints: Vec<BrokerEndpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// How many cores (shards) it runs.
    pub cores: u32,
}

/// A broker's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Its `node.id`.
    pub broker_id: BrokerId,
    /// The epoch its registration got.
    pub epoch: BrokerEpoch,
    /// Whether it has replayed the metadata log up to its registration.
    pub caught_up: bool,
    /// Whether it asks to be fenced.
    pub want_fence: bool,
}

/// What a registration decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A retry of the current registration: its epoch, nothing to commit.
    Existing(BrokerEpoch),
    /// A new registration: these records to commit (the registration, fenced,
    /// then the elections that move the previous registration's leaderships
    /// away if it was unfenced).
    New {
        /// The new epoch.
        epoch: BrokerEpoch,
        /// The records to commit.
        records: Vec<MetadataRecord>,
    },
}

/// Why a registration or heartbeat is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LivenessError {
    /// Another process registered this node id and its session is live
    /// (Kafka's `DUPLICATE_BROKER_REGISTRATION`).
    #[error("Another broker is registered with that broker id: {broker}.")]
    DuplicateRegistration {
        /// The node id.
        broker: BrokerId,
    },
    /// A heartbeat from a node id with no registration (Kafka's
    /// `BROKER_ID_NOT_REGISTERED`).
    #[error("Broker {broker} is not registered.")]
    NotRegistered {
        /// The node id.
        broker: BrokerId,
    },
    /// A heartbeat with another epoch than the registration's (Kafka's
    /// `STALE_BROKER_EPOCH`).
    #[error("Broker {broker} heartbeats with epoch {epoch}, not its registration's {current}.")]
    StaleEpoch {
        /// The node id.
        broker: BrokerId,
        /// The heartbeat's epoch.
        epoch: BrokerEpoch,
        /// The registration's.
        current: BrokerEpoch,
    },
}

/// The active controller's view of broker sessions.
#[derive(Clone, Debug)]
pub struct BrokerSessions {
    session_timeout_ms: i64,
    /// The last contact (registration or heartbeat) per broker, in the
    /// caller's milliseconds.
    last_contact_ms: BTreeMap<BrokerId, i64>,
    /// What elections go by: the brokers in controlled shutdown, and the
    /// broker default of `unclean.leader.election.enable`.
    rules: ElectionRules,
}

impl BrokerSessions {
    /// Sessions that expire after `session_timeout` without contact, with
    /// `unclean_leader_election_default` for topics that do not set
    /// `unclean.leader.election.enable`.
    #[must_use]
    pub fn new(session_timeout: Duration, unclean_leader_election_default: bool) -> Self {
        Self {
            session_timeout_ms: i64::try_from(session_timeout.as_millis()).unwrap_or(i64::MAX),
            last_contact_ms: BTreeMap::new(),
            rules: ElectionRules {
                shutting_down: std::collections::BTreeSet::new(),
                unclean_leader_election_default,
            },
        }
    }

    /// What elections go by now.
    #[must_use]
    pub fn rules(&self) -> &ElectionRules {
        &self.rules
    }

    /// Gives every broker registered in `image` a fresh session from
    /// `now_ms`: this controller just became active and knows no contact,
    /// nor which brokers are shutting down.
    pub fn activate(&mut self, image: &MetadataImage, now_ms: i64) {
        self.last_contact_ms = image.brokers.keys().map(|&id| (id, now_ms)).collect();
        self.rules.shutting_down.clear();
    }

    /// Ends `broker`'s session: the caller knows its process is gone (the
    /// active controller restarted as that very node), so a registration
    /// of a new incarnation need not wait for the session to expire.
    pub fn forget(&mut self, broker: BrokerId) {
        self.last_contact_ms.remove(&broker);
    }

    /// Whether `broker` is registered unfenced in `image` with a session
    /// that has not expired by `now_ms`: another process claiming its node
    /// id must wait.
    #[must_use]
    pub fn is_live(&self, image: &MetadataImage, broker: BrokerId, now_ms: i64) -> bool {
        image
            .brokers
            .get(&broker)
            .is_some_and(|registration| !registration.fenced)
            && self.session_live(broker, now_ms)
    }

    fn session_live(&self, broker: BrokerId, now_ms: i64) -> bool {
        self.last_contact_ms
            .get(&broker)
            .is_some_and(|&last| now_ms.saturating_sub(last) <= self.session_timeout_ms)
    }

    /// A registration: refused if another incarnation of the node id has a
    /// live session, the current epoch if it is a retry, else a new
    /// registration with `next_epoch` (which the caller makes larger than
    /// any epoch given before).
    ///
    /// # Errors
    /// [`LivenessError::DuplicateRegistration`].
    pub fn register(
        &mut self,
        image: &MetadataImage,
        registration: Registration,
        next_epoch: BrokerEpoch,
        now_ms: i64,
    ) -> Result<Registered, LivenessError> {
        let broker = registration.broker_id;
        let current = image.brokers.get(&broker);
        if let Some(current) = current {
            if current.incarnation_id == registration.incarnation_id {
                self.last_contact_ms.insert(broker, now_ms);
                return Ok(Registered::Existing(current.epoch));
            }
            if !current.fenced && self.session_live(broker, now_ms) {
                return Err(LivenessError::DuplicateRegistration { broker });
            }
        }
        let was_unfenced = current.is_some_and(|current| !current.fenced);
        self.rules.shutting_down.remove(&broker);
        let record = MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: broker,
            incarnation_id: registration.incarnation_id.into_bytes(),
            broker_epoch: next_epoch,
            endpoints: registration.endpoints,
            rack: registration.rack,
            fenced: true,
        });
        let cores = MetadataRecord::BrokerCores(BrokerCoresRecord {
            id: broker,
            epoch: next_epoch,
            cores: registration.cores,
        });
        let mut records = vec![record, cores];
        if was_unfenced {
            let rules = &self.rules;
            records.extend(follow_up(image, &records, |after| {
                after_fencing(after, rules, broker)
            }));
        }
        self.last_contact_ms.insert(broker, now_ms);
        Ok(Registered::New {
            epoch: next_epoch,
            records,
        })
    }

    /// A heartbeat: renews the session; unfences the broker once it has
    /// caught up (unless it asks to stay fenced), fences it if it asks.
    /// Returns the records to commit, if any.
    ///
    /// # Errors
    /// [`LivenessError::NotRegistered`], [`LivenessError::StaleEpoch`].
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        heartbeat: Heartbeat,
        now_ms: i64,
    ) -> Result<Vec<MetadataRecord>, LivenessError> {
        let broker = heartbeat.broker_id;
        let current = self.contact(image, broker, heartbeat.epoch, now_ms)?;
        let fencing = BrokerFencingRecord {
            id: broker,
            epoch: current.epoch,
        };
        Ok(match (current.fenced, heartbeat.want_fence) {
            (true, false) if heartbeat.caught_up => {
                let records = vec![MetadataRecord::UnfenceBroker(fencing)];
                let elections = follow_up(image, &records, |after| {
                    after_unfencing(after, &self.rules, broker)
                });
                records.into_iter().chain(elections).collect()
            }
            (false, true) => self.fence(image, fencing),
            _ => Vec::new(),
        })
    }

    /// A controlled shutdown: renews the session, marks the broker as
    /// shutting down (until it is fenced or registers again) and returns
    /// the records that move its leaderships away and take it out of the
    /// ISRs ([`after_controlled_shutdown`]); nothing for a fenced broker,
    /// which leads nothing. A retry (or a request to a controller that
    /// took over) returns what is left to move.
    ///
    /// # Errors
    /// [`LivenessError::NotRegistered`], [`LivenessError::StaleEpoch`].
    pub fn controlled_shutdown(
        &mut self,
        image: &MetadataImage,
        broker: BrokerId,
        epoch: BrokerEpoch,
        now_ms: i64,
    ) -> Result<Vec<MetadataRecord>, LivenessError> {
        if self.contact(image, broker, epoch, now_ms)?.fenced {
            return Ok(Vec::new());
        }
        self.rules.shutting_down.insert(broker);
        Ok(after_controlled_shutdown(image, &self.rules, broker))
    }

    /// Renews `broker`'s session for a request carrying `epoch`, and
    /// returns its registration.
    fn contact<'a>(
        &mut self,
        image: &'a MetadataImage,
        broker: BrokerId,
        epoch: BrokerEpoch,
        now_ms: i64,
    ) -> Result<&'a crate::metadata::BrokerRegistration, LivenessError> {
        let current = image
            .brokers
            .get(&broker)
            .ok_or(LivenessError::NotRegistered { broker })?;
        if current.epoch != epoch {
            return Err(LivenessError::StaleEpoch {
                broker,
                epoch,
                current: current.epoch,
            });
        }
        self.last_contact_ms.insert(broker, now_ms);
        Ok(current)
    }

    /// Fences every unfenced broker whose session expired by `now_ms`, in
    /// node id order, each with the elections that follow.
    #[must_use]
    pub fn expire(&mut self, image: &MetadataImage, now_ms: i64) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let mut current = image.clone();
        for registration in image.brokers.values() {
            if registration.fenced || self.session_live(registration.id, now_ms) {
                continue;
            }
            let fencing = self.fence(
                &current,
                BrokerFencingRecord {
                    id: registration.id,
                    epoch: registration.epoch,
                },
            );
            if let Ok(next) = current.apply(&fencing) {
                current = next;
                records.extend(fencing);
            }
        }
        records
    }

    /// The fencing record and the elections that follow it; a fenced
    /// broker's controlled shutdown is over.
    fn fence(
        &mut self,
        image: &MetadataImage,
        fencing: BrokerFencingRecord,
    ) -> Vec<MetadataRecord> {
        let broker = fencing.id;
        self.rules.shutting_down.remove(&broker);
        let records = vec![MetadataRecord::FenceBroker(fencing)];
        let elections = follow_up(image, &records, |after| {
            after_fencing(after, &self.rules, broker)
        });
        records.into_iter().chain(elections).collect()
    }
}

/// What `decide` makes of `image` after `records`; nothing if they do not
/// apply (the caller's commit then reports why).
fn follow_up(
    image: &MetadataImage,
    records: &[MetadataRecord],
    decide: impl FnOnce(&MetadataImage) -> Vec<MetadataRecord>,
) -> Vec<MetadataRecord> {
    image
        .apply(records)
        .map_or_else(|_| Vec::new(), |after| decide(&after))
}
