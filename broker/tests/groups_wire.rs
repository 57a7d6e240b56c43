//! The group coordinator's error contract on the wire, against the real
//! `fjord` binary: what real clients only hit by accident (a fenced or
//! stale member, a bad session timeout, deleting a group in use, writing to
//! `__consumer_offsets`) answered with the error code Kafka uses, and a
//! committed offset surviving a restart.

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Broker, Connection};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerProtocolSubscription, CreatePartitionsRequest, DeleteGroupsRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, RequestKind, ResponseKind, SyncGroupRequest,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;

const GROUP: &str = "wire-group";
const TOPIC: &str = "wire-topic";

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str(GROUP))
}

/// Waits until the group has a coordinator (FindCoordinator) and it has
/// loaded its groups (ListGroups without error).
fn wait_loaded(client: &mut Connection) {
    let deadline = Instant::now() + Duration::from_secs(30);
    // As a client does: FindCoordinator first, which creates
    // `__consumer_offsets` at the first ask (Kafka's way), until the group
    // has a coordinator.
    let find = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str(GROUP))
            .with_key_type(0),
    );
    loop {
        let ResponseKind::FindCoordinator(found) = client.call(ApiKey::FindCoordinator, 3, &find)
        else {
            panic!("not a FindCoordinator response");
        };
        if found.error_code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never had a coordinator"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        let response = client.call(
            ApiKey::ListGroups,
            4,
            &RequestKind::ListGroups(ListGroupsRequest::default()),
        );
        let ResponseKind::ListGroups(response) = response else {
            panic!("not a ListGroups response");
        };
        if response.error_code == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the coordinator never loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A consumer-protocol subscription to [`TOPIC`]: version, then the body.
fn subscription() -> Bytes {
    let mut metadata = BytesMut::new();
    metadata.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str(TOPIC)])
        .encode(&mut metadata, 0)
        .expect("subscription encodes");
    metadata.freeze()
}

/// OffsetDelete of partition 0 of [`TOPIC`]: the top-level and partition
/// error codes.
fn delete_offset(client: &mut Connection) -> (i16, Option<i16>) {
    let request = OffsetDeleteRequest::default()
        .with_group_id(group())
        .with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![
                OffsetDeleteRequestPartition::default().with_partition_index(0)
            ])]);
    let ResponseKind::OffsetDelete(response) =
        client.call(ApiKey::OffsetDelete, 0, &RequestKind::OffsetDelete(request))
    else {
        panic!("not an OffsetDelete response");
    };
    let partition = response
        .topics
        .first()
        .and_then(|topic| topic.partitions.first())
        .map(|partition| partition.error_code);
    (response.error_code, partition)
}

fn join(client: &mut Connection, member_id: &str, session_timeout_ms: i32) -> (i16, String, i32) {
    let request = JoinGroupRequest::default()
        .with_group_id(group())
        .with_session_timeout_ms(session_timeout_ms)
        .with_rebalance_timeout_ms(1_000)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription())]);
    let ResponseKind::JoinGroup(response) =
        client.call(ApiKey::JoinGroup, 7, &RequestKind::JoinGroup(request))
    else {
        panic!("not a JoinGroup response");
    };
    (
        response.error_code,
        response.member_id.to_string(),
        response.generation_id,
    )
}

fn commit(client: &mut Connection, member_id: &str, generation: i32, offset: i64) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(group())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(StrBytes::from_static_str(
                    "meta",
                )))])]);
    let ResponseKind::OffsetCommit(response) =
        client.call(ApiKey::OffsetCommit, 8, &RequestKind::OffsetCommit(request))
    else {
        panic!("not an OffsetCommit response");
    };
    response.topics[0].partitions[0].error_code
}

fn fetch_offset(client: &mut Connection) -> (i64, String) {
    let request = OffsetFetchRequest::default()
        .with_group_id(group())
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partition_indexes(vec![0])]));
    let ResponseKind::OffsetFetch(response) =
        client.call(ApiKey::OffsetFetch, 7, &RequestKind::OffsetFetch(request))
    else {
        panic!("not an OffsetFetch response");
    };
    assert_eq!(response.error_code, 0);
    let partition = &response.topics[0].partitions[0];
    (
        partition.committed_offset,
        partition
            .metadata
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
    )
}

fn delete_group(client: &mut Connection) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![group()]);
    let ResponseKind::DeleteGroups(response) =
        client.call(ApiKey::DeleteGroups, 2, &RequestKind::DeleteGroups(request))
    else {
        panic!("not a DeleteGroups response");
    };
    response.results[0].error_code
}

