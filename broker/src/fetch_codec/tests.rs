//! The hand-written Fetch encoder against the `kafka-protocol` crate's, byte
//! for byte, for every served version: seeded random responses with several
//! topics and partitions, null, empty, in-memory and file-backed records,
//! aborted transactions absent, empty or listed, errors and tagged fields,
//! topics by name or by id, and leaders' node endpoints (set in every
//! flexible version: before v16 both encoders leave them out).
//! The seed is printed; `FJORD_FETCH_CODEC_SEED` replays one.

use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fjord_engine::log::FileRange;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint,
    PartitionData, SnapshotId,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, ProducerId, RequestHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{encode_fetch_response, ResponseChunk, ZeroCopyFetch, VERSION_MAX, VERSION_MIN};
use crate::server::encode_response;
use fjord_engine::testkit::Rng;

/// Random responses per version.
const CASES_PER_VERSION: usize = 300;

/// Random values of the widths the response's fields have.
trait Fields {
    fn i64(&mut self) -> i64;
    fn i32(&mut self) -> i32;
    fn i16(&mut self) -> i16;
    /// True `percent` times in a hundred.
    fn percent(&mut self, percent: u64) -> bool;
}

impl Fields for Rng {
    fn i64(&mut self) -> i64 {
        self.next_u64() as i64
    }

    fn i32(&mut self) -> i32 {
        self.next_u64() as i32
    }

    fn i16(&mut self) -> i16 {
        self.next_u64() as i16
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.chance(percent, 100)
    }
}

/// A segment-like file of random bytes that file ranges point into.
struct BackingFile {
    file: Arc<std::fs::File>,
    len: u64,
    _dir: tempfile::TempDir,
}

impl BackingFile {
    fn new(rng: &mut Rng) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("00000000000000000000.log");
        let mut file = std::fs::File::create(&path).expect("create");
        let data = rng.bytes(64 * 1024);
        file.write_all(&data).expect("write");
        Self {
            file: Arc::new(std::fs::File::open(&path).expect("open")),
            len: data.len() as u64,
            _dir: dir,
        }
    }

    fn range(&self, rng: &mut Rng) -> FileRange {
        let position = rng.below(self.len);
        let len = rng.below(self.len - position + 1);
        FileRange {
            file: self.file.clone(),
            position,
            len,
        }
    }
}

fn materialize(chunks: &[ResponseChunk]) -> Bytes {
    let mut joined = BytesMut::new();
    for chunk in chunks {
        match chunk {
            ResponseChunk::Bytes(bytes) => joined.extend_from_slice(bytes),
            ResponseChunk::File(range) => {
                let mut data = vec![0; usize::try_from(range.len).expect("fits")];
                range
                    .file
                    .read_exact_at(&mut data, range.position)
                    .expect("read range");
                joined.extend_from_slice(&data);
            }
        }
    }
    joined.freeze()
}

fn random_records(rng: &mut Rng, backing: &BackingFile) -> Option<Vec<ResponseChunk>> {
    match rng.index(5) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(
            (0..rng.index(4))
                .map(|_| {
                    if rng.percent(50) {
                        ResponseChunk::File(backing.range(rng))
                    } else {
                        let len = rng.index(3000);
                        ResponseChunk::Bytes(Bytes::from(rng.bytes(len)))
                    }
                })
                .collect(),
        ),
    }
}

fn tagged(rng: &mut Rng, first_tag: i32) -> std::collections::BTreeMap<i32, Bytes> {
    (0..rng.index(3))
        .map(|_| {
            let tag = first_tag + i32::try_from(rng.index(20)).expect("small");
            let len = rng.index(200);
            (tag, Bytes::from(rng.bytes(len)))
        })
        .collect()
}

fn random_partition(rng: &mut Rng, version: i16) -> PartitionData {
    let mut data = PartitionData::default()
        .with_partition_index(rng.i32())
        .with_error_code(if rng.percent(30) { rng.i16() } else { 0 })
        .with_high_watermark(rng.i64())
        .with_last_stable_offset(rng.i64())
        .with_log_start_offset(if version >= 5 { rng.i64() } else { -1 })
        .with_aborted_transactions(match rng.index(3) {
            0 => None,
            1 => Some(Vec::new()),
            _ => Some(
                (0..=rng.index(300))
                    .map(|_| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(rng.i64()))
                            .with_first_offset(rng.i64())
                    })
                    .collect(),
            ),
        });
    if version >= 11 && rng.percent(50) {
        data = data.with_preferred_read_replica(BrokerId(rng.i32()));
    }
    if version >= 12 {
        if rng.percent(30) {
            data = data.with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(rng.i32())
                    .with_end_offset(rng.i64()),
            );
        }
        if rng.percent(30) {
            data = data.with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(rng.i32()))
                    .with_leader_epoch(rng.i32()),
            );
        }
        if rng.percent(30) {
            data = data.with_snapshot_id(
                SnapshotId::default()
                    .with_end_offset(rng.i64())
                    .with_epoch(rng.i32()),
            );
        }
        data = data.with_unknown_tagged_fields(tagged(rng, 3));
    }
    data
}

