//! `fjordctl verify-log`: an offline integrity check of a whole data
//! directory.
//!
//! What counts as an error (exit 1) is what would make the broker serve wrong
//! data or lose acknowledged data: a batch whose CRC fails, bytes that are no
//! batch, offsets that do not increase, a segment whose name does not match
//! its content, an index entry that points anywhere but the start of the
//! batch it names (the broker trusts a decodable index), a checkpoint that
//! does not decode or points past the log. What the broker repairs by itself
//! at open is a warning: a torn or zero-filled tail of a partition's last
//! segment (recovery truncates it; it was never acknowledged), an index or
//! producer snapshot that does not decode (rebuilt or ignored), leftover
//! temporary files, offset gaps (compaction and DeleteRecords make them).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use fjord_engine::checkpoint::PartitionCheckpoint;
use fjord_engine::producer_state::ProducerStateTable;
use fjord_engine::{Offset, TopicPartition};

use crate::log::files::{offset_index_entries, time_index_entries, FileKind, SEGMENT_EXTENSIONS};
use crate::log::scan::{scan_segment, ScannedBatch, Tail};
use crate::Error;

/// Check every partition directory under DIR offline: segment names, batch
/// CRCs, offset order across segments, index entries, checkpoints. The broker
/// must not be running. Exits 0 when clean (warnings allowed), 1 on any
/// corruption, 2 when DIR cannot be read.
#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// The broker's data directory (holding `<topic>-<partition>` dirs).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The broker copes with it at open; worth knowing.
    Warning,
    /// Corruption: the broker would serve wrong data or has lost data.
    Error,
}

/// One problem, about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub path: PathBuf,
    /// One line, naming the byte position or offset when there is one.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: {}: {}", self.path.display(), self.message)
    }
}

/// The result of checking one partition directory.
#[derive(Clone, Debug)]
pub struct PartitionReport {
    pub partition: TopicPartition,
    pub segments: usize,
    pub batches: usize,
    /// First and last offset of the valid batches, if any.
    pub offsets: Option<(Offset, Offset)>,
    pub findings: Vec<Finding>,
}

impl PartitionReport {
    /// Number of findings of `severity`.
    #[must_use]
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    }
}

impl fmt::Display for PartitionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self.count(Severity::Error);
        let warnings = self.count(Severity::Warning);
        let verdict = if errors == 0 { "OK" } else { "CORRUPT" };
        let offsets = self.offsets.map_or_else(
            || "no records".to_owned(),
            |(first, last)| format!("offsets {first}..={last}"),
        );
        writeln!(
            f,
            "{}: {verdict}: {} segments, {} valid batches, {offsets}, {errors} errors, {warnings} warnings",
            self.partition, self.segments, self.batches
        )?;
        for finding in &self.findings {
            writeln!(f, "  {finding}")?;
        }
        Ok(())
    }
}

/// Runs `fjordctl verify-log`. Returns whether no partition has an error.
///
/// # Errors
/// DIR cannot be listed.
pub fn run(args: &VerifyLogArgs) -> Result<bool, Error> {
    let reports = verify_data_dir(&args.dir)?;
    let mut stdout = std::io::stdout().lock();
    for report in &reports {
        let _ = write!(stdout, "{report}");
    }
    let corrupt = reports
        .iter()
        .filter(|report| report.count(Severity::Error) > 0)
        .count();
    let _ = writeln!(
        stdout,
        "verified {} partitions in {}: {} clean, {corrupt} corrupt",
        reports.len(),
        args.dir.display(),
        reports.len() - corrupt
    );
    Ok(corrupt == 0)
}

/// Checks every `<topic>-<partition>` directory under `data_dir`, in name
/// order. Other entries (the metadata log's `__cluster_metadata-0`,
/// unrelated directories) are skipped.
///
/// # Errors
/// [`Error::ReadDataDir`] when `data_dir` cannot be listed.
pub fn verify_data_dir(data_dir: &Path) -> Result<Vec<PartitionReport>, Error> {
    let read_error = |source| Error::ReadDataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let mut partitions = BTreeMap::new();
    for entry in std::fs::read_dir(data_dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if !entry.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        let Some(partition) = entry
            .file_name()
            .to_str()
            .and_then(TopicPartition::from_dir_name)
        else {
            continue;
        };
        partitions.insert(partition, entry.path());
    }
    Ok(partitions
        .into_iter()
        .map(|(partition, dir)| verify_partition(partition, &dir))
        .collect())
}

