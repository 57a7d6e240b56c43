//! KIP-848 consumer groups (`group.protocol=consumer`): the coordinator
//! assigns partitions itself and members converge by heartbeats
//! (ConsumerGroupHeartbeat), no join/sync barrier.
//!
//! Three epochs order everything: the group epoch grows with every change
//! of membership, subscriptions or subscribed topics' partitions; the
//! target assignment is recomputed for it (its epoch then equals the
//! group's); a member reaches the target epoch once it owns no partition
//! the target gives to someone else. A partition moves in two steps: its
//! owner is first told to drop it (its epoch stays) and reports it gone in
//! a later heartbeat; only then is it handed to its new owner, so no
//! partition ever has two owners.
//!
//! Assignors (`group.consumer.assignors`): `uniform` (balanced and sticky:
//! members keep what they have up to their share, the rest goes to the
//! least loaded subscriber) and `range` (per topic, contiguous ranges in
//! member id order). Membership is not written to `__consumer_offsets`
//! (offsets are): after a coordinator restart members get
//! `UNKNOWN_MEMBER_ID` and rejoin with epoch 0, which clients handle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignors served, in Kafka's short names.
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Most topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// One member.
#[derive(Clone, Debug)]
pub struct ConsumerMember {
    /// Its epoch.
    pub epoch: i32,
    /// The epoch before the last change (a heartbeat whose answer was lost
    /// may still carry it).
    pub previous_epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Subscribed topic names.
    pub subscribed: BTreeSet<String>,
    /// The assignor it asked for.
    pub server_assignor: Option<String>,
    /// How long it may take to revoke.
    pub rebalance_timeout: Duration,
    /// When it last heartbeated.
    pub last_heartbeat: Instant,
    /// What it owns now (told to it).
    pub assigned: Assignment,
    /// What it was told to drop and has not yet reported dropped.
    pub revoking: Assignment,
    /// When it was told to drop them: a member that holds on to them past
    /// its rebalance timeout is removed, so the others are not starved.
    revoking_since: Option<Instant>,
    /// The assignment last sent, to send only changes.
    last_sent: Option<Assignment>,
}

/// The consumer-protocol state of a group.
#[derive(Clone, Debug, Default)]
pub struct ConsumerGroup {
    /// The group epoch.
    pub epoch: i32,
    /// The epoch of the target assignment.
    pub assignment_epoch: i32,
    /// Members by id.
    pub members: BTreeMap<String, ConsumerMember>,
    /// The target assignment by member.
    pub target: BTreeMap<String, Assignment>,
    /// The assignor the target was computed with.
    pub assignor: String,
    /// Subscribed topics as last seen: name -> (id, partitions).
    subscribed_topics: BTreeMap<String, (Uuid, i32)>,
}

/// What a ConsumerGroupHeartbeat carries.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// Member id (empty: the coordinator makes one).
    pub member_id: String,
    /// 0 to join, -1 to leave, -2 for a static member leaving for now.
    pub epoch: i32,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Subscribed topics, `None` if unchanged.
    pub subscribed: Option<BTreeSet<String>>,
    /// Server assignor, `None` if unchanged.
    pub server_assignor: Option<String>,
    /// Partitions owned, `None` if unchanged.
    pub owned: Option<Assignment>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member id.
    pub member_id: String,
    /// Its epoch.
    pub epoch: i32,
    /// Its assignment, if it changed.
    pub assignment: Option<Assignment>,
}

/// A failed heartbeat.
pub type HeartbeatError = (ResponseError, String);

fn union_into(into: &mut Assignment, from: &Assignment) {
    for (topic, partitions) in from {
        into.entry(*topic).or_default().extend(partitions);
    }
}

fn subtract(from: &Assignment, minus: &Assignment) -> Assignment {
    from.iter()
        .map(|(topic, partitions)| {
            let left: BTreeSet<i32> = match minus.get(topic) {
                Some(minus) => partitions.difference(minus).copied().collect(),
                None => partitions.clone(),
            };
            (*topic, left)
        })
        .filter(|(_, partitions)| !partitions.is_empty())
        .collect()
}

fn intersect(left: &Assignment, right: &Assignment) -> Assignment {
    left.iter()
        .filter_map(|(topic, partitions)| {
            let common: BTreeSet<i32> = partitions
                .intersection(right.get(topic)?)
                .copied()
                .collect();
            (!common.is_empty()).then_some((*topic, common))
        })
        .collect()
}

