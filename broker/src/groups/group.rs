//! One classic consumer group: Kafka's group state machine
//! (`Empty -> PreparingRebalance -> CompletingRebalance -> Stable`), its
//! members and its committed offsets, as plain data driven by the
//! coordinator under its partition's lock. Time is passed in (`now`), so the
//! transitions are deterministic and unit-tested; nothing here waits or
//! does I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use kafka_protocol::ResponseError;

use super::consumer::ConsumerGroup;
use super::records::{GroupValue, OffsetValue, StoredMember};

/// Most members (joined or awaiting their id) one group may hold; a join
/// beyond it gets `GROUP_MAX_SIZE_REACHED`.
pub const MEMBERS_MAX: usize = 1000;
/// Protocols one member may offer (consumers offer one per assignor).
pub const PROTOCOLS_MAX: usize = 32;

/// Kafka's group states, named as DescribeGroups and ListGroups report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// The name Kafka reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What a member's JoinGroup is answered with once the join phase ends.
#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    /// The new generation.
    pub generation: i32,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: every member (id, instance id, metadata of the
    /// selected protocol); empty for the others.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader need not assign (a static leader rejoined, KIP-814).
    pub skip_assignment: bool,
}

/// One member.
#[derive(Clone, Debug)]
pub struct Member {
    /// `group.instance.id` of a static member (KIP-345).
    pub instance_id: Option<String>,
    /// The client id.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `max.poll.interval.ms` for consumers: how long a rebalance waits.
    pub rebalance_timeout: Duration,
    /// The protocols it supports, in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Its assignment in the current generation.
    pub assignment: Bytes,
    /// When it last proved alive.
    pub last_heartbeat: Instant,
    /// It has (re)joined in the rebalance under way.
    pub awaiting_join: bool,
    /// Its JoinGroup answer, once the join phase completed.
    pub join_result: Option<JoinResult>,
}

/// A committed offset and where its record is in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The value stored.
    pub value: OffsetValue,
    /// The offset of its record in `__consumer_offsets`: of two commits
    /// racing, the one later in the log wins, as it would on a reload.
    pub record_offset: i64,
}

/// A member joining: what JoinGroup carries.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    /// Empty for a new member.
    pub member_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// Protocols with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// v4+: a new dynamic member first gets an id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a static leader that rejoins may skip the assignment.
    pub supports_skip_assignment: bool,
}

/// The immediate outcome of a join.
#[derive(Debug)]
pub enum JoinOutcome {
    /// Answer now.
    Done(Result<JoinResult, (ResponseError, String)>),
    /// The member (this id) waits for the join phase to complete.
    Wait(String),
    /// KIP-394: a new dynamic member gets this id and must join again
    /// with it (`MEMBER_ID_REQUIRED`).
    MemberIdRequired(String),
}

/// Timing settings of the coordinator.
#[derive(Clone, Copy, Debug)]
pub struct GroupTimings {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay: Duration,
}

/// A consumer group; see the module documentation.
#[derive(Debug)]
pub struct Group {
    /// The group id.
    pub id: String,
    /// The state.
    pub state: GroupState,
    /// The protocol type of its members, `None` for a group only used to
    /// commit offsets.
    pub protocol_type: Option<String>,
    /// The protocol selected in the current generation.
    pub protocol_name: Option<String>,
    /// The generation.
    pub generation: i32,
    /// The leader's member id.
    pub leader: Option<String>,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id -> member id.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out (KIP-394) but not joined yet, with their expiry.
    pending_members: HashMap<String, Instant>,
    /// When the join phase ends at the latest.
    join_deadline: Option<Instant>,
    /// While the first members of an empty group gather: no earlier end
    /// than the deadline, which each new member pushes back by the initial
    /// delay, up to this bound.
    initial_join_bound: Option<Instant>,
    /// Committed offsets.
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// When the state last changed (ms since the epoch), for expiry.
    pub state_timestamp_ms: i64,
    /// Notified on every change a JoinGroup or SyncGroup may wait for.
    pub changed: Arc<Event>,
    /// The KIP-848 state when the group uses the consumer protocol.
    pub consumer: Option<ConsumerGroup>,
}

fn now_ms() -> i64 {
    fjord_engine::TimestampMs::now().0
}

