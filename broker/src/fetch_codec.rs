//! The zero-copy Fetch response: a frame written as a sequence of
//! [`ResponseChunk`]s, where each partition's records are the engine's
//! cached `Bytes` or a [`FileRange`] of a segment file, never copied into
//! the response buffer.
//!
//! Only the bytes around the records (frame size, response header, every
//! field of `FetchResponse`, `FetchableTopicResponse` and `PartitionData`)
//! are encoded here by hand; nested structs (aborted transactions, diverging
//! epoch, current leader, snapshot id, node endpoints) go through the
//! `kafka-protocol` crate's encoders. The output is byte-for-byte what
//! `ResponseKind::Fetch(..).encode` produces for Fetch v4..=v16 (v12 is the
//! first flexible version: compact arrays and strings, tagged fields, and
//! response header v1; v13 names topics by id; v16 adds the leaders'
//! `node_endpoints`, KIP-951), which the tests below check.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_engine::log::FileRange;
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, LeaderIdAndEpoch, NodeEndpoint, PartitionData, SnapshotId,
};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::protocol::Encodable;

use crate::error::BrokerError;

/// The oldest Fetch version this encoder writes.
pub const VERSION_MIN: i16 = 4;
/// The newest Fetch version this encoder writes.
pub const VERSION_MAX: i16 = 16;
/// The first flexible Fetch version.
const FLEXIBLE_VERSION: i16 = 12;
/// The first Fetch version that names topics by id instead of by name
/// (KIP-516).
pub const TOPIC_ID_VERSION: i16 = 13;
/// The first Fetch version with the response's `node_endpoints` (tag 0,
/// KIP-951).
pub const NODE_ENDPOINTS_VERSION: i16 = 16;

/// One piece of a response frame, sent in order by the connection writer.
#[derive(Clone, Debug)]
pub enum ResponseChunk {
    /// Bytes in memory: encoded fields, or record batches from the cache.
    Bytes(Bytes),
    /// Record batches in a segment file, sent with `sendfile(2)`.
    File(FileRange),
}

impl ResponseChunk {
    /// The chunk's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes.len() as u64,
            Self::File(range) => range.len,
        }
    }

    /// Whether the chunk holds no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Fetch response whose partitions' records travel beside it.
///
/// Every partition's `records` field in `response` is ignored; its records
/// are `records[topic][partition]` (`None` encodes a null records field).
#[derive(Debug, Default)]
pub struct ZeroCopyFetch {
    /// Every field but the records.
    pub response: FetchResponse,
    /// Per topic, per partition, in the order of `response.responses`.
    pub records: Vec<Vec<Option<Vec<ResponseChunk>>>>,
}

/// Writes chunks: encoded fields accumulate in `pending` until records (or
/// the end) cut them into a chunk.
struct ChunkWriter {
    pending: BytesMut,
    chunks: Vec<ResponseChunk>,
}

impl ChunkWriter {
    fn cut(&mut self) {
        if !self.pending.is_empty() {
            self.chunks
                .push(ResponseChunk::Bytes(self.pending.split().freeze()));
        }
    }

    fn records(&mut self, records: &[ResponseChunk]) {
        self.cut();
        self.chunks
            .extend(records.iter().filter(|chunk| !chunk.is_empty()).cloned());
    }
}

fn unsigned_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        // Truncation keeps the low 7 bits, as the varint format wants.
        #[allow(clippy::cast_possible_truncation)]
        buf.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    buf.put_u8(value as u8);
}

fn too_large(what: &str) -> BrokerError {
    BrokerError::Malformed(format!("Fetch response: {what} too large"))
}

/// An array or bytes length: compact (`len + 1`, 0 for null) in flexible
/// versions, `i32` (-1 for null) before.
fn length(buf: &mut BytesMut, version: i16, len: Option<u64>) -> Result<(), BrokerError> {
    if version >= FLEXIBLE_VERSION {
        unsigned_varint(buf, len.map_or(0, |len| len + 1));
    } else {
        let len = match len {
            None => -1,
            Some(len) => i32::try_from(len).map_err(|_| too_large("length"))?,
        };
        buf.put_i32(len);
    }
    Ok(())
}

