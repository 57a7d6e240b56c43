//! One connection from a follower's shard to a partition leader, speaking
//! Kafka's wire protocol: a follower is a Kafka client of its leader, as in
//! Kafka, so the leader serves it with the same Fetch code (and the same
//! zero-copy sends) as consumers. The connection comes from a source port
//! that the leader's listeners steer to the shard with the same index
//! ([`crate::steering`]): with equal `cores` on both brokers that shard
//! owns every partition this follower shard fetches, so the leader reads
//! them without a cross-core hop.
//!
//! One request at a time, each bounded by a deadline; a response larger
//! than the link's limit closes the connection rather than growing a
//! buffer without bound.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::steering::{self, SteerTo};

/// Why a request over a link failed; the link is closed after any.
#[derive(Debug)]
pub enum LinkError {
    /// The socket failed.
    Io(std::io::Error),
    /// The deadline passed.
    TimedOut,
    /// The peer sent what cannot be decoded, or more than the limit.
    Protocol(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "connection failed: {error}"),
            Self::TimedOut => f.write_str("the leader did not answer in time"),
            Self::Protocol(message) => write!(f, "protocol error: {message}"),
        }
    }
}

impl From<std::io::Error> for LinkError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// A connection to a leader.
pub struct Link {
    stream: TcpStream,
    client_id: StrBytes,
    next_correlation_id: i32,
    response_limit: usize,
}

impl Link {
    /// Connects to `address` (`host:port`) within `timeout`, from a source
    /// port that lands on the leader's shard `steer` names
    /// ([`steering::connect`]); responses larger than `response_limit`
    /// bytes are refused.
    ///
    /// # Errors
    /// [`LinkError::Io`] or [`LinkError::TimedOut`].
    pub async fn connect(
        address: &str,
        client_id: String,
        steer: Option<SteerTo>,
        timeout: Duration,
        response_limit: usize,
    ) -> Result<Self, LinkError> {
        let stream =
            steering::connect(address, steer, timeout)
                .await
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::TimedOut => LinkError::TimedOut,
                    _ => LinkError::Io(error),
                })?;
        stream
            .set_nodelay(true)
            .map_err(|error| LinkError::Io(error.into()))?;
        Ok(Self {
            stream,
            client_id: StrBytes::from_string(client_id),
            next_correlation_id: 0,
            response_limit,
        })
    }

    /// Sends `request` as `api_key` version `version` and waits, until
    /// `timeout`, for its response.
    ///
    /// # Errors
    /// [`LinkError`]; the link must not be used after one.
    pub async fn call<Request: Encodable, Response: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, LinkError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_request(api_key, version, correlation_id, &self.client_id, request)?;
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let mut size = [0u8; 4];
            self.stream.read_exact(&mut size).await?;
            let size = usize::try_from(i32::from_be_bytes(size))
                .map_err(|_| LinkError::Protocol("a negative frame size".to_owned()))?;
            if size > self.response_limit {
                return Err(LinkError::Protocol(format!(
                    "a {size}-byte response exceeds the {}-byte limit",
                    self.response_limit
                )));
            }
            let mut body = BytesMut::zeroed(size);
            self.stream.read_exact(&mut body).await?;
            Ok(body)
        };
        let mut body = futures_lite::future::or(exchange, async {
            glommio::timer::sleep(timeout).await;
            Err(LinkError::TimedOut)
        })
        .await?;
        let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .map_err(|error| LinkError::Protocol(format!("a {api_key:?} header: {error}")))?;
        if header.correlation_id != correlation_id {
            return Err(LinkError::Protocol(format!(
                "correlation id {} answers {correlation_id}",
                header.correlation_id
            )));
        }
        Response::decode(&mut body, version)
            .map_err(|error| LinkError::Protocol(format!("a {api_key:?} v{version}: {error}")))
    }
}

/// A sized request frame: size, header (at the version `api_key` and
/// `version` call for), body.
fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
    body: &impl Encodable,
) -> Result<BytesMut, LinkError> {
    let encoding = |error| LinkError::Protocol(format!("encoding {api_key:?}: {error}"));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()))
        .encode(&mut frame, api_key.request_header_version(version))
        .map_err(encoding)?;
    body.encode(&mut frame, version).map_err(encoding)?;
    let size = i32::try_from(frame.len() - 4)
        .map_err(|_| LinkError::Protocol("a request over i32 bytes".to_owned()))?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}
