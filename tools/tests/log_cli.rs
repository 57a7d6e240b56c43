//! `fjordctl dump-log` and `fjordctl verify-log` run as an operator runs them:
//! the built binary, on a data directory the real engine wrote and closed.
//!
//! Guards against tools that disagree with the engine's on-disk format (a
//! dump whose offsets, counts or CRC verdicts differ from what was appended),
//! a verifier that passes a damaged segment or fails a clean one, and either
//! tool crashing on a torn or corrupt file instead of naming the position.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::rc::Rc;

use bytes::Bytes;
use fjord_engine::batch::build_batch;
use fjord_engine::cache::BatchCache;
use fjord_engine::clock::SystemClock;
use fjord_engine::config::LogConfig;
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::dma::DmaStorage;
use fjord_engine::{LeaderEpoch, ProducerEpoch, ProducerId, TimestampMs, TopicPartition};
use fjord_tools::client::records::{encode_batch, Codec, OutgoingRecord};
use glommio::{LocalExecutorBuilder, Placement};
use tempfile::TempDir;

/// Batches appended; each holds [`RECORDS_PER_BATCH`] records.
const BATCHES: usize = 60;
const RECORDS_PER_BATCH: usize = 3;
const FIRST_TIMESTAMP_MS: i64 = 1_700_000_000_000;

fn partition() -> TopicPartition {
    TopicPartition::new("events", 0)
}

fn value(batch: usize, record: usize) -> String {
    format!("value-{batch}-{record}")
}

/// The batches of [`written_data_dir`]: [`BATCHES`] batches of one
/// idempotent producer, [`RECORDS_PER_BATCH`] records each.
fn producer_batches() -> Vec<Vec<u8>> {
    (0..BATCHES)
        .map(|batch| {
            let keys: Vec<String> = (0..RECORDS_PER_BATCH).map(|r| format!("key-{r}")).collect();
            let values: Vec<String> = (0..RECORDS_PER_BATCH).map(|r| value(batch, r)).collect();
            let records: Vec<_> = keys
                .iter()
                .zip(&values)
                .map(|(key, value)| (Some(key.as_bytes()), Some(value.as_bytes())))
                .collect();
            let sequence = (batch * RECORDS_PER_BATCH) as i32;
            build_batch(
                &records,
                TimestampMs(FIRST_TIMESTAMP_MS + batch as i64),
                Some((ProducerId(7), ProducerEpoch(0), sequence)),
            )
        })
        .collect()
}

/// A data directory holding [`producer_batches`] in `events-0`.
fn written_data_dir() -> TempDir {
    engine_wrote(producer_batches())
}

/// A data directory where the engine appended `batches` to `events-0`, on
/// real files with small segments (so there are several) and an index entry
/// per batch, then closed the log cleanly.
fn engine_wrote(batches: Vec<Vec<u8>>) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_owned();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .spawn(move || async move {
            let config = LogConfig {
                segment_bytes: 4096,
                index_interval_bytes: 1,
                ..LogConfig::default()
            };
            let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
            let log = PartitionLog::open(
                DmaStorage,
                Rc::new(SystemClock),
                &data_dir,
                partition(),
                config,
                cache,
                0,
            )
            .await
            .expect("open");
            for bytes in &batches {
                log.append(bytes, LeaderEpoch(0)).await.expect("append");
            }
            log.close().await.expect("close");
        })
        .expect("executor")
        .join()
        .expect("executor joins");
    dir
}

fn partition_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(partition().dir_name())
}

/// The partition's files with `extension`, in name (= offset) order.
fn files_with(data_dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(partition_dir(data_dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn fjordctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fjordctl"))
        .args(args)
        .output()
        .expect("fjordctl runs")
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = fjordctl(args);
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    )
}

fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// The value of `field: value` in a dump line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let marker = format!("{name}: ");
    let start = line
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + marker.len();
    line[start..].split_whitespace().next().unwrap()
}

#[test]
fn dump_log_prints_every_batch_as_appended_with_its_records() {
    let data_dir = written_data_dir();
    let segments = files_with(data_dir.path(), "log");
    assert!(segments.len() > 1, "small segments roll: {segments:?}");
    let mut next_offset = 0;
    for segment in &segments {
        let (code, stdout, stderr) = run(&["dump-log", text(segment), "--print-data"]);
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        let batch_lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("baseOffset:"))
            .collect();
        assert!(!batch_lines.is_empty(), "{stdout}");
        for line in batch_lines {
            assert_eq!(field(line, "baseOffset"), next_offset.to_string(), "{line}");
            assert_eq!(
                field(line, "count"),
                RECORDS_PER_BATCH.to_string(),
                "{line}"
            );
            assert_eq!(field(line, "isValid"), "true", "{line}");
            assert_eq!(field(line, "compresscodec"), "none", "{line}");
            assert_eq!(field(line, "producerId"), "7", "{line}");
            next_offset += RECORDS_PER_BATCH;
        }
        let first_batch = field(stdout.lines().nth(2).unwrap(), "baseOffset")
            .parse::<usize>()
            .unwrap()
            / RECORDS_PER_BATCH;
        assert!(
            stdout.contains(&format!("key: key-1 payload: {}", value(first_batch, 1))),
            "{stdout}"
        );
    }
    assert_eq!(
        next_offset,
        BATCHES * RECORDS_PER_BATCH,
        "every batch is in some segment"
    );
}

