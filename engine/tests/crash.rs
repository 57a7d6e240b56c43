//! `acked_records_survive_kill_9`: a record the engine acknowledged as
//! flushed survives the process being killed at any moment, and recovery
//! never serves a torn or corrupt batch.
//!
//! Guards against: a flush that reports offsets durable before they are
//! (the syncer covering the wrong segment, or an offset the writer has not
//! finished); recovery that cuts a log below what was flushed (taking the
//! zero padding of the block-aligned tail, the rewritten tail block, a
//! freshly rolled segment or a stale checkpoint for a torn tail); recovery
//! that keeps a torn batch, or loses density (a gap or an offset reused
//! after restart); and reads after recovery returning bytes other than the
//! ones appended at that offset.
//!
//! How: the test re-executes its own binary as a child (`FJORD_CRASH_CHILD`
//! names the working directory) that runs the real engine, two shards with
//! `O_DIRECT` files, small segments so they roll. On start the child checks
//! every partition against what earlier children acknowledged (a file the
//! parent writes), then appends at full speed from both shards to partitions
//! owned by both, flushing after every few appends and from a concurrent
//! flusher, and prints `fjord-crash-ack <partition> <flushed end>` after each
//! confirmed flush. The parent SIGKILLs it a random 50..400 ms after its
//! first ack, and starts the next child on the same directory, for
//! [`CYCLES`] cycles. Every fourth cycle ends differently: a kill 25..200 ms
//! after the start (often mid-recovery, before any ack), or a clean shutdown
//! whose exact log ends the next child checks, so crash recovery also starts
//! from a cleanly closed log. After the last cycle (a kill mid-append) the
//! parent runs the engine in-process and checks every partition from every
//! shard once more.
//!
//! Every record's value is a function of its partition and offset, so each
//! batch read back is checked byte for byte. The seed is printed; set
//! `FJORD_CRASH_SEED` to replay a run's workload and kill delays (the exact
//! moment of the kill still depends on timing).

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{exit_on_panic, read_batches, seed_from_env, TestChild};
use fjord_engine::batch::{self, BatchHeader};
use fjord_engine::config::LogConfig;
use fjord_engine::shard::{self, AppendRequest, EngineConfig, Shard};
use fjord_engine::testkit::{values_batch, Rng};
use fjord_engine::{Error, LeaderEpoch, Offset, TimestampMs, TopicPartition};
use futures_lite::FutureExt as _;

const TEST_NAME: &str = "acked_records_survive_kill_9";
/// Set in the child: the cycle's working directory.
const CHILD_DIR_ENV: &str = "FJORD_CRASH_CHILD";
/// Set in the child: the seed of its workload.
const CHILD_SEED_ENV: &str = "FJORD_CRASH_CHILD_SEED";
/// Set in the child of the clean cycle: stop appending after this many ms and
/// shut down cleanly.
const CHILD_CLEAN_STOP_MS_ENV: &str = "FJORD_CRASH_CHILD_CLEAN_STOP_MS";
/// Replays a run.
const SEED_ENV: &str = "FJORD_CRASH_SEED";
/// Prefix of the child's lines saying every offset below `end` is flushed.
const ACK_PREFIX: &str = "fjord-crash-ack ";
/// Prefix of the child's lines giving a partition's exact end after a clean
/// shutdown.
const END_PREFIX: &str = "fjord-crash-end ";
/// What the parent knows about each partition, for the next child to check.
const EXPECTED_FILE: &str = "expected";

const CYCLES: usize = 16;
const TOPIC: &str = "crash";
const PARTITIONS: i32 = 4;
const RECORDS_PER_BATCH_MAX: u64 = 4;
const VALUE_FILLER_BYTES_MAX: u64 = 2000;
const SEGMENT_BYTES: u64 = 256 << 10;
/// Kill delay after the first ack, in ms.
const KILL_DELAY_MS: Range<u64> = 50..400;
/// A child that has not acknowledged anything by then has failed.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// A child stops on its own after this long, should the parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn partition(index: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, index)
}

