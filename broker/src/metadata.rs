//! The cluster metadata image and the controller that owns it.
//!
//! Every handler reads topics, partitions and configs from one immutable
//! [`MetadataImage`], swapped atomically when the controller changes it, so
//! reads take no lock. Changes (create and delete topics, alter configs,
//! producer id blocks) go through the [`Controller`], which persists each new
//! image before publishing it: a topic a client saw created survives a
//! restart. On one node the controller is local; the cluster issue will feed
//! the same image from a replicated metadata log.

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
        let mut config = self.log_defaults.clone();
        for (key, value) in configs {
            if key == "cleanup.policy" || key == "compression.type" || key == "min.insync.replicas"
            {
                validate_broker_side_topic_config(key, value)?;
                continue;
            }
            config.set(key, value).map_err(|error| {
                MetadataError::new(ResponseError::InvalidConfig, error.to_string())
            })?;
        }
        if self.image().topics.contains_key(name) {
            return Err(MetadataError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        Ok(config)
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
                .ok_or_else(|| {
                    MetadataError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("unknown topic {name:?}"),
                    )
                })?;
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

/// Topic configs the broker (not the engine) interprets, validated here.
fn validate_broker_side_topic_config(key: &str, value: &str) -> Result<(), MetadataError> {
    let valid = match key {
        "cleanup.policy" => value
            .split(',')
            .all(|policy| ["delete", "compact"].contains(&policy.trim())),
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
