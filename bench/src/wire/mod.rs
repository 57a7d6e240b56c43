//! `fjord-bench produce|consume`: load over the Kafka protocol, against any
//! Kafka-compatible bootstrap server (fjord, Apache Kafka, Redpanda, ...).
//!
//! Plain std threads with blocking sockets: one connection per producer
//! thread, responses read in request order (Kafka brokers answer in order per
//! connection). Codecs come from the `kafka-protocol` crate; record batches
//! from [`fjord_engine::batch::build_batch`] (uncompressed, magic 2).
//!
//! Fixed API versions, chosen because Apache Kafka 2.1 through 4.x and fjord
//! all serve them: Produce v7, Fetch v11, Metadata v8, `CreateTopics` v4,
//! `ListOffsets` v4. None of them is a flexible version, so the frames are
//! plain.

pub mod consume;
pub mod produce;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::engine::{BenchError, BenchResult};

/// Produce request version.
pub const PRODUCE_VERSION: i16 = 7;
/// Fetch request version.
pub const FETCH_VERSION: i16 = 11;
/// Metadata request version.
pub const METADATA_VERSION: i16 = 8;
/// `CreateTopics` request version.
pub const CREATE_TOPICS_VERSION: i16 = 4;
/// `ListOffsets` request version.
pub const LIST_OFFSETS_VERSION: i16 = 4;

/// Where the correlation id sits in a sized request frame: after the 4-byte
/// size, the 2-byte API key and the 2-byte API version.
pub const CORRELATION_ID_AT: usize = 8;
/// The largest response frame accepted (a Fetch of `max_bytes` plus
/// headers stays well below it).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// How long one socket read or write may block before the run fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a created topic may take to get a leader for every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Kafka error codes the bench reacts to.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const LEADER_NOT_AVAILABLE: i16 = 5;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// The client id every request carries.
const CLIENT_ID: &str = "fjord-bench";

/// Options shared by `produce` and `consume`.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// A broker to ask for metadata, `host:port`.
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// The topic to write or read.
    #[arg(long, default_value = "fjord-bench")]
    pub topic: String,
}

/// `name` as a topic name.
#[must_use]
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// A sized request frame: 4-byte size, request header v1 (`client_id`), then
/// `body` at `version`. Fixed versions here are never flexible, so the
/// header is always v1.
///
/// # Errors
/// If the crate cannot encode `body` at `version`.
pub fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &impl Encodable,
) -> BenchResult<BytesMut> {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
        .encode(&mut frame, api_key.request_header_version(version))
        .map_err(|error| format!("encoding a {api_key:?} header: {error}"))?;
    body.encode(&mut frame, version)
        .map_err(|error| format!("encoding {api_key:?} v{version}: {error}"))?;
    let size = i32::try_from(frame.len() - 4).map_err(|_| "request frame exceeds i32")?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Rewrites the correlation id of a frame built by [`encode_request`], so
/// one encoded request can be sent many times.
///
/// # Panics
/// If `frame` is shorter than a request header.
pub fn set_correlation_id(frame: &mut [u8], correlation_id: i32) {
    frame[CORRELATION_ID_AT..CORRELATION_ID_AT + 4].copy_from_slice(&correlation_id.to_be_bytes());
}

/// Decodes a response frame (without its size prefix): the header, whose
/// correlation id must be `expected_correlation_id`, then the body.
///
/// # Errors
/// A decoding failure or a correlation id out of order.
pub fn decode_response<R: Decodable>(
    frame: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    expected_correlation_id: i32,
) -> BenchResult<R> {
    let header = ResponseHeader::decode(frame, api_key.response_header_version(version))
        .map_err(|error| format!("decoding a {api_key:?} response header: {error}"))?;
    if header.correlation_id != expected_correlation_id {
        return Err(format!(
            "{api_key:?} response has correlation id {}, expected {expected_correlation_id}",
            header.correlation_id
        )
        .into());
    }
    R::decode(frame, version)
        .map_err(|error| format!("decoding a {api_key:?} v{version} response: {error}").into())
}

/// One blocking connection to a broker.
pub struct Connection {
    stream: TcpStream,
    next_correlation_id: i32,
    /// Reused for every response frame: after the decoded response is
    /// dropped, `reserve` reclaims the same allocation.
    receive: BytesMut,
}

impl Connection {
    /// Connects to `address` (`host:port`, every resolved address tried in
    /// turn) with `TCP_NODELAY` and [`IO_TIMEOUT`] on reads and writes.
    ///
    /// # Errors
    /// If no address accepts.
    pub fn open(address: &str) -> BenchResult<Self> {
        let stream = TcpStream::connect(address)
            .map_err(|error| format!("connecting to {address}: {error}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream,
            next_correlation_id: 0,
            receive: BytesMut::new(),
        })
    }

    /// The next correlation id, in sending order.
    pub fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// Writes a whole sized frame.
    ///
    /// # Errors
    /// The socket error.
    pub fn send_frame(&mut self, frame: &[u8]) -> BenchResult<()> {
        self.stream.write_all(frame)?;
        Ok(())
    }

    /// Reads the next response frame, without its size prefix.
    ///
    /// # Errors
    /// The socket error, or a size outside `0..=RESPONSE_BYTES_MAX`.
    pub fn receive_frame(&mut self) -> BenchResult<BytesMut> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|size| *size <= RESPONSE_BYTES_MAX)
            .ok_or("response frame size out of range")?;
        self.receive.clear();
        self.receive.reserve(size);
        self.receive.resize(size, 0);
        self.stream.read_exact(&mut self.receive)?;
        Ok(self.receive.split())
    }

    /// Sends `body` and waits for its response.
    ///
    /// # Errors
    /// Encoding, socket or decoding failures.
    pub fn call<R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> BenchResult<R> {
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(api_key, version, correlation_id, body)?;
        self.send_frame(&frame)?;
        let mut response = self.receive_frame()?;
        decode_response(&mut response, api_key, version, correlation_id)
    }
}