#[test]
fn dump_log_json_has_offsets_timestamps_and_values() {
    let data_dir = written_data_dir();
    let first = &files_with(data_dir.path(), "log")[0];
    let (code, stdout, stderr) = run(&["dump-log", text(first), "--print-data", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let document: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(document["kind"], "segment");
    assert!(document["tail"].is_null());
    let batches = document["batches"].as_array().unwrap();
    let mut position = 0;
    for (number, batch) in batches.iter().enumerate() {
        assert_eq!(batch["base_offset"], number * RECORDS_PER_BATCH);
        assert_eq!(batch["position"], position);
        assert_eq!(batch["crc_valid"], true);
        assert_eq!(batch["timestamp_type"], "CreateTime");
        assert_eq!(batch["max_timestamp"], FIRST_TIMESTAMP_MS + number as i64);
        assert_eq!(batch["records"][2]["value"], value(number, 2));
        assert_eq!(
            batch["records"][2]["offset"],
            number * RECORDS_PER_BATCH + 2
        );
        position += batch["size"].as_u64().unwrap();
    }
    assert_eq!(position, fs::metadata(first).unwrap().len());
}

#[test]
fn dump_log_decodes_indexes_snapshots_and_the_checkpoint() {
    let data_dir = written_data_dir();
    let first_index = &files_with(data_dir.path(), "index")[0];
    let (code, stdout, _) = run(&["dump-log", text(first_index)]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("offset: 0 position: 0"), "{stdout}");
    assert!(
        stdout.contains(&format!("offset: {RECORDS_PER_BATCH} position: ")),
        "{stdout}"
    );

    let first_time_index = &files_with(data_dir.path(), "timeindex")[0];
    let (code, stdout, _) = run(&["dump-log", text(first_time_index)]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "timestamp: {FIRST_TIMESTAMP_MS} offset: {}",
            RECORDS_PER_BATCH - 1
        )),
        "{stdout}"
    );

    let checkpoint = partition_dir(data_dir.path()).join("partition.checkpoint");
    let (code, stdout, _) = run(&["dump-log", text(&checkpoint)]);
    assert_eq!(code, Some(0), "{stdout}");
    let end = BATCHES * RECORDS_PER_BATCH;
    assert!(
        stdout.contains(&format!("recoveryPoint: {end} ")),
        "{stdout}"
    );

    let snapshot = files_with(data_dir.path(), "snapshot")
        .pop()
        .expect("a snapshot at close");
    let (code, stdout, _) = run(&["dump-log", text(&snapshot)]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("lastOffset: {}", end - 1)),
        "{stdout}"
    );
}

