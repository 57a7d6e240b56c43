//! The controller: turns metadata changes into records, makes them durable
//! in the metadata log, and publishes the image they give.
//!
//! Every change (create, grow or delete a topic, alter its configs, take a
//! producer id block, register this broker at start) is validated against
//! the current image with Kafka's rules and errors, turned into
//! [`MetadataRecord`]s, applied to a copy of the image (which checks the
//! records' own invariants), appended to the [`log::MetadataLog`] and
//! synced, and only then published: the new image is swapped in atomically
//! and the change acknowledged. A topic a client saw created survives a
//! restart, and a producer id is never handed out before the block holding
//! it is durable. Every [`SNAPSHOT_INTERVAL_RECORDS`] records, and at clean
//! shutdown, the image is written as a snapshot so a start replays a
//! bounded number of records.
//!
//! On one node the controller is local and changes are serialized by a
//! mutex; the cluster issue replaces the local log with a Raft quorum
//! (openraft) ordering the same records. Changes run on a shard's blocking
//! pool ([`crate::topics::on_controller`]): they wait for an `fdatasync`.

pub mod election;
pub mod legacy;
pub mod liveness;
pub mod log;
pub mod placement;
pub mod quorum;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use fjord_engine::config::LogConfig;
use fjord_engine::error::Corruption;
use fjord_engine::{LeaderEpoch, ProducerId};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::metadata::records::{
    BrokerEndpoint, BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType, MetadataRecord,
    PartitionEpoch, PartitionRecord, ProducerIdsRecord, RegisterBrokerRecord, RemoveTopicRecord,
    TopicId, TopicRecord,
};
use crate::metadata::{ApplyError, MetadataImage, TopicImage};
use log::{LogError, MetadataLog, METADATA_LOG_DIR_NAME};
use placement::{place_replicas, PlacementBroker, PlacementError, PlacementStart};

/// Producer ids are handed out from persisted blocks of this size, so a
/// restart never reuses one.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;
/// Records between two snapshots of the image: what a start replays at
/// most, besides the last change.
pub const SNAPSHOT_INTERVAL_RECORDS: u64 = 1000;
/// Kafka's `SecurityProtocol` id of `PLAINTEXT`, the only listener kind.
const PLAINTEXT: i16 = 0;

/// The metadata quorum: who leads it and how far each voter has the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumView {
    /// The leader (the active controller), or [`BrokerId::NONE`].
    pub leader: BrokerId,
    /// The leader's epoch (its Raft term).
    pub leader_epoch: i32,
    /// The offset after the last committed metadata record.
    pub high_watermark: i64,
    /// The voters.
    pub voters: Vec<VoterView>,
}

/// One voter of the metadata quorum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoterView {
    /// Its node id.
    pub id: BrokerId,
    /// The offset after the last record it holds, as the leader knows it.
    pub log_end_offset: i64,
    /// When the leader last heard from it (ms since the epoch), if known.
    pub last_fetch_ms: Option<i64>,
    /// When it last had everything the leader had, if known.
    pub last_caught_up_ms: Option<i64>,
}

/// A failed metadata change: the Kafka error and a message for the client.
#[derive(Debug)]
pub struct MetadataError {
    /// The Kafka error code.
    pub code: i16,
    /// What was wrong.
    pub message: String,
}

impl std::fmt::Display for MetadataError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.message)
    }
}

impl std::error::Error for MetadataError {}

/// Why the controller cannot start: [`Controller::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The metadata log cannot be read, cut or created, or is corrupt.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The records recovered from the log do not apply to the image.
    #[error("replaying {}: {source}", dir.display())]
    Replay {
        /// The metadata log directory.
        dir: PathBuf,
        /// The record's fault.
        #[source]
        source: ApplyError,
    },
    /// Reading, removing or syncing the legacy metadata file (or the data
    /// directory holding it) failed.
    #[error("{context} {}: {source}", path.display())]
    LegacyIo {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The legacy metadata file does not decode; it is kept.
    #[error("{}: {source}", path.display())]
    CorruptLegacy {
        /// The legacy file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Corruption,
    },
    /// The records converted from the legacy file do not apply to the
    /// image; the file is kept.
    #[error("converting {}: {source}", path.display())]
    ConvertLegacy {
        /// The legacy file.
        path: PathBuf,
        /// The record's fault.
        #[source]
        source: ApplyError,
    },
    /// This broker's registration could not be made durable.
    #[error("registering broker {node}: {source}")]
    Register {
        /// This broker's id.
        node: i32,
        /// The controller's error.
        #[source]
        source: MetadataError,
    },
}

