//! `fjordctl dump-log`: print one partition file in human-readable form, like
//! Kafka's `kafka-dump-log.sh`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use fjord_engine::batch::{self, BatchHeader, Compression, TimestampType};
use fjord_engine::checkpoint::PartitionCheckpoint;
use fjord_engine::error::Corruption;
use fjord_engine::producer_state::ProducerStateTable;
use kafka_protocol::records::RecordBatchDecoder;
use serde::Serialize;

use crate::log::files::{offset_index_entries, time_index_entries, FileKind};
use crate::log::scan::{scan_segment, ScannedBatch, Tail};
use crate::Error;

/// Print a segment (`.log`), index (`.index`, `.timeindex`), producer
/// snapshot (`.snapshot`) or `partition.checkpoint` file. Exits 0 when the
/// file is whole and valid, 1 when it holds an invalid batch, a torn or
/// corrupt tail, or does not decode. Read it with the broker stopped.
#[derive(Debug, Args)]
pub struct DumpLogArgs {
    /// The file to print; its kind is taken from its name.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Also print every record of each batch (offset, timestamp, key, value,
    /// headers). Compressed batches are decompressed.
    #[arg(long)]
    pub print_data: bool,

    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fjordctl dump-log`. Returns whether the file is whole and valid.
///
/// # Errors
/// The file cannot be read, or its name is not one the engine writes.
pub fn run(args: &DumpLogArgs) -> Result<bool, Error> {
    let path = &args.file;
    let kind =
        FileKind::of_path(path).ok_or_else(|| Error::UnknownLogFile { path: path.clone() })?;
    let bytes = std::fs::read(path).map_err(|source| Error::ReadLogFile {
        path: path.clone(),
        source,
    })?;
    let dump = FileDump::of(path, kind, &bytes, args.print_data);
    let valid = dump.is_valid();
    let text = if args.json {
        serde_json::to_string_pretty(&dump)? + "\n"
    } else {
        dump.to_text()
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(valid)
}

/// Everything `dump-log` prints about one file.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FileDump {
    /// A `.log` file.
    Segment {
        path: PathBuf,
        base_offset: i64,
        batches: Vec<BatchDump>,
        /// Absent when the file ends exactly after its last batch.
        tail: Option<TailDump>,
    },
    /// A `.index` file.
    OffsetIndex {
        path: PathBuf,
        base_offset: i64,
        entries: Vec<OffsetIndexEntry>,
        error: Option<String>,
    },
    /// A `.timeindex` file.
    TimeIndex {
        path: PathBuf,
        base_offset: i64,
        entries: Vec<TimeIndexEntry>,
        error: Option<String>,
    },
    /// A `.snapshot` file.
    ProducerSnapshot {
        path: PathBuf,
        snapshot_offset: Option<i64>,
        batches: Vec<ProducerBatchDump>,
        error: Option<String>,
    },
    /// `partition.checkpoint`.
    PartitionCheckpoint {
        path: PathBuf,
        checkpoint: Option<CheckpointDump>,
        error: Option<String>,
    },
}

/// One batch of a segment.
#[derive(Debug, Serialize)]
pub struct BatchDump {
    pub base_offset: i64,
    pub last_offset: i64,
    pub count: i32,
    pub position: u64,
    pub size: usize,
    pub magic: i8,
    /// `CreateTime` or `LogAppendTime`.
    pub timestamp_type: &'static str,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// `none`, `gzip`, `snappy`, `lz4`, `zstd`, or `unknown(N)`.
    pub compression: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub crc_valid: bool,
    /// Why the batch is invalid, when it is.
    pub invalid_reason: Option<String>,
    /// The records, with `--print-data` and a valid batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordDump>>,
    /// Why the records (or some of them) could not be decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_error: Option<String>,
}

/// One record, keys and values as UTF-8 text or `0x`-prefixed hex.
#[derive(Debug, Serialize)]
pub struct RecordDump {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<HeaderDump>,
}

/// One record header.
#[derive(Debug, Serialize)]
pub struct HeaderDump {
    pub key: String,
    pub value: Option<String>,
}

/// What follows a segment's last batch, when it is not the end of the file.
#[derive(Debug, Serialize)]
pub struct TailDump {
    /// `zero_filled`, `torn` or `corrupt`.
    pub kind: &'static str,
    pub position: u64,
    pub reason: String,
}

/// One `.index` entry.
#[derive(Debug, Serialize)]
pub struct OffsetIndexEntry {
    pub offset: i64,
    pub position: u32,
}

/// One `.timeindex` entry.
#[derive(Debug, Serialize)]
pub struct TimeIndexEntry {
    pub timestamp: i64,
    pub offset: i64,
}

/// One cached batch of one producer in a snapshot.
#[derive(Debug, Serialize)]
pub struct ProducerBatchDump {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// A decoded `partition.checkpoint`.
#[derive(Debug, Serialize)]
pub struct CheckpointDump {
    pub recovery_point: i64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// (leader epoch, start offset).
    pub leader_epochs: Vec<(i32, i64)>,
}

impl FileDump {
    /// Decodes `bytes`, the content of `path`, as a file of `kind`. Never
    /// panics: anything that does not decode is described in the dump.
    #[must_use]
    pub fn of(path: &Path, kind: FileKind, bytes: &[u8], print_data: bool) -> FileDump {
        let path = path.to_path_buf();
        match kind {
            FileKind::Segment(base) => {
                let scan = scan_segment(bytes);
                FileDump::Segment {
                    path,
                    base_offset: base.0,
                    batches: scan
                        .batches
                        .iter()
                        .map(|batch| BatchDump::of(batch, bytes, print_data))
                        .collect(),
                    tail: TailDump::of(&scan.tail),
                }
            }
            FileKind::OffsetIndex(base) => {
                let (entries, error) = split(offset_index_entries(base, bytes));
                FileDump::OffsetIndex {
                    path,
                    base_offset: base.0,
                    entries: entries
                        .into_iter()
                        .map(|(offset, position)| OffsetIndexEntry {
                            offset: offset.0,
                            position,
                        })
                        .collect(),
                    error,
                }
            }
            FileKind::TimeIndex(base) => {
                let (entries, error) = split(time_index_entries(base, bytes));
                FileDump::TimeIndex {
                    path,
                    base_offset: base.0,
                    entries: entries
                        .into_iter()
                        .map(|(timestamp, offset)| TimeIndexEntry {
                            timestamp: timestamp.0,
                            offset: offset.0,
                        })
                        .collect(),
                    error,
                }
            }
            FileKind::ProducerSnapshot(_) => {
                match ProducerStateTable::decode_snapshot(&path, bytes) {
                    Ok((offset, table)) => FileDump::ProducerSnapshot {
                        path,
                        snapshot_offset: Some(offset.0),
                        batches: producer_batches(&table),
                        error: None,
                    },
                    Err(error) => FileDump::ProducerSnapshot {
                        path,
                        snapshot_offset: None,
                        batches: Vec::new(),
                        error: Some(error.to_string()),
                    },
                }
            }
            FileKind::PartitionCheckpoint => match PartitionCheckpoint::decode(&path, bytes) {
                Ok(checkpoint) => FileDump::PartitionCheckpoint {
                    path,
                    checkpoint: Some(CheckpointDump {
                        recovery_point: checkpoint.recovery_point,
                        log_start_offset: checkpoint.log_start_offset,
                        high_watermark: checkpoint.high_watermark,
                        leader_epochs: checkpoint.leader_epochs,
                    }),
                    error: None,
                },
                Err(error) => FileDump::PartitionCheckpoint {
                    path,
                    checkpoint: None,
                    error: Some(error.to_string()),
                },
            },
        }
    }

    /// Whether the file decoded whole: every batch valid and no tail, or the
    /// index, snapshot or checkpoint decoded.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        match self {
            FileDump::Segment { batches, tail, .. } => {
                tail.is_none() && batches.iter().all(|batch| batch.crc_valid)
            }
            FileDump::OffsetIndex { error, .. }
            | FileDump::TimeIndex { error, .. }
            | FileDump::ProducerSnapshot { error, .. }
            | FileDump::PartitionCheckpoint { error, .. } => error.is_none(),
        }
    }

    /// The text form: a heading, then one line per batch or entry.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match self {
            FileDump::Segment {
                path,
                base_offset,
                batches,
                tail,
            } => {
                let _ = writeln!(out, "Dumping {}", path.display());
                let _ = writeln!(out, "Log starting offset: {base_offset}");
                for batch in batches {
                    batch.write_text(&mut out);
                }
                if let Some(tail) = tail {
                    let _ = writeln!(
                        out,
                        "{} tail at position {}: {}",
                        match tail.kind {
                            "zero_filled" => "Zero-filled",
                            "torn" => "Torn",
                            _ => "Corrupt",
                        },
                        tail.position,
                        tail.reason
                    );
                }
            }
            FileDump::OffsetIndex {
                path,
                entries,
                error,
                ..
            } => {
                let _ = writeln!(out, "Dumping {}", path.display());
                for entry in entries {
                    let _ = writeln!(out, "offset: {} position: {}", entry.offset, entry.position);
                }
                write_error(&mut out, error.as_deref());
            }
            FileDump::TimeIndex {
                path,
                entries,
                error,
                ..
            } => {
                let _ = writeln!(out, "Dumping {}", path.display());
                for entry in entries {
                    let _ = writeln!(
                        out,
                        "timestamp: {} offset: {}",
                        entry.timestamp, entry.offset
                    );
                }
                write_error(&mut out, error.as_deref());
            }
            FileDump::ProducerSnapshot {
                path,
                snapshot_offset,
                batches,
                error,
            } => {
                let _ = writeln!(out, "Dumping {}", path.display());
                write_snapshot(&mut out, *snapshot_offset, batches);
                write_error(&mut out, error.as_deref());
            }
            FileDump::PartitionCheckpoint {
                path,
                checkpoint,
                error,
            } => {
                let _ = writeln!(out, "Dumping {}", path.display());
                if let Some(checkpoint) = checkpoint {
                    let _ = writeln!(
                        out,
                        "recoveryPoint: {} logStartOffset: {} highWatermark: {}",
                        checkpoint.recovery_point,
                        checkpoint.log_start_offset,
                        checkpoint.high_watermark
                    );
                    for (epoch, start) in &checkpoint.leader_epochs {
                        let _ = writeln!(out, "leaderEpoch: {epoch} startOffset: {start}");
                    }
                }
                write_error(&mut out, error.as_deref());
            }
        }
        out
    }
}

/// The entries of an index, or none and why the file does not decode.
fn split<T>(result: Result<Vec<T>, Corruption>) -> (Vec<T>, Option<String>) {
    match result {
        Ok(entries) => (entries, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    }
}

fn write_snapshot(out: &mut String, snapshot_offset: Option<i64>, batches: &[ProducerBatchDump]) {
    if let Some(offset) = snapshot_offset {
        let _ = writeln!(out, "Snapshot offset: {offset}");
    }
    for batch in batches {
        let _ = writeln!(
            out,
            "producerId: {} producerEpoch: {} firstSequence: {} lastSequence: {} firstOffset: {} lastOffset: {} maxTimestamp: {}",
            batch.producer_id,
            batch.producer_epoch,
            batch.first_sequence,
            batch.last_sequence,
            batch.first_offset,
            batch.last_offset,
            batch.max_timestamp
        );
    }
}

fn write_error(out: &mut String, error: Option<&str>) {
    if let Some(error) = error {
        let _ = writeln!(out, "Cannot decode: {error}");
    }
}

fn producer_batches(table: &ProducerStateTable) -> Vec<ProducerBatchDump> {
    table
        .iter()
        .flat_map(|(producer_id, entry)| {
            entry.batches().iter().map(move |batch| ProducerBatchDump {
                producer_id: producer_id.0,
                producer_epoch: entry.epoch().0,
                first_sequence: batch.first_sequence,
                last_sequence: batch.last_sequence,
                first_offset: batch.first_offset.0,
                last_offset: batch.last_offset.0,
                max_timestamp: batch.max_timestamp.0,
            })
        })
        .collect()
}

impl TailDump {
    fn of(tail: &Tail) -> Option<TailDump> {
        match tail {
            Tail::Clean => None,
            Tail::ZeroFilled { position, bytes } => Some(TailDump {
                kind: "zero_filled",
                position: *position,
                reason: format!("{bytes} zero bytes, no batch (unwritten or torn)"),
            }),
            Tail::Torn { position, reason } => Some(TailDump {
                kind: "torn",
                position: *position,
                reason: reason.clone(),
            }),
            Tail::Corrupt { position, reason } => Some(TailDump {
                kind: "corrupt",
                position: *position,
                reason: reason.clone(),
            }),
        }
    }
}

impl BatchDump {
    fn of(scanned: &ScannedBatch, file: &[u8], print_data: bool) -> BatchDump {
        let header = scanned.header;
        let size = header.total_bytes();
        let start = scanned.position as usize;
        let bytes = &file[start..start + size];
        let (records, records_error) = match (print_data, scanned.is_valid()) {
            (false, _) => (None, None),
            (true, false) => (
                None,
                Some("not decoded: the batch's CRC does not match".to_owned()),
            ),
            (true, true) => decode_records(&header, bytes),
        };
        BatchDump {
            base_offset: header.base_offset.0,
            last_offset: header.last_offset().0,
            count: header.record_count,
            position: scanned.position,
            size,
            magic: header.magic,
            timestamp_type: timestamp_type_name(header.timestamp_type()),
            base_timestamp: header.base_timestamp.0,
            max_timestamp: header.max_timestamp.0,
            compression: compression_name(&header),
            producer_id: header.producer_id.0,
            producer_epoch: header.producer_epoch.0,
            base_sequence: header.base_sequence,
            is_transactional: header.is_transactional(),
            is_control: header.is_control(),
            partition_leader_epoch: header.partition_leader_epoch.0,
            crc: header.crc,
            crc_valid: scanned.is_valid(),
            invalid_reason: scanned.invalid.clone(),
            records,
            records_error,
        }
    }

    fn write_text(&self, out: &mut String) {
        let _ = write!(
            out,
            "baseOffset: {} lastOffset: {} count: {} position: {} size: {} magic: {} {}: {} baseTimestamp: {} compresscodec: {} producerId: {} producerEpoch: {} baseSequence: {} isTransactional: {} isControl: {} partitionLeaderEpoch: {} crc: {} isValid: {}",
            self.base_offset,
            self.last_offset,
            self.count,
            self.position,
            self.size,
            self.magic,
            self.timestamp_type,
            self.max_timestamp,
            self.base_timestamp,
            self.compression,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.is_transactional,
            self.is_control,
            self.partition_leader_epoch,
            self.crc,
            self.crc_valid,
        );
        if let Some(reason) = &self.invalid_reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
        for record in self.records.iter().flatten() {
            let headers: Vec<String> = record
                .headers
                .iter()
                .map(|header| {
                    format!(
                        "{}={}",
                        header.key,
                        header.value.as_deref().unwrap_or("null")
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "| offset: {} {}: {} headers: [{}] key: {} payload: {}",
                record.offset,
                self.timestamp_type,
                record.timestamp,
                headers.join(", "),
                record.key.as_deref().unwrap_or("null"),
                record.value.as_deref().unwrap_or("null"),
            );
        }
        if let Some(error) = &self.records_error {
            let _ = writeln!(out, "| records {error}");
        }
    }
}

fn timestamp_type_name(timestamp_type: TimestampType) -> &'static str {
    match timestamp_type {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

fn compression_name(header: &BatchHeader) -> String {
    match header.compression() {
        Ok(Compression::None) => "none".to_owned(),
        Ok(Compression::Gzip) => "gzip".to_owned(),
        Ok(Compression::Snappy) => "snappy".to_owned(),
        Ok(Compression::Lz4) => "lz4".to_owned(),
        Ok(Compression::Zstd) => "zstd".to_owned(),
        Err(_) => format!("unknown({})", header.attributes & 0x07),
    }
}

/// The records of a batch whose CRC matched: uncompressed ones with the
/// engine's iterator, compressed ones with kafka-protocol's decoder (which
/// decompresses). Records decoded before an error are kept.
fn decode_records(header: &BatchHeader, bytes: &[u8]) -> (Option<Vec<RecordDump>>, Option<String>) {
    if header.compression().ok() != Some(Compression::None) {
        let mut buffer = bytes::Bytes::copy_from_slice(bytes);
        return match RecordBatchDecoder::decode(&mut buffer) {
            Ok(set) => (
                Some(
                    set.records
                        .iter()
                        .map(|record| RecordDump {
                            offset: record.offset,
                            timestamp: record.timestamp,
                            key: record.key.as_deref().map(render_bytes),
                            value: record.value.as_deref().map(render_bytes),
                            headers: record
                                .headers
                                .iter()
                                .map(|(key, value)| HeaderDump {
                                    key: render_bytes(key.as_bytes()),
                                    value: value.as_deref().map(render_bytes),
                                })
                                .collect(),
                        })
                        .collect(),
                ),
                None,
            ),
            Err(error) => (None, Some(format!("not decoded: {error}"))),
        };
    }
    let iterator = match batch::records(bytes) {
        Ok(iterator) => iterator,
        Err(error) => return (None, Some(format!("not decoded: {error}"))),
    };
    let mut records = Vec::new();
    for record in iterator {
        match record {
            Ok(record) => records.push(RecordDump {
                offset: header.base_offset.plus(i64::from(record.offset_delta)).0,
                timestamp: match header.timestamp_type() {
                    TimestampType::CreateTime => header.base_timestamp.0 + record.timestamp_delta,
                    TimestampType::LogAppendTime => header.max_timestamp.0,
                },
                key: record.key.map(render_bytes),
                value: record.value.map(render_bytes),
                headers: record
                    .headers
                    .iter()
                    .map(|(key, value)| HeaderDump {
                        key: render_bytes(key),
                        value: value.map(render_bytes),
                    })
                    .collect(),
            }),
            Err(error) => return (Some(records), Some(format!("stopped decoding: {error}"))),
        }
    }
    (Some(records), None)
}

/// UTF-8 bytes as text, anything else as `0x` and lowercase hex.
fn render_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().fold(String::from("0x"), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_render_as_text_or_hex() {
        assert_eq!(render_bytes(b"value"), "value");
        assert_eq!(render_bytes(&[0xff, 0x00]), "0xff00");
    }
}
