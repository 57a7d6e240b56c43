//! Shards: one pinned glommio executor per core, each the only owner of its
//! partitions.
//!
//! A partition's shard is a pure function of its topic, partition index and
//! the shard count ([`shard_for`]), so every shard can route any request
//! without asking anyone. A [`Shard`] handle serves every partition
//! operation: work for its own partitions runs in place, work for another
//! shard's travels over glommio's channel mesh as a [`Request`] and comes
//! back as a [`Response`]. No lock is shared between cores.
//!
//! Background work (retention, `flush.ms`) runs in a task queue with a tenth
//! of the foreground's shares, so it yields to appends and reads.
//!
//! Shutdown: when the shard's main future ends, the shard closes its
//! partitions cleanly (flush, seal, checkpoint) and then keeps answering its
//! peers (with [`Error::ShuttingDown`]) until every peer has finished too.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{
    executor, Latency, LocalExecutorBuilder, Placement, PoolPlacement, Shares, TaskQueueHandle,
};

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::log::admission::AdmissionTicket;
use crate::log::read_ahead::{ReadAheadBudget, READ_AHEAD_BYTES_MAX};
use crate::log::{AppendInfo, LogOffsets, PartitionLog, ReadResult, ZeroCopyRead};
use crate::storage::dma::DmaStorage;
use crate::types::{LeaderEpoch, Offset, TimestampMs, TopicPartition};

/// Messages in flight between two shards, per direction.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;

/// Threads of each shard's blocking pool (`spawn_blocking`), pinned to the
/// shard's CPU. The broker sends segment file ranges with a blocking
/// `sendfile` there, and persists controller changes (topic creation,
/// producer id blocks) with fsync there; several threads keep one slowly
/// reading client from holding up every other connection's cold reads, and
/// the controller's writes, on the shard.
pub const BLOCKING_THREADS_PER_SHARD: usize = 4;

/// How long a shard runs tasks before it looks at its I/O completions and
/// at messages from other shards again. glommio's default (100 ms) let one
/// connection's multi-megabyte Fetch response, written with sends that
/// never block on loopback, hold every append on the core for 5-10 ms;
/// 250 us bounds that wait at a few percent of produce throughput
/// (measured in `bench/RESULTS.md`).
pub const PREEMPT_TIMER: Duration = Duration::from_micros(250);

/// Shares of the consumer-read task queue: the same as glommio's default
/// queue, where appends and every other request run, so that a core both
/// kinds keep busy splits evenly and a tailing consumer keeps up with its
/// producers. What keeps appends quick is that a woken queue runs first
/// (vendor/glommio/FJORD-PATCHES.md); 100 shares measured no better.
pub const CONSUMER_READ_SHARES: usize = 1000;

/// A partition that takes longer to open at start is named in a warning, so
/// that a slow start (a long recovery scan, a slow disk) says where it went.
const SLOW_PARTITION_OPEN: Duration = Duration::from_secs(1);

/// Bytes each shard may hold read ahead for readers catching up from disk
/// (`log::read_ahead`): eight partitions' worth of the largest chunk.
pub const READ_AHEAD_BYTES_PER_SHARD: usize = 8 * READ_AHEAD_BYTES_MAX;

/// How long a chunk read ahead waits for its reader's next fetch before it
/// is dropped; consumers that keep fetching come back within milliseconds.
pub const READ_AHEAD_UNCLAIMED: Duration = Duration::from_secs(2);

/// The shard that owns `partition` among `shard_count` shards: a stable hash
/// of the topic name plus the partition index, so a topic's partitions
/// spread round-robin over the shards.
///
/// # Panics
/// If `shard_count` is 0.
#[must_use]
pub fn shard_for(partition: &TopicPartition, shard_count: usize) -> usize {
    assert!(shard_count > 0, "an engine has at least one shard");
    let topic_hash = u64::from(crc32c::crc32c(partition.topic.as_bytes()));
    ((topic_hash + u64::from(partition.partition.unsigned_abs())) % shard_count as u64) as usize
}

/// How the engine runs.
#[derive(Clone)]
pub struct EngineConfig {
    /// Where partition directories live (Kafka's `log.dirs`, one directory).
    pub data_dir: PathBuf,
    /// Number of shards; shard `i` is pinned to the `i`-th online CPU.
    pub shards: usize,
    /// Bytes of recent batches each shard caches for tail reads.
    pub cache_bytes_per_shard: usize,
    /// Memory each shard's io_uring registers for DMA buffers.
    pub io_memory_bytes: usize,
    /// How often retention runs (`log.retention.check.interval.ms`).
    pub retention_check_interval: Duration,
    /// How often `flush.ms` is checked (`log.flush.scheduler.interval.ms`).
    pub flush_check_interval: Duration,
    /// How often each partition's recovery point moves up to its flushed
    /// offset (`log.flush.offset.checkpoint.interval.ms`), bounding what a
    /// restart after a crash must scan.
    pub recovery_checkpoint_interval: Duration,
    /// The log cleaner (`log.cleaner.*`).
    pub cleaner: CleanerConfig,
    /// The configuration each existing partition opens with at start.
    pub log_config_for: Arc<dyn Fn(&TopicPartition) -> LogConfig + Send + Sync>,
}

