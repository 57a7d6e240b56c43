//! Kafka record batch v2 ("magic 2"): parsing, validation and in-place rewriting.
//!
//! fjord stores batches exactly as producers encode them (Kafka's on-disk
//! format *is* the produce format), rewriting only the fields the broker owns:
//! `baseOffset`, `partitionLeaderEpoch` and, for topics with
//! `message.timestamp.type=LogAppendTime`, the timestamp type and timestamps.
//! Because the bytes are kept verbatim and later served to every consumer and
//! follower, whatever the broker accepts once is read forever. So a batch is
//! checked at the door, as Kafka's `UnifiedLog.analyzeAndValidateRecords` and
//! `LogValidator` do, before it gets an offset:
//!
//! * **Framing**: `12 + batchLength` must equal the bytes the producer sent for
//!   the batch, and `batchLength` must cover at least the 61-byte header. Every
//!   later check, and the offset assignment, trusts this length.
//! * **Size** against `max.message.bytes` (Kafka: `RecordTooLargeException`,
//!   [`Error::MessageTooLarge`]): bounds the memory and the segment space one
//!   request can take.
//! * **Magic 2** only: fjord stores no legacy message sets, so no down- or
//!   up-conversion exists.
//! * **`baseOffset` 0**: Kafka rejects client batches with any other base
//!   offset; the broker assigns offsets, a producer never does.
//! * **CRC-32C** over `attributes..end` (Kafka: `CorruptRecordException`): a
//!   batch damaged in the client or on the wire must fail here, not in every
//!   consumer that later fetches it.
//! * **Offset range and count**: `recordCount >= 1` and
//!   `recordCount == lastOffsetDelta + 1` (Kafka: "Inconsistent batch offset
//!   range and record count"). The broker assigns `baseOffset..=baseOffset +
//!   lastOffsetDelta` from the header alone; a lying header would make offsets
//!   overlap or leave gaps that consumers cannot step over.
//! * **Known compression codec**, and **no control batch** (only the broker
//!   writes transaction markers).
//! * **Producer fields**: an idempotent batch (`producerId >= 0`) needs a
//!   `baseSequence >= 0` (Kafka: "Invalid sequence number"), and a
//!   transactional batch needs a producer id (the Java and Python clients
//!   refuse to build one without; fjord refuses to store one), since the
//!   producer-state table keys everything on them.
//! * **Records** of uncompressed batches are walked like Kafka's
//!   `DefaultRecord.readFrom`: every length fits inside its record and batch,
//!   every varint is at most 5 (varlong 10) bytes, header counts are not
//!   negative, each record ends exactly where its length says, the batch
//!   ends exactly after `recordCount` records, and record `i` has
//!   `offsetDelta == i`, so offsets assigned from `baseOffset` are dense. Null
//!   key and value lengths are `-1`; fjord rejects other negative lengths,
//!   which Kafka would read as null.
//!
//! Compressed batches are checked on their header (and CRC) only: fjord does
//! not decompress on the produce path, so their inner records are not walked.
//! Timestamp bounds (`message.timestamp.*.max.ms`) need the topic's config and
//! are not checked here.
//!
//! A follower appends its leader's batches as they are, offsets and all;
//! [`validate_replicated`] checks only what protects the log itself
//! (framing, CRC, offsets it can hold), since the leader checked the rest.
//!
//! All parsing is bounds-checked: no input, however malformed, makes these
//! functions panic, except the documented `# Panics` of the rewriting
//! functions, which take batches already validated.

use crate::error::{Error, Result};
use crate::types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampMs};

/// Size of a v2 batch header: every field from `baseOffset` to `recordCount`
/// (Kafka's `RECORD_BATCH_OVERHEAD`).
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before the part `batchLength` counts: `baseOffset` and
/// `batchLength` themselves (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD_BYTES: usize = 12;

/// The only batch format fjord stores.
pub const MAGIC_V2: i8 = 2;

/// The smallest valid `batchLength`: a header with no records.
const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;

// Field positions inside the header (Kafka's DefaultRecordBatch *_OFFSET).
const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from here to the end of the batch.
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

const _: () = assert!(BATCH_LENGTH_AT + 4 == LOG_OVERHEAD_BYTES);
const _: () = assert!(CRC_AT + 4 == ATTRIBUTES_AT);
const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_BYTES);

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;
const DELETE_HORIZON_BIT: i16 = 0x40;

/// A batch's compression codec (attribute bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as is.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// What a batch's timestamps mean (attribute bit 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// Timestamps set by the producer.
    CreateTime,
    /// The broker's append time, in `maxTimestamp`; consumers give every
    /// record of the batch that time.
    LogAppendTime,
}

/// The 61-byte header of a v2 record batch, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (0 as a producer sends it).
    pub base_offset: Offset,
    /// Bytes after this field: the batch is `12 + batch_length` bytes long.
    pub batch_length: i32,
    /// Leader epoch of the broker that appended the batch.
    pub partition_leader_epoch: LeaderEpoch,
    /// Format version; always 2 for a parsed header.
    pub magic: i8,
    /// CRC-32C of the bytes from `attributes` to the end of the batch.
    pub crc: u32,
    /// Compression, timestamp type, transactional, control, delete horizon.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record; record timestamps are deltas from it.
    pub base_timestamp: TimestampMs,
    /// Largest record timestamp, or the append time under `LogAppendTime`.
    pub max_timestamp: TimestampMs,
    /// Idempotent producer id, or -1.
    pub producer_id: ProducerId,
    /// Producer epoch, or -1.
    pub producer_epoch: ProducerEpoch,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes` (which may extend past it).
    ///
    /// Checks only what the header alone can tell: `bytes` holds 61 bytes,
    /// magic is 2 and `batch_length` covers at least the header. It checks
    /// neither the CRC nor that the whole batch is present.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(invalid(format!(
                "{} bytes is shorter than the {BATCH_HEADER_BYTES}-byte batch header",
                bytes.len()
            )));
        }
        let header = BatchHeader::decode(bytes);
        if header.magic != MAGIC_V2 {
            return Err(invalid(format!("magic {} is not {MAGIC_V2}", header.magic)));
        }
        if header.batch_length < MIN_BATCH_LENGTH {
            return Err(invalid(format!(
                "batchLength {} is smaller than the header's {MIN_BATCH_LENGTH} bytes",
                header.batch_length
            )));
        }
        Ok(header)
    }

    /// Reads the header fields without checking them; `bytes` must hold at
    /// least a header.
    fn decode(bytes: &[u8]) -> BatchHeader {
        BatchHeader {
            base_offset: Offset(read_i64(bytes, BASE_OFFSET_AT)),
            batch_length: read_i32(bytes, BATCH_LENGTH_AT),
            partition_leader_epoch: LeaderEpoch(read_i32(bytes, PARTITION_LEADER_EPOCH_AT)),
            magic: bytes[MAGIC_AT] as i8,
            crc: read_u32(bytes, CRC_AT),
            attributes: read_i16(bytes, ATTRIBUTES_AT),
            last_offset_delta: read_i32(bytes, LAST_OFFSET_DELTA_AT),
            base_timestamp: TimestampMs(read_i64(bytes, BASE_TIMESTAMP_AT)),
            max_timestamp: TimestampMs(read_i64(bytes, MAX_TIMESTAMP_AT)),
            producer_id: ProducerId(read_i64(bytes, PRODUCER_ID_AT)),
            producer_epoch: ProducerEpoch(read_i16(bytes, PRODUCER_EPOCH_AT)),
            base_sequence: read_i32(bytes, BASE_SEQUENCE_AT),
            record_count: read_i32(bytes, RECORD_COUNT_AT),
        }
    }

    /// The whole batch's size in bytes, `12 + batch_length` (a negative
    /// `batch_length`, which [`BatchHeader::parse`] never returns, counts as 0).
    #[must_use]
    pub fn total_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// Offset of the batch's last record.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(i64::from(self.last_offset_delta))
    }

    /// The compression codec.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] for codec ids 5-7, which Kafka does not define.
    pub fn compression(&self) -> Result<Compression> {
        match self.attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            unknown => Err(invalid(format!("unknown compression codec {unknown}"))),
        }
    }

    /// Whether timestamps are the producer's or the broker's append time.
    #[must_use]
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT == 0 {
            TimestampType::CreateTime
        } else {
            TimestampType::LogAppendTime
        }
    }

    /// Whether the batch belongs to a transaction.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whether `base_timestamp` holds a compaction delete horizon (set only
    /// by the log cleaner, never by producers).
    #[must_use]
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_BIT != 0
    }

    /// Whether the batch comes from an idempotent producer (Kafka's
    /// `hasProducerId`).
    #[must_use]
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.0 >= 0
    }

    /// Sequence number of the batch's last record: `base_sequence +
    /// last_offset_delta`, wrapping past `i32::MAX` to 0 as Kafka's
    /// `DefaultRecordBatch.incrementSequence` does. A batch without sequence
    /// (`base_sequence` -1) has last sequence -1, as in Kafka.
    #[must_use]
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence == -1 {
            return -1;
        }
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// Kafka's `DefaultRecordBatch.incrementSequence`: sequences run from 0 to
/// `i32::MAX` and then start again at 0.
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// CRC-32C of `batch[21..12 + batchLength]`, the range Kafka's v2 CRC covers
/// (`attributes` to the end of the batch).
///
/// # Panics
/// If `batch` is shorter than 21 bytes, declares a `batchLength` under 9
/// (ending before `attributes`), or is shorter than its declared length: use
/// [`crc_matches`] on untrusted bytes.
#[must_use]
pub fn compute_crc(batch: &[u8]) -> u32 {
    assert!(
        batch.len() >= ATTRIBUTES_AT,
        "compute_crc on {} bytes, shorter than a batch header",
        batch.len()
    );
    let total = declared_total_bytes(batch).unwrap_or(0);
    assert!(
        (ATTRIBUTES_AT..=batch.len()).contains(&total),
        "compute_crc on {} bytes but the batch declares {total}",
        batch.len()
    );
    crc32c::crc32c(&batch[ATTRIBUTES_AT..total])
}

