//! The test kit for integration tests of this and other crates (feature
//! `testkit`): one launcher for a test broker and one raw Kafka connection
//! to it.
//!
//! A [`Broker`] listens on a port no other broker of the test binary gets,
//! on `127.0.0.1`, with its own data directory and one shard; it is
//! stopped when dropped. It runs as the `fjord` binary in a child process
//! ([`Launch::Binary`]) wherever the test can name the binary (the broker
//! crate's own tests, through `CARGO_BIN_EXE_fjord`), so a crash, a kill
//! or an exit code is a process's as in production; crates whose tests
//! cannot name it run [`crate::run`] on a thread instead
//! ([`Launch::InProcess`]). Every wait is bounded: a broker that does not
//! listen, stop or exit in time fails the test instead of hanging it, and
//! every socket of a [`Connection`] times out after [`IO_TIMEOUT`].

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// How long any socket read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a broker may take to start listening, to stop, or to exit
/// after a start that must fail.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// First port handed to test brokers: below Linux's ephemeral range
/// (32768-60999 by default), so no client connection of a concurrent test
/// can be using it.
const BROKER_PORTS_START: u32 = 20_000;
/// How many ports test brokers are spread over.
const BROKER_PORTS: u32 = 10_000;
/// Ports this test binary has handed out.
static BROKER_PORTS_TAKEN: AtomicU32 = AtomicU32::new(0);

