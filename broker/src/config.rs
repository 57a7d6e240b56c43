//! Broker configuration under Kafka's `server.properties` names.
//!
//! A Kafka operator's `server.properties` carries over: [`BrokerConfig::load`]
//! reads the file, applies `--set key=value` overrides, and rejects unknown or
//! malformed keys with a clear error instead of ignoring them. Every key has
//! Kafka's default, so `fjord` with no arguments runs a single node. The keys
//! that make a node part of a cluster (roles, quorum, named listeners) are
//! [`cluster`]'s.

mod cluster;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fjord_engine::config::LogConfig;

use crate::error::BrokerError;
use crate::meta_properties::ClusterId;

pub use cluster::{
    AdvertisedListener, ClusterConfig, HostPort, Listener, ProcessRoles, Quorum, CLUSTER_KEYS,
};

/// A validated broker configuration.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `node.id`.
    pub node_id: i32,
    /// The client listener's address (the one of `listeners` that is not
    /// a controller listener): every shard accepts on it.
    pub listener: SocketAddr,
    /// The client listener's host in `advertised.listeners`: what Metadata
    /// tells clients.
    pub advertised_host: String,
    /// The client listener's port in `advertised.listeners`.
    pub advertised_port: u16,
    /// The cluster keys: roles, quorum, every listener, timeouts.
    pub cluster: ClusterConfig,
    /// `log.dirs` (one directory).
    pub data_dir: PathBuf,
    /// `metadata.log.dir`: where the metadata log's directory
    /// (`__cluster_metadata-0`) lives; `log.dirs` when unset, as in Kafka.
    pub metadata_log_dir: PathBuf,
    /// `num.partitions`: partitions of auto-created topics.
    pub num_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `compression.type` broker default for topics.
    pub compression_type: String,
    /// `max.incremental.fetch.session.cache.slots`: fetch sessions (KIP-227)
    /// the broker keeps, shared out between shards.
    pub fetch_session_cache_slots: usize,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries,
    /// whatever the request asks (at least one batch still goes out, as in
    /// Kafka). It bounds the memory a response read from disk takes.
    pub fetch_max_bytes: usize,
    /// `connections.max.idle.ms`: a connection with no request for this
    /// long, or whose client takes nothing of a response for this long, is
    /// closed.
    pub connections_max_idle: std::time::Duration,
    /// `cores`: shards (fjord's own key).
    pub cores: usize,
    /// The cluster's id: `cluster.id` when configured (validated), `None`
    /// otherwise; [`crate::run`] settles it from the data directories'
    /// `meta.properties` (generating one on a fresh node) before anything
    /// reads it, so handlers always see `Some`.
    pub cluster_id: Option<ClusterId>,
    /// Topic defaults from `log.*`, `message.max.bytes`, ...
    pub log_defaults: LogConfig,
    /// `log.cleaner.enable`.
    pub cleaner_enable: bool,
    /// `log.cleaner.dedupe.buffer.size`: offset-map memory of all shards'
    /// cleaners together; each shard gets an equal share.
    pub cleaner_dedupe_buffer_size: usize,
    /// `log.cleaner.backoff.ms`.
    pub cleaner_backoff_ms: u64,
    /// `log.retention.check.interval.ms`: how often each shard deletes
    /// segments past `retention.ms` / `retention.bytes`.
    pub retention_check_interval: Duration,
    /// The group coordinator's keys.
    pub group_coordinator: GroupCoordinatorConfig,
    /// The partition replication keys.
    pub replication: ReplicationConfig,
    /// The keys set by the properties file or `--set`, with their values
    /// (DescribeConfigs reports these as `STATIC_BROKER_CONFIG`).
    pub explicit_settings: BTreeMap<String, String>,
}