impl MetadataError {
    fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: error.code(),
            message: message.into(),
        }
    }
}

impl From<LogError> for MetadataError {
    fn from(error: LogError) -> Self {
        Self::new(ResponseError::KafkaStorageError, error.to_string())
    }
}

impl From<ApplyError> for MetadataError {
    /// The controller validates every change before it makes records, so a
    /// record the image refuses is a controller bug: reported, not applied.
    fn from(error: ApplyError) -> Self {
        tracing::error!(%error, "the controller made a metadata record that does not apply");
        Self::new(
            ResponseError::UnknownServerError,
            format!("metadata record refused: {error}"),
        )
    }
}

struct ControllerState {
    log: MetadataLog,
    /// The published image: every record in the log applied.
    image: Arc<MetadataImage>,
    /// This broker's registration epoch.
    broker_epoch: BrokerEpoch,
    /// Ids of the current producer id block not handed out yet.
    producer_ids: Range<i64>,
}

/// Owns the metadata log and image; see the module documentation.
pub struct Controller {
    node: BrokerId,
    log_defaults: LogConfig,
    state: Mutex<ControllerState>,
    image: ArcSwap<MetadataImage>,
}

impl Controller {
    /// Recovers the metadata log in `config.metadata_log_dir` (creating an
    /// empty one), upgrades a legacy metadata file of `config.data_dir`
    /// into it, and registers this broker.
    ///
    /// # Errors
    /// [`OpenError`] naming the file and operation if the log or the
    /// legacy file cannot be read or is corrupt, or if the registration
    /// cannot be written.
    pub fn open(config: &BrokerConfig) -> Result<Self, OpenError> {
        let dir = config.metadata_log_dir.join(METADATA_LOG_DIR_NAME);
        let (mut log, recovered) = MetadataLog::open(&dir)?;
        let recovery_error = |source| OpenError::Replay {
            dir: dir.clone(),
            source,
        };
        let mut image = MetadataImage::default()
            .apply(&recovered.snapshot)
            .map_err(recovery_error)?;
        for batch in &recovered.batches {
            image = image.apply(batch).map_err(recovery_error)?;
        }
        tracing::info!(
            dir = %dir.display(),
            replayed = recovered.batches.iter().map(Vec::len).sum::<usize>(),
            cut_bytes = recovered.cut_bytes,
            "metadata log recovered"
        );
        let node = BrokerId(config.node_id);
        let image = upgrade_legacy_file(&config.data_dir, &mut log, image, node)?;
        let controller = Self {
            node,
            log_defaults: config.log_defaults.clone(),
            image: ArcSwap::from_pointee(image.clone()),
            state: Mutex::new(ControllerState {
                log,
                image: Arc::new(image),
                broker_epoch: BrokerEpoch::NONE,
                producer_ids: 0..0,
            }),
        };
        controller
            .register(config)
            .map_err(|source| OpenError::Register {
                node: config.node_id,
                source,
            })?;
        Ok(controller)
    }

    fn lock(&self) -> MutexGuard<'_, ControllerState> {
        // A panic while holding the lock cannot leave the state half-changed:
        // the image is replaced only after its records are durable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current image.
    #[must_use]
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    /// The metadata quorum as `DescribeQuorum` reports it. The local
    /// controller is a quorum of one voter, this node, which leads it (its
    /// only election, epoch 1) and has every record it committed.
    #[must_use]
    pub fn quorum(&self) -> QuorumView {
        let high_watermark = self.lock().log.next_offset().0;
        QuorumView {
            leader: self.node,
            leader_epoch: 1,
            high_watermark,
            voters: vec![VoterView {
                id: self.node,
                log_end_offset: high_watermark,
                last_fetch_ms: None,
                last_caught_up_ms: None,
            }],
        }
    }

