use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Instant;

use super::*;

/// How long a test waits for a connection to be accepted.
const ACCEPT_DEADLINE: Duration = Duration::from_secs(5);

/// Every shard's listener of a group on `address` (port 0: one chosen),
/// listening in shard order and polled without blocking.
fn steered_listeners(address: &str, shards: usize) -> (SocketAddr, Vec<TcpListener>) {
    let group = ShardListeners::bind(address.parse().unwrap(), shards).unwrap();
    let listeners: Vec<TcpListener> = (0..shards)
        .map(|shard| futures_lite::future::block_on(group.listen(shard)).unwrap())
        .collect();
    for listener in &listeners {
        listener.set_nonblocking(true).unwrap();
    }
    (group.address(), listeners)
}

/// The shard whose listener accepts the connection from `local`, and the
/// accepted connection's peer port.
fn accepting_shard(listeners: &[TcpListener], local: SocketAddr) -> usize {
    let deadline = Instant::now() + ACCEPT_DEADLINE;
    loop {
        for (shard, listener) in listeners.iter().enumerate() {
            match listener.accept() {
                Ok((_, peer)) => {
                    assert_eq!(peer.port(), local.port(), "another connection was accepted");
                    return shard;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("accept failed: {error}"),
            }
        }
        assert!(Instant::now() < deadline, "{local} was not accepted");
        std::thread::yield_now();
    }
}

/// A client connected to `server` from a port that lands on `shard` of
/// `shards`.
fn connect_steered(server: SocketAddr, shard: usize, shards: usize) -> TcpStream {
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None).unwrap();
    let range = local_port_range();
    let target = SteerTo { shard, shards };
    let unspecified = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let start = *range.start() + 7 * u16::try_from(shard).unwrap();
    let port = bind_source_port(&socket, unspecified, port_candidates(range, target, start))
        .unwrap()
        .expect("a free port of the residue");
    assert_eq!(steered_shard(port, shards), shard);
    socket.connect(&SockAddr::from(server)).unwrap();
    socket.into()
}

fn each_source_port_lands_on_its_shard(address: &str, shards: usize) {
    let (server, listeners) = steered_listeners(address, shards);
    for round in 0..3 {
        for shard in (0..shards).rev() {
            let client = connect_steered(server, shard, shards);
            let local = client.local_addr().unwrap();
            assert_eq!(
                accepting_shard(&listeners, local),
                shard,
                "round {round}: a connection from port {} of {shards} shards",
                local.port()
            );
        }
    }
}

#[test]
fn a_connection_is_accepted_by_the_shard_its_source_port_steers_to() {
    each_source_port_lands_on_its_shard("127.0.0.1:0", 2);
    each_source_port_lands_on_its_shard("127.0.0.1:0", 3);
}

#[test]
fn steering_reads_the_source_port_of_ipv6_connections_too() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    each_source_port_lands_on_its_shard("[::1]:0", 3);
}

/// Linux's connect(2) picks ephemeral ports of one parity only: a program
/// steering by `port mod 2` would have put every one on shard 0.
#[test]
fn clients_connecting_from_any_port_spread_over_the_shards() {
    let (server, listeners) = steered_listeners("127.0.0.1:0", 2);
    let mut accepted = [0usize; 2];
    for _ in 0..32 {
        let client = TcpStream::connect(server).unwrap();
        let local = client.local_addr().unwrap();
        let shard = accepting_shard(&listeners, local);
        assert_eq!(shard, steered_shard(local.port(), 2));
        accepted[shard] += 1;
    }
    assert!(
        accepted.iter().all(|&count| count > 0),
        "clients accepted per shard: {accepted:?}"
    );
}

#[test]
fn port_zero_is_chosen_once_and_shared_by_every_shard() {
    let group = ShardListeners::bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    assert_ne!(group.address().port(), 0);
    for shard in 0..3 {
        let listener = futures_lite::future::block_on(group.listen(shard)).unwrap();
        assert_eq!(listener.local_addr().unwrap(), group.address());
    }
}

#[test]
fn a_shard_listens_only_after_the_shards_before_it() {
    let group = ShardListeners::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let mut second = Box::pin(group.listen(1));
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    assert!(second.as_mut().poll(&mut context).is_pending());
    futures_lite::future::block_on(group.listen(0)).unwrap();
    assert!(futures_lite::future::block_on(second).is_ok());
}

