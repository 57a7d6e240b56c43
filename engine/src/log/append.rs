//! Appending: admission in ticket order, the single writer that batches
//! queued appends into aligned writes, segment rolls, checkpoints, and group
//! commit (one fdatasync for every flush waiting on it). Durability points:
//! *written* once the DMA completed, *flushed* once fdatasync did.

use bytes::{Bytes, BytesMut};

use crate::batch::{self, BatchHeader, TimestampType};
use crate::checkpoint::PARTITION_CHECKPOINT_FILE;
use crate::error::{Error, Result};
use crate::producer_state::{parse_snapshot_file_name, snapshot_file_name, SequenceCheck};
use crate::segment::{remove_files, write_files, Segment};
use crate::storage::Storage;
use crate::types::{LeaderEpoch, Offset, TimestampMs};

use super::admission::AdmissionTicket;
use super::record_checks::RecordChecks;
use super::{
    producer_batch, replay_leader_epoch, replay_producer_batch, AppendInfo, CheckpointTurn,
    LogState, NextWrite, PartitionLog, PendingBatch, Role, RoleGuard, PENDING_BYTES_MAX,
    WRITE_BYTES_MAX,
};

impl<S: Storage> PartitionLog<S> {
    /// A place in this log's admission line: appends are admitted (given
    /// their offsets) in the order their tickets were taken, whatever order
    /// their tasks run in. See [`admission`].
    pub fn admission_ticket(&self) -> AdmissionTicket {
        self.admission.take_ticket()
    }

    /// Appends one record batch as a producer sent it, with a ticket taken
    /// when this is first polled; see [`PartitionLog::append_batches`].
    ///
    /// # Errors
    /// As [`PartitionLog::append_batches`].
    pub async fn append(&self, bytes: &[u8], leader_epoch: LeaderEpoch) -> Result<AppendInfo> {
        self.append_batches(self.admission_ticket(), &[bytes], leader_epoch)
            .await
    }

    /// Appends the record batches (Kafka record batch v2) one request
    /// carries for this partition, as leader, all or none: validates every
    /// batch first, waits for `ticket`'s turn, checks idempotent-producer
    /// sequences, assigns consecutive offsets to the batches (rewriting
    /// each `baseOffset`, the leader epoch, and with `LogAppendTime` the
    /// timestamps and CRC), and returns once they are *written*. Applies
    /// `flush.messages` before returning. The answer spans every batch:
    /// the first one's base offset to the last one's last offset.
    ///
    /// An idempotent producer's batches come one per partition and request
    /// (Kafka accepts no more than one batch per partition at all), so
    /// several batches with a producer id are refused as a whole.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`], [`Error::InvalidRecord`], [`Error::InvalidRecords`],
    /// [`Error::MessageTooLarge`], [`Error::OutOfOrderSequence`],
    /// [`Error::ProducerFenced`], [`Error::Poisoned`],
    /// [`Error::ShuttingDown`], or the [`Error::Io`] that poisoned the log;
    /// nothing of the request is appended then, unless the error came from
    /// writing.
    pub async fn append_batches<B: AsRef<[u8]>>(
        &self,
        ticket: AdmissionTicket,
        batches: &[B],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let (max_message_bytes, record_checks) = {
            let state = self.state.borrow();
            (
                state.config.max_message_bytes,
                RecordChecks::new(&state.config, self.clock.now()),
            )
        };
        if batches.is_empty() {
            return Err(Error::InvalidBatch("no record batch".to_owned()));
        }
        let mut headers = Vec::with_capacity(batches.len());
        for bytes in batches {
            let bytes = bytes.as_ref();
            let header = batch::validate_incoming(bytes, max_message_bytes)?;
            record_checks.check(&header, bytes)?;
            headers.push(header);
        }
        if headers.len() > 1 && headers.iter().any(BatchHeader::is_idempotent) {
            return Err(Error::InvalidRecord(
                "an idempotent producer sends one record batch per partition and request"
                    .to_owned(),
            ));
        }
        let total_bytes = batches.iter().map(|bytes| bytes.as_ref().len()).sum();
        ticket.wait_for_turn().await;
        self.wait_for_queue_room(total_bytes).await?;
        let info = self.admit(batches, &headers, leader_epoch)?;
        // The next ticket's turn: this request's offsets are assigned.
        drop(ticket);
        self.wait_written(info.last_offset.next()).await?;
        if !info.duplicate {
            let records = headers
                .iter()
                .map(|header| i64::from(header.record_count))
                .sum();
            self.apply_flush_policy(records).await?;
        }
        Ok(info)
    }

