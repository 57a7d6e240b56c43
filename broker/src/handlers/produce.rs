//! Produce: appends each partition's record batches on its owning shard.
//!
//! `acks=0` sends no response, `acks=1` answers once the batch is written,
//! `acks=-1` once every in-sync replica has it (flushed, unless the topic
//! sets `write.caching`) and the high watermark passed it, within the
//! request's `timeout_ms` ([`partition::submit_append_as_leader`]).
//! A batch refused for some of its records (a keyless record on a compacted
//! topic, a timestamp out of range) names them in `record_errors` (KIP-467).
//! A connection's requests are put in line on their partitions one after
//! the other ([`line_up`]), so each partition admits them in the order they
//! arrived, as Kafka does; once in line, the partitions of one request, and
//! the requests of one connection, are appended concurrently. A request's
//! batches for one partition are appended together or not at all. Old versions (v0-v2,
//! message formats 0 and 1) are advertised because some librdkafka versions
//! only enable compression when they see Produce v0, but every partition of
//! such a request is refused with `UNSUPPORTED_VERSION`, as Kafka 4 does
//! (KIP-896). A topic whose `compression.type` is
//! a codec rather than `producer` gets its batches recompressed first.

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_engine::batch::split_batches;
use fjord_engine::log::AppendInfo;
use fjord_engine::Error as EngineError;
use fjord_engine::TopicPartition;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::advertised::advertised_brokers;
use crate::error::BrokerError;
use crate::partition::{self, PartitionError, PendingAppend, NO_LEADER_EPOCH};
use crate::recompress;
use crate::server::Broker;
use crate::topics;

/// Versions advertised (v0-v2 are refused with `UNSUPPORTED_VERSION`).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::Produce,
    min: 0,
    max: 11,
};

/// The oldest version whose batches (message format 2) are appended; older
/// ones are [`LegacyProduce`].
pub const OLDEST_APPENDED_VERSION: i16 = 3;

/// A Produce v0-v2 request, decoded only to refuse each of its partitions.
pub struct LegacyProduce {
    version: i16,
    request: ProduceRequest,
}

impl LegacyProduce {
    /// Decodes a v0-v2 body. These versions are v3 without the leading
    /// nullable `transactional_id`, so the body is decoded as v3 behind a
    /// null one; the codec has no older versions.
    ///
    /// # Errors
    /// [`BrokerError::Codec`] if the body does not decode.
    pub fn decode(version: i16, body: &[u8]) -> Result<Self, BrokerError> {
        debug_assert!((0..OLDEST_APPENDED_VERSION).contains(&version));
        let mut framed = BytesMut::with_capacity(body.len() + 2);
        framed.put_i16(-1);
        framed.extend_from_slice(body);
        let request = ProduceRequest::decode(&mut framed.freeze(), OLDEST_APPENDED_VERSION)
            .map_err(|error| BrokerError::Codec(error.to_string()))?;
        Ok(Self { version, request })
    }

    /// Whether the client waits for an answer (`acks` is not 0).
    #[must_use]
    pub fn wants_answer(&self) -> bool {
        self.request.acks != 0
    }

    /// The response body refusing every partition with
    /// `UNSUPPORTED_VERSION`, in the layout of the request's version: v0
    /// has topic, partition, error and base offset; v1 adds the throttle
    /// time, v2 each partition's log append time.
    #[must_use]
    pub fn refusal(&self) -> Bytes {
        let mut body = BytesMut::new();
        put_array_len(&mut body, self.request.topic_data.len());
        for topic in &self.request.topic_data {
            // The name was decoded from an INT16-sized string.
            let name = topic.name.0.as_bytes();
            body.put_i16(name.len() as i16);
            body.extend_from_slice(name);
            put_array_len(&mut body, topic.partition_data.len());
            for partition in &topic.partition_data {
                body.put_i32(partition.index);
                body.put_i16(ResponseError::UnsupportedVersion.code());
                body.put_i64(-1);
                if self.version >= 2 {
                    body.put_i64(-1);
                }
            }
        }
        if self.version >= 1 {
            body.put_i32(0);
        }
        body.freeze()
    }
}

fn put_array_len(body: &mut BytesMut, len: usize) {
    body.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
}

fn failed(index: i32, code: i16, message: &str) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(message.to_owned())))
}

/// A Produce request whose appends have their places in line on every
/// partition it writes to; [`ProduceInLine::answer`] waits for them.
pub struct ProduceInLine {
    acks: i16,
    topics: Vec<(TopicName, Vec<PartitionAppend>)>,
    /// Where the leaders named in `NOT_LEADER_OR_FOLLOWER` answers are
    /// (KIP-951, Produce v10+).
    leader_endpoints: Vec<NodeEndpoint>,
}

/// One partition of a request in line.
enum PartitionAppend {
    /// Refused before anything was appended.
    Refused(PartitionProduceResponse),
    /// Appending on the owning shard.
    Appending(i32, PendingAppend),
}