/// A port for a test broker that no other broker of this test binary gets
/// and nothing listens on now. Tests of one binary run in parallel: two of
/// them picking ports with `bind(0)` and dropping the probe can draw the
/// same one, and two brokers would then share it.
///
/// # Panics
/// After [`BROKER_PORTS`] ports were handed out.
#[must_use]
pub fn broker_port() -> u16 {
    let base = std::process::id() * 97;
    loop {
        let taken = BROKER_PORTS_TAKEN.fetch_add(1, Ordering::Relaxed);
        assert!(taken < BROKER_PORTS, "out of test broker ports");
        let port = u16::try_from(BROKER_PORTS_START + (base + taken) % BROKER_PORTS)
            .expect("ports stay below 30000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Lifts `RLIMIT_MEMLOCK` where the process may (glommio registers its
/// I/O memory with `io_uring`, which locks it); without the privilege the
/// limit stays and glommio falls back to unregistered buffers.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

/// How a test [`Broker`] runs.
#[derive(Clone, Debug)]
pub enum Launch {
    /// The `fjord` binary at this path, in a child process.
    Binary(PathBuf),
    /// [`crate::run`] on a thread of the test process, for tests that
    /// cannot name the binary (another crate's).
    InProcess,
}

/// A running test broker; see the module documentation. Killed (a child
/// process) or stopped cleanly (in process) and reaped on drop.
pub struct Broker {
    launch: Launch,
    running: Running,
    /// The port it listens on.
    pub port: u16,
    settings: Vec<String>,
    /// Holds the data directory and the broker's stderr.
    data: tempfile::TempDir,
}

enum Running {
    Process(Child),
    Thread {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<Result<(), BrokerError>>>,
    },
}

impl Broker {
    /// Starts a broker as `launch` says, with `extra` `KEY=VALUE` settings
    /// after the defaults (listener, data directory, one shard), and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// If it does not listen within [`START_DEADLINE`] or exits first,
    /// quoting what it said.
    #[must_use]
    pub fn start(launch: Launch, extra: &[&str]) -> Self {
        Self::start_on(launch, broker_port(), extra)
    }

    /// [`Broker::start`] on a `port` the caller took from [`broker_port`],
    /// for `extra` settings that name it (several named `listeners`).
    ///
    /// # Panics
    /// As [`Broker::start`].
    #[must_use]
    pub fn start_on(launch: Launch, port: u16, extra: &[&str]) -> Self {
        raise_memlock_limit();
        let data = tempfile::tempdir().expect("tempdir");
        let settings: Vec<String> = [
            format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
            format!("advertised.listeners=PLAINTEXT://localhost:{port}"),
            format!("log.dirs={}", data.path().join("data").display()),
            "cores=1".to_owned(),
        ]
        .into_iter()
        .chain(extra.iter().map(|setting| (*setting).to_owned()))
        .collect();
        let running = launch_and_wait(&launch, &settings, port, &data.path().join("stderr.log"));
        Self {
            launch,
            running,
            port,
            settings,
            data,
        }
    }

    /// Stops the broker cleanly (SIGTERM to a process, as an operator
    /// would; the stop flag in process) and starts it again on the same
    /// port and data directory.
    ///
    /// # Panics
    /// If it does not stop within [`START_DEADLINE`], stops with an error,
    /// or does not start again.
    pub fn restart(&mut self) {
        match &mut self.running {
            Running::Process(process) => {
                let pid = i32::try_from(process.id()).expect("pid fits");
                // SAFETY: signals our own child, which has not been reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let deadline = Instant::now() + START_DEADLINE;
                while process.try_wait().expect("wait for fjord").is_none() {
                    assert!(
                        Instant::now() < deadline,
                        "fjord did not stop within {START_DEADLINE:?}"
                    );
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
            Running::Thread { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                let thread = thread.take().expect("a running broker has its thread");
                let deadline = Instant::now() + START_DEADLINE;
                while !thread.is_finished() {
                    assert!(
                        Instant::now() < deadline,
                        "fjord did not stop within {START_DEADLINE:?}"
                    );
                    std::thread::sleep(POLL_INTERVAL);
                }
                thread
                    .join()
                    .expect("broker thread")
                    .expect("fjord stops cleanly");
            }
        }
        self.running = launch_and_wait(
            &self.launch,
            &self.settings,
            self.port,
            &self.data.path().join("stderr.log"),
        );
    }

    /// The broker's `log.dirs`.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// `host:port` for a Kafka client's bootstrap.
    #[must_use]
    pub fn bootstrap_server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A new connection with [`IO_TIMEOUT`] on its socket.
    ///
    /// # Panics
    /// If the broker does not accept it.
    #[must_use]
    pub fn connect(&self) -> Connection {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to fjord");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Connection {
            stream,
            correlation_id: 0,
        }
    }

    /// # Panics
    /// If the broker has exited (crashed).
    pub fn assert_alive(&mut self) {
        match &mut self.running {
            Running::Process(process) => {
                if let Ok(Some(status)) = process.try_wait() {
                    panic!("fjord died: {status}");
                }
            }
            Running::Thread { thread, .. } => {
                if thread.as_ref().is_none_or(JoinHandle::is_finished) {
                    let outcome = thread.take().map(JoinHandle::join);
                    panic!("fjord died: {outcome:?}");
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match &mut self.running {
            Running::Process(process) => {
                let _ = process.kill();
                let _ = process.wait();
            }
            Running::Thread { stop, thread } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(thread) = thread.take() {
                    let stopped = thread.join();
                    if !std::thread::panicking() {
                        stopped
                            .expect("broker thread")
                            .expect("fjord stops cleanly");
                    }
                }
            }
        }
    }
}

/// Starts a broker with `settings` and waits until it listens on `port`.
/// A process's standard error goes to `stderr` (appended across restarts),
/// which a failed start quotes.
fn launch_and_wait(launch: &Launch, settings: &[String], port: u16, stderr: &Path) -> Running {
    let mut running = match launch {
        Launch::Binary(binary) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(stderr)
                .expect("broker stderr file");
            let process = fjord_command(binary, settings)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn fjord");
            Running::Process(process)
        }
        Launch::InProcess => {
            let overrides: Vec<(String, String)> = settings
                .iter()
                .map(|setting| {
                    let (key, value) = setting.split_once('=').expect("settings are KEY=VALUE");
                    (key.to_owned(), value.to_owned())
                })
                .collect();
            let config = BrokerConfig::load(&[], &overrides).expect("broker config");
            let stop = Arc::new(AtomicBool::new(false));
            let thread = std::thread::spawn({
                let stop = stop.clone();
                move || crate::run(config, stop)
            });
            Running::Thread {
                stop,
                thread: Some(thread),
            }
        }
    };
    let said = || std::fs::read_to_string(stderr).unwrap_or_default();
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        match &mut running {
            Running::Process(process) => {
                if let Ok(Some(status)) = process.try_wait() {
                    panic!(
                        "fjord exited with {status} before listening; it said:\n{}",
                        said()
                    );
                }
            }
            Running::Thread { thread, .. } => {
                if thread.as_ref().is_some_and(JoinHandle::is_finished) {
                    let outcome = thread.take().map(JoinHandle::join);
                    panic!("fjord ended before listening: {outcome:?}");
                }
            }
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "fjord did not listen on {port} within {START_DEADLINE:?}; it said:\n{}",
            said()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn fjord_command(binary: &Path, settings: &[String]) -> Command {
    let mut command = Command::new(binary);
    for setting in settings {
        command.arg("--set").arg(setting);
    }
    command
}

/// Runs the `fjord` at `binary` with exactly `settings` (no defaults), for
/// a start that must fail, until it exits: whether it exited successfully,
/// and its standard output and error.
///
/// # Panics
/// If it is still running after [`START_DEADLINE`] (it is killed first).
#[must_use]
pub fn run_until_exit(binary: &Path, settings: &[String]) -> (bool, String) {
    raise_memlock_limit();
    let mut child = fjord_command(binary, settings)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fjord");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > START_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fjord with {settings:?} kept running");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let output = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// A request frame without its size prefix: header then body, in the header
/// version `api_key` uses at `version`.
///
/// # Panics
/// If kafka-protocol cannot encode `request` at `version`.
#[must_use]
pub fn request_body(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &RequestKind,
) -> Bytes {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("bad-input")))
        .encode(&mut frame, api_key.request_header_version(version))
        .expect("header encodes");
    request
        .encode(&mut frame, version)
        .unwrap_or_else(|error| panic!("{api_key:?} v{version} encodes: {error}"));
    frame.freeze()
}

/// `body` with its 4-byte size prefix.
///
/// # Panics
/// If `body` is longer than a Kafka frame can say.
#[must_use]
pub fn sized(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.put_i32(i32::try_from(body.len()).expect("frame fits i32"));
    frame.extend_from_slice(body);
    frame
}

/// One raw Kafka connection to a test broker.
pub struct Connection {
    /// The socket, with [`IO_TIMEOUT`] on reads and writes.
    pub stream: TcpStream,
    correlation_id: i32,
}

/// How a connection ended after bad input.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The broker closed it (EOF or reset) after sending these many bytes.
    Closed(usize),
    /// Nothing happened for [`IO_TIMEOUT`].
    Hung,
}

impl Connection {
    /// Writes raw bytes; a reset while writing is fine (the broker may have
    /// closed already).
    ///
    /// # Panics
    /// On any other write error.
    pub fn send_raw(&mut self, data: &[u8]) {
        if let Err(error) = self.stream.write_all(data) {
            assert!(
                matches!(
                    error.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ),
                "write failed: {error}"
            );
        }
    }

    /// Reads until the broker closes, counting what it sent.
    ///
    /// # Panics
    /// On a read error other than a reset or a timeout.
    pub fn wait_for_close(&mut self) -> Ending {
        let mut received = 0;
        let mut buffer = [0u8; 4096];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => return Ending::Closed(received),
                Ok(read) => received += read,
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ending::Closed(received)
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Ending::Hung
                }
                Err(error) => panic!("read failed: {error}"),
            }
        }
    }

    /// Stops sending; the broker sees end of stream.
    pub fn finish_sending(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Sends `request` and reads its response, checking the correlation id
    /// and that the response has no trailing bytes.
    ///
    /// # Panics
    /// If the exchange fails or the response is not the one expected.
    pub fn call(&mut self, api_key: ApiKey, version: i16, request: &RequestKind) -> ResponseKind {
        self.correlation_id += 1;
        let body = request_body(api_key, version, self.correlation_id, request);
        self.stream.write_all(&sized(&body)).expect("send request");
        let (header, mut body) = self.read_response(api_key, version);
        assert_eq!(header.correlation_id, self.correlation_id);
        let response = ResponseKind::decode(api_key, &mut body, version)
            .unwrap_or_else(|error| panic!("{api_key:?} v{version} response decodes: {error}"));
        assert!(
            body.is_empty(),
            "{api_key:?} v{version}: trailing bytes after the response"
        );
        response
    }

    /// Reads one response frame and its header.
    ///
    /// # Panics
    /// If no whole frame arrives or its header does not decode.
    pub fn read_response(&mut self, api_key: ApiKey, version: i16) -> (ResponseHeader, Bytes) {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: no response: {error}"));
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream
            .read_exact(&mut body)
            .unwrap_or_else(|error| panic!("{api_key:?} v{version}: short response: {error}"));
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
            .expect("response header decodes");
        (header, body)
    }
}
