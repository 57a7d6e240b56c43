//! Produce: appends each partition's record batches on its owning shard.
//!
//! `acks=0` sends no response, `acks=1` answers once the batch is written,
//! `acks=-1` once it is flushed (on a single replica that is the whole ISR).
//! Partitions of one request are appended concurrently. Old versions (v0-v2,
//! message formats 0 and 1) are advertised because some librdkafka versions
//! only enable compression when they see Produce v0, but every partition of
//! such a request is refused with `UNSUPPORTED_VERSION`, as Kafka 4 does
//! (KIP-896). A topic whose `compression.type` is
//! a codec rather than `producer` gets its batches recompressed first.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_engine::batch::split_batches;
use fjord_engine::shard::{AppendRequest, Request, Response};
use fjord_engine::{LeaderEpoch, TopicPartition};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

use super::ApiSupport;
use crate::error::engine_error_code;
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
    /// The codec's error if the body does not decode.
    pub fn decode(version: i16, body: &[u8]) -> anyhow::Result<Self> {
        debug_assert!((0..OLDEST_APPENDED_VERSION).contains(&version));
        let mut framed = BytesMut::with_capacity(body.len() + 2);
        framed.put_i16(-1);
        framed.extend_from_slice(body);
        let request = ProduceRequest::decode(&mut framed.freeze(), OLDEST_APPENDED_VERSION)?;
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

fn failed(index: i32, error: ResponseError, message: &str) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(StrBytes::from_string(message.to_owned())))
}

async fn append_partition(
    broker: Rc<Broker>,
    partition: TopicPartition,
    records: Option<Bytes>,
    acks: i16,
) -> PartitionProduceResponse {
    let index = partition.partition;
    if !broker.controller.image().contains(&partition) {
        return failed(
            index,
            ResponseError::UnknownTopicOrPartition,
            "unknown topic or partition",
        );
    }
    let Some(records) = records.filter(|records| !records.is_empty()) else {
        return failed(index, ResponseError::CorruptMessage, "no record batch");
    };
    let owner = broker.shard.owner_of(&partition);
    let compression_type = broker
        .controller
        .topic_config(&partition.topic, "compression.type")
        .unwrap_or_else(|| broker.config.compression_type.clone());
    let target_codec = recompress::target_codec(&compression_type);
    let mut first = None;
    for batch in split_batches(&records) {
        let batch = match batch {
            Ok(batch) => records.slice_ref(batch),
            Err(error) => return failed(index, ResponseError::CorruptMessage, &error.to_string()),
        };
        let batch = match target_codec {
            Some(codec) => match recompress::recompress(batch, codec) {
                Ok(batch) => batch,
                Err(message) => return failed(index, ResponseError::CorruptMessage, &message),
            },
            None => batch,
        };
        let append = AppendRequest {
            partition: partition.clone(),
            batch,
            leader_epoch: LeaderEpoch(0),
            flush: acks == -1,
            advance_high_watermark: true,
        };
        match broker.shard.call(owner, Request::Append(append)).await {
            Response::Appended(info) => {
                first.get_or_insert(info);
            }
            Response::Failed(error) => {
                let code = engine_error_code(&error);
                return PartitionProduceResponse::default()
                    .with_index(index)
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
                    .with_error_message(Some(StrBytes::from_string(error.to_string())));
            }
            other => unreachable!("Append answers Appended or Failed, not {other:?}"),
        }
    }
    let info = first.expect("split_batches yields at least one batch for non-empty records");
    PartitionProduceResponse::default()
        .with_index(index)
        .with_base_offset(info.base_offset.0)
        .with_log_append_time_ms(info.log_append_time.0)
        .with_log_start_offset(info.log_start_offset.0)
}

/// Answers Produce; `None` for `acks=0`.
pub async fn handle(broker: &Rc<Broker>, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let tasks: Vec<_> = topic
            .partition_data
            .into_iter()
            .map(|data| {
                let partition = TopicPartition::new(name.clone(), data.index);
                if ![0, 1, -1].contains(&acks) {
                    let response = failed(
                        data.index,
                        ResponseError::InvalidRequiredAcks,
                        "acks must be 0, 1 or -1",
                    );
                    return glommio::spawn_local(async move { response });
                }
                if topics::is_internal(&name) {
                    let response = failed(
                        data.index,
                        ResponseError::InvalidTopicException,
                        "clients may not write to an internal topic",
                    );
                    return glommio::spawn_local(async move { response });
                }
                if request.transactional_id.is_some() {
                    let response = failed(
                        data.index,
                        ResponseError::TransactionalIdAuthorizationFailed,
                        "transactions are not supported yet",
                    );
                    return glommio::spawn_local(async move { response });
                }
                glommio::spawn_local(append_partition(
                    broker.clone(),
                    partition,
                    data.records,
                    acks,
                ))
            })
            .collect();
        let mut partitions = Vec::with_capacity(tasks.len());
        for task in tasks {
            partitions.push(task.await);
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    (acks != 0).then(|| ProduceResponse::default().with_responses(topics))
}
