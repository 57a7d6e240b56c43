//! The cluster metadata image and the controller that owns it.
//!
//! Every handler reads topics, partitions and configs from one immutable
//! [`MetadataImage`], swapped atomically when the controller changes it, so
//! reads take no lock. Changes (create and delete topics, alter configs,
//! producer id blocks) go through the [`Controller`], which persists each new
//! image before publishing it: a topic a client saw created survives a
//! restart. On one node the controller is local; the cluster issue will feed
//! the same image from a replicated metadata log.

pub mod image;
pub mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use fjord_engine::checkpoint::{decode_frame, encode_frame};
use fjord_engine::config::LogConfig;
use kafka_protocol::ResponseError;
use uuid::Uuid;

/// File holding the metadata snapshot under the data directory.
pub const METADATA_FILE: &str = "cluster-metadata.snapshot";
const METADATA_MAGIC: [u8; 4] = *b"FJMD";
const METADATA_VERSION: u16 = 1;
/// Producer ids are handed out from persisted blocks of this size, so a
/// restart never reuses one.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 100_000;

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicMetadata {
    /// The topic name.
    pub name: String,
    /// The topic id (KIP-516), as 16 bytes.
    pub id: [u8; 16],
    /// Number of partitions.
    pub partitions: i32,
    /// Config overrides by Kafka name; the rest take the broker defaults.
    pub configs: Vec<(String, String)>,
}

impl TopicMetadata {
    /// The topic id as a UUID.
    #[must_use]
    pub fn uuid(&self) -> Uuid {
        Uuid::from_bytes(self.id)
    }
}

#[derive(Clone, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct PersistedMetadata {
    topics: Vec<TopicMetadata>,
    producer_id_block_end: i64,
}

/// The metadata every request sees.
#[derive(Clone, Debug, Default)]
pub struct MetadataImage {
    /// Topics by name.
    pub topics: BTreeMap<String, Arc<TopicMetadata>>,
}

impl MetadataImage {
    /// Whether `partition` exists: its topic does and has that index.
    #[must_use]
    pub fn contains(&self, partition: &fjord_engine::TopicPartition) -> bool {
        self.topics
            .get(&partition.topic)
            .is_some_and(|topic| (0..topic.partitions).contains(&partition.partition))
    }

    /// The topic with this id.
    #[must_use]
    pub fn topic_by_id(&self, id: Uuid) -> Option<&Arc<TopicMetadata>> {
        self.topics.values().find(|topic| topic.uuid() == id)
    }
}

/// A failed metadata change: the Kafka error and a message for the client.
#[derive(Debug)]
pub struct MetadataError {
    /// The Kafka error code.
    pub code: i16,
    /// What was wrong.
    pub message: String,
}

impl MetadataError {
    fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: error.code(),
            message: message.into(),
        }
    }
}

struct ControllerState {
    persisted: PersistedMetadata,
    next_producer_id: i64,
}

/// Owns the metadata image; see the module documentation.
pub struct Controller {
    path: PathBuf,
    log_defaults: LogConfig,
    state: Mutex<ControllerState>,
    image: ArcSwap<MetadataImage>,
}

impl Controller {
    /// Loads the persisted metadata under `data_dir` (an empty cluster if
    /// there is none).
    ///
    /// # Errors
    /// A message if the file exists but cannot be read or decoded.
    pub fn open(data_dir: &Path, log_defaults: LogConfig) -> Result<Self, String> {
        let path = data_dir.join(METADATA_FILE);
        let persisted = match std::fs::read(&path) {
            Ok(bytes) => {
                let payload = decode_frame(METADATA_MAGIC, METADATA_VERSION, &bytes)
                    .map_err(|reason| format!("{}: {reason}", path.display()))?;
                let mut aligned = rkyv::util::AlignedVec::<16>::new();
                aligned.extend_from_slice(payload);
                rkyv::from_bytes::<PersistedMetadata, rkyv::rancor::Error>(&aligned)
                    .map_err(|error| format!("{}: {error}", path.display()))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                PersistedMetadata::default()
            }
            Err(error) => return Err(format!("{}: {error}", path.display())),
        };
        let controller = Self {
            path,
            log_defaults,
            image: ArcSwap::from_pointee(MetadataImage::default()),
            state: Mutex::new(ControllerState {
                next_producer_id: persisted.producer_id_block_end,
                persisted,
            }),
        };
        controller.publish(&controller.lock());
        Ok(controller)
    }

