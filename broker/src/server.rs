//! The Kafka listener on every shard.
//!
//! Each shard binds the same address (glommio sets `SO_REUSEPORT`), so the
//! kernel spreads connections over the cores. A connection's requests are
//! decoded on the shard that read them and run as concurrent tasks, up to
//! [`IN_FLIGHT_REQUESTS_MAX`] per connection; a writer task sends the
//! responses strictly in request order, as Kafka clients require. A frame
//! larger than `socket.request.max.bytes` is refused before anything is
//! allocated for it; a frame that does not decode, or an API or version we
//! do not serve, closes the connection with a log line. Nothing a client
//! sends can panic the broker.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use event_listener::Event;
use fjord_engine::shard::Shard;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::handlers;
use crate::metadata::Controller;

/// Requests of one connection being processed at once; the reader waits
/// for the oldest response beyond this.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;
/// How often a shard looks at the process-wide stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Everything a request handler can reach on its shard.
pub struct Broker {
    /// The engine shard this broker shell runs on.
    pub shard: Rc<Shard>,
    /// The broker configuration.
    pub config: Arc<BrokerConfig>,
    /// The metadata controller (shared by every shard).
    pub controller: Arc<Controller>,
    stop_flag: Arc<AtomicBool>,
    stopping: Event,
    stopped: Cell<bool>,
}

impl Broker {
    /// A broker shell on `shard`.
    #[must_use]
    pub fn new(
        shard: Rc<Shard>,
        config: Arc<BrokerConfig>,
        controller: Arc<Controller>,
        stop_flag: Arc<AtomicBool>,
    ) -> Rc<Self> {
        Rc::new(Self {
            shard,
            config,
            controller,
            stop_flag,
            stopping: Event::new(),
            stopped: Cell::new(false),
        })
    }

    /// Whether the broker is shutting down.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves once shutdown begins.
    async fn until_stopping(&self) {
        loop {
            let listener = self.stopping.listen();
            if self.stopped.get() {
                return;
            }
            listener.await;
        }
    }

    async fn watch_stop_flag(&self) {
        while !self.stop_flag.load(Ordering::Relaxed) {
            glommio::timer::sleep(STOP_POLL_INTERVAL).await;
        }
        self.stopped.set(true);
        self.stopping.notify(usize::MAX);
    }
}

/// Accepts and serves connections on this shard until the stop flag is set,
/// then lets every connection finish the requests it already read.
///
/// # Errors
/// [`BrokerError::Io`] if the listener cannot be bound.
pub async fn serve(broker: Rc<Broker>) -> Result<(), BrokerError> {
    let listener = TcpListener::bind(broker.config.listener).map_err(|error| BrokerError::Io {
        context: format!("binding {}", broker.config.listener),
        source: error.into(),
    })?;
    tracing::info!(shard = broker.shard.id(), address = %broker.config.listener, "listening");
    let watcher = glommio::spawn_local({
        let broker = broker.clone();
        async move { broker.watch_stop_flag().await }
    });
    let open_connections = Rc::new((Cell::new(0usize), Event::new()));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            broker.until_stopping().await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                let broker = broker.clone();
                let open_connections = open_connections.clone();
                open_connections.0.set(open_connections.0.get() + 1);
                glommio::spawn_local(async move {
                    if let Err(error) = serve_connection(&broker, stream).await {
                        tracing::debug!(%error, "connection closed");
                    }
                    open_connections.0.set(open_connections.0.get() - 1);
                    open_connections.1.notify(usize::MAX);
                })
                .detach();
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    loop {
        let drained = open_connections.1.listen();
        if open_connections.0.get() == 0 {
            break;
        }
        drained.await;
    }
    watcher.await;
    Ok(())
}

type ResponseTask = glommio::task::JoinHandle<Option<Bytes>>;

async fn serve_connection(broker: &Rc<Broker>, stream: TcpStream) -> Result<(), BrokerError> {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (responses, pending) = local_channel::new_bounded::<ResponseTask>(IN_FLIGHT_REQUESTS_MAX);
    let writer_task = glommio::spawn_local(async move {
        while let Some(task) = pending.recv().await {
            let Some(Some(frame)) = task.await else {
                continue;
            };
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    let max_bytes = broker.config.socket_request_max_bytes;
    loop {
        let frame = futures_lite::future::or(
            async { Some(read_frame(&mut reader, max_bytes).await) },
            async {
                broker.until_stopping().await;
                None
            },
        )
        .await;
        let frame = match frame {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(frame))) => frame,
            Some(Err(error)) => {
                tracing::warn!(?peer, %error, "closing connection");
                break;
            }
        };
        let (header, request) = match decode_request(frame) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::warn!(?peer, %error, "closing connection on a request we cannot serve");
                break;
            }
        };
        let task = glommio::spawn_local({
            let broker = broker.clone();
            async move { respond(&broker, header, request).await }
        });
        if responses.send(task.detach()).await.is_err() {
            break;
        }
    }
    drop(responses);
    writer_task.await;
    Ok(())
}

