//! Consumer groups, client side, as Kafka's classic group protocol defines
//! them: `FindCoordinator`, `JoinGroup`/`SyncGroup` with the `consumer`
//! protocol type and the range assignor (the leader member computes the
//! assignment), `Heartbeat`, `OffsetCommit`/`OffsetFetch`, `LeaveGroup`,
//! and the admin side (`ListGroups`, `DescribeGroups`, `DeleteGroups`).
//!
//! Written against Kafka's protocol, not against fjord: a broker that does
//! not serve these APIs answers `ApiVersions` without them, which
//! [`Client::supports`] reports, so callers can say so in one line.
//!
//! Fixed versions, the newest non-flexible ones (Kafka 2.3+):
//! `FindCoordinator` v2, `JoinGroup` v5, `SyncGroup` v3, `Heartbeat` v3,
//! `LeaveGroup` v3, `OffsetCommit` v7, `OffsetFetch` v5, `ListGroups` v2,
//! `DescribeGroups` v4, `DeleteGroups` v1, `ApiVersions` v2.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    consumer_protocol_assignment, ApiKey, ApiVersionsRequest, ApiVersionsResponse,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::{check, topic_name, Client, Connection};
use crate::error::Error;

/// `ApiVersions` request version.
pub const API_VERSIONS_VERSION: i16 = 2;
/// `FindCoordinator` request version.
pub const FIND_COORDINATOR_VERSION: i16 = 2;
/// `JoinGroup` request version.
pub const JOIN_GROUP_VERSION: i16 = 5;
/// `SyncGroup` request version.
pub const SYNC_GROUP_VERSION: i16 = 3;
/// `Heartbeat` request version.
pub const HEARTBEAT_VERSION: i16 = 3;
/// `LeaveGroup` request version.
pub const LEAVE_GROUP_VERSION: i16 = 3;
/// `OffsetCommit` request version.
pub const OFFSET_COMMIT_VERSION: i16 = 7;
/// `OffsetFetch` request version.
pub const OFFSET_FETCH_VERSION: i16 = 5;
/// `ListGroups` request version.
pub const LIST_GROUPS_VERSION: i16 = 2;
/// `DescribeGroups` request version.
pub const DESCRIBE_GROUPS_VERSION: i16 = 4;
/// `DeleteGroups` request version.
pub const DELETE_GROUPS_VERSION: i16 = 1;

/// Every API a group member and the group admin commands use.
pub const GROUP_APIS: [ApiKey; 10] = [
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
];

/// The group protocol type of consumers.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The one assignor this client offers.
const RANGE_ASSIGNOR: &str = "range";
/// The subscription and assignment format version written (read: any).
const CONSUMER_PROTOCOL_VERSION: i16 = 0;
/// Session timeout: the broker drops a member silent for this long.
pub const SESSION_TIMEOUT_MS: i32 = 10_000;
/// How long a rebalance may take.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// How often a member should heartbeat (a third of the session, Kafka's
/// default ratio).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Join attempts before giving up: each retry follows a broker request to
/// rejoin (`MEMBER_ID_REQUIRED`, a rebalance during `SyncGroup`) or a
/// coordinator still loading or moving, [`RETRY_BACKOFF`] apart (30 s).
const JOIN_ATTEMPTS_MAX: u32 = 300;
/// Wait before retrying a request the coordinator cannot serve yet.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A topic and partition.
pub type TopicPartition = (String, i32);

fn group_id(group: &str) -> GroupId {
    GroupId(StrBytes::from_string(group.to_owned()))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// A consumer-protocol message: a version (i16) then the body at it.
fn encode_versioned(body: &impl Encodable) -> Result<Bytes, Error> {
    let mut bytes = BytesMut::new();
    bytes.put_i16(CONSUMER_PROTOCOL_VERSION);
    body.encode(&mut bytes, CONSUMER_PROTOCOL_VERSION)
        .map_err(|error| Error::Protocol(format!("encoding consumer protocol data: {error}")))?;
    Ok(bytes.freeze())
}

/// Decodes a consumer-protocol message at the version it starts with.
fn decode_versioned<T: Decodable + Default>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    let mut bytes = Bytes::copy_from_slice(bytes);
    if bytes.remaining() < 2 {
        return Err(Error::Protocol(
            "consumer protocol data without a version".to_owned(),
        ));
    }
    let version = bytes.get_i16();
    T::decode(&mut bytes, version)
        .map_err(|error| Error::Protocol(format!("decoding consumer protocol data: {error}")))
}

