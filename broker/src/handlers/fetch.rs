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
//!
//! From v13 topics are named by id (KIP-516), resolved against the metadata
//! image at every read; an id no topic has is answered `UNKNOWN_TOPIC_ID`.
//! From v16 a partition refused with `NOT_LEADER_OR_FOLLOWER` or
//! `FENCED_LEADER_EPOCH` names its current leader and leader epoch, and the
//! response carries the endpoint of every live broker so named (KIP-951),
//! as Kafka does: a consumer whose partition moved goes straight to the new
//! leader instead of first waiting for a Metadata round trip. The endpoints
//! are at most the image's brokers, each once.
//!
//! A Fetch with a replica id (in the replica state from v15) comes from a
//! follower: each partition is read on its owning shard up to the log end
//! rather than the high watermark, the fetch offset is recorded as the
//! follower's log end (which moves the high watermark,
//! [`crate::replication`]), and a follower whose last fetched epoch ends
//! earlier here gets the diverging epoch instead of records. A follower
//! shard's connection lands on the shard that owns its partitions when
//! both brokers run the same `cores` ([`crate::steering`]); the first read
//! of a follower's partition on another shard is logged (once per follower
//! and shard), as the sign that its reads cross cores.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::log::{LogOffsets, ReadData, ZeroCopyRead};
use fjord_engine::shard::{Queue, ReadBound};
use fjord_engine::{LeaderEpoch, Offset, TopicPartition};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::advertised::advertised_brokers;
use crate::error::engine_error_code;
use crate::fetch_codec::{self, ResponseChunk, ZeroCopyFetch};
use crate::fetch_session::{FetchTarget, PartitionRef, TopicRef};
use crate::metadata::records::{BrokerEpoch, BrokerId as NodeId};
use crate::metadata::MetadataImage;
use crate::partition::{self, PartitionError};
use crate::replication;
use crate::replication::leader::{diverging_epoch, Follower};
use crate::server::Broker;

/// Versions served: v13 names topics by id (KIP-516); v14 only adds an
/// error for tiered storage, which fjord does not have; v15 moves a
/// follower's replica id into a tagged replica state (KIP-903), which a
/// consumer leaves out; v16 names the current leader in refusals (KIP-951).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Fetch,
    min: 4,
    max: 16,
};

// Every version served is one the zero-copy encoder writes.
const _: () =
    assert!(fetch_codec::VERSION_MIN <= SUPPORT.min && SUPPORT.max <= fetch_codec::VERSION_MAX);

/// The first version whose refusals name the current leader: the one
/// whose response carries the leaders' endpoints (KIP-951).
const LEADER_HINT_VERSION: i16 = fetch_codec::NODE_ENDPOINTS_VERSION;

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

/// A partition to read, its topic resolved to a name.
#[derive(Clone, Debug)]
struct Wanted {
    partition: TopicPartition,
    offset: Offset,
    max_bytes: usize,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
}

/// `target` with its topic named, a topic id looked up in `image`; `None`
/// if no topic has the id.
fn resolve(image: &MetadataImage, target: &FetchTarget) -> Option<Wanted> {
    let name = match &target.partition.topic {
        TopicRef::Name(name) => name.clone(),
        TopicRef::Id(id) => image.topic_by_id(*id)?.name.clone(),
    };
    Some(Wanted {
        partition: TopicPartition::new(name, target.partition.index),
        offset: target.offset,
        max_bytes: target.max_bytes,
        current_leader_epoch: target.current_leader_epoch,
        last_fetched_epoch: target.last_fetched_epoch,
    })
}

/// A partition's answer before its offsets are known (-1 each).
fn offsets_unknown(index: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
}

/// Reads the consumer's partitions `reads` (each with its byte limit, at
/// least one batch each, KIP-74), below their high watermarks, in one
/// engine call ([`Shard::read_zero_copy_many`](fjord_engine::shard::Shard::read_zero_copy_many)):
/// a partition this shard owns is read in place, as a file range when its
/// batches are not cached (sent later with `sendfile`); another shard's
/// partition is read there and comes back as cached or copied `Bytes`.
async fn read_partitions(broker: &Rc<Broker>, reads: &[(Wanted, usize)]) -> Vec<Answer> {
    let asked = reads
        .iter()
        .map(|(wanted, limit)| (wanted.partition.clone(), wanted.offset, *limit))
        .collect();
    let found = broker.shard.read_zero_copy_many(asked).await;
    reads
        .iter()
        .zip(found)
        .map(|((wanted, _), read)| {
            answer(
                wanted,
                read.map(|read| Found {
                    high_watermark: read.offsets.high_watermark,
                    log_start: read.offsets.log_start,
                    records: match read.data {
                        ReadData::Batches(batches) => batches_to_chunks(batches),
                        ReadData::File(range) => vec![ResponseChunk::File(range)],
                    },
                }),
            )
        })
        .collect()
}

