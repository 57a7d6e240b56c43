//! Bad input from the network: garbage, truncated and mutated frames,
//! oversized size headers, unknown APIs and versions, and corrupt record
//! batches. Each scenario guards against a client being able to panic,
//! crash or hang the broker, or getting the wrong error back; each broker
//! scenario ends by checking that a fresh client is still served correctly.
//!
//! Everything random is seeded: the seed is printed to stderr and
//! `FJORD_BAD_INPUT_SEED=<seed>` replays a run.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use common::{
    api_versions, bad_input_rng, create_topic, fetch, hex, metadata, one_record_batch, produce,
    produce_error, request_body, sample_frames, sized, Broker, Ending,
};
use fjord_broker::handlers::SUPPORTED;
use fjord_broker::server::decode_request;
use fjord_engine::batch::{build_batch, KeyValue};
use fjord_engine::testkit::Rng;
use fjord_engine::TimestampMs;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;

/// fjord's default `socket.request.max.bytes`.
const SOCKET_REQUEST_MAX_BYTES: usize = 104_857_600;
/// How quickly a refused frame must close the connection.
const CLOSE_DEADLINE: Duration = Duration::from_secs(3);

/// Runs `decode_request` on `frame`, failing with the seed and the input if
/// it panics. `Ok` and `Err` are both fine.
fn decode_must_not_panic(frame: &[u8], seed_hint: &str) {
    let bytes = Bytes::copy_from_slice(frame);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| decode_request(bytes)));
    assert!(
        outcome.is_ok(),
        "decode_request panicked ({seed_hint}) on {} bytes: {}",
        frame.len(),
        hex(frame)
    );
}

/// One random mutation of a valid frame: byte flips, truncation, or a
/// length-like field overwritten with an extreme value.
fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut frame = valid.to_vec();
    let mutations = 1 + rng.index(3);
    for _ in 0..mutations {
        if frame.is_empty() {
            break;
        }
        match rng.index(5) {
            0 => {
                let at = rng.index(frame.len());
                frame[at] ^= 1 << rng.index(8);
            }
            1 => {
                let at = rng.index(frame.len());
                frame[at] = rng.next_u64() as u8;
            }
            2 => frame.truncate(rng.index(frame.len())),
            3 => {
                // Overwrite a 4-, 2- or 1-byte window (an array or string
                // length, a varint) with an extreme value.
                let wide: [&[u8]; 9] = [
                    &[0x7f, 0xff, 0xff, 0xff],
                    &[0xff, 0xff, 0xff, 0xff],
                    &[0x80, 0x00, 0x00, 0x00],
                    &[0x00, 0x00, 0x00, 0x00],
                    &[0x00, 0x01, 0x00, 0x00],
                    &[0x7f, 0xff],
                    &[0xff, 0xfe],
                    &[0xff],
                    &[0x80],
                ];
                let value = *rng.pick(&wide);
                let at = rng.index(frame.len());
                let end = (at + value.len()).min(frame.len());
                frame[at..end].copy_from_slice(&value[..end - at]);
            }
            _ => {
                let at = rng.index(frame.len() + 1);
                if rng.index(2) == 0 {
                    let len = 1 + rng.index(8);
                    let extra = rng.bytes(len);
                    frame.splice(at..at, extra);
                } else {
                    let end = (at + 1 + rng.index(8)).min(frame.len());
                    frame.drain(at..end);
                }
            }
        }
    }
    frame
}

/// A random frame body, half the time starting with a served API key and
/// version so decoding gets past the header.
fn garbage(rng: &mut Rng) -> Vec<u8> {
    let len = rng.index(160);
    let mut frame = rng.bytes(len);
    if rng.index(2) == 0 && frame.len() >= 4 {
        let support = rng.pick(SUPPORTED);
        let span = (support.max - support.min + 1) as usize;
        let version = support.min + rng.index(span) as i16;
        frame[..2].copy_from_slice(&(support.key as i16).to_be_bytes());
        frame[2..4].copy_from_slice(&version.to_be_bytes());
    }
    frame
}