    /// Applies `records` to the image, appends them to the log (synced),
    /// then publishes the new image; snapshots the image when
    /// [`SNAPSHOT_INTERVAL_RECORDS`] have passed since the last snapshot.
    fn commit(
        &self,
        state: &mut ControllerState,
        records: &[MetadataRecord],
    ) -> Result<Arc<MetadataImage>, MetadataError> {
        if records.is_empty() {
            return Ok(Arc::clone(&state.image));
        }
        let next = Arc::new(state.image.apply(records)?);
        state.log.append(records)?;
        state.image = Arc::clone(&next);
        self.image.store(Arc::clone(&next));
        if state.log.records_since_snapshot() >= SNAPSHOT_INTERVAL_RECORDS {
            // The change is durable and published whatever happens here.
            if let Err(error) = state.log.snapshot(&next.records()) {
                tracing::warn!(%error, "cannot snapshot the metadata image");
            }
        }
        Ok(next)
    }

    /// Registers this broker (a new epoch for each start).
    fn register(&self, config: &BrokerConfig) -> Result<(), MetadataError> {
        let mut state = self.lock();
        let broker_epoch = BrokerEpoch(state.log.next_offset().0);
        let record = MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: self.node,
            incarnation_id: *Uuid::new_v4().as_bytes(),
            broker_epoch,
            endpoints: vec![BrokerEndpoint {
                name: crate::advertised::CLIENT_LISTENER.to_owned(),
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                security_protocol: PLAINTEXT,
            }],
            rack: config.cluster.broker_rack.clone(),
            // Fencing needs heartbeats, which come with the cluster: the
            // only broker is live while it runs.
            fenced: false,
        });
        self.commit(&mut state, &[record])?;
        state.broker_epoch = broker_epoch;
        Ok(())
    }

    /// Snapshots the image if records were appended since the last
    /// snapshot, so the next start replays none (clean shutdown).
    ///
    /// # Errors
    /// The log's error if the snapshot cannot be written.
    pub fn snapshot(&self) -> Result<(), LogError> {
        let mut state = self.lock();
        let records = state.image.records();
        state.log.snapshot(&records)
    }

    /// The log configuration of `topic`: broker defaults plus its overrides.
    #[must_use]
    pub fn log_config_for(&self, topic: &str) -> LogConfig {
        let mut config = self.log_defaults.clone();
        if let Some(metadata) = self.image().topics.get(topic) {
            for (key, value) in &metadata.configs {
                // Overrides were validated when set.
                let _ = config.set(key, value);
            }
        }
        config
    }

    /// The override of config `key` for `topic`, if it has one.
    #[must_use]
    pub fn topic_config(&self, topic: &str, key: &str) -> Option<String> {
        self.image()
            .topics
            .get(topic)?
            .config(key)
            .map(str::to_owned)
    }

    /// Validates a topic creation without making it.
    ///
    /// # Errors
    /// `INVALID_TOPIC_EXCEPTION`, `INVALID_REQUEST` (for Kafka's reserved
    /// `__cluster_metadata`), `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`, `INVALID_CONFIG` or
    /// `TOPIC_ALREADY_EXISTS`, with a message.
    pub fn validate_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        self.validate_topic_in(&self.image(), name, partitions, replication_factor, configs)
    }

    fn validate_topic_in(
        &self,
        image: &MetadataImage,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        if !fjord_engine::types::is_valid_topic_name(name) {
            return Err(MetadataError::new(
                ResponseError::InvalidTopicException,
                format!("topic name {name:?} must be 1-249 characters of [a-zA-Z0-9._-] and not . or .."),
            ));
        }
        if name == fjord_engine::types::CLUSTER_METADATA_TOPIC {
            return Err(MetadataError::new(
                ResponseError::InvalidRequest,
                format!("Creation of internal topic {name} is prohibited."),
            ));
        }
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(MetadataError::new(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be between 1 and {PARTITIONS_MAX}"),
            ));
        }
        // The same check placement makes, before anything else is built.
        place_replicas(
            &placement_brokers(image),
            0..0,
            replication_factor,
            PlacementStart::from_seed([0; 16]),
        )
        .map_err(placement_error)?;
        let config = self.validate_topic_configs(configs)?;
        if image.topics.contains_key(name) {
            return Err(MetadataError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        Ok(config)
    }

    /// Validates a topic's config overrides (Kafka names, values Kafka would
    /// accept) and returns the log configuration they give: the broker
    /// defaults with the overrides applied.
    ///
    /// # Errors
    /// `INVALID_CONFIG` for an unknown name or a bad value, with a message.
    pub fn validate_topic_configs(
        &self,
        configs: &[(String, String)],
    ) -> Result<LogConfig, MetadataError> {
        let mut config = self.log_defaults.clone();
        for (key, value) in configs {
            if BROKER_SIDE_TOPIC_CONFIGS.contains(&key.as_str()) {
                validate_broker_side_topic_config(key, value)?;
                continue;
            }
            config.set(key, value).map_err(|error| {
                MetadataError::new(ResponseError::InvalidConfig, error.to_string())
            })?;
        }
        Ok(config)
    }

    /// Replaces the config overrides of `name` with what `new_overrides`
    /// computes from the current ones (AlterConfigs replaces them all,
    /// IncrementalAlterConfigs edits them), validated like CreateTopics: a
    /// `ConfigRecord` per override set, changed or removed, durable before
    /// it is published. With `validate_only` nothing changes. Returns the
    /// topic's new log configuration, for its live partitions.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `new_overrides`' error,
    /// `INVALID_REQUEST` for a key given twice, `INVALID_CONFIG`, or
    /// `KAFKA_STORAGE_ERROR` if it cannot be persisted.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        validate_only: bool,
        new_overrides: impl FnOnce(&[(String, String)]) -> Result<Vec<(String, String)>, MetadataError>,
    ) -> Result<LogConfig, MetadataError> {
        let mut state = self.lock();
        let topic = state.topic(name)?;
        let mut overrides = new_overrides(&topic.configs)?;
        overrides.sort();
        if let Some(pair) = overrides.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(MetadataError::new(
                ResponseError::InvalidRequest,
                format!("duplicate config key {}", pair[0].0),
            ));
        }
        let config = self.validate_topic_configs(&overrides)?;
        if validate_only {
            return Ok(config);
        }
        let config_record = |key: &str, value: Option<&str>| {
            MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: name.to_owned(),
                name: key.to_owned(),
                value: value.map(str::to_owned),
            })
        };
        let removed = topic
            .configs
            .iter()
            .filter(|(key, _)| !overrides.iter().any(|(new_key, _)| new_key == key))
            .map(|(key, _)| config_record(key, None));
        let set = overrides
            .iter()
            .filter(|(key, value)| topic.config(key) != Some(value.as_str()))
            .map(|(key, value)| config_record(key, Some(value)));
        let records: Vec<MetadataRecord> = removed.chain(set).collect();
        self.commit(&mut state, &records)?;
        tracing::info!(topic = name, "altered topic configs");
        Ok(config)
    }

    /// Grows `name` to `count` partitions (CreatePartitions), durable before
    /// it is published. With `validate_only` nothing changes. Returns the
    /// previous partition count; the new partitions are the caller's to
    /// create on their shards.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `INVALID_PARTITIONS` unless
    /// `count` is larger than the current count and at most
    /// [`PARTITIONS_MAX`], or `KAFKA_STORAGE_ERROR`.
    pub fn add_partitions(
        &self,
        name: &str,
        count: i32,
        assignment: Option<&[Vec<BrokerId>]>,
        validate_only: bool,
    ) -> Result<i32, MetadataError> {
        let mut state = self.lock();
        let topic = state.topic(name)?;
        let previous = topic.partition_count();
        check_partition_increase(previous, count)?;
        if !validate_only {
            let replication_factor = topic
                .partitions
                .first()
                .map_or(1, |partition| partition.replicas.len() as i16);
            let records = new_partitions(
                &state.image,
                topic.id,
                previous..count,
                replication_factor,
                assignment,
            )?;
            self.commit(&mut state, &records)?;
        }
        Ok(previous)
    }

    /// Creates a topic after [`Controller::validate_topic`]: its
    /// `TopicRecord`, a `PartitionRecord` per partition and a
    /// `ConfigRecord` per override, as one durable batch.
    ///
    /// # Errors
    /// As `validate_topic`, or `KAFKA_STORAGE_ERROR` if it cannot be
    /// persisted.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<&[Vec<BrokerId>]>,
        configs: Vec<(String, String)>,
    ) -> Result<Arc<TopicImage>, MetadataError> {
        let mut state = self.lock();
        self.validate_topic_in(&state.image, name, partitions, replication_factor, &configs)?;
        let topic_id = loop {
            let id = TopicId::from(Uuid::new_v4());
            if !id.is_zero() && state.image.topic_by_id(id.uuid()).is_none() {
                break id;
            }
        };
        let mut records = vec![MetadataRecord::Topic(TopicRecord {
            name: name.to_owned(),
            topic_id,
        })];
        records.extend(new_partitions(
            &state.image,
            topic_id,
            0..partitions,
            replication_factor,
            assignment,
        )?);
        records.extend(configs.into_iter().map(|(key, value)| {
            MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: name.to_owned(),
                name: key,
                value: Some(value),
            })
        }));
        let image = self.commit(&mut state, &records)?;
        Ok(Arc::clone(&image.topics[name]))
    }

    /// Removes a topic, its partitions and configs from the metadata (a
    /// `RemoveTopicRecord`) and returns it; its partitions' data is the
    /// caller's to delete.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if it does not exist, or
    /// `KAFKA_STORAGE_ERROR`.
    pub fn delete_topic(&self, name: &str) -> Result<Arc<TopicImage>, MetadataError> {
        let mut state = self.lock();
        let topic = state.topic(name)?;
        let record = MetadataRecord::RemoveTopic(RemoveTopicRecord { topic_id: topic.id });
        self.commit(&mut state, &[record])?;
        Ok(topic)
    }

    /// A new idempotent producer id for this broker, never handed out
    /// before, even across restarts: ids come from a block this broker took
    /// with [`Controller::allocate_producer_ids`], durable before the first
    /// of them is returned.
    ///
    /// # Errors
    /// As [`Controller::allocate_producer_ids`].
    ///
    /// # Panics
    /// Never: a block holds [`PRODUCER_ID_BLOCK`] ids.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut state = self.lock();
        if state.producer_ids.is_empty() {
            let epoch = state.broker_epoch;
            state.producer_ids = self.take_producer_id_block(&mut state, self.node, epoch)?;
        }
        Ok(state
            .producer_ids
            .next()
            .expect("a block holds PRODUCER_ID_BLOCK ids"))
    }

    /// `AllocateProducerIds`: the next block of [`PRODUCER_ID_BLOCK`]
    /// producer ids for broker `broker` at registration epoch `epoch`,
    /// durable before it is returned, so no two brokers and no two starts
    /// of one ever get the same id.
    ///
    /// # Errors
    /// `STALE_BROKER_EPOCH` unless `broker` is registered with `epoch`;
    /// `KAFKA_STORAGE_ERROR` if the block cannot be persisted.
    pub fn allocate_producer_ids(
        &self,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<Range<i64>, MetadataError> {
        let mut state = self.lock();
        self.take_producer_id_block(&mut state, broker, epoch)
    }

    fn take_producer_id_block(
        &self,
        state: &mut ControllerState,
        broker: BrokerId,
        epoch: BrokerEpoch,
    ) -> Result<Range<i64>, MetadataError> {
        let registered = state
            .image
            .brokers
            .get(&broker)
            .is_some_and(|registration| registration.epoch == epoch);
        if !registered {
            return Err(MetadataError::new(
                ResponseError::StaleBrokerEpoch,
                format!("broker {broker} is not registered with epoch {epoch}"),
            ));
        }
        let start = state.image.next_producer_id.0;
        let end = start + PRODUCER_ID_BLOCK;
        let record = MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: broker,
            broker_epoch: epoch,
            next_producer_id: ProducerId(end),
        });
        self.commit(state, &[record])?;
        Ok(start..end)
    }
}