/// Whether `batch` holds its whole declared length and its stored CRC
/// matches the computed one. Never panics: anything too short to hold its
/// header and declared length does not match.
#[must_use]
pub fn crc_matches(batch: &[u8]) -> bool {
    if batch.len() < BATCH_HEADER_BYTES {
        return false;
    }
    match declared_total_bytes(batch) {
        Some(total) if (BATCH_HEADER_BYTES..=batch.len()).contains(&total) => {
            crc32c::crc32c(&batch[ATTRIBUTES_AT..total]) == read_u32(batch, CRC_AT)
        }
        _ => false,
    }
}

/// `12 + batchLength`, or `None` if fewer than 12 bytes are given or the
/// length is negative.
fn declared_total_bytes(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return None;
    }
    let batch_length = usize::try_from(read_i32(bytes, BATCH_LENGTH_AT)).ok()?;
    Some(LOG_OVERHEAD_BYTES + batch_length)
}

/// Validates one batch as a producer sent it, before the broker assigns it
/// offsets. The checks, and why each is made, are listed in the module
/// documentation; they run in this order: framing, size, header, base offset,
/// CRC, offset range and count, codec, control, producer fields, records.
///
/// # Errors
/// [`Error::MessageTooLarge`] if `batch` is longer than `max_message_bytes`;
/// [`Error::InvalidBatch`], naming the failed check, for every other failure.
pub fn validate_incoming(batch: &[u8], max_message_bytes: usize) -> Result<BatchHeader> {
    if batch.len() < LOG_OVERHEAD_BYTES {
        return Err(invalid(format!(
            "{} bytes cannot hold baseOffset and batchLength",
            batch.len()
        )));
    }
    let batch_length = read_i32(batch, BATCH_LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(invalid(format!(
            "batchLength {batch_length} is smaller than the header's {MIN_BATCH_LENGTH} bytes"
        )));
    }
    let declared = LOG_OVERHEAD_BYTES + batch_length as usize;
    if declared != batch.len() {
        return Err(invalid(format!(
            "batchLength {batch_length} declares a {declared}-byte batch but {} bytes were sent",
            batch.len()
        )));
    }
    if batch.len() > max_message_bytes {
        return Err(Error::MessageTooLarge {
            size: batch.len(),
            max: max_message_bytes,
        });
    }
    let header = BatchHeader::parse(batch)?;
    if header.base_offset != Offset::ZERO {
        return Err(invalid(format!(
            "baseOffset of a produced batch must be 0, not {}",
            header.base_offset
        )));
    }
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(invalid(format!(
            "stored CRC {:#010x} does not match computed {computed:#010x}",
            header.crc
        )));
    }
    if header.record_count < 1 {
        return Err(invalid(format!(
            "recordCount {} is not positive",
            header.record_count
        )));
    }
    if i64::from(header.last_offset_delta) + 1 != i64::from(header.record_count) {
        return Err(invalid(format!(
            "lastOffsetDelta {} does not match recordCount {}",
            header.last_offset_delta, header.record_count
        )));
    }
    let compression = header.compression()?;
    if header.is_control() {
        return Err(invalid("producers may not write control batches"));
    }
    if header.is_idempotent() && header.base_sequence < 0 {
        return Err(invalid(format!(
            "idempotent batch of producer {} has negative baseSequence {}",
            header.producer_id.0, header.base_sequence
        )));
    }
    if header.is_transactional() && !header.is_idempotent() {
        return Err(invalid("transactional batch without a producer id"));
    }
    if compression == Compression::None {
        let mut cursor = RecordCursor::new(
            &batch[BATCH_HEADER_BYTES..],
            header.record_count,
            header.record_count - 1,
        );
        while let Some(record) = cursor.next_record(&mut |_, _| {}) {
            record?;
        }
    }
    Ok(header)
}

/// Validates one batch a follower received from its leader, to append as
/// is: the framing (`12 + batchLength` is exactly the bytes given), magic 2,
/// the CRC ([`scan_batch`]), a known codec, and offsets the log can hold
/// (`baseOffset >= 0`, `lastOffsetDelta >= 0`, the last offset within
/// `i64`). Nothing else: the leader validated the records when it accepted
/// them, and a compacted leader log legitimately holds batches Kafka's
/// produce checks refuse (fewer records than `lastOffsetDelta + 1`, even
/// none), as Kafka's follower append (`ignoreRecordSize`, no
/// `LogValidator`) trusts them too. `max.message.bytes` is the leader's.
///
/// # Errors
/// [`Error::InvalidBatch`], naming the failed check.
pub fn validate_replicated(batch: &[u8]) -> Result<BatchHeader> {
    let header = match scan_batch(batch) {
        ScanOutcome::Valid(header) => header,
        ScanOutcome::Incomplete => {
            return Err(invalid(format!(
                "{} bytes hold less than the batch they start",
                batch.len()
            )))
        }
        ScanOutcome::Invalid(reason) => return Err(invalid(reason)),
    };
    if header.total_bytes() != batch.len() {
        return Err(invalid(format!(
            "batchLength {} declares a {}-byte batch but {} bytes were given",
            header.batch_length,
            header.total_bytes(),
            batch.len()
        )));
    }
    if header.base_offset < Offset::ZERO || header.last_offset_delta < 0 {
        return Err(invalid(format!(
            "offsets {}+{} are not an offset range",
            header.base_offset, header.last_offset_delta
        )));
    }
    if header
        .base_offset
        .0
        .checked_add(i64::from(header.last_offset_delta))
        .is_none()
    {
        return Err(invalid(format!(
            "baseOffset {} + lastOffsetDelta {} overflows",
            header.base_offset, header.last_offset_delta
        )));
    }
    header.compression()?;
    Ok(header)
}