/// The log cleaner of each shard, under Kafka's broker key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// Each shard's offset-map budget: its share of
    /// `log.cleaner.dedupe.buffer.size`.
    pub dedupe_buffer_bytes_per_shard: usize,
    /// `log.cleaner.backoff.ms`: how long a shard's cleaner sleeps when no
    /// log needs cleaning.
    pub backoff: Duration,
}

impl Default for CleanerConfig {
    /// Kafka's defaults: enabled, 128 MiB of offset map (for one shard),
    /// 15 s backoff.
    fn default() -> Self {
        Self {
            enabled: true,
            dedupe_buffer_bytes_per_shard: 128 << 20,
            backoff: Duration::from_secs(15),
        }
    }
}

impl EngineConfig {
    /// Defaults for `data_dir` with one shard per online CPU.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            shards: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            cache_bytes_per_shard: 64 << 20,
            io_memory_bytes: 8 << 20,
            retention_check_interval: Duration::from_secs(300),
            flush_check_interval: Duration::from_secs(1),
            recovery_checkpoint_interval: Duration::from_secs(60),
            cleaner: CleanerConfig::default(),
            log_config_for: Arc::new(|_| LogConfig::default()),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("data_dir", &self.data_dir)
            .field("shards", &self.shards)
            .field("cache_bytes_per_shard", &self.cache_bytes_per_shard)
            .finish_non_exhaustive()
    }
}

/// Which offset ListOffsets asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset (`-2`).
    Earliest,
    /// The log end offset, or high watermark for consumers (`-1`).
    Latest,
    /// The record with the greatest timestamp (`-3`, KIP-734).
    MaxTimestamp,
    /// The first record with timestamp `>=` this.
    Timestamp(TimestampMs),
}

/// An append and what must happen before it is acknowledged.
#[derive(Debug)]
pub struct AppendRequest {
    /// The partition.
    pub partition: TopicPartition,
    /// The record batches one request carries for the partition, as the
    /// producer sent them: appended together or not at all.
    pub batches: Vec<Bytes>,
    /// The leader epoch to stamp into the batch.
    pub leader_epoch: LeaderEpoch,
    /// Acknowledge only once flushed (`acks=all` on a single replica).
    pub flush: bool,
    /// Move the high watermark to the batch's end once acknowledged (the
    /// partition has no other replica to wait for).
    pub advance_high_watermark: bool,
}

/// A partition operation, runnable on the owning shard.
#[derive(Debug)]
pub enum Request {
    /// Create (or open) a partition with a config.
    Create(TopicPartition, LogConfig),
    /// Delete a partition and its data.
    Delete(TopicPartition),
    /// Append a request's batches as leader.
    Append(AppendRequest),
    /// Wait (up to a timeout) until the log end passes an offset.
    WaitForData {
        /// The partition.
        partition: TopicPartition,
        /// Wake once the log end is beyond this offset.
        offset: Offset,
        /// Give up after this long.
        timeout: Duration,
        /// Wait for the high watermark (consumers) rather than the log end.
        committed: bool,
    },
    /// Read batches from an offset up to a byte limit and an upper bound.
    Read {
        /// The partition.
        partition: TopicPartition,
        /// First offset wanted.
        offset: Offset,
        /// Byte limit (at least one batch is returned).
        max_bytes: usize,
        /// No batch ending past this offset is returned.
        upper_bound: Offset,
        /// Also stop at the high watermark (consumers read only committed
        /// data).
        committed: bool,
    },
    /// Read for a consumer without copying: batches up to the high
    /// watermark as cached `Bytes` or a verified file range to send.
    ReadZeroCopy {
        /// The partition.
        partition: TopicPartition,
        /// First offset wanted.
        offset: Offset,
        /// Byte limit (at least one batch is returned).
        max_bytes: usize,
    },
    /// Flush everything appended so far.
    Flush(TopicPartition),
    /// The partition's offsets.
    Offsets(TopicPartition),
    /// ListOffsets.
    ListOffset(TopicPartition, OffsetQuery),
    /// Move the high watermark up.
    AdvanceHighWatermark(TopicPartition, Offset),
    /// DeleteRecords.
    DeleteRecords(TopicPartition, Offset),
    /// Truncate the log to an offset (followers).
    TruncateTo(TopicPartition, Offset),
    /// Replace the partition's config.
    SetConfig(TopicPartition, LogConfig),
    /// OffsetForLeaderEpoch.
    EndOffsetForEpoch(TopicPartition, LeaderEpoch),
    /// Run retention now on every partition of the shard.
    EnforceRetention,
    /// The partition's size on disk (for `DescribeLogDirs`).
    Size(TopicPartition),
    /// The partitions the shard owns.
    ListPartitions,
}