/// The value of the record at `offset` of partition `index`: readable
/// identity, then filler whose length and bytes also follow from both.
fn record_value(index: i32, offset: i64) -> Vec<u8> {
    let mut rng = Rng::new((u64::from(index.unsigned_abs()) << 48) ^ offset as u64);
    let mut value = format!("partition {index} offset {offset};").into_bytes();
    let filler = rng.below(VALUE_FILLER_BYTES_MAX) as usize;
    let first = rng.next_u64() as u8;
    value.extend((0..filler).map(|i| first.wrapping_add(i as u8)));
    value
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        ..LogConfig::default()
    }
}

fn engine_config(data_dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(data_dir);
    config.shards = config.shards.min(2);
    config.io_memory_bytes = 2 << 20;
    config.cache_bytes_per_shard = 4 << 20;
    config.log_config_for = std::sync::Arc::new(|_| log_config());
    config
}

/// The shard that appends to partition `index`: with two shards, each
/// appends to one partition it owns and one its peer owns.
fn writer_of(index: i32, shard_count: usize) -> usize {
    (index / 2) as usize % shard_count
}

/// What the parent knows of a partition.
#[derive(Clone, Copy, Debug, Default)]
struct Expected {
    /// Every offset below was acknowledged as flushed.
    acked_end: Offset,
    /// The log's exact end, known after a clean shutdown.
    exact_end: Option<Offset>,
}

fn write_expected(dir: &Path, expected: &BTreeMap<i32, Expected>) {
    let mut text = String::new();
    for (index, e) in expected {
        let exact = e.exact_end.map_or(-1, |end| end.0);
        writeln!(text, "{index} {} {exact}", e.acked_end.0).unwrap();
    }
    std::fs::write(dir.join(EXPECTED_FILE), text).unwrap();
}

fn read_expected(dir: &Path) -> BTreeMap<i32, Expected> {
    let Ok(text) = std::fs::read_to_string(dir.join(EXPECTED_FILE)) else {
        return BTreeMap::new();
    };
    text.lines()
        .map(|line| {
            let fields: Vec<i64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
            let expected = Expected {
                acked_end: Offset(fields[1]),
                exact_end: (fields[2] >= 0).then_some(Offset(fields[2])),
            };
            (fields[0] as i32, expected)
        })
        .collect()
}

/// Checks one batch read back at `expected_base`: it parses, its CRC holds,
/// it starts where the previous one ended, and every record holds the value
/// written at its offset. Returns the offset after it.
fn check_batch(index: i32, bytes: &[u8], expected_base: Offset) -> Offset {
    let header = BatchHeader::parse(bytes)
        .unwrap_or_else(|error| panic!("partition {index}: batch at {expected_base}: {error}"));
    assert_eq!(
        header.total_bytes(),
        bytes.len(),
        "partition {index}: batch at {expected_base} has a torn length"
    );
    assert!(
        batch::crc_matches(bytes),
        "partition {index}: batch at {expected_base} fails its CRC"
    );
    assert_eq!(
        header.base_offset, expected_base,
        "partition {index}: offsets are not dense"
    );
    let mut count = 0;
    for (delta, record) in batch::records(bytes).unwrap().enumerate() {
        let record = record.unwrap_or_else(|error| {
            panic!("partition {index}: batch at {expected_base}, record {delta}: {error}")
        });
        let offset = expected_base.0 + delta as i64;
        assert!(
            record.value == Some(&record_value(index, offset)[..]),
            "partition {index}: offset {offset} does not hold the value appended there"
        );
        count += 1;
    }
    assert_eq!(
        count, header.record_count,
        "partition {index}: record count"
    );
    header.last_offset().next()
}

/// Reads partition `index` whole through `shard` and checks it against
/// `expected`; returns its log end.
async fn verify_partition(shard: &Rc<Shard>, index: i32, expected: Expected) -> Offset {
    let tp = partition(index);
    let offsets = match shard.offsets(tp.clone()).await {
        Ok(offsets) => offsets,
        // Killed before the partition was created: nothing was acknowledged.
        Err(Error::UnknownPartition(_)) if expected.acked_end == Offset(0) => {
            return Offset(0);
        }
        Err(other) => panic!("partition {index}: offsets failed: {other:?}"),
    };
    assert_eq!(offsets.log_start, Offset(0), "partition {index}: log start");
    assert!(
        offsets.log_end >= expected.acked_end,
        "partition {index}: recovered log ends at {} but every offset below {} was acknowledged as flushed",
        offsets.log_end,
        expected.acked_end
    );
    if let Some(exact_end) = expected.exact_end {
        assert_eq!(
            offsets.log_end, exact_end,
            "partition {index}: log end after a clean shutdown and a crash"
        );
    }
    let batches = read_batches(shard, &tp, Offset(0)..offsets.log_end, 256 << 10, false).await;
    let mut next = Offset(0);
    for bytes in &batches {
        next = check_batch(index, bytes, next);
    }
    assert_eq!(
        next, offsets.log_end,
        "partition {index}: nothing readable at {next}, below the log end"
    );
    offsets.log_end
}