/// The brokers replicas may be placed on: the registered, unfenced ones.
fn placement_brokers(image: &MetadataImage) -> Vec<PlacementBroker> {
    image
        .brokers
        .values()
        .filter(|broker| !broker.fenced)
        .map(|broker| PlacementBroker {
            id: broker.id,
            rack: broker.rack.clone(),
        })
        .collect()
}

fn placement_error(error: PlacementError) -> MetadataError {
    MetadataError::new(ResponseError::InvalidReplicationFactor, error.to_string())
}

/// The `PartitionRecord`s of new partitions `indexes` of a topic, their
/// replicas as the request's manual `assignment` gives them (one list per
/// new partition, checked by the handler), else placed over the unfenced
/// brokers as Kafka places them ([`placement`], striped from a start the
/// topic's id fixes, so a topic that grows keeps its striping); every
/// replica in the ISR (the partitions are empty) and the first one leading
/// at epoch 0.
fn new_partitions(
    image: &MetadataImage,
    topic_id: TopicId,
    indexes: Range<i32>,
    replication_factor: i16,
    assignment: Option<&[Vec<BrokerId>]>,
) -> Result<Vec<MetadataRecord>, MetadataError> {
    let placed = match assignment {
        Some(assignment) if assignment.len() == indexes.len() => assignment.to_vec(),
        Some(assignment) => {
            return Err(MetadataError::new(
                ResponseError::InvalidReplicaAssignment,
                format!(
                    "{} partition(s) are added, but {} assignment(s) were given",
                    indexes.len(),
                    assignment.len()
                ),
            ))
        }
        None => place_replicas(
            &placement_brokers(image),
            indexes.clone(),
            replication_factor,
            PlacementStart::from_seed(topic_id.0),
        )
        .map_err(placement_error)?,
    };
    if placed.iter().any(Vec::is_empty) {
        return Err(MetadataError::new(
            ResponseError::InvalidReplicaAssignment,
            "a partition's replica list is empty".to_owned(),
        ));
    }
    Ok(indexes
        .zip(placed)
        .map(|(partition_id, replicas)| {
            MetadataRecord::Partition(PartitionRecord {
                partition_id,
                topic_id,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            })
        })
        .collect())
}