/// The partitions a consumer-protocol assignment gives, sorted.
///
/// # Errors
/// [`Error::Protocol`] if `bytes` does not decode.
pub fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, Error> {
    let assignment: ConsumerProtocolAssignment = decode_versioned(bytes)?;
    let mut partitions: Vec<TopicPartition> = assignment
        .assigned_partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.topic.0.to_string(), *partition))
        })
        .collect();
    partitions.sort();
    Ok(partitions)
}

/// Kafka's range assignor: for each topic, its partitions in order split
/// into contiguous ranges over the members subscribed to it (sorted by
/// member id), the first `partitions % members` members taking one more.
///
/// # Panics
/// Never: every subscribed member has an entry from the start.
#[must_use]
pub fn range_assign(
    subscriptions: &BTreeMap<String, Vec<String>>,
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> = subscriptions
        .keys()
        .map(|member| (member.clone(), Vec::new()))
        .collect();
    for (topic, count) in partition_counts {
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(member, _)| member)
            .collect();
        if members.is_empty() {
            continue;
        }
        let (per_member, extra) = (
            *count as usize / members.len(),
            *count as usize % members.len(),
        );
        let mut next = 0i32;
        for (index, member) in members.iter().enumerate() {
            let take = per_member + usize::from(index < extra);
            let partitions = assignment
                .get_mut(*member)
                .expect("every member has an entry");
            for _ in 0..take {
                partitions.push((topic.clone(), next));
                next += 1;
            }
        }
    }
    assignment
}

/// A group as `ListGroups` and `DescribeGroups` report it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty` or
    /// `Dead`.
    pub state: String,
    /// Members: member id, client id, host, assigned partitions.
    pub members: Vec<GroupMemberDescription>,
}

/// One member of a described group.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupMemberDescription {
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The member's client id.
    pub client_id: String,
    /// Where it connects from.
    pub host: String,
    /// Its partitions.
    pub partitions: Vec<TopicPartition>,
}

impl Client {
    /// The highest version of every API the bootstrap broker serves.
    ///
    /// # Errors
    /// Network or protocol failures, or the broker's error.
    pub fn api_versions(&mut self) -> Result<BTreeMap<i16, i16>, Error> {
        let response: ApiVersionsResponse = self.bootstrap.call(
            ApiKey::ApiVersions,
            API_VERSIONS_VERSION,
            &ApiVersionsRequest::default(),
        )?;
        check("ApiVersions", response.error_code, None)?;
        Ok(response
            .api_keys
            .iter()
            .map(|api| (api.api_key, api.max_version))
            .collect())
    }

    /// The group APIs (of [`GROUP_APIS`]) the broker lacks; empty when it
    /// serves them all.
    ///
    /// # Errors
    /// As [`Client::api_versions`].
    pub fn missing_group_apis(&mut self) -> Result<Vec<ApiKey>, Error> {
        let served = self.api_versions()?;
        Ok(GROUP_APIS
            .into_iter()
            .filter(|api| !served.contains_key(&(*api as i16)))
            .collect())
    }

