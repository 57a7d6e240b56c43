//! Fetch: whole batches from each partition's owning shard, bounded by the
//! high watermark, `max_bytes` and `partition_max_bytes`, long-polling up to
//! `max_wait_ms` until `min_bytes` are available.
//!
//! The first partition with data always returns at least one batch, even
//! one larger than the limits (KIP-74), so a consumer never stalls on a big
//! batch. Without transactions the last stable offset is the high watermark.
//! Fetch sessions (KIP-227) are answered with session id 0, which tells
//! clients to send full fetches.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use event_listener::Event;
use fjord_engine::shard::{Request, Response};
use fjord_engine::{Offset, TopicPartition};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::error::engine_error_code;
use crate::server::Broker;

/// Versions served (v13+ address topics by id).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Fetch,
    min: 4,
    max: 12,
};

/// The longest a fetch may wait, whatever the client asks.
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(30);

struct Wanted {
    partition: TopicPartition,
    offset: Offset,
    max_bytes: usize,
}

async fn read_all(
    broker: &Rc<Broker>,
    wanted: &[Vec<Wanted>],
    max_bytes: usize,
) -> (Vec<Vec<PartitionData>>, usize) {
    let mut budget = max_bytes;
    let mut total = 0;
    let mut topics = Vec::with_capacity(wanted.len());
    for partitions in wanted {
        let mut answers = Vec::with_capacity(partitions.len());
        for wanted in partitions {
            let mut data = PartitionData::default()
                .with_partition_index(wanted.partition.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            let known = broker.controller.image().contains(&wanted.partition);
            if !known {
                answers.push(data.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            }
            let limit = wanted.max_bytes.min(budget);
            let owner = broker.shard.owner_of(&wanted.partition);
            let request = Request::Read {
                partition: wanted.partition.clone(),
                offset: wanted.offset,
                max_bytes: limit.max(1),
                upper_bound: Offset(i64::MAX),
                committed: true,
            };
            // With no budget left only the offsets are reported.
            let response = if limit == 0 {
                broker
                    .shard
                    .call(owner, Request::Offsets(wanted.partition.clone()))
                    .await
            } else {
                broker.shard.call(owner, request).await
            };
            data = match response {
                Response::Read(read) => {
                    let bytes: usize = read.batches.iter().map(Bytes::len).sum();
                    budget = budget.saturating_sub(bytes);
                    total += bytes;
                    data.with_high_watermark(read.high_watermark.0)
                        .with_last_stable_offset(read.high_watermark.0)
                        .with_log_start_offset(read.log_start_offset.0)
                        .with_records(Some(concat(read.batches)))
                }
                Response::Offsets(offsets) => data
                    .with_high_watermark(offsets.high_watermark.0)
                    .with_last_stable_offset(offsets.high_watermark.0)
                    .with_log_start_offset(offsets.log_start.0)
                    .with_records(Some(Bytes::new())),
                Response::Failed(error) => data.with_error_code(engine_error_code(&error)),
                other => unreachable!("Read answers Read or Failed, not {other:?}"),
            };
            answers.push(data);
        }
        topics.push(answers);
    }
    (topics, total)
}

fn concat(batches: Vec<Bytes>) -> Bytes {
    match batches.len() {
        0 => Bytes::new(),
        1 => batches.into_iter().next().unwrap_or_default(),
        _ => {
            let mut joined = BytesMut::with_capacity(batches.iter().map(Bytes::len).sum());
            for batch in batches {
                joined.extend_from_slice(&batch);
            }
            joined.freeze()
        }
    }
}

/// Waits until one of the partitions gets committed data past its fetch
/// offset, or `timeout` passes.
async fn wait_for_any(broker: &Rc<Broker>, wanted: &[Vec<Wanted>], timeout: Duration) {
    let woke = Rc::new((Event::new(), Cell::new(false)));
    let listener = woke.0.listen();
    for wanted in wanted.iter().flatten() {
        let broker = broker.clone();
        let woke = woke.clone();
        let request = Request::WaitForData {
            partition: wanted.partition.clone(),
            offset: wanted.offset,
            timeout,
            committed: true,
        };
        let owner = broker.shard.owner_of(&wanted.partition);
        glommio::spawn_local(async move {
            broker.shard.call(owner, request).await;
            woke.1.set(true);
            woke.0.notify(usize::MAX);
        })
        .detach();
    }
    if woke.1.get() {
        return;
    }
    futures_lite::future::or(listener, async {
        glommio::timer::sleep(timeout).await;
    })
    .await;
}

/// Answers Fetch.
pub async fn handle(broker: &Rc<Broker>, request: FetchRequest, _version: i16) -> FetchResponse {
    let started = Instant::now();
    let max_wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_LIMIT);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(request.max_bytes).unwrap_or(0);
    let read_committed = request.isolation_level == 1;
    let topic_names: Vec<_> = request
        .topics
        .iter()
        .map(|topic| topic.topic.clone())
        .collect();
    let wanted: Vec<Vec<Wanted>> = request
        .topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| Wanted {
                    partition: TopicPartition::new(topic.topic.0.to_string(), partition.partition),
                    offset: Offset(partition.fetch_offset),
                    max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                })
                .collect()
        })
        .collect();
    let (mut answers, mut total) = read_all(broker, &wanted, max_bytes).await;
    while total < min_bytes.max(1) && !broker.is_stopping() {
        let elapsed = started.elapsed();
        let any_error = answers.iter().flatten().any(|data| data.error_code != 0);
        if elapsed >= max_wait || any_error {
            break;
        }
        wait_for_any(broker, &wanted, max_wait.saturating_sub(elapsed)).await;
        (answers, total) = read_all(broker, &wanted, max_bytes).await;
    }
    let responses = topic_names
        .into_iter()
        .zip(answers)
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|data| {
                    if read_committed {
                        data.with_aborted_transactions(Some(Vec::new()))
                    } else {
                        data
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic)
                .with_partitions(partitions)
        })
        .collect();
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}
