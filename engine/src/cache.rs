//! A shard's cache of recently appended batches, for tail reads.
//!
//! Consumers that keep up read what producers just wrote; serving those reads
//! from memory avoids a disk read per fetch. Each append inserts its batches;
//! the cache holds at most `capacity_bytes` across every partition of the
//! shard and evicts in insertion order (oldest first), which for a log is
//! also the order in which data stops being "recent".
//!
//! Invariant: for each partition the cached batches are contiguous in offsets
//! (each starts where the previous ended), so a hit serves exactly what the
//! log would.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::types::Offset;

/// Identifies a partition within a shard's cache.
pub type PartitionKey = u64;

#[derive(Debug)]
struct CachedBatch {
    base_offset: Offset,
    /// Offset after the batch's last record.
    end_offset: Offset,
    bytes: Bytes,
}

/// Recent batches of every partition on one shard, bounded in bytes.
#[derive(Debug)]
pub struct BatchCache {
    capacity_bytes: usize,
    used_bytes: usize,
    partitions: HashMap<PartitionKey, VecDeque<CachedBatch>>,
    /// Batches held over every partition, kept as they come and go: summing
    /// the runs at each insert cost a pass over every partition of the
    /// shard per append (a fifth of a core at 5,000 partitions per shard).
    live_batches: usize,
    /// Insertion order across partitions, for eviction.
    order: VecDeque<(PartitionKey, Offset)>,
}

