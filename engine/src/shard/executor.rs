//! Starting the engine: one pinned glommio executor per shard, each with
//! its blocking pool fenced to its CPU, joined by a channel mesh; and
//! stopping it: every shard's `main` ends, the shard closes its partitions
//! and keeps answering its peers until they are all done.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::channel_mesh::{Full, MeshBuilder};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};

use super::calls::Envelope;
use super::placement::{allowed_cpus, shard_cpus};
use super::start_gate::StartGate;
use super::{
    EngineConfig, Shard, BLOCKING_THREADS_PER_SHARD, MESH_CHANNEL_CAPACITY, PREEMPT_TIMER,
};
use crate::clock::SystemClock;
use crate::error::{Error, Result};
use crate::storage::dma::{settle_poll_ring_probe, DmaStorage};

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

/// Runs the engine: starts one pinned executor per shard, opens each shard's
/// partitions, runs `main` on every shard with its [`Shard`] handle, then
/// shuts down cleanly. Returns each shard's `main` output, by shard id.
///
/// The engine runs whole or not at all: `main` runs on no shard unless
/// every shard opened its partitions. A shard that cannot makes every
/// shard shut down (closing the partitions they opened) and `run` return
/// its error.
///
/// # Errors
/// [`Error::InvalidConfig`] if the shard count exceeds the online CPUs or an
/// executor cannot start; [`Error::Io`] if the data directory cannot be
/// created; the error of a shard that could not open its partitions
/// ([`Error::Io`], [`Error::CorruptCheckpoint`], ...).
///
/// # Panics
/// If `main` ran on some shards but not all without an error, which the
/// start gate rules out.
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
    let mesh =
        MeshBuilder::<Envelope<DmaStorage>, Full>::full(config.shards, MESH_CHANNEL_CAPACITY);
    let start_gate = Arc::new(StartGate::new(config.shards));
    let mut handles = Vec::with_capacity(config.shards);
    for &cpu in cpu_ids.iter().take(config.shards) {
        let mesh = mesh.clone();
        let shard_config = config.clone();
        let main = main.clone();
        let start_gate = start_gate.clone();
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
                let shard = Shard::new(shard_config, DmaStorage, Rc::new(SystemClock), senders);
                let started = probe_then_open(&shard).await;
                if let Err(error) = &started {
                    tracing::error!(shard = shard.id, %error, "a shard cannot start");
                }
                let peers = shard.clone().serve_peers(receivers);
                let output = if start_gate.arrive(started.is_ok()).await {
                    shard.clone().start_background_work();
                    Some(main(shard.clone()).await)
                } else {
                    None
                };
                shard.wait_for_peers_to_finish().await;
                shard.shutdown().await;
                peers.await;
                started?;
                Ok::<_, Error>(output.map(|output| (shard.id, output)))
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
            Ok(Ok(Some(output))) => outputs.push(output),
            // Another shard could not start; its error is the one returned.
            Ok(Ok(None)) => {}
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
    assert_eq!(
        outputs.len(),
        config.shards,
        "main ran on every shard or on none"
    );
    outputs.sort_by_key(|(id, _)| *id);
    Ok(outputs.into_iter().map(|(_, output)| output).collect())
}

/// Settles the shard's io_uring poll ring (see
/// [`settle_poll_ring_probe`]), then opens the shard's partitions.
async fn probe_then_open(shard: &Shard) -> Result<()> {
    let data_dir = &shard.config.data_dir;
    settle_poll_ring_probe(data_dir, shard.id)
        .await
        .map_err(|error| Error::io("probing the poll ring", data_dir, error))?;
    shard.open_partitions().await
}

/// Runs `main` on a one-shard engine inside the calling glommio executor,
/// on `storage` and `clock`: how tests drive a whole shard (its partitions,
/// background work and shutdown) on in-memory storage and simulated time,
/// the same way from the same seed. Opens the partitions of
/// `config.data_dir`, starts the background work, runs `main`, then shuts
/// down cleanly.
///
/// # Errors
/// The error of opening the partitions, as [`run`].
#[cfg(any(test, feature = "testkit"))]
pub async fn run_alone<S, F, Fut, T>(
    config: EngineConfig,
    storage: S,
    clock: Rc<dyn crate::clock::Clock>,
    main: F,
) -> Result<T>
where
    S: crate::storage::Storage,
    F: FnOnce(Rc<Shard<S>>) -> Fut,
    Fut: Future<Output = T>,
{
    let mesh = MeshBuilder::<Envelope<S>, Full>::full(1, MESH_CHANNEL_CAPACITY);
    let (senders, receivers) = mesh.join().await.map_err(|_| Error::ShuttingDown)?;
    let shard = Shard::new(config, storage, clock, senders);
    let peers = shard.clone().serve_peers(receivers);
    let output = match shard.open_partitions().await {
        Ok(()) => {
            shard.clone().start_background_work();
            Ok(main(shard.clone()).await)
        }
        Err(error) => Err(error),
    };
    shard.wait_for_peers_to_finish().await;
    shard.shutdown().await;
    peers.await;
    output
}
