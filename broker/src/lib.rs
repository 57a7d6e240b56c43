//! fjord-broker: the Kafka wire protocol on fjord's storage engine.
//!
//! A thin shell: every shard of the engine also accepts on the broker
//! port (one socket per shard, steered by source port, [`steering`]);
//! requests are decoded with the `kafka-protocol` crate's
//! generated codecs, served by one handler per API (`handlers/`), and turned
//! into partition operations routed to the owning shard. Cluster metadata
//! (topics, partitions, configs, brokers, producer ids) is a log of records
//! the controller keeps; handlers read the image they give.

pub mod advertised;
pub mod authorized_operations;
pub mod config;
pub mod controller;
pub mod error;
pub mod fetch_codec;
pub mod fetch_session;
pub mod groups;
pub mod handlers;
pub mod image_follower;
#[cfg(test)]
mod in_process;
pub mod meta_properties;
pub mod metadata;
pub mod partition;
pub mod recompress;
pub mod replication;
mod send_progress;
pub mod server;
pub mod steering;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod topics;

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fjord_engine::shard::{self, CleanerConfig, EngineConfig};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::error::BrokerError;
use crate::groups::{CoordinatorSettings, GroupCoordinator};
use crate::image_follower::ImageFollower;
use crate::replication::Replication;
use crate::server::Broker;
use crate::steering::ShardListeners;

/// Runs a broker until `stop` is set, then shuts down cleanly: stops
/// accepting, finishes requests already read, flushes and checkpoints every
/// partition.
///
/// # Errors
/// [`BrokerError`] if a data directory belongs to another cluster or node
/// (`meta.properties`), the metadata cannot be loaded, the engine cannot
/// start, or the listener cannot bind.
pub fn run(mut config: BrokerConfig, stop: Arc<AtomicBool>) -> Result<(), BrokerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        context: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    std::fs::create_dir_all(&config.metadata_log_dir).map_err(|source| BrokerError::Io {
        context: format!("creating {}", config.metadata_log_dir.display()),
        source,
    })?;
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    let _metadata_log_dir_lock = if same_dir(&config.metadata_log_dir, &config.data_dir) {
        None
    } else {
        Some(lock_data_dir(&config.metadata_log_dir)?)
    };
    // Under the locks: no other process formats these directories meanwhile.
    let cluster_id = meta_properties::ensure(
        &[&config.data_dir, &config.metadata_log_dir],
        config.node_id,
        config.cluster_id,
    )?;
    tracing::info!(%cluster_id, node_id = config.node_id, "cluster identity checked");
    config.cluster_id = Some(cluster_id);
    wait_for_listener_free(config.listener)?;
    let controller = Controller::open(&config).map_err(|source| BrokerError::Controller {
        dir: config.metadata_log_dir.clone(),
        source,
    })?;
    let engine = engine_config(&config, &controller);
    let mut group_settings = CoordinatorSettings::from_config(&config);
    if let Some(existing) = controller
        .image()
        .topics
        .get(topics::CONSUMER_OFFSETS_TOPIC)
    {
        // Groups were placed by the partition count the topic has.
        if existing.partition_count() != group_settings.partitions {
            tracing::warn!(
                configured = group_settings.partitions,
                existing = existing.partition_count(),
                "offsets.topic.num.partitions differs from __consumer_offsets; using the topic's"
            );
        }
        group_settings.partitions = existing.partition_count();
    }
    let groups = Arc::new(GroupCoordinator::new(group_settings));
    let image_follower = Arc::new(ImageFollower::default());
    let replication = Arc::new(Replication::new(config.node_id, config.replication.clone()));
    let config = Arc::new(config);
    let heartbeat_interval = config.cluster.broker_heartbeat_interval;
    let shard_controller = Arc::clone(&controller);
    let shards_stop = Arc::new(AtomicBool::new(false));
    let shutdown = spawn_controlled_shutdown(
        &controller,
        CONTROLLED_SHUTDOWN_HEARTBEATS * heartbeat_interval,
        stop,
        Arc::clone(&shards_stop),
    );
    let stop = Arc::clone(&shards_stop);
    // Bound before the shards start (a taken address fails the start, a
    // port 0 is picked once); each socket listens, in shard order, once
    // its shard serves ([`steering`]).
    let listeners = Arc::new(ShardListeners::bind(config.listener, config.cores).map_err(
        |source| BrokerError::Io {
            context: format!("binding {}", config.listener),
            source,
        },
    )?);
    let outcomes = shard::run(&engine, move |shard| {
        let broker = Broker::new(
            shard,
            config.clone(),
            shard_controller.clone(),
            groups.clone(),
            image_follower.clone(),
            replication.clone(),
            stop.clone(),
        );
        serve_shard(broker, Arc::clone(&listeners))
    });
    drop(engine);
    // The shards ended (stopped, or a listener failed): the shutdown
    // thread has nothing left to move.
    shards_stop.store(true, Ordering::Relaxed);
    let controller_failure = shutdown.join().unwrap_or_else(|_| {
        tracing::warn!("the controlled shutdown thread panicked");
        None
    });
    shut_down_controller(controller, heartbeat_interval);
    if let Some(reason) = controller_failure {
        return Err(BrokerError::ControllerFailed { reason });
    }
    outcomes?.into_iter().collect()
}