impl Request {
    /// Whether this request serves a consumer's Fetch (runs in the
    /// consumer-read task queue; see [`Shard::spawn_consumer_read`]).
    #[must_use]
    pub fn is_consumer_read(&self) -> bool {
        matches!(
            self,
            Request::ReadZeroCopy { .. }
                | Request::WaitForData {
                    committed: true,
                    ..
                }
        )
    }
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub enum Response {
    /// Nothing to return.
    Done,
    /// From [`Request::Append`].
    Appended(AppendInfo),
    /// From [`Request::Read`].
    Read(ReadResult),
    /// From [`Request::ReadZeroCopy`].
    ZeroCopy(ZeroCopyRead),
    /// An offset (flush, truncate, delete records).
    Offset(Offset),
    /// From [`Request::Offsets`].
    Offsets(LogOffsets),
    /// From [`Request::ListOffset`] and [`Request::EndOffsetForEpoch`].
    Found(Option<(Offset, i64)>),
    /// From [`Request::ListPartitions`].
    Partitions(Vec<TopicPartition>),
    /// From [`Request::EnforceRetention`]: segments deleted.
    Count(usize),
    /// From [`Request::Size`]: total bytes of the partition's segments.
    Size(u64),
    /// The operation failed.
    Failed(Error),
}

enum Envelope {
    Request {
        id: u64,
        from: usize,
        request: Request,
    },
    Response {
        id: u64,
        response: Response,
    },
    /// The sender's main future ended: it sends no more requests.
    Finished,
}

/// The response to a request begun on its shard; see [`Shard::submit`].
pub type PendingResponse = Pin<Box<dyn Future<Output = Response>>>;

#[derive(Default)]
struct ReplySlot {
    response: RefCell<Option<Response>>,
    ready: Event,
}

impl ReplySlot {
    /// Waits for the response.
    async fn response(&self) -> Response {
        loop {
            let listener = self.ready.listen();
            if let Some(response) = self.response.borrow_mut().take() {
                return response;
            }
            listener.await;
        }
    }
}

/// One shard's view of the engine: its own partitions and a route to every
/// other shard's.
pub struct Shard {
    id: usize,
    engine_shards: usize,
    config: EngineConfig,
    storage: DmaStorage,
    cache: Rc<RefCell<BatchCache>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<PartitionLog<DmaStorage>>>>,
    next_cache_key: Cell<u64>,
    senders: Senders<Envelope>,
    next_request_id: Cell<u64>,
    replies: RefCell<HashMap<u64, Rc<ReplySlot>>>,
    stopping: Cell<bool>,
    finished_peers: Cell<usize>,
    peer_finished: Event,
    /// Background operations (retention, scheduled flushes, checkpoints,
    /// cleaning passes) in flight. Shutdown waits for them, so no file
    /// operation of theirs is left on the blocking pool when the executor
    /// stops: glommio's blocking thread panics if its executor is gone.
    background_busy: Cell<usize>,
    /// Notified when a background operation ends.
    background_done: Event,
    /// Set when shutdown begins: no new background operation starts.
    background_stopping: Cell<bool>,
    /// Bytes read ahead for this shard's partitions.
    read_ahead_budget: ReadAheadBudget,
    /// The task queue consumer reads run in; see
    /// [`Shard::spawn_consumer_read`].
    consumer_reads: TaskQueueHandle,
}

/// One background operation in flight; see [`Shard::background_operation`].
struct BackgroundOperation<'a>(&'a Shard);

impl Drop for BackgroundOperation<'_> {
    fn drop(&mut self) {
        let shard = self.0;
        shard.background_busy.set(shard.background_busy.get() - 1);
        shard.background_done.notify(usize::MAX);
    }
}

/// Aborts the process when a shard's thread unwinds from a panic. A shard
/// that died would leave its partitions unanswered and its peers waiting
/// for it forever; a crashed process instead restarts into recovery, which
/// is exactly what the engine is built to survive.
struct AbortOnPanic;

impl Drop for AbortOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("fjord: a shard panicked; aborting so that recovery starts from the disk");
            std::process::abort();
        }
    }
}