    /// Fails with one line naming the group APIs the broker lacks.
    ///
    /// # Errors
    /// [`Error::Broker`] when any is missing.
    pub fn supports_groups(&mut self) -> Result<(), Error> {
        let missing = self.missing_group_apis()?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::Broker {
            what: format!(
                "{} does not serve consumer groups",
                self.bootstrap.address()
            ),
            error: format!("ApiVersions lacks {missing:?}"),
        })
    }

    /// The address of `group`'s coordinator.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error (for example
    /// `CoordinatorNotAvailable` while the offsets topic is created).
    pub fn find_coordinator(&mut self, group: &str) -> Result<String, Error> {
        let request = FindCoordinatorRequest::default()
            .with_key(text(group))
            .with_key_type(0);
        let mut response: FindCoordinatorResponse;
        let mut attempts = 0;
        loop {
            response =
                self.bootstrap
                    .call(ApiKey::FindCoordinator, FIND_COORDINATOR_VERSION, &request)?;
            attempts += 1;
            if response.error_code != ResponseError::CoordinatorNotAvailable.code()
                || attempts >= JOIN_ATTEMPTS_MAX
            {
                break;
            }
            std::thread::sleep(RETRY_BACKOFF);
        }
        check(
            &format!("finding the coordinator of group {group}"),
            response.error_code,
            response.error_message.as_deref(),
        )?;
        Ok(format!("{}:{}", response.host, response.port))
    }

    /// Every group the cluster knows, `(group, state)`, sorted.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn list_groups(&mut self) -> Result<Vec<(String, String)>, Error> {
        let response: ListGroupsResponse = self.bootstrap.call(
            ApiKey::ListGroups,
            LIST_GROUPS_VERSION,
            &ListGroupsRequest::default(),
        )?;
        check("listing groups", response.error_code, None)?;
        let mut groups: Vec<(String, String)> = response
            .groups
            .iter()
            .map(|group| (group.group_id.0.to_string(), group.group_state.to_string()))
            .collect();
        groups.sort();
        Ok(groups)
    }

    /// `group`'s state and members, asked of its coordinator.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription, Error> {
        let coordinator = self.find_coordinator(group)?;
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(group)]);
        let response: DescribeGroupsResponse = self.connection_to(&coordinator)?.call(
            ApiKey::DescribeGroups,
            DESCRIBE_GROUPS_VERSION,
            &request,
        )?;
        let described = response
            .groups
            .first()
            .ok_or_else(|| Error::Protocol("DescribeGroups answered no group".to_owned()))?;
        check(
            &format!("describing group {group}"),
            described.error_code,
            described.error_message.as_deref(),
        )?;
        let members = described
            .members
            .iter()
            .map(|member| {
                Ok(GroupMemberDescription {
                    member_id: member.member_id.to_string(),
                    client_id: member.client_id.to_string(),
                    host: member.client_host.to_string(),
                    partitions: decode_assignment(&member.member_assignment)?,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(GroupDescription {
            group: group.to_owned(),
            state: described.group_state.to_string(),
            members,
        })
    }

    /// Deletes `group` (it must have no members).
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error, e.g. `NonEmptyGroup`.
    pub fn delete_group(&mut self, group: &str) -> Result<(), Error> {
        let coordinator = self.find_coordinator(group)?;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response: DeleteGroupsResponse = self.connection_to(&coordinator)?.call(
            ApiKey::DeleteGroups,
            DELETE_GROUPS_VERSION,
            &request,
        )?;
        for result in &response.results {
            check(&format!("deleting group {group}"), result.error_code, None)?;
        }
        Ok(())
    }

    /// `group`'s committed offsets: of `partitions`, or of every partition it
    /// has committed with `None`. A partition without a commit is absent.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn committed_offsets(
        &mut self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, i64>, Error> {
        let coordinator = self.find_coordinator(group)?;
        offset_fetch(self.connection_to(&coordinator)?, group, partitions)
    }

    /// Commits `offsets` for `group` as an admin (no member, generation -1),
    /// which the coordinator accepts only while the group has no members.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's error.
    pub fn commit_offsets_as_admin(
        &mut self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), Error> {
        let coordinator = self.find_coordinator(group)?;
        let code = offset_commit(self.connection_to(&coordinator)?, group, -1, "", offsets)?;
        check(
            &format!("committing the offsets of group {group}"),
            code,
            None,
        )
    }
}

fn offset_fetch(
    connection: &mut Connection,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> Result<BTreeMap<TopicPartition, i64>, Error> {
    let topics = partitions.map(|partitions| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in partitions {
            by_topic.entry(topic).or_default().push(*partition);
        }
        by_topic
            .into_iter()
            .map(|(topic, indexes)| {
                OffsetFetchRequestTopic::default()
                    .with_name(topic_name(topic))
                    .with_partition_indexes(indexes)
            })
            .collect()
    });
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(topics);
    let response: OffsetFetchResponse =
        connection.call(ApiKey::OffsetFetch, OFFSET_FETCH_VERSION, &request)?;
    check(
        &format!("fetching the offsets of group {group}"),
        response.error_code,
        None,
    )?;
    let mut offsets = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            check(
                &format!(
                    "fetching the offset of group {group} for {}-{}",
                    topic.name.0, partition.partition_index
                ),
                partition.error_code,
                None,
            )?;
            if partition.committed_offset >= 0 {
                offsets.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.committed_offset,
                );
            }
        }
    }
    Ok(offsets)
}