/// The files of one partition directory, by kind.
#[derive(Default)]
struct PartitionFiles {
    segments: BTreeMap<Offset, PathBuf>,
    offset_indexes: BTreeMap<Offset, PathBuf>,
    time_indexes: BTreeMap<Offset, PathBuf>,
    snapshots: Vec<PathBuf>,
    checkpoint: Option<PathBuf>,
}

/// A segment's batches, for checking its indexes.
struct CheckedSegment {
    base_offset: Offset,
    /// Valid and invalid, in file order.
    batches: Vec<ScannedBatch>,
}

/// Checks one partition directory.
#[must_use]
pub fn verify_partition(partition: TopicPartition, dir: &Path) -> PartitionReport {
    let mut findings = Vec::new();
    let files = list_files(dir, &mut findings);
    let mut batch_count = 0;
    let mut offsets: Option<(Offset, Offset)> = None;
    let mut previous_last: Option<Offset> = None;
    let mut checked = Vec::new();
    let last_base = files.segments.keys().next_back().copied();
    for (&base, path) in &files.segments {
        let mut finding = |severity, message| {
            findings.push(Finding {
                severity,
                path: path.clone(),
                message,
            });
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                finding(Severity::Error, format!("cannot read: {error}"));
                continue;
            }
        };
        if let Some(last) = previous_last {
            if base <= last {
                finding(
                    Severity::Error,
                    format!("segment base offset {base} is not above the previous segment's last offset {last}"),
                );
            }
        }
        let scan = scan_segment(&bytes);
        // The offsets of an invalid batch are unknown, so no gap is reported
        // across one: the invalid batch itself is the error.
        let mut after_invalid = false;
        for batch in &scan.batches {
            let header = &batch.header;
            if let Some(reason) = &batch.invalid {
                finding(
                    Severity::Error,
                    format!("position {}: invalid batch: {reason}", batch.position),
                );
                after_invalid = true;
                continue;
            }
            let previous = previous_last.filter(|_| !after_invalid);
            after_invalid = false;
            check_batch_offsets(batch, base, previous, &mut finding);
            previous_last = Some(
                previous_last.map_or(header.last_offset(), |last| last.max(header.last_offset())),
            );
            offsets = Some(match offsets {
                None => (header.base_offset, header.last_offset()),
                Some((first, _)) => (first, header.last_offset()),
            });
            batch_count += 1;
        }
        check_tail(&scan.tail, Some(base) == last_base, &mut finding);
        checked.push(CheckedSegment {
            base_offset: base,
            batches: scan.batches,
        });
    }
    for segment in &checked {
        if let Some(path) = files.offset_indexes.get(&segment.base_offset) {
            check_offset_index(path, segment, &mut findings);
        }
        if let Some(path) = files.time_indexes.get(&segment.base_offset) {
            check_time_index(path, segment, &mut findings);
        }
    }
    for (base, path) in files.offset_indexes.iter().chain(&files.time_indexes) {
        if !files.segments.contains_key(base) {
            findings.push(Finding {
                severity: Severity::Warning,
                path: path.clone(),
                message: "index without a segment".to_owned(),
            });
        }
    }
    for path in &files.snapshots {
        check_snapshot(path, &mut findings);
    }
    let log_end = offsets
        .map(|(_, last)| last.next())
        .into_iter()
        .chain(last_base)
        .max()
        .unwrap_or(Offset::ZERO);
    check_checkpoint(dir, files.checkpoint.as_deref(), log_end, &mut findings);
    PartitionReport {
        partition,
        segments: files.segments.len(),
        batches: batch_count,
        offsets,
        findings,
    }
}