/// Splits a record set (concatenated batches, as a produce request or a log
/// segment carries them) into one slice per batch, by each batch's
/// `batchLength`.
///
/// Yields `Err(InvalidBatch)` once and then ends when the remaining bytes
/// cannot hold a batch header's length fields, declare a `batchLength`
/// smaller than a header, or hold less than the declared length (a truncated
/// final batch). Slices are framed only: run [`validate_incoming`] on each.
/// Kafka's produce requests (v3+) carry exactly one batch per partition; the
/// caller enforces that if it wants to.
#[must_use]
pub fn split_batches(records: &[u8]) -> SplitBatches<'_> {
    SplitBatches {
        remaining: records,
        failed: false,
    }
}

/// Iterator returned by [`split_batches`].
#[derive(Debug, Clone)]
pub struct SplitBatches<'a> {
    remaining: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for SplitBatches<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.remaining.is_empty() {
            return None;
        }
        let framed = frame_one(self.remaining);
        match framed {
            Ok(total) => {
                let (batch, rest) = self.remaining.split_at(total);
                self.remaining = rest;
                Some(Ok(batch))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// The length of the batch at the start of `bytes`, if it is all there.
fn frame_one(bytes: &[u8]) -> Result<usize> {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return Err(invalid(format!(
            "truncated batch: {} bytes left, fewer than baseOffset and batchLength",
            bytes.len()
        )));
    }
    let batch_length = read_i32(bytes, BATCH_LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(invalid(format!(
            "batchLength {batch_length} is smaller than the header's {MIN_BATCH_LENGTH} bytes"
        )));
    }
    let total = LOG_OVERHEAD_BYTES + batch_length as usize;
    if total > bytes.len() {
        return Err(invalid(format!(
            "truncated batch: batchLength declares {total} bytes but {} remain",
            bytes.len()
        )));
    }
    Ok(total)
}

/// Sets `baseOffset`, which the CRC does not cover, so the CRC stays valid.
///
/// # Panics
/// If `batch` is shorter than a batch header.
pub fn set_base_offset(batch: &mut [u8], base: Offset) {
    assert_header(batch);
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base.0.to_be_bytes());
}

/// Sets `partitionLeaderEpoch`, which the CRC does not cover, so the CRC
/// stays valid.
///
/// # Panics
/// If `batch` is shorter than a batch header.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    assert_header(batch);
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.0.to_be_bytes());
}

/// Stamps the batch with the broker's append time, for topics with
/// `message.timestamp.type=LogAppendTime`: sets the timestamp-type attribute,
/// sets `maxTimestamp` and `baseTimestamp` to `timestamp`, and recomputes the
/// CRC. Consumers then give every record of the batch `timestamp` (they read
/// `maxTimestamp` under `LogAppendTime`). Kafka's in-place path sets only
/// `maxTimestamp`; setting `baseTimestamp` too matches what Kafka's
/// re-encoding path writes, and keeps readers that ignore the attribute close
/// to the truth. A batch carrying a delete horizon keeps its `baseTimestamp`,
/// which then is that horizon, not a timestamp. Does nothing (and skips the
/// CRC pass) if the batch already has exactly these values.
///
/// # Panics
/// If `batch` is shorter than a header or than its declared length: call it
/// on validated batches only.
pub fn set_log_append_time(batch: &mut [u8], timestamp: TimestampMs) {
    assert_header(batch);
    let attributes = read_i16(batch, ATTRIBUTES_AT);
    let keeps_base = attributes & DELETE_HORIZON_BIT != 0;
    if attributes & TIMESTAMP_TYPE_BIT != 0
        && read_i64(batch, MAX_TIMESTAMP_AT) == timestamp.0
        && (keeps_base || read_i64(batch, BASE_TIMESTAMP_AT) == timestamp.0)
    {
        return;
    }
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2]
        .copy_from_slice(&(attributes | TIMESTAMP_TYPE_BIT).to_be_bytes());
    if !keeps_base {
        batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.0.to_be_bytes());
    }
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&timestamp.0.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

fn assert_header(batch: &[u8]) {
    assert!(
        batch.len() >= BATCH_HEADER_BYTES,
        "{} bytes is shorter than a batch header",
        batch.len()
    );
}

/// What recovery finds at a position in a segment file.
#[derive(Debug)]
pub enum ScanOutcome {
    /// A whole batch with a matching CRC starts here.
    Valid(BatchHeader),
    /// The bytes end before the batch does: a torn tail if at the end of the
    /// log.
    Incomplete,
    /// Bytes that are no batch: impossible header fields, zeros, or a CRC
    /// mismatch.
    Invalid(String),
}

/// Classifies the bytes starting at a batch position in a log segment;
/// `bytes` may extend past the batch or stop short of it.
///
/// * `Incomplete` if fewer than 12 bytes are given, or the header looks
///   possible but fewer than its declared total bytes are given.
/// * `Invalid` if `batchLength` is smaller than a header (including a
///   zero-filled region, `batchLength` 0), if the magic byte (when present)
///   is not 2, or if the whole batch is present but its CRC does not match.
/// * `Valid` otherwise. Only the header and CRC are checked: the engine
///   validated the records before it wrote them, and the CRC proves they are
///   unchanged.
#[must_use]
pub fn scan_batch(bytes: &[u8]) -> ScanOutcome {
    if bytes.len() < LOG_OVERHEAD_BYTES {
        return ScanOutcome::Incomplete;
    }
    let batch_length = read_i32(bytes, BATCH_LENGTH_AT);
    if batch_length == 0 && bytes[..LOG_OVERHEAD_BYTES].iter().all(|&byte| byte == 0) {
        return ScanOutcome::Invalid("zero-filled batch header".to_owned());
    }
    if batch_length < MIN_BATCH_LENGTH {
        return ScanOutcome::Invalid(format!(
            "batchLength {batch_length} is smaller than the header's {MIN_BATCH_LENGTH} bytes"
        ));
    }
    if let Some(&magic) = bytes.get(MAGIC_AT) {
        if magic as i8 != MAGIC_V2 {
            return ScanOutcome::Invalid(format!("magic {} is not {MAGIC_V2}", magic as i8));
        }
    }
    let total = LOG_OVERHEAD_BYTES + batch_length as usize;
    if bytes.len() < total {
        return ScanOutcome::Incomplete;
    }
    let header = BatchHeader::decode(bytes);
    let computed = crc32c::crc32c(&bytes[ATTRIBUTES_AT..total]);
    if computed != header.crc {
        return ScanOutcome::Invalid(format!(
            "stored CRC {:#010x} does not match computed {computed:#010x}",
            header.crc
        ));
    }
    ScanOutcome::Valid(header)
}

