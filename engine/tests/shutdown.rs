//! `clean_shutdown_with_appends_in_flight_loses_nothing_acknowledged`: when
//! the engine shuts down while appends from every shard are in flight, every
//! append that was acknowledged is on disk after a restart, and every append
//! that was refused with [`Error::ShuttingDown`] is not.
//!
//! Guards against: a shard closing a partition while a batch is queued or
//! being written (the batch acknowledged but cut off by the seal, or written
//! after the checkpoint so the next start serves a log end that disagrees
//! with the acks); an append admitted after the close began being written
//! although its caller was told `ShuttingDown`; an answer lost between
//! shards at shutdown for an append that was written; and a shard stopping
//! while a peer still routes appends to it.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{decode, offsets, read_batches};
use fjord_engine::batch::build_batch;
use fjord_engine::cache::BatchCache;
use fjord_engine::clock::SystemClock;
use fjord_engine::config::LogConfig;
use fjord_engine::log::PartitionLog;
use fjord_engine::shard::{self, AppendRequest, EngineConfig, Shard};
use fjord_engine::storage::dma::DmaStorage;
use fjord_engine::{Error, LeaderEpoch, Offset, TimestampMs, TopicPartition};
use glommio::{LocalExecutorBuilder, Placement};

const TOPIC: &str = "shutdown";
const PARTITIONS: i32 = 6;
/// Concurrent append tasks each shard runs against each partition.
const TASKS_PER_SHARD_AND_PARTITION: usize = 4;
/// Acks a shard waits for before its main future returns.
const ACKS_BEFORE_MAIN_RETURNS: usize = 400;
const SEGMENT_BYTES: u64 = 64 << 10;

fn partition(index: i32) -> TopicPartition {
    TopicPartition::new(TOPIC, index)
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        ..LogConfig::default()
    }
}

fn engine_config(data_dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(data_dir);
    config.shards = config.shards.min(2);
    config.io_memory_bytes = 2 << 20;
    config.log_config_for = Arc::new(|_| log_config());
    config
}

/// What became of one append.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Issued, no answer yet. Left so when the engine stopped before the
    /// caller heard back.
    InFlight,
    /// Written at this offset.
    Acked(Offset),
    /// Refused because the engine was stopping.
    ShuttingDown,
    /// Anything else: a failure of the test.
    Failed(String),
}

struct Append {
    partition: i32,
    value: String,
    outcome: Outcome,
}

type Appends = Arc<Mutex<Vec<Append>>>;

/// Appends unique values to `index` until the engine refuses.
async fn append_until_refused(
    shard: Rc<Shard>,
    index: i32,
    task: usize,
    appends: Appends,
    acks: Rc<std::cell::Cell<usize>>,
) {
    let tp = partition(index);
    for sequence in 0.. {
        let value = format!(
            "shard {} task {task} partition {index} seq {sequence}",
            shard.id()
        );
        let slot = {
            let mut appends = appends.lock().unwrap();
            appends.push(Append {
                partition: index,
                value: value.clone(),
                outcome: Outcome::InFlight,
            });
            appends.len() - 1
        };
        let bytes = build_batch(&[(None, Some(value.as_bytes()))], TimestampMs::now(), None);
        let appended = shard
            .append(AppendRequest {
                partition: tp.clone(),
                batches: vec![bytes.into()],
                leader_epoch: LeaderEpoch(0),
                flush: false,
                advance_high_watermark: false,
            })
            .await;
        let outcome = match appended {
            Ok(info) => Outcome::Acked(info.base_offset),
            Err(Error::ShuttingDown) => Outcome::ShuttingDown,
            Err(other) => Outcome::Failed(format!("{other:?}")),
        };
        let stop = !matches!(outcome, Outcome::Acked(_));
        appends.lock().unwrap()[slot].outcome = outcome;
        if stop {
            return;
        }
        acks.set(acks.get() + 1);
    }
}

/// Reads partition `index` whole: the value at each offset, from offset 0.
async fn read_all(shard: &Rc<Shard>, index: i32) -> Vec<String> {
    let tp = partition(index);
    let offsets = offsets(shard, &tp).await;
    let batches = read_batches(shard, &tp, Offset(0)..offsets.log_end, 64 << 10, false).await;
    let mut values = Vec::new();
    for bytes in &batches {
        let (header, records) = decode(bytes);
        assert_eq!(
            header.base_offset,
            Offset(values.len() as i64),
            "partition {index}: offsets are dense"
        );
        for record in records {
            values.push(String::from_utf8(record.value.unwrap()).unwrap());
        }
    }
    assert_eq!(
        values.len() as i64,
        offsets.log_end.0,
        "partition {index}: stuck below the log end"
    );
    values
}