/// Checks a valid batch's offsets against its segment's base offset and the
/// last offset of the batch before it (in this or an earlier segment; `None`
/// for the first batch or one after an invalid batch).
fn check_batch_offsets(
    batch: &ScannedBatch,
    base: Offset,
    previous_last: Option<Offset>,
    finding: &mut impl FnMut(Severity, String),
) {
    let header = &batch.header;
    if header.base_offset < base {
        finding(
            Severity::Error,
            format!(
                "position {}: batch base offset {} is below the segment's base offset {base}",
                batch.position, header.base_offset
            ),
        );
    }
    match previous_last {
        Some(last) if header.base_offset <= last => finding(
            Severity::Error,
            format!(
                "position {}: batch base offset {} is not above the previous batch's last offset {last}",
                batch.position, header.base_offset
            ),
        ),
        Some(last) if header.base_offset > last.next() => finding(
            Severity::Warning,
            format!(
                "position {}: offsets {}..={} are missing (compaction and DeleteRecords leave gaps)",
                batch.position,
                last.next(),
                header.base_offset.plus(-1)
            ),
        ),
        _ => {}
    }
    if header.last_offset() < header.base_offset {
        finding(
            Severity::Error,
            format!(
                "position {}: lastOffsetDelta {} is negative",
                batch.position, header.last_offset_delta
            ),
        );
    }
}

fn list_files(dir: &Path, findings: &mut Vec<Finding>) -> PartitionFiles {
    let mut files = PartitionFiles::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            findings.push(Finding {
                severity: Severity::Error,
                path: dir.to_path_buf(),
                message: format!("cannot list: {error}"),
            });
            return files;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut finding = |severity, message: &str| {
            findings.push(Finding {
                severity,
                path: path.clone(),
                message: message.to_owned(),
            });
        };
        match FileKind::of(&name) {
            Some(FileKind::Segment(base)) => {
                files.segments.insert(base, path);
            }
            Some(FileKind::OffsetIndex(base)) => {
                files.offset_indexes.insert(base, path);
            }
            Some(FileKind::TimeIndex(base)) => {
                files.time_indexes.insert(base, path);
            }
            Some(FileKind::ProducerSnapshot(_)) => files.snapshots.push(path),
            Some(FileKind::PartitionCheckpoint) => files.checkpoint = Some(path),
            None => {
                let extension = Path::new(&name)
                    .extension()
                    .and_then(|extension| extension.to_str());
                match extension {
                    Some(extension) if SEGMENT_EXTENSIONS.contains(&extension) => finding(
                        Severity::Error,
                        "segment file name is not a 20-digit base offset; the broker ignores it",
                    ),
                    Some("tmp") => finding(
                        Severity::Warning,
                        "leftover temporary file (the broker removes it at open)",
                    ),
                    _ => finding(
                        Severity::Warning,
                        "unexpected file in a partition directory",
                    ),
                }
            }
        }
    }
    files.snapshots.sort();
    files
}

fn check_tail(tail: &Tail, is_last_segment: bool, finding: &mut impl FnMut(Severity, String)) {
    let (position, what) = match tail {
        Tail::Clean => return,
        Tail::ZeroFilled { position, bytes } => (*position, format!("{bytes} zero bytes")),
        Tail::Torn { position, reason } => (*position, format!("torn batch: {reason}")),
        Tail::Corrupt { position, reason } => {
            finding(
                Severity::Error,
                format!("position {position}: not a batch: {reason}; nothing after it can be read"),
            );
            return;
        }
    };
    if is_last_segment {
        finding(
            Severity::Warning,
            format!("position {position}: {what} at the end of the log (an unacknowledged write; recovery truncates it)"),
        );
    } else {
        finding(
            Severity::Error,
            format!("position {position}: {what} before the end of a rolled segment"),
        );
    }
}

