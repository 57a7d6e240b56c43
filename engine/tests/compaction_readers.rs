//! `a_zero_copy_read_of_a_replaced_segment_still_sends_the_old_batches`: a
//! fetch served as a file range (sendfile) from a segment the cleaner then
//! replaces still sends exactly the bytes it located, valid batches, because
//! the old file stays alive while the range holds its descriptor.
//!
//! Guards against: a swap that truncates or overwrites a segment file in
//! place (a consumer mid-send would get garbage or a short read), and a
//! cleaned segment served at the same base before its file is renamed in.

mod common;

use std::os::unix::fs::FileExt as _;
use std::rc::Rc;

use common::leader_append;
use fjord_engine::batch::{self, build_batch, BatchHeader};
use fjord_engine::config::{CleanupPolicy, LogConfig};
use fjord_engine::log::ReadData;
use fjord_engine::shard::{self, EngineConfig, Shard};
use fjord_engine::{Offset, TimestampMs, TopicPartition};

#[test]
fn a_zero_copy_read_of_a_replaced_segment_still_sends_the_old_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.shards = 1;
    config.io_memory_bytes = 2 << 20;
    // Every read goes to the files, and only this test cleans.
    config.cache_bytes_per_shard = 0;
    config.cleaner.enabled = false;
    let outcomes = shard::run(&config, |shard: Rc<Shard>| async move {
        let tp = TopicPartition::new("readers", 0);
        let log_config = LogConfig {
            segment_bytes: 4096,
            cleanup_policy: CleanupPolicy::COMPACT,
            ..LogConfig::default()
        };
        shard
            .create_partition(tp.clone(), log_config)
            .await
            .expect("create");
        let value = vec![9u8; 300];
        for version in 0..60u8 {
            let key = [b'k', version % 4];
            let batch = build_batch(&[(Some(&key), Some(&value))], TimestampMs(1), None);
            shard
                .append(leader_append(&tp, batch, true))
                .await
                .expect("append");
        }
        let log = shard.local_log(&tp).unwrap();
        let end = log.offsets().high_watermark;
        let read = log.read_zero_copy(Offset(0), 1 << 20, end).await.unwrap();
        let ReadData::File(range) = read.data else {
            panic!("expected a file range from the first segment")
        };
        let mut before = vec![0u8; usize::try_from(range.len).unwrap()];
        range
            .file
            .read_exact_at(&mut before, range.position)
            .unwrap();

        let stats = log.clean(TimestampMs(2), 1 << 20).await.unwrap();
        assert!(
            stats.segments_replaced > 0 && stats.records_removed > 0,
            "{stats:?}"
        );

        // The consumer's send happens now, after the swap.
        let mut after = vec![0u8; before.len()];
        range
            .file
            .read_exact_at(&mut after, range.position)
            .unwrap();
        assert_eq!(after, before, "the range's bytes changed under the reader");
        let mut at = 0;
        while at < after.len() {
            let header = BatchHeader::parse(&after[at..]).unwrap();
            assert!(batch::crc_matches(&after[at..at + header.total_bytes()]));
            at += header.total_bytes();
        }
        // New reads see the cleaned log: fewer bytes for the same offsets.
        let fresh = log.read_zero_copy(Offset(0), 1 << 20, end).await.unwrap();
        let fresh_len = match fresh.data {
            ReadData::File(range) => range.len,
            ReadData::Batches(batches) => batches.iter().map(|b| b.len() as u64).sum(),
        };
        assert!(fresh_len < range.len, "{fresh_len} >= {}", range.len);
    })
    .unwrap();
    assert_eq!(outcomes.len(), 1);
}
