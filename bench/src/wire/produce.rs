//! `fjord-bench produce`: Produce requests over TCP at full speed.
//!
//! Each producer thread owns one connection and a share of the partitions
//! (thread `t` of `n` writes partitions `t, t + n, ...`), and sends one full
//! batch per Produce request, cycling over its partitions, as a client whose
//! `batch.size` is `--batch-bytes` and whose linger always fills the batch.
//! Up to `--in-flight` requests are outstanding per connection; responses
//! are read in order. The batch is built once per run (uncompressed, no
//! producer id, so the broker accepts it again and again) and each request
//! frame is encoded once per partition, only its correlation id rewritten
//! per send, so the client spends its CPU on the socket, not on encoding.
//!
//! A latency sample is one request: written to the socket until its
//! response is read. With `--acks 0` the broker sends no response, so there
//! are no samples and the throughput is what the socket accepted.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use serde::Serialize;

use fjord_tools::client::connection::{encode_request, set_correlation_id};
use fjord_tools::client::{
    produce_request, produce_result, Connection, TopicSpec, PRODUCE_VERSION,
};

use super::{partition_leaders, single_leader, ClientArgs, CLIENT_ID};
use crate::engine::{megabytes_per_second, parse_bytes, write_json, BenchResult};
use crate::latency::{self, LatencySummary};
use crate::workload;

