//! Records served from segment files after a restart come back whole and
//! intact through the zero-copy Fetch path.
//!
//! Several MB are produced into a topic with small segments, the broker is
//! restarted so nothing is in its cache, and everything is fetched back with
//! raw `kafka-protocol` Fetch requests in a flexible and a non-flexible
//! version. Each batch must have a correct CRC, the offset the previous
//! batch's end promises, and exactly the bytes that were produced. This
//! guards against the hand-written Fetch encoder (wrong records length
//! prefix), the `sendfile` writer (short sends, chunks out of order, ranges
//! past a segment's end) and the file-range read (half a batch, the wrong
//! segment).

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use bytes::{Buf, Bytes};
use fjord_engine::batch::{build_batch, crc_matches};
use fjord_engine::TimestampMs;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use common::{create_topic, produce, produce_error, request_body, sized, Broker, Connection};

const TOPIC: &str = "zero-copy-from-disk";
/// Small segments, so the data spans many files.
const SEGMENT_BYTES: &str = "262144";
const BATCHES: usize = 120;
const RECORDS_PER_BATCH: usize = 50;
const VALUE_BYTES: usize = 1000;
/// Bytes of a batch from its attributes on: what the broker never rewrites.
const ATTRIBUTES_AT: usize = 21;
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LAST_OFFSET_DELTA_AT: usize = 23;
const LOG_OVERHEAD_BYTES: usize = 12;

fn batch(index: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
        .map(|record| {
            (0..VALUE_BYTES)
                .map(|byte| u8::try_from((index * 31 + record * 7 + byte) % 251).expect("byte"))
                .collect()
        })
        .collect();
    let records: Vec<_> = values
        .iter()
        .map(|value| (Some(b"key".as_slice()), Some(value.as_slice())))
        .collect();
    Bytes::from(build_batch(&records, TimestampMs(1_700_000_000_000), None))
}

fn fetch_request(offset: i64, partition_max_bytes: i32) -> RequestKind {
    RequestKind::Fetch(
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(4 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_current_leader_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(partition_max_bytes)])]),
    )
}

/// Checks every batch of `records`, which must start at `offset`, against
/// what was produced; returns the offset after the last one.
fn check_batches(mut records: Bytes, mut offset: i64, produced: &[Bytes]) -> i64 {
    assert!(!records.is_empty(), "no records at offset {offset}");
    while !records.is_empty() {
        assert!(records.len() >= LOG_OVERHEAD_BYTES, "a torn batch header");
        let base_offset = (&records[BASE_OFFSET_AT..]).get_i64();
        let length = usize::try_from((&records[BATCH_LENGTH_AT..]).get_i32()).expect("length");
        let total = LOG_OVERHEAD_BYTES + length;
        assert!(
            records.len() >= total,
            "half a batch at offset {base_offset}"
        );
        let batch = records.split_to(total);
        assert!(crc_matches(&batch), "bad CRC at offset {base_offset}");
        assert_eq!(base_offset, offset, "batches out of order");
        let index = usize::try_from(offset).expect("offset") / RECORDS_PER_BATCH;
        assert_eq!(
            batch[ATTRIBUTES_AT..],
            produced[index][ATTRIBUTES_AT..],
            "batch at offset {offset} differs from what was produced"
        );
        offset += i64::from((&batch[LAST_OFFSET_DELTA_AT..]).get_i32()) + 1;
    }
    offset
}

/// Fetches everything from offset 0 in `version`, pipelining `depth`
/// requests at a time on one connection (responses must come back in
/// order), and checks it.
fn fetch_all(
    connection: &mut Connection,
    version: i16,
    partition_max_bytes: i32,
    produced: &[Bytes],
) {
    let end = i64::try_from(BATCHES * RECORDS_PER_BATCH).expect("end");
    let mut offset = 0;
    let mut correlation_id = 1000;
    while offset < end {
        correlation_id += 1;
        let body = request_body(
            ApiKey::Fetch,
            version,
            correlation_id,
            &fetch_request(offset, partition_max_bytes),
        );
        let again = request_body(
            ApiKey::Fetch,
            version,
            correlation_id + 1,
            &fetch_request(offset, partition_max_bytes),
        );
        let mut both = sized(&body);
        both.extend_from_slice(&sized(&again));
        std::io::Write::write_all(&mut connection.stream, &both).expect("send fetches");
        let mut next = None;
        for expected_id in [correlation_id, correlation_id + 1] {
            let (header, mut body) = connection.read_response(ApiKey::Fetch, version);
            assert_eq!(
                header.correlation_id, expected_id,
                "responses in request order"
            );
            let ResponseKind::Fetch(response) =
                ResponseKind::decode(ApiKey::Fetch, &mut body, version).expect("decodes")
            else {
                unreachable!("a Fetch response");
            };
            assert!(body.is_empty(), "v{version}: bytes after the response");
            let partition = &response.responses[0].partitions[0];
            assert_eq!(partition.error_code, 0);
            assert_eq!(partition.high_watermark, end);
            let records = partition.records.clone().expect("records");
            let after = check_batches(records, offset, produced);
            assert!(
                next.is_none_or(|next| next == after),
                "same fetch, same answer"
            );
            next = Some(after);
        }
        correlation_id += 1;
        offset = next.expect("fetched");
    }
    assert_eq!(offset, end);
}

#[test]
fn records_fetched_from_segment_files_after_a_restart_are_whole_and_intact() {
    let mut broker = Broker::start(common::fjord(), &[]);
    let mut connection = broker.connect();
    connection.call(
        ApiKey::CreateTopics,
        4,
        &create_topic(TOPIC, &[("segment.bytes", SEGMENT_BYTES)]),
    );
    let produced: Vec<Bytes> = (0..BATCHES).map(batch).collect();
    for (index, batch) in produced.iter().enumerate() {
        let response = connection.call(ApiKey::Produce, 8, &produce(TOPIC, -1, batch.clone()));
        let (error, base_offset) = produce_error(&response);
        assert_eq!(error, 0, "produce {index}");
        assert_eq!(
            base_offset,
            i64::try_from(index * RECORDS_PER_BATCH).expect("offset")
        );
    }
    // Before the restart the recent batches come from the cache as `Bytes`.
    fetch_all(&mut connection, 12, 1 << 20, &produced);
    drop(connection);
    broker.restart();
    let mut connection = broker.connect();
    // 1 MiB per partition: many batches per response, spanning segments;
    // 1 byte: one batch per response (KIP-74), every batch position tried.
    for (version, partition_max_bytes) in [(12, 1 << 20), (4, 1 << 20), (11, 1)] {
        fetch_all(&mut connection, version, partition_max_bytes, &produced);
    }
    broker.assert_alive();
}