impl Group {
    /// A new empty group.
    #[must_use]
    pub fn new(id: String) -> Self {
        Self {
            id,
            state: GroupState::Empty,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            join_deadline: None,
            initial_join_bound: None,
            offsets: BTreeMap::new(),
            state_timestamp_ms: now_ms(),
            changed: Arc::new(Event::new()),
            consumer: None,
        }
    }

    /// A group as stored: with members it is Stable in its generation,
    /// every member given a full session to come back (as Kafka does after
    /// loading), so consumers survive a coordinator restart without a
    /// rebalance.
    #[must_use]
    pub fn from_stored(id: String, stored: GroupValue, now: Instant) -> Self {
        let mut group = Self::new(id);
        group.protocol_type = Some(stored.protocol_type).filter(|kind| !kind.is_empty());
        group.generation = stored.generation;
        group.protocol_name = stored.protocol;
        group.leader = stored.leader;
        group.state_timestamp_ms = stored.state_timestamp_ms;
        for member in stored.members {
            if let Some(instance) = &member.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            let protocol = group.protocol_name.clone().unwrap_or_default();
            group.members.insert(
                member.member_id,
                Member {
                    instance_id: member.instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    session_timeout: millis(member.session_timeout_ms),
                    rebalance_timeout: millis(member.rebalance_timeout_ms),
                    protocols: vec![(protocol, member.subscription)],
                    assignment: member.assignment,
                    last_heartbeat: now,
                    awaiting_join: false,
                    join_result: None,
                },
            );
        }
        group.state = if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        group
    }

