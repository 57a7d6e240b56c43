//! DescribeLogDirs: fjord's one log directory (`log.dirs`) and the size on
//! disk of every partition in it, or of the requested ones that exist. A
//! single node has no replica catching up, so every offset lag is 0; from v4
//! the directory's total and usable bytes come from statvfs(3).

use std::path::Path;
use std::rc::Rc;

use fjord_engine::TopicPartition;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::server::Broker;

/// Versions served.
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeLogDirs,
    min: 1,
    max: 4,
};

/// Kafka's value for volume bytes it cannot tell.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

/// Total and available bytes of the file system holding `dir`.
fn volume_bytes(dir: &Path) -> (i64, i64) {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES);
    };
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is writable
    // memory of the size statvfs fills; it is read only if statvfs succeeds.
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES);
        }
        stats.assume_init()
    };
    let block = u128::from(stats.f_frsize);
    let bytes = |blocks: u64| i64::try_from(u128::from(blocks) * block).unwrap_or(i64::MAX);
    (bytes(stats.f_blocks), bytes(stats.f_bavail))
}

/// The partitions asked about: every partition in the metadata, or the
/// requested ones.
fn wanted_partitions(broker: &Broker, request: &DescribeLogDirsRequest) -> Vec<(String, Vec<i32>)> {
    let image = broker.controller.image();
    match &request.topics {
        None => image
            .topics
            .values()
            .map(|topic| (topic.name.clone(), (0..topic.partition_count()).collect()))
            .collect(),
        Some(topics) => topics
            .iter()
            .map(|topic| (topic.topic.0.to_string(), topic.partitions.clone()))
            .collect(),
    }
}

/// Answers DescribeLogDirs.
pub async fn handle(
    broker: &Rc<Broker>,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let mut topics = Vec::new();
    for (name, indexes) in wanted_partitions(broker, &request) {
        let mut partitions = Vec::with_capacity(indexes.len());
        for index in indexes {
            let partition = TopicPartition::new(name.clone(), index);
            match broker.shard.partition_size(partition.clone()).await {
                Ok(bytes) => partitions.push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(index)
                        .with_partition_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                        .with_offset_lag(0),
                ),
                // A partition that is not on disk is not in the directory.
                Err(fjord_engine::Error::UnknownPartition(_)) => {}
                Err(error) => {
                    tracing::warn!(%partition, %error, "cannot size partition");
                }
            }
        }
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions),
            );
        }
    }
    let data_dir = &broker.config.data_dir;
    let log_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(log_dir.display().to_string()))
        .with_topics(topics);
    if version >= 4 {
        let (total, usable) = volume_bytes(&log_dir);
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    DescribeLogDirsResponse::default().with_results(vec![result])
}