/// Guards against a panic in request decoding (a panic on a shard kills
/// the broker): random bytes and mutations of valid requests of every
/// served API and version either decode or are refused with an error.
#[test]
fn decode_request_survives_garbage_and_mutated_requests() {
    let mut rng = bad_input_rng("decode_request", 0x5eed_0001);
    let valid = sample_frames("topic-a");
    for (api_key, version, frame) in &valid {
        let decoded = decode_request(frame.clone());
        assert!(decoded.is_ok(), "valid {api_key:?} v{version} must decode");
    }
    for iteration in 0..20_000 {
        decode_must_not_panic(&garbage(&mut rng), &format!("garbage #{iteration}"));
    }
    for (api_key, version, frame) in &valid {
        for iteration in 0..1_000 {
            let mutated = mutate(&mut rng, frame);
            decode_must_not_panic(
                &mutated,
                &format!("{api_key:?} v{version} mutation #{iteration}"),
            );
        }
    }
}

/// The frame of a Metadata v0 request for no topics, with the topic array
/// length (the last four bytes) replaced by `count`.
fn metadata_v0_claiming(count: i32) -> Vec<u8> {
    let mut frame = request_body(ApiKey::Metadata, 0, 1, &metadata(&[])).to_vec();
    let at = frame.len() - 4;
    frame[at..].copy_from_slice(&count.to_be_bytes());
    frame
}