#[test]
fn clean_shutdown_with_appends_in_flight_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(dir.path());
    shard::run(&config, |shard: Rc<Shard>| async move {
        for index in
            (0..PARTITIONS).filter(|&index| shard.owner_of(&partition(index)) == shard.id())
        {
            shard
                .create_partition(partition(index), log_config())
                .await
                .expect("create");
        }
    })
    .unwrap();

    let appends: Appends = Arc::default();
    let shared = appends.clone();
    shard::run(&config, move |shard: Rc<Shard>| {
        let appends = shared.clone();
        async move {
            let acks = Rc::new(std::cell::Cell::new(0));
            for index in 0..PARTITIONS {
                for task in 0..TASKS_PER_SHARD_AND_PARTITION {
                    glommio::spawn_local(append_until_refused(
                        shard.clone(),
                        index,
                        task,
                        appends.clone(),
                        acks.clone(),
                    ))
                    .detach();
                }
            }
            while acks.get() < ACKS_BEFORE_MAIN_RETURNS {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            // Returning starts the shutdown with every task mid-append.
        }
    })
    .unwrap();
    let appends = std::mem::take(&mut *appends.lock().unwrap());

    let logs = shard::run(&config, |shard: Rc<Shard>| async move {
        let mut logs = Vec::new();
        if shard.id() == 0 {
            for index in 0..PARTITIONS {
                logs.push(read_all(&shard, index).await);
            }
        }
        logs
    })
    .unwrap()
    .swap_remove(0);

    let count =
        |wanted: fn(&Outcome) -> bool| appends.iter().filter(|a| wanted(&a.outcome)).count();
    let acked = count(|outcome| matches!(outcome, Outcome::Acked(_)));
    let refused = count(|outcome| *outcome == Outcome::ShuttingDown);
    let in_flight = count(|outcome| *outcome == Outcome::InFlight);
    println!("{acked} appends acked, {refused} refused, {in_flight} unanswered at shutdown");
    assert!(
        acked >= ACKS_BEFORE_MAIN_RETURNS,
        "every shard got its acks"
    );
    assert!(refused > 0, "the shutdown raced appends");
    for append in &appends {
        let log = &logs[append.partition as usize];
        let found = log.iter().position(|value| *value == append.value);
        match &append.outcome {
            Outcome::Acked(offset) => assert_eq!(
                found,
                Some(offset.0 as usize),
                "acknowledged {:?} is not at offset {offset}",
                append.value
            ),
            Outcome::ShuttingDown => {
                assert_eq!(found, None, "{:?} was refused but written", append.value);
            }
            Outcome::InFlight => assert_eq!(
                found, None,
                "{:?} was written but its caller never heard back",
                append.value
            ),
            Outcome::Failed(error) => panic!("{:?} failed: {error}", append.value),
        }
    }
    for index in 0..PARTITIONS {
        let acked_here = appends
            .iter()
            .filter(|a| a.partition == index && matches!(a.outcome, Outcome::Acked(_)))
            .count();
        assert_eq!(
            logs[index as usize].len(),
            acked_here,
            "partition {index}: log end is the number of acknowledged appends"
        );
    }
}

async fn open_log(data_dir: &std::path::Path) -> PartitionLog<DmaStorage> {
    let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
    PartitionLog::open(
        DmaStorage,
        Rc::new(SystemClock),
        data_dir,
        partition(0),
        log_config(),
        cache,
        0,
    )
    .await
    .unwrap()
}

/// Regression: `PartitionLog::close` waited for the append queue to drain
/// while still admitting appends, so with enough tasks appending it never
/// finished, and neither did the engine's shutdown.
#[test]
fn close_finishes_under_a_steady_stream_of_appends() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let appended_to = data_dir.clone();
    let acked = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(2 << 20)
        .spawn(move || async move {
            let data_dir = appended_to;
            let log = Rc::new(open_log(&data_dir).await);
            let appenders: Vec<_> = (0..8)
                .map(|_| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let bytes =
                            build_batch(&[(None, Some(b"value"))], TimestampMs::now(), None);
                        let mut acked = 0;
                        loop {
                            match log.append(&bytes, LeaderEpoch(0)).await {
                                Ok(_) => acked += 1,
                                Err(Error::ShuttingDown) => return acked,
                                Err(error) => panic!("append failed: {error}"),
                            }
                        }
                    })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(20)).await;
            glommio::timer::timeout(Duration::from_secs(10), async { Ok(log.close().await) })
                .await
                .expect("close finishes while appends keep coming")
                .unwrap();
            let mut acked = 0;
            for appender in appenders {
                acked += appender.await;
            }
            assert!(acked > 0);
            acked
        })
        .unwrap()
        .join()
        .unwrap();
    let reopened_end = LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(2 << 20)
        .spawn(move || async move { open_log(&data_dir).await.offsets().log_end })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        reopened_end,
        Offset(acked),
        "every acknowledged append, no other"
    );
}
