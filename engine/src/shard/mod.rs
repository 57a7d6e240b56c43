//! Shards: one pinned glommio executor per core, each the only owner of its
//! partitions.
//!
//! A partition's shard is a pure function of its topic, partition index and
//! the shard count ([`shard_for`], in [`placement`]), so every shard can
//! route any request without asking anyone. A [`Shard`] handle offers every
//! partition operation, each with its own request and answer types
//! ([`operations`]): work for its own partitions runs in place, work for
//! another shard's travels over glommio's channel mesh ([`calls`]). No lock
//! is shared between cores.
//!
//! The engine starts one pinned executor per shard ([`executor`]);
//! background work (retention, `flush.ms`, checkpoints, the cleaner) runs
//! in a task queue with a tenth of the foreground's shares, so it yields to
//! appends and reads ([`background`]).
//!
//! Shutdown: when the shard's main future ends, the shard closes its
//! partitions cleanly (flush, seal, checkpoint) and then keeps answering its
//! peers (with [`Error::ShuttingDown`]) until every peer has finished too.

mod background;
mod calls;
mod executor;
mod operations;
mod placement;
mod start_gate;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use glommio::channels::channel_mesh::Senders;
use glommio::{executor, Latency, Shares, TaskQueueHandle};

pub use calls::{LocalFuture, PendingAnswer, Queue};
pub use executor::run;
#[cfg(any(test, feature = "testkit"))]
pub use executor::run_alone;
pub use operations::{AppendRequest, EpochEnd, FoundOffset, OffsetQuery, ReadBound, ReadRequest};
pub use placement::shard_for;

use crate::cache::BatchCache;
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::log::admission::AdmissionTicket;
use crate::log::read_ahead::{ReadAheadBudget, READ_AHEAD_BYTES_MAX};
use crate::log::{AppendInfo, PartitionLog};
use crate::storage::dma::DmaStorage;
use crate::storage::Storage;
use crate::types::{TimestampMs, TopicPartition};
use calls::Envelope;

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

/// One shard's view of the engine: its own partitions and a route to every
/// other shard's. Generic over its [`Storage`] (and, through a [`Clock`],
/// its time) so that a whole shard runs on in-memory storage and simulated
/// time in tests; the engine runs on [`DmaStorage`].
pub struct Shard<S: Storage = DmaStorage> {
    id: usize,
    engine_shards: usize,
    config: EngineConfig,
    storage: S,
    clock: Rc<dyn Clock>,
    cache: Rc<RefCell<BatchCache>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<PartitionLog<S>>>>,
    next_cache_key: Cell<u64>,
    senders: Senders<Envelope<S>>,
    next_request_id: Cell<u64>,
    /// Tasks waiting for answers from other shards, by request id.
    waiting: RefCell<HashMap<u64, Rc<calls::Waiting>>>,
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
    /// Background loops not asleep on the clock: a simulation advancing
    /// the clock waits for it to fall back to zero.
    background_awake: Cell<usize>,
    /// Bytes read ahead for this shard's partitions.
    read_ahead_budget: ReadAheadBudget,
    /// The task queue consumer reads run in; see
    /// [`Shard::spawn_consumer_read`].
    consumer_reads: TaskQueueHandle,
}

impl<S: Storage> Shard<S> {
    /// The shard of `senders`' peer id, owning no partition yet.
    fn new(
        config: EngineConfig,
        storage: S,
        clock: Rc<dyn Clock>,
        senders: Senders<Envelope<S>>,
    ) -> Rc<Self> {
        Rc::new(Self {
            id: senders.peer_id(),
            engine_shards: senders.nr_consumers(),
            cache: Rc::new(RefCell::new(BatchCache::new(config.cache_bytes_per_shard))),
            config,
            storage,
            clock,
            partitions: RefCell::new(HashMap::new()),
            next_cache_key: Cell::new(0),
            senders,
            next_request_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            finished_peers: Cell::new(0),
            peer_finished: Event::new(),
            background_busy: Cell::new(0),
            background_done: Event::new(),
            background_stopping: Cell::new(false),
            background_awake: Cell::new(0),
            read_ahead_budget: ReadAheadBudget::new(READ_AHEAD_BYTES_PER_SHARD),
            consumer_reads: executor().create_task_queue(
                Shares::Static(CONSUMER_READ_SHARES),
                Latency::NotImportant,
                "fjord-consumer-reads",
            ),
        })
    }

    /// Opens the partitions of the data directory this shard owns.
    async fn open_partitions(&self) -> Result<()> {
        let starting = self.clock.now();
        let data_dir = &self.config.data_dir;
        let names = self
            .storage
            .list_subdirectories(data_dir)
            .await
            .map_err(|error| Error::io("listing data directory", data_dir, error))?;
        for partition in names
            .iter()
            .filter_map(|name| TopicPartition::from_dir_name(name))
        {
            if shard_for(&partition, self.engine_shards) == self.id {
                let config = (self.config.log_config_for)(&partition);
                let opening = self.clock.now();
                self.open_local(partition.clone(), config).await?;
                let took = elapsed_since(opening, self.clock.now());
                if took > SLOW_PARTITION_OPEN {
                    tracing::warn!(%partition, ?took, "opening a partition was slow");
                }
            }
        }
        tracing::info!(
            shard = self.id,
            partitions = self.partitions.borrow().len(),
            took = ?elapsed_since(starting, self.clock.now()),
            "shard started"
        );
        Ok(())
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
    ) -> Result<Rc<PartitionLog<S>>> {
        if let Some(log) = self.partitions.borrow().get(&partition) {
            return Ok(log.clone());
        }
        let key = self.next_cache_key.get();
        self.next_cache_key.set(key + 1);
        let log = PartitionLog::open(
            self.storage.clone(),
            self.clock.clone(),
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
    pub fn local_log(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog<S>>> {
        self.local(partition)
    }

    fn local(&self, partition: &TopicPartition) -> Result<Rc<PartitionLog<S>>> {
        self.partitions
            .borrow()
            .get(partition)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition(partition.clone()))
    }

    /// Reads ahead, in its own task, the chunk of up to `len` bytes the
    /// next fetch of `log`'s reader will want; drops it if unclaimed after
    /// [`READ_AHEAD_UNCLAIMED`].
    fn read_ahead(&self, log: Rc<PartitionLog<S>>, len: usize) {
        let budget = self.read_ahead_budget.clone();
        let clock = self.clock.clone();
        glommio::spawn_local(async move {
            if let Some(generation) = log.read_ahead(len, &budget).await {
                clock.sleep(READ_AHEAD_UNCLAIMED).await;
                log.expire_read_ahead(generation);
            }
        })
        .detach();
    }

    async fn append_local(
        &self,
        log: &PartitionLog<S>,
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

/// The time from `start` to `end` on a shard's clock, for log messages.
fn elapsed_since(start: TimestampMs, end: TimestampMs) -> Duration {
    Duration::from_millis(u64::try_from(end.0 - start.0).unwrap_or(0))
}