/// One record of an uncompressed batch, borrowing from the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset relative to the batch's `base_offset`.
    pub offset_delta: i32,
    /// Timestamp relative to the batch's `base_timestamp` (meaningless under
    /// `LogAppendTime`, where every record has the batch's `max_timestamp`).
    pub timestamp_delta: i64,
    /// The key, `None` for a null key.
    pub key: Option<&'a [u8]>,
    /// The value, `None` for a null value (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers in order: key (UTF-8 string bytes, not checked) and value.
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Iterates the records of an uncompressed batch.
///
/// Returns an iterator of `Result<Record>` that yields at most
/// `recordCount` records, then one error if bytes are left over. It applies
/// every record-level check of [`validate_incoming`] (lengths, varints,
/// `offsetDelta == index`) and stops after the first error. It does not
/// check the CRC: use it on validated batches or after [`crc_matches`].
///
/// # Errors
/// [`Error::InvalidBatch`] if the header does not parse, the batch is shorter
/// than its declared length, or the batch is compressed (fjord does not
/// decompress).
pub fn records(batch: &[u8]) -> Result<Records<'_>> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_bytes();
    if batch.len() < total {
        return Err(invalid(format!(
            "batchLength declares {total} bytes but only {} are given",
            batch.len()
        )));
    }
    let compression = header.compression()?;
    if compression != Compression::None {
        return Err(invalid(format!(
            "cannot iterate records of a {compression:?}-compressed batch"
        )));
    }
    Ok(Records {
        cursor: RecordCursor::new(
            &batch[BATCH_HEADER_BYTES..total],
            header.record_count,
            header.last_offset_delta,
        ),
    })
}

/// Iterates the records of `header`'s batch from its records section once
/// not compressed (an uncompressed batch's bytes after its header, or a
/// compressed batch's section once decompressed), with the checks of
/// [`records`].
#[must_use]
pub fn records_in<'a>(header: &BatchHeader, section: &'a [u8]) -> Records<'a> {
    Records {
        cursor: RecordCursor::new(section, header.record_count, header.last_offset_delta),
    }
}

/// Iterator returned by [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    cursor: RecordCursor<'a>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut headers = Vec::new();
        let record = self
            .cursor
            .next_record(&mut |key, value| headers.push((key, value)))?;
        Some(record.map(|fields| Record {
            offset_delta: fields.offset_delta,
            timestamp_delta: fields.timestamp_delta,
            key: fields.key,
            value: fields.value,
            headers,
        }))
    }
}

/// A record's fields other than its headers.
struct RecordFields<'a> {
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Walks the records section of an uncompressed batch, checking each record
/// and that exactly `record_count` records fill the section.
#[derive(Debug, Clone)]
struct RecordCursor<'a> {
    reader: Reader<'a>,
    next_index: i32,
    record_count: i32,
    /// The largest offset delta allowed. A batch with as many records as
    /// offsets (every produced batch) must have `offsetDelta == index`; one
    /// the log cleaner thinned keeps its offset range with fewer records, so
    /// its deltas need only increase strictly up to this.
    last_offset_delta: i32,
    previous_delta: Option<i32>,
    done: bool,
}

impl<'a> RecordCursor<'a> {
    fn new(records: &'a [u8], record_count: i32, last_offset_delta: i32) -> Self {
        RecordCursor {
            reader: Reader { bytes: records },
            next_index: 0,
            record_count,
            last_offset_delta,
            previous_delta: None,
            done: false,
        }
    }

    fn delta_fits(&self, delta: i32, index: i32) -> bool {
        if self.record_count.checked_sub(1) == Some(self.last_offset_delta) {
            return delta == index;
        }
        delta <= self.last_offset_delta
            && self.previous_delta.is_none_or(|previous| delta > previous)
    }

    /// The next record, handing each of its headers to `on_header`; `None`
    /// after the last record or the first error.
    fn next_record(
        &mut self,
        on_header: &mut dyn FnMut(&'a [u8], Option<&'a [u8]>),
    ) -> Option<Result<RecordFields<'a>>> {
        if self.done {
            return None;
        }
        if self.next_index >= self.record_count {
            self.done = true;
            if self.reader.bytes.is_empty() {
                return None;
            }
            return Some(Err(invalid(format!(
                "{} bytes left after the declared {} records",
                self.reader.bytes.len(),
                self.record_count
            ))));
        }
        let index = self.next_index;
        let result = read_record(&mut self.reader, on_header)
            .and_then(|fields| {
                if self.delta_fits(fields.offset_delta, index) {
                    self.previous_delta = Some(fields.offset_delta);
                    Ok(fields)
                } else {
                    Err(RecordError::Text(format!(
                        "offsetDelta {} is not the record's index",
                        fields.offset_delta
                    )))
                }
            })
            .map_err(|error| invalid(format!("record {index}: {error}")));
        self.next_index += 1;
        if result.is_err() {
            self.done = true;
        }
        Some(result)
    }
}

/// Why a record failed to parse; text built only on the error path.
enum RecordError {
    Static(&'static str),
    Text(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Static(text) => f.write_str(text),
            RecordError::Text(text) => f.write_str(text),
        }
    }
}

impl From<&'static str> for RecordError {
    fn from(text: &'static str) -> Self {
        RecordError::Static(text)
    }
}

/// Reads one record, as Kafka's `DefaultRecord.readFrom` does.
fn read_record<'a>(
    reader: &mut Reader<'a>,
    on_header: &mut dyn FnMut(&'a [u8], Option<&'a [u8]>),
) -> std::result::Result<RecordFields<'a>, RecordError> {
    let length = reader.varint()?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    let mut body = Reader {
        bytes: reader
            .take(length)
            .map_err(|_| "record length runs past the end of the batch")?,
    };
    let _attributes = body.byte()?;
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let header_count = body.varint()?;
    let header_count =
        usize::try_from(header_count).map_err(|_| "negative number of record headers")?;
    // Each header takes at least two bytes, so this also bounds the loop.
    if header_count > body.bytes.len() {
        return Err("more record headers than bytes left in the record".into());
    }
    for _ in 0..header_count {
        let key_length = body.varint()?;
        let key_length = usize::try_from(key_length).map_err(|_| "negative header key length")?;
        let header_key = body.take(key_length)?;
        let header_value = body.nullable_bytes()?;
        on_header(header_key, header_value);
    }
    if !body.bytes.is_empty() {
        return Err(RecordError::Text(format!(
            "{} bytes left after the last field of a {length}-byte record",
            body.bytes.len()
        )));
    }
    Ok(RecordFields {
        offset_delta,
        timestamp_delta,
        key,
        value,
    })
}

/// A bounds-checked cursor over bytes.
#[derive(Debug, Clone)]
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> std::result::Result<u8, &'static str> {
        let (&first, rest) = self
            .bytes
            .split_first()
            .ok_or("record ends inside a field")?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, count: usize) -> std::result::Result<&'a [u8], &'static str> {
        if count > self.bytes.len() {
            return Err("field length runs past the end of the record");
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// Kafka's `ByteUtils.readVarint`: a zigzag-encoded i32 in at most 5
    /// bytes; bits of the fifth byte beyond 32 are dropped, as Kafka does.
    fn varint(&mut self) -> std::result::Result<i32, &'static str> {
        let mut raw: u32 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.byte()?;
            raw |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i32 ^ -((raw & 1) as i32));
            }
        }
        Err("varint longer than 5 bytes")
    }

    /// Kafka's `ByteUtils.readVarlong`: a zigzag-encoded i64 in at most 10
    /// bytes.
    fn varlong(&mut self) -> std::result::Result<i64, &'static str> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err("varlong longer than 10 bytes")
    }

    /// A varint length and that many bytes; length -1 is null.
    fn nullable_bytes(&mut self) -> std::result::Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            length if length < 0 => Err("negative length other than -1 (null)"),
            length => self.take(length as usize).map(Some),
        }
    }
}