/// Whether the name is one of [`ASSIGNORS`] (or Kafka's class name of one).
#[must_use]
pub fn assignor_name(name: &str) -> Option<&'static str> {
    let short = name
        .rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_end_matches("Assignor")
        .to_lowercase();
    ASSIGNORS.into_iter().find(|known| *known == short)
}

impl ConsumerGroup {
    /// Whether it has no member.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's state name for consumer groups.
    #[must_use]
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|member| member.epoch != self.assignment_epoch || !member.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Handles one heartbeat. `topics` resolves a topic name to its id and
    /// partition count; `assignors` are the configured ones, the first the
    /// default.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID`, `FENCED_MEMBER_EPOCH`, `UNSUPPORTED_ASSIGNOR`,
    /// `INVALID_REQUEST` (joining without a subscription), with a message.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        topics: &dyn Fn(&str) -> Option<(Uuid, i32)>,
        assignors: &[String],
        now: Instant,
    ) -> Result<HeartbeatAnswer, HeartbeatError> {
        if let Some(assignor) = &request.server_assignor {
            if !assignors
                .iter()
                .any(|known| assignor_name(assignor) == Some(known.as_str()))
            {
                return Err((
                    ResponseError::UnsupportedAssignor,
                    format!("assignor {assignor} is not one of {assignors:?}"),
                ));
            }
        }
        if request.epoch < 0 {
            if self.members.remove(&request.member_id).is_some() {
                self.target.remove(&request.member_id);
                self.epoch += 1;
            }
            return Ok(HeartbeatAnswer {
                member_id: request.member_id,
                epoch: request.epoch,
                assignment: None,
            });
        }
        let member_id = if request.epoch == 0 {
            self.join(&request, now)?
        } else {
            self.check_epoch(&request)?;
            request.member_id.clone()
        };
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err((ResponseError::UnknownMemberId, "unknown member".to_owned()));
        };
        member.last_heartbeat = now;
        member.rebalance_timeout = request.rebalance_timeout;
        if request.rack_id.is_some() {
            member.rack_id.clone_from(&request.rack_id);
        }
        if request.server_assignor.is_some() {
            member.server_assignor.clone_from(&request.server_assignor);
        }
        let mut changed = false;
        if let Some(subscribed) = request.subscribed {
            if subscribed.len() > SUBSCRIBED_TOPICS_MAX {
                return Err((ResponseError::InvalidRequest, "too many topics".to_owned()));
            }
            changed |= member.subscribed != subscribed;
            member.subscribed = subscribed;
        }
        if let Some(owned) = &request.owned {
            member.revoking = intersect(&member.revoking, owned);
            if member.revoking.is_empty() {
                member.revoking_since = None;
            }
        }
        if changed {
            self.epoch += 1;
        }
        self.refresh_topics(topics);
        if self.assignment_epoch < self.epoch {
            self.compute_target(assignors);
        }
        self.reconcile(&member_id, now);
        let member = self
            .members
            .get_mut(&member_id)
            .ok_or((ResponseError::UnknownMemberId, "unknown member".to_owned()))?;
        let out_of_sync = request
            .owned
            .as_ref()
            .is_some_and(|owned| *owned != member.assigned);
        let assignment = (request.epoch == 0
            || out_of_sync
            || member.last_sent.as_ref() != Some(&member.assigned))
        .then(|| member.assigned.clone());
        if assignment.is_some() {
            member.last_sent = Some(member.assigned.clone());
        }
        Ok(HeartbeatAnswer {
            member_id,
            epoch: member.epoch,
            assignment,
        })
    }

    fn join(&mut self, request: &Heartbeat, now: Instant) -> Result<String, HeartbeatError> {
        let Some(subscribed) = &request.subscribed else {
            return Err((
                ResponseError::InvalidRequest,
                "a joining member must name its subscription".to_owned(),
            ));
        };
        let member_id = if request.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            request.member_id.clone()
        };
        // A static member coming back takes over its old self's partitions.
        let mut inherited = Assignment::new();
        if let Some(instance) = &request.instance_id {
            let previous: Vec<String> = self
                .members
                .iter()
                .filter(|(id, member)| {
                    member.instance_id.as_deref() == Some(instance) && **id != member_id
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in previous {
                if let Some(old) = self.members.remove(&id) {
                    inherited = old.assigned;
                }
                if let Some(target) = self.target.remove(&id) {
                    self.target.insert(member_id.clone(), target);
                }
            }
        }
        if self.members.len() >= super::group::MEMBERS_MAX && !self.members.contains_key(&member_id)
        {
            return Err((
                ResponseError::GroupMaxSizeReached,
                "the group is full".to_owned(),
            ));
        }
        let epoch = if inherited.is_empty() {
            0
        } else {
            self.assignment_epoch
        };
        self.members.insert(
            member_id.clone(),
            ConsumerMember {
                epoch,
                previous_epoch: 0,
                instance_id: request.instance_id.clone(),
                rack_id: request.rack_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                subscribed: subscribed.clone(),
                server_assignor: request.server_assignor.clone(),
                rebalance_timeout: request.rebalance_timeout,
                last_heartbeat: now,
                assigned: inherited,
                revoking: Assignment::new(),
                revoking_since: None,
                last_sent: None,
            },
        );
        self.epoch += 1;
        Ok(member_id)
    }

    fn check_epoch(&self, request: &Heartbeat) -> Result<(), HeartbeatError> {
        let Some(member) = self.members.get(&request.member_id) else {
            return Err((ResponseError::UnknownMemberId, "unknown member".to_owned()));
        };
        let previous_ok = request.epoch == member.previous_epoch
            && request
                .owned
                .as_ref()
                .is_none_or(|owned| subtract(owned, &member.assigned).is_empty());
        if request.epoch != member.epoch && !previous_ok {
            return Err((
                ResponseError::FencedMemberEpoch,
                format!(
                    "member epoch {} is not the current {}",
                    request.epoch, member.epoch
                ),
            ));
        }
        Ok(())
    }

    /// Bumps the group epoch when a subscribed topic appeared, vanished or
    /// grew.
    fn refresh_topics(&mut self, topics: &dyn Fn(&str) -> Option<(Uuid, i32)>) {
        let names: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|member| member.subscribed.iter())
            .collect();
        let seen: BTreeMap<String, (Uuid, i32)> = names
            .into_iter()
            .filter_map(|name| Some((name.clone(), topics(name)?)))
            .collect();
        if seen != self.subscribed_topics {
            self.subscribed_topics = seen;
            self.epoch += 1;
        }
    }

    /// Recomputes the target assignment for the current epoch.
    fn compute_target(&mut self, assignors: &[String]) {
        let assignor = self.choose_assignor(assignors);
        let mut target: BTreeMap<String, Assignment> = self
            .members
            .keys()
            .map(|id| (id.clone(), Assignment::new()))
            .collect();
        if assignor == "range" {
            for (name, (id, partitions)) in &self.subscribed_topics {
                let subscribers: Vec<&String> = self
                    .members
                    .iter()
                    .filter(|(_, member)| member.subscribed.contains(name))
                    .map(|(member_id, _)| member_id)
                    .collect();
                let count = i32::try_from(subscribers.len()).unwrap_or(i32::MAX).max(1);
                let (share, extra) = (partitions / count, partitions % count);
                let mut next = 0;
                for (index, member_id) in (0..).zip(subscribers) {
                    let take = share + i32::from(index < extra);
                    let owned = target.entry(member_id.clone()).or_default();
                    owned.entry(*id).or_default().extend(next..next + take);
                    next += take;
                }
            }
        } else {
            self.uniform(&mut target);
        }
        for owned in target.values_mut() {
            owned.retain(|_, partitions| !partitions.is_empty());
        }
        self.target = target;
        self.assignor = assignor;
        self.assignment_epoch = self.epoch;
    }

    fn choose_assignor(&self, assignors: &[String]) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = member.server_assignor.as_deref().and_then(assignor_name) {
                *votes.entry(name).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| name.to_owned())
            .or_else(|| assignors.first().cloned())
            .unwrap_or_else(|| ASSIGNORS[0].to_owned())
    }

    /// Balanced and sticky: every member keeps what its previous target gave
    /// it up to its share, then each unassigned partition goes to the least
    /// loaded member subscribing to its topic.
    fn uniform(&self, target: &mut BTreeMap<String, Assignment>) {
        let all: Vec<(String, Uuid, i32)> = self
            .subscribed_topics
            .iter()
            .flat_map(|(name, (id, partitions))| (0..*partitions).map(|p| (name.clone(), *id, p)))
            .collect();
        let members = self.members.len().max(1);
        let (share, mut extra) = (all.len() / members, all.len() % members);
        let mut taken: BTreeSet<(Uuid, i32)> = BTreeSet::new();
        let mut by_load: Vec<(&String, Vec<(Uuid, i32)>)> = self
            .members
            .iter()
            .map(|(id, member)| {
                let kept: Vec<(Uuid, i32)> = self
                    .target
                    .get(id)
                    .into_iter()
                    .flatten()
                    .flat_map(|(topic, partitions)| partitions.iter().map(|p| (*topic, *p)))
                    .filter(|(topic, partition)| {
                        self.subscribed_topics.iter().any(|(name, (known, count))| {
                            known == topic && partition < count && member.subscribed.contains(name)
                        })
                    })
                    .collect();
                (id, kept)
            })
            .collect();
        by_load.sort_by_key(|(_, kept)| std::cmp::Reverse(kept.len()));
        for (id, kept) in by_load {
            let limit = share + usize::from(extra > 0);
            let keep: Vec<_> = kept.into_iter().take(limit).collect();
            if keep.len() > share {
                extra -= 1;
            }
            let owned = target.entry(id.clone()).or_default();
            for (topic, partition) in keep {
                if taken.insert((topic, partition)) {
                    owned.entry(topic).or_default().insert(partition);
                }
            }
        }
        for (name, topic, partition) in all {
            if taken.contains(&(topic, partition)) {
                continue;
            }
            let least_loaded = self
                .members
                .iter()
                .filter(|(_, member)| member.subscribed.contains(&name))
                .map(|(id, _)| id)
                .min_by_key(|id| {
                    target
                        .get(*id)
                        .map_or(0, |owned| owned.values().map(BTreeSet::len).sum::<usize>())
                });
            if let Some(id) = least_loaded {
                target
                    .entry(id.clone())
                    .or_default()
                    .entry(topic)
                    .or_default()
                    .insert(partition);
            }
        }
    }

    /// Moves `member_id` one step towards its target: first drop what
    /// goes elsewhere, then, once dropped, take what is free.
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let desired = self.target.get(member_id).cloned().unwrap_or_default();
        let mut held_by_others = Assignment::new();
        for (id, other) in &self.members {
            if id != member_id {
                union_into(&mut held_by_others, &other.assigned);
                union_into(&mut held_by_others, &other.revoking);
            }
        }
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return;
        };
        if !member.revoking.is_empty() {
            return;
        }
        let to_revoke = subtract(&member.assigned, &desired);
        if !to_revoke.is_empty() {
            member.assigned = intersect(&member.assigned, &desired);
            member.revoking = to_revoke;
            member.revoking_since = Some(now);
            return;
        }
        member.assigned = subtract(&desired, &held_by_others);
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
    }

    /// Removes members whose session lapsed or that kept partitions to
    /// revoke past their rebalance timeout; returns whether any was.
    pub fn expire_members(&mut self, session_timeout: Duration, now: Instant) -> bool {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                member.last_heartbeat + session_timeout <= now
                    || member
                        .revoking_since
                        .is_some_and(|since| since + member.rebalance_timeout <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "consumer group member session expired");
            self.members.remove(id);
            self.target.remove(id);
        }
        if !expired.is_empty() {
            self.epoch += 1;
        }
        !expired.is_empty()
    }

    /// For OffsetCommit: `member_id` at `epoch` may commit.
    ///
    /// # Errors
    /// `UNKNOWN_MEMBER_ID` or `STALE_MEMBER_EPOCH`.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        let member = self
            .members
            .get(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if epoch != member.epoch && epoch != member.previous_epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn topics(name: &str) -> Option<(Uuid, i32)> {
        (name == "t").then_some((TOPIC, 6))
    }

    fn join(group: &mut ConsumerGroup, id: &str, now: Instant) -> HeartbeatAnswer {
        group
            .heartbeat(
                Heartbeat {
                    member_id: id.to_owned(),
                    epoch: 0,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout: Duration::from_secs(30),
                    subscribed: Some(["t".to_owned()].into()),
                    server_assignor: None,
                    owned: Some(Assignment::new()),
                    client_id: "c".to_owned(),
                    client_host: "/127.0.0.1".to_owned(),
                },
                &topics,
                &["uniform".to_owned(), "range".to_owned()],
                now,
            )
            .unwrap()
    }

    fn beat(
        group: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: &Assignment,
        now: Instant,
    ) -> HeartbeatAnswer {
        group
            .heartbeat(
                Heartbeat {
                    member_id: id.to_owned(),
                    epoch,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout: Duration::from_secs(30),
                    subscribed: None,
                    server_assignor: None,
                    owned: Some(owned.clone()),
                    client_id: "c".to_owned(),
                    client_host: "/127.0.0.1".to_owned(),
                },
                &topics,
                &["uniform".to_owned()],
                now,
            )
            .unwrap()
    }

    fn count(assignment: &Assignment) -> usize {
        assignment.values().map(BTreeSet::len).sum()
    }

    /// A second member gets its share only after the first reported
    /// dropping it: no partition has two owners at any step.
    #[test]
    fn partitions_move_only_after_their_owner_dropped_them() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        let first = join(&mut group, "a", now);
        let a_owned = first.assignment.clone().unwrap();
        assert_eq!(count(&a_owned), 6);
        let second = join(&mut group, "b", now);
        assert_eq!(
            second.assignment.as_ref().map(count),
            Some(0),
            "b waits for a to drop"
        );
        let told = beat(&mut group, "a", first.epoch, &a_owned, now);
        let a_now = told.assignment.unwrap();
        assert_eq!(count(&a_now), 3);
        // b still gets nothing while a has not confirmed.
        let still = beat(&mut group, "b", second.epoch, &Assignment::new(), now);
        assert!(still
            .assignment
            .is_none_or(|assignment| assignment.is_empty()));
        let confirmed = beat(&mut group, "a", told.epoch, &a_now, now);
        assert_eq!(confirmed.epoch, group.assignment_epoch);
        let b = beat(&mut group, "b", second.epoch, &Assignment::new(), now);
        let b_owned = b.assignment.unwrap();
        assert_eq!(count(&b_owned), 3);
        assert!(intersect(&a_now, &b_owned).is_empty());
        assert_eq!(group.state_name(), "Stable");
    }

    /// A heartbeat with an epoch the member never had is fenced.
    #[test]
    fn wrong_epochs_are_fenced() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        let joined = join(&mut group, "a", now);
        let error = group
            .heartbeat(
                Heartbeat {
                    member_id: "a".to_owned(),
                    epoch: joined.epoch + 5,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout: Duration::from_secs(30),
                    subscribed: None,
                    server_assignor: None,
                    owned: None,
                    client_id: "c".to_owned(),
                    client_host: String::new(),
                },
                &topics,
                &["uniform".to_owned()],
                now,
            )
            .unwrap_err();
        assert_eq!(error.0, ResponseError::FencedMemberEpoch);
    }

    /// A member told to drop partitions that never confirms is removed
    /// after its rebalance timeout, and its partitions go to the others.
    #[test]
    fn a_member_that_never_revokes_is_removed_after_its_rebalance_timeout() {
        let now = Instant::now();
        let mut group = ConsumerGroup::default();
        let first = join(&mut group, "a", now);
        join(&mut group, "b", now);
        let told = beat(
            &mut group,
            "a",
            first.epoch,
            &first.assignment.unwrap(),
            now,
        );
        assert_eq!(told.assignment.as_ref().map(count), Some(3));
        assert!(!group.expire_members(Duration::from_secs(45), now + Duration::from_secs(29)));
        assert!(group.expire_members(Duration::from_secs(45), now + Duration::from_secs(30)));
        assert_eq!(group.members.keys().collect::<Vec<_>>(), ["b"]);
        let b_epoch = group.members["b"].epoch;
        let b = beat(&mut group, "b", b_epoch, &Assignment::new(), now);
        assert_eq!(b.assignment.as_ref().map(count), Some(6));
    }

    #[test]
    fn assignor_names_accept_kafkas_class_names() {
        assert_eq!(
            assignor_name("org.apache.kafka.coordinator.group.assignor.UniformAssignor"),
            Some("uniform")
        );
        assert_eq!(assignor_name("range"), Some("range"));
        assert_eq!(assignor_name("sticky"), None);
    }
}
