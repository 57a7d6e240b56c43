//! `compacted_logs_survive_kill_9_during_cleaning`: a compacted partition
//! whose cleaner runs constantly keeps, through SIGKILLs at random moments,
//! the latest acknowledged value of every key, genuine records only, in
//! strictly increasing offsets, and recovery leaves no half-done swap.
//!
//! Guards against: a swap whose crash leaves both the old and the cleaned
//! segments served (duplicated offsets) or neither (a lost latest value);
//! cleaned files trusted before they were synced; a swap manifest not
//! completed at open; leftover `.cleaned` files; a cleaner checkpoint ahead
//! of what was cleaned.
//!
//! How: the test re-executes its own binary as a child (`FJORD_COMPACTION_CHILD`
//! names the data directory) that runs the real engine with `O_DIRECT` files,
//! one shard, small segments, `min.cleanable.dirty.ratio` 0, a cleaner
//! backoff of a few ms and a small offset map (so passes clean part of the
//! dirty range). On start the child checks the partition against the keys'
//! latest acknowledged offsets (a file the parent writes), then appends keyed
//! records with flush, printing `fjord-compaction-ack <key> <offset>` for
//! each flushed record. The parent SIGKILLs it 50..400 ms after its first
//! ack, for [`CYCLES`] cycles; a last child only checks, and reports how
//! many records compaction removed, which must be some.
//!
//! Each record's value is a function of its key and offset, so every record
//! read back is checked byte for byte. `FJORD_CRASH_SEED` replays a run's
//! workload and kill delays.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{exit_on_panic, leader_append, offsets, read_batches, seed_from_env, TestChild};
use fjord_engine::batch::{self, BatchHeader};
use fjord_engine::config::{CleanupPolicy, LogConfig};
use fjord_engine::log::cleaner::{CLEANED_SUFFIX, OFFSET_MAP_ENTRY_BYTES, SWAP_FILE};
use fjord_engine::shard::{self, CleanerConfig, EngineConfig, Shard};
use fjord_engine::testkit::{keyed_batch, Rng};
use fjord_engine::{Error, Offset, TimestampMs, TopicPartition};

const TEST_NAME: &str = "compacted_logs_survive_kill_9_during_cleaning";
/// Set in the child: the data directory.
const CHILD_DIR_ENV: &str = "FJORD_COMPACTION_CHILD";
/// Set in the child: the seed of its workload.
const CHILD_SEED_ENV: &str = "FJORD_COMPACTION_CHILD_SEED";
/// Set in the last child: check and report, append nothing.
const CHILD_CHECK_ONLY_ENV: &str = "FJORD_COMPACTION_CHILD_CHECK_ONLY";
const SEED_ENV: &str = "FJORD_CRASH_SEED";
const ACK_PREFIX: &str = "fjord-compaction-ack ";
const REPORT_PREFIX: &str = "fjord-compaction-report ";
const EXPECTED_FILE: &str = "expected";

const CYCLES: usize = 12;
const KEYS: u64 = 40;
const SEGMENT_BYTES: u64 = 16 << 10;
const KILL_DELAY_MS: Range<u64> = 50..400;
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn partition() -> TopicPartition {
    TopicPartition::new("compacted", 0)
}

fn key_bytes(key: u64) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

/// The value of `key`'s record at `offset`: identity, then filler.
fn record_value(key: u64, offset: i64) -> Vec<u8> {
    let mut value = format!("{key}@{offset};").into_bytes();
    let filler = (offset as u64).wrapping_mul(2_654_435_761) % 300;
    value.extend((0..filler).map(|i| (i as u8) ^ (key as u8)));
    value
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        cleanup_policy: CleanupPolicy::COMPACT,
        min_cleanable_dirty_ratio: 0.0,
        ..LogConfig::default()
    }
}

fn engine_config(data_dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(data_dir);
    config.shards = 1;
    config.io_memory_bytes = 2 << 20;
    config.cache_bytes_per_shard = 1 << 20;
    config.cleaner = CleanerConfig {
        enabled: true,
        dedupe_buffer_bytes_per_shard: OFFSET_MAP_ENTRY_BYTES * 64,
        backoff: Duration::from_millis(2),
    };
    config.log_config_for = std::sync::Arc::new(|_| log_config());
    config
}

