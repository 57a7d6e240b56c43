//! Fetch: whole batches from each partition's owning shard, bounded by the
//! high watermark, `max_bytes` (at most the broker's `fetch.max.bytes`) and
//! `partition_max_bytes`, long-polling up to `max_wait_ms` until `min_bytes`
//! are available.
//!
//! Records are never copied into the response: a partition of the shard
//! that read the request is answered with the cache's `Bytes` or a segment
//! file range (`read_zero_copy`), which the connection writer sends with
//! `sendfile`; another shard's partition comes back as `Bytes`. The
//! response is encoded by [`crate::fetch_codec`].
//!
//! The first partition with data always returns at least one batch, even
//! one larger than the limits (KIP-74), so a consumer never stalls on a big
//! batch. Without transactions the last stable offset is the high watermark.
//! Fetch sessions (KIP-227, [`crate::fetch_session`]) decide which
//! partitions are read and which answers are sent.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;
use fjord_engine::log::ReadData;
use fjord_engine::shard::ReadBound;
use fjord_engine::Offset;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::ApiSupport;
use crate::error::engine_error_code;
use crate::fetch_codec::{ResponseChunk, ZeroCopyFetch};
use crate::fetch_session::FetchTarget;
use crate::partition::{self, PartitionError};
use crate::server::Broker;

/// Versions served (v13+ address topics by id).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Fetch,
    min: 4,
    max: 12,
};

/// The longest a fetch may wait, whatever the client asks.
const MAX_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One partition's answer: its fields and its records.
struct Answer {
    data: PartitionData,
    records: Vec<ResponseChunk>,
}

impl Answer {
    fn records_bytes(&self) -> u64 {
        self.records.iter().map(ResponseChunk::len).sum()
    }
}

/// What a read found: the offsets the answer reports, and the records.
struct Found {
    high_watermark: Offset,
    log_start: Offset,
    records: Vec<ResponseChunk>,
}

fn batches_to_chunks(batches: Vec<Bytes>) -> Vec<ResponseChunk> {
    batches.into_iter().map(ResponseChunk::Bytes).collect()
}

/// A partition's answer before its offsets are known (-1 each).
fn offsets_unknown(target: &FetchTarget) -> PartitionData {
    PartitionData::default()
        .with_partition_index(target.partition.partition)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
}

/// Reads one partition, up to `limit` bytes (at least one batch, KIP-74),
/// below the high watermark. A partition this shard owns is read in place:
/// a file range when the batches are not cached, sent later with
/// `sendfile`. Another shard's partition is read there and comes back as
/// cached or copied `Bytes`.
async fn read_partition(broker: &Rc<Broker>, wanted: &FetchTarget, limit: usize) -> Answer {
    let data = offsets_unknown(wanted);
    // The caller checked with the partition layer that this broker leads
    // the partition in the epoch the client names.
    let read = if limit == 0 {
        // With no budget left only the offsets are reported.
        broker
            .shard
            .offsets(wanted.partition.clone())
            .await
            .map(|offsets| Found {
                high_watermark: offsets.high_watermark,
                log_start: offsets.log_start,
                records: Vec::new(),
            })
    } else {
        // The owning shard answers with its cache's Bytes or a verified file
        // range; either way nothing is copied, on this shard or across.
        broker
            .shard
            .read_zero_copy(wanted.partition.clone(), wanted.offset, limit)
            .await
            .map(|read| Found {
                high_watermark: read.offsets.high_watermark,
                log_start: read.offsets.log_start,
                records: match read.data {
                    ReadData::Batches(batches) => batches_to_chunks(batches),
                    ReadData::File(range) => vec![ResponseChunk::File(range)],
                },
            })
    };
    match read {
        Ok(found) => Answer {
            data: data
                .with_high_watermark(found.high_watermark.0)
                .with_last_stable_offset(found.high_watermark.0)
                .with_log_start_offset(found.log_start.0),
            records: found.records,
        },
        Err(error) => Answer {
            data: data.with_error_code(engine_error_code(&error)),
            records: Vec::new(),
        },
    }
}

fn refused(target: &FetchTarget, error: &PartitionError) -> Answer {
    Answer {
        data: offsets_unknown(target).with_error_code(error.code()),
        records: Vec::new(),
    }
}