/// Converts the legacy metadata file of `data_dir`, if there is one, into
/// records appended to the empty `log`, then removes the file once they
/// are durable. If the log already holds records, an earlier start
/// converted the file and crashed before removing it: it is only removed.
fn upgrade_legacy_file(
    data_dir: &Path,
    log: &mut MetadataLog,
    image: MetadataImage,
    node: BrokerId,
) -> Result<MetadataImage, OpenError> {
    let path = data_dir.join(legacy::LEGACY_METADATA_FILE);
    let io_error = |context, path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::LegacyIo {
            context,
            path,
            source,
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(image),
        Err(error) => return Err(io_error("reading", &path)(error)),
    };
    let image = if log.next_offset() == fjord_engine::Offset::ZERO {
        let legacy = legacy::decode(&bytes).map_err(|source| OpenError::CorruptLegacy {
            path: path.clone(),
            source,
        })?;
        let records = legacy::records(&legacy, node);
        let upgraded = image
            .apply(&records)
            .map_err(|source| OpenError::ConvertLegacy {
                path: path.clone(),
                source,
            })?;
        if !records.is_empty() {
            log.append(&records)?;
        }
        tracing::info!(
            path = %path.display(),
            topics = legacy.topics.len(),
            "converted the legacy metadata file into the metadata log"
        );
        upgraded
    } else {
        image
    };
    std::fs::remove_file(&path).map_err(io_error("removing", &path))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing", data_dir))?;
    Ok(image)
}

