//! Runs a workload: creates its topics, starts consumers then producers,
//! shows progress every second, and turns the meters into a report. Over a
//! cluster, every leader broker of a topic gets the workload's producers
//! and consumers for its partitions: `producersPerTopic` and
//! `consumerPerSubscription` count per topic and leader.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_tools::client::{Client, TopicSpec};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use super::consumer::{self, ConsumerPlan};
use super::producer::{self, payload_pool, ProducerPlan};
use super::report::{Figures, RunReport, SeriesPoint};
use super::{RunArgs, Workload};
use crate::engine::BenchResult;
use crate::latency::{self, LatencySummary};
use crate::wire::{by_leader, produce::partitions_of_producer, CLIENT_ID};

/// Bytes of the payload pool values are cut from.
const PAYLOAD_POOL_BYTES: usize = 4 << 20;
/// Time for every client to connect before the first message.
const START_DELAY: Duration = Duration::from_millis(500);
/// How long consumers keep reading after producers stop.
const DRAIN: Duration = Duration::from_secs(3);
/// Progress and throughput-series sampling period.
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// The run's timeline, shared by every thread. Stamps are nanoseconds since
/// `epoch`, so producers and consumers compare them without clock sync.
#[derive(Clone, Debug)]
pub struct Clock {
    /// Stamps count from here.
    pub epoch: Instant,
    /// First message.
    pub start: Instant,
    /// Measuring starts (end of warm-up).
    pub measure: Instant,
    /// Producers stop.
    pub end: Instant,
    /// Consumers stop.
    pub drained: Instant,
}

impl Clock {
    /// `at` as nanoseconds since the epoch.
    #[must_use]
    pub fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The two parts of a publish latency that say where it went, each
/// recorded once per message from the end of warm-up: the *delay* from
/// when the producer planned to take a message (its schedule slot, or the
/// later wake it planned for the message's batch) to when it did (the
/// `OpenMessaging` Benchmark's publish delay: how far the load generator
/// fell behind its own schedule), and the *request* time from its request being written to
/// the socket to the acknowledgement (the broker, the network and the
/// reader thread). What remains of the publish latency is the batch
/// filling (`lingerMs`) and the wait for a request slot (`maxInFlight`).
/// Each thread keeps its own histogram and adds it here once, at its end.
pub struct PublishParts {
    delay: Mutex<Histogram<u64>>,
    request: Mutex<Histogram<u64>>,
}

impl Default for PublishParts {
    fn default() -> Self {
        Self {
            delay: Mutex::new(latency::new_histogram()),
            request: Mutex::new(latency::new_histogram()),
        }
    }
}

impl PublishParts {
    /// Adds one producer thread's delays.
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    pub fn add_delays(&self, delays: &Histogram<u64>) {
        add_histogram(&self.delay, delays);
    }

    /// Adds one acknowledgement reader's request times.
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    pub fn add_requests(&self, requests: &Histogram<u64>) {
        add_histogram(&self.request, requests);
    }

