//! Cluster metadata as a log of records, in Kafka's KRaft model.
//!
//! Every change to topics, partitions, configs, brokers and producer id
//! blocks is a sequence of [`records::MetadataRecord`]s (Kafka's
//! `TopicRecord`, `PartitionRecord`, `PartitionChangeRecord`,
//! `RemoveTopicRecord`, `ConfigRecord`, `ProducerIdsRecord`,
//! `RegisterBrokerRecord`). A pure function,
//! [`image::MetadataImage::apply`], turns an image and records into the next
//! image; every handler reads the current one, swapped atomically by the
//! [`crate::controller::Controller`], which orders, persists and replays
//! the records. This module does no I/O and knows no Kafka wire error code.

pub mod image;
pub mod records;

pub use image::{ApplyError, BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