/// A partition and the address of its leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLeader {
    /// Partition index.
    pub partition: i32,
    /// The leader's advertised `host:port`.
    pub address: String,
}

/// How to create the topic when it does not exist.
#[derive(Clone, Copy, Debug)]
pub struct TopicSpec {
    /// `num_partitions`.
    pub partitions: i32,
    /// `replication_factor`.
    pub replication_factor: i16,
}

/// Every partition of `topic` with its leader, creating the topic first
/// (with `create`) if the cluster does not know it, and waiting until every
/// partition has a leader.
///
/// # Errors
/// If the bootstrap server cannot be reached, the topic is missing and
/// `create` is `None`, creation fails, or leaders do not appear within 30 s.
pub fn partition_leaders(
    client: &ClientArgs,
    create: Option<TopicSpec>,
) -> BenchResult<Vec<PartitionLeader>> {
    let mut connection = Connection::open(&client.bootstrap_server)?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(&client.topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut created = false;
    loop {
        let metadata: MetadataResponse =
            connection.call(ApiKey::Metadata, METADATA_VERSION, &request)?;
        let brokers: BTreeMap<i32, String> = metadata
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port)))
            .collect();
        let topic = metadata.topics.iter().find(|topic| {
            topic
                .name
                .as_ref()
                .is_some_and(|name| name.0 == *client.topic)
        });
        let error_code = topic.map_or(UNKNOWN_TOPIC_OR_PARTITION, |topic| topic.error_code);
        match (error_code, create) {
            (0, _) => {
                let topic = topic.ok_or("topic vanished")?;
                let leaders: Option<Vec<PartitionLeader>> = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        brokers
                            .get(&partition.leader_id.0)
                            .filter(|_| partition.error_code == 0)
                            .map(|address| PartitionLeader {
                                partition: partition.partition_index,
                                address: address.clone(),
                            })
                    })
                    .collect();
                if let Some(mut leaders) = leaders.filter(|leaders| !leaders.is_empty()) {
                    leaders.sort_by_key(|leader| leader.partition);
                    return Ok(leaders);
                }
            }
            (UNKNOWN_TOPIC_OR_PARTITION, Some(spec)) if !created => {
                create_topic(&mut connection, &client.topic, spec)?;
                created = true;
            }
            (UNKNOWN_TOPIC_OR_PARTITION, None) => {
                return Err(format!("topic {} does not exist", client.topic).into());
            }
            (UNKNOWN_TOPIC_OR_PARTITION | LEADER_NOT_AVAILABLE, _) => {}
            (code, _) => {
                return Err(
                    format!("metadata for {} failed: error code {code}", client.topic).into(),
                )
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "topic {} has no leader for every partition after {TOPIC_READY_TIMEOUT:?}",
                client.topic
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_topic(connection: &mut Connection, name: &str, spec: TopicSpec) -> BenchResult<()> {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(spec.partitions)
            .with_replication_factor(spec.replication_factor)]);
    let response: CreateTopicsResponse =
        connection.call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)?;
    for topic in &response.topics {
        if topic.error_code != 0 && topic.error_code != TOPIC_ALREADY_EXISTS {
            return Err(BenchError::from(format!(
                "creating topic {name}: error code {} ({})",
                topic.error_code,
                topic.error_message.as_deref().unwrap_or("no message")
            )));
        }
    }
    Ok(())
}

