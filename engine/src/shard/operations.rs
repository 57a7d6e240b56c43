//! The partition operations a [`Shard`] handle offers, each with its own
//! request and answer types, run on the shard that owns the partition
//! ([`super::calls`]).

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::calls::{PendingAnswer, Queue};
use super::Shard;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::log::{AppendInfo, LogOffsets, PartitionLog, ReadResult, ZeroCopyRead};
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs, TopicPartition};

/// An append and what must happen before it is acknowledged.
#[derive(Debug)]
pub struct AppendRequest {
    /// The partition.
    pub partition: TopicPartition,
    /// The record batches one request carries for the partition, as the
    /// producer sent them: appended together or not at all.
    pub batches: Vec<Bytes>,
    /// The leader epoch to stamp into the batches.
    pub leader_epoch: LeaderEpoch,
    /// Acknowledge only once flushed (`acks=all` on a single replica).
    pub flush: bool,
    /// Move the high watermark to the batches' end once acknowledged (the
    /// partition has no other replica to wait for).
    pub advance_high_watermark: bool,
}

/// How far a read may go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBound {
    /// Up to the log end (the partition's own replicas).
    LogEnd,
    /// Up to the high watermark (consumers).
    HighWatermark,
}

/// A read of a partition's batches.
#[derive(Clone, Debug)]
pub struct ReadRequest {
    /// The partition.
    pub partition: TopicPartition,
    /// First offset wanted.
    pub offset: Offset,
    /// Byte limit (at least one batch is returned).
    pub max_bytes: usize,
    /// No batch ending past this offset is returned.
    pub upper_bound: Offset,
    /// How far the read may go beyond `upper_bound`'s limit.
    pub bound: ReadBound,
}

/// Which offset ListOffsets asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset (`-2`).
    Earliest,
    /// The log end offset (`-1`; the broker answers consumers with the
    /// high watermark from [`Shard::offsets`]).
    Latest,
    /// The record with the greatest timestamp (`-3`, KIP-734).
    MaxTimestamp,
    /// The first record with timestamp `>=` this.
    Timestamp(TimestampMs),
}

/// What ListOffsets found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoundOffset {
    /// The offset.
    pub offset: Offset,
    /// The record's timestamp for queries by time, else
    /// [`TimestampMs::NONE`].
    pub timestamp: TimestampMs,
}

/// The end of a leader epoch (OffsetForLeaderEpoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the one asked for.
    pub epoch: LeaderEpoch,
    /// The first offset after that epoch.
    pub end_offset: Offset,
}

impl<S: Storage> Shard<S> {
    /// Runs `operation` with the log of `partition` on its shard: the
    /// broker's partition layer keeps its per-partition work (a leader's
    /// follower progress, a follower's appends) on the core that owns the
    /// log, whatever core a request arrived on.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if no shard holds it; the operation's
    /// own error; [`Error::ShuttingDown`] once the owner has stopped.
    pub async fn on_log<T, F, Fut>(
        self: &Rc<Self>,
        partition: TopicPartition,
        queue: Queue,
        operation: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard<S>>, Rc<PartitionLog<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        let owner = self.owner_of(&partition);
        self.run_on(owner, queue, move |shard| {
            let shard = Rc::clone(shard);
            match shard.local(&partition) {
                Ok(log) => Box::pin(operation(shard, log)),
                Err(error) => Box::pin(async move { Err(error) }),
            }
        })
        .await
    }

    /// Creates (or opens, if its directory exists) a partition.
    ///
    /// # Errors
    /// [`Error::PartitionExists`] if the shard holds it already; the
    /// log's error if it cannot be opened.
    pub async fn create_partition(
        self: &Rc<Self>,
        partition: TopicPartition,
        config: LogConfig,
    ) -> Result<()> {
        let owner = self.owner_of(&partition);
        self.run_on(owner, Queue::Default, move |shard| {
            let shard = Rc::clone(shard);
            Box::pin(async move {
                if shard.partitions.borrow().contains_key(&partition) {
                    return Err(Error::PartitionExists(partition));
                }
                shard.open_local(partition, config).await.map(drop)
            })
        })
        .await
    }