/// A consumer's answer for a partition with no budget left: its offsets.
async fn offsets_only(broker: &Rc<Broker>, wanted: &Wanted) -> Answer {
    let offsets = broker.shard.offsets(wanted.partition.clone()).await;
    answer(
        wanted,
        offsets.map(|offsets| Found {
            high_watermark: offsets.high_watermark,
            log_start: offsets.log_start,
            records: Vec::new(),
        }),
    )
}

/// A consumer's answer for `wanted` from what its read found.
fn answer(wanted: &Wanted, read: Result<Found, fjord_engine::Error>) -> Answer {
    let data = offsets_unknown(wanted.partition.partition);
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

/// What a follower's read of a partition found on its leader.
enum FollowerRead {
    /// The follower's log diverged: its last epoch ends here on the leader.
    Diverging(LeaderEpoch, Offset, LogOffsets),
    /// Batches from the fetch offset, up to the log end.
    Read(ZeroCopyRead),
    /// The fetching broker is not a replica of the partition here.
    NotAReplica,
}

/// Reads one partition for `follower` on the partition's owning shard:
/// records the fetch offset as the follower's log end (which may move the
/// high watermark, [`crate::replication::Replication::follower_fetched`]),
/// then reads up to the log end rather than the high watermark. A
/// follower whose last fetched epoch ends earlier here than its fetch
/// offset, or is not an epoch of this log, gets the diverging epoch
/// instead of records (KIP-595's field, KIP-279's rule).
async fn read_for_follower(
    broker: &Rc<Broker>,
    wanted: &Wanted,
    follower: Follower,
    limit: usize,
) -> Answer {
    let data = offsets_unknown(wanted.partition.partition);
    let replication = Arc::clone(&broker.replication);
    let min_insync = replication::min_insync_replicas(broker, &wanted.partition.topic);
    let partition = wanted.partition.clone();
    let offset = wanted.offset;
    let last_fetched_epoch = wanted.last_fetched_epoch;
    let read = broker
        .shard
        .on_log(
            wanted.partition.clone(),
            Queue::Default,
            move |_, log| async move {
                let offsets = log.offsets();
                let local_end = log.end_offset_for_epoch(LeaderEpoch(last_fetched_epoch.max(0)));
                if let Some((epoch, end)) = diverging_epoch(local_end, last_fetched_epoch, offset) {
                    return Ok(FollowerRead::Diverging(epoch, end, offsets));
                }
                offsets.check_readable(offset)?;
                let Ok(high_watermark) = replication.follower_fetched(
                    &partition,
                    follower,
                    offset,
                    offsets.log_end,
                    min_insync,
                ) else {
                    return Ok(FollowerRead::NotAReplica);
                };
                if let Some(high_watermark) = high_watermark {
                    log.advance_high_watermark(high_watermark);
                }
                let end = log.offsets().log_end;
                Ok(FollowerRead::Read(
                    log.read_zero_copy(offset, limit, end).await?,
                ))
            },
        )
        .await;
    let with_offsets = |data: PartitionData, offsets: LogOffsets| {
        data.with_high_watermark(offsets.high_watermark.0)
            .with_last_stable_offset(offsets.high_watermark.0)
            .with_log_start_offset(offsets.log_start.0)
    };
    match read {
        Ok(FollowerRead::Diverging(epoch, end, offsets)) => Answer {
            data: with_offsets(data, offsets).with_diverging_epoch(
                EpochEndOffset::default()
                    .with_epoch(epoch.0)
                    .with_end_offset(end.0),
            ),
            records: Vec::new(),
        },
        Ok(FollowerRead::Read(read)) => Answer {
            data: with_offsets(data, read.offsets),
            records: match read.data {
                ReadData::Batches(batches) => batches_to_chunks(batches),
                ReadData::File(range) => vec![ResponseChunk::File(range)],
            },
        },
        Ok(FollowerRead::NotAReplica) => Answer {
            data: data.with_error_code(ResponseError::NotLeaderOrFollower.code()),
            records: Vec::new(),
        },
        // A follower below the log start (retention or DeleteRecords ran
        // while it was away) learns where the log starts now, and starts
        // its own there. Kafka's leader leaves the offsets unknown here and
        // its follower asks ListOffsets; the answer saves that round trip.
        Err(error @ fjord_engine::Error::OffsetOutOfRange { log_start, .. }) => Answer {
            data: data
                .with_error_code(engine_error_code(&error))
                .with_log_start_offset(log_start.0),
            records: Vec::new(),
        },
        Err(error) => Answer {
            data: data.with_error_code(engine_error_code(&error)),
            records: Vec::new(),
        },
    }
}

/// The answer refusing `partition` with `error` in Fetch `version`. From
/// v16 a refusal that sends the client to the leader (not this broker, or
/// not in the client's epoch) names the leader and its epoch as `image`
/// has them, as Kafka does.
fn refused(
    image: &MetadataImage,
    partition: &TopicPartition,
    error: &PartitionError,
    version: i16,
) -> Answer {
    let mut data = offsets_unknown(partition.partition).with_error_code(error.code());
    let sends_to_leader = matches!(
        error,
        PartitionError::NotLeader { .. } | PartitionError::FencedLeaderEpoch
    );
    if version >= LEADER_HINT_VERSION && sends_to_leader {
        data = data.with_current_leader(current_leader(image, partition));
    }
    Answer {
        data,
        records: Vec::new(),
    }
}

/// The leader and leader epoch of `partition` in `image`; -1 each for a
/// partition the image does not have.
fn current_leader(image: &MetadataImage, partition: &TopicPartition) -> LeaderIdAndEpoch {
    image
        .topics
        .get(&*partition.topic)
        .and_then(|topic| topic.partition(partition.partition))
        .map_or_else(LeaderIdAndEpoch::default, |state| {
            LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(state.leader.0))
                .with_leader_epoch(state.leader_epoch.0)
        })
}