/// The one leader of every partition in `leaders`.
///
/// # Errors
/// If the partitions have different leaders: each producer thread keeps a
/// single connection, so a run covers partitions of one broker.
pub fn single_leader(leaders: &[PartitionLeader]) -> BenchResult<String> {
    let first = leaders.first().ok_or("the topic has no partitions")?;
    if let Some(other) = leaders
        .iter()
        .find(|leader| leader.address != first.address)
    {
        return Err(format!(
            "partitions {} and {} have different leaders ({} and {}); \
             fjord-bench drives one broker per run",
            first.partition, other.partition, first.address, other.address
        )
        .into());
    }
    Ok(first.address.clone())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

    use super::*;

    #[test]
    fn a_request_frame_is_reused_with_a_new_correlation_id() {
        let body = ProduceRequest::default().with_acks(1).with_timeout_ms(5);
        let mut frame = encode_request(ApiKey::Produce, PRODUCE_VERSION, 7, &body).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(size as usize, frame.len() - 4);
        set_correlation_id(&mut frame, 0x0102_0304);
        let mut rest = frame.split_off(4);
        let header = RequestHeader::decode(&mut rest, 1).unwrap();
        assert_eq!(header.request_api_key, ApiKey::Produce as i16);
        assert_eq!(header.request_api_version, PRODUCE_VERSION);
        assert_eq!(header.correlation_id, 0x0102_0304);
        assert_eq!(
            ProduceRequest::decode(&mut rest, PRODUCE_VERSION).unwrap(),
            body
        );
    }

    #[test]
    fn responses_decode_and_out_of_order_ones_are_refused() {
        let response =
            ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
                .with_name(topic_name("t"))
                .with_partition_responses(vec![PartitionProduceResponse::default()
                    .with_index(3)
                    .with_base_offset(42)])]);
        let encode = |correlation_id: i32| {
            let mut frame = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(correlation_id)
                .encode(&mut frame, 0)
                .unwrap();
            response.encode(&mut frame, PRODUCE_VERSION).unwrap();
            frame
        };
        let decoded: ProduceResponse =
            decode_response(&mut encode(5), ApiKey::Produce, PRODUCE_VERSION, 5).unwrap();
        assert_eq!(decoded, response);
        assert!(decode_response::<ProduceResponse>(
            &mut encode(6),
            ApiKey::Produce,
            PRODUCE_VERSION,
            5
        )
        .is_err());
    }

    #[test]
    fn one_broker_per_run() {
        let leader = |partition, address: &str| PartitionLeader {
            partition,
            address: address.to_owned(),
        };
        assert_eq!(
            single_leader(&[leader(0, "a:1"), leader(1, "a:1")]).unwrap(),
            "a:1"
        );
        assert!(single_leader(&[leader(0, "a:1"), leader(1, "b:1")]).is_err());
        assert!(single_leader(&[]).is_err());
    }
}