    /// Deletes a partition and its data.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`]; the storage's error.
    pub async fn delete_partition(self: &Rc<Self>, partition: TopicPartition) -> Result<()> {
        self.on_log(partition, Queue::Default, |shard, log| async move {
            shard.partitions.borrow_mut().remove(log.partition());
            log.delete().await
        })
        .await
    }

    /// Hands an append to its partition's shard and returns, once it has
    /// its place in the partition's admission line, the future of its
    /// answer: appends submitted one after the other are admitted in that
    /// order ([`Shard::submit`]).
    pub async fn submit_append(
        self: &Rc<Self>,
        append: AppendRequest,
    ) -> PendingAnswer<AppendInfo> {
        let owner = self.owner_of(&append.partition);
        self.submit(owner, Queue::Default, move |shard| {
            let shard = Rc::clone(shard);
            match shard.local(&append.partition) {
                Ok(log) => {
                    let ticket = log.admission_ticket();
                    Box::pin(async move { shard.append_local(&log, ticket, append).await })
                }
                Err(error) => Box::pin(async move { Err(error) }),
            }
        })
        .await
    }

    /// Appends a request's batches to their partition; see
    /// [`PartitionLog::append_batches`].
    ///
    /// # Errors
    /// As [`PartitionLog::append_batches`] and [`PartitionLog::flush_to`].
    pub async fn append(self: &Rc<Self>, append: AppendRequest) -> Result<AppendInfo> {
        self.submit_append(append).await.await
    }

    /// Waits until the partition's log end (or high watermark, for
    /// [`ReadBound::HighWatermark`]) passes `offset`, or `timeout` passes.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`].
    pub async fn wait_for_data(
        self: &Rc<Self>,
        partition: TopicPartition,
        offset: Offset,
        bound: ReadBound,
        timeout: Duration,
    ) -> Result<()> {
        let queue = match bound {
            ReadBound::HighWatermark => Queue::ConsumerRead,
            ReadBound::LogEnd => Queue::Default,
        };
        self.on_log(partition, queue, move |shard, log| async move {
            let committed = bound == ReadBound::HighWatermark;
            futures_lite::future::or(log.wait_for_data_beyond(offset, committed), async {
                shard.clock.sleep(timeout).await;
            })
            .await;
            Ok(())
        })
        .await
    }

    /// Reads batches into memory.
    ///
    /// # Errors
    /// As [`PartitionLog::read`].
    pub async fn read(self: &Rc<Self>, read: ReadRequest) -> Result<ReadResult> {
        let partition = read.partition.clone();
        self.on_log(partition, Queue::Default, move |_, log| async move {
            let upper_bound = match read.bound {
                ReadBound::HighWatermark => read.upper_bound.min(log.high_watermark()),
                ReadBound::LogEnd => read.upper_bound,
            };
            log.read(read.offset, read.max_bytes, upper_bound).await
        })
        .await
    }

