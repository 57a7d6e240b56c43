//! The leader epoch a client names (KIP-320's `current_leader_epoch`) is
//! checked against the partition's, from the metadata image, by Fetch,
//! ListOffsets and OffsetForLeaderEpoch alike: an older one is
//! `FENCED_LEADER_EPOCH`, a newer one `UNKNOWN_LEADER_EPOCH`, the
//! partition's own and `-1` (not given) are served; and the epoch the
//! broker reports is the one Metadata reports.
//!
//! Guards against handlers that hard-code epoch 0 or ignore the client's
//! epoch: Fetch ignored it entirely, so a consumer with a newer view of the
//! partition than this broker's would have read from a stale leader.

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, RequestKind,
    ResponseKind,
};
use kafka_protocol::ResponseError;

use common::{create_topic, metadata, one_record_batch, produce, topic, Broker, Connection};

const NAME: &str = "epochs";

fn fetch_error(client: &mut Connection, current_leader_epoch: i32) -> i16 {
    let request = RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic(NAME))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_fetch_offset(0)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    let ResponseKind::Fetch(response) = client.call(ApiKey::Fetch, 12, &request) else {
        panic!("not a Fetch response");
    };
    response.responses[0].partitions[0].error_code
}

fn list_offsets(client: &mut Connection, current_leader_epoch: i32) -> (i16, i32) {
    let request = RequestKind::ListOffsets(
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic(NAME))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_timestamp(-1)])]),
    );
    let ResponseKind::ListOffsets(response) = client.call(ApiKey::ListOffsets, 7, &request) else {
        panic!("not a ListOffsets response");
    };
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.leader_epoch)
}

fn offset_for_leader_epoch(client: &mut Connection, current_leader_epoch: i32) -> i16 {
    let request = RequestKind::OffsetForLeaderEpoch(
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(topic(NAME))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_leader_epoch(0)])]),
    );
    let ResponseKind::OffsetForLeaderEpoch(response) =
        client.call(ApiKey::OffsetForLeaderEpoch, 4, &request)
    else {
        panic!("not an OffsetForLeaderEpoch response");
    };
    response.topics[0].partitions[0].error_code
}

#[test]
fn a_stale_or_future_current_leader_epoch_is_refused_by_every_partition_read() {
    let broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    let ResponseKind::CreateTopics(created) =
        client.call(ApiKey::CreateTopics, 7, &create_topic(NAME, &[]))
    else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(created.topics[0].error_code, 0);
    client.call(
        ApiKey::Produce,
        9,
        &produce(NAME, 1, one_record_batch(b"v")),
    );
    let ResponseKind::Metadata(described) = client.call(ApiKey::Metadata, 12, &metadata(&[NAME]))
    else {
        panic!("not a Metadata response");
    };
    let epoch = described.topics[0].partitions[0].leader_epoch;

    for (given, expected) in [
        (-1, None),
        (epoch, None),
        (epoch - 2, Some(ResponseError::FencedLeaderEpoch)),
        (epoch + 1, Some(ResponseError::UnknownLeaderEpoch)),
    ] {
        let code = expected.map_or(0, |error| error.code());
        assert_eq!(
            fetch_error(&mut client, given),
            code,
            "Fetch with epoch {given}"
        );
        let (listed, reported) = list_offsets(&mut client, given);
        assert_eq!(listed, code, "ListOffsets with epoch {given}");
        if expected.is_none() {
            assert_eq!(reported, epoch, "ListOffsets reports the partition's epoch");
        }
        assert_eq!(
            offset_for_leader_epoch(&mut client, given),
            code,
            "OffsetForLeaderEpoch with epoch {given}"
        );
    }
}