/// The CPUs shards run on, in order: the online CPUs this process may run
/// on (so `taskset -c 2-5 fjord --set cores=4` puts the shards on 2 to 5),
/// lowest first. glommio lists the online CPUs in a hash set; unsorted,
/// `cores=1` would land on a different CPU from one start to the next.
fn shard_cpus(online: impl Iterator<Item = usize>, allowed: &[usize]) -> Vec<usize> {
    let mut cpus: Vec<usize> = online
        .filter(|cpu| allowed.is_empty() || allowed.contains(cpu))
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPUs in this process's affinity mask; empty if it cannot be read,
/// which [`shard_cpus`] takes as no restriction.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain bits for which all zeroes is valid, and
    // sched_getaffinity writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let read =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw mut set) };
    if read != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Runs the engine: starts one pinned executor per shard, opens each shard's
/// partitions, runs `main` on every shard with its [`Shard`] handle, then
/// shuts down cleanly. Returns each shard's `main` output, by shard id.
///
/// # Errors
/// [`Error::InvalidConfig`] if the shard count exceeds the online CPUs or an
/// executor cannot start; [`Error::Io`] if the data directory cannot be
/// created. A shard that cannot open its partitions ends the process with
/// exit code 1 after printing why, since the engine cannot run without it.
pub fn run<F, Fut, T>(config: &EngineConfig, main: F) -> Result<Vec<T>>
where
    F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let cpus = glommio::CpuSet::online()
        .map_err(|error| Error::io("listing CPUs", "/sys/devices/system/cpu", error.into()))?;
    let cpu_ids = shard_cpus(cpus.iter().map(|location| location.cpu), &allowed_cpus());
    if config.shards == 0 || config.shards > cpu_ids.len() {
        return Err(Error::InvalidConfig {
            key: "cores".to_owned(),
            value: config.shards.to_string(),
            reason: format!(
                "must be between 1 and the {} online CPUs this process may run on",
                cpu_ids.len()
            ),
        });
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| Error::io("creating data directory", &config.data_dir, error))?;
    let mesh = MeshBuilder::<Envelope, Full>::full(config.shards, MESH_CHANNEL_CAPACITY);
    let mut handles = Vec::with_capacity(config.shards);
    for &cpu in cpu_ids.iter().take(config.shards) {
        let mesh = mesh.clone();
        let shard_config = config.clone();
        let main = main.clone();
        let shard_cpu = cpus.clone().filter(|location| location.cpu == cpu);
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("fjord-shard-{cpu}"))
            .blocking_thread_pool_placement(PoolPlacement::Fenced(
                BLOCKING_THREADS_PER_SHARD,
                shard_cpu,
            ))
            .io_memory(config.io_memory_bytes)
            .preempt_timer(PREEMPT_TIMER)
            .spawn(move || async move {
                let _abort_on_panic = AbortOnPanic;
                let (senders, receivers) = mesh.join().await.map_err(|_| Error::ShuttingDown)?;
                let shard = match Shard::start(shard_config, senders).await {
                    Ok(shard) => shard,
                    Err(error) => {
                        // The other shards would wait for this one forever, and
                        // its partitions would go unanswered: the engine runs
                        // whole or not at all.
                        tracing::error!(%error, "a shard cannot start");
                        eprintln!("fjord: a shard cannot start: {error}");
                        std::process::exit(1);
                    }
                };
                let peers = shard.clone().serve_peers(receivers);
                shard.clone().start_background_work();
                let output = main(shard.clone()).await;
                shard.wait_for_peers_to_finish().await;
                shard.shutdown().await;
                peers.await;
                Ok::<(usize, T), Error>((shard.id, output))
            })
            .map_err(|error| Error::InvalidConfig {
                key: "cores".to_owned(),
                value: config.shards.to_string(),
                reason: format!("cannot start a shard executor: {error}"),
            })?;
        handles.push(handle);
    }
    let mut outputs: Vec<(usize, T)> = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(output)) => outputs.push(output),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(error) => {
                first_error.get_or_insert(Error::ShardFailed(error.to_string()));
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    outputs.sort_by_key(|(id, _)| *id);
    Ok(outputs.into_iter().map(|(_, output)| output).collect())
}

