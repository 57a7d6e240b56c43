//! The Kafka listener on every shard.
//!
//! Each shard accepts on the same address with a socket of its own
//! (`SO_REUSEPORT`): the kernel hands each connection to the shard its TCP
//! source port steers to ([`crate::steering`]), so a follower's shard lands
//! on the leader's shard that owns its partitions, and ordinary clients'
//! ports spread them over the cores. A connection's requests are
//! decoded on the shard that read them and run as concurrent tasks, up to
//! [`IN_FLIGHT_REQUESTS_MAX`] per connection but only one Fetch at a time
//! (a Fetch response can hold `fetch.max.bytes`); a writer task sends the
//! responses strictly in request order, as Kafka clients require. Fetch
//! requests run, and their responses are sent, in the shard's consumer-read
//! task queue, so a catch-up reader's work waits behind the appends of the
//! same core rather than in line with them. A response is a sequence of
//! [`ResponseChunk`]s: encoded bytes go out with the stream's writes,
//! segment file ranges (zero-copy Fetch) with `sendfile(2)` on a dup of the
//! socket, run on the shard's blocking pool because glommio has no public
//! sendfile (reading the file may wait for the disk). The socket is
//! non-blocking, so a `sendfile` returns when the send buffer is full and
//! the shard waits for room: a client that stops reading holds no pool
//! thread. A response that makes no progress for `connections.max.idle.ms`
//! closes the connection, as Kafka closes one without network activity. A
//! frame larger than `socket.request.max.bytes` is refused before anything
//! is allocated for it; a frame that does not decode, or an API or version
//! we do not serve, closes the connection with a log line. A connection
//! that sends no request for `connections.max.idle.ms` is closed (its
//! pending responses still go out first). Nothing a client sends can panic
//! the broker.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use event_listener::Event;
use fjord_engine::log::FileRange;
use fjord_engine::shard::Shard;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::error::BrokerError;
use crate::fetch_codec::{encode_fetch_response, ResponseChunk};
use crate::fetch_session::FetchSessions;
use crate::groups::GroupCoordinator;
use crate::handlers::produce::{LegacyProduce, OLDEST_APPENDED_VERSION};
use crate::handlers::{self, Reply};
use crate::image_follower::ImageFollower;
use crate::replication::Replication;
use crate::send_progress::SendProgress;
use crate::steering::ShardListeners;

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
    /// Incremental fetch sessions opened by this shard's connections.
    pub fetch_sessions: FetchSessions,
    /// The group coordinator (shared by every shard).
    pub groups: Arc<GroupCoordinator>,
    /// What this broker did with the metadata images (shared by every
    /// shard).
    pub image_follower: Arc<ImageFollower>,
    /// The leaders' view of their followers (shared by every shard).
    pub replication: Arc<Replication>,
    /// The followers (broker ids) whose fetch read a partition another
    /// shard owns, each logged once ([`handlers::fetch`]).
    pub(crate) followers_reading_across_shards: RefCell<HashSet<i32>>,
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
        groups: Arc<GroupCoordinator>,
        image_follower: Arc<ImageFollower>,
        replication: Arc<Replication>,
        stop_flag: Arc<AtomicBool>,
    ) -> Rc<Self> {
        // Shard counts are core counts: far below u32::MAX.
        let fetch_sessions = FetchSessions::new(
            shard.id() as u32,
            shard.shard_count() as u32,
            config
                .fetch_session_cache_slots
                .div_ceil(shard.shard_count()),
        );
        Rc::new(Self {
            shard,
            fetch_sessions,
            config,
            controller,
            groups,
            image_follower,
            replication,
            followers_reading_across_shards: RefCell::new(HashSet::new()),
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
    pub(crate) async fn until_stopping(&self) {
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

/// Accepts and serves connections on this shard's socket of `listeners`
/// (once the shards before it listen) until the stop flag is set, then
/// lets every connection finish the requests it already read.
///
/// # Errors
/// [`BrokerError::Io`] if the socket cannot listen.
pub async fn serve(broker: Rc<Broker>, listeners: &ShardListeners) -> Result<(), BrokerError> {
    let watcher = glommio::spawn_local({
        let broker = broker.clone();
        async move { broker.watch_stop_flag().await }
    });
    let address = listeners.address();
    let turn = futures_lite::future::or(
        async { Some(listeners.listen(broker.shard.id()).await) },
        async {
            broker.until_stopping().await;
            None
        },
    )
    .await;
    let listener = match turn {
        None => {
            watcher.await;
            return Ok(());
        }
        Some(Err(source)) => {
            return Err(BrokerError::Io {
                context: format!("listening on {address}"),
                source,
            })
        }
        // SAFETY: a listening TCP socket this shard now owns alone.
        Some(Ok(socket)) => unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) },
    };
    tracing::info!(shard = broker.shard.id(), %address, "listening");
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

/// What the writer does with one request's outcome.
enum Outcome {
    /// Send these chunks.
    Send(Vec<ResponseChunk>),
    /// Send nothing (Produce with `acks=0`).
    Silent,
    /// Close the connection: the request failed in a way no response
    /// expresses, and a client waiting for an answer must not hang.
    Close,
}

/// A request being answered.
struct PendingResponse {
    task: glommio::task::JoinHandle<Outcome>,
    /// A Fetch: answered, and its response sent, in the shard's
    /// consumer-read task queue ([`Shard::spawn_consumer_read`]), holding
    /// the connection's one turn at Fetch until its response is sent.
    fetch_turn: Option<StaticPermit>,
}

async fn serve_connection(broker: &Rc<Broker>, stream: TcpStream) -> Result<(), BrokerError> {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let socket = stream.as_raw_fd();
    set_nonblocking(socket);
    // A response the client stops reading is a connection without network
    // activity: Kafka closes those after `connections.max.idle.ms`.
    let stall_timeout = broker.config.connections_max_idle;
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (responses, pending) =
        local_channel::new_bounded::<PendingResponse>(IN_FLIGHT_REQUESTS_MAX);
    // One Fetch at a time per connection, as Kafka answers one request at a
    // time: a Fetch response holds up to `fetch.max.bytes` of batches until
    // it is sent, and a client pipelining Fetches must not make the broker
    // hold many. Real consumers keep one Fetch in flight per broker anyway.
    let fetch_turns = Rc::new(Semaphore::new(1));
    let shard = broker.shard.clone();
    let writer_task = glommio::spawn_local({
        let fetch_turns = fetch_turns.clone();
        async move {
            write_responses(pending, writer, socket, shard, stall_timeout, peer).await;
            // Wakes a reader waiting for a turn the writer will never give.
            fetch_turns.close();
        }
    });
    let max_bytes = broker.config.socket_request_max_bytes;
    let max_idle = broker.config.connections_max_idle;
    loop {
        let frame = futures_lite::future::or(
            async { Some(read_frame(&mut reader, max_bytes).await) },
            async {
                futures_lite::future::or(broker.until_stopping(), async {
                    glommio::timer::sleep(max_idle).await;
                    tracing::debug!(
                        ?peer,
                        "closing a connection idle for connections.max.idle.ms"
                    );
                })
                .await;
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
        // Begun here, before the next request is read: a Produce request's
        // appends take their places in line on every partition now, so a
        // connection's appends are admitted in the order it sent them.
        let request = match request {
            Decoded::Request(request) => Started::Begun(handlers::begin(broker, *request).await),
            Decoded::LegacyProduce(request) => Started::LegacyProduce(request),
            Decoded::UnsupportedApiVersions => Started::UnsupportedApiVersions,
        };
        let fetch_turn = if header.request_api_key == ApiKey::Fetch as i16 {
            match fetch_turns.acquire_static_permit(1).await {
                Ok(turn) => Some(turn),
                Err(_) => break,
            }
        } else {
            None
        };
        let answer = {
            let broker = broker.clone();
            async move { respond(&broker, header, request, peer).await }
        };
        let task = if fetch_turn.is_some() {
            broker.shard.spawn_consumer_read(answer)
        } else {
            glommio::spawn_local(answer)
        };
        let pending = PendingResponse {
            task: task.detach(),
            fetch_turn,
        };
        if responses.send(pending).await.is_err() {
            break;
        }
    }
    drop(responses);
    writer_task.await;
    Ok(())
}

/// Sends a connection's responses in request order until the reader is
/// done or a write fails, then closes the socket's write side.
async fn write_responses(
    pending: local_channel::LocalReceiver<PendingResponse>,
    mut writer: WriteHalf<TcpStream>,
    socket: RawFd,
    shard: Rc<Shard>,
    stall_timeout: Duration,
    peer: Option<SocketAddr>,
) {
    let progress = Rc::new(SendProgress::new(socket, stall_timeout));
    while let Some(PendingResponse { task, fetch_turn }) = pending.recv().await {
        let chunks = match task.await {
            Some(Outcome::Send(chunks)) => chunks,
            Some(Outcome::Silent) => continue,
            Some(Outcome::Close) | None => break,
        };
        let written = if fetch_turn.is_some() {
            let progress = Rc::clone(&progress);
            let (returned, written) = shard
                .spawn_consumer_read(async move {
                    let written = write_chunks(&mut writer, &progress, chunks).await;
                    (writer, written)
                })
                .await;
            writer = returned;
            written
        } else {
            write_chunks(&mut writer, &progress, chunks).await
        };
        drop(fetch_turn);
        if let Err(error) = written {
            tracing::debug!(?peer, %error, "closing connection on a failed write");
            break;
        }
    }
    let _ = writer.close().await;
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
    /// Produce v0-v2: advertised, answered with `UNSUPPORTED_VERSION`.
    LegacyProduce(LegacyProduce),
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
    if api_key == ApiKey::Produce && (0..OLDEST_APPENDED_VERSION).contains(&version) {
        let request = LegacyProduce::decode(version, &frame)
            .map_err(|error| BrokerError::Malformed(format!("Produce v{version}: {error}")))?;
        return Ok((header, Decoded::LegacyProduce(request)));
    }
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

/// A request as the connection hands it to its task: begun by its handler
/// ([`handlers::begin`]), or one answered without a handler.
enum Started {
    Begun(handlers::Begun),
    LegacyProduce(LegacyProduce),
    UnsupportedApiVersions,
}

async fn respond(
    broker: &Rc<Broker>,
    header: RequestHeader,
    request: Started,
    peer: Option<SocketAddr>,
) -> Outcome {
    let Ok(api_key) = ApiKey::try_from(header.request_api_key) else {
        return Outcome::Close;
    };
    let (version, reply) = match request {
        Started::LegacyProduce(request) => {
            if !request.wants_answer() {
                return Outcome::Silent;
            }
            return Outcome::Send(vec![ResponseChunk::Bytes(frame_body(
                header.correlation_id,
                &request.refusal(),
            ))]);
        }
        Started::UnsupportedApiVersions => (
            0,
            Reply::Encoded(handlers::api_versions::unsupported_version()),
        ),
        Started::Begun(begun) => match handlers::dispatch(broker, &header, begun, peer).await {
            Ok(Some(reply)) => (header.request_api_version, reply),
            Ok(None) => return Outcome::Silent,
            Err(error) => {
                tracing::warn!(?api_key, %error, "request failed; closing the connection");
                return Outcome::Close;
            }
        },
    };
    let encoded = match reply {
        Reply::Encoded(response) => encode_response(api_key, &header, version, &response)
            .map(|frame| vec![ResponseChunk::Bytes(frame)]),
        Reply::Fetch(fetch) => encode_fetch_response(header.correlation_id, version, &fetch),
    };
    match encoded {
        Ok(chunks) => Outcome::Send(chunks),
        Err(error) => {
            tracing::error!(?api_key, version, %error, "cannot encode response; closing the connection");
            Outcome::Close
        }
    }
}

/// In-memory chunks smaller than this are copied together into one write
/// (glommio's stream has no vectored write): a response of many small cached
/// batches then costs a few syscalls, not one per batch.
const COALESCE_CHUNK_BYTES_MAX: usize = 16 * 1024;
/// The most bytes gathered for one coalesced write.
const COALESCE_BUFFER_BYTES: usize = 64 * 1024;

/// The most bytes one send puts on the socket, or one `sendfile` moves,
/// before the shard's other tasks get their turn. A send on loopback runs
/// the receiver's TCP processing too, so one send of a whole 8 MiB batch
/// range held the core for milliseconds; an append behind it waited as long.
const SEND_PIECE_BYTES: usize = 256 * 1024;

/// Sends one response's chunks in order: bytes with the stream's own
/// writes (small ones gathered into one), file ranges with `sendfile(2)` on
/// the socket, both in pieces of at most [`SEND_PIECE_BYTES`]. A client
/// that takes nothing of what is outstanding for `connections.max.idle.ms`
/// fails the response with [`std::io::ErrorKind::TimedOut`]
/// ([`SendProgress`]).
async fn write_chunks(
    writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    progress: &SendProgress,
    chunks: Vec<ResponseChunk>,
) -> std::io::Result<()> {
    let mut gathered = BytesMut::new();
    for chunk in chunks {
        match chunk {
            ResponseChunk::Bytes(bytes) if bytes.len() < COALESCE_CHUNK_BYTES_MAX => {
                if gathered.len() + bytes.len() > COALESCE_BUFFER_BYTES {
                    write_watched(writer, &gathered.split(), progress).await?;
                }
                gathered.extend_from_slice(&bytes);
            }
            ResponseChunk::Bytes(bytes) => {
                write_watched(writer, &gathered.split(), progress).await?;
                for piece in bytes.chunks(SEND_PIECE_BYTES) {
                    // glommio completes a send to a socket with room
                    // without yielding; the shard's other tasks (appends,
                    // other shards' requests) get their turn here once the
                    // preempt timer fired.
                    glommio::yield_if_needed().await;
                    write_watched(writer, piece, progress).await?;
                }
            }
            ResponseChunk::File(range) => {
                write_watched(writer, &gathered.split(), progress).await?;
                // A descriptor of our own: the blocking thread may outlive
                // this task if the connection is torn down meanwhile.
                let socket = Arc::new(duplicate(progress.socket())?);
                let end = range.position + range.len;
                let mut position = range.position;
                while position < end {
                    until_writable(socket.as_raw_fd(), progress).await?;
                    // One pool call per piece: the pool thread shares the
                    // shard's CPU, and the kernel lets a running thread
                    // finish its time slice before a woken shard runs.
                    let piece = FileRange {
                        file: Arc::clone(&range.file),
                        position,
                        len: (end - position).min(SEND_PIECE_BYTES as u64),
                    };
                    let socket = Arc::clone(&socket);
                    let sent = glommio::executor()
                        .spawn_blocking(move || send_file_range(&socket, &piece))
                        .await?;
                    if sent == 0 {
                        // Room by poll(2)'s measure, none by sendfile's.
                        glommio::timer::sleep(SEND_ROOM_POLL_FIRST).await;
                    }
                    progress.sent(sent);
                    position += sent;
                }
            }
        }
    }
    write_watched(writer, &gathered, progress).await
}

/// The first pause between two looks at a full send buffer; it doubles
/// while the buffer stays full.
const SEND_ROOM_POLL_FIRST: Duration = Duration::from_micros(100);
/// The longest pause: room noticed this late leaves a fast client's
/// buffer a millisecond less to drain (a 10 Gbit/s client empties a 4 MiB
/// buffer in about 3 ms), and a client that reads nothing costs a look a
/// millisecond until `connections.max.idle.ms` closes it.
const SEND_ROOM_POLL_MAX: Duration = Duration::from_millis(1);

/// Writes all of `bytes` with the stream's own writes, counting each in
/// `progress`, failing with [`std::io::ErrorKind::TimedOut`] once the
/// client stalls. Whether it stalled is looked at whenever a write waits,
/// by what the client acknowledged: a client that takes nothing may still
/// leave a send room for a few bytes now and then.
async fn write_watched(
    writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    mut bytes: &[u8],
    progress: &SendProgress,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let written =
            futures_lite::future::or(writer.write(bytes), async { Err(progress.stalled().await) })
                .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        progress.sent(written as u64);
        bytes = &bytes[written..];
    }
    Ok(())
}

/// Makes the connection's socket non-blocking. glommio's own sends and
/// receives never block either way (`MSG_DONTWAIT`, then io_uring
/// readiness); `sendfile(2)`, which has no such flag, then returns when the
/// send buffer is full instead of holding its blocking-pool thread for as
/// long as the client reads nothing: that pool also persists the
/// controller's changes and runs the engine's file operations, so a few
/// stalled consumers would otherwise stall topic creation and appends.
fn set_nonblocking(socket: RawFd) {
    // SAFETY: `socket` is the open descriptor of the stream this connection
    // owns; F_GETFL and F_SETFL take and return plain flags.
    let result = unsafe {
        let flags = libc::fcntl(socket, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(socket, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if result < 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make a connection non-blocking");
    }
}

/// Waits, on the shard and without blocking it, until the socket's send
/// buffer has room: glommio offers no writability wait for a raw
/// descriptor, so this looks with a zero-timeout `poll(2)` and sleeps in
/// between, up to [`SEND_ROOM_POLL_MAX`].
///
/// # Errors
/// [`std::io::ErrorKind::TimedOut`] once the client stalls; the socket's
/// error if `poll` fails.
async fn until_writable(socket: RawFd, progress: &SendProgress) -> std::io::Result<()> {
    let mut pause = SEND_ROOM_POLL_FIRST;
    loop {
        if progress.is_stalled() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let mut poll = libc::pollfd {
            fd: socket,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid `pollfd` for a descriptor the caller keeps open.
        let ready = unsafe { libc::poll(&raw mut poll, 1, 0) };
        if ready > 0 {
            return Ok(());
        }
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        glommio::timer::sleep(pause).await;
        pause = (pause * 2).min(SEND_ROOM_POLL_MAX);
    }
}

fn duplicate(socket: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: `socket` is open for as long as the connection's writer, which
    // is awaiting this call.
    let duplicate = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 0) };
    if duplicate < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `duplicate` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(duplicate) })
}

/// Sends `range` of its file to the non-blocking `socket` with
/// `sendfile(2)`, on a blocking thread (reading the file may wait for the
/// disk): the kernel moves the pages, user space never sees the bytes.
/// Returns how many bytes went out, fewer than the range once the send
/// buffer is full.
///
/// # Errors
/// [`std::io::ErrorKind::UnexpectedEof`] if the file is shorter than the
/// range (truncated meanwhile: the frame cannot be completed, so the
/// connection closes); any other socket or file error.
fn send_file_range(socket: &OwnedFd, range: &FileRange) -> std::io::Result<u64> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let start = libc::off_t::try_from(range.position).map_err(invalid)?;
    let end = libc::off_t::try_from(range.position + range.len).map_err(invalid)?;
    let mut position = start;
    while position < end {
        let count = usize::try_from(end - position).map_err(invalid)?;
        // SAFETY: both descriptors are open for the call; `position` is a
        // valid `off_t` that sendfile advances (the file's own offset is
        // untouched, so ranges of one file can be sent concurrently).
        let sent = unsafe {
            libc::sendfile(
                socket.as_raw_fd(),
                range.file.as_raw_fd(),
                &raw mut position,
                count,
            )
        };
        if sent > 0 {
            continue;
        }
        if sent == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => break,
            _ => return Err(error),
        }
    }
    u64::try_from(position - start).map_err(invalid)
}

/// A response frame with a v0 header (correlation id only) around an
/// already encoded `body`.
fn frame_body(correlation_id: i32, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + body.len());
    frame.put_i32(i32::try_from(4 + body.len()).unwrap_or(i32::MAX));
    frame.put_i32(correlation_id);
    frame.extend_from_slice(body);
    frame.freeze()
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