    fn lock(&self) -> MutexGuard<'_, ControllerState> {
        // A panic while holding the lock cannot leave the state half-changed:
        // every change is built on a copy and swapped in after persisting.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current image.
    #[must_use]
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }

    fn publish(&self, state: &ControllerState) {
        let topics = state
            .persisted
            .topics
            .iter()
            .map(|topic| (topic.name.clone(), Arc::new(topic.clone())))
            .collect();
        self.image.store(Arc::new(MetadataImage { topics }));
    }

    fn persist(&self, persisted: &PersistedMetadata) -> Result<(), MetadataError> {
        let storage_error =
            |error: String| MetadataError::new(ResponseError::KafkaStorageError, error);
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(persisted)
            .map_err(|error| storage_error(error.to_string()))?;
        let bytes = encode_frame(METADATA_MAGIC, METADATA_VERSION, &payload);
        let temporary = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            if let Some(parent) = self.path.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|error| storage_error(format!("{}: {error}", self.path.display())))
    }

    /// Applies `change` to a copy of the metadata, persists it, then
    /// publishes it.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut PersistedMetadata) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        let mut state = self.lock();
        let mut next = state.persisted.clone();
        let output = change(&mut next)?;
        self.persist(&next)?;
        state.persisted = next;
        self.publish(&state);
        Ok(output)
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
        let image = self.image();
        let metadata = image.topics.get(topic)?;
        metadata
            .configs
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    }

    /// Validates a topic creation without making it.
    ///
    /// # Errors
    /// `INVALID_TOPIC_EXCEPTION`, `INVALID_PARTITIONS`,
    /// `INVALID_REPLICATION_FACTOR`, `INVALID_CONFIG` or
    /// `TOPIC_ALREADY_EXISTS`, with a message.
    pub fn validate_topic(
        &self,
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
        if self.image().topics.contains_key(name) {
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
    /// IncrementalAlterConfigs edits them), validated like CreateTopics, and
    /// persists the change before publishing it, so it survives a restart.
    /// With `validate_only` nothing changes. Returns the topic's new log
    /// configuration, for its live partitions.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION`, `new_overrides`' error,
    /// `INVALID_REQUEST` for a key given twice, `INVALID_CONFIG`, or `KAFKA_STORAGE_ERROR` if it cannot be persisted.
    pub fn alter_topic_configs(
        &self,
        name: &str,
        validate_only: bool,
        new_overrides: impl FnOnce(&[(String, String)]) -> Result<Vec<(String, String)>, MetadataError>,
    ) -> Result<LogConfig, MetadataError> {
        let compute = |topics: &mut Vec<TopicMetadata>| {
            let topic = topics
                .iter_mut()
                .find(|topic| topic.name == name)
                .ok_or_else(|| unknown_topic(name))?;
            let mut overrides = new_overrides(&topic.configs)?;
            overrides.sort();
            if let Some(pair) = overrides.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                return Err(MetadataError::new(
                    ResponseError::InvalidRequest,
                    format!("duplicate config key {}", pair[0].0),
                ));
            }
            let config = self.validate_topic_configs(&overrides)?;
            topic.configs = overrides;
            Ok(config)
        };
        if validate_only {
            let mut topics = self.lock().persisted.topics.clone();
            return compute(&mut topics);
        }
        let config = self.change(|metadata| compute(&mut metadata.topics))?;
        tracing::info!(topic = name, "altered topic configs");
        Ok(config)
    }

    /// Grows `name` to `count` partitions (CreatePartitions), persisted before
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
        let grow = |topics: &mut Vec<TopicMetadata>| {
            let topic = topics
                .iter_mut()
                .find(|topic| topic.name == name)
                .ok_or_else(|| unknown_topic(name))?;
            check_partition_increase(topic.partitions, count)?;
            let previous = topic.partitions;
            topic.partitions = count;
            Ok(previous)
        };
        if validate_only {
            let mut topics = self.lock().persisted.topics.clone();
            return grow(&mut topics);
        }
        self.change(|metadata| grow(&mut metadata.topics))
    }

    /// Creates a topic after [`Controller::validate_topic`].
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
    ) -> Result<Arc<TopicMetadata>, MetadataError> {
        self.change(|metadata| {
            self.validate_topic(name, partitions, replication_factor, &configs)?;
            if metadata.topics.iter().any(|topic| topic.name == name) {
                return Err(MetadataError::new(
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                ));
            }
            let topic = TopicMetadata {
                name: name.to_owned(),
                id: *Uuid::new_v4().as_bytes(),
                partitions,
                configs,
            };
            metadata.topics.push(topic.clone());
            Ok(Arc::new(topic))
        })
    }

    /// Removes a topic from the metadata; its partitions are the caller's to
    /// delete.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC_OR_PARTITION` if it does not exist.
    pub fn delete_topic(&self, name: &str) -> Result<TopicMetadata, MetadataError> {
        self.change(|metadata| {
            let index = metadata
                .topics
                .iter()
                .position(|topic| topic.name == name)
                .ok_or_else(|| unknown_topic(name))?;
            Ok(metadata.topics.remove(index))
        })
    }

    /// A new idempotent producer id, never handed out before, even across
    /// restarts.
    ///
    /// # Errors
    /// `KAFKA_STORAGE_ERROR` if a new block cannot be persisted.
    pub fn allocate_producer_id(&self) -> Result<i64, MetadataError> {
        let mut state = self.lock();
        if state.next_producer_id >= state.persisted.producer_id_block_end {
            let mut next = state.persisted.clone();
            next.producer_id_block_end = state.next_producer_id + PRODUCER_ID_BLOCK;
            self.persist(&next)?;
            state.persisted = next;
        }
        let id = state.next_producer_id;
        state.next_producer_id += 1;
        Ok(id)
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
mod tests {
    use super::*;

    /// A controller on a fresh directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("fjord-metadata-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn controller(&self) -> Controller {
            Controller::open(&self.0, LogConfig::default()).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn altered_topic_configs_survive_reopening_the_controller() {
        let scratch = Scratch::new("alter");
        let controller = scratch.controller();
        controller
            .create_topic("t", 1, 1, pairs(&[("segment.ms", "1000")]))
            .unwrap();
        let config = controller
            .alter_topic_configs("t", false, |_| {
                Ok(pairs(&[
                    ("retention.ms", "5000"),
                    ("cleanup.policy", "compact"),
                ]))
            })
            .unwrap();
        assert_eq!(config.retention_ms, 5000);
        assert_eq!(config.segment_ms, LogConfig::default().segment_ms);
        drop(controller);
        let reopened = scratch.controller();
        assert_eq!(
            reopened.image().topics["t"].configs,
            pairs(&[("cleanup.policy", "compact"), ("retention.ms", "5000")])
        );
        assert_eq!(reopened.log_config_for("t").retention_ms, 5000);
    }

    #[test]
    fn rejected_or_validate_only_alterations_change_nothing() {
        let scratch = Scratch::new("reject");
        let controller = scratch.controller();
        controller.create_topic("t", 1, 1, Vec::new()).unwrap();
        let code = |result: Result<LogConfig, MetadataError>| result.unwrap_err().code;
        let bad = code(
            controller.alter_topic_configs("t", false, |_| Ok(pairs(&[("retention.ms", "soon")]))),
        );
        assert_eq!(bad, ResponseError::InvalidConfig.code());
        let unknown_key = code(
            controller.alter_topic_configs("t", false, |_| Ok(pairs(&[("no.such.config", "1")]))),
        );
        assert_eq!(unknown_key, ResponseError::InvalidConfig.code());
        let twice = code(controller.alter_topic_configs("t", false, |_| {
            Ok(pairs(&[("retention.ms", "1"), ("retention.ms", "2")]))
        }));
        assert_eq!(twice, ResponseError::InvalidRequest.code());
        let missing = code(controller.alter_topic_configs("nope", false, |_| Ok(Vec::new())));
        assert_eq!(missing, ResponseError::UnknownTopicOrPartition.code());
        let checked = controller
            .alter_topic_configs("t", true, |_| Ok(pairs(&[("retention.ms", "7")])))
            .unwrap();
        assert_eq!(checked.retention_ms, 7);
        assert!(scratch.controller().image().topics["t"].configs.is_empty());
        assert!(controller.image().topics["t"].configs.is_empty());
    }

    #[test]
    fn partitions_only_grow_and_the_new_count_is_persisted() {
        let scratch = Scratch::new("partitions");
        let controller = scratch.controller();
        controller.create_topic("t", 2, 1, Vec::new()).unwrap();
        for count in [1, 2, PARTITIONS_MAX + 1] {
            let error = controller.add_partitions("t", count, false).unwrap_err();
            assert_eq!(
                error.code,
                ResponseError::InvalidPartitions.code(),
                "{count}"
            );
        }
        assert_eq!(controller.add_partitions("t", 5, true).unwrap(), 2);
        assert_eq!(controller.image().topics["t"].partitions, 2);
        assert_eq!(controller.add_partitions("t", 5, false).unwrap(), 2);
        assert_eq!(scratch.controller().image().topics["t"].partitions, 5);
        let missing = controller.add_partitions("nope", 3, false).unwrap_err();
        assert_eq!(missing.code, ResponseError::UnknownTopicOrPartition.code());
    }
}
