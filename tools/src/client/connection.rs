//! One blocking connection to a broker and the request framing it speaks.
//!
//! Plain std sockets, one request at a time or pipelined with responses read
//! in request order (Kafka brokers answer in order per connection). The
//! codecs come from the `kafka-protocol` crate; the header version follows
//! from the API key and version, so flexible versions (`DescribeCluster`)
//! and plain ones share the code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::error::Error;

/// Where the correlation id sits in a sized request frame: after the 4-byte
/// size, the 2-byte API key and the 2-byte API version.
pub const CORRELATION_ID_AT: usize = 8;
/// The largest response frame accepted (a Fetch of `max_bytes` plus
/// headers stays well below it).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// How long one socket read or write may block before the call fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A sized request frame: 4-byte size, the request header (with
/// `client_id`) at the version `api_key` and `version` call for, then
/// `body` at `version`.
///
/// # Errors
/// [`Error::Protocol`] if the crate cannot encode `body` at `version`.
pub fn encode_request(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: &str,
    body: &impl Encodable,
) -> Result<BytesMut, Error> {
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())))
        .encode(&mut frame, api_key.request_header_version(version))
        .map_err(|error| Error::Protocol(format!("encoding a {api_key:?} header: {error}")))?;
    body.encode(&mut frame, version)
        .map_err(|error| Error::Protocol(format!("encoding {api_key:?} v{version}: {error}")))?;
    let size = i32::try_from(frame.len() - 4)
        .map_err(|_| Error::Protocol(format!("a {api_key:?} request exceeds i32 bytes")))?;
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
/// [`Error::Protocol`] on a decoding failure or a correlation id out of
/// order.
pub fn decode_response<R: Decodable>(
    frame: &mut BytesMut,
    api_key: ApiKey,
    version: i16,
    expected_correlation_id: i32,
) -> Result<R, Error> {
    let header = ResponseHeader::decode(frame, api_key.response_header_version(version)).map_err(
        |error| Error::Protocol(format!("decoding a {api_key:?} response header: {error}")),
    )?;
    if header.correlation_id != expected_correlation_id {
        return Err(Error::Protocol(format!(
            "{api_key:?} response has correlation id {}, expected {expected_correlation_id}",
            header.correlation_id
        )));
    }
    R::decode(frame, version).map_err(|error| {
        Error::Protocol(format!(
            "decoding a {api_key:?} v{version} response: {error}"
        ))
    })
}

/// One blocking connection to a broker.
pub struct Connection {
    address: String,
    client_id: String,
    stream: TcpStream,
    next_correlation_id: i32,
    /// Reused for every response frame: after the decoded response is
    /// dropped, `reserve` reclaims the same allocation.
    receive: BytesMut,
}

impl Connection {
    /// Connects to `address` (`host:port`, every resolved address tried in
    /// turn) with `TCP_NODELAY` and [`IO_TIMEOUT`] on reads and writes;
    /// requests carry `client_id`.
    ///
    /// # Errors
    /// [`Error::Connect`] if no address accepts.
    pub fn open(address: &str, client_id: &str) -> Result<Self, Error> {
        let connect_error = |source| Error::Connect {
            address: address.to_owned(),
            source,
        };
        let stream = TcpStream::connect(address).map_err(connect_error)?;
        stream.set_nodelay(true).map_err(connect_error)?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(connect_error)?;
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .map_err(connect_error)?;
        Ok(Self {
            address: address.to_owned(),
            client_id: client_id.to_owned(),
            stream,
            next_correlation_id: 0,
            receive: BytesMut::new(),
        })
    }

    /// A second handle on the same socket, for a reader thread that takes
    /// responses while this one sends requests (pipelining). Correlation ids
    /// stay with the sender; the reader checks them with
    /// [`decode_response`].
    ///
    /// # Errors
    /// [`Error::Network`] if the socket cannot be duplicated.
    pub fn try_clone(&self) -> Result<Self, Error> {
        Ok(Self {
            address: self.address.clone(),
            client_id: self.client_id.clone(),
            stream: self
                .stream
                .try_clone()
                .map_err(|source| self.network_error(source))?,
            next_correlation_id: 0,
            receive: BytesMut::new(),
        })
    }

    /// The `host:port` this connection was opened to.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The next correlation id, in sending order.
    pub fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }

    /// A sized frame of `body` with the next correlation id, which it
    /// returns with the frame.
    ///
    /// # Errors
    /// [`Error::Protocol`] if `body` does not encode at `version`.
    pub fn frame(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &impl Encodable,
    ) -> Result<(i32, BytesMut), Error> {
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(api_key, version, correlation_id, &self.client_id, body)?;
        Ok((correlation_id, frame))
    }

    /// Writes a whole sized frame.
    ///
    /// # Errors
    /// [`Error::Network`] with the socket error.
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(frame)
            .map_err(|source| self.network_error(source))
    }

    /// Reads the next response frame, without its size prefix.
    ///
    /// # Errors
    /// [`Error::Network`] with the socket error (the broker closing the
    /// connection included), [`Error::Protocol`] for a size outside
    /// `0..=RESPONSE_BYTES_MAX`.
    pub fn receive_frame(&mut self) -> Result<BytesMut, Error> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|source| self.network_error(source))?;
        let size = usize::try_from(i32::from_be_bytes(size))
            .ok()
            .filter(|size| *size <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| Error::Protocol("response frame size out of range".to_owned()))?;
        self.receive.clear();
        self.receive.reserve(size);
        self.receive.resize(size, 0);
        if let Err(source) = self.stream.read_exact(&mut self.receive) {
            return Err(self.network_error(source));
        }
        Ok(self.receive.split())
    }

    /// Reads the next response frame and decodes it as the answer to
    /// request `correlation_id` (the oldest one outstanding).
    ///
    /// # Errors
    /// Socket or decoding failures, or a response out of order.
    pub fn receive_response<R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<R, Error> {
        let mut response = self.receive_frame()?;
        decode_response(&mut response, api_key, version, correlation_id)
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
    ) -> Result<R, Error> {
        let (correlation_id, frame) = self.frame(api_key, version, body)?;
        self.send_frame(&frame)?;
        self.receive_response(api_key, version, correlation_id)
    }

    fn network_error(&self, source: std::io::Error) -> Error {
        Error::Network {
            address: self.address.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};

    use super::*;

    const PRODUCE_VERSION: i16 = 7;

    #[test]
    fn a_request_frame_is_reused_with_a_new_correlation_id() {
        let body = ProduceRequest::default().with_acks(1).with_timeout_ms(5);
        let mut frame = encode_request(ApiKey::Produce, PRODUCE_VERSION, 7, "t", &body).unwrap();
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
                .with_name(TopicName(StrBytes::from_static_str("t")))
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
}