impl Shard {
    async fn start(config: EngineConfig, senders: Senders<Envelope>) -> Result<Rc<Self>> {
        let shard = Rc::new(Self {
            id: senders.peer_id(),
            engine_shards: senders.nr_consumers(),
            cache: Rc::new(RefCell::new(BatchCache::new(config.cache_bytes_per_shard))),
            config,
            storage: DmaStorage,
            partitions: RefCell::new(HashMap::new()),
            next_cache_key: Cell::new(0),
            senders,
            next_request_id: Cell::new(0),
            replies: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            finished_peers: Cell::new(0),
            peer_finished: Event::new(),
            background_busy: Cell::new(0),
            background_done: Event::new(),
            background_stopping: Cell::new(false),
            read_ahead_budget: ReadAheadBudget::new(READ_AHEAD_BYTES_PER_SHARD),
            consumer_reads: executor().create_task_queue(
                Shares::Static(CONSUMER_READ_SHARES),
                Latency::NotImportant,
                "fjord-consumer-reads",
            ),
        });
        let starting = Instant::now();
        crate::storage::dma::settle_poll_ring_probe(&shard.config.data_dir, shard.id)
            .await
            .map_err(|error| Error::io("probing the poll ring", &shard.config.data_dir, error))?;
        let names = std::fs::read_dir(&shard.config.data_dir)
            .map_err(|error| Error::io("listing data directory", &shard.config.data_dir, error))?;
        for entry in names {
            let entry = entry.map_err(|error| {
                Error::io("listing data directory", &shard.config.data_dir, error)
            })?;
            let Some(partition) = entry
                .file_name()
                .to_str()
                .and_then(TopicPartition::from_dir_name)
            else {
                continue;
            };
            if shard_for(&partition, shard.engine_shards) == shard.id && entry.path().is_dir() {
                let config = (shard.config.log_config_for)(&partition);
                let opening = Instant::now();
                shard.open_local(partition.clone(), config).await?;
                let took = opening.elapsed();
                if took > SLOW_PARTITION_OPEN {
                    tracing::warn!(%partition, ?took, "opening a partition was slow");
                }
            }
        }
        tracing::info!(
            shard = shard.id,
            partitions = shard.partitions.borrow().len(),
            took = ?starting.elapsed(),
            "shard started"
        );
        Ok(shard)
    }