    /// The delay and request summaries.
    ///
    /// # Panics
    /// If another thread panicked while holding a histogram.
    #[must_use]
    pub fn summaries(&self) -> (LatencySummary, LatencySummary) {
        let of = |histogram: &Mutex<Histogram<u64>>| {
            LatencySummary::of(&histogram.lock().expect("publish parts lock"))
        };
        (of(&self.delay), of(&self.request))
    }
}

fn add_histogram(total: &Mutex<Histogram<u64>>, part: &Histogram<u64>) {
    total
        .lock()
        .expect("publish parts lock")
        .add(part)
        .expect("histograms of the same bounds add");
}

/// Counts and a latency histogram that many threads add to.
pub struct Meter {
    messages: AtomicU64,
    bytes: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
}

impl Default for Meter {
    fn default() -> Self {
        Self {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            histogram: Mutex::new(latency::new_histogram()),
        }
    }
}

impl Meter {
    /// Counts messages that have no latency (`acks=0`).
    pub fn count(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `stamps.len()` messages of `message_size` bytes and records
    /// `now - stamp` for each.
    pub fn record(&self, stamps: &[u64], now: u64, message_size: u64) {
        self.record_bytes(stamps, now, stamps.len() as u64 * message_size);
    }

    /// Counts `stamps.len()` messages of `bytes` in all and records
    /// `now - stamp` for each.
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    pub fn record_bytes(&self, stamps: &[u64], now: u64, bytes: u64) {
        {
            let mut histogram = self.histogram.lock().expect("meter lock");
            for stamp in stamps {
                latency::record(
                    &mut histogram,
                    Duration::from_nanos(now.saturating_sub(*stamp)),
                );
            }
        }
        self.count(stamps.len() as u64, bytes);
    }

    /// Messages and bytes so far.
    #[must_use]
    pub fn totals(&self) -> (u64, u64) {
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Forgets the latencies recorded so far (end of warm-up).
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    pub fn reset_latency(&self) {
        self.histogram.lock().expect("meter lock").reset();
    }

    /// A copy of the histogram.
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    #[must_use]
    pub fn histogram(&self) -> Histogram<u64> {
        self.histogram.lock().expect("meter lock").clone()
    }

    /// The p99 so far, in milliseconds.
    ///
    /// # Panics
    /// If another thread panicked while holding the histogram.
    #[must_use]
    pub fn p99_ms(&self) -> f64 {
        self.histogram
            .lock()
            .expect("meter lock")
            .value_at_quantile(0.99) as f64
            / 1e6
    }
}

/// Runs `fjord-bench run`: the workload, then its report printed and
/// written to the output directory.
///
/// # Errors
/// An invalid workload, connection, protocol or broker errors, or files
/// that cannot be written.
///
/// # Panics
/// If a producer or consumer thread panics.
pub fn run(args: &RunArgs) -> BenchResult<RunReport> {
    let workload = Arc::new(args.workload()?);
    let mut client = Client::connect(&args.bootstrap_server, CLIENT_ID)?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let topics: Vec<String> = (0..workload.topics)
        .map(|index| format!("{}-{run_id}-{index}", workload.name))
        .collect();
    let spec = TopicSpec {
        partitions: i32::try_from(workload.partitions_per_topic)?,
        replication_factor: workload.replication_factor,
        configs: Vec::new(),
    };
    if workload.use_consumer_group {
        client.supports_groups()?;
    }
    let mut leaders = Vec::new();
    for topic in &topics {
        client.create_topic(topic, &spec, false)?;
        leaders.push(client.partition_leaders(topic, None)?);
    }
    let result = drive(&workload, &topics, &leaders);
    if !args.keep_topics {
        client.delete_topics(&topics)?;
    }
    let report = result?;
    report.print();
    report.write(&args.output_dir)?;
    Ok(report)
}

/// The partitions of one topic that one broker leads, and the producer
/// and consumer threads that load them.
struct LoadGroup {
    topic: String,
    address: String,
    partitions: Vec<i32>,
    producers: usize,
    consumers: usize,
}

/// Each leader broker of each topic with its partitions: a run over a
/// cluster gives every leader the workload's producers and consumers (one
/// connection each), a leader with fewer partitions one per partition.
///
/// # Errors
/// A consumer group over partitions of several leaders (its members fetch
/// from one broker).
fn load_groups(
    workload: &Workload,
    topics: &[String],
    leaders: &[Vec<fjord_tools::client::PartitionLeader>],
) -> BenchResult<Vec<LoadGroup>> {
    let mut groups = Vec::new();
    for (topic, leaders) in topics.iter().zip(leaders) {
        let by_leader = by_leader(leaders);
        if workload.use_consumer_group && by_leader.len() > 1 {
            return Err(crate::Error::Measurement(
                "a consumer group spans the partitions of one broker per run",
            ));
        }
        for (address, partitions) in by_leader {
            let threads = |wanted: u32| {
                usize::try_from(wanted)
                    .unwrap_or(usize::MAX)
                    .min(partitions.len())
            };
            groups.push(LoadGroup {
                topic: topic.clone(),
                producers: threads(workload.producers_per_topic),
                consumers: threads(workload.consumer_per_subscription),
                address,
                partitions,
            });
        }
    }
    Ok(groups)
}

/// Every thread's plan, the sampling loop, and the figures.
fn drive(
    workload: &Arc<Workload>,
    topics: &[String],
    leaders: &[Vec<fjord_tools::client::PartitionLeader>],
) -> BenchResult<RunReport> {
    let epoch = Instant::now();
    let start = epoch + START_DELAY;
    let measure = start + Duration::from_secs(workload.warmup_duration_seconds.into());
    let end = measure + Duration::from_secs(workload.test_duration_seconds.into());
    let clock = Clock {
        epoch,
        start,
        measure,
        end,
        drained: end + DRAIN,
    };
    let publish = Arc::new(Meter::default());
    let publish_parts = Arc::new(PublishParts::default());
    let end_to_end = Arc::new(Meter::default());
    let payload = Arc::new(payload_pool(
        workload.message_size as usize,
        workload.payload_randomness,
        PAYLOAD_POOL_BYTES,
    ));
    let groups = load_groups(workload, topics, leaders)?;
    let producers_total: usize = groups.iter().map(|group| group.producers).sum();
    let producers_total = u32::try_from(producers_total).unwrap_or(u32::MAX);
    let interval = (workload.producer_rate > 0).then(|| {
        Duration::from_secs_f64(f64::from(producers_total) / workload.producer_rate as f64)
    });
    let mut consumers = Vec::new();
    let mut producers = Vec::new();
    for group in &groups {
        let (topic, address, partitions) = (&group.topic, &group.address, &group.partitions);
        let count = group.consumers;
        for index in 0..count {
            let plan = ConsumerPlan {
                address: address.clone(),
                topic: topic.clone(),
                partitions: partitions_of_producer(index, count, partitions),
                group: workload
                    .use_consumer_group
                    .then(|| format!("{topic}-subscription")),
                clock: clock.clone(),
                meter: end_to_end.clone(),
            };
            consumers.push(std::thread::spawn(move || consumer::run(&plan)));
        }
        let count = group.producers;
        for index in 0..count {
            let stagger = interval.map_or(Duration::ZERO, |interval| {
                interval.mul_f64(producers.len() as f64 / f64::from(producers_total))
            });
            let plan = ProducerPlan {
                address: address.clone(),
                topic: topic.clone(),
                partitions: partitions_of_producer(index, count, partitions),
                workload: workload.clone(),
                clock: clock.clone(),
                interval,
                first_slot: start + stagger,
                payload: payload.clone(),
                meter: publish.clone(),
                parts: publish_parts.clone(),
            };
            producers.push(std::thread::spawn(move || producer::run(&plan)));
        }
    }
    let series = sample(&clock, &publish, &end_to_end);
    let publish_window = series.window;
    let mut failures = Vec::new();
    for thread in producers.into_iter().chain(consumers) {
        if let Err(error) = thread.join().expect("a load thread panicked") {
            failures.push(error);
        }
    }
    let failed = failures.len();
    if let Some(first) = failures.into_iter().next() {
        return Err(crate::Error::LoadThreads {
            failed,
            first: Box::new(first),
        });
    }
    let seconds = (clock.end - clock.measure).as_secs_f64();
    let mut report = RunReport::new(
        workload,
        Figures::new(publish_window.publish, seconds, &publish.histogram()),
        Figures::new(publish_window.end_to_end, seconds, &end_to_end.histogram()),
        series.points,
    );
    (report.publish_delay, report.publish_request) = publish_parts.summaries();
    Ok(report)
}

/// Messages and bytes counted inside the measured window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Published (acknowledged) in the window.
    pub publish: (u64, u64),
    /// Consumed in the window.
    pub end_to_end: (u64, u64),
}

/// What the sampling loop saw.
struct Sampled {
    window: Window,
    points: Vec<SeriesPoint>,
}

/// Samples the meters every second until the producers stop: the progress
/// line, the throughput series, and the counts at the measured window's
/// edges. Latencies recorded during warm-up are dropped at its end.
fn sample(clock: &Clock, publish: &Meter, end_to_end: &Meter) -> Sampled {
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"),
    );
    let mut points = Vec::new();
    let mut at_measure = None;
    let mut last = (Instant::now(), publish.totals(), end_to_end.totals());
    loop {
        let now = Instant::now();
        if at_measure.is_none() && now >= clock.measure {
            publish.reset_latency();
            end_to_end.reset_latency();
            at_measure = Some((publish.totals(), end_to_end.totals()));
        }
        if now >= clock.end {
            break;
        }
        let wake = (now + SAMPLE_PERIOD)
            .min(clock.end)
            .min(if at_measure.is_none() {
                clock.measure
            } else {
                clock.end
            });
        std::thread::sleep(wake.saturating_duration_since(now));
        let now = Instant::now();
        let (published, consumed) = (publish.totals(), end_to_end.totals());
        let seconds = (now - last.0).as_secs_f64().max(1e-9);
        let point = SeriesPoint {
            seconds: (now.saturating_duration_since(clock.start)).as_secs_f64(),
            warmup: now < clock.measure,
            publish_msgs_per_sec: (published.0 - last.1 .0) as f64 / seconds,
            publish_mb_per_sec: (published.1 - last.1 .1) as f64 / seconds / 1e6,
            consume_msgs_per_sec: (consumed.0 - last.2 .0) as f64 / seconds,
        };
        progress.set_message(format!(
            "{} publish {:.0} msg/s {:.1} MB/s p99 {:.2} ms | consume {:.0} msg/s e2e p99 {:.2} ms",
            if point.warmup { "warm-up" } else { "measure" },
            point.publish_msgs_per_sec,
            point.publish_mb_per_sec,
            publish.p99_ms(),
            point.consume_msgs_per_sec,
            end_to_end.p99_ms()
        ));
        progress.tick();
        points.push(point);
        last = (now, published, consumed);
    }
    progress.finish_and_clear();
    let (publish_at, end_to_end_at) = at_measure.unwrap_or_default();
    let (publish_end, end_to_end_end) = (publish.totals(), end_to_end.totals());
    Sampled {
        window: Window {
            publish: (publish_end.0 - publish_at.0, publish_end.1 - publish_at.1),
            end_to_end: (
                end_to_end_end.0 - end_to_end_at.0,
                end_to_end_end.1 - end_to_end_at.1,
            ),
        },
        points,
    }
}
