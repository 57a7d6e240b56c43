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

pub mod legacy;
pub mod log;
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
                name: "PLAINTEXT".to_owned(),
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                security_protocol: PLAINTEXT,
            }],
            rack: None,
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
        if replication_factor != 1 {
            return Err(MetadataError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
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
        validate_only: bool,
    ) -> Result<i32, MetadataError> {
        let mut state = self.lock();
        let topic = state.topic(name)?;
        let previous = topic.partition_count();
        check_partition_increase(previous, count)?;
        if !validate_only {
            let records = self.new_partitions(topic.id, previous..count);
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
        records.extend(self.new_partitions(topic_id, 0..partitions));
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

    /// The `PartitionRecord`s of new partitions `indexes` of a topic: every
    /// replica on this node (the only broker), in the ISR and leading at
    /// epoch 0. The cluster issue places replicas over the registered
    /// brokers.
    fn new_partitions(&self, topic_id: TopicId, indexes: Range<i32>) -> Vec<MetadataRecord> {
        indexes
            .map(|partition_id| {
                MetadataRecord::Partition(PartitionRecord {
                    partition_id,
                    topic_id,
                    replicas: vec![self.node],
                    isr: vec![self.node],
                    removing_replicas: Vec::new(),
                    adding_replicas: Vec::new(),
                    leader: self.node,
                    leader_epoch: LeaderEpoch(0),
                    partition_epoch: PartitionEpoch(0),
                })
            })
            .collect()
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

    /// A new idempotent producer id, never handed out before, even across
    /// restarts: ids come from a block whose `ProducerIdsRecord` is durable
    /// before the first of them is returned.
    ///
    /// # Errors
    /// `KAFKA_STORAGE_ERROR` if a new block cannot be persisted.
    ///
    /// # Panics
    /// Never: a block taken here holds [`PRODUCER_ID_BLOCK`] ids.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut state = self.lock();
        if state.producer_ids.is_empty() {
            let start = state.image.next_producer_id.0;
            let end = start + PRODUCER_ID_BLOCK;
            let record = MetadataRecord::ProducerIds(ProducerIdsRecord {
                broker_id: self.node,
                broker_epoch: state.broker_epoch,
                next_producer_id: ProducerId(end),
            });
            self.commit(&mut state, &[record])?;
            state.producer_ids = start..end;
        }
        Ok(state
            .producer_ids
            .next()
            .expect("a block holds PRODUCER_ID_BLOCK ids"))
    }
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