    /// What is stored for this group.
    #[must_use]
    pub fn to_stored(&self) -> GroupValue {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .iter()
                .map(|(id, member)| StoredMember {
                    member_id: id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: duration_ms(member.rebalance_timeout),
                    session_timeout_ms: duration_ms(member.session_timeout),
                    subscription: member.metadata_for(protocol),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    fn set_state(&mut self, state: GroupState) {
        self.state = state;
        self.state_timestamp_ms = now_ms();
        self.changed.notify(usize::MAX);
    }

    /// Whether no member uses it, under either protocol.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
            && self.consumer.as_ref().is_none_or(ConsumerGroup::is_empty)
    }

    /// Whether it uses the consumer protocol (KIP-848).
    #[must_use]
    pub fn is_consumer_protocol(&self) -> bool {
        self.consumer.is_some()
    }

    /// The member id of a static instance, if registered.
    #[must_use]
    pub fn static_member(&self, instance_id: &str) -> Option<&String> {
        self.static_members.get(instance_id)
    }

    /// Kafka's check that `member_id` is the one registered for a static
    /// `instance_id`.
    ///
    /// # Errors
    /// `FENCED_INSTANCE_ID` if another member holds the instance id.
    pub fn check_fenced(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ResponseError> {
        match instance_id.and_then(|instance| self.static_members.get(instance)) {
            Some(registered) if registered != member_id => Err(ResponseError::FencedInstanceId),
            _ => Ok(()),
        }
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(other, _)| other == name))
            })
    }

    /// Handles a JoinGroup.
    #[allow(
        clippy::too_many_lines,
        reason = "Kafka's join cases read best together"
    )]
    pub fn join(
        &mut self,
        request: &JoinRequest,
        timings: GroupTimings,
        now: Instant,
    ) -> JoinOutcome {
        let fail = |error: ResponseError, message: &str| {
            JoinOutcome::Done(Err((error, message.to_owned())))
        };
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return fail(
                ResponseError::InconsistentGroupProtocol,
                "the member's protocols are incompatible with the group's",
            );
        }
        if request.member_id.is_empty() {
            if self.members.len() + self.pending_members.len() >= MEMBERS_MAX {
                return fail(ResponseError::GroupMaxSizeReached, "the group is full");
            }
            let new_id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            if let Some(instance) = request.instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.replace_static_member(&old_id, new_id, request, timings, now);
                }
                self.static_members.insert(instance, new_id.clone());
                self.add_member(new_id.clone(), request, timings, now);
                return JoinOutcome::Wait(new_id);
            }
            if request.require_known_member_id {
                self.pending_members
                    .insert(new_id.clone(), now + request.session_timeout);
                return JoinOutcome::MemberIdRequired(new_id);
            }
            self.add_member(new_id.clone(), request, timings, now);
            return JoinOutcome::Wait(new_id);
        }
        let member_id = request.member_id.clone();
        if self.pending_members.remove(&member_id).is_some() {
            self.add_member(member_id.clone(), request, timings, now);
            return JoinOutcome::Wait(member_id);
        }
        if let Err(error) = self.check_fenced(&member_id, request.instance_id.as_deref()) {
            return fail(error, "another member holds this group.instance.id");
        }
        let Some(member) = self.members.get_mut(&member_id) else {
            return fail(ResponseError::UnknownMemberId, "unknown member id");
        };
        member.last_heartbeat = now;
        let same_protocols = member.protocols == request.protocols;
        match self.state {
            GroupState::Empty => fail(ResponseError::UnknownMemberId, "the group is empty"),
            GroupState::PreparingRebalance => {
                self.update_member(&member_id, request);
                self.maybe_complete_join(now);
                JoinOutcome::Wait(member_id)
            }
            GroupState::CompletingRebalance if same_protocols => {
                JoinOutcome::Done(Ok(self.join_result_for(&member_id, false)))
            }
            GroupState::Stable if same_protocols && self.leader.as_deref() != Some(&member_id) => {
                JoinOutcome::Done(Ok(self.join_result_for(&member_id, false)))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(&member_id, request);
                self.prepare_rebalance(timings, now);
                self.maybe_complete_join(now);
                JoinOutcome::Wait(member_id)
            }
        }
    }

    /// KIP-345: a static member rejoins without its member id (it
    /// restarted). It gets a new id in place of the old, which is fenced;
    /// in a stable group with unchanged protocols it keeps its assignment
    /// and nobody rebalances.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        request: &JoinRequest,
        timings: GroupTimings,
        now: Instant,
    ) -> JoinOutcome {
        let Some(mut member) = self.members.remove(old_id) else {
            // Registered but gone: join as a new member.
            if let Some(instance) = request.instance_id.clone() {
                self.static_members.insert(instance, new_id.clone());
            }
            self.add_member(new_id.clone(), request, timings, now);
            return JoinOutcome::Wait(new_id);
        };
        let same_protocols = member.protocols == request.protocols;
        member.last_heartbeat = now;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.client_id.clone_from(&request.client_id);
        member.client_host.clone_from(&request.client_host);
        // An old JoinGroup still waiting learns it was fenced.
        member.join_result = None;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = request.instance_id.clone() {
            self.static_members.insert(instance, new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id);
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.changed.notify(usize::MAX);
        match self.state {
            GroupState::Stable if same_protocols => JoinOutcome::Done(Ok(
                self.join_result_for(&new_id, was_leader && request.supports_skip_assignment)
            )),
            GroupState::Stable if !was_leader || request.supports_skip_assignment => {
                self.update_member(&new_id, request);
                self.prepare_rebalance(timings, now);
                JoinOutcome::Wait(new_id)
            }
            GroupState::Empty | GroupState::PreparingRebalance => {
                self.update_member(&new_id, request);
                self.maybe_complete_join(now);
                JoinOutcome::Wait(new_id)
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.update_member(&new_id, request);
                self.prepare_rebalance(timings, now);
                JoinOutcome::Wait(new_id)
            }
        }
    }

    fn add_member(
        &mut self,
        member_id: String,
        request: &JoinRequest,
        timings: GroupTimings,
        now: Instant,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        self.members.insert(
            member_id,
            Member {
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocols: request.protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                awaiting_join: true,
                join_result: None,
            },
        );
        if self.state == GroupState::PreparingRebalance {
            if let (Some(bound), Some(deadline)) = (self.initial_join_bound, self.join_deadline) {
                self.join_deadline = Some((deadline + timings.initial_rebalance_delay).min(bound));
            }
        }
        self.prepare_rebalance(timings, now);
        self.maybe_complete_join(now);
    }

    fn update_member(&mut self, member_id: &str, request: &JoinRequest) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.protocols.clone_from(&request.protocols);
            member.session_timeout = request.session_timeout;
            member.rebalance_timeout = request.rebalance_timeout;
            member.awaiting_join = true;
            member.join_result = None;
        }
    }

    /// Starts a rebalance (no-op if one is gathering members already).
    pub fn prepare_rebalance(&mut self, timings: GroupTimings, now: Instant) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == GroupState::Empty {
            let delay = timings.initial_rebalance_delay.min(rebalance_timeout);
            self.join_deadline = Some(now + delay);
            self.initial_join_bound = Some(now + rebalance_timeout);
        } else {
            self.join_deadline = Some(now + rebalance_timeout);
            self.initial_join_bound = None;
        }
        for member in self.members.values_mut() {
            member.join_result = None;
        }
        self.set_state(GroupState::PreparingRebalance);
    }

    /// Ends the join phase if every member has rejoined (outside the
    /// initial delay) or the deadline passed: members that did not rejoin
    /// are removed, the generation advances, a protocol is chosen and every
    /// member gets its JoinGroup answer. Returns whether the group became
    /// empty (its new generation is then stored).
    pub fn maybe_complete_join(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let deadline_passed = self.join_deadline.is_none_or(|deadline| now >= deadline);
        let all_joined = self.initial_join_bound.is_none()
            && self.pending_members.is_empty()
            && self.members.values().all(|member| member.awaiting_join);
        if !deadline_passed && !all_joined {
            return false;
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| !member.awaiting_join)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.pending_members.clear();
        self.join_deadline = None;
        self.initial_join_bound = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.set_state(GroupState::Empty);
            return true;
        }
        self.protocol_name = self.select_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|leader| self.members.contains_key(leader))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id, false);
            if let Some(member) = self.members.get_mut(&id) {
                member.awaiting_join = false;
                member.assignment = Bytes::new();
                member.last_heartbeat = now;
                member.join_result = Some(result);
            }
        }
        self.set_state(GroupState::CompletingRebalance);
        false
    }

    /// The protocol every member supports with the most votes, each member
    /// voting for its most preferred candidate (Kafka's rule).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|member| member.protocols.iter().any(|(other, _)| other == *name))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = candidates.iter().map(|name| (*name, 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name))
            {
                if let Some(vote) = votes.iter_mut().find(|(candidate, _)| *candidate == name) {
                    vote.1 += 1;
                }
            }
        }
        // The first candidate wins ties (max_by_key keeps the last maximum).
        votes
            .iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| (*name).clone())
    }

    fn join_result_for(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResult {
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            protocol_type: self.protocol_type.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|(id, member)| {
                        (
                            id.clone(),
                            member.instance_id.clone(),
                            member.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment,
        }
    }

    /// Removes a member (left, expired, or not rejoined).
    pub fn remove_member(&mut self, member_id: &str) {
        if let Some(member) = self.members.remove(member_id) {
            if let Some(instance) = member.instance_id {
                if self.static_members.get(&instance).map(String::as_str) == Some(member_id) {
                    self.static_members.remove(&instance);
                }
            }
        }
        self.pending_members.remove(member_id);
        self.changed.notify(usize::MAX);
    }

    /// After members left: a rebalance, or the end of one under way.
    /// Returns whether the group became empty.
    pub fn rebalance_after_removal(&mut self, timings: GroupTimings, now: Instant) -> bool {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(timings, now);
                self.maybe_complete_join(now)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty => false,
        }
    }

    /// Applies the leader's SyncGroup assignments (members it left out get
    /// an empty one) and makes the group Stable.
    pub fn complete_sync(&mut self, assignments: &HashMap<String, Bytes>) {
        for (id, member) in &mut self.members {
            member.assignment = assignments.get(id).cloned().unwrap_or_default();
        }
        self.set_state(GroupState::Stable);
    }

    /// Expires members whose session lapsed and pending member ids never
    /// used, and ends a join phase past its deadline. Returns whether the
    /// group changed and whether it became empty.
    pub fn expire_members(&mut self, timings: GroupTimings, now: Instant) -> (bool, bool) {
        let before = self.pending_members.len();
        self.pending_members.retain(|_, expiry| *expiry > now);
        let mut changed = before != self.pending_members.len();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                !member.awaiting_join && member.last_heartbeat + member.session_timeout <= now
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = %self.id, member = %id, "session expired");
            self.remove_member(id);
        }
        let mut emptied = false;
        if !expired.is_empty() {
            changed = true;
            emptied = self.rebalance_after_removal(timings, now);
        } else if self.state == GroupState::PreparingRebalance {
            let generation = self.generation;
            emptied = self.maybe_complete_join(now);
            changed |= generation != self.generation;
        }
        (changed, emptied)
    }

    /// Records a committed offset unless a later record for it is known.
    pub fn apply_offset(&mut self, topic: String, partition: i32, committed: CommittedOffset) {
        let entry = self.offsets.entry((topic, partition));
        match entry {
            std::collections::btree_map::Entry::Occupied(mut occupied) => {
                if occupied.get().record_offset <= committed.record_offset {
                    occupied.insert(committed);
                }
            }
            std::collections::btree_map::Entry::Vacant(vacant) => {
                vacant.insert(committed);
            }
        }
    }

    /// The topics the members subscribe to, from their consumer-protocol
    /// subscriptions (for OffsetDelete's `GROUP_SUBSCRIBED_TO_TOPIC`).
    #[must_use]
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = Vec::new();
        for member in self.members.values() {
            let mut metadata = member.metadata_for(protocol);
            if metadata.len() < 2 {
                return None;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            let subscription =
                ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)).ok()?;
            topics.extend(subscription.topics.iter().map(ToString::to_string));
        }
        Some(topics)
    }
}