impl BatchCache {
    /// A cache holding at most `capacity_bytes` of batch data.
    #[must_use]
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            used_bytes: 0,
            partitions: HashMap::new(),
            live_batches: 0,
            order: VecDeque::new(),
        }
    }

    /// Adds a batch just appended to `partition`. A batch that does not
    /// continue the cached run restarts the partition's run.
    pub fn insert(
        &mut self,
        partition: PartitionKey,
        base_offset: Offset,
        end_offset: Offset,
        bytes: Bytes,
    ) {
        if bytes.len() > self.capacity_bytes {
            self.remove_partition(partition);
            return;
        }
        let run = self.partitions.entry(partition).or_default();
        if run
            .back()
            .is_some_and(|last| last.end_offset != base_offset)
        {
            self.live_batches -= run.len();
            let dropped: usize = run.drain(..).map(|batch| batch.bytes.len()).sum();
            self.used_bytes -= dropped;
        }
        self.used_bytes += bytes.len();
        self.live_batches += 1;
        run.push_back(CachedBatch {
            base_offset,
            end_offset,
            bytes,
        });
        self.order.push_back((partition, base_offset));
        while self.used_bytes > self.capacity_bytes {
            self.evict_oldest();
        }
        // Stale order entries (from truncations) are bounded by live ones.
        if self.order.len() > 2 * self.live_batches + 64 {
            self.compact_order();
        }
        debug_assert_eq!(
            self.live_batches,
            self.partitions.values().map(VecDeque::len).sum::<usize>()
        );
    }

    fn compact_order(&mut self) {
        let partitions = &self.partitions;
        self.order.retain(|(partition, base)| {
            partitions
                .get(partition)
                .is_some_and(|run| run.iter().any(|batch| batch.base_offset == *base))
        });
    }

    fn evict_oldest(&mut self) {
        while let Some((partition, base)) = self.order.pop_front() {
            let Some(run) = self.partitions.get_mut(&partition) else {
                continue;
            };
            if run.front().is_some_and(|batch| batch.base_offset == base) {
                if let Some(batch) = run.pop_front() {
                    self.used_bytes -= batch.bytes.len();
                    self.live_batches -= 1;
                }
                if run.is_empty() {
                    self.partitions.remove(&partition);
                }
                return;
            }
        }
    }

    /// Whole batches of `partition` from the one holding `offset`, up to
    /// `max_bytes` (at least one batch), stopping before any batch that ends
    /// after `end_offset`. `None` if the cache does not hold `offset`.
    #[must_use]
    pub fn read(
        &self,
        partition: PartitionKey,
        offset: Offset,
        max_bytes: usize,
        end_offset: Offset,
    ) -> Option<Vec<Bytes>> {
        let run = self.partitions.get(&partition)?;
        let first = run.front()?;
        if offset < first.base_offset || offset >= run.back()?.end_offset {
            return None;
        }
        let start = run.partition_point(|batch| batch.end_offset <= offset);
        let mut found = Vec::new();
        let mut total = 0;
        for batch in run.range(start..) {
            if batch.end_offset > end_offset {
                break;
            }
            if !found.is_empty() && total + batch.bytes.len() > max_bytes {
                break;
            }
            total += batch.bytes.len();
            found.push(batch.bytes.clone());
            if total >= max_bytes {
                break;
            }
        }
        Some(found)
    }

    /// Drops cached batches of `partition` ending after `offset` (the log was
    /// truncated there).
    pub fn truncate(&mut self, partition: PartitionKey, offset: Offset) {
        if let Some(run) = self.partitions.get_mut(&partition) {
            while run.back().is_some_and(|batch| batch.end_offset > offset) {
                if let Some(batch) = run.pop_back() {
                    self.used_bytes -= batch.bytes.len();
                    self.live_batches -= 1;
                }
            }
        }
    }

    /// Drops cached batches of `partition` starting below `offset` (the log
    /// cleaner rewrote that range).
    pub fn evict_below(&mut self, partition: PartitionKey, offset: Offset) {
        if let Some(run) = self.partitions.get_mut(&partition) {
            while run.front().is_some_and(|batch| batch.base_offset < offset) {
                if let Some(batch) = run.pop_front() {
                    self.used_bytes -= batch.bytes.len();
                    self.live_batches -= 1;
                }
            }
            if run.is_empty() {
                self.partitions.remove(&partition);
            }
        }
    }

    /// Drops every cached batch of `partition`.
    pub fn remove_partition(&mut self, partition: PartitionKey) {
        if let Some(run) = self.partitions.remove(&partition) {
            self.used_bytes -= run.iter().map(|batch| batch.bytes.len()).sum::<usize>();
            self.live_batches -= run.len();
        }
    }

    /// Bytes currently cached.
    #[must_use]
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![7; len])
    }

    #[test]
    fn reads_whole_batches_from_the_one_holding_the_offset() {
        let mut cache = BatchCache::new(1 << 20);
        cache.insert(1, Offset(0), Offset(10), batch(100));
        cache.insert(1, Offset(10), Offset(20), batch(100));
        cache.insert(1, Offset(20), Offset(30), batch(100));
        assert_eq!(
            cache.read(1, Offset(15), 1000, Offset(30)).map(|b| b.len()),
            Some(2)
        );
        assert_eq!(
            cache.read(1, Offset(15), 50, Offset(30)).map(|b| b.len()),
            Some(1)
        );
        assert_eq!(
            cache.read(1, Offset(0), 1000, Offset(20)).map(|b| b.len()),
            Some(2)
        );
        assert_eq!(cache.read(1, Offset(30), 1000, Offset(30)), None);
        assert_eq!(cache.read(2, Offset(0), 1000, Offset(30)), None);
    }

    #[test]
    fn eviction_keeps_the_byte_bound_and_drops_oldest_first() {
        let mut cache = BatchCache::new(250);
        for n in 0..10 {
            cache.insert(
                n % 2,
                Offset(n as i64 * 10),
                Offset(n as i64 * 10 + 10),
                batch(100),
            );
            assert!(cache.used_bytes() <= 250);
        }
        assert_eq!(cache.read(0, Offset(0), 1000, Offset(1000)), None);
        assert!(cache.read(1, Offset(90), 1000, Offset(1000)).is_some());
    }

    #[test]
    fn truncation_and_gaps_never_serve_stale_batches() {
        let mut cache = BatchCache::new(1 << 20);
        cache.insert(1, Offset(0), Offset(10), batch(10));
        cache.insert(1, Offset(10), Offset(20), batch(10));
        cache.truncate(1, Offset(10));
        assert_eq!(cache.read(1, Offset(12), 1000, Offset(100)), None);
        cache.insert(1, Offset(50), Offset(60), batch(10));
        assert_eq!(cache.read(1, Offset(5), 1000, Offset(100)), None);
        assert_eq!(cache.used_bytes(), 10);
    }

    /// The count of live batches that bounds the eviction order is kept
    /// through every way batches leave (the inserts' debug assertion checks
    /// it against the runs), and stale order entries stay bounded by it.
    #[test]
    fn the_live_batch_count_follows_every_removal() {
        let mut cache = BatchCache::new(1_000);
        for round in 0..50_i64 {
            for partition in 0..20 {
                cache.insert(
                    partition,
                    Offset(round * 10),
                    Offset(round * 10 + 10),
                    batch(3),
                );
            }
            cache.truncate(round as u64 % 20, Offset(round * 10));
            cache.evict_below((round as u64 + 1) % 20, Offset(round * 10 + 10));
            if round % 7 == 0 {
                cache.remove_partition((round as u64 + 2) % 20);
            }
            // A batch too large for the cache drops its partition's run.
            cache.insert(
                3,
                Offset(round * 10 + 10),
                Offset(round * 10 + 11),
                batch(2_000),
            );
        }
        let live: usize = cache.partitions.values().map(VecDeque::len).sum();
        assert_eq!(cache.live_batches, live);
        assert!(cache.order.len() <= 2 * live + 64 + 20);
        assert!(cache.used_bytes() <= 1_000);
    }
}
