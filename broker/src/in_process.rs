//! One in-process broker for the crate's unit tests: the pieces `lib.rs`
//! wires together (a lone-voter controller, the engine's shards, the group
//! coordinator, the image follower, replication) built the same way, so a
//! test drives the real `Broker` of shard 0 without a process or a socket.
//! What each test starts on top (the image follower's loop, the
//! coordinator, topics) is the test's own business.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_engine::shard::{self, EngineConfig};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::groups::{CoordinatorSettings, GroupCoordinator};
use crate::image_follower::ImageFollower;
use crate::replication::Replication;
use crate::server::Broker;

/// How long a scenario may wait for the broker to act on a change.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `scenario` on shard 0 of a broker with two shards (one where the
/// machine has a single CPU) configured by `settings` over a fresh data
/// directory; the other shards serve shard 0's calls until it ends.
/// Returns what the scenario found wrong.
pub fn on_shard_zero<F, Fut>(settings: &[(&str, &str)], scenario: F) -> Result<(), String>
where
    F: Fn(Rc<Broker>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let data_dir = dir.path().display().to_string();
    let settings: Vec<(String, String)> = [("log.dirs", data_dir.as_str())]
        .iter()
        .chain(settings)
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    let config = BrokerConfig::load(&settings, &[]).map_err(|error| error.to_string())?;
    let controller = Controller::open(&config).map_err(|error| error.to_string())?;
    let mut engine = EngineConfig::new(&config.data_dir);
    engine.shards = engine.shards.min(2);
    engine.log_config_for = {
        let controller = Arc::clone(&controller);
        Arc::new(move |partition| controller.log_config_for(&partition.topic))
    };
    let groups = Arc::new(GroupCoordinator::new(CoordinatorSettings::from_config(
        &config,
    )));
    let follower = Arc::new(ImageFollower::default());
    let replication = Arc::new(Replication::new(config.node_id, config.replication.clone()));
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = shard::run(&engine, move |shard| {
        let broker = Broker::new(
            shard,
            Arc::clone(&config),
            Arc::clone(&controller),
            Arc::clone(&groups),
            Arc::clone(&follower),
            Arc::clone(&replication),
            Arc::clone(&stop),
        );
        let scenario = scenario.clone();
        async move {
            if broker.shard.id() != 0 {
                return Ok(());
            }
            scenario(broker).await
        }
    })
    .map_err(|error| error.to_string())?;
    outcomes.into_iter().collect()
}

/// Waits until `check` holds, failing after [`DEADLINE`].
pub async fn eventually<Fut: Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> Result<(), String> {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {DEADLINE:?}"));
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