/// The frame of a Metadata v12 (flexible) request whose compact topic array
/// claims `u32::MAX - 1` entries.
fn metadata_v12_claiming_u32_max() -> Vec<u8> {
    let mut frame = request_body(ApiKey::Metadata, 12, 1, &metadata(&[])).to_vec();
    // Body: compact array length (varint 1 = empty), three booleans... find
    // it after the header: header v2 is key, version, correlation id, client
    // id (i16 length + 9 bytes), tagged fields (1 byte).
    let body = 2 + 2 + 4 + 2 + "bad-input".len() + 1;
    assert_eq!(frame[body], 1, "empty compact array");
    frame.splice(body..=body, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    frame
}

/// Guards against a remote abort: kafka-protocol 0.18 sizes a decoded array
/// by its length prefix before reading any element, so ten bytes claiming
/// two billion topics made the broker ask for hundreds of gigabytes and
/// abort on the failed allocation.
#[test]
fn decode_request_refuses_array_lengths_the_frame_cannot_hold() {
    for frame in [
        metadata_v0_claiming(i32::MAX),
        metadata_v0_claiming(1 << 30),
        metadata_v12_claiming_u32_max(),
    ] {
        let decoded = decode_request(Bytes::from(frame.clone()));
        assert!(decoded.is_err(), "accepted {}", hex(&frame));
    }
}

/// After bad input: a fresh connection gets ApiVersions and Metadata right,
/// and a Produce then Fetch of `name` returns what was written.
fn assert_still_serves(broker: &mut Broker, name: &str) {
    broker.assert_alive();
    let mut client = broker.connect();
    let ResponseKind::ApiVersions(versions) = client.call(ApiKey::ApiVersions, 3, &api_versions())
    else {
        panic!("not an ApiVersions response");
    };
    assert_eq!(versions.error_code, 0);
    assert_eq!(versions.api_keys.len(), SUPPORTED.len());
    let ResponseKind::CreateTopics(created) =
        client.call(ApiKey::CreateTopics, 7, &create_topic(name, &[]))
    else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    let ResponseKind::Metadata(described) = client.call(ApiKey::Metadata, 12, &metadata(&[name]))
    else {
        panic!("not a Metadata response");
    };
    assert_eq!(described.brokers.len(), 1);
    assert_eq!(described.brokers[0].port, i32::from(broker.port));
    assert_eq!(described.topics[0].error_code, 0);
    assert_eq!(described.topics[0].partitions.len(), 1);

    let produced = client.call(
        ApiKey::Produce,
        9,
        &produce(name, -1, one_record_batch(b"still here")),
    );
    let (error, base_offset) = produce_error(&produced);
    assert_eq!(error, 0, "{produced:?}");
    let ResponseKind::Fetch(fetched) =
        client.call(ApiKey::Fetch, 12, &fetch(name, base_offset, 5_000))
    else {
        panic!("not a Fetch response");
    };
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    assert_eq!(partition.high_watermark, base_offset + 1);
    let records = partition.records.clone().expect("records");
    let values: Vec<Vec<u8>> = fjord_engine::batch::records(&records)
        .expect("a v2 batch")
        .map(|record| record.expect("record").value.expect("value").to_vec())
        .collect();
    assert_eq!(values, vec![b"still here".to_vec()]);
    broker.assert_alive();
}

/// Guards against a served version the handlers or the response encoder
/// cannot handle: the request would go unanswered and the client hang.
#[test]
fn every_served_version_of_every_api_is_answered() {
    let mut broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    for (api_key, version, _) in sample_frames("every-version") {
        let request = common::sample_request(api_key, version, "every-version")
            .expect("sampled requests encode");
        let response = client.call(api_key, version, &request);
        let mut encoded = bytes::BytesMut::new();
        response
            .encode(&mut encoded, version)
            .unwrap_or_else(|error| panic!("{api_key:?} v{version} reencodes: {error}"));
    }
    assert_still_serves(&mut broker, "after-every-version");
}

/// Guards against garbage wedging or killing the broker: random frames over
/// many connections are answered or refused, and every connection ends
/// once the client stops sending; a frame cut off mid-way by a closing
/// client is dropped.
#[test]
fn garbage_frames_close_the_connection_and_the_broker_keeps_serving() {
    let mut rng = bad_input_rng("garbage_frames", 0x5eed_0002);
    let mut broker = Broker::start(common::fjord(), &[]);
    for connection in 0..400 {
        let mut client = broker.connect();
        let mut sent = String::new();
        for _ in 0..=rng.index(3) {
            let body = garbage(&mut rng);
            sent.push_str(&hex(&body));
            sent.push(' ');
            client.send_raw(&sized(&body));
        }
        client.finish_sending();
        assert_ne!(
            client.wait_for_close(),
            Ending::Hung,
            "connection #{connection} hung after {sent}"
        );
    }
    broker.assert_alive();
    // A frame whose size promises more than arrives before the client goes.
    for cut in [0, 1, 7, 20] {
        let body = common::request_body(ApiKey::ApiVersions, 3, 1, &api_versions());
        let frame = sized(&body);
        let mut client = broker.connect();
        client.send_raw(&frame[..4 + cut]);
        client.finish_sending();
        assert_eq!(client.wait_for_close(), Ending::Closed(0), "cut at {cut}");
        let mut client = broker.connect();
        client.send_raw(&frame[..4 + cut]);
        drop(client);
    }
    assert_still_serves(&mut broker, "after-garbage");
}

/// Guards against allocating or waiting for a frame the broker will never
/// accept: a size header above `socket.request.max.bytes`, negative, or too
/// short for a request header closes the connection at once, with no body
/// sent.
#[test]
fn oversized_or_impossible_frame_sizes_close_the_connection_at_once() {
    let mut broker = Broker::start(common::fjord(), &[]);
    for size in [
        i32::try_from(SOCKET_REQUEST_MAX_BYTES + 1).unwrap(),
        i32::MAX,
        -1,
        i32::MIN,
        3,
    ] {
        let mut client = broker.connect();
        let started = Instant::now();
        client.send_raw(&size.to_be_bytes());
        assert_eq!(client.wait_for_close(), Ending::Closed(0), "size {size}");
        assert!(
            started.elapsed() < CLOSE_DEADLINE,
            "size {size} took {:?} to close",
            started.elapsed()
        );
    }
    assert_still_serves(&mut broker, "after-oversized");
}

/// A frame with `key` and `version` in a v1 request header, an empty
/// client id and `body`.
fn raw_request(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.put_i16(key);
    frame.put_i16(version);
    frame.put_i32(1);
    frame.put_i16(-1);
    frame.extend_from_slice(body);
    sized(&frame)
}

/// Guards against guessing at requests we do not serve: an unknown API key,
/// an API fjord does not serve, and versions outside a served range close
/// the connection without an answer.
#[test]
fn unknown_apis_and_unserved_versions_close_the_connection() {
    let mut broker = Broker::start(common::fjord(), &[]);
    let mut frames = vec![
        ("unknown key 9999", raw_request(9999, 0, &[0; 16])),
        ("negative key", raw_request(-1, 0, &[0; 16])),
        (
            "OffsetCommit, not served",
            raw_request(ApiKey::OffsetCommit as i16, 2, &[0; 16]),
        ),
        (
            "Produce v2 whose body does not decode",
            raw_request(ApiKey::Produce as i16, 2, &[0, 1, 0, 0, 0, 0, 0x7f]),
        ),
        (
            "Produce v-1",
            raw_request(ApiKey::Produce as i16, -1, &[0; 16]),
        ),
    ];
    for (api_key, version) in [
        (ApiKey::Fetch, 3),
        (ApiKey::Fetch, 13),
        (ApiKey::Produce, 12),
        (ApiKey::Metadata, 13),
        (ApiKey::CreateTopics, 1),
        (ApiKey::ListOffsets, 8),
    ] {
        let mut body = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut body, api_key.request_header_version(version))
            .expect("header encodes");
        body.extend_from_slice(&[0; 16]);
        frames.push(("served API, unserved version", sized(&body)));
    }
    for (what, frame) in frames {
        let mut client = broker.connect();
        let started = Instant::now();
        client.send_raw(&frame);
        assert_eq!(client.wait_for_close(), Ending::Closed(0), "{what}");
        assert!(started.elapsed() < CLOSE_DEADLINE, "{what} closed slowly");
    }
    assert_still_serves(&mut broker, "after-unknown");
}

