//! First end-to-end scenarios of one partition log on in-memory storage.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::try_open;
use fjord_engine::batch::build_batch;
use fjord_engine::cache::BatchCache;
use fjord_engine::config::LogConfig;
use fjord_engine::log::PartitionLog;
use fjord_engine::storage::memory::MemoryStorage;
use fjord_engine::{LeaderEpoch, Offset, TimestampMs};
use futures_lite::future::block_on;

fn open(storage: &MemoryStorage, config: &LogConfig) -> PartitionLog<MemoryStorage> {
    let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
    try_open(storage, config, &cache, 0).expect("open")
}

#[test]
fn appended_batches_read_back_after_clean_restart() {
    let storage = MemoryStorage::new(1);
    let config = LogConfig {
        segment_bytes: 8192,
        ..LogConfig::default()
    };
    let log = open(&storage, &config);
    block_on(async {
        for n in 0..50u32 {
            let value = format!("value-{n}-{}", "x".repeat(300));
            let batch = build_batch(
                &[(None, Some(value.as_bytes()))],
                TimestampMs(1000 + i64::from(n)),
                None,
            );
            let info = log.append(&batch, LeaderEpoch(0)).await.unwrap();
            assert_eq!(info.base_offset, Offset(i64::from(n)));
        }
        log.advance_high_watermark(Offset(50));
        let read = log.read(Offset(10), 1 << 20, Offset(50)).await.unwrap();
        assert!(!read.batches.is_empty());
        log.close().await.unwrap();
    });
    assert!(log.segment_count() > 1, "small segments roll");
    let log = open(&storage, &config);
    assert_eq!(log.offsets().log_end, Offset(50));
    block_on(async {
        let mut next = Offset(0);
        while next < Offset(50) {
            let read = log.read(next, 100, Offset(50)).await.unwrap();
            assert!(!read.batches.is_empty(), "stuck at {next}");
            for bytes in read.batches {
                let header = fjord_engine::batch::BatchHeader::parse(&bytes).unwrap();
                assert_eq!(header.base_offset, next);
                next = header.last_offset().next();
            }
        }
        let found = log.offset_for_timestamp(TimestampMs(1020)).await.unwrap();
        assert_eq!(found, Some((Offset(20), TimestampMs(1020))));
    });
}
