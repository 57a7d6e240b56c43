//! Record batches as a client writes and reads them: keys, values, headers
//! and any of Kafka's codecs, through the `kafka-protocol` crate's batch
//! encoder and decoder (the engine's `build_batch` writes uncompressed
//! batches without headers only, which is all a broker test needs).

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::Error;

/// Bytes before a batch's `batchLength` ends: `baseOffset` and
/// `batchLength` themselves.
const LOG_OVERHEAD_BYTES: usize = 12;
/// Bytes of a v2 batch header.
const BATCH_HEADER_BYTES: usize = 61;

/// A compression codec, by Kafka's `compression.type` name.
#[derive(
    clap::ValueEnum,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (Kafka's xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The `kafka-protocol` compression.
    #[must_use]
    pub fn compression(self) -> Compression {
        match self {
            Self::None => Compression::None,
            Self::Gzip => Compression::Gzip,
            Self::Snappy => Compression::Snappy,
            Self::Lz4 => Compression::Lz4,
            Self::Zstd => Compression::Zstd,
        }
    }
}

/// One record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// The key; `None` is null.
    pub key: Option<Bytes>,
    /// The value; `None` is null (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in order; Kafka allows repeated keys, the encoder does not,
    /// so a later header replaces an earlier one of the same key.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// One v2 batch of `records` as a non-idempotent producer sends it: offsets
/// `0..n`, every record at `timestamp_ms` (`CreateTime`), compressed with
/// `codec`. The encoder keeps a batch whole only while `offset - sequence`
/// is constant and takes the first record's sequence as `baseSequence`, so
/// sequences run from -1 (no producer id, no sequence).
///
/// # Errors
/// [`Error::Protocol`] if `records` is empty or the encoder fails.
pub fn encode_batch(
    records: &[OutgoingRecord],
    timestamp_ms: i64,
    codec: Codec,
) -> Result<Bytes, Error> {
    if records.is_empty() {
        return Err(Error::Protocol(
            "a batch holds at least one record".to_owned(),
        ));
    }
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, record)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: index as i32 - 1,
            timestamp: timestamp_ms,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record
                .headers
                .iter()
                .map(|(key, value)| (StrBytes::from_string(key.clone()), value.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec.compression(),
        },
    )
    .map_err(|error| Error::Protocol(format!("encoding a record batch: {error}")))?;
    Ok(batch.freeze())
}

/// The length of every whole batch at the start of `records`, in order; a
/// trailing partial batch (a Fetch may cut the data at
/// `partition_max_bytes`) ends the list.
///
/// # Panics
/// Never: the length field lies inside the header size checked first.
#[must_use]
pub fn whole_batches(mut records: &[u8]) -> Vec<&[u8]> {
    let mut batches = Vec::new();
    while records.len() >= BATCH_HEADER_BYTES {
        let length = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let Some(total) = usize::try_from(length)
            .ok()
            .map(|length| length + LOG_OVERHEAD_BYTES)
            .filter(|total| *total >= BATCH_HEADER_BYTES && *total <= records.len())
        else {
            break;
        };
        let (batch, rest) = records.split_at(total);
        batches.push(batch);
        records = rest;
    }
    batches
}

/// The data records at or past `position` in a partition's Fetch data,
/// decompressed, in offset order; control records (transaction markers) are
/// left out, as a consumer does.
///
/// # Errors
/// [`Error::Protocol`] if a whole batch does not decode.
pub fn decode_fetched(records: &[u8], position: i64) -> Result<Vec<Record>, Error> {
    let mut decoded = Vec::new();
    for batch in whole_batches(records) {
        let mut bytes = Bytes::copy_from_slice(batch);
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|error| Error::Protocol(format!("decoding a fetched batch: {error}")))?;
        decoded.extend(
            set.records
                .into_iter()
                .filter(|record| !record.control && record.offset >= position),
        );
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<OutgoingRecord> {
        vec![
            OutgoingRecord {
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"first")),
                headers: vec![("h".to_owned(), Some(Bytes::from_static(b"v")))],
            },
            OutgoingRecord {
                key: None,
                value: None,
                headers: Vec::new(),
            },
        ]
    }

    /// Every codec round-trips keys, values, null values and headers, in one
    /// batch.
    #[test]
    fn batches_round_trip_with_every_codec() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let batch = encode_batch(&sample(), 1_700_000_000_000, codec).unwrap();
            assert_eq!(whole_batches(&batch).len(), 1, "{codec:?}");
            let decoded = decode_fetched(&batch, 0).unwrap();
            assert_eq!(decoded.len(), 2);
            assert_eq!(decoded[0].key.as_deref(), Some(&b"k"[..]));
            assert_eq!(decoded[0].value.as_deref(), Some(&b"first"[..]));
            assert_eq!(decoded[0].timestamp, 1_700_000_000_000);
            assert_eq!(decoded[0].headers.len(), 1);
            assert_eq!(decoded[1].value, None);
            assert_eq!(decoded[1].offset, 1);
        }
    }

    /// The engine validates what fjordctl sends exactly as a produce from
    /// any client.
    #[test]
    fn the_engine_accepts_the_batches() {
        for codec in [Codec::None, Codec::Gzip, Codec::Zstd] {
            let batch = encode_batch(&sample(), 0, codec).unwrap();
            fjord_engine::batch::validate_incoming(&batch, 1 << 20).unwrap();
        }
    }

    #[test]
    fn a_partial_tail_and_records_before_the_position_are_skipped() {
        let batch = encode_batch(&sample(), 0, Codec::None).unwrap();
        let mut fetched = batch.to_vec();
        fetched.extend_from_slice(&batch[..batch.len() / 2]);
        assert_eq!(whole_batches(&fetched).len(), 1);
        let decoded = decode_fetched(&fetched, 1).unwrap();
        assert_eq!(decoded.len(), 1);
        assert_eq!(decoded[0].offset, 1);
    }
}