/// A Produce v0-v2 body (acks 1): one topic, partitions 0 and 3, each
/// with an empty message set.
fn legacy_produce_body(acks: i16) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(acks);
    body.put_i32(5_000);
    body.put_i32(1);
    body.put_i16(6);
    body.extend_from_slice(b"legacy");
    body.put_i32(2);
    for partition in [0, 3] {
        body.put_i32(partition);
        body.put_i32(0);
    }
    body
}

/// Guards the compatibility promise for Produce v0-v2 (advertised because
/// some librdkafka versions compress only when they see v0): each version
/// is answered, in its own layout, with `UNSUPPORTED_VERSION` for every
/// partition; with acks 0 nothing is answered and the connection stays.
#[test]
fn produce_v0_to_v2_is_refused_with_unsupported_version() {
    let mut broker = Broker::start(common::fjord(), &[]);
    for version in 0..=2 {
        let mut client = broker.connect();
        let silent = raw_request(ApiKey::Produce as i16, version, &legacy_produce_body(0));
        let mut answered = raw_request(ApiKey::Produce as i16, version, &legacy_produce_body(1));
        // The correlation id follows the size, API key and version.
        answered[8..12].copy_from_slice(&2_i32.to_be_bytes());
        client.send_raw(&silent);
        client.send_raw(&answered);
        let (header, mut body) = client.read_response(ApiKey::Produce, version);
        assert_eq!(
            header.correlation_id, 2,
            "v{version}: only the acks=1 request is answered"
        );
        assert_eq!(body.get_i32(), 1, "v{version}: one topic");
        assert_eq!(body.get_i16(), 6);
        assert_eq!(&body.split_to(6)[..], b"legacy");
        assert_eq!(body.get_i32(), 2, "v{version}: two partitions");
        for partition in [0, 3] {
            assert_eq!(body.get_i32(), partition);
            assert_eq!(body.get_i16(), ResponseError::UnsupportedVersion.code());
            assert_eq!(body.get_i64(), -1, "v{version}: base offset");
            if version >= 2 {
                assert_eq!(body.get_i64(), -1, "v{version}: log append time");
            }
        }
        if version >= 1 {
            assert_eq!(body.get_i32(), 0, "v{version}: throttle time");
        }
        assert!(
            body.is_empty(),
            "v{version}: {} bytes left over",
            body.len()
        );
    }
    assert_still_serves(&mut broker, "after-legacy-produce");
}

/// Guards KIP-511: a client newer than fjord opens with an ApiVersions
/// version fjord does not know; it must get a v0 `UNSUPPORTED_VERSION`
/// answer that lists fjord's ranges, not a closed connection.
#[test]
fn api_versions_newer_than_ours_gets_unsupported_version_and_our_ranges() {
    let mut broker = Broker::start(common::fjord(), &[]);
    for version in [5, 100, i16::MAX] {
        let mut client = broker.connect();
        let mut body = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .encode(
                &mut body,
                ApiKey::ApiVersions.request_header_version(version),
            )
            .expect("header encodes");
        // A future body fjord cannot parse.
        body.extend_from_slice(&[0x07, 0xff, 0x00, 0x13]);
        client.send_raw(&sized(&body));
        let (header, mut response) = client.read_response(ApiKey::ApiVersions, 0);
        assert_eq!(header.correlation_id, 42);
        let response =
            kafka_protocol::messages::ApiVersionsResponse::decode(&mut response, 0).unwrap();
        assert_eq!(
            response.error_code,
            ResponseError::UnsupportedVersion.code()
        );
        for support in SUPPORTED {
            assert!(
                response
                    .api_keys
                    .iter()
                    .any(|api| api.api_key == support.key as i16
                        && api.min_version == support.min
                        && api.max_version == support.max),
                "{support:?} missing from {response:?}"
            );
        }
        // The connection stays usable at a version we serve.
        let ResponseKind::ApiVersions(answer) =
            client.call(ApiKey::ApiVersions, 3, &api_versions())
        else {
            panic!("not an ApiVersions response");
        };
        assert_eq!(answer.error_code, 0);
    }
    assert_still_serves(&mut broker, "after-api-versions");
}