// ---- The child: the engine under test, killed at a random moment. ----

struct ChildPlan {
    seed: u64,
    expected: BTreeMap<i32, Expected>,
    /// How long each partition is appended to, from its check.
    append_for: Duration,
    /// Shut down cleanly at `stop_at` and print the exact ends (otherwise the
    /// parent kills the child long before).
    clean: bool,
}

fn run_child(dir: &Path) {
    exit_on_panic();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let clean_stop = std::env::var(CHILD_CLEAN_STOP_MS_ENV)
        .ok()
        .map(|ms| Duration::from_millis(ms.parse().unwrap()));
    let plan = ChildPlan {
        seed,
        expected: read_expected(dir),
        append_for: clean_stop.unwrap_or(CHILD_LIFETIME),
        clean: clean_stop.is_some(),
    };
    let plan = std::sync::Arc::new(plan);
    shard::run(
        &engine_config(&dir.join("data")),
        move |shard: Rc<Shard>| {
            let plan = plan.clone();
            async move { child_main(shard, &plan).await }
        },
    )
    .unwrap();
}

async fn child_main(shard: Rc<Shard>, plan: &ChildPlan) {
    let writers: Vec<_> = (0..PARTITIONS)
        .filter(|&index| writer_of(index, shard.shard_count()) == shard.id())
        .map(|index| {
            let expected = plan.expected.get(&index).copied().unwrap_or_default();
            let rng = Rng::new(plan.seed ^ (u64::from(index.unsigned_abs()) << 32));
            glommio::spawn_local(write_partition(
                shard.clone(),
                index,
                expected,
                rng,
                plan.append_for,
            ))
        })
        .collect();
    for writer in writers {
        let (index, end) = writer.await;
        if plan.clean {
            println!("{END_PREFIX}{index} {end}");
        }
    }
}

/// Checks the partition against what was acknowledged, then appends to it
/// for `append_for`, flushing and acknowledging as it goes. Returns the
/// partition index and the end of what it appended.
async fn write_partition(
    shard: Rc<Shard>,
    index: i32,
    expected: Expected,
    mut rng: Rng,
    append_for: Duration,
) -> (i32, Offset) {
    let tp = partition(index);
    let mut next = verify_partition(&shard, index, expected).await;
    match shard.create_partition(tp.clone(), log_config()).await {
        Ok(()) | Err(Error::PartitionExists(_)) => {}
        Err(other) => panic!("partition {index}: create failed: {other:?}"),
    }
    let stopped = Rc::new(std::cell::Cell::new(false));
    let flusher = glommio::spawn_local(flush_repeatedly(
        shard.clone(),
        index,
        Rng::new(rng.next_u64()),
        stopped.clone(),
    ));
    let stop_at = Instant::now() + append_for;
    let mut appends_since_flush = 0;
    let mut flush_every = flush_interval(&mut rng);
    while Instant::now() < stop_at {
        let records = 1 + rng.below(RECORDS_PER_BATCH_MAX);
        let values: Vec<Vec<u8>> = (0..records)
            .map(|delta| record_value(index, next.0 + delta as i64))
            .collect();
        let bytes = values_batch(&values, TimestampMs::now(), None);
        match shard
            .append(AppendRequest {
                partition: tp.clone(),
                batches: vec![bytes.into()],
                leader_epoch: LeaderEpoch(0),
                flush: false,
                advance_high_watermark: false,
            })
            .await
        {
            Ok(info) => assert_eq!(
                info.base_offset, next,
                "partition {index}: append landed elsewhere"
            ),
            Err(other) => panic!("partition {index}: append at {next} failed: {other:?}"),
        }
        next = next.plus(values.len() as i64);
        appends_since_flush += 1;
        if appends_since_flush >= flush_every {
            let flushed_end = flush(&shard, index).await;
            assert!(
                flushed_end >= next,
                "partition {index}: flush returned {flushed_end} below the appended {next}"
            );
            appends_since_flush = 0;
            flush_every = flush_interval(&mut rng);
        }
    }
    stopped.set(true);
    flusher.await;
    (index, next)
}

