//! Partitions spread over every shard take appends and reads issued from
//! every shard, through the real `O_DIRECT` storage. (That a clean shutdown
//! with appends in flight loses nothing acknowledged is `shutdown.rs`.)

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{leader_append, read_batches};
use fjord_engine::batch::{build_batch, BatchHeader};
use fjord_engine::config::LogConfig;
use fjord_engine::log::ReadData;
use fjord_engine::shard::{self, EngineConfig, ReadBound, Shard};
use fjord_engine::{Error, Offset, TimestampMs, TopicPartition};

const PARTITIONS: i32 = 8;
const BATCHES_PER_SHARD_AND_PARTITION: usize = 25;

fn partitions() -> Vec<TopicPartition> {
    (0..PARTITIONS)
        .map(|p| TopicPartition::new("spread", p))
        .collect()
}

fn engine_config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(4);
    config
}

/// An engine in a fresh directory where shard 0 created every partition
/// and appended to the partition numbered `n` (in [`partitions`] order)
/// `batches(n)` one-record batches, each flushed; stopped cleanly.
fn engine_with_partitions(batches: fn(usize) -> usize) -> (tempfile::TempDir, EngineConfig) {
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(dir.path());
    shard::run(&config, move |shard: Rc<Shard>| async move {
        if shard.id() != 0 {
            return;
        }
        for partition in partitions() {
            shard
                .create_partition(partition, LogConfig::default())
                .await
                .expect("create");
        }
        for (number, partition) in partitions().iter().enumerate() {
            for _ in 0..batches(number) {
                let batch = build_batch(&[(None, Some(&b"kept"[..]))], TimestampMs::now(), None);
                shard
                    .append(leader_append(partition, batch, true))
                    .await
                    .expect("append");
            }
        }
    })
    .unwrap();
    (dir, config)
}

#[test]
fn partitions_on_every_shard_serve_appends_and_reads_from_every_shard() {
    // Phase 1: shard 0 creates the partitions.
    let (_dir, config) = engine_with_partitions(|_| 0);
    let shards = config.shards;
    // Phase 2: every shard appends to every partition and reads back.
    let acked = shard::run(&config, |shard: Rc<Shard>| async move {
        let mut acked = Vec::new();
        for round in 0..BATCHES_PER_SHARD_AND_PARTITION {
            for partition in partitions() {
                let value = format!("shard {} round {round}", shard.id());
                let batch =
                    build_batch(&[(None, Some(value.as_bytes()))], TimestampMs::now(), None);
                let info = shard
                    .append(leader_append(&partition, batch, false))
                    .await
                    .expect("append");
                acked.push((partition, info.base_offset));
            }
        }
        acked
    })
    .unwrap();
    let owners: std::collections::BTreeSet<usize> = partitions()
        .iter()
        .map(|p| shard::shard_for(p, shards))
        .collect();
    assert_eq!(owners.len(), shards, "partitions cover every shard");
    let total: usize = acked.iter().map(Vec::len).sum();
    assert_eq!(
        total,
        shards * BATCHES_PER_SHARD_AND_PARTITION * PARTITIONS as usize
    );
    // Phase 3: after a restart, every acked offset is there, dense, from any shard.
    let counts = shard::run(&config, |shard: Rc<Shard>| async move {
        let mut counts = Vec::new();
        for partition in partitions() {
            let batches =
                read_batches(&shard, &partition, Offset(0)..Offset(i64::MAX), 4096, true).await;
            let mut next = Offset(0);
            for bytes in &batches {
                let header = BatchHeader::parse(bytes).unwrap();
                assert_eq!(header.base_offset, next, "offsets are dense");
                next = header.last_offset().next();
            }
            counts.push(next.0);
        }
        counts
    })
    .unwrap();
    for shard_counts in counts {
        for count in shard_counts {
            assert_eq!(count, (shards * BATCHES_PER_SHARD_AND_PARTITION) as i64);
        }
    }
}