/// Guards the per-partition Produce errors a client acts on: a truncated
/// batch or one with a bad CRC is `CORRUPT_MESSAGE`, one above the topic's
/// `max.message.bytes` is `MESSAGE_TOO_LARGE`, `acks=5` is
/// `INVALID_REQUIRED_ACKS`; none of them is appended.
#[test]
fn bad_produce_batches_get_their_error_code_in_the_partition_response() {
    let mut broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    let ResponseKind::CreateTopics(created) = client.call(
        ApiKey::CreateTopics,
        7,
        &create_topic("small", &[("max.message.bytes", "1024")]),
    ) else {
        panic!("not a CreateTopics response");
    };
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");

    let valid = one_record_batch(b"a value long enough to corrupt");
    let truncated = valid.slice(..valid.len() - 5);
    let mut bad_crc = valid.to_vec();
    bad_crc[valid.len() - 3] ^= 0x40; // payload byte: the CRC no longer matches
    let mut short_length = valid.to_vec();
    short_length[8..12].copy_from_slice(&20_i32.to_be_bytes());
    let huge = one_record_batch(&[b'x'; 4096]);
    let cases: [(&str, i16, Bytes, ResponseError); 7] = [
        ("truncated", 1, truncated, ResponseError::CorruptMessage),
        (
            "header only",
            1,
            valid.slice(..30),
            ResponseError::CorruptMessage,
        ),
        (
            "bad CRC",
            -1,
            Bytes::from(bad_crc),
            ResponseError::CorruptMessage,
        ),
        (
            "batchLength below a header",
            1,
            Bytes::from(short_length),
            ResponseError::CorruptMessage,
        ),
        (
            "empty records",
            1,
            Bytes::new(),
            ResponseError::CorruptMessage,
        ),
        (
            "above max.message.bytes",
            1,
            huge,
            ResponseError::MessageTooLarge,
        ),
        (
            "acks=5",
            5,
            valid.clone(),
            ResponseError::InvalidRequiredAcks,
        ),
    ];
    for version in [3, 7, 9, 11] {
        for (what, acks, records, expected) in &cases {
            let response = client.call(
                ApiKey::Produce,
                version,
                &produce("small", *acks, records.clone()),
            );
            let (error, base_offset) = produce_error(&response);
            assert_eq!(error, expected.code(), "{what} (v{version}): {response:?}");
            assert_eq!(base_offset, -1, "{what} (v{version})");
        }
    }
    // Nothing was appended.
    let ResponseKind::Fetch(fetched) = client.call(ApiKey::Fetch, 12, &fetch("small", 0, 0)) else {
        panic!("not a Fetch response");
    };
    assert_eq!(fetched.responses[0].partitions[0].high_watermark, 0);
    assert_still_serves(&mut broker, "after-bad-produce");
}