    /// Reads for a consumer without copying: batches up to the high
    /// watermark as cached `Bytes` or a verified file range to send; reads
    /// the next chunk ahead when the reader is catching up from disk.
    ///
    /// # Errors
    /// As [`PartitionLog::read_zero_copy`].
    pub async fn read_zero_copy(
        self: &Rc<Self>,
        partition: TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ZeroCopyRead> {
        self.on_log(
            partition,
            Queue::ConsumerRead,
            move |shard, log| async move {
                let bound = log.high_watermark();
                let read = log.read_zero_copy(offset, max_bytes, bound).await?;
                if log.read_ahead_due() {
                    shard.read_ahead(log, max_bytes);
                }
                Ok(read)
            },
        )
        .await
    }

    /// Flushes everything appended so far; returns the flushed offset.
    ///
    /// # Errors
    /// As [`PartitionLog::flush`].
    pub async fn flush(self: &Rc<Self>, partition: TopicPartition) -> Result<Offset> {
        self.on_log(partition, Queue::Default, |_, log| async move {
            log.flush().await
        })
        .await
    }

    /// The partition's offsets.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`].
    pub async fn offsets(self: &Rc<Self>, partition: TopicPartition) -> Result<LogOffsets> {
        self.on_log(partition, Queue::Default, |_, log| async move {
            Ok(log.offsets())
        })
        .await
    }

    /// ListOffsets for one partition.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`]; a read error of the indexes.
    pub async fn list_offset(
        self: &Rc<Self>,
        partition: TopicPartition,
        query: OffsetQuery,
    ) -> Result<Option<FoundOffset>> {
        self.on_log(partition, Queue::Default, move |_, log| async move {
            let found = |offset| FoundOffset {
                offset,
                timestamp: TimestampMs::NONE,
            };
            let timestamped = |(offset, timestamp)| FoundOffset { offset, timestamp };
            Ok(match query {
                OffsetQuery::Earliest => Some(found(log.offsets().log_start)),
                OffsetQuery::Latest => Some(found(log.offsets().log_end)),
                OffsetQuery::MaxTimestamp => log.max_timestamp_offset().await?.map(timestamped),
                OffsetQuery::Timestamp(target) => {
                    log.offset_for_timestamp(target).await?.map(timestamped)
                }
            })
        })
        .await
    }

    /// DeleteRecords: moves the log start up to `offset`; returns the new
    /// log start.
    ///
    /// # Errors
    /// As [`PartitionLog::delete_records`].
    pub async fn delete_records(
        self: &Rc<Self>,
        partition: TopicPartition,
        offset: Offset,
    ) -> Result<Offset> {
        self.on_log(partition, Queue::Default, move |_, log| async move {
            log.delete_records(offset).await
        })
        .await
    }

    /// Replaces the partition's config.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`].
    pub async fn set_config(
        self: &Rc<Self>,
        partition: TopicPartition,
        config: LogConfig,
    ) -> Result<()> {
        self.on_log(partition, Queue::Default, move |_, log| async move {
            log.set_config(config);
            Ok(())
        })
        .await
    }

    /// The topic id recorded for `partition`, if any
    /// ([`PartitionLog::topic_id`]).
    ///
    /// # Errors
    /// [`Error::UnknownPartition`]; the storage's error.
    pub async fn topic_id(self: &Rc<Self>, partition: TopicPartition) -> Result<Option<String>> {
        self.on_log(partition, Queue::Default, |_, log| async move {
            log.topic_id().await
        })
        .await
    }

    /// Records, durably, which topic `partition` belongs to
    /// ([`PartitionLog::set_topic_id`]).
    ///
    /// # Errors
    /// [`Error::UnknownPartition`]; the storage's error.
    pub async fn set_topic_id(
        self: &Rc<Self>,
        partition: TopicPartition,
        topic_id: String,
    ) -> Result<()> {
        self.on_log(partition, Queue::Default, |_, log| async move {
            log.set_topic_id(&topic_id).await
        })
        .await
    }

    /// OffsetForLeaderEpoch: the end of the largest epoch at or below
    /// `epoch`, if the log has one.
    ///
    /// # Errors
    /// [`Error::UnknownPartition`].
    pub async fn end_offset_for_epoch(
        self: &Rc<Self>,
        partition: TopicPartition,
        epoch: LeaderEpoch,
    ) -> Result<Option<EpochEnd>> {
        self.on_log(partition, Queue::Default, move |_, log| async move {
            Ok(log
                .end_offset_for_epoch(epoch)
                .map(|(epoch, end_offset)| EpochEnd { epoch, end_offset }))
        })
        .await
    }

    /// The partition's size on disk (DescribeLogDirs).
    ///
    /// # Errors
    /// [`Error::UnknownPartition`].
    pub async fn partition_size(self: &Rc<Self>, partition: TopicPartition) -> Result<u64> {
        self.on_log(partition, Queue::Default, |_, log| async move {
            Ok(log.size_bytes())
        })
        .await
    }

    /// The partitions shard `target` owns, sorted.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once it has stopped.
    pub async fn list_partitions(self: &Rc<Self>, target: usize) -> Result<Vec<TopicPartition>> {
        self.run_on(target, Queue::Default, |shard| {
            let mut partitions: Vec<TopicPartition> =
                shard.partitions.borrow().keys().cloned().collect();
            partitions.sort();
            Box::pin(async move { Ok(partitions) })
        })
        .await
    }
}