/// Unknown tagged fields with tags in `first_tag..`, as the crate writes
/// them; the count written before them is the caller's.
fn unknown_tagged_fields(buf: &mut BytesMut, first_tag: i32, fields: &BTreeMap<i32, Bytes>) {
    for (&tag, value) in fields.range(first_tag..) {
        unsigned_varint(buf, u64::from(tag.unsigned_abs()));
        unsigned_varint(buf, value.len() as u64);
        buf.put_slice(value);
    }
}

fn tagged_struct<T: Encodable>(
    buf: &mut BytesMut,
    tag: u64,
    value: &T,
    version: i16,
) -> Result<(), BrokerError> {
    let size = value.compute_size(version).map_err(codec_error)?;
    unsigned_varint(buf, tag);
    unsigned_varint(buf, size as u64);
    value.encode(buf, version).map_err(codec_error)
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "called as map_err(codec_error), which passes the error by value"
)]
fn codec_error(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Malformed(format!("Fetch response: {error}"))
}

fn partition(
    out: &mut ChunkWriter,
    data: &PartitionData,
    records: Option<&[ResponseChunk]>,
    version: i16,
) -> Result<(), BrokerError> {
    let buf = &mut out.pending;
    buf.put_i32(data.partition_index);
    buf.put_i16(data.error_code);
    buf.put_i64(data.high_watermark);
    buf.put_i64(data.last_stable_offset);
    if version >= 5 {
        buf.put_i64(data.log_start_offset);
    }
    let aborted = data.aborted_transactions.as_ref();
    length(buf, version, aborted.map(|list| list.len() as u64))?;
    for transaction in aborted.into_iter().flatten() {
        transaction.encode(buf, version).map_err(codec_error)?;
    }
    if version >= 11 {
        buf.put_i32(data.preferred_read_replica.0);
    } else if data.preferred_read_replica.0 != -1 {
        return Err(BrokerError::Malformed(format!(
            "Fetch v{version} has no preferred read replica"
        )));
    }
    let records_len = records.map(|chunks| chunks.iter().map(ResponseChunk::len).sum::<u64>());
    length(buf, version, records_len)?;
    if let Some(records) = records {
        out.records(records);
    }
    if version >= FLEXIBLE_VERSION {
        let buf = &mut out.pending;
        let diverging = data.diverging_epoch != EpochEndOffset::default();
        let leader = data.current_leader != LeaderIdAndEpoch::default();
        let snapshot = data.snapshot_id != SnapshotId::default();
        let count = data.unknown_tagged_fields.len()
            + usize::from(diverging)
            + usize::from(leader)
            + usize::from(snapshot);
        unsigned_varint(buf, count as u64);
        if diverging {
            tagged_struct(buf, 0, &data.diverging_epoch, version)?;
        }
        if leader {
            tagged_struct(buf, 1, &data.current_leader, version)?;
        }
        if snapshot {
            tagged_struct(buf, 2, &data.snapshot_id, version)?;
        }
        unknown_tagged_fields(buf, 3, &data.unknown_tagged_fields);
    }
    Ok(())
}

