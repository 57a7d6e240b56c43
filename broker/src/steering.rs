//! Source-port steering: a follower's connection is accepted by the
//! leader's shard that owns the partitions the follower's shard fetches.
//!
//! A partition lives on the same shard index on brokers with the same
//! `cores` ([`fjord_engine::shard::shard_for`] is a pure function of the
//! topic, the partition and the shard count), and each follower shard
//! fetches only the partitions it owns ([`crate::replication::fetcher`]).
//! Replication adds no cross-core hop only if follower shard i's connection
//! lands on the leader's shard i. Every shard accepts on the same port
//! (`SO_REUSEPORT`), and by default the kernel picks a listening socket by a
//! hash of the connection's addresses, which no client can aim at.
//!
//! So the broker binds one listening socket per shard, makes them listen in
//! shard order ([`ShardListeners`]: the kernel numbers a reuseport group's
//! sockets in the order they listen), and attaches a classic BPF program
//! (`SO_ATTACH_REUSEPORT_CBPF`) that picks the socket by the TCP source
//! port: [`steered_shard`], `(port / 2) mod cores`. A follower shard binds a
//! source port that picks its own shard index before it connects
//! ([`connect`]). The port is halved first because Linux's `connect(2)`
//! takes ephemeral ports of one parity (that of `ip_local_port_range`'s low
//! end; `bind(2)` gets the other), so `port mod 2` would put every client
//! on the even shards; halved, ordinary clients' ports spread over the
//! shards as evenly as the kernel's hash spread them.
//!
//! A kernel that refuses the program (before Linux 4.5) keeps the hash:
//! the broker starts and replicates as before, with the hop (one warning).
//! A follower that finds no free port of its residue connects from any
//! port (a warning); brokers with different core counts cannot be aimed
//! and are not: the leader routes each partition to its owning shard.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::Mutex;
use std::time::Duration;

use event_listener::Event;
use futures_lite::AsyncWriteExt;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::metadata::records::BrokerId;
use crate::metadata::MetadataImage;

/// Pending connections each shard's listening socket queues, as glommio's
/// `TcpListener::bind` asks.
const LISTEN_BACKLOG: i32 = 1024;

/// `SO_ATTACH_REUSEPORT_CBPF` (Linux 4.5, `asm-generic/socket.h`; the libc
/// crate declares it for Android only).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Ports a follower tries to bind before it connects from any port.
const SOURCE_PORT_ATTEMPTS_MAX: usize = 64;

/// Linux's default `net.ipv4.ip_local_port_range`, used when the file
/// cannot be read.
const DEFAULT_LOCAL_PORTS: RangeInclusive<u16> = 32768..=60999;

/// The shard among `shards` whose listening socket accepts a connection
/// from TCP source port `port`: what the program attached by
/// [`ShardListeners`] computes.
///
/// # Panics
/// If `shards` is 0.
#[must_use]
pub fn steered_shard(port: u16, shards: usize) -> usize {
    assert!(shards > 0, "a broker runs at least one shard");
    usize::from(port / 2) % shards
}

/// The classic BPF program returning [`steered_shard`] of the packet's TCP
/// source port. A reuseport program sees the packet from past the TCP
/// header, so the IP header is reached through `SKF_NET_OFF`: for IPv4 the
/// source port follows the header's IHL words, for IPv6 the fixed 40-byte
/// header. A load past the packet makes the program return 0 (shard 0); an
/// answer beyond the sockets listening makes the kernel fall back to its
/// hash.
fn steering_program(shards: usize) -> Vec<libc::sock_filter> {
    const IPV6_HEADER_BYTES: u32 = 40;
    let jump = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let statement = |code: u32, k: u32| jump(code, 0, 0, k);
    // `SKF_NET_OFF` is negative; the kernel reads `k` as a signed offset.
    let network = libc::SKF_NET_OFF as u32;
    let shards = u32::try_from(shards).expect("a shard count fits 32 bits");
    vec![
        /* 0 */ statement(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, network),
        /* 1 */ statement(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, 0xf0),
        // IPv6 to 5, IPv4 on.
        /* 2 */
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 2, 0, 0x60),
        // IPv4: X = the header's length (its IHL words).
        /* 3 */
        statement(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, network),
        /* 4 */ statement(libc::BPF_JMP | libc::BPF_JA, 1),
        /* 5 */ statement(libc::BPF_LDX | libc::BPF_IMM, IPV6_HEADER_BYTES),
        // A = the TCP source port, just past the IP header.
        /* 6 */
        statement(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, network),
        /* 7 */ statement(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 1),
        /* 8 */ statement(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, shards),
        /* 9 */ statement(libc::BPF_RET | libc::BPF_A, 0),
    ]
}

