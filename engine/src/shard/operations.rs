//! The partition operations a [`Shard`] handle offers, each with its own
//! request and answer types, run on the shard that owns the partition
//! ([`super::calls`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::calls::{LocalFuture, PendingAnswer, Queue};
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

    /// Waits until any of `waits` (each a partition and the offset its
    /// reader is at) has data past that offset (its log end, or its high
    /// watermark for [`ReadBound::HighWatermark`]), or `timeout` passes; at
    /// once when one of them is not on its shard (the reader's next read
    /// reports it) or the shard is stopping.
    ///
    /// A long-polling Fetch waits on every partition it reads, and a busy
    /// broker answers thousands of them a second, so the wait costs one
    /// operation per owning shard (one task there, one timer, a listener
    /// per partition), not one per partition. Dropping the future cancels
    /// the wait on this shard; another shard's ends with its first data or
    /// its timeout.
    pub async fn wait_for_any_data(
        self: &Rc<Self>,
        waits: Vec<(TopicPartition, Offset)>,
        bound: ReadBound,
        timeout: Duration,
    ) {
        let queue = match bound {
            ReadBound::HighWatermark => Queue::ConsumerRead,
            ReadBound::LogEnd => Queue::Default,
        };
        let committed = bound == ReadBound::HighWatermark;
        let per_owner = self
            .by_owner(waits, |(partition, _)| partition)
            .into_iter()
            .map(|(owner, waits)| {
                let shard = Rc::clone(self);
                Box::pin(async move {
                    let _ = shard
                        .run_on(owner, queue, move |owner| {
                            let owner = Rc::clone(owner);
                            Box::pin(async move {
                                owner.wait_here_for_any(waits, committed, timeout).await;
                                Ok(())
                            })
                        })
                        .await;
                }) as LocalFuture<()>
            })
            .collect();
        futures_lite::future::or(FirstOf(per_owner), self.clock.sleep(timeout)).await;
    }

    /// [`Shard::wait_for_any_data`] for partitions of this shard.
    async fn wait_here_for_any(
        &self,
        waits: Vec<(TopicPartition, Offset)>,
        committed: bool,
        timeout: Duration,
    ) {
        let Ok(logs) = waits
            .iter()
            .map(|(partition, offset)| Ok((self.local(partition)?, *offset)))
            .collect::<Result<Vec<_>>>()
        else {
            return;
        };
        let waiting = logs
            .into_iter()
            .map(|(log, offset)| {
                Box::pin(async move { log.wait_for_data_beyond(offset, committed).await })
                    as LocalFuture<()>
            })
            .collect();
        futures_lite::future::or(FirstOf(waiting), self.clock.sleep(timeout)).await;
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

    /// Reads partitions for a consumer without copying, each from the
    /// offset it names up to its byte limit: batches up to the high
    /// watermark as cached `Bytes` or a verified file range to send; reads
    /// the next chunk ahead when a reader is catching up from disk.
    /// Answers in the order of `reads`.
    ///
    /// A Fetch names many partitions, and at a steady rate most have
    /// nothing new, so the reads cost one operation per owning shard, not
    /// one per partition; a shard's partitions are read concurrently there
    /// (and on the disk), every shard's at once.
    pub async fn read_zero_copy_many(
        self: &Rc<Self>,
        reads: Vec<(TopicPartition, Offset, usize)>,
    ) -> Vec<Result<ZeroCopyRead>> {
        let count = reads.len();
        let by_owner = self.by_owner(reads.into_iter().enumerate(), |(_, (partition, _, _))| {
            partition
        });
        let per_owner = by_owner.into_iter().map(|(owner, reads)| {
            let shard = Rc::clone(self);
            async move {
                let indexes: Vec<usize> = reads.iter().map(|read| read.0).collect();
                let answers = shard
                    .run_on(owner, Queue::ConsumerRead, move |owner| {
                        let owner = Rc::clone(owner);
                        Box::pin(async move {
                            let reads =
                                reads
                                    .into_iter()
                                    .map(|(_, (partition, offset, max_bytes))| {
                                        owner.read_zero_copy_here(partition, offset, max_bytes)
                                    });
                            Ok(join_all(reads).await)
                        })
                    })
                    .await;
                (indexes, answers)
            }
        });
        let mut answers = Vec::with_capacity(count);
        for (indexes, owner_answers) in join_all(per_owner).await {
            match owner_answers {
                Ok(owner_answers) => answers.extend(indexes.into_iter().zip(owner_answers)),
                // The operation itself never fails: its shard stopped.
                Err(_) => answers.extend(
                    indexes
                        .into_iter()
                        .map(|index| (index, Err(Error::ShuttingDown))),
                ),
            }
        }
        answers.sort_unstable_by_key(|(index, _)| *index);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }

    /// `items` grouped by the shard owning each one's partition.
    fn by_owner<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        partition: impl Fn(&T) -> &TopicPartition,
    ) -> BTreeMap<usize, Vec<T>> {
        let mut by_owner: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            by_owner
                .entry(self.owner_of(partition(&item)))
                .or_default()
                .push(item);
        }
        by_owner
    }

    /// One read of [`Shard::read_zero_copy_many`], on the owning shard.
    async fn read_zero_copy_here(
        self: &Rc<Self>,
        partition: TopicPartition,
        offset: Offset,
        max_bytes: usize,
    ) -> Result<ZeroCopyRead> {
        let log = self.local(&partition)?;
        let bound = log.high_watermark();
        let read = log.read_zero_copy(offset, max_bytes, bound).await?;
        if log.read_ahead_due() {
            self.read_ahead(log, max_bytes);
        }
        Ok(read)
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

/// Completes when the first of its futures does; never, for none. Polls
/// every future at each wake: they are a Fetch's partitions of one shard,
/// or one per shard.
struct FirstOf(Vec<LocalFuture<()>>);

impl Future for FirstOf {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        for future in &mut self.get_mut().0 {
            if future.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
