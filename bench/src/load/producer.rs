//! One workload producer: a thread that builds batches on a schedule and a
//! thread that reads their acknowledgements, sharing one connection.
//!
//! The sender behaves like a Kafka producer with the sticky partitioner: it
//! fills one batch for one of its partitions until `batchSize` bytes or
//! `lingerMs` after the batch's first message, sends it, and moves to its
//! next partition. Messages are due on a fixed schedule (`start + n *
//! interval`) when the workload has a rate, or as fast as the connection
//! takes them. A message's intended send time is its schedule slot (or its
//! creation at max rate), written into the value and kept for the publish
//! latency, so falling behind the schedule counts as latency. The thread
//! wakes once per batch, not per message: when a batch opens, and when it
//! must go (its linger ends, or the message that would overflow it is due),
//! taking every message due meanwhile, each stamped with its own slot. A
//! wake per message (every 20 us at 50k msg/s per producer) cost the load
//! generator tens of thousands of context switches a second, on the CPUs
//! it shares with the broker it measures.
//!
//! Requests outstanding are bounded by `maxInFlight`: the sender hands each
//! request's stamps to the reader over a channel of that capacity before
//! writing it, and blocks when it is full.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::batch::build_batch;
use fjord_engine::TimestampMs;
use fjord_tools::client::records::{encode_batch, Codec, OutgoingRecord};
use fjord_tools::client::{produce_request, produce_result, Connection, PRODUCE_VERSION};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{ApiKey, ProduceResponse};

use super::run::{Clock, Meter, PublishParts};
use super::{Workload, STAMP_BYTES};
use crate::engine::BenchResult;
use crate::latency;
use crate::wire::CLIENT_ID;

/// What one producer does.
pub struct ProducerPlan {
    /// The partitions' leader.
    pub address: String,
    /// The topic written.
    pub topic: String,
    /// This producer's partitions, visited in turn.
    pub partitions: Vec<i32>,
    /// The workload.
    pub workload: Arc<Workload>,
    /// Run timing.
    pub clock: Clock,
    /// Time between two messages of this producer; `None` at max rate.
    pub interval: Option<Duration>,
    /// This producer's first schedule slot, staggered among producers.
    pub first_slot: Instant,
    /// Bytes the values are cut from ([`payload_pool`]).
    pub payload: Arc<Vec<u8>>,
    /// Publish counts and latency.
    pub meter: Arc<Meter>,
    /// Where the publish latency went.
    pub parts: Arc<PublishParts>,
}

/// A request sent and not yet acknowledged: its messages' stamps, and the
/// stamp of its writing to the socket (set by the sender right after it
/// hands this over, before the write).
struct Outstanding {
    correlation_id: i32,
    stamps: Vec<u64>,
    written: Arc<AtomicU64>,
}

/// `len + message_size` bytes from which values are cut at rolling
/// offsets: in every `message_size` stretch the first `randomness` share is
/// pseudo-random and the rest zeros, so codecs find what the workload says.
#[must_use]
pub fn payload_pool(message_size: usize, randomness: f64, len: usize) -> Vec<u8> {
    let mut pool = crate::workload::pseudo_random_bytes(len + message_size, 0x2545_f491_4f6c_dd1d);
    let random_bytes = (message_size as f64 * randomness).round() as usize;
    for (index, byte) in pool.iter_mut().enumerate() {
        if index % message_size >= random_bytes {
            *byte = 0;
        }
    }
    pool
}

/// The batch being filled.
struct OpenBatch {
    values: Vec<u8>,
    stamps: Vec<u64>,
    opened: Option<Instant>,
}

impl OpenBatch {
    /// Adds a message: its stamp (first in its value) and the rest of its
    /// value; the first one opens the batch at `now`.
    fn take(&mut self, stamp: u64, rest_of_value: &[u8], now: Instant) {
        self.values.extend_from_slice(&stamp.to_be_bytes());
        self.values.extend_from_slice(rest_of_value);
        self.stamps.push(stamp);
        self.opened.get_or_insert(now);
    }

    /// When this batch of at most `capacity` messages must go, the next
    /// message being due at `next_slot` and each after it `interval` later:
    /// when its linger ends, or when the message that would overflow it is
    /// due. `None` for a batch not open.
    fn must_go(
        &self,
        linger: Duration,
        capacity: usize,
        next_slot: Instant,
        interval: Duration,
    ) -> Option<Instant> {
        let room = u32::try_from(capacity.saturating_sub(self.stamps.len())).unwrap_or(u32::MAX);
        Some((self.opened? + linger).min(next_slot + interval.saturating_mul(room)))
    }
}