/// Appends between flushes: often 1, otherwise up to 8.
fn flush_interval(rng: &mut Rng) -> u64 {
    if rng.below(4) == 0 {
        1
    } else {
        rng.between(1, 8)
    }
}

/// Flushes partition `index` and acknowledges the flushed end on stdout.
async fn flush(shard: &Rc<Shard>, index: i32) -> Offset {
    let tp = partition(index);
    match shard.flush(tp).await {
        Ok(flushed) => {
            // One write per line (stdout is line-buffered), so a kill never
            // leaves half an ack that parses.
            println!("{ACK_PREFIX}{index} {}", flushed.0);
            flushed
        }
        Err(other) => panic!("partition {index}: flush failed: {other:?}"),
    }
}

/// Flushes at random short intervals, concurrently with the appends, until
/// `stopped`: flushes then race appends, writes and segment rolls.
async fn flush_repeatedly(
    shard: Rc<Shard>,
    index: i32,
    mut rng: Rng,
    stopped: Rc<std::cell::Cell<bool>>,
) {
    while !stopped.get() {
        glommio::timer::sleep(Duration::from_micros(rng.below(3000))).await;
        flush(&shard, index).await;
    }
}

// ---- The parent: cycles of start, kill, check. ----

/// What one child run acknowledged.
#[derive(Default)]
struct CycleOutcome {
    acks: usize,
    acked_ends: BTreeMap<i32, Offset>,
    exact_ends: BTreeMap<i32, Offset>,
}

fn parse_line(line: &str, prefix: &str) -> Option<(i32, Offset)> {
    let rest = line.strip_prefix(prefix)?;
    let (index, end) = rest.trim_end().split_once(' ')?;
    Some((index.parse().ok()?, Offset(end.parse().ok()?)))
}

/// How a cycle's child ends.
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// SIGKILL this long after its first ack: mid-append.
    KillAfterFirstAck(Duration),
    /// SIGKILL this long after it started, acked or not: often mid-recovery.
    KillAfterStart(Duration),
    /// It appends this long, then shuts down cleanly and prints its ends.
    Clean(Duration),
}

impl Ending {
    /// Mostly kills mid-append; every fourth cycle one of the other two.
    /// The last cycle ([`CYCLES`] - 1) is a kill mid-append.
    fn pick(cycle: usize, rng: &mut Rng) -> Ending {
        let delay = Duration::from_millis(rng.between(KILL_DELAY_MS.start, KILL_DELAY_MS.end - 1));
        match cycle % 8 {
            2 => Ending::KillAfterStart(delay / 2),
            5 => Ending::Clean(delay),
            _ => Ending::KillAfterFirstAck(delay),
        }
    }
}