/// One listening socket per shard on the client listener's address, bound
/// before the shards start and made to listen in shard order as each
/// shard is ready to serve (so a broker accepts connections only once it
/// serves, as when each shard bound its own), then steered by source port.
pub struct ShardListeners {
    address: SocketAddr,
    /// Socket i until shard i takes it.
    sockets: Mutex<Vec<Option<Socket>>>,
    /// How many shards have made their socket listen, in order.
    listening: Mutex<usize>,
    turn: Event,
}

impl ShardListeners {
    /// Binds `shards` sockets to `address` with `SO_REUSEPORT`; with port
    /// 0 the first bind picks the port and the others take it too.
    ///
    /// # Errors
    /// Creating or binding a socket failed (the address is taken without
    /// `SO_REUSEPORT`, or not local).
    pub fn bind(address: SocketAddr, shards: usize) -> std::io::Result<Self> {
        let mut bound = address;
        let mut sockets = Vec::with_capacity(shards);
        for _ in 0..shards {
            let socket = Socket::new(
                Domain::for_address(bound),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            socket.set_reuse_port(true)?;
            socket.bind(&SockAddr::from(bound))?;
            if bound.port() == 0 {
                bound = socket.local_addr()?.as_socket().unwrap_or(bound);
            }
            sockets.push(Some(socket));
        }
        Ok(Self {
            address: bound,
            sockets: Mutex::new(sockets),
            listening: Mutex::new(0),
            turn: Event::new(),
        })
    }

    /// The bound address (its port chosen if the configured one was 0).
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Shard `shard`'s listening socket, once the shards before it listen;
    /// the first one attaches the steering program to the group.
    ///
    /// # Errors
    /// `listen(2)` failed, or the socket was taken already.
    pub async fn listen(&self, shard: usize) -> std::io::Result<TcpListener> {
        loop {
            let turn = self.turn.listen();
            if *lock(&self.listening) >= shard {
                break;
            }
            turn.await;
        }
        let listened = self.listen_now(shard);
        let mut listening = lock(&self.listening);
        *listening = (*listening).max(shard + 1);
        drop(listening);
        self.turn.notify(usize::MAX);
        listened
    }

    fn listen_now(&self, shard: usize) -> std::io::Result<TcpListener> {
        let socket = lock(&self.sockets)
            .get_mut(shard)
            .and_then(Option::take)
            .ok_or_else(|| std::io::Error::other(format!("no listener for shard {shard}")))?;
        socket.listen(LISTEN_BACKLOG)?;
        if shard == 0 {
            let shards = lock(&self.sockets).len();
            if let Err(error) = attach_steering(&socket, shards) {
                tracing::warn!(
                    %error,
                    "connections are not steered by source port (SO_ATTACH_REUSEPORT_CBPF \
                     refused): followers reach partitions through another core"
                );
            }
        }
        Ok(socket.into())
    }
}

/// A lock that a panic elsewhere cannot poison: the guarded values are
/// written whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Attaches [`steering_program`] for `shards` to `socket`'s reuseport
/// group.
fn attach_steering(socket: &Socket, shards: usize) -> std::io::Result<()> {
    let mut program = steering_program(shards);
    let program = libc::sock_fprog {
        len: u16::try_from(program.len()).expect("the program is a few statements"),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `program` points at `len` statements that outlive the call;
    // the kernel copies them.
    let attached = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const program).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>())
                .expect("a sock_fprog is a few bytes"),
        )
    };
    if attached == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where a follower's connection should land: shard `shard` of a leader
/// running `shards`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SteerTo {
    /// The leader's shard to land on.
    pub shard: usize,
    /// The leader's shard count.
    pub shards: usize,
}

impl SteerTo {
    /// Where follower shard `shard` lands on `leader` (its
    /// `BrokerCoresRecord` in `image`): the same index when the leader
    /// runs as many shards or more, else spread over its shards. `None`
    /// when there is nothing to choose (one shard, or the count unknown).
    #[must_use]
    pub fn toward(image: &MetadataImage, leader: BrokerId, shard: usize) -> Option<Self> {
        let shards = usize::try_from(image.brokers.get(&leader)?.cores?).ok()?;
        (shards > 1).then_some(Self {
            shard: shard % shards,
            shards,
        })
    }
}