/// The client endpoints of the live brokers among `leaders`, by id: at most
/// every broker of `image`.
fn leader_endpoints(image: &MetadataImage, leaders: &BTreeSet<i32>) -> Vec<NodeEndpoint> {
    advertised_brokers(image, false)
        .into_iter()
        .filter(|advertised| leaders.contains(&advertised.id.0))
        .map(|advertised| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(advertised.id.0))
                .with_host(StrBytes::from_string(advertised.host))
                .with_port(i32::from(advertised.port))
                .with_rack(advertised.rack.map(StrBytes::from_string))
        })
        .collect()
}

/// A partition's answer in a wave of [`read_all`]: the next of the
/// consumer reads made together (they answer in the wave's order), or a
/// task of its own.
enum Pending {
    Read,
    Task(glommio::Task<Answer>),
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
/// partition with data may go over, by one batch (KIP-74). A consumer's
/// reads of a wave are made together, in one engine call.
async fn read_all(
    broker: &Rc<Broker>,
    version: i16,
    targets: &[FetchTarget],
    max_bytes: usize,
    follower: Option<Follower>,
) -> (Vec<Answer>, usize) {
    let image = broker.controller.image();
    let resolved: Vec<Option<Wanted>> = targets
        .iter()
        .map(|target| resolve(&image, target))
        .collect();
    let mut answers: Vec<Option<Answer>> = targets.iter().map(|_| None).collect();
    let mut budget = max_bytes;
    let mut total = 0;
    let mut next = 0;
    while next < targets.len() {
        let mut reserved = 0usize;
        let mut wave = Vec::new();
        let mut consumer_reads = Vec::new();
        while let (Some(target), Some(wanted)) = (targets.get(next), resolved.get(next)) {
            // Refused partitions (an unknown topic id, partition or topic,
            // led elsewhere, a stale or future leader epoch) take no share
            // of the budget.
            let Some(wanted) = wanted else {
                answers[next] = Some(Answer {
                    data: offsets_unknown(target.partition.index)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                    records: Vec::new(),
                });
                next += 1;
                continue;
            };
            if let Err(error) =
                partition::led_here(broker, &wanted.partition, wanted.current_leader_epoch)
            {
                answers[next] = Some(refused(&image, &wanted.partition, &error, version));
                next += 1;
                continue;
            }
            let limit = wanted.max_bytes.min(budget - reserved);
            if limit == 0 && reserved > 0 {
                break;
            }
            let read = match follower {
                None if limit > 0 => {
                    consumer_reads.push((wanted.clone(), limit));
                    Pending::Read
                }
                None => Pending::Task(glommio::spawn_local({
                    let (broker, wanted) = (broker.clone(), wanted.clone());
                    async move { offsets_only(&broker, &wanted).await }
                })),
                Some(follower) => {
                    note_read_across_shards(broker, follower.broker, &wanted.partition);
                    Pending::Task(glommio::spawn_local({
                        let (broker, wanted) = (broker.clone(), wanted.clone());
                        async move { read_for_follower(&broker, &wanted, follower, limit).await }
                    }))
                }
            };
            wave.push((next, limit, read));
            reserved += limit;
            next += 1;
        }
        let mut read = read_partitions(broker, &consumer_reads).await.into_iter();
        for (index, limit, pending) in wave {
            let mut answer = match pending {
                Pending::Read => read.next().expect("a read answers every consumer read"),
                Pending::Task(task) => task.await,
            };
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

/// Logs, once per follower and shard, a follower's read of a partition
/// another shard owns: its connection landed on a shard that does not own
/// the partition (the brokers run different `cores`, or the kernel does
/// not steer connections, [`crate::steering`]), so each of its reads
/// crosses cores.
fn note_read_across_shards(broker: &Broker, follower: NodeId, partition: &TopicPartition) {
    let owner = broker.shard.owner_of(partition);
    if owner != broker.shard.id()
        && broker
            .followers_reading_across_shards
            .borrow_mut()
            .insert(follower.0)
    {
        tracing::info!(
            follower = follower.0,
            %partition,
            shard = broker.shard.id(),
            owner,
            "a follower's fetch reads a partition another shard owns"
        );
    }
}

/// Waits until one of the partitions gets data past its fetch offset
/// (below `bound`), or `timeout` passes.
async fn wait_for_any(
    broker: &Rc<Broker>,
    targets: &[FetchTarget],
    bound: ReadBound,
    timeout: Duration,
) {
    let image = broker.controller.image();
    let waits = targets
        .iter()
        .filter_map(|target| resolve(&image, target))
        .map(|wanted| (wanted.partition, wanted.offset))
        .collect();
    // Shutdown answers a long poll at once, with what there is, so a
    // consumer polling with a long `fetch.max.wait.ms` does not hold the
    // broker's exit for that long.
    futures_lite::future::or(
        broker.shard.wait_for_any_data(waits, bound, timeout),
        broker.until_stopping(),
    )
    .await;
}

/// Answers Fetch `version`; the records travel beside the response.
pub async fn handle(broker: &Rc<Broker>, request: FetchRequest, version: i16) -> ZeroCopyFetch {
    let started = Instant::now();
    let (context, targets) = match broker.fetch_sessions.begin(&request, version, started) {
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
    let follower = fetching_replica(&request, version);
    // A follower reads up to the log end; a consumer up to the high
    // watermark.
    let bound = if follower.is_some() {
        ReadBound::LogEnd
    } else {
        ReadBound::HighWatermark
    };
    let (mut answers, mut total) = read_all(broker, version, &targets, max_bytes, follower).await;
    while total < min_bytes.max(1) && !broker.is_stopping() {
        let elapsed = started.elapsed();
        // An error or a follower's diverging epoch is news at once: the
        // follower truncates before it fetches again.
        let news_without_bytes = answers.iter().any(|answer| {
            answer.data.error_code != 0 || answer.data.diverging_epoch != EpochEndOffset::default()
        });
        if elapsed >= max_wait || news_without_bytes {
            break;
        }
        wait_for_any(broker, &targets, bound, max_wait.saturating_sub(elapsed)).await;
        (answers, total) = read_all(broker, version, &targets, max_bytes, follower).await;
    }
    let answered = targets
        .into_iter()
        .zip(answers)
        .filter(|(target, answer)| {
            broker.fetch_sessions.must_answer(
                context,
                &target.partition,
                &answer.data,
                !answer.records.is_empty(),
            )
        })
        .map(|(target, mut answer)| {
            if read_committed {
                answer.data.aborted_transactions = Some(Vec::new());
            }
            (target.partition, answer)
        });
    respond(
        &broker.controller.image(),
        version,
        context.session_id(),
        answered,
    )
}

/// The broker a Fetch comes from when a follower sends it, with its
/// broker epoch: the replica state (v15, KIP-903), or before v15 the
/// replica id alone (no epoch, -1); `None` for a consumer (`-1`).
fn fetching_replica(request: &FetchRequest, version: i16) -> Option<Follower> {
    let (id, broker_epoch) = if version >= 15 {
        (
            request.replica_state.replica_id.0,
            request.replica_state.replica_epoch,
        )
    } else {
        (request.replica_id.0, -1)
    };
    (id >= 0).then_some(Follower {
        broker: NodeId(id),
        broker_epoch: BrokerEpoch(broker_epoch),
    })
}

/// The response of Fetch `version` in session `session_id` carrying
/// `answered`, each partition as the client named it with its answer,
/// grouped by topic as they come; from v16 with the endpoints of the live
/// leaders its refusals name.
fn respond(
    image: &MetadataImage,
    version: i16,
    session_id: i32,
    answered: impl IntoIterator<Item = (PartitionRef, Answer)>,
) -> ZeroCopyFetch {
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    let mut records: Vec<Vec<Option<Vec<ResponseChunk>>>> = Vec::new();
    let mut leaders = BTreeSet::new();
    let mut last_topic: Option<TopicRef> = None;
    for (partition, answer) in answered {
        if answer.data.current_leader.leader_id.0 >= 0 {
            leaders.insert(answer.data.current_leader.leader_id.0);
        }
        if last_topic.as_ref() != Some(&partition.topic) {
            let topic = FetchableTopicResponse::default();
            responses.push(match &partition.topic {
                TopicRef::Name(name) => {
                    topic.with_topic(TopicName(StrBytes::from_string(name.clone())))
                }
                TopicRef::Id(id) => topic.with_topic_id(*id),
            });
            records.push(Vec::new());
            last_topic = Some(partition.topic);
        }
        let (Some(topic), Some(topic_records)) = (responses.last_mut(), records.last_mut()) else {
            unreachable!("a topic entry was just ensured");
        };
        topic.partitions.push(answer.data.with_records(None));
        topic_records.push(Some(answer.records));
    }
    let node_endpoints = if version >= LEADER_HINT_VERSION {
        leader_endpoints(image, &leaders)
    } else {
        Vec::new()
    };
    ZeroCopyFetch {
        response: FetchResponse::default()
            .with_session_id(session_id)
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
        records,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, BytesMut};
    use fjord_engine::LeaderEpoch;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Decodable;
    use uuid::Uuid;

    use super::*;
    use crate::advertised::CLIENT_LISTENER;
    use crate::fetch_codec::encode_fetch_response;
    use crate::metadata::records::{
        BrokerEndpoint, BrokerEpoch, BrokerFencingRecord, BrokerId as NodeId, MetadataRecord,
        PartitionEpoch, PartitionRecord, RegisterBrokerRecord, TopicId, TopicRecord,
    };

    const TOPIC_ID: Uuid = Uuid::from_u128(0x7070);

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: NodeId(id),
            incarnation_id: [u8::try_from(id).unwrap(); 16],
            broker_epoch: BrokerEpoch(1),
            endpoints: vec![BrokerEndpoint {
                name: CLIENT_LISTENER.to_owned(),
                host: format!("broker{id}.example"),
                port: 9090 + u16::try_from(id).unwrap(),
                security_protocol: 0,
            }],
            rack: (id == 2).then(|| "rack-b".to_owned()),
            fenced: false,
        })
    }

    /// Brokers 1, 2 and 3 (3 fenced after its election) and topic `t`
    /// with partition 0 led by 2 in epoch 5, partition 1 by 3 in epoch 7,
    /// partition 2 by nobody, partition 3 by 2 in epoch 9.
    fn image() -> MetadataImage {
        let topic_id = TopicId::from(TOPIC_ID);
        let mut records = vec![
            register(1),
            register(2),
            register(3),
            MetadataRecord::Topic(TopicRecord {
                name: "t".to_owned(),
                topic_id,
            }),
        ];
        for (partition_id, leader, epoch) in [(0, 2, 5), (1, 3, 7), (2, -1, 2), (3, 2, 9)] {
            let replicas = vec![NodeId(if leader < 0 { 1 } else { leader })];
            records.push(MetadataRecord::Partition(PartitionRecord {
                partition_id,
                topic_id,
                isr: replicas.clone(),
                replicas,
                removing_replicas: Vec::new(),
                adding_replicas: Vec::new(),
                leader: NodeId(leader),
                leader_epoch: LeaderEpoch(epoch),
                partition_epoch: PartitionEpoch(0),
            }));
        }
        records.push(MetadataRecord::FenceBroker(BrokerFencingRecord {
            id: NodeId(3),
            epoch: BrokerEpoch(1),
        }));
        MetadataImage::default().apply(&records).unwrap()
    }

    fn not_leader(leader: i32) -> PartitionError {
        PartitionError::NotLeader {
            leader: NodeId(leader),
            leader_epoch: LeaderEpoch(0),
        }
    }

    /// What broker 1 answers, in Fetch `version`, for the four partitions
    /// of `t`: three it does not lead and one whose epoch the client has
    /// wrong, after an unknown topic; decoded by the crate.
    fn refusals(version: i16) -> FetchResponse {
        let image = image();
        let partition = |index| TopicPartition::new("t", index);
        let by_id = |index| PartitionRef {
            topic: TopicRef::Id(TOPIC_ID),
            index,
        };
        let answered = vec![
            (
                PartitionRef {
                    topic: TopicRef::Id(Uuid::from_u128(1)),
                    index: 0,
                },
                refused(&image, &partition(9), &PartitionError::Unknown, version),
            ),
            (
                by_id(0),
                refused(&image, &partition(0), &not_leader(2), version),
            ),
            (
                by_id(1),
                refused(&image, &partition(1), &not_leader(3), version),
            ),
            (
                by_id(2),
                refused(&image, &partition(2), &not_leader(-1), version),
            ),
            (
                by_id(3),
                refused(
                    &image,
                    &partition(3),
                    &PartitionError::FencedLeaderEpoch,
                    version,
                ),
            ),
        ];
        let fetch = respond(&image, version, 0, answered);
        let mut frame = BytesMut::new();
        for chunk in encode_fetch_response(41, version, &fetch).unwrap() {
            let ResponseChunk::Bytes(bytes) = chunk else {
                panic!("refusals carry no file ranges");
            };
            frame.extend_from_slice(&bytes);
        }
        let mut frame = frame.freeze();
        assert_eq!(usize::try_from(frame.get_i32()).unwrap(), frame.len());
        let header = ResponseHeader::decode(&mut frame, 1).unwrap();
        assert_eq!(header.correlation_id, 41);
        let response = FetchResponse::decode(&mut frame, version).unwrap();
        assert!(frame.is_empty(), "the whole frame is the response");
        response
    }

    fn leader(id: i32, epoch: i32) -> LeaderIdAndEpoch {
        LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(id))
            .with_leader_epoch(epoch)
    }

    /// Guards against a v16 consumer refused by a broker that no longer
    /// leads its partition having to refresh metadata before it can fetch
    /// again: the refusal names the leader and epoch, and the response
    /// where that leader listens, unless it is fenced.
    #[test]
    fn v16_refusals_name_the_current_leader_and_where_it_listens() {
        let response = refusals(16);
        let topics: Vec<Uuid> = response.responses.iter().map(|t| t.topic_id).collect();
        assert_eq!(topics, [Uuid::from_u128(1), TOPIC_ID], "topics by id");
        let unknown = &response.responses[0].partitions[0];
        assert_eq!(
            unknown.error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert_eq!(
            unknown.current_leader,
            LeaderIdAndEpoch::default(),
            "no leader for an unknown partition"
        );
        let found: Vec<(i16, LeaderIdAndEpoch)> = response.responses[1]
            .partitions
            .iter()
            .map(|partition| (partition.error_code, partition.current_leader.clone()))
            .collect();
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        assert_eq!(
            found,
            [
                (not_leader, leader(2, 5)),
                (not_leader, leader(3, 7)),
                (not_leader, leader(-1, 2)),
                (ResponseError::FencedLeaderEpoch.code(), leader(2, 9)),
            ]
        );
        assert_eq!(
            response.node_endpoints,
            [NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("broker2.example"))
                .with_port(9092)
                .with_rack(Some(StrBytes::from_static_str("rack-b")))],
            "broker 2 once; fenced broker 3 and no leader have no endpoint"
        );
    }

    /// Guards against the KIP-951 fields leaking into versions whose
    /// clients do not expect them.
    #[test]
    fn v15_refusals_name_no_leader() {
        let response = refusals(15);
        for partition in response.responses.iter().flat_map(|t| &t.partitions) {
            assert_ne!(partition.error_code, 0);
            assert_eq!(partition.current_leader, LeaderIdAndEpoch::default());
        }
        assert!(response.node_endpoints.is_empty());
    }
}