#[test]
fn verify_log_passes_a_cleanly_closed_data_dir() {
    let data_dir = written_data_dir();
    let (code, stdout, stderr) = run(&["verify-log", text(data_dir.path())]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let end = BATCHES * RECORDS_PER_BATCH - 1;
    assert!(
        stdout.contains("events-0: OK: ")
            && stdout.contains(&format!("offsets 0..={end}, 0 errors")),
        "{stdout}"
    );
}

#[test]
fn a_flipped_byte_fails_verify_log_and_dump_log_names_the_bad_crc() {
    let written = written_data_dir();
    let damaged = tempfile::tempdir().unwrap();
    copy_dir(written.path(), damaged.path());
    let segment = files_with(damaged.path(), "log")[1].clone();
    let mut bytes = fs::read(&segment).unwrap();
    // Inside the first batch's records: the header still parses, the CRC fails.
    bytes[70] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();

    let (code, stdout, stderr) = run(&["verify-log", text(damaged.path())]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let error = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stdout}"));
    assert!(error.contains(text(&segment)), "{error}");
    assert!(error.contains("position 0: invalid batch"), "{error}");
    assert!(stdout.contains("events-0: CORRUPT"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.trim_start().starts_with("error:")).count(),
        1,
        "the index entries naming the damaged batch and the offsets it hides are not errors of their own: {stdout}"
    );
    assert!(
        !stdout.contains("are missing"),
        "no gap is invented after a bad batch: {stdout}"
    );

    let (code, stdout, _) = run(&["dump-log", text(&segment)]);
    assert_eq!(code, Some(1), "{stdout}");
    let first = stdout
        .lines()
        .find(|l| l.starts_with("baseOffset:"))
        .unwrap();
    assert_eq!(field(first, "isValid"), "false", "{first}");
    assert!(first.contains("does not match computed"), "{first}");
    let rest_valid = stdout
        .lines()
        .filter(|l| l.starts_with("baseOffset:"))
        .skip(1)
        .all(|l| field(l, "isValid") == "true");
    assert!(
        rest_valid,
        "the batches after the damaged one still read: {stdout}"
    );
}

#[test]
fn a_torn_tail_is_reported_with_its_position_not_a_crash() {
    let written = written_data_dir();
    let damaged = tempfile::tempdir().unwrap();
    copy_dir(written.path(), damaged.path());
    let segment = files_with(damaged.path(), "log").pop().unwrap();
    let length = fs::metadata(&segment).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 5)
        .unwrap();

    let (code, stdout, _) = run(&["dump-log", text(&segment), "--json"]);
    assert_eq!(code, Some(1), "{stdout}");
    let document: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let last = document["batches"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let torn_at = last["position"].as_u64().unwrap() + last["size"].as_u64().unwrap();
    assert_eq!(document["tail"]["kind"], "torn");
    assert_eq!(document["tail"]["position"], torn_at);

    // The checkpoint says the lost batch was flushed: that is corruption.
    let (code, stdout, _) = run(&["verify-log", text(damaged.path())]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("position {torn_at}: torn batch")),
        "{stdout}"
    );
    assert!(stdout.contains("is past the log end"), "{stdout}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let (code, _, stderr) = run(&["verify-log", text(&missing)]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot read data directory"), "{stderr}");

    let notes = dir.path().join("notes.txt");
    fs::write(&notes, "hello").unwrap();
    let (code, _, stderr) = run(&["dump-log", text(&notes)]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn print_data_decompresses_a_gzip_batch() {
    let zipped = OutgoingRecord {
        key: Some(Bytes::from_static(b"zipped-key")),
        value: Some(Bytes::from_static(b"zipped-value")),
        headers: vec![("trace".to_owned(), Some(Bytes::from_static(b"abc")))],
    };
    let tombstone = OutgoingRecord {
        value: None,
        ..zipped.clone()
    };
    let batch =
        encode_batch(&[zipped, tombstone], FIRST_TIMESTAMP_MS, Codec::Gzip).expect("encode");
    let data_dir = engine_wrote(vec![batch.to_vec()]);
    let segment = &files_with(data_dir.path(), "log")[0];

    let (code, stdout, stderr) = run(&["dump-log", text(segment), "--print-data"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("baseOffset:"))
        .unwrap();
    assert_eq!(field(line, "compresscodec"), "gzip", "{line}");
    assert_eq!(field(line, "count"), "2", "{line}");
    assert!(
        stdout.contains(&format!(
            "| offset: 0 CreateTime: {FIRST_TIMESTAMP_MS} headers: [trace=abc] key: zipped-key payload: zipped-value"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("| offset: 1 ") && stdout.contains("payload: null"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["verify-log", text(data_dir.path())]);
    assert_eq!(code, Some(0), "{stdout}");
}

/// A crash can leave zeros (an `O_DIRECT` block written past the data) after
/// the last batch; recovery truncates them and nothing acknowledged is lost,
/// so the check passes with a warning while dump-log still reports the tail.
#[test]
fn a_zero_filled_end_of_the_log_is_a_warning_not_corruption() {
    let written = written_data_dir();
    let damaged = tempfile::tempdir().unwrap();
    copy_dir(written.path(), damaged.path());
    let segment = files_with(damaged.path(), "log").pop().unwrap();
    let length = fs::metadata(&segment).unwrap().len();
    let mut bytes = fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    fs::write(&segment, &bytes).unwrap();

    let (code, stdout, _) = run(&["verify-log", text(damaged.path())]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "warning: {}: position {length}: 4096 zero bytes",
            text(&segment)
        )),
        "{stdout}"
    );

    let (code, stdout, _) = run(&["dump-log", text(&segment)]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("Zero-filled tail at position {length}")),
        "{stdout}"
    );
}

/// `fjordctl dump-log ... | head` is how an operator looks at a large
/// segment: when the reader goes away, fjordctl ends the way other tools
/// do (killed by `SIGPIPE`), not with a panic on the broken pipe. The pipe's
/// read end is closed before fjordctl starts, so its first line hits it.
#[test]
fn a_closed_output_ends_fjordctl_quietly() {
    use std::os::unix::process::ExitStatusExt;

    let data_dir = written_data_dir();
    let segment = files_with(data_dir.path(), "log")
        .into_iter()
        .next()
        .expect("a segment");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_fjordctl"))
        .args(["dump-log", text(&segment), "--print-data"])
        .stdout(writer)
        .output()
        .expect("fjordctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "fjordctl panicked: {stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}, stderr: {stderr}",
        output.status
    );
}