/// The ports of `range` that land on `target`, from `start` on, wrapping
/// around to the range's beginning.
fn port_candidates(
    range: RangeInclusive<u16>,
    target: SteerTo,
    start: u16,
) -> impl Iterator<Item = u16> {
    let start = start.clamp(*range.start(), *range.end());
    (start..=*range.end())
        .chain(*range.start()..start)
        .filter(move |&port| steered_shard(port, target.shards) == target.shard)
}

/// The system's ephemeral ports (`net.ipv4.ip_local_port_range`, which
/// IPv6 uses too): ports no server is expected to listen on.
fn local_port_range() -> RangeInclusive<u16> {
    let read = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let parsed = read.as_deref().and_then(|text| {
        let mut bounds = text.split_whitespace().map(str::parse::<u16>);
        let low = bounds.next()?.ok()?;
        let high = bounds.next()?.ok()?;
        (low <= high).then_some(low..=high)
    });
    parsed.unwrap_or(DEFAULT_LOCAL_PORTS)
}

/// Binds `socket` to the first of `candidates` that is free, on
/// `unspecified` (the peer family's any-address), trying at most
/// [`SOURCE_PORT_ATTEMPTS_MAX`]. `Ok(None)` when every one tried is in
/// use.
fn bind_source_port(
    socket: &Socket,
    unspecified: std::net::IpAddr,
    candidates: impl Iterator<Item = u16>,
) -> std::io::Result<Option<u16>> {
    for port in candidates.take(SOURCE_PORT_ATTEMPTS_MAX) {
        match socket.bind(&SockAddr::from(SocketAddr::new(unspecified, port))) {
            Ok(()) => return Ok(Some(port)),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// Connects to `address` (`host:port`, resolved on the shard's blocking
/// pool) within `timeout`, from a source port that lands on
/// `steer`'s shard when there is one (from any port when no port of that
/// residue is free, with a warning).
///
/// glommio's own connect creates its socket, so it cannot connect one
/// bound to a chosen port: the connect is started non-blocking here and
/// its end awaited as glommio awaits any send: a send on a TCP socket
/// still connecting fails with `EAGAIN` (Linux waits for the handshake in
/// `tcp_sendmsg`), glommio then polls the socket for `POLLOUT` through
/// io_uring, and the zero-byte send it retries returns once the connection
/// is established, or the connect's error.
///
/// # Errors
/// Resolving, connecting (refused, unreachable) or binding failed, or
/// [`std::io::ErrorKind::TimedOut`] after `timeout`.
pub async fn connect(
    address: &str,
    steer: Option<SteerTo>,
    timeout: Duration,
) -> std::io::Result<glommio::net::TcpStream> {
    let connecting = async {
        let host = address.to_owned();
        let resolved = glommio::executor()
            .spawn_blocking(move || host.to_socket_addrs().map(|mut found| found.next()))
            .await?
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{address} resolves to no address"),
                )
            })?;
        let socket = Socket::new(
            Domain::for_address(resolved),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        if let Some(steer) = steer {
            let unspecified = match resolved {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            // A random start (a fresh hasher's keys), so the shards and
            // restarts do not all try the same ports first.
            let range = local_port_range();
            let span = u64::from(range.end() - range.start()) + 1;
            let offset = RandomState::new().hash_one(address) % span;
            let start = range.start() + u16::try_from(offset).unwrap_or(0);
            if bind_source_port(&socket, unspecified, port_candidates(range, steer, start))?
                .is_none()
            {
                tracing::warn!(
                    %address,
                    shard = steer.shard,
                    "no free source port lands on the leader's shard; connecting from any"
                );
            }
        }
        socket.set_nonblocking(true)?;
        match socket.connect(&SockAddr::from(resolved)) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(error) => return Err(error),
        }
        // glommio's streams are blocking sockets written with MSG_DONTWAIT.
        socket.set_nonblocking(false)?;
        // SAFETY: the descriptor is a TCP socket this function owns; the
        // stream takes it over.
        let mut stream = unsafe { glommio::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
        stream.write(&[]).await?;
        stream.peer_addr()?;
        Ok(stream)
    };
    futures_lite::future::or(connecting, async {
        glommio::timer::sleep(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connecting to {address} took over {timeout:?}"),
        ))
    })
    .await
}

#[cfg(test)]
mod tests;