/// A record's key and value for [`build_batch`]; `None` is null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Encodes a valid uncompressed v2 batch of `records` (key, value; no
/// headers), as a producer would: `baseOffset` 0, `partitionLeaderEpoch` -1,
/// `CreateTime`, every record at `base_timestamp` (so `maxTimestamp` equals it),
/// offset deltas `0..n`, and a correct CRC. `producer` gives the producer id,
/// epoch and base sequence of an idempotent producer; `None` writes -1 for
/// all three. An empty `records` gives a well-formed batch with
/// `recordCount` 0, which [`validate_incoming`] rejects.
///
/// # Panics
/// If the batch would exceed `i32::MAX` bytes.
#[must_use]
pub fn build_batch(
    records: &[KeyValue<'_>],
    base_timestamp: TimestampMs,
    producer: Option<(ProducerId, ProducerEpoch, i32)>,
) -> Vec<u8> {
    encode_batch(records, &[], base_timestamp, producer)
}

/// [`build_batch`], with `headers` attached to every record.
fn encode_batch(
    records: &[KeyValue<'_>],
    headers: &[(&[u8], Option<&[u8]>)],
    base_timestamp: TimestampMs,
    producer: Option<(ProducerId, ProducerEpoch, i32)>,
) -> Vec<u8> {
    let payload_bytes: usize = records
        .iter()
        .map(|(key, value)| key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + 16)
        .sum();
    let mut batch = Vec::with_capacity(BATCH_HEADER_BYTES + payload_bytes);
    batch.resize(BATCH_HEADER_BYTES, 0);
    let mut body = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        let record = Record {
            offset_delta: index as i32,
            timestamp_delta: 0,
            key: *key,
            value: *value,
            headers: headers.to_vec(),
        };
        put_record(&mut batch, &mut body, &record);
    }
    let batch_length = batch.len() - LOG_OVERHEAD_BYTES;
    assert!(
        i32::try_from(batch_length).is_ok(),
        "a batch of {batch_length} bytes does not fit batchLength"
    );
    let record_count = records.len() as i32;
    let (producer_id, producer_epoch, base_sequence) =
        producer.unwrap_or((ProducerId::NONE, ProducerEpoch(-1), -1));

    let header = &mut batch[..BATCH_HEADER_BYTES];
    header[BASE_OFFSET_AT..BATCH_LENGTH_AT].copy_from_slice(&0_i64.to_be_bytes());
    header[BATCH_LENGTH_AT..PARTITION_LEADER_EPOCH_AT]
        .copy_from_slice(&(batch_length as i32).to_be_bytes());
    header[PARTITION_LEADER_EPOCH_AT..MAGIC_AT]
        .copy_from_slice(&LeaderEpoch::UNKNOWN.0.to_be_bytes());
    header[MAGIC_AT] = MAGIC_V2 as u8;
    header[ATTRIBUTES_AT..LAST_OFFSET_DELTA_AT].copy_from_slice(&0_i16.to_be_bytes());
    header[LAST_OFFSET_DELTA_AT..BASE_TIMESTAMP_AT]
        .copy_from_slice(&(record_count - 1).to_be_bytes());
    header[BASE_TIMESTAMP_AT..MAX_TIMESTAMP_AT].copy_from_slice(&base_timestamp.0.to_be_bytes());
    header[MAX_TIMESTAMP_AT..PRODUCER_ID_AT].copy_from_slice(&base_timestamp.0.to_be_bytes());
    header[PRODUCER_ID_AT..PRODUCER_EPOCH_AT].copy_from_slice(&producer_id.0.to_be_bytes());
    header[PRODUCER_EPOCH_AT..BASE_SEQUENCE_AT].copy_from_slice(&producer_epoch.0.to_be_bytes());
    header[BASE_SEQUENCE_AT..RECORD_COUNT_AT].copy_from_slice(&base_sequence.to_be_bytes());
    header[RECORD_COUNT_AT..BATCH_HEADER_BYTES].copy_from_slice(&record_count.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Appends `record` to `out` in Kafka's `DefaultRecord` layout (length
/// prefix, attributes 0, deltas, key, value, headers); `body` is scratch space.
fn put_record(out: &mut Vec<u8>, body: &mut Vec<u8>, record: &Record<'_>) {
    body.clear();
    body.push(0); // record attributes: unused
    put_varlong(body, record.timestamp_delta);
    put_varint(body, record.offset_delta);
    put_nullable_bytes(body, record.key);
    put_nullable_bytes(body, record.value);
    put_varint(body, record.headers.len() as i32);
    for (header_key, header_value) in &record.headers {
        put_varint(body, header_key.len() as i32);
        body.extend_from_slice(header_key);
        put_nullable_bytes(body, *header_value);
    }
    put_varint(out, body.len() as i32);
    out.extend_from_slice(body);
}

/// A batch rebuilt from `original` (a stored, valid batch) keeping only
/// `kept` of its records, as the log cleaner writes it: every header field
/// that idempotence and offsets depend on (base offset, last offset delta,
/// producer id, epoch, base sequence, leader epoch, max timestamp) is kept,
/// so a batch whose records are all removed still tells where its producer's
/// sequence stands. The records keep their offset deltas (offsets never
/// change); the section is compressed again with the batch's own codec.
/// With `delete_horizon`, the batch's base timestamp becomes that horizon and
/// the delete-horizon attribute is set (KIP-534), and each record's
/// timestamp delta is rewritten so its timestamp is unchanged.
///
/// # Errors
/// [`Error::InvalidBatch`] if the codec fails or the result exceeds a batch's
/// size limit.
///
/// # Panics
/// If `original` is shorter than a batch header.
pub fn rebuild_batch(
    original: &[u8],
    kept: &[Record<'_>],
    delete_horizon: Option<TimestampMs>,
) -> Result<Vec<u8>> {
    assert_header(original);
    let header = BatchHeader::decode(original);
    let codec = header.compression()?;
    let base_timestamp = delete_horizon.unwrap_or(header.base_timestamp);
    let shift = header.base_timestamp.0 - base_timestamp.0;
    let mut section = Vec::new();
    let mut body = Vec::new();
    for record in kept {
        let record = Record {
            timestamp_delta: record.timestamp_delta + shift,
            ..record.clone()
        };
        put_record(&mut section, &mut body, &record);
    }
    let mut batch = bytes::BytesMut::with_capacity(BATCH_HEADER_BYTES + section.len());
    batch.extend_from_slice(&original[..BATCH_HEADER_BYTES]);
    crate::codec::compress(codec, &section, &mut batch)?;
    let batch_length = i32::try_from(batch.len() - LOG_OVERHEAD_BYTES)
        .map_err(|_| invalid("rebuilt batch exceeds i32::MAX bytes"))?;
    let record_count =
        i32::try_from(kept.len()).map_err(|_| invalid("too many records for one batch"))?;
    let mut attributes = header.attributes;
    if delete_horizon.is_some() {
        attributes |= DELETE_HORIZON_BIT;
    }
    batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8]
        .copy_from_slice(&base_timestamp.0.to_be_bytes());
    batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&record_count.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(batch.to_vec())
}

fn put_nullable_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

/// Kafka's `ByteUtils.writeVarint`: zigzag, then 7 bits a byte.
fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned_varint(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// Kafka's `ByteUtils.writeVarlong`.
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidBatch(reason.into())
}

fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}

fn read_i16(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(read_array(bytes, at))
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(read_array(bytes, at))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(read_array(bytes, at))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(read_array(bytes, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: TimestampMs = TimestampMs(1_700_000_000_000);
    const MAX: usize = 1 << 20;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
            .collect()
    }

    fn sample() -> Vec<u8> {
        build_batch(
            &[
                (Some(b"k1"), Some(b"v1")),
                (None, Some(b"hello")),
                (Some(b"k"), None),
            ],
            NOW,
            Some((ProducerId(42), ProducerEpoch(3), 7)),
        )
    }

    /// Rewrites a header field and sets the CRC over everything after it
    /// (whatever batchLength now says), so a test reaches the checks after
    /// the CRC.
    fn with_field(mut batch: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
        batch[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..ATTRIBUTES_AT].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn invalid_reason(result: Result<BatchHeader>) -> String {
        match result {
            Err(Error::InvalidBatch(reason)) => reason,
            other => panic!("expected InvalidBatch, got {other:?}"),
        }
    }

    // kafka-python 3.0's DefaultRecordBatchBuilder, same records and producer;
    // it writes partitionLeaderEpoch 0 where the Java client and fjord write -1.
    const KAFKA_PYTHON_SAMPLE: &str = "000000000000000000000050000000000266f45c38000000000002\
        0000018bcfe568000000018bcfe56800000000000000002a0003000000070000000314000000046b31\
        0476310016000002010a68656c6c6f000e000004026b0100";

    // kafka-python: record 0 with headers ("h1", "x"), ("h2", null); record 1
    // 5 ms later; no producer id.
    const KAFKA_PYTHON_HEADERS: &str = "0000000000000000000000510000000002b8c67b64000000000001\
        0000018bcfe568000000018bcfe56805ffffffffffffffffffffffffffff000000022e000000066b65\
        790a76616c7565040468310278046832010e000a0201027600";

    /// A follower stores what its leader stored: a batch at any offset,
    /// with a leader epoch, even one compaction emptied (record count 0
    /// under a last offset delta of 2); it refuses what would damage its
    /// log.
    #[test]
    fn replicated_batches_are_checked_for_framing_crc_and_offsets_only() {
        let mut stored = sample();
        set_base_offset(&mut stored, Offset(1_000));
        set_partition_leader_epoch(&mut stored, LeaderEpoch(4));
        let header = validate_replicated(&stored).unwrap();
        assert_eq!(header.base_offset, Offset(1_000));
        assert_eq!(header.last_offset(), Offset(1_002));
        let emptied = with_field(stored.clone(), RECORD_COUNT_AT, &0i32.to_be_bytes());
        assert!(validate_incoming(&emptied, MAX).is_err());
        assert_eq!(validate_replicated(&emptied).unwrap().record_count, 0);

        let mut flipped = stored.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(invalid_reason(validate_replicated(&flipped)).contains("CRC"));
        assert!(validate_replicated(&stored[..stored.len() - 1]).is_err());
        let mut long = stored.clone();
        long.push(0);
        assert!(invalid_reason(validate_replicated(&long)).contains("bytes were given"));
        let backwards = with_field(stored.clone(), LAST_OFFSET_DELTA_AT, &(-1i32).to_be_bytes());
        assert!(invalid_reason(validate_replicated(&backwards)).contains("offset range"));
        let mut negative = stored.clone();
        set_base_offset(&mut negative, Offset(-5));
        assert!(invalid_reason(validate_replicated(&negative)).contains("offset range"));
        let mut overflowing = stored;
        set_base_offset(&mut overflowing, Offset(i64::MAX - 1));
        assert!(invalid_reason(validate_replicated(&overflowing)).contains("overflows"));
    }

    #[test]
    fn build_batch_matches_kafka_python_byte_for_byte() {
        let mut ours = sample();
        set_partition_leader_epoch(&mut ours, LeaderEpoch(0));
        assert_eq!(ours, hex(KAFKA_PYTHON_SAMPLE));
    }

    #[test]
    fn build_parse_round_trip() {
        let batch = sample();
        let header = validate_incoming(&batch, MAX).unwrap();
        assert_eq!(header, BatchHeader::parse(&batch).unwrap());
        assert_eq!(header.total_bytes(), batch.len());
        assert_eq!(header.base_offset, Offset(0));
        assert_eq!(header.partition_leader_epoch, LeaderEpoch::UNKNOWN);
        assert_eq!(header.magic, 2);
        assert_eq!(header.crc, compute_crc(&batch));
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.last_offset(), Offset(2));
        assert_eq!(header.base_timestamp, NOW);
        assert_eq!(header.max_timestamp, NOW);
        assert_eq!(header.producer_id, ProducerId(42));
        assert_eq!(header.producer_epoch, ProducerEpoch(3));
        assert_eq!(header.base_sequence, 7);
        assert_eq!(header.last_sequence(), 9);
        assert_eq!(header.compression().unwrap(), Compression::None);
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert!(header.is_idempotent());
        assert!(!header.is_transactional() && !header.is_control());
        assert!(!header.has_delete_horizon());

        let records: Vec<Record<'_>> = records(&batch).unwrap().map(Result::unwrap).collect();
        let fields: Vec<_> = records
            .iter()
            .map(|record| {
                (
                    record.offset_delta,
                    record.timestamp_delta,
                    record.key,
                    record.value,
                )
            })
            .collect();
        assert_eq!(
            fields,
            [
                (0, 0, Some(&b"k1"[..]), Some(&b"v1"[..])),
                (1, 0, None, Some(&b"hello"[..])),
                (2, 0, Some(&b"k"[..]), None),
            ]
        );
        assert!(records.iter().all(|record| record.headers.is_empty()));
    }

    #[test]
    fn non_idempotent_batch_has_no_producer_fields() {
        let batch = build_batch(&[(None, Some(b"v"))], NOW, None);
        let header = validate_incoming(&batch, MAX).unwrap();
        assert_eq!(header.producer_id, ProducerId::NONE);
        assert_eq!(header.producer_epoch, ProducerEpoch(-1));
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.last_sequence(), -1);
        assert!(!header.is_idempotent());
    }

    #[test]
    fn records_of_a_kafka_python_batch_with_headers_and_timestamp_deltas() {
        let batch = hex(KAFKA_PYTHON_HEADERS);
        let header = validate_incoming(&batch, MAX).unwrap();
        assert_eq!(header.max_timestamp, TimestampMs(NOW.0 + 5));
        let records: Vec<Record<'_>> = records(&batch).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            records,
            [
                Record {
                    offset_delta: 0,
                    timestamp_delta: 0,
                    key: Some(b"key"),
                    value: Some(b"value"),
                    headers: vec![(&b"h1"[..], Some(&b"x"[..])), (&b"h2"[..], None)],
                },
                Record {
                    offset_delta: 1,
                    timestamp_delta: 5,
                    key: None,
                    value: Some(b"v"),
                    headers: vec![],
                },
            ]
        );
    }

    #[test]
    fn encoded_headers_round_trip() {
        let headers: [(&[u8], Option<&[u8]>); 2] = [(b"trace", Some(b"abc")), (b"empty", None)];
        let record: (Option<&[u8]>, Option<&[u8]>) = (Some(b"k"), Some(b"v"));
        let batch = encode_batch(&[record; 3], &headers, NOW, None);
        validate_incoming(&batch, MAX).unwrap();
        for record in records(&batch).unwrap() {
            assert_eq!(record.unwrap().headers, headers);
        }
    }

    #[test]
    fn crc_detects_every_single_flipped_byte_after_the_crc_field() {
        let batch = sample();
        assert!(crc_matches(&batch));
        for at in CRC_AT..batch.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = batch.clone();
                damaged[at] ^= flip;
                assert!(!crc_matches(&damaged), "flip {flip:#x} at {at} undetected");
                assert!(validate_incoming(&damaged, MAX).is_err());
                assert!(matches!(scan_batch(&damaged), ScanOutcome::Invalid(_)));
            }
        }
    }

    #[test]
    fn base_offset_and_leader_epoch_are_outside_the_crc() {
        let mut batch = sample();
        set_base_offset(&mut batch, Offset(1_000_000));
        set_partition_leader_epoch(&mut batch, LeaderEpoch(17));
        assert!(crc_matches(&batch));
        let ScanOutcome::Valid(header) = scan_batch(&batch) else {
            panic!("rewritten batch does not scan as valid");
        };
        assert_eq!(header.base_offset, Offset(1_000_000));
        assert_eq!(header.last_offset(), Offset(1_000_002));
        assert_eq!(header.partition_leader_epoch, LeaderEpoch(17));
    }

    #[test]
    fn header_validation_errors() {
        let good = sample();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "cannot hold"),
            (
                "short header",
                good[..40].to_vec(),
                "batchLength 80 declares",
            ),
            (
                "one byte missing",
                good[..good.len() - 1].to_vec(),
                "declares",
            ),
            ("trailing byte", [&good[..], &[0]].concat(), "declares"),
            (
                "batch length below header",
                with_field(good.clone(), BATCH_LENGTH_AT, &48_i32.to_be_bytes()),
                "smaller than the header",
            ),
            (
                "negative batch length",
                with_field(good.clone(), BATCH_LENGTH_AT, &(-1_i32).to_be_bytes()),
                "smaller than the header",
            ),
            (
                "magic 1",
                with_field(good.clone(), MAGIC_AT, &[1]),
                "magic 1",
            ),
            (
                "base offset",
                with_field(good.clone(), BASE_OFFSET_AT, &5_i64.to_be_bytes()),
                "baseOffset",
            ),
            (
                "crc",
                {
                    let mut bad = good.clone();
                    bad[CRC_AT] ^= 1;
                    bad
                },
                "CRC",
            ),
            ("zero records", build_batch(&[], NOW, None), "recordCount 0"),
            (
                "count disagrees with last offset delta",
                with_field(good.clone(), LAST_OFFSET_DELTA_AT, &3_i32.to_be_bytes()),
                "lastOffsetDelta 3 does not match recordCount 3",
            ),
            (
                "header count larger than the records",
                with_field(
                    with_field(good.clone(), RECORD_COUNT_AT, &4_i32.to_be_bytes()),
                    LAST_OFFSET_DELTA_AT,
                    &3_i32.to_be_bytes(),
                ),
                "record 3",
            ),
            (
                "header count smaller than the records",
                with_field(
                    with_field(good.clone(), RECORD_COUNT_AT, &2_i32.to_be_bytes()),
                    LAST_OFFSET_DELTA_AT,
                    &1_i32.to_be_bytes(),
                ),
                "bytes left after the declared 2 records",
            ),
            (
                "unknown codec",
                with_field(good.clone(), ATTRIBUTES_AT, &5_i16.to_be_bytes()),
                "compression codec 5",
            ),
            (
                "control batch",
                with_field(good.clone(), ATTRIBUTES_AT, &CONTROL_BIT.to_be_bytes()),
                "control",
            ),
            (
                "idempotent without sequence",
                with_field(good.clone(), BASE_SEQUENCE_AT, &(-1_i32).to_be_bytes()),
                "baseSequence -1",
            ),
            (
                "transactional without producer",
                with_field(
                    build_batch(&[(None, Some(b"v"))], NOW, None),
                    ATTRIBUTES_AT,
                    &TRANSACTIONAL_BIT.to_be_bytes(),
                ),
                "transactional",
            ),
        ];
        for (name, batch, expected) in cases {
            let reason = invalid_reason(validate_incoming(&batch, MAX));
            assert!(reason.contains(expected), "{name}: {reason}");
        }
    }

    #[test]
    fn record_validation_errors() {
        let good = sample();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "offset delta out of order",
                // Record 1's offsetDelta byte: after the header, record 0
                // (1 + 10 bytes), and record 1's length, attributes and
                // timestamp delta.
                with_field(good.clone(), BATCH_HEADER_BYTES + 11 + 3, &[4]),
                "record 1: offsetDelta 2",
            ),
            (
                "record length past the batch",
                with_field(good.clone(), BATCH_HEADER_BYTES, &[0x7e]),
                "record 0: record length runs past",
            ),
            (
                "negative record length",
                with_field(good.clone(), BATCH_HEADER_BYTES, &[0x01]),
                "record 0: negative record length",
            ),
            (
                "key length -2",
                with_field(good.clone(), BATCH_HEADER_BYTES + 4, &[0x03]),
                "record 0: negative length other than -1",
            ),
        ];
        for (name, batch, expected) in cases {
            let reason = invalid_reason(validate_incoming(&batch, MAX));
            assert!(reason.contains(expected), "{name}: {reason}");
        }
    }

    #[test]
    fn compressed_batches_are_checked_on_their_header_only() {
        // A gzip attribute over records that are not gzip: the header and CRC
        // are fine, and fjord does not decompress.
        let gzip = with_field(sample(), ATTRIBUTES_AT, &1_i16.to_be_bytes());
        let header = validate_incoming(&gzip, MAX).unwrap();
        assert_eq!(header.compression().unwrap(), Compression::Gzip);
        assert!(records(&gzip).is_err());
    }

    #[test]
    fn oversized_batches_are_message_too_large() {
        let batch = sample();
        assert!(validate_incoming(&batch, batch.len()).is_ok());
        match validate_incoming(&batch, batch.len() - 1) {
            Err(Error::MessageTooLarge { size, max }) => {
                assert_eq!((size, max), (batch.len(), batch.len() - 1));
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
    }

    #[test]
    fn header_parse_rejects_short_input_bad_magic_and_small_length() {
        let batch = sample();
        assert!(BatchHeader::parse(&batch[..BATCH_HEADER_BYTES]).is_ok());
        assert!(BatchHeader::parse(&batch[..BATCH_HEADER_BYTES - 1]).is_err());
        assert!(BatchHeader::parse(&with_field(batch.clone(), MAGIC_AT, &[0])).is_err());
        let small = with_field(batch, BATCH_LENGTH_AT, &48_i32.to_be_bytes());
        assert!(BatchHeader::parse(&small).is_err());
    }

    #[test]
    fn log_append_time_rewrite_keeps_the_crc_valid() {
        let mut batch = sample();
        let append_time = TimestampMs(NOW.0 + 12_345);
        set_log_append_time(&mut batch, append_time);
        let header = validate_incoming(&batch, MAX).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.base_timestamp, append_time);
        assert_eq!(header.max_timestamp, append_time);
        assert_eq!(header.compression().unwrap(), Compression::None);
        assert_eq!(header.producer_id, ProducerId(42));

        // A second stamp with the same time changes nothing.
        let before = batch.clone();
        set_log_append_time(&mut batch, append_time);
        assert_eq!(batch, before);
    }

    #[test]
    fn log_append_time_keeps_a_delete_horizon() {
        let mut batch = with_field(sample(), ATTRIBUTES_AT, &DELETE_HORIZON_BIT.to_be_bytes());
        set_log_append_time(&mut batch, TimestampMs(5));
        let header = BatchHeader::parse(&batch).unwrap();
        assert!(crc_matches(&batch));
        assert_eq!(header.base_timestamp, NOW);
        assert_eq!(header.max_timestamp, TimestampMs(5));
    }

    #[test]
    fn last_sequence_wraps_past_i32_max_to_zero() {
        let mut header = BatchHeader::parse(&sample()).unwrap();
        header.base_sequence = i32::MAX - 1;
        header.last_offset_delta = 1;
        assert_eq!(header.last_sequence(), i32::MAX);
        header.last_offset_delta = 2;
        assert_eq!(header.last_sequence(), 0);
        header.last_offset_delta = 4;
        assert_eq!(header.last_sequence(), 2);
        header.base_sequence = i32::MAX;
        header.last_offset_delta = 0;
        assert_eq!(header.last_sequence(), i32::MAX);
    }

    #[test]
    fn split_batches_splits_and_reports_a_truncated_tail() {
        let first = sample();
        let second = build_batch(&[(None, Some(b"second"))], NOW, None);
        let joined = [&first[..], &second[..]].concat();
        let batches: Vec<&[u8]> = split_batches(&joined).map(Result::unwrap).collect();
        assert_eq!(batches, [&first[..], &second[..]]);
        assert_eq!(split_batches(&[]).count(), 0);

        for cut in 1..second.len() {
            let truncated = &joined[..first.len() + cut];
            let items: Vec<_> = split_batches(truncated).collect();
            assert_eq!(items.len(), 2, "cut {cut}");
            assert_eq!(items[0].as_ref().unwrap(), &&first[..]);
            assert!(matches!(items[1], Err(Error::InvalidBatch(_))), "cut {cut}");
        }

        // A zero length would never advance: it is an error, and the end.
        let zeros = [&first[..], &[0; 40]].concat();
        let items: Vec<_> = split_batches(&zeros).collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].is_err());
    }

    #[test]
    fn scan_batch_classifies_zeros_short_and_valid_bytes() {
        let batch = sample();
        assert!(matches!(scan_batch(&[]), ScanOutcome::Incomplete));
        assert!(matches!(scan_batch(&batch[..11]), ScanOutcome::Incomplete));
        assert!(matches!(scan_batch(&batch[..12]), ScanOutcome::Incomplete));
        assert!(matches!(scan_batch(&batch[..60]), ScanOutcome::Incomplete));
        assert!(matches!(
            scan_batch(&batch[..batch.len() - 1]),
            ScanOutcome::Incomplete
        ));
        assert!(matches!(scan_batch(&[0; 12]), ScanOutcome::Invalid(_)));
        assert!(matches!(scan_batch(&[0; 4096]), ScanOutcome::Invalid(_)));
        assert!(matches!(
            scan_batch(&with_field(batch.clone(), MAGIC_AT, &[0])),
            ScanOutcome::Invalid(_)
        ));
        let negative = with_field(batch.clone(), BATCH_LENGTH_AT, &(-7_i32).to_be_bytes());
        assert!(matches!(scan_batch(&negative), ScanOutcome::Invalid(_)));

        let ScanOutcome::Valid(header) = scan_batch(&batch) else {
            panic!("valid batch does not scan");
        };
        assert_eq!(header.total_bytes(), batch.len());
        // Bytes past the batch (the next batch, or preallocated zeros) are
        // not its concern.
        let extended = [&batch[..], &[0; 100]].concat();
        assert!(matches!(scan_batch(&extended), ScanOutcome::Valid(h) if h == header));
    }

    #[test]
    fn varints_decode_kafka_edge_cases() {
        let decode = |bytes: &[u8]| Reader { bytes }.varint();
        assert_eq!(decode(&[0x00]), Ok(0));
        assert_eq!(decode(&[0x01]), Ok(-1));
        assert_eq!(decode(&[0x02]), Ok(1));
        assert_eq!(decode(&[0xfe, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MAX));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Ok(i32::MIN));
        assert!(decode(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err());
        assert!(decode(&[0x80]).is_err());
        let decode_long = |bytes: &[u8]| Reader { bytes }.varlong();
        let mut long = vec![0xff; 9];
        long.push(0x01);
        assert_eq!(decode_long(&long), Ok(i64::MIN));
        assert!(decode_long(&[0x80; 11]).is_err());

        for value in [0, 1, -1, 63, -64, 64, 300, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(decode(&out), Ok(value));
        }
        for value in [0, -1, i64::from(i32::MAX) + 1, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(decode_long(&out), Ok(value));
        }
    }

    /// Runs every parser over `bytes`; none may panic.
    fn parse_everything(bytes: &[u8]) {
        let _ = validate_incoming(bytes, MAX);
        let _ = scan_batch(bytes);
        let _ = crc_matches(bytes);
        let _ = BatchHeader::parse(bytes);
        for batch in split_batches(bytes).take(10_000).flatten() {
            let _ = validate_incoming(batch, MAX);
        }
        if let Ok(records) = records(bytes) {
            for record in records.take(10_000) {
                let _ = record;
            }
        }
    }

    fn valid_batch() -> impl Strategy<Value = Vec<u8>> {
        let record = (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        );
        (proptest::collection::vec(record, 1..8), any::<i64>()).prop_map(|(records, time)| {
            let borrowed: Vec<KeyValue<'_>> = records
                .iter()
                .map(|(key, value)| (key.as_deref(), value.as_deref()))
                .collect();
            build_batch(&borrowed, TimestampMs(time), None)
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            parse_everything(&bytes);
        }

        #[test]
        fn random_bytes_behind_a_valid_header_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            record_count in 0_i32..20,
        ) {
            // A correct header and CRC over random records: reaches the record walk.
            let mut batch = build_batch(&[], NOW, None);
            batch.extend_from_slice(&body);
            let batch_length = (batch.len() - LOG_OVERHEAD_BYTES) as i32;
            batch[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
            batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&record_count.to_be_bytes());
            let batch = with_field(batch, LAST_OFFSET_DELTA_AT, &(record_count - 1).to_be_bytes());
            parse_everything(&batch);
        }

        #[test]
        fn mutated_valid_batches_never_panic(
            batch in valid_batch(),
            mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            fix_crc in any::<bool>(),
        ) {
            prop_assert!(validate_incoming(&batch, MAX).is_ok());
            let mut mutated = batch.clone();
            for (at, byte) in mutations {
                let at = at.index(mutated.len());
                mutated[at] = byte;
            }
            if fix_crc && crc_matches(&batch) && declared_total_bytes(&mutated) == Some(mutated.len()) {
                mutated = with_field(mutated, CRC_AT, &[]);
            }
            parse_everything(&mutated);
            parse_everything(&mutated[..cut.index(mutated.len())]);
            let joined = [&batch[..], &mutated[..]].concat();
            parse_everything(&joined);
        }

        #[test]
        fn valid_batches_survive_every_rewrite(batch in valid_batch(), base in 0_i64..i64::MAX / 2, time in any::<i64>()) {
            let mut batch = batch;
            let records_before: Vec<_> = records(&batch).unwrap().map(|record| {
                let record = record.unwrap();
                (record.key.map(<[u8]>::to_vec), record.value.map(<[u8]>::to_vec))
            }).collect();
            set_log_append_time(&mut batch, TimestampMs(time));
            prop_assert!(validate_incoming(&batch, MAX).is_ok());
            set_base_offset(&mut batch, Offset(base));
            set_partition_leader_epoch(&mut batch, LeaderEpoch(3));
            let ScanOutcome::Valid(header) = scan_batch(&batch) else {
                return Err(TestCaseError::fail("rewritten batch does not scan"));
            };
            prop_assert_eq!(header.base_offset, Offset(base));
            prop_assert_eq!(header.max_timestamp, TimestampMs(time));
            let records_after: Vec<_> = records(&batch).unwrap().map(|record| {
                let record = record.unwrap();
                (record.key.map(<[u8]>::to_vec), record.value.map(<[u8]>::to_vec))
            }).collect();
            prop_assert_eq!(records_before, records_after);
        }
    }
}