/// Reads one size-prefixed frame; `None` at a clean end of stream.
async fn read_frame(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    max_bytes: usize,
) -> Result<Option<Bytes>, BrokerError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => {
            return Err(BrokerError::Io {
                context: "reading request".to_owned(),
                source: error,
            })
        }
    }
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .map_err(|_| BrokerError::Malformed(format!("negative frame size {size}")))?;
    if size > max_bytes {
        return Err(BrokerError::Malformed(format!(
            "frame of {size} bytes exceeds socket.request.max.bytes {max_bytes}"
        )));
    }
    if size < 8 {
        return Err(BrokerError::Malformed(format!(
            "frame of {size} bytes is too short"
        )));
    }
    let mut frame = BytesMut::zeroed(size);
    reader
        .read_exact(&mut frame)
        .await
        .map_err(|error| BrokerError::Io {
            context: "reading request".to_owned(),
            source: error,
        })?;
    Ok(Some(frame.freeze()))
}

/// A decoded request, or the ApiVersions fallback (KIP-511): a client that
/// asks ApiVersions in a version we do not know still gets our versions.
pub enum Decoded {
    /// A request we serve.
    Request(Box<RequestKind>),
    /// ApiVersions in a version newer than ours.
    UnsupportedApiVersions,
}

/// Decodes a frame's header and body.
///
/// # Errors
/// [`BrokerError::Malformed`] for an unknown API key, a version we do not
/// serve, or bytes that do not decode.
pub fn decode_request(mut frame: Bytes) -> Result<(RequestHeader, Decoded), BrokerError> {
    if frame.len() < 4 {
        return Err(BrokerError::Malformed(
            "frame shorter than its header".to_owned(),
        ));
    }
    let key = (&frame[..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let api_key = ApiKey::try_from(key)
        .map_err(|()| BrokerError::Malformed(format!("unknown API key {key}")))?;
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|error| BrokerError::Malformed(format!("request header: {error}")))?;
    let Some(support) = handlers::support_for(api_key) else {
        return Err(BrokerError::Malformed(format!(
            "API {api_key:?} is not served"
        )));
    };
    if version < support.min || version > support.max {
        if api_key == ApiKey::ApiVersions {
            return Ok((header, Decoded::UnsupportedApiVersions));
        }
        return Err(BrokerError::Malformed(format!(
            "{api_key:?} v{version} is outside the served range v{}-v{}",
            support.min, support.max
        )));
    }
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|error| BrokerError::Malformed(format!("{api_key:?} v{version}: {error}")))?;
    Ok((header, Decoded::Request(Box::new(request))))
}

async fn respond(broker: &Rc<Broker>, header: RequestHeader, request: Decoded) -> Option<Bytes> {
    let api_key = ApiKey::try_from(header.request_api_key).ok()?;
    let (version, response) = match request {
        Decoded::UnsupportedApiVersions => (0, handlers::api_versions::unsupported_version()),
        Decoded::Request(request) => match handlers::dispatch(broker, &header, *request).await {
            Ok(Some(response)) => (header.request_api_version, response),
            Ok(None) => return None,
            Err(error) => {
                tracing::warn!(?api_key, %error, "request failed");
                return None;
            }
        },
    };
    match encode_response(api_key, &header, version, &response) {
        Ok(frame) => Some(frame),
        Err(error) => {
            tracing::error!(?api_key, version, %error, "cannot encode response");
            None
        }
    }
}

/// Encodes a response frame: size, response header, body.
///
/// # Errors
/// [`BrokerError::Malformed`] if the codec refuses the response.
pub fn encode_response(
    api_key: ApiKey,
    request: &RequestHeader,
    version: i16,
    response: &ResponseKind,
) -> Result<Bytes, BrokerError> {
    let mut frame = BytesMut::with_capacity(256);
    frame.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(request.correlation_id);
    header
        .encode(&mut frame, api_key.response_header_version(version))
        .map_err(|error| BrokerError::Malformed(format!("response header: {error}")))?;
    response.encode(&mut frame, version).map_err(|error| {
        BrokerError::Malformed(format!("{api_key:?} v{version} response: {error}"))
    })?;
    let size = i32::try_from(frame.len() - 4)
        .map_err(|_| BrokerError::Malformed("response too large".to_owned()))?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}