/// Runs one child until it ends as `ending` says; returns what it
/// acknowledged.
fn run_cycle(dir: &Path, cycle: usize, child_seed: u64, ending: Ending) -> CycleOutcome {
    let mut command = TestChild::command(TEST_NAME);
    command
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_SEED_ENV, child_seed.to_string());
    if let Ending::Clean(append_for) = ending {
        command.env(CHILD_CLEAN_STOP_MS_ENV, append_for.as_millis().to_string());
    }
    let started = Instant::now();
    let mut child = TestChild::spawn(&mut command);
    let mut outcome = CycleOutcome::default();
    let record = |outcome: &mut CycleOutcome, line: &str| {
        if let Some((index, end)) = parse_line(line, ACK_PREFIX) {
            outcome.acks += 1;
            let acked = outcome.acked_ends.entry(index).or_default();
            *acked = (*acked).max(end);
        } else if let Some((index, end)) = parse_line(line, END_PREFIX) {
            outcome.exact_ends.insert(index, end);
        }
    };
    let kill_at = match ending {
        Ending::KillAfterStart(delay) => Some(started + delay),
        Ending::KillAfterFirstAck(delay) => {
            while outcome.acks == 0 {
                if let Ok(line) = child.lines.recv_timeout(Duration::from_millis(20)) {
                    record(&mut outcome, &line);
                    continue;
                }
                if let Some(status) = child.process.try_wait().unwrap() {
                    panic!("cycle {cycle}: the child exited with {status} before acknowledging anything (its stderr is above)");
                }
                if started.elapsed() > FIRST_ACK_TIMEOUT {
                    child.process.kill().unwrap();
                    child.process.wait().unwrap();
                    panic!(
                        "cycle {cycle}: the child acknowledged nothing in {FIRST_ACK_TIMEOUT:?}"
                    );
                }
            }
            Some(Instant::now() + delay)
        }
        Ending::Clean(_) => None,
    };
    let status = if let Some(kill_at) = kill_at {
        std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
        if let Some(status) = child.process.try_wait().unwrap() {
            panic!("cycle {cycle}: the child exited with {status} before it was killed (its stderr is above)");
        }
        // Child::kill sends SIGKILL.
        child.process.kill().unwrap();
        let status = child.process.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "cycle {cycle}");
        status
    } else {
        let status = child.process.wait().unwrap();
        assert!(
            status.success(),
            "cycle {cycle}: clean child exited with {status} (its stderr is above)"
        );
        status
    };
    for line in child.remaining_lines() {
        record(&mut outcome, &line);
    }
    println!(
        "cycle {cycle}: {ending:?}, child ended by {status} after {:?}; {} acks, flushed ends {:?}, exact ends {:?}",
        started.elapsed(),
        outcome.acks,
        outcome.acked_ends,
        outcome.exact_ends
    );
    outcome
}

#[test]
fn acked_records_survive_kill_9() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        run_child(&PathBuf::from(dir));
        return;
    }
    let seed = seed_from_env(SEED_ENV);
    println!("{TEST_NAME}: seed {seed} (replay with {SEED_ENV}={seed})");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed);
    let mut expected: BTreeMap<i32, Expected> = BTreeMap::new();
    for cycle in 0..CYCLES {
        write_expected(dir.path(), &expected);
        let ending = Ending::pick(cycle, &mut rng);
        let outcome = run_cycle(dir.path(), cycle, rng.next_u64(), ending);
        if !matches!(ending, Ending::KillAfterStart(_)) {
            assert!(outcome.acks > 0, "cycle {cycle}: no progress");
        }
        // A killed child may have written past its acks anywhere.
        for entry in expected.values_mut() {
            entry.exact_end = None;
        }
        for (index, acked_end) in outcome.acked_ends {
            let entry = expected.entry(index).or_default();
            entry.acked_end = entry.acked_end.max(acked_end);
        }
        for (index, exact_end) in &outcome.exact_ends {
            let entry = expected.entry(*index).or_default();
            assert!(entry.acked_end <= *exact_end, "partition {index}");
            entry.acked_end = *exact_end;
            entry.exact_end = Some(*exact_end);
        }
        if matches!(ending, Ending::Clean(_)) {
            assert_eq!(
                outcome.exact_ends.len(),
                PARTITIONS as usize,
                "cycle {cycle}: every partition reports its end"
            );
        }
    }
    // The last crash's state, recovered and checked in this process, through
    // every shard.
    let checked = expected.clone();
    let ends = shard::run(
        &engine_config(&dir.path().join("data")),
        move |shard: Rc<Shard>| {
            let checked = checked.clone();
            // A panic must not leave the other shard waiting for this one
            // forever: it is caught here and resumed once the engine stopped.
            AssertUnwindSafe(async move {
                let mut ends = BTreeMap::new();
                for index in 0..PARTITIONS {
                    let expected = checked.get(&index).copied().unwrap_or_default();
                    ends.insert(index, verify_partition(&shard, index, expected).await);
                }
                ends
            })
            .catch_unwind()
        },
    )
    .unwrap();
    let ends: Vec<_> = ends
        .into_iter()
        .map(|ends| ends.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect();
    for shard_ends in &ends {
        assert_eq!(shard_ends, &ends[0], "every shard reads the same logs");
    }
    println!(
        "{TEST_NAME}: {CYCLES} cycles in {:?}; acknowledged {:?}, recovered ends {:?}",
        started.elapsed(),
        expected,
        ends[0]
    );
}