/// The group coordinator's broker keys (Kafka's names and defaults).
#[derive(Clone, Debug)]
pub struct GroupCoordinatorConfig {
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets`
    /// when it is created, capped at the live brokers then.
    pub offsets_topic_replication_factor: i16,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets`.
    pub offsets_topic_segment_bytes: u64,
    /// `offsets.retention.minutes`: how long offsets of an empty group live.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval: Duration,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for
    /// more members before its first rebalance.
    pub group_initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub group_min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`.
    pub group_max_session_timeout: Duration,
    /// `group.consumer.heartbeat.interval.ms`: how often KIP-848 members
    /// heartbeat.
    pub consumer_heartbeat_interval: Duration,
    /// `group.consumer.session.timeout.ms`.
    pub consumer_session_timeout: Duration,
    /// `group.consumer.assignors` as short names (`uniform`, `range`).
    pub consumer_assignors: Vec<String>,
}

/// The partition replication keys (Kafka's names and defaults).
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// `replica.fetch.max.bytes`: record bytes a follower's fetch asks per
    /// partition (at least one batch still comes, as in Kafka).
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.wait.max.ms`: how long a leader holds a follower's
    /// fetch for `replica.fetch.min.bytes` to arrive; at most
    /// `replica.lag.time.max.ms`, or idle followers would leave the ISR.
    pub replica_fetch_wait_max: Duration,
    /// `replica.fetch.min.bytes`: bytes a follower's fetch waits for.
    pub replica_fetch_min_bytes: usize,
    /// `replica.fetch.response.max.bytes`: record bytes of a follower's
    /// whole fetch response.
    pub replica_fetch_response_max_bytes: usize,
    /// `replica.fetch.backoff.ms`: a follower's pause after a failed fetch.
    pub replica_fetch_backoff: Duration,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with
    /// the leader's log end for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `unclean.leader.election.enable`: the default of the topic config:
    /// whether a partition with no live ISR member may elect another
    /// replica, losing the records only the ISR had.
    pub unclean_leader_election_enable: bool,
    /// `min.insync.replicas`: the default of the topic config: the fewest
    /// in-sync replicas an acks=all write needs, and below which the high
    /// watermark does not move.
    pub min_insync_replicas: usize,
    /// `controlled.shutdown.enable`: whether a broker that is stopped hands
    /// its leaderships over before it stops
    /// ([`crate::controller::Controller::shut_down_controlled`]).
    pub controlled_shutdown_enable: bool,
    /// `auto.leader.rebalance.enable`: whether the active controller gives
    /// leaderships back to preferred replicas
    /// ([`crate::controller::election::rebalancing_elections`]).
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often it looks.
    pub leader_imbalance_check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's
    /// preferred leaderships that may be led elsewhere before they move
    /// back.
    pub leader_imbalance_per_broker_percentage: u32,
}

impl ReplicationConfig {
    fn parse(get: &impl Fn(&str) -> String) -> Result<Self, BrokerError> {
        let milliseconds = |key: &str, min: u64| -> Result<Duration, BrokerError> {
            Ok(Duration::from_millis(parse_at_least(key, &get(key), min)?))
        };
        let bytes = |key: &str, min: usize| parse_at_least(key, &get(key), min);
        let replica_fetch_wait_max = milliseconds("replica.fetch.wait.max.ms", 0)?;
        let replica_lag_time_max = milliseconds("replica.lag.time.max.ms", 1)?;
        if replica_fetch_wait_max > replica_lag_time_max {
            return Err(invalid(
                "replica.fetch.wait.max.ms",
                &get("replica.fetch.wait.max.ms"),
                "must not exceed replica.lag.time.max.ms, or idle followers would leave the ISR",
            ));
        }
        Ok(Self {
            replica_fetch_max_bytes: bytes("replica.fetch.max.bytes", 0)?,
            replica_fetch_wait_max,
            replica_fetch_min_bytes: bytes("replica.fetch.min.bytes", 0)?,
            replica_fetch_response_max_bytes: bytes("replica.fetch.response.max.bytes", 0)?,
            replica_fetch_backoff: milliseconds("replica.fetch.backoff.ms", 0)?,
            replica_lag_time_max,
            unclean_leader_election_enable: parse_boolean(
                "unclean.leader.election.enable",
                &get("unclean.leader.election.enable"),
            )?,
            controlled_shutdown_enable: parse_boolean(
                "controlled.shutdown.enable",
                &get("controlled.shutdown.enable"),
            )?,
            min_insync_replicas: parse_at_least(
                "min.insync.replicas",
                &get("min.insync.replicas"),
                1,
            )?,
            auto_leader_rebalance_enable: parse_boolean(
                "auto.leader.rebalance.enable",
                &get("auto.leader.rebalance.enable"),
            )?,
            leader_imbalance_check_interval: Duration::from_secs(parse_at_least(
                "leader.imbalance.check.interval.seconds",
                &get("leader.imbalance.check.interval.seconds"),
                1,
            )?),
            leader_imbalance_per_broker_percentage: parse_at_least(
                "leader.imbalance.per.broker.percentage",
                &get("leader.imbalance.per.broker.percentage"),
                0,
            )?,
        })
    }
}