fn write_expected(dir: &Path, expected: &BTreeMap<u64, i64>) {
    let mut text = String::new();
    for (key, offset) in expected {
        writeln!(text, "{key} {offset}").unwrap();
    }
    std::fs::write(dir.join(EXPECTED_FILE), text).unwrap();
}

fn read_expected(dir: &Path) -> BTreeMap<u64, i64> {
    std::fs::read_to_string(dir.join(EXPECTED_FILE))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (key, offset) = line.split_once(' ').unwrap();
            (key.parse().unwrap(), offset.parse().unwrap())
        })
        .collect()
}

/// Reads the partition whole and checks it against `expected`; returns the
/// log end and the number of records present.
async fn verify(
    shard: &Rc<Shard>,
    data_dir: &Path,
    expected: &BTreeMap<u64, i64>,
) -> (Offset, i64) {
    let tp = partition();
    let offsets = match shard.offsets(tp.clone()).await {
        Ok(offsets) => offsets,
        Err(Error::UnknownPartition(_)) if expected.is_empty() => {
            return (Offset::ZERO, 0);
        }
        Err(other) => panic!("offsets failed: {other:?}"),
    };
    let dir = data_dir.join(tp.dir_name());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(CLEANED_SUFFIX) && name != SWAP_FILE,
            "{name} left after recovery"
        );
    }
    let mut latest: BTreeMap<u64, i64> = BTreeMap::new();
    let mut present = 0;
    let mut previous: Option<Offset> = None;
    let batches = read_batches(
        shard,
        &tp,
        offsets.log_start..offsets.log_end,
        256 << 10,
        false,
    )
    .await;
    for bytes in &batches {
        let header = BatchHeader::parse(bytes).unwrap();
        assert!(
            batch::crc_matches(bytes),
            "batch at {} fails its CRC",
            header.base_offset
        );
        assert!(
            previous.is_none_or(|previous| header.base_offset > previous),
            "batch at {} does not follow {previous:?}",
            header.base_offset
        );
        previous = Some(header.last_offset());
        for record in batch::records(bytes).unwrap() {
            let record = record.unwrap();
            let offset = header.base_offset.0 + i64::from(record.offset_delta);
            let key: u64 = std::str::from_utf8(record.key.unwrap())
                .unwrap()
                .strip_prefix("key-")
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                record.value,
                Some(&record_value(key, offset)[..]),
                "offset {offset} does not hold what was appended there"
            );
            latest.insert(key, offset);
            present += 1;
        }
    }
    for (key, &acked) in expected {
        let found = latest.get(key).copied();
        assert!(
            found.is_some_and(|offset| offset >= acked),
            "key {key}: latest acknowledged offset {acked} lost (latest present {found:?})"
        );
    }
    (offsets.log_end, present)
}

fn run_child(dir: &Path) {
    exit_on_panic();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let check_only = std::env::var_os(CHILD_CHECK_ONLY_ENV).is_some();
    let expected = read_expected(dir);
    let data_dir = dir.join("data");
    let config = engine_config(&data_dir);
    shard::run(&config, move |shard: Rc<Shard>| {
        let expected = expected.clone();
        let data_dir = data_dir.clone();
        async move {
            let (end, present) = verify(&shard, &data_dir, &expected).await;
            if check_only {
                println!("{REPORT_PREFIX}{} {present}", end.0);
                return;
            }
            let tp = partition();
            match shard.create_partition(tp.clone(), log_config()).await {
                Ok(()) | Err(Error::PartitionExists(_)) => {}
                Err(other) => panic!("create failed: {other:?}"),
            }
            let mut rng = Rng::new(seed);
            let stop_at = Instant::now() + CHILD_LIFETIME;
            while Instant::now() < stop_at {
                let keys: Vec<u64> = (0..=rng.below(4)).map(|_| rng.below(KEYS)).collect();
                let base = offsets(&shard, &tp).await.log_end.0;
                let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = keys
                    .iter()
                    .enumerate()
                    .map(|(delta, &key)| {
                        let value = record_value(key, base + delta as i64);
                        (key_bytes(key), Some(value))
                    })
                    .collect();
                let bytes = keyed_batch(&records, TimestampMs::now());
                let info = shard
                    .append(leader_append(&tp, bytes, true))
                    .await
                    .expect("append");
                assert_eq!(info.base_offset.0, base, "only this task appends");
                for (delta, key) in keys.iter().enumerate() {
                    println!("{ACK_PREFIX}{key} {}", base + delta as i64);
                }
            }
        }
    })
    .unwrap();
}