    /// Spawns `future` in the shard's consumer-read task queue, where the
    /// broker runs each Fetch and sends its response, and where the
    /// consumer reads other shards ask of this one run. A woken append
    /// runs before this queue's next turn: a catch-up reader keeps the core
    /// busy for as long as it is behind, and an append passes through
    /// several tasks (request, write, completion, response), each of which
    /// waited for a whole turn of the reader when both shared one
    /// first-come queue (produce p99 under a cold reader on the same core
    /// roughly halved, `bench/RESULTS.md`, session 5).
    ///
    /// # Panics
    /// Never: the queue lives as long as the shard.
    pub fn spawn_consumer_read<T: 'static>(
        &self,
        future: impl Future<Output = T> + 'static,
    ) -> glommio::Task<T> {
        glommio::spawn_local_into(future, self.consumer_reads)
            .expect("the consumer-read queue lives as long as its shard")
    }

    /// This shard's id, `0..shard_count`.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// How many shards the engine runs.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.engine_shards
    }

    /// The shard owning `partition`.
    #[must_use]
    pub fn owner_of(&self, partition: &TopicPartition) -> usize {
        shard_for(partition, self.engine_shards)
    }

    async fn open_local(
        &self,
        partition: TopicPartition,
        config: LogConfig,
    ) -> Result<Rc<PartitionLog<DmaStorage>>> {
        if let Some(log) = self.partitions.borrow().get(&partition) {
            return Ok(log.clone());
        }
        let key = self.next_cache_key.get();
        self.next_cache_key.set(key + 1);
        let log = PartitionLog::open(
            self.storage,
            &self.config.data_dir,
            partition.clone(),
            config,
            self.cache.clone(),
            key,
        )
        .await?;
        let log = Rc::new(log);
        // Another task may have opened it while this one awaited.
        Ok(self
            .partitions
            .borrow_mut()
            .entry(partition)
            .or_insert(log)
            .clone())
    }

    /// The log of a partition this shard owns, for callers on this shard
    /// that need more than the [`Request`]s offer (zero-copy sends).
    ///
    /// # Errors
    /// [`Error::UnknownPartition`] if this shard does not own it.
    pub fn local_log(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog<DmaStorage>>> {
        self.local(partition)
    }

    fn local(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog<DmaStorage>>> {
        self.partitions
            .borrow()
            .get(partition)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition(partition.clone()))
    }

    /// Runs `request` on the shard that owns its partition (or on shard
    /// `target` for shard-wide requests) and returns its response. An
    /// append takes its place in the partition's admission line when it
    /// starts to run there; callers that need appends admitted in the order
    /// they make them use [`Shard::submit`].
    pub async fn call(&self, target: usize, request: Request) -> Response {
        if target == self.id {
            return self.execute(request).await;
        }
        match self.send_request(target, request).await {
            Ok(slot) => slot.response().await,
            Err(error) => Response::Failed(error),
        }
    }

    /// Hands `request` to shard `target` and returns, once it is in order
    /// there, the future of its response. Requests one task submits one
    /// after the other are begun on their shard in that order (the channel
    /// between two shards is first in, first out, and the receiving shard
    /// begins each request as it takes it off the channel); an append
    /// takes its place in its partition's admission line as it begins, so
    /// a connection's appends to a partition are admitted in the order
    /// they were submitted, however their tasks are scheduled afterwards.
    /// The response future need not be polled for the order to hold.
    pub async fn submit(self: &Rc<Self>, target: usize, request: Request) -> PendingResponse {
        if target == self.id {
            return self.begin(request);
        }
        match self.send_request(target, request).await {
            Ok(slot) => Box::pin(async move { slot.response().await }),
            Err(error) => Box::pin(async move { Response::Failed(error) }),
        }
    }

    /// Puts `request` on the channel to shard `target`; its response will
    /// come to the returned slot.
    async fn send_request(&self, target: usize, request: Request) -> Result<Rc<ReplySlot>> {
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let slot = Rc::new(ReplySlot::default());
        self.replies.borrow_mut().insert(id, slot.clone());
        let envelope = Envelope::Request {
            id,
            from: self.id,
            request,
        };
        if self.senders.send_to(target, envelope).await.is_err() {
            self.replies.borrow_mut().remove(&id);
            return Err(Error::ShuttingDown);
        }
        Ok(slot)
    }

    /// Begins `request` on this shard, which owns its partition, and
    /// returns the future of its response: an append takes its admission
    /// ticket here, before anything awaits.
    fn begin(self: &Rc<Self>, request: Request) -> PendingResponse {
        let shard = Rc::clone(self);
        let Request::Append(append) = request else {
            return Box::pin(async move { shard.execute(request).await });
        };
        match self.local(&append.partition) {
            Ok(log) => {
                let ticket = log.admission_ticket();
                Box::pin(async move {
                    shard
                        .append_local(&log, ticket, append)
                        .await
                        .map_or_else(Response::Failed, Response::Appended)
                })
            }
            Err(error) => Box::pin(async move { Response::Failed(error) }),
        }
    }

    async fn execute(&self, request: Request) -> Response {
        match self.execute_inner(request).await {
            Ok(response) => response,
            Err(error) => Response::Failed(error),
        }
    }

    async fn execute_inner(&self, request: Request) -> Result<Response> {
        if self.stopping.get() {
            return Err(Error::ShuttingDown);
        }
        Ok(match request {
            Request::Create(partition, config) => {
                if self.partitions.borrow().contains_key(&partition) {
                    return Err(Error::PartitionExists(partition));
                }
                self.open_local(partition, config).await?;
                Response::Done
            }
            Request::Delete(partition) => {
                let log = self.local(&partition)?;
                self.partitions.borrow_mut().remove(&partition);
                log.delete().await?;
                Response::Done
            }
            Request::Append(append) => {
                let log = self.local(&append.partition)?;
                let ticket = log.admission_ticket();
                Response::Appended(self.append_local(&log, ticket, append).await?)
            }
            Request::WaitForData {
                partition,
                offset,
                timeout,
                committed,
            } => {
                let log = self.local(&partition)?;
                futures_lite::future::or(log.wait_for_data_beyond(offset, committed), async {
                    glommio::timer::sleep(timeout).await;
                })
                .await;
                Response::Done
            }
            Request::Read {
                partition,
                offset,
                max_bytes,
                upper_bound,
                committed,
            } => {
                let log = self.local(&partition)?;
                let bound = if committed {
                    upper_bound.min(log.high_watermark())
                } else {
                    upper_bound
                };
                Response::Read(log.read(offset, max_bytes, bound).await?)
            }
            Request::ReadZeroCopy {
                partition,
                offset,
                max_bytes,
            } => {
                let log = self.local(&partition)?;
                let bound = log.high_watermark();
                let read = log.read_zero_copy(offset, max_bytes, bound).await?;
                if log.read_ahead_due() {
                    self.read_ahead(log, max_bytes);
                }
                Response::ZeroCopy(read)
            }
            Request::Flush(partition) => Response::Offset(self.local(&partition)?.flush().await?),
            Request::Offsets(partition) => Response::Offsets(self.local(&partition)?.offsets()),
            Request::ListOffset(partition, query) => {
                Response::Found(self.list_offset_local(&partition, query).await?)
            }
            Request::AdvanceHighWatermark(partition, offset) => {
                self.local(&partition)?.advance_high_watermark(offset);
                Response::Done
            }
            Request::DeleteRecords(partition, offset) => {
                Response::Offset(self.local(&partition)?.delete_records(offset).await?)
            }
            Request::TruncateTo(partition, offset) => {
                Response::Offset(self.local(&partition)?.truncate_to(offset).await?)
            }
            Request::SetConfig(partition, config) => {
                self.local(&partition)?.set_config(config);
                Response::Done
            }
            Request::EndOffsetForEpoch(partition, epoch) => Response::Found(
                self.local(&partition)?
                    .end_offset_for_epoch(epoch)
                    .map(|(epoch, offset)| (offset, i64::from(epoch.0))),
            ),
            Request::EnforceRetention => Response::Count(self.enforce_retention().await),
            Request::Size(partition) => Response::Size(self.local(&partition)?.size_bytes()),
            Request::ListPartitions => {
                let mut partitions: Vec<TopicPartition> =
                    self.partitions.borrow().keys().cloned().collect();
                partitions.sort();
                Response::Partitions(partitions)
            }
        })
    }

    /// Reads ahead, in its own task, the chunk of up to `len` bytes the
    /// next fetch of `log`'s reader will want; drops it if unclaimed after
    /// [`READ_AHEAD_UNCLAIMED`].
    fn read_ahead(&self, log: Rc<PartitionLog<DmaStorage>>, len: usize) {
        let budget = self.read_ahead_budget.clone();
        glommio::spawn_local(async move {
            if let Some(generation) = log.read_ahead(len, &budget).await {
                glommio::timer::sleep(READ_AHEAD_UNCLAIMED).await;
                log.expire_read_ahead(generation);
            }
        })
        .detach();
    }

    /// ListOffsets on a partition of this shard: the offset and, where the
    /// query is by time, the timestamp found (`-1` otherwise).
    async fn list_offset_local(
        &self,
        partition: &TopicPartition,
        query: OffsetQuery,
    ) -> Result<Option<(Offset, i64)>> {
        let log = self.local(partition)?;
        Ok(match query {
            OffsetQuery::Earliest => Some((log.offsets().log_start, -1)),
            OffsetQuery::Latest => Some((log.offsets().log_end, -1)),
            OffsetQuery::MaxTimestamp => log.max_timestamp_offset().await?.map(|(o, t)| (o, t.0)),
            OffsetQuery::Timestamp(target) => log
                .offset_for_timestamp(target)
                .await?
                .map(|(o, t)| (o, t.0)),
        })
    }

    async fn append_local(
        &self,
        log: &PartitionLog<DmaStorage>,
        ticket: AdmissionTicket,
        append: AppendRequest,
    ) -> Result<AppendInfo> {
        let info = log
            .append_batches(ticket, &append.batches, append.leader_epoch)
            .await?;
        if append.flush {
            log.flush_to(info.last_offset.next()).await?;
        }
        if append.advance_high_watermark {
            log.advance_high_watermark(info.last_offset.next());
        }
        Ok(info)
    }

    async fn enforce_retention(&self) -> usize {
        let logs: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let now = TimestampMs::now();
        let mut deleted = 0;
        for log in logs {
            match log.enforce_retention(now).await {
                Ok(count) => deleted += count,
                Err(error) => {
                    tracing::warn!(partition = %log.partition(), %error, "retention failed");
                }
            }
        }
        deleted
    }

    /// Cleans the shard's log that most needs it: the highest dirty ratio
    /// among those due (`min.cleanable.dirty.ratio` reached, or forced by
    /// `max.compaction.lag.ms` or a tombstone's delete horizon). Returns
    /// whether a log was cleaned.
    async fn clean_one(&self) -> bool {
        let logs: Vec<_> = self.partitions.borrow().values().cloned().collect();
        let now = TimestampMs::now();
        let chosen = logs
            .into_iter()
            .filter_map(|log| {
                let candidate = log.cleaning_candidate(now)?;
                Some((candidate, log))
            })
            .max_by(|(a, _), (b, _)| {
                (a.forced, a.dirty_ratio)
                    .partial_cmp(&(b.forced, b.dirty_ratio))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        let Some((_, log)) = chosen else {
            return false;
        };
        let result = log
            .clean(now, self.config.cleaner.dedupe_buffer_bytes_per_shard)
            .await;
        match result {
            Ok(stats) => stats.segments_written > 0,
            Err(Error::ShuttingDown) => false,
            Err(error) => {
                tracing::warn!(partition = %log.partition(), %error, "cleaning failed");
                false
            }
        }
    }

    fn serve_peers(self: Rc<Self>, mut receivers: Receivers<Envelope>) -> impl Future<Output = ()> {
        let streams = receivers.streams();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|(peer, stream)| {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    while let Some(envelope) = stream.recv().await {
                        match envelope {
                            Envelope::Request { id, from, request } => {
                                let consumer_read = request.is_consumer_read();
                                let owner = shard.clone();
                                // Begun in the order the peer sent them.
                                let response = shard.begin(request);
                                let serve = async move {
                                    let response = response.await;
                                    // The peer may have stopped; nothing waits then.
                                    let _ = owner
                                        .senders
                                        .send_to(from, Envelope::Response { id, response })
                                        .await;
                                };
                                if consumer_read {
                                    shard.spawn_consumer_read(serve).detach();
                                } else {
                                    glommio::spawn_local(serve).detach();
                                }
                            }
                            Envelope::Response { id, response } => {
                                if let Some(slot) = shard.replies.borrow_mut().remove(&id) {
                                    *slot.response.borrow_mut() = Some(response);
                                    slot.ready.notify(usize::MAX);
                                }
                            }
                            Envelope::Finished => {
                                shard.finished_peers.set(shard.finished_peers.get() + 1);
                                shard.peer_finished.notify(usize::MAX);
                            }
                        }
                    }
                    tracing::debug!(shard = shard.id, peer, "peer stopped");
                })
            })
            .collect();
        async move {
            for task in tasks {
                task.await;
            }
        }
    }

    fn start_background_work(self: Rc<Self>) {
        let queue = executor().create_task_queue(
            Shares::Static(100),
            Latency::NotImportant,
            "fjord-background",
        );
        let retention = {
            let shard = self.clone();
            async move {
                loop {
                    glommio::timer::sleep(shard.config.retention_check_interval).await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    shard.enforce_retention().await;
                }
            }
        };
        let flusher = {
            let shard = self.clone();
            async move {
                loop {
                    glommio::timer::sleep(shard.config.flush_check_interval).await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    let logs: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                    for log in logs {
                        if let Err(error) = log.flush_if_due().await {
                            tracing::warn!(partition = %log.partition(), %error, "scheduled flush failed");
                        }
                    }
                }
            }
        };
        let checkpointer = {
            let shard = self.clone();
            async move {
                loop {
                    glommio::timer::sleep(shard.config.recovery_checkpoint_interval).await;
                    let Some(_operation) = shard.background_operation() else {
                        return;
                    };
                    let logs: Vec<_> = shard.partitions.borrow().values().cloned().collect();
                    for log in logs {
                        if let Err(error) = log.checkpoint_recovery_point().await {
                            tracing::warn!(partition = %log.partition(), %error, "recovery checkpoint failed");
                        }
                    }
                }
            }
        };
        let cleaner = {
            let shard = self.clone();
            async move {
                loop {
                    // Back off only when nothing was due: a busy shard
                    // cleans its logs one after the other.
                    let cleaned = {
                        let Some(_operation) = shard.background_operation() else {
                            return;
                        };
                        shard.config.cleaner.enabled && shard.clean_one().await
                    };
                    if !cleaned {
                        glommio::timer::sleep(shard.config.cleaner.backoff).await;
                    }
                }
            }
        };
        for task in [
            glommio::spawn_local_into(cleaner, queue),
            glommio::spawn_local_into(retention, queue),
            glommio::spawn_local_into(flusher, queue),
            glommio::spawn_local_into(checkpointer, queue),
        ] {
            match task {
                Ok(task) => {
                    task.detach();
                }
                Err(error) => tracing::error!(%error, "cannot start background work"),
            }
        }
    }

    /// Marks a background operation in flight until the returned guard
    /// drops; `None` once shutdown has begun, when none may start.
    fn background_operation(&self) -> Option<BackgroundOperation<'_>> {
        if self.background_stopping.get() {
            return None;
        }
        self.background_busy.set(self.background_busy.get() + 1);
        Some(BackgroundOperation(self))
    }

    /// Tells every peer this shard sends no more requests, then serves their
    /// requests until they all say the same: a shard's partitions stay
    /// available while any shard may still call them.
    async fn wait_for_peers_to_finish(&self) {
        for peer in (0..self.engine_shards).filter(|&peer| peer != self.id) {
            // A peer that already stopped needs no notice.
            let _ = self.senders.send_to(peer, Envelope::Finished).await;
        }
        loop {
            let listener = self.peer_finished.listen();
            if self.finished_peers.get() + 1 >= self.engine_shards {
                return;
            }
            listener.await;
        }
    }

    async fn shutdown(&self) {
        self.background_stopping.set(true);
        let logs: Vec<_> = self.partitions.borrow().values().cloned().collect();
        for log in &logs {
            if let Err(error) = log.close().await {
                tracing::error!(partition = %log.partition(), %error, "closing partition failed");
            }
        }
        // Closed logs make a running cleaning pass stop at its next read
        // and remove its files; other operations finish their step.
        while self.background_busy.get() > 0 {
            let listener = self.background_done.listen();
            if self.background_busy.get() == 0 {
                break;
            }
            listener.await;
        }
        self.stopping.set(true);
        self.senders.close();
        tracing::info!(shard = self.id, partitions = logs.len(), "shard stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::shard_cpus;

    #[test]
    fn shards_take_the_lowest_allowed_online_cpus_in_order() {
        assert_eq!(shard_cpus([3, 0, 2, 1].into_iter(), &[]), vec![0, 1, 2, 3]);
        assert_eq!(shard_cpus([3, 0, 2, 1].into_iter(), &[2, 3, 7]), vec![2, 3]);
    }

    #[test]
    fn the_process_may_run_on_some_cpu() {
        assert!(!super::allowed_cpus().is_empty());
    }
}