fn random_endpoints(rng: &mut Rng) -> Vec<NodeEndpoint> {
    (0..rng.index(4))
        .map(|_| {
            let host_len = rng.index(30);
            let host: String = (0..host_len)
                .map(|_| char::from(b'a' + u8::try_from(rng.index(26)).expect("letter")))
                .collect();
            NodeEndpoint::default()
                .with_node_id(BrokerId(rng.i32()))
                .with_host(StrBytes::from_string(host))
                .with_port(rng.i32())
                .with_rack(
                    rng.percent(50)
                        .then(|| StrBytes::from_string(format!("rack-{}", rng.index(9)))),
                )
        })
        .collect()
}

fn random_fetch(rng: &mut Rng, version: i16, backing: &BackingFile) -> ZeroCopyFetch {
    let mut response = FetchResponse::default()
        .with_throttle_time_ms(rng.i32())
        .with_error_code(if version >= 7 { rng.i16() } else { 0 })
        .with_session_id(if version >= 7 { rng.i32() } else { 0 });
    let mut records = Vec::new();
    for _ in 0..rng.index(5) {
        let name_len = rng.index(40);
        let name: String = (0..name_len)
            .map(|_| char::from(b'a' + u8::try_from(rng.index(26)).expect("letter")))
            .collect();
        let mut topic =
            FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_string(name)));
        if version >= 13 {
            topic = topic.with_topic_id(uuid::Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()));
        }
        let mut topic_records = Vec::new();
        for _ in 0..rng.index(5) {
            topic.partitions.push(random_partition(rng, version));
            topic_records.push(random_records(rng, backing));
        }
        if version >= 12 {
            topic = topic.with_unknown_tagged_fields(tagged(rng, 0));
        }
        response.responses.push(topic);
        records.push(topic_records);
    }
    if version >= 12 {
        response = response
            .with_unknown_tagged_fields(tagged(rng, 1))
            .with_node_endpoints(random_endpoints(rng));
    }
    ZeroCopyFetch { response, records }
}

/// What the crate encodes for `fetch`, records materialized into its fields.
fn crate_encoding(correlation_id: i32, version: i16, fetch: &ZeroCopyFetch) -> Option<Bytes> {
    let mut response = fetch.response.clone();
    for (topic, records) in response.responses.iter_mut().zip(&fetch.records) {
        for (data, records) in topic.partitions.iter_mut().zip(records) {
            data.records = records.as_deref().map(materialize);
        }
    }
    let header = RequestHeader::default().with_correlation_id(correlation_id);
    encode_response(
        ApiKey::Fetch,
        &header,
        version,
        &ResponseKind::Fetch(response),
    )
    .ok()
}

fn seed() -> u64 {
    let seed = std::env::var("FJORD_FETCH_CODEC_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x5eed_fe7c);
    let _ = writeln!(std::io::stderr(), "FJORD_FETCH_CODEC_SEED={seed}");
    seed
}

#[test]
fn zero_copy_fetch_encoding_matches_the_crate_byte_for_byte() {
    let mut rng = Rng::new(seed());
    let backing = BackingFile::new(&mut rng);
    for version in VERSION_MIN..=VERSION_MAX {
        for case in 0..CASES_PER_VERSION {
            let fetch = random_fetch(&mut rng, version, &backing);
            let correlation_id = rng.i32();
            let expected = crate_encoding(correlation_id, version, &fetch)
                .unwrap_or_else(|| panic!("v{version} case {case}: the crate encodes"));
            let chunks = encode_fetch_response(correlation_id, version, &fetch)
                .unwrap_or_else(|error| panic!("v{version} case {case}: {error}"));
            assert!(
                chunks.iter().all(|chunk| !chunk.is_empty()),
                "v{version} case {case}: no empty chunks"
            );
            let actual = materialize(&chunks);
            assert!(
                actual == expected,
                "v{version} case {case}: {} bytes differ from the crate's {}",
                actual.len(),
                expected.len()
            );
        }
    }
}

#[test]
fn fields_a_version_lacks_are_refused_like_the_crate_does() {
    let without_session = ZeroCopyFetch {
        response: FetchResponse::default().with_session_id(7),
        records: Vec::new(),
    };
    for version in VERSION_MIN..7 {
        assert!(crate_encoding(1, version, &without_session).is_none());
        assert!(encode_fetch_response(1, version, &without_session).is_err());
    }
    let replica = ZeroCopyFetch {
        response: FetchResponse::default()
            .with_responses(vec![FetchableTopicResponse::default().with_partitions(
                vec![PartitionData::default().with_preferred_read_replica(BrokerId(3))],
            )]),
        records: vec![vec![Some(Vec::new())]],
    };
    for version in VERSION_MIN..11 {
        assert!(crate_encoding(1, version, &replica).is_none());
        assert!(encode_fetch_response(1, version, &replica).is_err());
    }
    for version in [3, 17] {
        assert!(encode_fetch_response(1, version, &ZeroCopyFetch::default()).is_err());
    }
}