/// Runs one producer until the clock's end, then waits for every
/// acknowledgement.
///
/// # Errors
/// Connection, protocol and broker errors (any fails the run).
///
/// # Panics
/// If the acknowledgement reader panics.
pub fn run(plan: &ProducerPlan) -> BenchResult<()> {
    let workload = &plan.workload;
    let mut connection = Connection::open(&plan.address, CLIENT_ID)?;
    let message_size = workload.message_size as usize;
    let batch_size = workload.batch_size as usize;
    let linger = Duration::from_millis(u64::from(workload.linger_ms));
    let (handoff, outstanding) = sync_channel::<Outstanding>(workload.max_in_flight as usize - 1);
    let reader = (workload.acks != 0)
        .then(|| spawn_reader(plan, &connection, outstanding))
        .transpose()?;
    let capacity = (batch_size / message_size + 1).min(batch_size);
    let mut batch = OpenBatch {
        values: Vec::with_capacity(batch_size + message_size),
        stamps: Vec::with_capacity(capacity),
        opened: None,
    };
    let mut partition_index = 0usize;
    let mut next_slot = plan.first_slot;
    let mut planned_wake = plan.first_slot;
    let mut payload_at = 0usize;
    let pool_len = plan.payload.len() - message_size;
    let mut delays = latency::new_histogram();
    let send = |batch: &mut OpenBatch,
                partition_index: &mut usize,
                connection: &mut Connection|
     -> BenchResult<()> {
        let partition = plan.partitions[*partition_index % plan.partitions.len()];
        *partition_index += 1;
        let records = encode(&batch.values, message_size, workload.compression)?;
        let request = produce_request(&plan.topic, partition, workload.acks, records);
        let (correlation_id, frame) =
            connection.frame(ApiKey::Produce, PRODUCE_VERSION, &request)?;
        let stamps = std::mem::replace(&mut batch.stamps, Vec::with_capacity(capacity));
        if workload.acks == 0 {
            plan.meter
                .count(stamps.len() as u64, batch.values.len() as u64);
        } else {
            hand_over(&handoff, correlation_id, stamps, &plan.clock)?;
        }
        connection.send_frame(&frame)?;
        batch.values.clear();
        batch.opened = None;
        Ok(())
    };
    std::thread::sleep(plan.first_slot.saturating_duration_since(Instant::now()));
    let produced = (|| -> BenchResult<()> {
        loop {
            let now = Instant::now();
            if now >= plan.clock.end {
                break;
            }
            let intended = match plan.interval {
                None => now,
                Some(interval) if next_slot <= now => {
                    let slot = next_slot;
                    next_slot += interval;
                    slot
                }
                Some(interval) => {
                    let linger_end = batch.opened.map(|opened| opened + linger);
                    if linger_end.is_some_and(|end| end <= now) {
                        send(&mut batch, &mut partition_index, &mut connection)?;
                        continue;
                    }
                    let wake = batch
                        .must_go(linger, batch_size / message_size, next_slot, interval)
                        .unwrap_or(next_slot)
                        .min(plan.clock.end);
                    planned_wake = wake;
                    std::thread::sleep(wake.saturating_duration_since(now));
                    continue;
                }
            };
            if !batch.stamps.is_empty() && batch.values.len() + message_size > batch_size {
                send(&mut batch, &mut partition_index, &mut connection)?;
            }
            if intended >= plan.clock.measure {
                latency::record(
                    &mut delays,
                    now.saturating_duration_since(intended.max(planned_wake)),
                );
            }
            batch.take(
                plan.clock.stamp(intended),
                &plan.payload[payload_at..payload_at + message_size - STAMP_BYTES],
                now,
            );
            payload_at = (payload_at + 7_919) % pool_len;
        }
        if !batch.stamps.is_empty() {
            send(&mut batch, &mut partition_index, &mut connection)?;
        }
        Ok(())
    })();
    drop(handoff);
    plan.parts.add_delays(&delays);
    // The reader's error is the cause when both fail (the sender only sees
    // that the reader stopped), so it wins.
    let read = reader.map_or(Ok(()), |reader| {
        reader.join().expect("the acknowledgement reader panicked")
    });
    read.and(produced)
}

/// One batch of the `message_size`-byte values in `values`.
fn encode(values: &[u8], message_size: usize, codec: Codec) -> BenchResult<Bytes> {
    let timestamp = TimestampMs::now();
    if codec == Codec::None {
        let records: Vec<_> = values
            .chunks_exact(message_size)
            .map(|value| (None, Some(value)))
            .collect();
        return Ok(Bytes::from(build_batch(&records, timestamp, None)));
    }
    let records: Vec<OutgoingRecord> = values
        .chunks_exact(message_size)
        .map(|value| OutgoingRecord {
            key: None,
            value: Some(Bytes::copy_from_slice(value)),
            headers: Vec::new(),
        })
        .collect();
    Ok(encode_batch(&records, timestamp.0, codec)?)
}