    /// Appends record batches a follower fetched from its leader, exactly as
    /// the leader wrote them: offsets, partition leader epochs, producer
    /// ids, epochs and sequences, timestamps and CRCs are kept, and
    /// returns once they are *written* (the caller flushes, with
    /// [`PartitionLog::flush_to`], when it must). Each batch is checked only
    /// for what protects this log ([`batch::validate_replicated`]: framing,
    /// CRC, offsets): not against `max.message.bytes`, the record checks or
    /// the producer sequences, which the leader applied when it accepted
    /// them. Applies `flush.messages` like any append.
    ///
    /// The first batch must start at or after the log end and each next one
    /// after the one before. A gap is allowed, as in Kafka: the cleaner
    /// removes whole batches from a compacted leader log, so its batches
    /// need not be contiguous.
    ///
    /// As the batches are admitted the leader-epoch cache takes every epoch
    /// newer than its latest (starting at that batch's base offset) and the
    /// producer-state table records every idempotent batch without a
    /// sequence check, so the follower's state matches the leader's and a
    /// follower that becomes leader refuses duplicates and out-of-order
    /// sequences as the old leader would have. The batches go through the
    /// admission line, writer, segment rolls and indexes of every append,
    /// so checkpoints, producer snapshots and recovery treat them alike.
    ///
    /// # Errors
    /// [`Error::InvalidBatch`] for no batch or a batch that fails its
    /// checks; [`Error::OffsetMismatch`] for a batch that starts below the
    /// log end or overlaps the one before (nothing is appended then: the
    /// follower's log and the leader's disagree); [`Error::Poisoned`],
    /// [`Error::ShuttingDown`], or the [`Error::Io`] that poisoned the log.
    pub async fn append_as_follower<B: AsRef<[u8]>>(&self, batches: &[B]) -> Result<AppendInfo> {
        if batches.is_empty() {
            return Err(Error::InvalidBatch("no record batch".to_owned()));
        }
        let mut headers = Vec::with_capacity(batches.len());
        for bytes in batches {
            let header = batch::validate_replicated(bytes.as_ref())?;
            if let Some(previous) = headers.last().map(BatchHeader::last_offset) {
                if header.base_offset <= previous {
                    return Err(Error::OffsetMismatch {
                        expected: previous.next(),
                        found: header.base_offset,
                    });
                }
            }
            headers.push(header);
        }
        let ticket = self.admission_ticket();
        let total_bytes = batches.iter().map(|bytes| bytes.as_ref().len()).sum();
        ticket.wait_for_turn().await;
        self.wait_for_queue_room(total_bytes).await?;
        let info = self.admit_replicated(batches, &headers)?;
        drop(ticket);
        self.wait_written(info.last_offset.next()).await?;
        let records = headers
            .iter()
            .map(|header| i64::from(header.record_count.max(0)))
            .sum();
        self.apply_flush_policy(records).await?;
        Ok(info)
    }