/// Commits `offsets`; returns the first partition's error code, 0 when
/// every partition was committed.
fn offset_commit(
    connection: &mut Connection,
    group: &str,
    generation_id: i32,
    member_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<i16, Error> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in offsets {
        by_topic.entry(topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation_id)
        .with_member_id(text(member_id))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    let response: OffsetCommitResponse =
        connection.call(ApiKey::OffsetCommit, OFFSET_COMMIT_VERSION, &request)?;
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| &topic.partitions)
        .map(|partition| partition.error_code)
        .find(|code| *code != 0)
        .unwrap_or(0))
}

/// What a heartbeat learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Still a member of the current generation.
    Stable,
    /// The group is rebalancing or forgot this member: join again.
    Rejoin,
}

/// A member of a consumer group, with its own connection to the
/// coordinator.
pub struct GroupMember {
    connection: Connection,
    group: String,
    topics: Vec<String>,
    member_id: String,
    generation_id: i32,
}

impl GroupMember {
    /// Joins `group` subscribed to `topics` (whose partition counts
    /// `client` looks up if this member leads) and returns the member and
    /// its partitions.
    ///
    /// # Errors
    /// [`Error::Broker`] with the coordinator's error, or if the group keeps
    /// asking to rejoin.
    pub fn join(
        client: &mut Client,
        group: &str,
        topics: &[String],
    ) -> Result<(Self, Vec<TopicPartition>), Error> {
        let coordinator = client.find_coordinator(group)?;
        let mut member = Self {
            connection: Connection::open(&coordinator, &client.id)?,
            group: group.to_owned(),
            topics: topics.to_vec(),
            member_id: String::new(),
            generation_id: -1,
        };
        let partitions = member.rejoin(client)?;
        Ok((member, partitions))
    }