/// How often the shutdown thread looks at the signal flag and the quorum.
const STOP_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits for `stop` (a signal), then moves this broker's leaderships to
/// other in-sync replicas while the shards still serve (Kafka's controlled
/// shutdown, [`Controller::shut_down_controlled`]: clients see
/// `NOT_LEADER_OR_FOLLOWER` and go to the new leaders; nothing waits for a
/// session to expire), then sets `shards_stop`. Bounded by `timeout`: the
/// last nodes of a stopping cluster have no quorum to ask, and stop anyway.
///
/// If this node's quorum member fails meanwhile (openraft stops on a
/// metadata log it cannot write, a full disk or no descriptors left), the
/// broker stops too and the thread returns why: it could neither follow
/// the image nor vote, and serving on would answer clients from a frozen
/// view while the cluster moved on. Kafka's controller halts the process
/// on such faults; a supervisor restarts it.
fn spawn_controlled_shutdown(
    controller: &Arc<Controller>,
    timeout: std::time::Duration,
    stop: Arc<AtomicBool>,
    shards_stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Option<String>> {
    let controller = Arc::downgrade(controller);
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if shards_stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(reason) = controller
                .upgrade()
                .and_then(|controller| controller.failure())
            {
                tracing::error!(%reason, "the controller quorum member failed; stopping");
                shards_stop.store(true, Ordering::Relaxed);
                return Some(reason);
            }
            std::thread::sleep(STOP_POLL_INTERVAL);
        }
        if let Some(controller) = controller.upgrade() {
            let started = std::time::Instant::now();
            match controller.shut_down_controlled(timeout) {
                Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "leaderships moved away"),
                Err(error) => tracing::warn!(%error, "controlled shutdown incomplete"),
            }
        }
        shards_stop.store(true, Ordering::Relaxed);
        None
    })
}

/// How many heartbeat intervals a controlled shutdown waits for
/// leaderships to move: one commit moves them all when a quorum answers.
const CONTROLLED_SHUTDOWN_HEARTBEATS: u32 = 2;

/// The engine's settings from the broker's, partitions' log configs looked
/// up in the controller's image.
fn engine_config(config: &BrokerConfig, controller: &Arc<Controller>) -> EngineConfig {
    let mut engine = EngineConfig::new(&config.data_dir);
    engine.shards = config.cores;
    engine.retention_check_interval = config.retention_check_interval;
    engine.cleaner = CleanerConfig {
        enabled: config.cleaner_enable,
        dedupe_buffer_bytes_per_shard: config.cleaner_dedupe_buffer_size / config.cores.max(1),
        backoff: std::time::Duration::from_millis(config.cleaner_backoff_ms),
    };
    // Weak: shard state the executors leave behind at exit holds copies of
    // the engine's config, and the controller must have no other holder
    // when it is shut down.
    engine.log_config_for = {
        let controller = Arc::downgrade(controller);
        let defaults = config.log_defaults.clone();
        Arc::new(move |partition| {
            controller.upgrade().map_or_else(
                || defaults.clone(),
                |controller| controller.log_config_for(&partition.topic),
            )
        })
    };
    engine
}

/// Once the shards are gone: asks the quorum to fence this broker (the
/// end of a controlled shutdown; its leaderships moved before the shards
/// stopped, [`spawn_controlled_shutdown`]), bounded by a heartbeat
/// interval, then stops the quorum through its handle.
fn shut_down_controller(controller: Arc<Controller>, heartbeat_interval: std::time::Duration) {
    controller.fence_for_shutdown(heartbeat_interval);
    match Arc::try_unwrap(controller) {
        Ok(controller) => {
            if let Err(error) = controller.shutdown() {
                tracing::warn!(%error, "the controller quorum stopped with an error");
            }
        }
        Err(controller) => {
            tracing::warn!(
                holders = Arc::strong_count(&controller),
                "the controller is still in use at shutdown"
            );
        }
    }
}