#[test]
fn port_candidates_land_on_the_target_within_the_range_from_the_start() {
    let target = SteerTo {
        shard: 2,
        shards: 3,
    };
    let candidates: Vec<u16> = port_candidates(100..=120, target, 110).collect();
    assert_eq!(candidates, vec![112, 113, 118, 119, 100, 101, 106, 107]);
    assert!(candidates
        .iter()
        .all(|&port| steered_shard(port, 3) == 2 && (100..=120).contains(&port)));
    // A start outside the range begins at its nearest end.
    assert_eq!(port_candidates(100..=120, target, 7).next(), Some(100));
}

#[test]
fn a_port_in_use_is_skipped_for_the_next_candidate() {
    let target = SteerTo {
        shard: 1,
        shards: 2,
    };
    let range = local_port_range();
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    // Two free candidates in a row, the first then taken.
    let (taken, next, _holder) = port_candidates(range.clone(), target, *range.start())
        .find_map(|port| {
            let holder = std::net::TcpListener::bind((unspecified, port)).ok()?;
            let next = port_candidates(range.clone(), target, port).nth(1)?;
            std::net::TcpListener::bind((unspecified, next)).ok()?;
            Some((port, next, holder))
        })
        .unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let bound = bind_source_port(&socket, unspecified, port_candidates(range, target, taken));
    assert_eq!(bound.unwrap(), Some(next));
}

#[test]
fn with_every_candidate_in_use_no_port_is_bound() {
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        bind_source_port(&socket, unspecified, std::iter::repeat_n(port, 3)).unwrap(),
        None
    );
}

#[test]
fn a_follower_connects_from_a_port_that_lands_on_its_shard() {
    let (server, listeners) = steered_listeners("127.0.0.1:0", 2);
    glommio::LocalExecutor::default().run(async move {
        for shard in [1, 0, 1] {
            let steer = SteerTo { shard, shards: 2 };
            let stream = connect(&server.to_string(), Some(steer), ACCEPT_DEADLINE)
                .await
                .unwrap();
            let local = stream.local_addr().unwrap();
            assert_eq!(accepting_shard(&listeners, local), shard);
        }
        let unsteered = connect(&server.to_string(), None, ACCEPT_DEADLINE)
            .await
            .unwrap();
        let local = unsteered.local_addr().unwrap();
        assert_eq!(
            accepting_shard(&listeners, local),
            steered_shard(local.port(), 2)
        );
    });
}

#[test]
fn a_refused_connection_fails_at_once() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    glommio::LocalExecutor::default().run(async move {
        let steer = SteerTo {
            shard: 1,
            shards: 2,
        };
        let error = connect(&address, Some(steer), ACCEPT_DEADLINE)
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn a_follower_shard_aims_at_the_same_index_of_a_leader_with_enough_shards() {
    use crate::metadata::image::tests::register;
    use crate::metadata::records::{BrokerCoresRecord, BrokerEpoch, MetadataRecord};
    let cores = |id: i32, cores: u32| {
        MetadataRecord::BrokerCores(BrokerCoresRecord {
            id: BrokerId(id),
            epoch: BrokerEpoch(10),
            cores,
        })
    };
    let image = MetadataImage::default()
        .apply(&[
            register(BrokerId(1), 10),
            cores(1, 4),
            register(BrokerId(2), 10),
            cores(2, 1),
            register(BrokerId(3), 10),
        ])
        .unwrap();
    let four = |shard| SteerTo { shard, shards: 4 };
    assert_eq!(SteerTo::toward(&image, BrokerId(1), 2), Some(four(2)));
    // A follower with more shards than its leader spreads over them.
    assert_eq!(SteerTo::toward(&image, BrokerId(1), 6), Some(four(2)));
    // One shard, or a count not yet known, leaves nothing to aim at.
    assert_eq!(SteerTo::toward(&image, BrokerId(2), 0), None);
    assert_eq!(SteerTo::toward(&image, BrokerId(3), 0), None);
    assert_eq!(SteerTo::toward(&image, BrokerId(4), 0), None);
}