impl ControllerState {
    /// The topic named `name` in the published image.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if there is none.
    fn topic(&self, name: &str) -> Result<Arc<TopicImage>, MetadataError> {
        self.image
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_topic(name))
    }
}

fn unknown_topic(name: &str) -> MetadataError {
    MetadataError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("unknown topic {name:?}"),
    )
}

/// Kafka's CreatePartitions rule: the count only grows, up to
/// [`PARTITIONS_MAX`].
fn check_partition_increase(current: i32, requested: i32) -> Result<(), MetadataError> {
    let reason = if requested == current {
        format!("topic already has {current} partitions")
    } else if requested < current {
        format!(
            "topic currently has {current} partitions, which is higher than the requested {requested}"
        )
    } else if requested > PARTITIONS_MAX {
        format!("number of partitions must be at most {PARTITIONS_MAX}")
    } else {
        return Ok(());
    };
    Err(MetadataError::new(ResponseError::InvalidPartitions, reason))
}

/// Topic configs the broker (not the engine) interprets; every other topic
/// config is one of [`LogConfig::KEYS`].
pub const BROKER_SIDE_TOPIC_CONFIGS: [&str; 2] = ["compression.type", "min.insync.replicas"];

/// Validates one of [`BROKER_SIDE_TOPIC_CONFIGS`].
fn validate_broker_side_topic_config(key: &str, value: &str) -> Result<(), MetadataError> {
    let valid = match key {
        "compression.type" => {
            ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"].contains(&value)
        }
        "min.insync.replicas" => value.parse::<i32>().is_ok_and(|replicas| replicas >= 1),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(MetadataError::new(
            ResponseError::InvalidConfig,
            format!("invalid value {value:?} for {key}"),
        ))
    }
}

#[cfg(test)]
mod tests;
