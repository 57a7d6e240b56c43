//! The metadata file of fjord before the metadata log, read once to upgrade
//! a data directory in place.
//!
//! Until the metadata log, the controller kept the whole image in
//! `<log.dirs>/cluster-metadata.snapshot`: one frame (magic `FJMD`,
//! version 1) around an rkyv archive of [`LegacyMetadata`], replaced whole
//! on every change. The types below are that format's declarations,
//! unchanged: rkyv lays an archive out by them. [`records`] turns the file
//! into the records that rebuild it; the controller appends those to the
//! new log and removes the file only once they are durable.

use fjord_engine::checkpoint::decode_frame;
use fjord_engine::error::Corruption;
use fjord_engine::{LeaderEpoch, ProducerId};

use crate::metadata::records::{
    BrokerEpoch, BrokerId, ConfigRecord, ConfigResourceType, MetadataRecord, PartitionEpoch,
    PartitionRecord, ProducerIdsRecord, TopicId, TopicRecord,
};

/// The legacy file's name under the data directory.
pub const LEGACY_METADATA_FILE: &str = "cluster-metadata.snapshot";
const LEGACY_MAGIC: [u8; 4] = *b"FJMD";
const LEGACY_VERSION: u16 = 1;

/// One topic, as the legacy file stores it.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LegacyTopic {
    /// The topic name.
    pub name: String,
    /// The topic id.
    pub id: [u8; 16],
    /// Number of partitions.
    pub partitions: i32,
    /// Config overrides.
    pub configs: Vec<(String, String)>,
}

/// The legacy file's content.
#[derive(Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LegacyMetadata {
    /// Every topic.
    pub topics: Vec<LegacyTopic>,
    /// The end of the last producer id block handed out.
    pub producer_id_block_end: i64,
}

/// Decodes a legacy file's bytes.
///
/// # Errors
/// The [`Corruption`] that keeps the bytes from being a legacy metadata
/// file: a damaged frame or an invalid archive.
pub fn decode(bytes: &[u8]) -> Result<LegacyMetadata, Corruption> {
    let payload = decode_frame(LEGACY_MAGIC, LEGACY_VERSION, bytes)?;
    super::log::decode_archive(payload)
}

/// Encodes `metadata` as the legacy controller wrote it (for upgrade tests).
///
/// # Panics
/// Never in practice: archiving into memory cannot fail.
#[cfg(test)]
#[must_use]
pub fn encode(metadata: &LegacyMetadata) -> Vec<u8> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(metadata).unwrap();
    fjord_engine::checkpoint::encode_frame(LEGACY_MAGIC, LEGACY_VERSION, &payload)
}

/// The records that rebuild `metadata`: each topic with its partitions, on
/// `node` as the legacy single-node broker held them (the only replica, in
/// the ISR, leader at epoch 0), and its configs; then the producer id block.
#[must_use]
pub fn records(metadata: &LegacyMetadata, node: BrokerId) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in &metadata.topics {
        let topic_id = TopicId(topic.id);
        records.push(MetadataRecord::Topic(TopicRecord {
            name: topic.name.clone(),
            topic_id,
        }));
        for partition_id in 0..topic.partitions {
            records.push(MetadataRecord::Partition(PartitionRecord {
                partition_id,
                topic_id,
                replicas: vec![node],
                isr: vec![node],
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader: node,
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            }));
        }
        for (name, value) in &topic.configs {
            records.push(MetadataRecord::Config(ConfigRecord {
                resource_type: ConfigResourceType::Topic,
                resource_name: topic.name.clone(),
                name: name.clone(),
                value: Some(value.clone()),
            }));
        }
    }
    if metadata.producer_id_block_end > 0 {
        records.push(MetadataRecord::ProducerIds(ProducerIdsRecord {
            broker_id: node,
            broker_epoch: BrokerEpoch::NONE,
            next_producer_id: ProducerId(metadata.producer_id_block_end),
        }));
    }
    records
}