/// Runs one child; kills it `kill_delay` after its first ack unless it
/// only checks. Returns its ack and report lines.
fn run_cycle(dir: &Path, cycle: usize, seed: u64, kill_delay: Option<Duration>) -> Vec<String> {
    let mut command = TestChild::command(TEST_NAME);
    command
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, seed.to_string());
    if kill_delay.is_none() {
        command.env(CHILD_CHECK_ONLY_ENV, "1");
    }
    let started = Instant::now();
    let mut child = TestChild::spawn(&mut command);
    let mut lines = Vec::new();
    if let Some(delay) = kill_delay {
        while !lines.iter().any(|line: &String| line.contains(ACK_PREFIX)) {
            if let Ok(line) = child.lines.recv_timeout(Duration::from_millis(20)) {
                lines.push(line);
                continue;
            }
            if let Some(status) = child.process.try_wait().unwrap() {
                panic!(
                    "cycle {cycle}: the child exited with {status} before acknowledging anything"
                );
            }
            assert!(
                started.elapsed() < FIRST_ACK_TIMEOUT,
                "cycle {cycle}: no ack in {FIRST_ACK_TIMEOUT:?}"
            );
        }
        std::thread::sleep(delay);
        if let Some(status) = child.process.try_wait().unwrap() {
            panic!("cycle {cycle}: the child exited with {status} before it was killed");
        }
        child.process.kill().unwrap();
        child.process.wait().unwrap();
    } else {
        let status = child.process.wait().unwrap();
        assert!(
            status.success(),
            "cycle {cycle}: checking child exited with {status}"
        );
    }
    lines.extend(child.remaining_lines());
    println!(
        "cycle {cycle}: {} lines in {:?}",
        lines.len(),
        started.elapsed()
    );
    lines
}

/// What follows `prefix` in `line`, wherever it starts.
fn after<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.find(prefix).map(|at| &line[at + prefix.len()..])
}

#[test]
fn compacted_logs_survive_kill_9_during_cleaning() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        run_child(&PathBuf::from(dir));
        return;
    }
    let seed = seed_from_env(SEED_ENV);
    println!("{TEST_NAME}: seed {seed} (replay with {SEED_ENV}={seed})");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut expected: BTreeMap<u64, i64> = BTreeMap::new();
    for cycle in 0..=CYCLES {
        write_expected(dir.path(), &expected);
        let kill_delay = (cycle < CYCLES).then(|| {
            Duration::from_millis(
                KILL_DELAY_MS.start + rng.below(KILL_DELAY_MS.end - KILL_DELAY_MS.start),
            )
        });
        let lines = run_cycle(dir.path(), cycle, rng.next_u64(), kill_delay);
        for line in &lines {
            // The test harness prints its own words before the first line.
            if let Some(rest) = after(line, ACK_PREFIX) {
                let (key, offset) = rest.split_once(' ').unwrap();
                let entry = expected.entry(key.parse().unwrap()).or_insert(0);
                *entry = (*entry).max(offset.parse().unwrap());
            } else if let Some(rest) = after(line, REPORT_PREFIX) {
                let (end, present) = rest.split_once(' ').unwrap();
                let (end, present): (i64, i64) = (end.parse().unwrap(), present.parse().unwrap());
                println!("final log: end {end}, {present} records present");
                assert!(
                    present < end,
                    "the cleaner removed nothing in {CYCLES} cycles"
                );
            }
        }
    }
}