fn body(out: &mut ChunkWriter, fetch: &ZeroCopyFetch, version: i16) -> Result<(), BrokerError> {
    let response = &fetch.response;
    assert_eq!(
        response.responses.len(),
        fetch.records.len(),
        "records for every topic"
    );
    let buf = &mut out.pending;
    buf.put_i32(response.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    } else if response.session_id != 0 {
        return Err(BrokerError::Malformed(format!(
            "Fetch v{version} has no session id"
        )));
    }
    length(buf, version, Some(response.responses.len() as u64))?;
    for (topic, records) in response.responses.iter().zip(&fetch.records) {
        assert_eq!(
            topic.partitions.len(),
            records.len(),
            "records for every partition"
        );
        let buf = &mut out.pending;
        if version >= TOPIC_ID_VERSION {
            buf.put_slice(topic.topic_id.as_bytes());
        } else {
            let name = topic.topic.0.as_bytes();
            if version >= FLEXIBLE_VERSION {
                unsigned_varint(buf, name.len() as u64 + 1);
            } else {
                buf.put_i16(i16::try_from(name.len()).map_err(|_| too_large("topic name"))?);
            }
            buf.put_slice(name);
        }
        length(buf, version, Some(topic.partitions.len() as u64))?;
        for (data, records) in topic.partitions.iter().zip(records) {
            partition(out, data, records.as_deref(), version)?;
        }
        if version >= FLEXIBLE_VERSION {
            let buf = &mut out.pending;
            unsigned_varint(buf, topic.unknown_tagged_fields.len() as u64);
            unknown_tagged_fields(buf, 0, &topic.unknown_tagged_fields);
        }
    }
    if version >= FLEXIBLE_VERSION {
        // Node endpoints (tag 0) exist from v16 only; before, the crate
        // leaves them out, and so does this.
        let endpoints = version >= NODE_ENDPOINTS_VERSION && !response.node_endpoints.is_empty();
        let buf = &mut out.pending;
        unsigned_varint(
            buf,
            response.unknown_tagged_fields.len() as u64 + u64::from(endpoints),
        );
        if endpoints {
            node_endpoints(buf, &response.node_endpoints, version)?;
        }
        unknown_tagged_fields(buf, 1, &response.unknown_tagged_fields);
    }
    Ok(())
}

/// The response's tagged field 0: a compact array of the leaders'
/// endpoints, each through the crate's encoder.
fn node_endpoints(
    buf: &mut BytesMut,
    endpoints: &[NodeEndpoint],
    version: i16,
) -> Result<(), BrokerError> {
    let mut array = BytesMut::new();
    unsigned_varint(&mut array, endpoints.len() as u64 + 1);
    for endpoint in endpoints {
        endpoint.encode(&mut array, version).map_err(codec_error)?;
    }
    unsigned_varint(buf, 0);
    unsigned_varint(buf, array.len() as u64);
    buf.put_slice(&array);
    Ok(())
}

/// Encodes the whole response frame (size, response header, body) of
/// Fetch `version` answering the request `correlation_id`, as chunks to
/// send in order. Record chunks are shared, not copied; empty chunks are
/// left out.
///
/// # Errors
/// [`BrokerError::Malformed`] if `version` is outside v4..=v16, a field is
/// set that the version lacks (as the crate's encoder refuses), or the
/// frame exceeds 2 GiB.
///
/// # Panics
/// If `fetch.records` does not have one entry per topic and partition of
/// `fetch.response` (a programmer error).
pub fn encode_fetch_response(
    correlation_id: i32,
    version: i16,
    fetch: &ZeroCopyFetch,
) -> Result<Vec<ResponseChunk>, BrokerError> {
    if !(VERSION_MIN..=VERSION_MAX).contains(&version) {
        return Err(BrokerError::Malformed(format!(
            "Fetch v{version} is not encoded zero-copy"
        )));
    }
    let mut out = ChunkWriter {
        pending: BytesMut::with_capacity(256),
        chunks: Vec::new(),
    };
    body(&mut out, fetch, version)?;
    out.cut();
    let body_len: u64 = out.chunks.iter().map(ResponseChunk::len).sum();
    let mut header = BytesMut::with_capacity(9);
    let header_len: u64 = if version >= FLEXIBLE_VERSION { 5 } else { 4 };
    let size = i32::try_from(header_len + body_len).map_err(|_| too_large("frame"))?;
    header.put_i32(size);
    header.put_i32(correlation_id);
    if version >= FLEXIBLE_VERSION {
        // Response header v1: no tagged fields.
        unsigned_varint(&mut header, 0);
    }
    let mut chunks = Vec::with_capacity(out.chunks.len() + 1);
    chunks.push(ResponseChunk::Bytes(header.freeze()));
    chunks.append(&mut out.chunks);
    Ok(chunks)
}

#[cfg(test)]
mod tests;