/// Checks every partition of `request` and hands each one's batches to
/// its owning shard, returning once every append has its place in its
/// partition's admission line. The connection calls this for one request
/// after the other, before it reads the next: a connection's appends to a
/// partition are admitted in request order whatever the size of each, the
/// shard it goes to, or the order the tasks that finish them run in.
pub async fn line_up(broker: &Rc<Broker>, request: ProduceRequest) -> ProduceInLine {
    let acks = request.acks;
    let timeout = Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let transactional = request.transactional_id.is_some();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    let mut leaders_elsewhere = BTreeSet::new();
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let refusal = if ![0, 1, -1].contains(&acks) {
                Some((
                    ResponseError::InvalidRequiredAcks,
                    "acks must be 0, 1 or -1",
                ))
            } else if topics::is_internal(&name) {
                Some((
                    ResponseError::InvalidTopicException,
                    "clients may not write to an internal topic",
                ))
            } else if transactional {
                Some((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "transactions are not supported yet",
                ))
            } else {
                None
            };
            let partition = TopicPartition::new(name.clone(), data.index);
            let leading = match refusal {
                Some((error, message)) => Err(failed(data.index, error.code(), message)),
                None => match partition::led_here(broker, &partition, NO_LEADER_EPOCH) {
                    Err(
                        error @ PartitionError::NotLeader {
                            leader,
                            leader_epoch,
                        },
                    ) => {
                        leaders_elsewhere.insert(leader);
                        Err(failed(data.index, error.code(), &error.to_string())
                            .with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(BrokerId(leader.0))
                                    .with_leader_epoch(leader_epoch.0),
                            ))
                    }
                    Err(error) => Err(failed(data.index, error.code(), &error.to_string())),
                    Ok(state) => prepare_batches(broker, &partition, data.records)
                        .map(|batches| (state, batches))
                        .map_err(|(code, message)| failed(data.index, code, &message)),
                },
            };
            partitions.push(match leading {
                Ok((state, batches)) => PartitionAppend::Appending(
                    data.index,
                    partition::submit_append_as_leader(
                        broker, &state, partition, batches, acks, timeout,
                    )
                    .await,
                ),
                Err(refused) => PartitionAppend::Refused(refused),
            });
        }
        topics.push((topic.name, partitions));
    }
    let leader_endpoints = advertised_brokers(&broker.controller.image(), false)
        .into_iter()
        .filter(|advertised| leaders_elsewhere.contains(&advertised.id))
        .map(|advertised| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(advertised.id.0))
                .with_host(StrBytes::from_string(advertised.host))
                .with_port(i32::from(advertised.port))
                .with_rack(advertised.rack.map(StrBytes::from_string))
        })
        .collect();
    ProduceInLine {
        acks,
        topics,
        leader_endpoints,
    }
}

/// One partition's record batches, split and recompressed as the topic
/// asks, or the error code and message refusing them.
fn prepare_batches(
    broker: &Broker,
    partition: &TopicPartition,
    records: Option<Bytes>,
) -> Result<Vec<Bytes>, (i16, String)> {
    let corrupt = |message: String| (ResponseError::CorruptMessage.code(), message);
    let Some(records) = records.filter(|records| !records.is_empty()) else {
        return Err(corrupt("no record batch".to_owned()));
    };
    let compression_type = broker
        .controller
        .topic_config(&partition.topic, "compression.type")
        .unwrap_or_else(|| broker.config.compression_type.clone());
    let target_codec = recompress::target_codec(&compression_type);
    let mut batches = Vec::new();
    for batch in split_batches(&records) {
        let batch = records.slice_ref(batch.map_err(|error| corrupt(error.to_string()))?);
        batches.push(match target_codec {
            Some(codec) => {
                recompress::recompress(batch, codec).map_err(|error| corrupt(error.to_string()))?
            }
            None => batch,
        });
    }
    Ok(batches)
}

impl ProduceInLine {
    /// Waits for every partition's append and answers the request; `None`
    /// for `acks=0`.
    pub async fn answer(self) -> Option<ProduceResponse> {
        let mut topics = Vec::with_capacity(self.topics.len());
        for (name, appends) in self.topics {
            let mut partitions = Vec::with_capacity(appends.len());
            for append in appends {
                partitions.push(match append {
                    PartitionAppend::Refused(response) => response,
                    PartitionAppend::Appending(index, task) => appended(index, task.await),
                });
            }
            topics.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions),
            );
        }
        (self.acks != 0).then(|| {
            ProduceResponse::default()
                .with_responses(topics)
                .with_node_endpoints(self.leader_endpoints)
        })
    }
}

/// The answer for partition `index` from its shard's.
fn appended(index: i32, appended: Result<AppendInfo, PartitionError>) -> PartitionProduceResponse {
    match appended {
        Ok(info) => PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(info.base_offset.0)
            .with_log_append_time_ms(info.log_append_time.0)
            .with_log_start_offset(info.log_start_offset.0),
        Err(error) => {
            let record_errors = match &error {
                PartitionError::Engine(EngineError::InvalidRecords { records, .. }) => records
                    .iter()
                    .map(|record| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(record.batch_index)
                            .with_batch_index_error_message(Some(StrBytes::from_string(
                                record.message.clone(),
                            )))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(error.code())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
                .with_record_errors(record_errors)
                .with_error_message(Some(StrBytes::from_string(error.to_string())))
        }
    }
}