fn check_offset_index(path: &Path, segment: &CheckedSegment, findings: &mut Vec<Finding>) {
    let mut finding = |severity, message| {
        findings.push(Finding {
            severity,
            path: path.to_path_buf(),
            message,
        });
    };
    let entries = match std::fs::read(path)
        .map_err(|error| format!("cannot read: {error}"))
        .and_then(|bytes| {
            offset_index_entries(segment.base_offset, &bytes).map_err(|error| error.to_string())
        }) {
        Ok(entries) => entries,
        Err(reason) => {
            finding(
                Severity::Warning,
                format!("does not decode ({reason}); the broker scans the segment instead"),
            );
            return;
        }
    };
    for (offset, position) in entries {
        let batch = segment
            .batches
            .binary_search_by_key(&u64::from(position), |batch| batch.position)
            .ok()
            .map(|slot| &segment.batches[slot]);
        match batch {
            // An invalid batch there was reported already.
            Some(batch) if batch.header.base_offset == offset || !batch.is_valid() => {}
            Some(batch) => finding(
                Severity::Error,
                format!(
                    "entry offset {offset} -> position {position}: the batch there starts at offset {}",
                    batch.header.base_offset
                ),
            ),
            None => finding(
                Severity::Error,
                format!("entry offset {offset} -> position {position}: no batch starts there"),
            ),
        }
    }
}

fn check_time_index(path: &Path, segment: &CheckedSegment, findings: &mut Vec<Finding>) {
    let mut finding = |severity, message| {
        findings.push(Finding {
            severity,
            path: path.to_path_buf(),
            message,
        });
    };
    let entries = match std::fs::read(path)
        .map_err(|error| format!("cannot read: {error}"))
        .and_then(|bytes| {
            time_index_entries(segment.base_offset, &bytes).map_err(|error| error.to_string())
        }) {
        Ok(entries) => entries,
        Err(reason) => {
            finding(
                Severity::Warning,
                format!("does not decode ({reason}); the broker scans the segment instead"),
            );
            return;
        }
    };
    let has_invalid = segment.batches.iter().any(|batch| !batch.is_valid());
    for (timestamp, offset) in entries {
        let matches = segment.batches.iter().any(|batch| {
            batch.is_valid()
                && batch.header.last_offset() == offset
                && batch.header.max_timestamp == timestamp
        });
        // An invalid batch's offsets and timestamps cannot be trusted, so an
        // entry may name it; the batch itself was reported.
        if !matches && !has_invalid {
            finding(
                Severity::Error,
                format!(
                    "entry timestamp {} -> offset {offset}: no batch ends at that offset with that max timestamp",
                    timestamp.0
                ),
            );
        }
    }
}

fn check_snapshot(path: &Path, findings: &mut Vec<Finding>) {
    let result = std::fs::read(path)
        .map_err(|error| format!("cannot read: {error}"))
        .and_then(|bytes| {
            ProducerStateTable::decode_snapshot(path, &bytes).map_err(|error| error.to_string())
        });
    if let Err(reason) = result {
        findings.push(Finding {
            severity: Severity::Warning,
            path: path.to_path_buf(),
            message: format!(
                "producer snapshot does not decode ({reason}); the broker ignores it and rebuilds producer state from the log"
            ),
        });
    }
}

fn check_checkpoint(dir: &Path, path: Option<&Path>, log_end: Offset, findings: &mut Vec<Finding>) {
    let Some(path) = path else {
        findings.push(Finding {
            severity: Severity::Warning,
            path: dir.to_path_buf(),
            message: "no partition.checkpoint (the broker recovers by scanning the whole log)"
                .to_owned(),
        });
        return;
    };
    let mut finding = |message| {
        findings.push(Finding {
            severity: Severity::Error,
            path: path.to_path_buf(),
            message,
        });
    };
    let checkpoint = match std::fs::read(path)
        .map_err(|error| format!("cannot read: {error}"))
        .and_then(|bytes| {
            PartitionCheckpoint::decode(path, &bytes).map_err(|error| error.to_string())
        }) {
        Ok(checkpoint) => checkpoint,
        Err(reason) => {
            finding(format!("does not decode: {reason}"));
            return;
        }
    };
    if checkpoint.recovery_point > log_end.0 {
        finding(format!(
            "recovery point {} is past the log end {log_end}: flushed batches are missing",
            checkpoint.recovery_point
        ));
    }
    if checkpoint.log_start_offset > log_end.0 {
        finding(format!(
            "log start offset {} is past the log end {log_end}",
            checkpoint.log_start_offset
        ));
    }
}