    /// Queues a follower's validated batches at their own offsets, with the
    /// epoch cache and producer state they imply. Never awaits, so the log
    /// end it checks against is the one the batches land on.
    /// Each batch is copied into a buffer of its own: the batch cache keeps
    /// it, and a slice of the fetch response it came in would pin the whole
    /// response.
    fn admit_replicated<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
        headers: &[BatchHeader],
    ) -> Result<AppendInfo> {
        let mut state = self.state.borrow_mut();
        self.usable(&state)?;
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(Error::InvalidBatch("no record batch".to_owned()));
        };
        if first.base_offset < state.assigned_offset {
            return Err(Error::OffsetMismatch {
                expected: state.assigned_offset,
                found: first.base_offset,
            });
        }
        // An epoch this node took as leader at its log end wrote nothing
        // here (else the log would end past it): the leader's batches say
        // which epochs these offsets belong to.
        state.epochs.truncate_from_end(first.base_offset);
        for (header, bytes) in headers.iter().zip(batches) {
            replay_leader_epoch(&mut state.epochs, header);
            replay_producer_batch(&mut state.producers, header);
            let bytes = Bytes::copy_from_slice(bytes.as_ref());
            state.pending_bytes += bytes.len();
            state.pending.push_back(PendingBatch {
                header: *header,
                bytes,
            });
        }
        state.assigned_offset = last.last_offset().next();
        Ok(AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            log_append_time: TimestampMs::NONE,
            log_start_offset: state.log_start_offset,
            duplicate: false,
        })
    }

    /// Checks incoming batches against the producer state and queues them
    /// with their offsets assigned, or finds the original of a duplicate
    /// (a single idempotent batch). Never awaits, so nothing is admitted
    /// between two batches of one request.
    pub(super) fn admit<B: AsRef<[u8]>>(
        &self,
        batches: &[B],
        headers: &[BatchHeader],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendInfo> {
        let mut state = self.state.borrow_mut();
        self.usable(&state)?;
        if let [header] = headers {
            if header.is_idempotent() {
                if let SequenceCheck::Duplicate(original) =
                    state.producers.check(&producer_batch(header))?
                {
                    return Ok(AppendInfo {
                        base_offset: original.first_offset,
                        last_offset: original.last_offset,
                        log_append_time: TimestampMs::NONE,
                        log_start_offset: state.log_start_offset,
                        duplicate: true,
                    });
                }
            }
        }
        if let Some(latest) = state.epochs.latest_epoch() {
            assert!(
                leader_epoch >= latest || leader_epoch == LeaderEpoch::UNKNOWN,
                "leader epoch went backwards"
            );
        }
        let log_append_time = match state.config.message_timestamp_type {
            TimestampType::LogAppendTime => self.clock.now(),
            TimestampType::CreateTime => TimestampMs::NONE,
        };
        // Every batch rewritten before the state changes: all or none.
        let base_offset = state.assigned_offset;
        let mut next_offset = base_offset;
        let mut admitted = Vec::with_capacity(batches.len());
        for bytes in batches {
            let mut owned = BytesMut::from(bytes.as_ref());
            batch::set_base_offset(&mut owned, next_offset);
            batch::set_partition_leader_epoch(&mut owned, leader_epoch);
            if log_append_time != TimestampMs::NONE {
                batch::set_log_append_time(&mut owned, log_append_time);
            }
            let header = BatchHeader::parse(&owned)?;
            next_offset = header.last_offset().next();
            admitted.push(PendingBatch {
                header,
                bytes: owned.freeze(),
            });
        }
        let last_offset = admitted
            .last()
            .expect("a request has at least one batch")
            .header
            .last_offset();
        if leader_epoch != LeaderEpoch::UNKNOWN {
            state.epochs.assign(leader_epoch, base_offset);
        }
        for pending in admitted {
            if pending.header.is_idempotent() {
                state.producers.record(
                    &producer_batch(&pending.header),
                    pending.header.base_offset,
                    pending.header.last_offset(),
                );
            }
            state.pending_bytes += pending.bytes.len();
            state.pending.push_back(pending);
        }
        state.assigned_offset = next_offset;
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time,
            log_start_offset: state.log_start_offset,
            duplicate: false,
        })
    }

    pub(super) async fn wait_for_queue_room(&self, bytes: usize) -> Result<()> {
        self.wait_for_writer(|state| {
            self.usable(state)?;
            Ok(state.pending.is_empty() || state.pending_bytes + bytes <= PENDING_BYTES_MAX)
        })
        .await
    }

    /// Waits until every offset below `target` is written.
    pub(super) async fn wait_written(&self, target: Offset) -> Result<()> {
        self.wait_for_writer(|state| {
            if let Some(cause) = &state.poisoned {
                return Err(self.poisoned_error(cause));
            }
            Ok(state.written_offset >= target)
        })
        .await
    }

    /// Waits until `satisfied` holds, becoming the writer whenever no task is
    /// writing and the condition still does not hold.
    pub(super) async fn wait_for_writer(
        &self,
        satisfied: impl Fn(&LogState<S>) -> Result<bool>,
    ) -> Result<()> {
        loop {
            let listener = self.written_event.listen();
            let writer_active = {
                let state = self.state.borrow();
                if satisfied(&state)? {
                    return Ok(());
                }
                state.writer_active
            };
            if writer_active {
                listener.await;
            } else {
                self.drive_writer().await?;
            }
        }
    }

    /// Writes the next run of queued batches (rolling first if needed), as
    /// the log's single writer.
    pub(super) async fn drive_writer(&self) -> Result<()> {
        self.state.borrow_mut().writer_active = true;
        let mut guard = RoleGuard {
            log: self,
            role: Role::Writer,
            finished: false,
        };
        let result = self.write_queued().await;
        if let Err(error) = &result {
            self.poison(error);
        }
        guard.finished = true;
        drop(guard);
        result
    }

    pub(super) fn poison(&self, error: &Error) {
        let mut state = self.state.borrow_mut();
        if state.poisoned.is_none() {
            tracing::error!(partition = %self.partition, %error, "poisoning partition after I/O failure");
            state.poisoned = Some(error.to_string());
        }
    }

    /// Decides the writer's next step: roll the active segment, or take the
    /// longest run of queued batches that fits it and one write.
    pub(super) fn next_write(&self) -> NextWrite<S> {
        let mut state = self.state.borrow_mut();
        let Some(first) = state.pending.front() else {
            return NextWrite::Idle;
        };
        let active = state.active();
        let segment_bytes = state.config.segment_bytes;
        // The cleaner never touches the active segment, so a compacted log
        // also rolls once `max.compaction.lag.ms` passed, as Kafka does.
        let roll_after_ms = if state.config.cleanup_policy.compact {
            state
                .config
                .segment_ms
                .min(state.config.max_compaction_lag_ms)
        } else {
            state.config.segment_ms
        };
        let too_old = active
            .first_append_ms
            .is_some_and(|first_ms| self.now_ms().saturating_sub(first_ms) >= roll_after_ms);
        let overflows = |header: &BatchHeader| {
            header.last_offset().0 - active.base_offset.0 > i64::from(i32::MAX)
        };
        if active.size() > 0
            && (active.size() + first.bytes.len() as u64 > segment_bytes
                || too_old
                || overflows(&first.header)
                || active.indexes_full(state.config.index_policy()))
        {
            return NextWrite::Roll;
        }
        let room = segment_bytes.saturating_sub(active.size());
        let mut take = 0;
        let mut run_bytes = 0u64;
        for next in &state.pending {
            let length = next.bytes.len() as u64;
            if take > 0
                && (run_bytes + length > room
                    || run_bytes + length > WRITE_BYTES_MAX as u64
                    || overflows(&next.header))
            {
                break;
            }
            take += 1;
            run_bytes += length;
        }
        let run: Vec<(BatchHeader, Bytes)> = state
            .pending
            .drain(..take)
            .map(|pending| (pending.header, pending.bytes))
            .collect();
        state.pending_bytes -= run_bytes as usize;
        let (write, commit) = state.active().prepare_append(&self.storage, &run);
        NextWrite::Append(run, write, commit)
    }

    pub(super) async fn write_queued(&self) -> Result<()> {
        loop {
            let (run, write, commit) = match self.next_write() {
                NextWrite::Idle => return Ok(()),
                NextWrite::Roll => {
                    self.roll().await?;
                    continue;
                }
                NextWrite::Append(run, write, commit) => (run, write, commit),
            };
            write.write(&self.storage).await?;
            let mut state = self.state.borrow_mut();
            let policy = state.config.index_policy();
            state
                .active_mut()
                .commit_append(&run, commit, policy, self.now_ms());
            for (header, _) in &run {
                replay_producer_batch(&mut state.written_producers, header);
            }
            let end = run.last().map_or(state.written_offset, |(header, _)| {
                header.last_offset().next()
            });
            assert!(end > state.written_offset, "written offset must advance");
            state.written_offset = end;
            let mut cache = self.cache.borrow_mut();
            for (header, bytes) in run {
                cache.insert(
                    self.cache_key,
                    header.base_offset,
                    header.last_offset().next(),
                    bytes,
                );
            }
            drop(cache);
            state.check_invariants();
            drop(state);
            self.written_event.notify(usize::MAX);
            // One write per turn: the caller re-checks its own condition and
            // hands the role on, so no appender drains everyone else's queue.
            return Ok(());
        }
    }

    /// Closes the active segment and starts a new one at the log end: the
    /// old segment is flushed, sealed (padding cut) and its indexes written,
    /// then the recovery point moves to the new segment. Called by the writer.
    pub(super) async fn roll(&self) -> Result<()> {
        let next_offset = self.state.borrow().active().next_offset;
        self.seal_active().await?;
        let segment = Segment::create(&self.storage, &self.dir, next_offset).await?;
        {
            let mut state = self.state.borrow_mut();
            assert_eq!(
                next_offset, state.written_offset,
                "roll with unwritten data"
            );
            state.segments.insert(next_offset, segment);
            state.flushed_offset = state.flushed_offset.max(next_offset);
        }
        self.write_checkpoint(next_offset).await?;
        self.flushed_event.notify(usize::MAX);
        tracing::debug!(partition = %self.partition, base = next_offset.0, "rolled segment");
        Ok(())
    }

    /// Seals the active segment as it stands: its padding cut, the file
    /// flushed, its indexes (with the closing time index entry) written.
    /// The caller holds the writer role, so nothing is appended meanwhile.
    pub(super) async fn seal_active(&self) -> Result<()> {
        let (handle, size) = {
            let state = self.state.borrow();
            (state.active().handle(), state.active().size())
        };
        handle.truncate(size).await?;
        handle.fdatasync().await?;
        let index_files = {
            let mut state = self.state.borrow_mut();
            let policy = state.config.index_policy();
            state.active_mut().closing_index_files(policy)
        };
        write_files(&self.storage, index_files).await
    }

    /// Writes a producer snapshot and the partition checkpoint with
    /// `recovery_point`, which must be flushed with indexes on disk below it.
    /// Checkpoints of one log are written one at a time, in call order, so
    /// an older one never lands over a newer one nor removes its snapshot.
    pub(super) async fn write_checkpoint(&self, recovery_point: Offset) -> Result<()> {
        let _turn = self.checkpoint_turn().await;
        self.write_checkpoint_exclusively(recovery_point).await
    }

    /// Waits until no checkpoint of this log is being written and holds
    /// that right until the turn is dropped: whoever holds it may write
    /// the checkpoint file, and no other checkpoint lands meanwhile.
    pub(super) async fn checkpoint_turn(&self) -> CheckpointTurn<'_, S> {
        loop {
            let listener = self.checkpoint_done.listen();
            if !self.checkpointing.replace(true) {
                return CheckpointTurn { log: self };
            }
            listener.await;
        }
    }

    /// A producer snapshot is written with the checkpoint only when the
    /// recovery point is the written offset (a roll, a close, a
    /// truncation, a recovery point that caught up): the snapshot must hold
    /// the producer state of exactly the offsets below it, and only the
    /// written table is known exactly. Otherwise the newest older snapshot
    /// stays, and recovery replays from it.
    pub(super) async fn write_checkpoint_exclusively(&self, recovery_point: Offset) -> Result<()> {
        let (snapshot, checkpoint) = {
            let mut state = self.state.borrow_mut();
            state.recovery_point = recovery_point;
            let snapshot = (recovery_point == state.written_offset)
                .then(|| state.written_producers.encode_snapshot(recovery_point));
            (snapshot, state.checkpoint().encode())
        };
        let mut files = Vec::with_capacity(2);
        if let Some(snapshot) = snapshot {
            files.push((self.dir.join(snapshot_file_name(recovery_point)), snapshot));
        }
        files.push((self.dir.join(PARTITION_CHECKPOINT_FILE), checkpoint));
        write_files(&self.storage, files).await?;
        // Older snapshots are superseded, except the newest one at or below
        // the recovery point (recovery starts from it) and those taken at
        // the base of a segment that still exists (a roll takes one):
        // truncation reloads the producer state from the newest snapshot
        // below its offset, so these bound its replay to about a segment.
        let (segment_bases, first_base) = {
            let state = self.state.borrow();
            let bases: Vec<Offset> = state.segments.keys().copied().collect();
            let first = bases.first().copied().unwrap_or(recovery_point);
            (bases, first)
        };
        let snapshots = self.snapshot_offsets().await?;
        let newest_usable = snapshots
            .iter()
            .rev()
            .find(|&&offset| offset <= recovery_point)
            .copied();
        let superseded = snapshots
            .into_iter()
            .filter(|&offset| {
                offset < recovery_point
                    && Some(offset) != newest_usable
                    && (offset < first_base || segment_bases.binary_search(&offset).is_err())
            })
            .map(|offset| self.dir.join(snapshot_file_name(offset)))
            .collect();
        remove_files(&self.storage, superseded).await
    }

    /// The offsets of the producer snapshots in the partition directory,
    /// ascending.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be listed.
    pub(super) async fn snapshot_offsets(&self) -> Result<Vec<Offset>> {
        let names = self
            .storage
            .list_dir(&self.dir)
            .await
            .map_err(|error| Error::io("listing partition directory", &self.dir, error))?;
        let mut offsets: Vec<Offset> = names
            .iter()
            .filter_map(|name| parse_snapshot_file_name(name))
            .collect();
        offsets.sort_unstable();
        Ok(offsets)
    }

    /// Moves the recovery point up to the flushed offset, so a restart after
    /// a crash scans only what was written since. Writes the active
    /// segment's indexes first (recovery starts at the recovery point's
    /// index entry; entries past it are dropped by the scan), then the
    /// producer snapshot and checkpoint. Returns whether it moved.
    ///
    /// # Errors
    /// [`Error::Io`] if a file cannot be written; the old recovery point then
    /// stays in force.
    ///
    /// # Panics
    /// If the flushed offset is below the active segment, which a roll (it
    /// flushes the segment it closes) rules out.
    pub async fn checkpoint_recovery_point(&self) -> Result<bool> {
        let (flushed, index_files) = {
            let state = self.state.borrow();
            if state.poisoned.is_some()
                || state.closed
                || state.flushed_offset <= state.recovery_point
            {
                return Ok(false);
            }
            assert!(
                state.flushed_offset >= state.active().base_offset,
                "a roll flushes the segment it closes"
            );
            (state.flushed_offset, state.active().index_files())
        };
        write_files(&self.storage, index_files).await?;
        self.write_checkpoint(flushed).await?;
        Ok(true)
    }

    pub(super) async fn apply_flush_policy(&self, records: i64) -> Result<()> {
        let due = {
            let mut state = self.state.borrow_mut();
            state.unflushed_records = state.unflushed_records.saturating_add(records);
            state.oldest_unflushed_ms.get_or_insert(self.now_ms());
            state.unflushed_records >= state.config.flush_messages
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Flushes if the oldest unflushed append is older than `flush.ms`; the
    /// shard calls this periodically.
    ///
    /// # Errors
    /// As [`PartitionLog::flush`].
    pub async fn flush_if_due(&self) -> Result<()> {
        let due = {
            let state = self.state.borrow();
            state
                .oldest_unflushed_ms
                .is_some_and(|oldest| self.now_ms().saturating_sub(oldest) >= state.config.flush_ms)
        };
        if due {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes everything appended before the call durable and returns the
    /// flushed offset. Concurrent callers share one fdatasync.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the [`Error::Io`] that poisoned the log.
    pub async fn flush(&self) -> Result<Offset> {
        let target = self.state.borrow().assigned_offset;
        self.flush_to(target).await
    }

    /// Makes every offset below `target` durable (see [`PartitionLog::flush`]).
    ///
    /// # Errors
    /// [`Error::Poisoned`] or the [`Error::Io`] that poisoned the log.
    pub async fn flush_to(&self, target: Offset) -> Result<Offset> {
        self.wait_written(target).await?;
        loop {
            let listener = self.flushed_event.listen();
            let sync = {
                let mut state = self.state.borrow_mut();
                if let Some(cause) = &state.poisoned {
                    return Err(self.poisoned_error(cause));
                }
                if state.flushed_offset >= target {
                    return Ok(state.flushed_offset);
                }
                if state.syncer_active {
                    None
                } else {
                    state.syncer_active = true;
                    Some((state.active().handle(), state.written_offset))
                }
            };
            let Some((handle, covered)) = sync else {
                listener.await;
                continue;
            };
            let mut guard = RoleGuard {
                log: self,
                role: Role::Syncer,
                finished: false,
            };
            let result = handle.fdatasync().await;
            guard.finished = true;
            match result {
                Ok(()) => {
                    let mut state = self.state.borrow_mut();
                    // A roll in between may have moved it further already.
                    state.flushed_offset = state.flushed_offset.max(covered);
                    if state.flushed_offset >= state.written_offset {
                        state.unflushed_records = 0;
                        state.oldest_unflushed_ms = None;
                    }
                }
                Err(error) => {
                    self.poison(&error);
                    drop(guard);
                    return Err(error);
                }
            }
            drop(guard);
        }
    }
}