/// Guards KIP-467's record errors: a batch refused for some of its records
/// names exactly those records (index in the batch, Kafka's message) in
/// `record_errors` from Produce v8 on, with `INVALID_RECORD` for keyless
/// records on a compacted topic and `INVALID_TIMESTAMP` for timestamps
/// outside `message.timestamp.before.max.ms`; nothing of the batch is
/// appended; before v8 the error code alone. Clients' handling of them is
/// tested in `ci/client-tests/test_record_errors.py`.
#[test]
fn records_refused_for_their_keys_or_timestamps_are_named_in_record_errors() {
    let mut broker = Broker::start(common::fjord(), &[]);
    let mut client = broker.connect();
    for (name, configs) in [
        ("compacted", [("cleanup.policy", "compact")]),
        ("recent", [("message.timestamp.before.max.ms", "3600000")]),
    ] {
        let ResponseKind::CreateTopics(created) =
            client.call(ApiKey::CreateTopics, 7, &create_topic(name, &configs))
        else {
            panic!("not a CreateTopics response");
        };
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let keyless = [1, 4];
    let mixed_keys: Vec<KeyValue<'_>> = (0..6)
        .map(|index| {
            let key: Option<&[u8]> = (!keyless.contains(&index)).then_some(b"key".as_slice());
            (key, Some(b"value".as_slice()))
        })
        .collect();
    let stale: Vec<KeyValue<'_>> = vec![(None, Some(b"old")); 3];
    let cases = [
        (
            "compacted",
            build_batch(&mixed_keys, TimestampMs(now_ms), None),
            ResponseError::InvalidRecord,
            keyless.to_vec(),
        ),
        (
            "recent",
            build_batch(&stale, TimestampMs(now_ms - 2 * 3_600_000), None),
            ResponseError::InvalidTimestamp,
            vec![0, 1, 2],
        ),
    ];
    for version in [7, 8, 11] {
        for (name, batch, expected, indexes) in &cases {
            let ResponseKind::Produce(response) = client.call(
                ApiKey::Produce,
                version,
                &produce(name, 1, Bytes::from(batch.clone())),
            ) else {
                panic!("not a Produce response");
            };
            let partition = &response.responses[0].partition_responses[0];
            assert_eq!(partition.error_code, expected.code(), "{name} v{version}");
            let named: Vec<i32> = partition
                .record_errors
                .iter()
                .map(|error| error.batch_index)
                .collect();
            if version >= 8 {
                assert_eq!(named, *indexes, "{name} v{version}: {partition:?}");
                assert!(partition
                    .record_errors
                    .iter()
                    .all(|error| error.batch_index_error_message.is_some()));
            } else {
                assert!(named.is_empty(), "record_errors exist from v8 on");
            }
        }
    }
    for (name, ..) in &cases {
        let ResponseKind::Fetch(fetched) = client.call(ApiKey::Fetch, 12, &fetch(name, 0, 0))
        else {
            panic!("not a Fetch response");
        };
        assert_eq!(
            fetched.responses[0].partitions[0].high_watermark, 0,
            "{name}"
        );
    }
    assert_still_serves(&mut broker, "after-record-errors");
}

/// Guards against the remote abort above, end to end: the broker process
/// survives requests claiming billions of array entries and closes those
/// connections.
#[test]
fn requests_claiming_billions_of_entries_close_the_connection() {
    let mut broker = Broker::start(common::fjord(), &[]);
    for frame in [
        metadata_v0_claiming(i32::MAX),
        metadata_v12_claiming_u32_max(),
    ] {
        let mut client = broker.connect();
        client.send_raw(&sized(&frame));
        assert_eq!(
            client.wait_for_close(),
            Ending::Closed(0),
            "{}",
            hex(&frame)
        );
        broker.assert_alive();
    }
    assert_still_serves(&mut broker, "after-billions");
}

/// Guards `connections.max.idle.ms`: a client that stops sending requests
/// is disconnected once the limit passes (an abandoned connection must not
/// hold a slot forever), while one that keeps sending within the limit
/// stays connected past it.
#[test]
fn connections_idle_past_connections_max_idle_ms_are_closed() {
    const IDLE: Duration = Duration::from_secs(1);
    let mut broker = Broker::start(common::fjord(), &["connections.max.idle.ms=1000"]);
    let mut client = broker.connect();
    let connected = Instant::now();
    let mut last_request = connected;
    while connected.elapsed() < IDLE * 2 {
        std::thread::sleep(IDLE / 4);
        last_request = Instant::now();
        let ResponseKind::ApiVersions(versions) =
            client.call(ApiKey::ApiVersions, 3, &api_versions())
        else {
            panic!("not an ApiVersions response");
        };
        assert_eq!(versions.error_code, 0, "a busy connection stays open");
    }
    assert_eq!(client.wait_for_close(), Ending::Closed(0));
    let closed_after = last_request.elapsed();
    assert!(
        closed_after >= IDLE && closed_after < IDLE * 4,
        "closed {closed_after:?} after the last request, limit {IDLE:?}"
    );
    assert_still_serves(&mut broker, "after-idle");
}