/// Hands a request's stamps to the acknowledgement reader, waiting while
/// `maxInFlight` requests are outstanding, and stamps the request as
/// written: the caller writes it next.
fn hand_over(
    handoff: &SyncSender<Outstanding>,
    correlation_id: i32,
    stamps: Vec<u64>,
    clock: &Clock,
) -> BenchResult<()> {
    let written = Arc::new(AtomicU64::new(0));
    handoff
        .send(Outstanding {
            correlation_id,
            stamps,
            written: written.clone(),
        })
        .map_err(|_| crate::Error::Measurement("the acknowledgement reader stopped"))?;
    written.store(clock.stamp(Instant::now()), Ordering::Release);
    Ok(())
}

/// Starts the thread that reads `plan`'s acknowledgements on a clone of
/// `connection`.
fn spawn_reader(
    plan: &ProducerPlan,
    connection: &Connection,
    outstanding: Receiver<Outstanding>,
) -> BenchResult<std::thread::JoinHandle<BenchResult<()>>> {
    let connection = connection.try_clone()?;
    let (clock, meter, parts) = (plan.clock.clone(), plan.meter.clone(), plan.parts.clone());
    let message_size = u64::from(plan.workload.message_size);
    Ok(std::thread::spawn(move || {
        let mut requests = latency::new_histogram();
        let read = read_acknowledgements(
            connection,
            &outstanding,
            &clock,
            &meter,
            &mut requests,
            message_size,
        );
        parts.add_requests(&requests);
        read
    }))
}

/// Reads responses in order, recording each message's publish latency
/// from its stamp and, from the end of warm-up, its request's time from
/// written to acknowledged into `requests`.
fn read_acknowledgements(
    mut connection: Connection,
    outstanding: &Receiver<Outstanding>,
    clock: &Clock,
    meter: &Meter,
    requests: &mut Histogram<u64>,
    message_size: u64,
) -> BenchResult<()> {
    let measure = clock.stamp(clock.measure);
    while let Ok(request) = outstanding.recv() {
        let response: ProduceResponse = connection.receive_response(
            ApiKey::Produce,
            PRODUCE_VERSION,
            request.correlation_id,
        )?;
        let now = clock.stamp(Instant::now());
        produce_result(&response)?;
        meter.record(&request.stamps, now, message_size);
        let written = request.written.load(Ordering::Acquire);
        if written >= measure {
            let took = Duration::from_nanos(now.saturating_sub(written));
            for _ in &request.stamps {
                latency::record(requests, took);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_batch_must_go_when_its_linger_ends_or_it_would_overflow() {
        let opened = Instant::now();
        let mut batch = OpenBatch {
            values: Vec::new(),
            stamps: Vec::new(),
            opened: None,
        };
        let (linger, interval) = (Duration::from_millis(1), Duration::from_micros(10));
        assert_eq!(batch.must_go(linger, 64, opened, interval), None);
        for stamp in 0..4 {
            batch.take(stamp, &[0; 1016], opened);
        }
        // 60 more fit: the 61st, due 60 intervals after the next slot, overflows.
        let next_slot = opened + interval * 4;
        assert_eq!(
            batch.must_go(linger, 64, next_slot, interval),
            Some(next_slot + interval * 60)
        );
        // At a low rate the linger ends first.
        let slow = Duration::from_millis(1);
        assert_eq!(
            batch.must_go(linger, 64, next_slot, slow),
            Some(opened + linger)
        );
    }

    #[test]
    fn the_payload_is_as_random_as_asked() {
        let pool = payload_pool(100, 0.25, 10_000);
        assert_eq!(pool.len(), 10_100);
        for chunk in pool.chunks_exact(100) {
            assert!(chunk[25..].iter().all(|byte| *byte == 0));
            assert!(chunk[..25].iter().any(|byte| *byte != 0));
        }
        assert!(payload_pool(64, 0.0, 640).iter().all(|byte| *byte == 0));
    }

    #[test]
    fn batches_of_values_decode_with_every_codec() {
        let values: Vec<u8> = (0..=255u8).cycle().take(4 * 64).collect();
        for codec in [Codec::None, Codec::Lz4, Codec::Zstd] {
            let batch = encode(&values, 64, codec).unwrap();
            let records = fjord_tools::client::records::decode_fetched(&batch, 0).unwrap();
            assert_eq!(records.len(), 4, "{codec:?}");
            assert_eq!(records[3].value.as_deref(), Some(&values[192..]));
        }
    }
}
