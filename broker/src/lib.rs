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
pub mod fetch_session;
pub mod handlers;
pub mod metadata;
pub mod recompress;
pub mod server;
pub mod topics;

use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use fjord_engine::shard::{self, CleanerConfig, EngineConfig};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
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
    engine.cleaner = CleanerConfig {
        enabled: config.cleaner_enable,
        dedupe_buffer_bytes_per_shard: config.cleaner_dedupe_buffer_size / config.cores.max(1),
        backoff: std::time::Duration::from_millis(config.cleaner_backoff_ms),
    };
    engine.log_config_for = {
        let controller = controller.clone();
        Arc::new(move |partition| controller.log_config_for(&partition.topic))
    };
    let config = Arc::new(config);
    let outcomes = shard::run(&engine, move |shard| {
        let broker = Broker::new(shard, config.clone(), controller.clone(), stop.clone());
        async move {
            topics::commit_recovered_partitions(&broker).await;
            if broker.shard.id() == 0 {
                topics::reconcile_partitions(&broker).await;
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