/// Reads every target, concurrently, within the response's `max_bytes`.
///
/// Partitions are read in waves: each partition of a wave is given its own
/// limit, capped by what the response budget has left after the limits of
/// the partitions before it; a partition whose cap would be zero only
/// because of those reservations waits for the next wave, which knows what
/// was really used. A consumer's fetch (limits well under the total) thus
/// reads all its partitions at once, on every shard and the disk in
/// parallel, and the response never exceeds the budget. Only the first
/// partition with data may go over, by one batch (KIP-74).
async fn read_all(
    broker: &Rc<Broker>,
    targets: &[FetchTarget],
    max_bytes: usize,
) -> (Vec<Answer>, usize) {
    let mut answers: Vec<Option<Answer>> = targets.iter().map(|_| None).collect();
    let mut budget = max_bytes;
    let mut total = 0;
    let mut next = 0;
    while next < targets.len() {
        let mut reserved = 0usize;
        let mut wave = Vec::new();
        while let Some(target) = targets.get(next) {
            // Refused partitions (unknown, led elsewhere, a stale or future
            // leader epoch) take no share of the budget.
            if let Err(error) =
                partition::led_here(broker, &target.partition, target.current_leader_epoch)
            {
                answers[next] = Some(refused(target, &error));
                next += 1;
                continue;
            }
            let limit = target.max_bytes.min(budget - reserved);
            if limit == 0 && reserved > 0 {
                break;
            }
            let read = glommio::spawn_local({
                let broker = broker.clone();
                let target = target.clone();
                async move { read_partition(&broker, &target, limit).await }
            });
            wave.push((next, limit, read));
            reserved += limit;
            next += 1;
        }
        for (index, limit, read) in wave {
            let mut answer = read.await;
            let mut bytes = usize::try_from(answer.records_bytes()).unwrap_or(usize::MAX);
            if bytes > limit && total > 0 {
                // Only the first partition with data may exceed its limit
                // with one batch (KIP-74); a later one returns no records.
                answer.records.clear();
                bytes = 0;
            }
            budget = budget.saturating_sub(bytes);
            total += bytes;
            answers[index] = Some(answer);
        }
    }
    let answers = answers
        .into_iter()
        .map(|answer| answer.expect("every target is answered"))
        .collect();
    (answers, total)
}

/// Waits until one of the partitions gets committed data past its fetch
/// offset, or `timeout` passes.
async fn wait_for_any(broker: &Rc<Broker>, targets: &[FetchTarget], timeout: Duration) {
    let woke = Rc::new((Event::new(), Cell::new(false)));
    let listener = woke.0.listen();
    for target in targets {
        let broker = broker.clone();
        let woke = woke.clone();
        let partition = target.partition.clone();
        let offset = target.offset;
        glommio::spawn_local(async move {
            // An unknown partition has nothing to wait for: it wakes the
            // fetch, whose read reports the error.
            let _ = broker
                .shard
                .wait_for_data(partition, offset, ReadBound::HighWatermark, timeout)
                .await;
            woke.1.set(true);
            woke.0.notify(usize::MAX);
        })
        .detach();
    }
    if woke.1.get() {
        return;
    }
    // Shutdown answers a long poll at once, with what there is, so a
    // consumer polling with a long `fetch.max.wait.ms` does not hold the
    // broker's exit for that long.
    futures_lite::future::or(
        listener,
        futures_lite::future::or(glommio::timer::sleep(timeout), broker.until_stopping()),
    )
    .await;
}

/// Answers Fetch; the records travel beside the response, to be sent
/// without copying.
pub async fn handle(broker: &Rc<Broker>, request: FetchRequest) -> ZeroCopyFetch {
    let started = Instant::now();
    let (context, targets) = match broker.fetch_sessions.begin(&request, started) {
        Ok(resolved) => resolved,
        Err(error) => {
            return ZeroCopyFetch {
                response: FetchResponse::default()
                    .with_error_code(error.code())
                    .with_session_id(0),
                records: Vec::new(),
            }
        }
    };
    let max_wait =
        Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_LIMIT);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    // The broker's `fetch.max.bytes` caps what a request may ask, as in Kafka.
    let max_bytes = usize::try_from(request.max_bytes)
        .unwrap_or(0)
        .min(broker.config.fetch_max_bytes);
    let read_committed = request.isolation_level == 1;
    let (mut answers, mut total) = read_all(broker, &targets, max_bytes).await;
    while total < min_bytes.max(1) && !broker.is_stopping() {
        let elapsed = started.elapsed();
        let any_error = answers.iter().any(|answer| answer.data.error_code != 0);
        if elapsed >= max_wait || any_error {
            break;
        }
        wait_for_any(broker, &targets, max_wait.saturating_sub(elapsed)).await;
        (answers, total) = read_all(broker, &targets, max_bytes).await;
    }
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut records: Vec<Vec<Option<Vec<ResponseChunk>>>> = Vec::new();
    for (target, answer) in targets.iter().zip(answers) {
        let has_records = !answer.records.is_empty();
        let partition = &target.partition;
        if !broker
            .fetch_sessions
            .must_answer(context, partition, &answer.data, has_records)
        {
            continue;
        }
        let data = if read_committed {
            answer.data.with_aborted_transactions(Some(Vec::new()))
        } else {
            answer.data
        };
        let same_topic = responses
            .last()
            .is_some_and(|topic| topic.topic.0.as_str() == partition.topic);
        if !same_topic {
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(partition.topic.clone()))),
            );
            records.push(Vec::new());
        }
        let (Some(topic), Some(topic_records)) = (responses.last_mut(), records.last_mut()) else {
            unreachable!("a topic entry was just ensured");
        };
        topic.partitions.push(data.with_records(None));
        topic_records.push(Some(answer.records));
    }
    ZeroCopyFetch {
        response: FetchResponse::default()
            .with_session_id(context.session_id())
            .with_responses(responses),
        records,
    }
}