    /// Joins again (after [`Membership::Rejoin`]) and returns the new
    /// assignment.
    ///
    /// # Errors
    /// As [`GroupMember::join`].
    pub fn rejoin(&mut self, client: &mut Client) -> Result<Vec<TopicPartition>, Error> {
        let what = format!("joining group {}", self.group);
        for _ in 0..JOIN_ATTEMPTS_MAX {
            let subscription = ConsumerProtocolSubscription::default()
                .with_topics(self.topics.iter().map(|topic| text(topic)).collect());
            let request = JoinGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
                .with_member_id(text(&self.member_id))
                .with_protocol_type(text(CONSUMER_PROTOCOL_TYPE))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(text(RANGE_ASSIGNOR))
                    .with_metadata(encode_versioned(&subscription)?)]);
            let joined: JoinGroupResponse =
                self.connection
                    .call(ApiKey::JoinGroup, JOIN_GROUP_VERSION, &request)?;
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress) => continue,
                Some(ResponseError::CoordinatorLoadInProgress) => {
                    std::thread::sleep(RETRY_BACKOFF);
                    continue;
                }
                Some(ResponseError::CoordinatorNotAvailable | ResponseError::NotCoordinator) => {
                    std::thread::sleep(RETRY_BACKOFF);
                    self.connection =
                        Connection::open(&client.find_coordinator(&self.group)?, &client.id)?;
                    continue;
                }
                Some(error) => check(&what, error.code(), None)?,
            }
            self.member_id = joined.member_id.to_string();
            self.generation_id = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                Self::assign(client, &joined)?
            } else {
                Vec::new()
            };
            let request = SyncGroupRequest::default()
                .with_group_id(group_id(&self.group))
                .with_generation_id(self.generation_id)
                .with_member_id(text(&self.member_id))
                .with_assignments(assignments);
            let synced: SyncGroupResponse =
                self.connection
                    .call(ApiKey::SyncGroup, SYNC_GROUP_VERSION, &request)?;
            match ResponseError::try_from_code(synced.error_code) {
                None => return decode_assignment(&synced.assignment),
                Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {}
                Some(ResponseError::UnknownMemberId) => self.member_id.clear(),
                Some(error) => check(&what, error.code(), None)?,
            }
        }
        Err(Error::Broker {
            what,
            error: format!("still rebalancing after {JOIN_ATTEMPTS_MAX} attempts"),
        })
    }

    /// The leader's work: every member's subscription, range-assigned.
    fn assign(
        client: &mut Client,
        joined: &JoinGroupResponse,
    ) -> Result<Vec<SyncGroupRequestAssignment>, Error> {
        let mut subscriptions = BTreeMap::new();
        for member in &joined.members {
            let subscription: ConsumerProtocolSubscription = decode_versioned(&member.metadata)?;
            subscriptions.insert(
                member.member_id.to_string(),
                subscription
                    .topics
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            );
        }
        let mut topics: Vec<String> = subscriptions.values().flatten().cloned().collect();
        topics.sort();
        topics.dedup();
        let metadata = client.metadata(Some(&topics))?;
        let counts: BTreeMap<String, i32> = metadata
            .topics
            .iter()
            .filter(|topic| topic.error_code == 0)
            .filter_map(|topic| {
                let name = topic.name.as_ref()?.0.to_string();
                Some((name, topic.partitions.len() as i32))
            })
            .collect();
        range_assign(&subscriptions, &counts)
            .into_iter()
            .map(|(member, partitions)| {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in partitions {
                    by_topic.entry(topic).or_default().push(partition);
                }
                let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                    by_topic
                        .into_iter()
                        .map(|(topic, partitions)| {
                            consumer_protocol_assignment::TopicPartition::default()
                                .with_topic(topic_name(&topic))
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
                Ok(SyncGroupRequestAssignment::default()
                    .with_member_id(text(&member))
                    .with_assignment(encode_versioned(&assignment)?))
            })
            .collect()
    }

    /// Tells the coordinator this member is alive; call every
    /// [`HEARTBEAT_INTERVAL`].
    ///
    /// # Errors
    /// [`Error::Broker`] with an error other than those that ask to rejoin.
    pub fn heartbeat(&mut self) -> Result<Membership, Error> {
        let request = HeartbeatRequest::default()
            .with_group_id(group_id(&self.group))
            .with_generation_id(self.generation_id)
            .with_member_id(text(&self.member_id));
        let response: HeartbeatResponse =
            self.connection
                .call(ApiKey::Heartbeat, HEARTBEAT_VERSION, &request)?;
        self.membership(response.error_code, "heartbeat")
    }

    /// Commits `offsets` (the next offset to read, per partition) in this
    /// member's generation. A rebalance makes the commit fail, as the
    /// partitions may have moved: that is [`Membership::Rejoin`], not an
    /// error.
    ///
    /// # Errors
    /// [`Error::Broker`] with any other coordinator error.
    pub fn commit(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<Membership, Error> {
        if offsets.is_empty() {
            return Ok(Membership::Stable);
        }
        let code = offset_commit(
            &mut self.connection,
            &self.group,
            self.generation_id,
            &self.member_id,
            offsets,
        )?;
        self.membership(code, "committing offsets")
    }

    /// What an error code of a member's request means for its membership.
    fn membership(&mut self, code: i16, what: &str) -> Result<Membership, Error> {
        match ResponseError::try_from_code(code) {
            None => Ok(Membership::Stable),
            Some(ResponseError::RebalanceInProgress | ResponseError::IllegalGeneration) => {
                Ok(Membership::Rejoin)
            }
            Some(ResponseError::UnknownMemberId) => {
                self.member_id.clear();
                Ok(Membership::Rejoin)
            }
            Some(error) => check(
                &format!("{what} in group {}", self.group),
                error.code(),
                None,
            )
            .map(|()| Membership::Stable),
        }
    }

    /// The group's committed offsets of `partitions`.
    ///
    /// # Errors
    /// [`Error::Broker`] with the coordinator's error.
    pub fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, Error> {
        offset_fetch(&mut self.connection, &self.group, Some(partitions))
    }

    /// Leaves the group, so its partitions move at once instead of after
    /// the session timeout.
    ///
    /// # Errors
    /// [`Error::Broker`] with the coordinator's error.
    pub fn leave(mut self) -> Result<(), Error> {
        // v3 names leaving members in `members` only (the top-level
        // `member_id` is v0-v2).
        let request = LeaveGroupRequest::default()
            .with_group_id(group_id(&self.group))
            .with_members(vec![
                MemberIdentity::default().with_member_id(text(&self.member_id))
            ]);
        let response: LeaveGroupResponse =
            self.connection
                .call(ApiKey::LeaveGroup, LEAVE_GROUP_VERSION, &request)?;
        check(
            &format!("leaving group {}", self.group),
            response.error_code,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::consumer_protocol_subscription;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    /// The values of Kafka's `RangeAssignorTest`: 3 partitions over 2
    /// members gives the first member 2; a topic only one member subscribes
    /// to goes to it whole.
    #[test]
    fn range_assignment_matches_kafkas() {
        let subscriptions = BTreeMap::from([
            ("consumer-a".to_owned(), strings(&["t1", "t2"])),
            ("consumer-b".to_owned(), strings(&["t1"])),
        ]);
        let counts = BTreeMap::from([("t1".to_owned(), 3), ("t2".to_owned(), 2)]);
        let assignment = range_assign(&subscriptions, &counts);
        let of = |member: &str| assignment[member].clone();
        assert_eq!(
            of("consumer-a"),
            [
                ("t1".to_owned(), 0),
                ("t1".to_owned(), 1),
                ("t2".to_owned(), 0),
                ("t2".to_owned(), 1)
            ]
        );
        assert_eq!(of("consumer-b"), [("t1".to_owned(), 2)]);
    }

    #[test]
    fn subscriptions_and_assignments_round_trip_through_their_versioned_bytes() {
        let subscription =
            ConsumerProtocolSubscription::default().with_topics(vec![text("orders")]);
        let bytes = encode_versioned(&subscription).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        let decoded: ConsumerProtocolSubscription = decode_versioned(&bytes).unwrap();
        assert_eq!(decoded, subscription);

        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            consumer_protocol_assignment::TopicPartition::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![2, 0]),
        ]);
        let bytes = encode_versioned(&assignment).unwrap();
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            [("orders".to_owned(), 0), ("orders".to_owned(), 2)]
        );
        assert!(decode_assignment(&[]).unwrap().is_empty());
        assert!(decode_assignment(&[0]).is_err());
    }

    /// A version-1 subscription (what the Java client 2.4+ sends, with
    /// owned partitions) decodes too.
    #[test]
    fn newer_subscription_versions_decode() {
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(vec![text("t")])
            .with_owned_partitions(vec![
                consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(topic_name("t"))
                    .with_partitions(vec![0]),
            ]);
        let mut bytes = BytesMut::new();
        bytes.put_i16(1);
        subscription.encode(&mut bytes, 1).unwrap();
        let decoded: ConsumerProtocolSubscription = decode_versioned(&bytes).unwrap();
        assert_eq!(decoded.topics, [text("t")]);
        assert_eq!(decoded.owned_partitions.len(), 1);
    }
}