/// Guards against a Fetch's long poll (one wait over partitions of every
/// shard) that an append on another shard does not end, that ends before
/// its timeout with no data, or that waits on a partition the engine does
/// not have instead of letting the read report it.
#[test]
fn a_wait_on_partitions_of_every_shard_ends_at_the_first_append_or_its_timeout() {
    const NO_DATA_TIMEOUT: Duration = Duration::from_millis(300);
    const LONG_TIMEOUT: Duration = Duration::from_secs(60);
    let (_dir, config) = engine_with_partitions(|_| 0);
    let shards = config.shards;
    // Appended to by its own shard, the last: another one than the
    // waiting shard 0 whenever there are several.
    let appended = partitions()
        .into_iter()
        .find(|partition| shard::shard_for(partition, shards) == shards - 1)
        .expect("a partition on the last shard");
    let at_start = || -> Vec<(TopicPartition, Offset)> {
        partitions()
            .into_iter()
            .map(|partition| (partition, Offset(0)))
            .collect()
    };
    let long_wait_began = Arc::new(AtomicBool::new(false));
    let waited = shard::run(&config, move |shard: Rc<Shard>| {
        let (appended, long_wait_began) = (appended.clone(), long_wait_began.clone());
        async move {
            let news = (shard.id() == shards - 1).then(|| {
                let shard = shard.clone();
                let long_wait_began = long_wait_began.clone();
                glommio::spawn_local(async move {
                    while !long_wait_began.load(Ordering::SeqCst) {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    let batch =
                        build_batch(&[(None, Some(&b"news"[..]))], TimestampMs::now(), None);
                    shard
                        .append(leader_append(&appended, batch, false))
                        .await
                        .expect("append");
                })
            });
            let mut waited = None;
            if shard.id() == 0 {
                let started = Instant::now();
                shard
                    .wait_for_any_data(at_start(), ReadBound::LogEnd, NO_DATA_TIMEOUT)
                    .await;
                let timed_out = started.elapsed();
                let started = Instant::now();
                long_wait_began.store(true, Ordering::SeqCst);
                shard
                    .wait_for_any_data(at_start(), ReadBound::LogEnd, LONG_TIMEOUT)
                    .await;
                let woken = started.elapsed();
                let started = Instant::now();
                let absent = vec![(TopicPartition::new("absent", 0), Offset(0))];
                shard
                    .wait_for_any_data(absent, ReadBound::LogEnd, LONG_TIMEOUT)
                    .await;
                waited = Some((timed_out, woken, started.elapsed()));
            }
            if let Some(news) = news {
                news.await;
            }
            waited
        }
    })
    .unwrap();
    let (timed_out, woken, absent) = waited.into_iter().flatten().next().expect("shard 0 waited");
    assert!(
        timed_out >= NO_DATA_TIMEOUT,
        "a wait with no data ended after {timed_out:?}"
    );
    assert!(
        timed_out < LONG_TIMEOUT / 2,
        "a {NO_DATA_TIMEOUT:?} wait took {timed_out:?}"
    );
    assert!(
        woken < LONG_TIMEOUT / 2,
        "the append did not end the wait ({woken:?})"
    );
    assert!(
        absent < LONG_TIMEOUT / 2,
        "waited {absent:?} on an unknown partition"
    );
}

/// Guards against a Fetch's reads of many partitions (one engine call for
/// all, one operation per owning shard) answering a partition with
/// another's data, or losing the answer of one that fails: every shard
/// reads every partition, in an order unlike their shards', with an
/// unknown one among them.
#[test]
fn reads_of_partitions_on_every_shard_answer_each_in_its_place() {
    let (_dir, config) = engine_with_partitions(|number| number + 1);
    let mut asked: Vec<TopicPartition> = partitions().into_iter().rev().collect();
    asked.insert(3, TopicPartition::new("absent", 0));
    let answers = shard::run(&config, move |shard: Rc<Shard>| {
        let asked = asked.clone();
        async move {
            let reads = asked
                .iter()
                .map(|partition| (partition.clone(), Offset(0), 1 << 20))
                .collect();
            let found = shard.read_zero_copy_many(reads).await;
            asked
                .into_iter()
                .zip(found)
                .map(|(partition, read)| match read {
                    Ok(read) => {
                        let holds_data = match read.data {
                            ReadData::Batches(batches) => !batches.is_empty(),
                            ReadData::File(range) => range.len > 0,
                        };
                        (partition, Some((read.offsets.high_watermark, holds_data)))
                    }
                    Err(Error::UnknownPartition(unknown)) => {
                        assert_eq!(unknown, partition);
                        (partition, None)
                    }
                    Err(error) => panic!("reading {partition}: {error}"),
                })
                .collect::<Vec<_>>()
        }
    })
    .unwrap();
    assert_eq!(answers.len(), config.shards);
    for answers in answers {
        assert_eq!(answers.len(), PARTITIONS as usize + 1);
        for (partition, answer) in answers {
            if &*partition.topic == "absent" {
                assert_eq!(answer, None);
            } else {
                let appended = i64::from(partition.partition) + 1;
                assert_eq!(answer, Some((Offset(appended), true)), "{partition}");
            }
        }
    }
}

/// Guards against a shard that cannot open its partitions (here a corrupt
/// checkpoint) ending the process from inside the engine, or leaving the
/// other shards serving an engine whose partitions nobody answers, or
/// waiting for it forever: `run` returns that shard's error once every
/// shard shut down, no shard ran its main, and the partitions the other
/// shards opened were closed cleanly (they open again with their data).
#[test]
fn a_shard_that_cannot_open_its_partitions_stops_the_engine_with_its_error() {
    let (dir, config) = engine_with_partitions(|_| 1);
    let broken = dir
        .path()
        .join(TopicPartition::new("spread", 3).dir_name())
        .join(fjord_engine::checkpoint::PARTITION_CHECKPOINT_FILE);
    let original = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, b"not a checkpoint").unwrap();

    let mains_run = Arc::new(AtomicUsize::new(0));
    let counted = mains_run.clone();
    let result = shard::run(&config, move |_shard: Rc<Shard>| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    match result {
        Err(Error::CorruptCheckpoint { path, .. }) => assert_eq!(path, broken),
        other => panic!("expected the corrupt checkpoint, got {other:?}"),
    }
    assert_eq!(
        mains_run.load(Ordering::SeqCst),
        0,
        "main ran on a partial engine"
    );

    std::fs::write(&broken, original).unwrap();
    let counts = shard::run(&config, |shard: Rc<Shard>| async move {
        let mut counts = Vec::new();
        for partition in partitions() {
            let batches =
                read_batches(&shard, &partition, Offset(0)..Offset(i64::MAX), 4096, true).await;
            counts.push(batches.len());
        }
        counts
    })
    .unwrap();
    for shard_counts in counts {
        assert_eq!(shard_counts, vec![1; PARTITIONS as usize]);
    }
}
