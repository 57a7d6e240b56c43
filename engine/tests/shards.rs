//! Partitions spread over every shard take appends and reads issued from
//! every shard, through the real `O_DIRECT` storage. (That a clean shutdown
//! with appends in flight loses nothing acknowledged is `shutdown.rs`.)

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{leader_append, read_batches};
use fjord_engine::batch::{build_batch, BatchHeader};
use fjord_engine::config::LogConfig;
use fjord_engine::shard::{self, EngineConfig, Shard};
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

async fn create_all(shard: &Rc<Shard>) {
    if shard.id() != 0 {
        return;
    }
    for partition in partitions() {
        shard
            .create_partition(partition, LogConfig::default())
            .await
            .expect("create");
    }
}

#[test]
fn partitions_on_every_shard_serve_appends_and_reads_from_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(dir.path());
    let shards = config.shards;
    // Phase 1: shard 0 creates the partitions.
    shard::run(&config, |shard: Rc<Shard>| async move {
        create_all(&shard).await;
    })
    .unwrap();
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

/// Guards against a shard that cannot open its partitions (here a corrupt
/// checkpoint) ending the process from inside the engine, or leaving the
/// other shards serving an engine whose partitions nobody answers, or
/// waiting for it forever: `run` returns that shard's error once every
/// shard shut down, no shard ran its main, and the partitions the other
/// shards opened were closed cleanly (they open again with their data).
#[test]
fn a_shard_that_cannot_open_its_partitions_stops_the_engine_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = engine_config(dir.path());
    shard::run(&config, |shard: Rc<Shard>| async move {
        create_all(&shard).await;
        if shard.id() != 0 {
            return;
        }
        for partition in partitions() {
            let batch = build_batch(&[(None, Some(&b"kept"[..]))], TimestampMs::now(), None);
            shard
                .append(leader_append(&partition, batch, true))
                .await
                .expect("append");
        }
    })
    .unwrap();
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