impl GroupCoordinatorConfig {
    fn parse(get: &impl Fn(&str) -> String) -> Result<Self, BrokerError> {
        let offsets_topic_num_partitions: i32 = parse(
            "offsets.topic.num.partitions",
            &get("offsets.topic.num.partitions"),
        )?;
        if !(1..=crate::controller::PARTITIONS_MAX).contains(&offsets_topic_num_partitions) {
            return Err(invalid(
                "offsets.topic.num.partitions",
                &get("offsets.topic.num.partitions"),
                "must be between 1 and 100000",
            ));
        }
        let offsets_topic_replication_factor: i16 = parse_at_least(
            "offsets.topic.replication.factor",
            &get("offsets.topic.replication.factor"),
            1,
        )?;
        let milliseconds = |key: &str| -> Result<Duration, BrokerError> {
            let value: i64 = parse(key, &get(key))?;
            u64::try_from(value)
                .map(Duration::from_millis)
                .map_err(|_| invalid(key, &get(key), "must not be negative"))
        };
        let offsets_retention_minutes: i64 = parse_at_least(
            "offsets.retention.minutes",
            &get("offsets.retention.minutes"),
            1,
        )?;
        let consumer_assignors = get("group.consumer.assignors")
            .split(',')
            .map(|name| {
                crate::groups::consumer::assignor_name(name.trim())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        invalid(
                            "group.consumer.assignors",
                            &get("group.consumer.assignors"),
                            "known assignors: uniform, range",
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let group_min_session_timeout = milliseconds("group.min.session.timeout.ms")?;
        let group_max_session_timeout = milliseconds("group.max.session.timeout.ms")?;
        if group_max_session_timeout < group_min_session_timeout {
            return Err(invalid(
                "group.max.session.timeout.ms",
                &get("group.max.session.timeout.ms"),
                "must not be below group.min.session.timeout.ms",
            ));
        }
        Ok(Self {
            offsets_topic_num_partitions,
            offsets_topic_replication_factor,
            offsets_topic_segment_bytes: parse(
                "offsets.topic.segment.bytes",
                &get("offsets.topic.segment.bytes"),
            )?,
            offsets_retention: Duration::from_secs(
                u64::try_from(offsets_retention_minutes)
                    .unwrap_or(1)
                    .saturating_mul(60),
            ),
            offsets_retention_check_interval: milliseconds("offsets.retention.check.interval.ms")?,
            group_initial_rebalance_delay: milliseconds("group.initial.rebalance.delay.ms")?,
            group_min_session_timeout,
            group_max_session_timeout,
            consumer_heartbeat_interval: milliseconds("group.consumer.heartbeat.interval.ms")?,
            consumer_session_timeout: milliseconds("group.consumer.session.timeout.ms")?,
            consumer_assignors,
        })
    }
}

/// The broker keys and their defaults, in the order `--help` lists them.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("node.id", "1"),
    ("process.roles", ""),
    ("controller.quorum.voters", ""),
    ("controller.quorum.bootstrap.servers", ""),
    ("controller.listener.names", ""),
    ("listeners", "PLAINTEXT://0.0.0.0:9092"),
    ("advertised.listeners", ""),
    (
        "listener.security.protocol.map",
        "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT",
    ),
    ("inter.broker.listener.name", ""),
    ("broker.rack", ""),
    ("broker.heartbeat.interval.ms", "2000"),
    ("broker.session.timeout.ms", "9000"),
    ("initial.broker.registration.timeout.ms", "60000"),
    ("controller.quorum.election.timeout.ms", "1000"),
    ("controller.quorum.fetch.timeout.ms", "2000"),
    ("controller.quorum.request.timeout.ms", "2000"),
    ("log.dirs", "./data"),
    ("metadata.log.dir", ""),
    ("num.partitions", "1"),
    ("auto.create.topics.enable", "true"),
    ("default.replication.factor", "1"),
    ("message.max.bytes", "1048588"),
    ("socket.request.max.bytes", "104857600"),
    ("log.segment.bytes", "1073741824"),
    ("log.roll.ms", "604800000"),
    ("log.retention.ms", ""),
    ("log.retention.minutes", ""),
    ("log.retention.hours", "168"),
    ("log.retention.bytes", "-1"),
    ("log.index.interval.bytes", "4096"),
    ("log.index.size.max.bytes", "10485760"),
    ("log.flush.interval.messages", "9223372036854775807"),
    ("log.flush.interval.ms", ""),
    ("log.message.timestamp.type", "CreateTime"),
    ("log.message.timestamp.before.max.ms", "9223372036854775807"),
    ("log.message.timestamp.after.max.ms", "3600000"),
    ("log.cleanup.policy", "delete"),
    ("log.cleaner.enable", "true"),
    ("log.cleaner.dedupe.buffer.size", "134217728"),
    ("log.cleaner.backoff.ms", "15000"),
    ("log.retention.check.interval.ms", "300000"),
    ("log.cleaner.min.cleanable.ratio", "0.5"),
    ("log.cleaner.delete.retention.ms", "86400000"),
    ("log.cleaner.min.compaction.lag.ms", "0"),
    ("log.cleaner.max.compaction.lag.ms", "9223372036854775807"),
    ("compression.type", "producer"),
    ("max.incremental.fetch.session.cache.slots", "1000"),
    ("connections.max.idle.ms", "600000"),
    ("fetch.max.bytes", "57671680"),
    ("cluster.id", ""),
    ("offsets.topic.num.partitions", "50"),
    ("offsets.topic.replication.factor", "3"),
    ("offsets.topic.segment.bytes", "104857600"),
    ("offsets.retention.minutes", "10080"),
    ("offsets.retention.check.interval.ms", "600000"),
    ("group.initial.rebalance.delay.ms", "3000"),
    ("group.min.session.timeout.ms", "6000"),
    ("group.max.session.timeout.ms", "1800000"),
    ("group.consumer.heartbeat.interval.ms", "5000"),
    ("group.consumer.session.timeout.ms", "45000"),
    ("group.consumer.assignors", "uniform,range"),
    ("replica.fetch.max.bytes", "1048576"),
    ("replica.fetch.wait.max.ms", "500"),
    ("replica.fetch.min.bytes", "1"),
    ("replica.fetch.response.max.bytes", "10485760"),
    ("replica.fetch.backoff.ms", "1000"),
    ("replica.lag.time.max.ms", "30000"),
    ("unclean.leader.election.enable", "false"),
    ("min.insync.replicas", "1"),
    ("controlled.shutdown.enable", "true"),
    ("auto.leader.rebalance.enable", "true"),
    ("leader.imbalance.check.interval.seconds", "300"),
    ("leader.imbalance.per.broker.percentage", "10"),
    ("cores", ""),
];

/// The one data directory `log.dirs` names. Kafka takes a list (JBOD);
/// fjord's shards share one directory, so a list is refused rather than
/// all but its first entry silently ignored.
fn data_dir(value: &str) -> Result<PathBuf, BrokerError> {
    let dirs: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|dir| !dir.is_empty())
        .collect();
    match dirs[..] {
        [dir] => Ok(PathBuf::from(dir)),
        [] => Err(invalid("log.dirs", value, "names no directory")),
        _ => Err(invalid(
            "log.dirs",
            value,
            "fjord keeps a node's data in one directory: name one (several log \
             directories per node are not supported)",
        )),
    }
}

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> BrokerError {
    BrokerError::Config {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A duration in milliseconds that must be at least 1 (a zero interval
/// would make a periodic task spin).
fn positive_milliseconds(key: &str, value: &str) -> Result<Duration, BrokerError> {
    Ok(Duration::from_millis(parse_at_least(key, value, 1)?))
}

/// A value of `key` that must be at least `min`.
fn parse_at_least<T>(key: &str, value: &str, min: T) -> Result<T, BrokerError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let parsed: T = parse(key, value)?;
    if parsed < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(parsed)
}

/// A boolean as Kafka reads one: `true` or `false`, in any case.
fn parse_boolean(key: &str, value: &str) -> Result<bool, BrokerError> {
    match value.trim() {
        text if text.eq_ignore_ascii_case("true") => Ok(true),
        text if text.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(invalid(key, value, "must be true or false")),
    }
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, BrokerError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not a valid value"))
}

/// Reads `key=value` lines (`#` and `!` start comments), as Java properties.
///
/// # Errors
/// [`BrokerError::Config`] for a line without `=` or `:`.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, BrokerError> {
    let mut pairs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (key, value) = line
            .split_once(['=', ':'])
            .ok_or_else(|| invalid(line, "", "expected key=value"))?;
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// The topic config defaults the broker's `log.*` keys set.
fn topic_defaults(get: &impl Fn(&str) -> String) -> Result<LogConfig, BrokerError> {
    let mut log_defaults = LogConfig::default();
    let retention_ms = if !get("log.retention.ms").is_empty() {
        parse::<i64>("log.retention.ms", &get("log.retention.ms"))?
    } else if !get("log.retention.minutes").is_empty() {
        parse::<i64>("log.retention.minutes", &get("log.retention.minutes"))?.saturating_mul(60_000)
    } else {
        parse::<i64>("log.retention.hours", &get("log.retention.hours"))?.saturating_mul(3_600_000)
    };
    let mut pairs = vec![
        (
            "message.max.bytes",
            "max.message.bytes",
            get("message.max.bytes"),
        ),
        (
            "log.segment.bytes",
            "segment.bytes",
            get("log.segment.bytes"),
        ),
        ("log.roll.ms", "segment.ms", get("log.roll.ms")),
        ("log.retention.ms", "retention.ms", retention_ms.to_string()),
        (
            "log.retention.bytes",
            "retention.bytes",
            get("log.retention.bytes"),
        ),
        (
            "log.index.interval.bytes",
            "index.interval.bytes",
            get("log.index.interval.bytes"),
        ),
        (
            "log.index.size.max.bytes",
            "segment.index.bytes",
            get("log.index.size.max.bytes"),
        ),
        (
            "log.flush.interval.messages",
            "flush.messages",
            get("log.flush.interval.messages"),
        ),
        (
            "log.message.timestamp.type",
            "message.timestamp.type",
            get("log.message.timestamp.type"),
        ),
        (
            "log.message.timestamp.before.max.ms",
            "message.timestamp.before.max.ms",
            get("log.message.timestamp.before.max.ms"),
        ),
        (
            "log.message.timestamp.after.max.ms",
            "message.timestamp.after.max.ms",
            get("log.message.timestamp.after.max.ms"),
        ),
        (
            "log.cleanup.policy",
            "cleanup.policy",
            get("log.cleanup.policy"),
        ),
        (
            "log.cleaner.min.cleanable.ratio",
            "min.cleanable.dirty.ratio",
            get("log.cleaner.min.cleanable.ratio"),
        ),
        (
            "log.cleaner.delete.retention.ms",
            "delete.retention.ms",
            get("log.cleaner.delete.retention.ms"),
        ),
        (
            "log.cleaner.min.compaction.lag.ms",
            "min.compaction.lag.ms",
            get("log.cleaner.min.compaction.lag.ms"),
        ),
        (
            "log.cleaner.max.compaction.lag.ms",
            "max.compaction.lag.ms",
            get("log.cleaner.max.compaction.lag.ms"),
        ),
    ];
    if !get("log.flush.interval.ms").is_empty() {
        pairs.push((
            "log.flush.interval.ms",
            "flush.ms",
            get("log.flush.interval.ms"),
        ));
    }
    for (broker_key, topic_key, value) in pairs {
        log_defaults
            .set(topic_key, &value)
            .map_err(|error| invalid(broker_key, &value, error.to_string()))?;
    }
    Ok(log_defaults)
}

/// The client listener's bound address and advertised host and port.
/// Combined and broker-only nodes of a static quorum run today: a
/// controller-only node, and a quorum given only by bootstrap servers, are
/// refused here, after their keys were checked.
fn client_listener(
    cluster: &ClusterConfig,
    get: &impl Fn(&str) -> String,
) -> Result<(SocketAddr, String, u16), BrokerError> {
    let (Some(broker_listener), ProcessRoles::Combined | ProcessRoles::Broker) =
        (&cluster.broker_listener, cluster.process_roles)
    else {
        return Err(invalid(
            "process.roles",
            &get("process.roles"),
            format!(
                "process.roles={} is valid but not supported yet: a controller-only node \
                 serves no clients, and every fjord node is a broker; run combined nodes \
                 (process.roles=broker,controller) as the voters",
                cluster.process_roles
            ),
        ));
    };
    if let Quorum::Configured { voters, .. } = &cluster.quorum {
        if voters.is_empty() {
            return Err(invalid(
                "controller.quorum.bootstrap.servers",
                &get("controller.quorum.bootstrap.servers"),
                "a dynamic controller quorum (KIP-853: bootstrap servers without \
                 controller.quorum.voters) is not supported yet; list every voter in \
                 controller.quorum.voters",
            ));
        }
    }
    let listener = broker_listener.address;
    let advertised = cluster
        .advertised_listeners
        .iter()
        .find(|entry| entry.name == broker_listener.name)
        .ok_or_else(|| {
            invalid(
                "advertised.listeners",
                &get("advertised.listeners"),
                format!("no entry for the client listener {}", broker_listener.name),
            )
        })?;
    Ok((
        listener,
        advertised.endpoint.host.clone(),
        advertised.endpoint.port,
    ))
}

/// `cluster.id` when set: a Kafka UUID.
fn configured_cluster_id(value: &str) -> Result<Option<ClusterId>, BrokerError> {
    Ok(match value.trim() {
        "" => None,
        id => Some(
            id.parse()
                .map_err(|error: crate::meta_properties::InvalidUuid| {
                    invalid("cluster.id", id, error.to_string())
                })?,
        ),
    })
}

impl BrokerConfig {
    /// Builds a configuration from Kafka's defaults, then `file_pairs` (from
    /// `server.properties`), then `overrides` (`--set`), later ones winning.
    ///
    /// # Errors
    /// [`BrokerError::Config`] for an unknown key or a malformed value.
    pub fn load(
        file_pairs: &[(String, String)],
        overrides: &[(String, String)],
    ) -> Result<Self, BrokerError> {
        let mut values: BTreeMap<&str, String> = DEFAULTS
            .iter()
            .map(|(key, value)| (*key, (*value).to_owned()))
            .collect();
        let mut explicit_settings = BTreeMap::new();
        for (key, value) in file_pairs.iter().chain(overrides) {
            let Some((known, _)) = DEFAULTS.iter().find(|(name, _)| name == key) else {
                return Err(invalid(key, value, "unknown configuration key"));
            };
            values.insert(known, value.clone());
            explicit_settings.insert((*known).to_owned(), value.clone());
        }
        let get = |key: &str| values.get(key).cloned().unwrap_or_default();
        let is_set = |key: &str| explicit_settings.contains_key(key);
        let node_id: i32 = parse("node.id", &get("node.id"))?;
        let cluster = ClusterConfig::parse(&get, &is_set, node_id)?;
        let (listener, advertised_host, advertised_port) = client_listener(&cluster, &get)?;
        let cluster_id = configured_cluster_id(&get("cluster.id"))?;
        let log_defaults = topic_defaults(&get)?;
        let cores = match get("cores").as_str() {
            "" => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            value => parse("cores", value)?,
        };
        let compression_type = get("compression.type");
        if !["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]
            .contains(&compression_type.as_str())
        {
            return Err(invalid(
                "compression.type",
                &compression_type,
                "unknown codec",
            ));
        }
        let fetch_max_bytes: usize =
            parse_at_least("fetch.max.bytes", &get("fetch.max.bytes"), 1024)?;
        let num_partitions: i32 = parse_at_least("num.partitions", &get("num.partitions"), 1)?;
        let data_dir = data_dir(&get("log.dirs"))?;
        let metadata_log_dir = match get("metadata.log.dir").trim() {
            "" => data_dir.clone(),
            dir => PathBuf::from(dir),
        };
        Ok(Self {
            group_coordinator: GroupCoordinatorConfig::parse(&get)?,
            replication: ReplicationConfig::parse(&get)?,
            node_id,
            listener,
            advertised_host,
            advertised_port,
            cluster,
            data_dir,
            metadata_log_dir,
            num_partitions,
            auto_create_topics: parse(
                "auto.create.topics.enable",
                &get("auto.create.topics.enable"),
            )?,
            default_replication_factor: parse(
                "default.replication.factor",
                &get("default.replication.factor"),
            )?,
            socket_request_max_bytes: parse(
                "socket.request.max.bytes",
                &get("socket.request.max.bytes"),
            )?,
            compression_type,
            fetch_session_cache_slots: parse(
                "max.incremental.fetch.session.cache.slots",
                &get("max.incremental.fetch.session.cache.slots"),
            )?,
            fetch_max_bytes,
            connections_max_idle: std::time::Duration::from_millis(parse(
                "connections.max.idle.ms",
                &get("connections.max.idle.ms"),
            )?),
            cores,
            cluster_id,
            log_defaults,
            cleaner_enable: parse("log.cleaner.enable", &get("log.cleaner.enable"))?,
            cleaner_dedupe_buffer_size: parse(
                "log.cleaner.dedupe.buffer.size",
                &get("log.cleaner.dedupe.buffer.size"),
            )?,
            cleaner_backoff_ms: parse("log.cleaner.backoff.ms", &get("log.cleaner.backoff.ms"))?,
            retention_check_interval: positive_milliseconds(
                "log.retention.check.interval.ms",
                &get("log.retention.check.interval.ms"),
            )?,
            explicit_settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_give_a_single_node_on_9092() {
        let config = BrokerConfig::load(&[], &[]).unwrap();
        assert_eq!(config.node_id, 1);
        assert_eq!(config.listener.port(), 9092);
        assert_eq!(config.advertised_host, "localhost");
        assert_eq!(config.log_defaults.retention_ms, 168 * 3_600_000);
    }

    #[test]
    fn overrides_win_and_unknown_or_malformed_keys_fail() {
        let file = parse_properties("# comment\nnode.id=3\nlog.retention.ms = 1000\n").unwrap();
        let config = BrokerConfig::load(&file, &pairs(&[("node.id", "4")])).unwrap();
        assert_eq!(config.node_id, 4);
        assert_eq!(config.log_defaults.retention_ms, 1000);
        assert_eq!(config.explicit_settings["node.id"], "4");
        assert!(!config.explicit_settings.contains_key("num.partitions"));
        assert!(BrokerConfig::load(&pairs(&[("no.such.key", "1")]), &[]).is_err());
        assert!(BrokerConfig::load(&pairs(&[("num.partitions", "many")]), &[]).is_err());
        assert!(BrokerConfig::load(&pairs(&[("listeners", "SSL://x:1")]), &[]).is_err());
        assert!(BrokerConfig::load(&pairs(&[("log.segment.bytes", "10")]), &[]).is_err());
    }

    #[test]
    fn log_dirs_names_exactly_one_directory() {
        let load = |value: &str| BrokerConfig::load(&pairs(&[("log.dirs", value)]), &[]);
        assert_eq!(
            load(" /var/fjord ").unwrap().data_dir,
            PathBuf::from("/var/fjord")
        );
        assert_eq!(
            load("/var/fjord,").unwrap().data_dir,
            PathBuf::from("/var/fjord")
        );
        let several = load("/disk1/fjord,/disk2/fjord").unwrap_err().to_string();
        assert!(several.contains("one directory"), "{several}");
        let none = load(" , ").unwrap_err().to_string();
        assert!(none.contains("names no directory"), "{none}");
    }

    #[test]
    fn cleaner_keys_carry_kafka_defaults_and_set_topic_defaults() {
        let config = BrokerConfig::load(&[], &[]).unwrap();
        assert!(config.cleaner_enable);
        assert_eq!(config.cleaner_dedupe_buffer_size, 134_217_728);
        assert_eq!(config.cleaner_backoff_ms, 15_000);
        assert_eq!(config.log_defaults.get("cleanup.policy").unwrap(), "delete");
        let config = BrokerConfig::load(
            &[],
            &pairs(&[
                ("log.cleanup.policy", "compact"),
                ("log.cleaner.min.cleanable.ratio", "0.1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.log_defaults.get("cleanup.policy").unwrap(),
            "compact"
        );
        assert!((config.log_defaults.min_cleanable_dirty_ratio - 0.1).abs() < f64::EPSILON);
        assert!(BrokerConfig::load(&[], &pairs(&[("log.cleanup.policy", "shred")])).is_err());
    }

    #[test]
    fn log_index_size_max_bytes_sets_the_topic_default_segment_index_bytes() {
        let config = BrokerConfig::load(&[], &[]).unwrap();
        assert_eq!(config.log_defaults.segment_index_bytes, 10_485_760);
        let config =
            BrokerConfig::load(&[], &pairs(&[("log.index.size.max.bytes", "4096")])).unwrap();
        assert_eq!(config.log_defaults.segment_index_bytes, 4096);
        assert!(BrokerConfig::load(&[], &pairs(&[("log.index.size.max.bytes", "3")])).is_err());
    }

    #[test]
    fn replication_keys_carry_kafka_defaults_and_refuse_bad_values() {
        let replication = BrokerConfig::load(&[], &[]).unwrap().replication;
        assert_eq!(replication.replica_fetch_max_bytes, 1_048_576);
        assert_eq!(
            replication.replica_fetch_wait_max,
            Duration::from_millis(500)
        );
        assert_eq!(replication.replica_fetch_min_bytes, 1);
        assert_eq!(replication.replica_fetch_response_max_bytes, 10_485_760);
        assert_eq!(replication.replica_fetch_backoff, Duration::from_secs(1));
        assert_eq!(replication.replica_lag_time_max, Duration::from_secs(30));
        assert!(!replication.unclean_leader_election_enable);
        assert!(replication.controlled_shutdown_enable);
        assert!(replication.auto_leader_rebalance_enable);
        assert_eq!(
            replication.leader_imbalance_check_interval,
            Duration::from_secs(300)
        );
        assert_eq!(replication.leader_imbalance_per_broker_percentage, 10);
        let set = |pairs_: &[(&str, &str)]| BrokerConfig::load(&[], &pairs(pairs_));
        let replication = set(&[
            ("unclean.leader.election.enable", "TRUE"),
            ("controlled.shutdown.enable", "false"),
            ("replica.lag.time.max.ms", "10000"),
        ])
        .unwrap()
        .replication;
        assert!(replication.unclean_leader_election_enable);
        assert!(!replication.controlled_shutdown_enable);
        assert_eq!(replication.replica_lag_time_max, Duration::from_secs(10));
        assert!(set(&[("unclean.leader.election.enable", "yes")]).is_err());
        assert!(set(&[("leader.imbalance.check.interval.seconds", "0")]).is_err());
        assert!(set(&[("leader.imbalance.per.broker.percentage", "-1")]).is_err());
        assert!(set(&[("replica.fetch.max.bytes", "-1")]).is_err());
        assert!(set(&[("replica.lag.time.max.ms", "0")]).is_err());
        let waits_longer = set(&[("replica.fetch.wait.max.ms", "40000")]).unwrap_err();
        assert!(waits_longer.to_string().contains("replica.lag.time.max.ms"));
    }

    #[test]
    fn fetch_max_bytes_defaults_to_kafkas_and_must_be_at_least_1024() {
        assert_eq!(
            BrokerConfig::load(&[], &[]).unwrap().fetch_max_bytes,
            57_671_680
        );
        let config = BrokerConfig::load(&[], &pairs(&[("fetch.max.bytes", "1024")])).unwrap();
        assert_eq!(config.fetch_max_bytes, 1024);
        assert!(BrokerConfig::load(&[], &pairs(&[("fetch.max.bytes", "1023")])).is_err());
        assert!(BrokerConfig::load(&[], &pairs(&[("fetch.max.bytes", "-1")])).is_err());
    }
}