/// No transaction coordinator yet (a code clients give up on at once, not
/// one they retry until their timeout), and clients may neither write to
/// `__consumer_offsets` nor grow it.
fn transactions_and_internal_writes_are_refused(client: &mut Connection) {
    let transaction = RequestKind::FindCoordinator(
        FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("tx"))
            .with_key_type(1),
    );
    let ResponseKind::FindCoordinator(found) =
        client.call(ApiKey::FindCoordinator, 3, &transaction)
    else {
        panic!("not a FindCoordinator response");
    };
    assert_eq!(
        found.error_code,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    let (error, _) = common::produce_error(&client.call(
        ApiKey::Produce,
        9,
        &common::produce("__consumer_offsets", -1, common::one_record_batch(b"x")),
    ));
    assert_eq!(error, ResponseError::InvalidTopicException.code());
    let grow = RequestKind::CreatePartitions(
        CreatePartitionsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("__consumer_offsets")))
                .with_count(4)
                .with_assignments(None)]),
    );
    let ResponseKind::CreatePartitions(grown) = client.call(ApiKey::CreatePartitions, 3, &grow)
    else {
        panic!("not a CreatePartitions response");
    };
    assert_eq!(
        grown.results[0].error_code,
        ResponseError::InvalidTopicException.code()
    );
}

/// Guards against a coordinator that accepts what Kafka refuses (or
/// refuses with codes clients do not expect), and against commits that do
/// not survive a restart.
#[test]
fn group_errors_follow_kafka_and_commits_survive_a_restart() {
    let mut broker = Broker::start(
        common::fjord(),
        &[
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.num.partitions=3",
        ],
    );
    let mut client = broker.connect();
    client.call(ApiKey::Metadata, 12, &common::metadata(&[TOPIC]));
    wait_loaded(&mut client);

    let (error, _, _) = join(&mut client, "", 10);
    assert_eq!(error, ResponseError::InvalidSessionTimeout.code());
    let (error, member_id, _) = join(&mut client, "", 10_000);
    assert_eq!(error, ResponseError::MemberIdRequired.code());
    let (error, _, _) = join(&mut client, "someone-else", 10_000);
    assert_eq!(error, ResponseError::UnknownMemberId.code());
    let (error, joined_id, generation) = join(&mut client, &member_id, 10_000);
    assert_eq!(
        (error, joined_id.as_str(), generation),
        (0, member_id.as_str(), 1)
    );

    let sync = |generation| {
        RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group())
                .with_generation_id(generation)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_assignments(vec![SyncGroupRequestAssignment::default()
                    .with_member_id(StrBytes::from_string(member_id.clone()))
                    .with_assignment(Bytes::from_static(b"assignment"))]),
        )
    };
    let ResponseKind::SyncGroup(stale) = client.call(ApiKey::SyncGroup, 3, &sync(7)) else {
        panic!("not a SyncGroup response");
    };
    assert_eq!(stale.error_code, ResponseError::IllegalGeneration.code());
    let ResponseKind::SyncGroup(synced) = client.call(ApiKey::SyncGroup, 3, &sync(1)) else {
        panic!("not a SyncGroup response");
    };
    assert_eq!(synced.error_code, 0);
    assert_eq!(synced.assignment, Bytes::from_static(b"assignment"));
    let heartbeat = RequestKind::Heartbeat(
        HeartbeatRequest::default()
            .with_group_id(group())
            .with_generation_id(1)
            .with_member_id(StrBytes::from_string(member_id.clone())),
    );
    let ResponseKind::Heartbeat(beat) = client.call(ApiKey::Heartbeat, 3, &heartbeat) else {
        panic!("not a Heartbeat response");
    };
    assert_eq!(beat.error_code, 0);

    assert_eq!(
        commit(&mut client, &member_id, 2, 5),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        commit(&mut client, "", -1, 5),
        ResponseError::UnknownMemberId.code(),
        "a simple commit to a group with members"
    );
    assert_eq!(commit(&mut client, &member_id, 1, 42), 0);
    assert_eq!(fetch_offset(&mut client), (42, "meta".to_owned()));
    assert_eq!(
        delete_group(&mut client),
        ResponseError::NonEmptyGroup.code()
    );
    assert_eq!(
        delete_offset(&mut client),
        (0, Some(ResponseError::GroupSubscribedToTopic.code()))
    );

    transactions_and_internal_writes_are_refused(&mut client);

    broker.restart();
    let mut client = broker.connect();
    wait_loaded(&mut client);
    assert_eq!(fetch_offset(&mut client), (42, "meta".to_owned()));
    let leave = RequestKind::LeaveGroup(
        LeaveGroupRequest::default()
            .with_group_id(group())
            .with_member_id(StrBytes::from_string(member_id.clone())),
    );
    let ResponseKind::LeaveGroup(left) = client.call(ApiKey::LeaveGroup, 2, &leave) else {
        panic!("not a LeaveGroup response");
    };
    assert_eq!(left.error_code, 0, "the member came back with the group");
    assert_eq!(delete_offset(&mut client), (0, Some(0)));
    assert_eq!(fetch_offset(&mut client), (-1, String::new()));
    assert_eq!(
        commit(&mut client, "", -1, 43),
        0,
        "a simple commit to the empty group"
    );
    assert_eq!(delete_group(&mut client), 0);
    assert_eq!(
        delete_group(&mut client),
        ResponseError::GroupIdNotFound.code()
    );
    assert_eq!(fetch_offset(&mut client), (-1, String::new()));
    broker.assert_alive();
}