impl Member {
    /// Its metadata for `protocol`.
    #[must_use]
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn duration_ms(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMINGS: GroupTimings = GroupTimings {
        initial_rebalance_delay: Duration::from_secs(3),
    };
    const SESSION: Duration = Duration::from_secs(10);
    const REBALANCE: Duration = Duration::from_secs(30);

    fn request(member_id: &str, instance_id: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_owned(),
            instance_id: instance_id.map(str::to_owned),
            protocol_type: "consumer".to_owned(),
            protocols: protocols
                .iter()
                .map(|name| ((*name).to_owned(), Bytes::from(format!("{name}-metadata"))))
                .collect(),
            session_timeout: SESSION,
            rebalance_timeout: REBALANCE,
            client_id: "client".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    /// KIP-394: the first join only hands out an id; the second, with it,
    /// waits.
    fn join_dynamic(group: &mut Group, protocols: &[&str], now: Instant) -> String {
        let JoinOutcome::MemberIdRequired(id) =
            group.join(&request("", None, protocols), TIMINGS, now)
        else {
            panic!("a new dynamic member must first get MEMBER_ID_REQUIRED");
        };
        assert!(matches!(
            group.join(&request(&id, None, protocols), TIMINGS, now),
            JoinOutcome::Wait(ref waiting) if *waiting == id
        ));
        id
    }

    fn sync_all(group: &mut Group) {
        let assignments = group
            .members
            .keys()
            .map(|id| (id.clone(), Bytes::from(format!("assignment-of-{id}"))))
            .collect();
        group.complete_sync(&assignments);
    }

    /// A new group waits out the initial rebalance delay (more members may
    /// come) before its first generation, then elects a leader and a
    /// protocol every member supports, by vote.
    #[test]
    fn a_new_group_waits_the_initial_delay_then_picks_the_most_voted_common_protocol() {
        let start = Instant::now();
        let mut group = Group::new("g".to_owned());
        let first = join_dynamic(&mut group, &["range", "roundrobin"], start);
        let second = join_dynamic(&mut group, &["roundrobin", "range"], start);
        let third = join_dynamic(&mut group, &["roundrobin", "sticky"], start);
        assert!(!group.maybe_complete_join(start + Duration::from_millis(100)));
        assert_eq!(group.state, GroupState::PreparingRebalance);
        // Each new member pushed the deadline back by the delay (3 joins).
        group.maybe_complete_join(start + Duration::from_millis(9_001));
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert_eq!(group.generation, 1);
        assert_eq!(group.protocol_name.as_deref(), Some("roundrobin"));
        let leader = group.leader.clone().unwrap();
        for id in [&first, &second, &third] {
            let result = group
                .members
                .get_mut(id)
                .unwrap()
                .join_result
                .take()
                .unwrap();
            assert_eq!(result.generation, 1);
            assert_eq!(result.leader, leader);
            assert_eq!(result.members.len(), if *id == leader { 3 } else { 0 });
        }
    }

    /// A member whose session lapses is removed and the others rebalance;
    /// one that does not rejoin by the deadline is dropped.
    #[test]
    fn expired_sessions_and_members_that_do_not_rejoin_are_removed() {
        let start = Instant::now();
        let mut group = Group::new("g".to_owned());
        let a = join_dynamic(&mut group, &["range"], start);
        let b = join_dynamic(&mut group, &["range"], start);
        group.maybe_complete_join(start + REBALANCE);
        sync_all(&mut group);
        assert_eq!(group.state, GroupState::Stable);
        let later = start + REBALANCE + SESSION / 2;
        group.members.get_mut(&a).unwrap().last_heartbeat = later;
        let (changed, emptied) = group.expire_members(TIMINGS, start + REBALANCE + SESSION);
        assert!(changed && !emptied);
        assert!(!group.members.contains_key(&b));
        assert_eq!(group.state, GroupState::PreparingRebalance);
        // `a` does not rejoin either: at the deadline it goes too.
        let (_, emptied) = group.expire_members(TIMINGS, later + SESSION + REBALANCE);
        assert!(emptied);
        assert_eq!(group.state, GroupState::Empty);
        assert_eq!(group.generation, 2);
    }

    /// KIP-345: a static member restarting (empty member id, same
    /// instance id) into a stable group gets a new id, the old one is
    /// fenced, and the group stays in its generation with the member's
    /// assignment.
    #[test]
    fn a_restarted_static_member_replaces_its_old_id_without_a_rebalance() {
        let start = Instant::now();
        let mut group = Group::new("g".to_owned());
        let outcome = group.join(&request("", Some("i"), &["range"]), TIMINGS, start);
        let JoinOutcome::Wait(old_id) = outcome else {
            panic!("static members join without MEMBER_ID_REQUIRED: {outcome:?}");
        };
        let other = join_dynamic(&mut group, &["range"], start);
        group.maybe_complete_join(start + REBALANCE);
        sync_all(&mut group);
        let generation = group.generation;
        let assignment = group.members[&old_id].assignment.clone();
        let JoinOutcome::Done(Ok(result)) =
            group.join(&request("", Some("i"), &["range"]), TIMINGS, start)
        else {
            panic!("the restarted static member gets an answer at once");
        };
        assert_ne!(result.member_id, old_id);
        assert_eq!(result.generation, generation);
        assert_eq!(group.state, GroupState::Stable);
        assert_eq!(group.members[&result.member_id].assignment, assignment);
        assert!(group.members.contains_key(&other));
        assert_eq!(
            group.check_fenced(&old_id, Some("i")),
            Err(ResponseError::FencedInstanceId)
        );
        assert!(matches!(
            group.join(&request(&old_id, Some("i"), &["range"]), TIMINGS, start),
            JoinOutcome::Done(Err((ResponseError::FencedInstanceId, _)))
        ));
    }

    /// A member whose protocols share nothing with the group's is refused,
    /// and so is a first member with no protocol.
    #[test]
    fn incompatible_protocols_are_refused() {
        let start = Instant::now();
        let mut group = Group::new("g".to_owned());
        assert!(matches!(
            group.join(&request("", None, &[]), TIMINGS, start),
            JoinOutcome::Done(Err((ResponseError::InconsistentGroupProtocol, _)))
        ));
        join_dynamic(&mut group, &["range"], start);
        assert!(matches!(
            group.join(&request("", None, &["sticky"]), TIMINGS, start),
            JoinOutcome::Done(Err((ResponseError::InconsistentGroupProtocol, _)))
        ));
    }

    /// Of two commits racing to the log, the one written later wins in
    /// memory too, as it would on a reload.
    #[test]
    fn the_later_record_of_an_offset_wins() {
        let mut group = Group::new("g".to_owned());
        let committed = |offset, record_offset| CommittedOffset {
            value: OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: 0,
            },
            record_offset,
        };
        group.apply_offset("t".to_owned(), 0, committed(20, 7));
        group.apply_offset("t".to_owned(), 0, committed(10, 5));
        assert_eq!(group.offsets[&("t".to_owned(), 0)].value.offset, 20);
    }

    /// What is stored comes back Stable with the same generation, members
    /// and assignments.
    #[test]
    fn a_stored_group_comes_back_stable_in_its_generation() {
        let start = Instant::now();
        let mut group = Group::new("g".to_owned());
        join_dynamic(&mut group, &["range"], start);
        group.maybe_complete_join(start + REBALANCE);
        sync_all(&mut group);
        let stored = group.to_stored();
        let loaded = Group::from_stored("g".to_owned(), stored.clone(), start);
        assert_eq!(loaded.state, GroupState::Stable);
        assert_eq!(loaded.to_stored(), stored);
    }
}
