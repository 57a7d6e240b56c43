//! fjord-broker: the Kafka wire protocol on fjord's storage engine.
//!
//! A thin shell: every shard of the engine also runs a listener on the
//! broker port; requests are decoded with the `kafka-protocol` crate's
//! generated codecs, served by one handler per API (`handlers/`), and turned
//! into partition operations routed to the owning shard. Cluster metadata
//! (topics, partitions, configs, producer ids) lives in the controller's
//! image.

pub mod config;
pub mod error;
pub mod fetch_codec;
pub mod groups;
pub mod handlers;
pub mod metadata;
pub mod recompress;
pub mod server;
pub mod topics;

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use fjord_engine::shard::{self, EngineConfig};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::groups::{CoordinatorSettings, GroupCoordinator};
use crate::metadata::Controller;
use crate::server::Broker;

/// Runs a broker until `stop` is set, then shuts down cleanly: stops
/// accepting, finishes requests already read, flushes and checkpoints every
/// partition.
///
/// # Errors
/// [`BrokerError`] if the metadata cannot be loaded, the engine cannot start,
/// or the listener cannot bind.
pub fn run(config: BrokerConfig, stop: Arc<AtomicBool>) -> Result<(), BrokerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| BrokerError::Io {
        context: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let controller = Arc::new(
        Controller::open(&config.data_dir, config.log_defaults.clone()).map_err(|reason| {
            BrokerError::Config {
                key: "log.dirs".to_owned(),
                value: config.data_dir.display().to_string(),
                reason,
            }
        })?,
    );
    let mut engine = EngineConfig::new(&config.data_dir);
    engine.shards = config.cores;
    engine.log_config_for = {
        let controller = controller.clone();
        Arc::new(move |partition| controller.log_config_for(&partition.topic))
    };
    let mut group_settings = CoordinatorSettings::from_config(&config);
    if let Some(existing) = controller
        .image()
        .topics
        .get(topics::CONSUMER_OFFSETS_TOPIC)
    {
        // Groups were placed by the partition count the topic has.
        if existing.partitions != group_settings.partitions {
            tracing::warn!(
                configured = group_settings.partitions,
                existing = existing.partitions,
                "offsets.topic.num.partitions differs from __consumer_offsets; using the topic's"
            );
        }
        group_settings.partitions = existing.partitions;
    }
    let groups = Arc::new(GroupCoordinator::new(group_settings));
    let config = Arc::new(config);
    let outcomes = shard::run(&engine, move |shard| {
        let broker = Broker::new(
            shard,
            config.clone(),
            controller.clone(),
            groups.clone(),
            stop.clone(),
        );
        async move {
            topics::commit_recovered_partitions(&broker).await;
            if broker.shard.id() == 0 {
                topics::reconcile_partitions(&broker).await;
                start_group_coordinator(&broker);
            }
            let outcome = server::serve(Rc::clone(&broker)).await;
            if let Err(error) = &outcome {
                tracing::error!(%error, "listener failed");
            }
            outcome.map_err(|error| error.to_string())
        }
    })?;
    for outcome in outcomes {
        outcome.map_err(|reason| BrokerError::Io {
            context: "serving".to_owned(),
            source: std::io::Error::other(reason),
        })?;
    }
    Ok(())
}

/// Creates `__consumer_offsets` if needed, loads the groups from it, then
/// runs their expiry, in the background of shard 0 so that the other
/// requests are served meanwhile (group requests answer
/// `COORDINATOR_LOAD_IN_PROGRESS` until the load ends).
fn start_group_coordinator(broker: &Rc<Broker>) {
    let broker = Rc::clone(broker);
    glommio::spawn_local(async move {
        if let Err(error) = topics::ensure_consumer_offsets(&broker).await {
            tracing::error!(
                error = %error.message,
                "cannot create __consumer_offsets; groups stay unavailable"
            );
            return;
        }
        groups::load(&broker).await;
        groups::run_expiry(broker).await;
    })
    .detach();
}