/// One shard's life: settles the partitions it recovered, on shard 0 first
/// brings the partitions in line with the metadata image and keeps
/// following it ([`image_follower`]) and starts the group coordinator,
/// then serves clients on its socket of `listeners` until the broker
/// stops.
async fn serve_shard(
    broker: Rc<Broker>,
    listeners: Arc<ShardListeners>,
) -> Result<(), BrokerError> {
    partition::commit_recovered_partitions(&broker).await;
    let follower = if broker.shard.id() == 0 {
        image_follower::start(&broker).await;
        let follower = glommio::spawn_local(image_follower::follow(Rc::clone(&broker)));
        start_group_coordinator(&broker);
        Some(follower)
    } else {
        None
    };
    let roles = glommio::spawn_local(replication::run(Rc::clone(&broker)));
    let outcome = server::serve(Rc::clone(&broker), &listeners).await;
    if let Err(error) = &outcome {
        tracing::error!(%error, "listener failed");
    }
    // They end once the broker stops; a listener that never listened never
    // stops it, and dropping them cancels them instead.
    if let (Some(follower), Ok(())) = (follower, &outcome) {
        follower.await;
    }
    if outcome.is_ok() {
        roles.await;
    }
    outcome
}

/// The file in the data directory that one broker process holds locked, as
/// Kafka's `.lock` in every log directory.
pub const DATA_DIR_LOCK_FILE: &str = ".lock";

/// Locks `data_dir` for this process (`flock`, released when the returned
/// file is dropped or the process dies, even by `kill -9`): two brokers on
/// one directory would interleave writes to the same segments.
fn lock_data_dir(data_dir: &Path) -> Result<File, BrokerError> {
    let path = data_dir.join(DATA_DIR_LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BrokerError::Io {
            context: format!("opening {}", path.display()),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(BrokerError::Io {
            context: format!(
                "locking {}: another fjord process is using this data directory",
                path.display()
            ),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

/// Fails if a socket already listens on `address`. Every shard listens on it
/// with `SO_REUSEPORT`, which the kernel grants to any socket of the same
/// user that also sets it: without this check a second broker would start
/// and silently take a share of the first one's connections. A test bind
/// cannot tell a listener from the connections a killed broker left behind
/// (those would refuse it too), so the kernel's table of listening sockets
/// is read instead. A broker killed a moment ago leaves its listening
/// sockets there until the kernel tears down its io_uring instances, so a
/// taken address is polled for [`LISTENER_RELEASE_WAIT`] before giving up.
fn wait_for_listener_free(address: SocketAddr) -> Result<(), BrokerError> {
    let deadline = std::time::Instant::now() + LISTENER_RELEASE_WAIT;
    loop {
        match ensure_listener_free(address) {
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(%error, "waiting for the listener address to be released");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            outcome => return outcome,
        }
    }
}

/// How long startup waits for a listener address that is still taken.
const LISTENER_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Fails if a socket listens on `address` now.
fn ensure_listener_free(address: SocketAddr) -> Result<(), BrokerError> {
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok());
    let taken = tables
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(listening_socket)
                .collect::<Vec<_>>()
        })
        .any(|(ip, port)| {
            port == address.port()
                && (ip.is_unspecified() || address.ip().is_unspecified() || ip == address.ip())
        });
    if taken {
        return Err(BrokerError::Io {
            context: format!("listening on {address}"),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "the address is in use by another process",
            ),
        });
    }
    Ok(())
}

/// The address of a socket in `LISTEN` state from one line of
/// `/proc/net/tcp` or `/proc/net/tcp6` (`sl local_address rem_address st
/// ...`, addresses as hex words in host byte order, then `:PORT` in hex).
fn listening_socket(line: &str) -> Option<(std::net::IpAddr, u16)> {
    const LISTEN: &str = "0A";
    let mut fields = line.split_whitespace();
    let local = fields.nth(1)?;
    if fields.nth(1)? != LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|word| u32::from_str_radix(&ip[word * 8..word * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
        }
        _ => return None,
    };
    Some((ip, port))
}

/// Runs the group coordinator ([`groups::run`]: loading and unloading
/// the groups of the `__consumer_offsets` partitions as their leadership
/// changes, and their expiry) in the background of shard 0, so that the
/// other requests are served meanwhile (group requests answer
/// `COORDINATOR_LOAD_IN_PROGRESS` until their partition is loaded). The
/// topic is created at the first FindCoordinator
/// ([`handlers::find_coordinator`]).
fn start_group_coordinator(broker: &Rc<Broker>) {
    glommio::spawn_local(groups::run(Rc::clone(broker))).detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_read_from_the_kernel_tables() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            listening_socket(v4),
            Some(("127.0.0.1".parse().unwrap(), 8080))
        );
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(listening_socket(&established), None);
        let v6_any = "   1: 00000000000000000000000000000000:2384 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        assert_eq!(
            listening_socket(v6_any),
            Some(("::".parse().unwrap(), 9092))
        );
        assert_eq!(
            listening_socket("  sl  local_address rem_address   st"),
            None
        );
    }

    #[test]
    fn a_port_this_process_listens_on_is_refused_and_a_free_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = listener.local_addr().unwrap();
        assert!(ensure_listener_free(taken).is_err());
        let any = SocketAddr::new("0.0.0.0".parse().unwrap(), taken.port());
        assert!(ensure_listener_free(any).is_err());
        drop(listener);
        assert!(ensure_listener_free(taken).is_ok());
    }
}