/// Options of `fjord-bench produce`.
#[derive(clap::Args, Clone, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Replication factor of the topic when it has to be created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Bytes of each record's value.
    #[arg(long, default_value = "1024", value_parser = parse_bytes)]
    pub record_bytes: u64,
    /// Largest batch: each request carries one batch of as many records as
    /// fit.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,
    /// Producer threads, one connection each.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// `acks`: 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub acks: i16,
    /// Produce requests outstanding per connection.
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Stop after sending this many batch bytes (rounded up to whole
    /// batches per producer). Default 1GiB unless `--duration-secs` is given.
    #[arg(long, value_parser = parse_bytes, conflicts_with = "duration_secs")]
    pub total_bytes: Option<u64>,
    /// Stop after this many seconds instead.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of a produce run.
#[derive(Clone, Debug, Serialize)]
pub struct ProduceReport {
    pub bootstrap_server: String,
    pub topic: String,
    pub partitions: usize,
    pub producers: usize,
    pub acks: i16,
    pub in_flight: usize,
    pub record_bytes: u64,
    /// Size of the batch every request carries.
    pub batch_bytes: usize,
    pub records_per_batch: u64,
    /// Batch bytes sent (and acknowledged unless `acks` is 0).
    pub bytes: u64,
    pub records: u64,
    pub requests: u64,
    pub seconds: f64,
    pub megabytes_per_second: f64,
    pub records_per_second: f64,
    /// Request latency (sent to response read); `None` with `acks=0`.
    pub latency: Option<LatencySummary>,
}

impl ProduceReport {
    /// Prints the report as text.
    pub fn print(&self) {
        println!(
            "produce {} -> {}: {} partitions, {} producers, acks={}, in-flight {}, \
             {} B batches of {} x {} B records",
            self.bootstrap_server,
            self.topic,
            self.partitions,
            self.producers,
            self.acks,
            self.in_flight,
            self.batch_bytes,
            self.records_per_batch,
            self.record_bytes
        );
        println!(
            "  {} bytes in {:.2} s: {:.1} MB/s, {:.0} msg/s",
            self.bytes, self.seconds, self.megabytes_per_second, self.records_per_second
        );
        if let Some(latency) = &self.latency {
            println!("  publish latency: {latency}");
        }
    }
}

/// The partitions producer `producer` of `producers` writes: every
/// `producers`-th one from its own index, or, with more producers than
/// partitions, the single one it wraps onto.
///
/// # Panics
/// If `producer` is not below `producers`.
#[must_use]
pub fn partitions_of_producer(producer: usize, producers: usize, partitions: &[i32]) -> Vec<i32> {
    assert!(
        producers > 0 && producer < producers,
        "producer index in range"
    );
    if partitions.is_empty() {
        return Vec::new();
    }
    if producers >= partitions.len() {
        return vec![partitions[producer % partitions.len()]];
    }
    partitions
        .iter()
        .skip(producer)
        .step_by(producers)
        .copied()
        .collect()
}

/// Records in a batch from [`workload::batch`]: the batch header's record
/// count (big-endian i32 at byte 57).
///
/// # Panics
/// If `batch` is shorter than a batch header.
#[must_use]
pub fn batch_record_count(batch: &[u8]) -> u64 {
    let count = i32::from_be_bytes(batch[57..61].try_into().expect("4 bytes"));
    u64::try_from(count).unwrap_or(0)
}

/// When a producer stops.
#[derive(Clone, Debug)]
enum Budget {
    /// After the batch bytes claimed from a shared counter reach the total.
    Bytes { claimed: Arc<AtomicU64>, total: u64 },
    /// At a deadline, set when every producer has connected.
    Duration(Duration),
}

struct ProducerOutcome {
    started: Instant,
    finished: Instant,
    bytes: u64,
    requests: u64,
    histogram: Histogram<u64>,
}

/// Runs `fjord-bench produce` and prints the result.
///
/// # Errors
/// Connection, protocol, or broker errors (any partition error fails the
/// run: its figures would be wrong).
pub fn run(args: &ProduceArgs) -> BenchResult<ProduceReport> {
    if args.record_bytes == 0 || args.producers == 0 || args.in_flight == 0 {
        return Err(crate::Error::Usage(
            "--record-bytes, --producers and --in-flight must be positive",
        ));
    }
    if ![0, 1, -1].contains(&args.acks) {
        return Err(crate::Error::Usage("--acks is 0, 1 or -1"));
    }
    let leaders = partition_leaders(
        &args.client,
        Some(&TopicSpec {
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            configs: Vec::new(),
        }),
    )?;
    let address = single_leader(&leaders)?;
    let partitions: Vec<i32> = leaders.iter().map(|leader| leader.partition).collect();
    let batch = workload::batch(
        usize::try_from(args.record_bytes)?,
        usize::try_from(args.batch_bytes)?,
    );
    let records_per_batch = batch_record_count(&batch);
    let batch_bytes = batch.len() as u64;
    let budget = match (args.total_bytes, args.duration_secs) {
        (_, Some(seconds)) => Budget::Duration(Duration::try_from_secs_f64(seconds)?),
        (total, None) => Budget::Bytes {
            claimed: Arc::new(AtomicU64::new(0)),
            total: total.unwrap_or(1 << 30),
        },
    };
    let start_line = Arc::new(Barrier::new(args.producers));
    let producers: Vec<_> = (0..args.producers)
        .map(|producer| {
            let frames = partitions_of_producer(producer, args.producers, &partitions)
                .into_iter()
                .map(|partition| produce_frame(&args.client.topic, partition, args.acks, &batch))
                .collect::<BenchResult<Vec<_>>>();
            let address = address.clone();
            let budget = budget.clone();
            let start_line = start_line.clone();
            let (acks, in_flight) = (args.acks, args.in_flight);
            std::thread::spawn(move || -> BenchResult<ProducerOutcome> {
                let connection = Connection::open(&address, CLIENT_ID);
                start_line.wait();
                let plan = Plan {
                    frames: frames?,
                    batch_bytes,
                    acks,
                    in_flight,
                    budget,
                };
                produce(&mut connection?, plan)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for producer in producers {
        outcomes.push(
            producer
                .join()
                .map_err(|_| crate::Error::Measurement("a producer thread panicked"))??,
        );
    }
    let started = outcomes.iter().map(|outcome| outcome.started).min();
    let finished = outcomes.iter().map(|outcome| outcome.finished).max();
    let seconds = match (started, finished) {
        (Some(started), Some(finished)) => (finished - started).as_secs_f64(),
        _ => 0.0,
    };
    let mut histogram = latency::new_histogram();
    for outcome in &outcomes {
        histogram.add(&outcome.histogram)?;
    }
    let bytes: u64 = outcomes.iter().map(|outcome| outcome.bytes).sum();
    let requests: u64 = outcomes.iter().map(|outcome| outcome.requests).sum();
    let records = requests * records_per_batch;
    let report = ProduceReport {
        bootstrap_server: args.client.bootstrap_server.clone(),
        topic: args.client.topic.clone(),
        partitions: partitions.len(),
        producers: args.producers,
        acks: args.acks,
        in_flight: args.in_flight,
        record_bytes: args.record_bytes,
        batch_bytes: batch.len(),
        records_per_batch,
        bytes,
        records,
        requests,
        seconds,
        megabytes_per_second: megabytes_per_second(bytes, seconds),
        records_per_second: records as f64 / seconds,
        latency: (args.acks != 0).then(|| LatencySummary::of(&histogram)),
    };
    report.print();
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

/// A sized Produce request of `batch` for one partition.
fn produce_frame(topic: &str, partition: i32, acks: i16, batch: &Bytes) -> BenchResult<BytesMut> {
    let request = produce_request(topic, partition, acks, batch.clone());
    Ok(encode_request(
        ApiKey::Produce,
        PRODUCE_VERSION,
        0,
        CLIENT_ID,
        &request,
    )?)
}

/// One producer's work.
struct Plan {
    /// One encoded request per partition, sent in turn.
    frames: Vec<BytesMut>,
    batch_bytes: u64,
    acks: i16,
    in_flight: usize,
    budget: Budget,
}

/// A request sent and not yet answered.
struct Outstanding {
    correlation_id: i32,
    sent: Instant,
}

fn produce(connection: &mut Connection, mut plan: Plan) -> BenchResult<ProducerOutcome> {
    let mut histogram = latency::new_histogram();
    let mut outstanding: VecDeque<Outstanding> = VecDeque::with_capacity(plan.in_flight);
    let started = Instant::now();
    let deadline = match plan.budget {
        Budget::Duration(duration) => Some(started + duration),
        Budget::Bytes { .. } => None,
    };
    let (mut bytes, mut requests) = (0u64, 0u64);
    for next in (0..plan.frames.len()).cycle() {
        let more = match (&plan.budget, deadline) {
            (_, Some(deadline)) => Instant::now() < deadline,
            (Budget::Bytes { claimed, total }, None) => {
                claimed.fetch_add(plan.batch_bytes, Ordering::Relaxed) < *total
            }
            (Budget::Duration(_), None) => unreachable!("a duration sets a deadline"),
        };
        if !more {
            break;
        }
        while outstanding.len() >= plan.in_flight {
            receive(connection, &mut outstanding, &mut histogram)?;
        }
        let correlation_id = connection.take_correlation_id();
        let frame = &mut plan.frames[next];
        set_correlation_id(frame, correlation_id);
        let sent = Instant::now();
        connection.send_frame(frame)?;
        if plan.acks != 0 {
            outstanding.push_back(Outstanding {
                correlation_id,
                sent,
            });
        }
        bytes += plan.batch_bytes;
        requests += 1;
    }
    while !outstanding.is_empty() {
        receive(connection, &mut outstanding, &mut histogram)?;
    }
    Ok(ProducerOutcome {
        started,
        finished: Instant::now(),
        bytes,
        requests,
        histogram,
    })
}

/// Reads the oldest outstanding request's response and records its latency.
fn receive(
    connection: &mut Connection,
    outstanding: &mut VecDeque<Outstanding>,
    histogram: &mut Histogram<u64>,
) -> BenchResult<()> {
    let request = outstanding
        .pop_front()
        .ok_or(crate::Error::Measurement("no request outstanding"))?;
    let response: ProduceResponse =
        connection.receive_response(ApiKey::Produce, PRODUCE_VERSION, request.correlation_id)?;
    latency::record(histogram, request.sent.elapsed());
    produce_result(&response)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use fjord_engine::batch::build_batch;
    use fjord_engine::TimestampMs;

    use super::*;

    #[test]
    fn producers_split_the_partitions_between_them() {
        let partitions = [0, 1, 2, 3, 4];
        assert_eq!(partitions_of_producer(0, 2, &partitions), [0, 2, 4]);
        assert_eq!(partitions_of_producer(1, 2, &partitions), [1, 3]);
        assert_eq!(partitions_of_producer(0, 1, &partitions), partitions);
        assert_eq!(partitions_of_producer(6, 7, &partitions), [1]);
        assert!(partitions_of_producer(0, 1, &[]).is_empty());
    }

    /// A batch holds as many records as fit in `batch_bytes` and no more,
    /// and at least one even when a single record is larger.
    #[test]
    fn a_batch_is_filled_up_to_batch_bytes() {
        for (record_bytes, batch_bytes) in [(1024, 64 << 10), (100, 16 << 10), (1000, 1000)] {
            let batch = workload::batch(record_bytes, batch_bytes);
            let count = batch_record_count(&batch);
            assert!(count >= 1);
            if count > 1 {
                assert!(
                    batch.len() <= batch_bytes,
                    "{record_bytes} in {batch_bytes}"
                );
            }
            let value = vec![7u8; record_bytes];
            let one_more: Vec<_> = (0..=count).map(|_| (None, Some(&value[..]))).collect();
            let bigger = build_batch(&one_more, TimestampMs(0), None);
            assert!(
                bigger.len() > batch_bytes,
                "{count} records is not the most"
            );
        }
        assert_eq!(batch_record_count(&workload::batch(1024, 64 << 10)), 63);
    }
}
