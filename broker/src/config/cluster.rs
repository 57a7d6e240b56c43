//! The keys that make a node part of a cluster, under Kafka's names, with
//! Kafka's start-time checks and, where Kafka has one, its wording.
//!
//! - `process.roles`: `broker`, `controller`, or both.
//! - `node.id`, which every node of a cluster must set explicitly.
//! - `controller.quorum.voters` (`1@host:port,2@host:port,...`) and/or
//!   `controller.quorum.bootstrap.servers` (`host:port,...`): where the
//!   controller quorum is.
//! - `listeners` with several named listeners
//!   (`PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093`),
//!   `listener.security.protocol.map`, `controller.listener.names`,
//!   `inter.broker.listener.name`, `advertised.listeners`.
//! - `broker.rack`, `broker.heartbeat.interval.ms`,
//!   `broker.session.timeout.ms`, `controller.quorum.election.timeout.ms`,
//!   `controller.quorum.fetch.timeout.ms`,
//!   `controller.quorum.request.timeout.ms`,
//!   `initial.broker.registration.timeout.ms`.
//!
//! **The node with none of them set** (`fjord` with no arguments) is a
//! combined broker and controller that is, alone, the whole quorum:
//! [`Quorum::SingleNode`], with no controller listener. A quorum of one
//! voter never sends a message, so nothing needs to listen for one: the
//! controller step can start openraft with this node as its only member
//! and a network that is never called, and the node binds exactly what it
//! bound before (the client listener). Setting any of `process.roles`,
//! `controller.quorum.voters`, `controller.quorum.bootstrap.servers` or
//! `controller.listener.names` makes the node part of a cluster, and then
//! `process.roles` and `node.id` must be set and Kafka's rules for the
//! roles hold ([`Quorum::Configured`]); the controller listener's address
//! is kept in [`ClusterConfig::controller_listener`] for the quorum to bind.
//!
//! fjord speaks only PLAINTEXT, and serves clients on one listener: the
//! single listener that is not a controller listener. Both limits are
//! start errors rather than listeners silently left unbound. A listener
//! without an advertised address is advertised with its own host, and with
//! `localhost` where that host is a wildcard (Kafka would use the machine's
//! canonical host name), so the default node is reachable as
//! `localhost:9092` as before. A controller listener is never advertised to
//! clients.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{invalid, positive_milliseconds};
use crate::error::BrokerError;

/// Keys whose presence makes a node part of a cluster instead of a single
/// node.
pub const CLUSTER_KEYS: [&str; 4] = [
    "process.roles",
    "controller.quorum.voters",
    "controller.quorum.bootstrap.servers",
    "controller.listener.names",
];

/// The security protocol of the only kind of listener fjord serves.
const PLAINTEXT: &str = "PLAINTEXT";
/// Kafka's security protocols (`listener.security.protocol.map` values).
const SECURITY_PROTOCOLS: [&str; 4] = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
/// Kafka's `inter.broker.listener.name` when unset (the listener named
/// after `security.inter.broker.protocol`, PLAINTEXT).
const DEFAULT_INTER_BROKER_LISTENER: &str = "PLAINTEXT";
/// The host advertised for a listener bound to a wildcard address.
const WILDCARD_ADVERTISED_HOST: &str = "localhost";
/// The voter entry form, as Kafka's error messages spell it.
const VOTER_FORM: &str = "Each entry should be in the form `{id}@{host}:{port}`.";

/// `process.roles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessRoles {
    /// `broker`: serves clients, follows the quorum.
    Broker,
    /// `controller`: a quorum voter only.
    Controller,
    /// `broker,controller`: both (the single node's roles).
    Combined,
}

impl ProcessRoles {
    /// Whether the node serves clients.
    #[must_use]
    pub fn is_broker(self) -> bool {
        matches!(self, Self::Broker | Self::Combined)
    }

    /// Whether the node is a quorum voter.
    #[must_use]
    pub fn is_controller(self) -> bool {
        matches!(self, Self::Controller | Self::Combined)
    }
}

impl fmt::Display for ProcessRoles {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Broker => "broker",
            Self::Controller => "controller",
            Self::Combined => "broker,controller",
        })
    }
}

/// An address to dial: a host name or IP address and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port, never 0.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Reads `host:port` (`[v6]:port` for IPv6); `None` if either part is
    /// missing or the port is not 1-65535.
    fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.trim().rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().ok().filter(|port| *port != 0)?;
        (!host.is_empty()).then(|| Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// One entry of `listeners`: a name and the address it binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// The listener name, upper case (Kafka normalises it so).
    pub name: String,
    /// Where it binds (`0.0.0.0` for an empty host).
    pub address: SocketAddr,
}

/// One entry of `advertised.listeners` (or its default from `listeners`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedListener {
    /// The listener name, upper case.
    pub name: String,
    /// What clients are told to dial.
    pub endpoint: HostPort,
}

/// Where the controller quorum is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quorum {
    /// No cluster key is set: this node alone is the quorum, in process,
    /// with no controller listener (see the module documentation).
    SingleNode,
    /// The quorum the cluster keys name.
    Configured {
        /// `controller.quorum.voters`: node id -> the voter's controller
        /// listener (empty when only bootstrap servers are given).
        voters: BTreeMap<i32, HostPort>,
        /// `controller.quorum.bootstrap.servers` (KIP-853).
        bootstrap_servers: Vec<HostPort>,
    },
}

/// The validated cluster keys; see the module documentation.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// `process.roles` (combined for the single node).
    pub process_roles: ProcessRoles,
    /// The voters and bootstrap servers.
    pub quorum: Quorum,
    /// `listeners`, every one.
    pub listeners: Vec<Listener>,
    /// `controller.listener.names`, upper case.
    pub controller_listener_names: Vec<String>,
    /// The listener the quorum binds on a controller node: the first of
    /// `controller.listener.names` (as Kafka uses it). `None` on the single
    /// node and on a broker-only node.
    pub controller_listener: Option<Listener>,
    /// The one listener that serves clients on a broker node.
    pub broker_listener: Option<Listener>,
    /// `advertised.listeners`: what Metadata tells clients, controller
    /// listeners excluded.
    pub advertised_listeners: Vec<AdvertisedListener>,
    /// `inter.broker.listener.name`: the listener other brokers replicate
    /// from.
    pub inter_broker_listener_name: String,
    /// `broker.rack`.
    pub broker_rack: Option<String>,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`: a broker that has not heartbeated for
    /// this long is fenced.
    pub broker_session_timeout: Duration,
    /// `controller.quorum.election.timeout.ms`.
    pub quorum_election_timeout: Duration,
    /// `controller.quorum.fetch.timeout.ms`.
    pub quorum_fetch_timeout: Duration,
    /// `controller.quorum.request.timeout.ms`.
    pub quorum_request_timeout: Duration,
    /// `initial.broker.registration.timeout.ms`: how long a start waits for
    /// the quorum to have a leader and to register and unfence this broker
    /// before it fails.
    pub initial_broker_registration_timeout: Duration,
}

/// Splits a comma-separated list, dropping empty entries.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// `{1, 2, 3}`, for messages.
fn id_set(voters: &BTreeMap<i32, HostPort>) -> String {
    format!("{:?}", voters.keys().collect::<BTreeSet<_>>())
}

/// Reads `controller.quorum.voters`.
fn parse_voters(value: &str) -> Result<BTreeMap<i32, HostPort>, BrokerError> {
    const KEY: &str = "controller.quorum.voters";
    let mut voters = BTreeMap::new();
    for entry in list(value) {
        let Some((id, address)) = entry
            .split_once('@')
            .filter(|(_, rest)| !rest.contains('@'))
        else {
            return Err(invalid(
                KEY,
                value,
                format!("Invalid configuration value for {KEY}. {VOTER_FORM}"),
            ));
        };
        let id: i32 = id.trim().parse().map_err(|_| {
            invalid(
                KEY,
                value,
                format!("Failed to parse voter ID as an integer from {id}"),
            )
        })?;
        if id < 0 {
            return Err(invalid(
                KEY,
                value,
                format!("voter id {id} is negative; node ids are 0 or more"),
            ));
        }
        let endpoint = HostPort::parse(address).ok_or_else(|| {
            invalid(
                KEY,
                value,
                format!(
                    "Failed to parse host name and port from entry {entry} for the \
                     configuration {KEY}. {VOTER_FORM}"
                ),
            )
        })?;
        if voters.insert(id, endpoint).is_some() {
            return Err(invalid(
                KEY,
                value,
                format!("duplicate voter id {id}: each voter must appear once"),
            ));
        }
    }
    Ok(voters)
}

/// Reads `controller.quorum.bootstrap.servers`.
fn parse_bootstrap_servers(value: &str) -> Result<Vec<HostPort>, BrokerError> {
    list(value)
        .map(|entry| {
            HostPort::parse(entry).ok_or_else(|| {
                invalid(
                    "controller.quorum.bootstrap.servers",
                    value,
                    format!("Invalid url in controller.quorum.bootstrap.servers: {entry}"),
                )
            })
        })
        .collect()
}

/// Splits `NAME://host:port` into the upper-cased name and the address.
fn parse_endpoint<'a>(
    key: &str,
    value: &str,
    entry: &'a str,
) -> Result<(String, &'a str), BrokerError> {
    let (name, address) = entry.split_once("://").ok_or_else(|| {
        invalid(
            key,
            value,
            format!("Unable to parse {entry} to a broker endpoint: expected NAME://host:port"),
        )
    })?;
    if name.is_empty() {
        return Err(invalid(key, value, format!("{entry}: no listener name")));
    }
    Ok((name.to_ascii_uppercase(), address))
}

/// Reads `listeners`: unique names and ports, IP addresses (bound as
/// given; an empty host binds every address).
fn parse_listeners(value: &str) -> Result<Vec<Listener>, BrokerError> {
    const KEY: &str = "listeners";
    let mut listeners: Vec<Listener> = Vec::new();
    for entry in list(value) {
        let (name, address) = parse_endpoint(KEY, value, entry)?;
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| invalid(KEY, value, format!("{entry}: expected host:port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(KEY, value, format!("{entry}: bad port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            host.parse()
                .map_err(|_| invalid(KEY, value, format!("{entry}: host must be an IP address")))?
        };
        if listeners.iter().any(|listener| listener.name == name) {
            return Err(invalid(
                KEY,
                value,
                format!("Each listener must have a different name, listeners: {value}"),
            ));
        }
        if port != 0
            && listeners
                .iter()
                .any(|listener| listener.address.port() == port)
        {
            return Err(invalid(
                KEY,
                value,
                format!("Each listener must have a different port, listeners: {value}"),
            ));
        }
        listeners.push(Listener {
            name,
            address: SocketAddr::new(ip, port),
        });
    }
    if listeners.is_empty() {
        return Err(invalid(KEY, value, "at least one listener is required"));
    }
    Ok(listeners)
}

/// Reads an explicit `advertised.listeners`.
fn parse_advertised(value: &str) -> Result<Vec<AdvertisedListener>, BrokerError> {
    const KEY: &str = "advertised.listeners";
    let mut advertised: Vec<AdvertisedListener> = Vec::new();
    for entry in list(value) {
        let (name, address) = parse_endpoint(KEY, value, entry)?;
        let endpoint = HostPort::parse(address)
            .ok_or_else(|| invalid(KEY, value, format!("{entry}: expected host:port")))?;
        if endpoint.host == "0.0.0.0" {
            return Err(invalid(
                KEY,
                value,
                "advertised.listeners cannot use the nonroutable meta-address 0.0.0.0. \
                 Use a routable IP address.",
            ));
        }
        if advertised.iter().any(|listener| listener.name == name) {
            return Err(invalid(
                KEY,
                value,
                format!("Each listener must have a different name, advertised.listeners: {value}"),
            ));
        }
        advertised.push(AdvertisedListener { name, endpoint });
    }
    Ok(advertised)
}

/// Reads `listener.security.protocol.map` (`NAME:PROTOCOL,...`).
fn parse_security_protocol_map(value: &str) -> Result<BTreeMap<String, String>, BrokerError> {
    const KEY: &str = "listener.security.protocol.map";
    list(value)
        .map(|entry| {
            let (name, protocol) = entry
                .split_once(':')
                .ok_or_else(|| invalid(KEY, value, format!("{entry}: expected NAME:PROTOCOL")))?;
            let protocol = protocol.trim().to_ascii_uppercase();
            if !SECURITY_PROTOCOLS.contains(&protocol.as_str()) {
                return Err(invalid(
                    KEY,
                    value,
                    format!("Invalid security protocol `{protocol}` defined in {KEY}"),
                ));
            }
            Ok((name.trim().to_ascii_uppercase(), protocol))
        })
        .collect()
}

impl ClusterConfig {
    /// Validates the cluster keys of a node with id `node_id`; `get` reads
    /// a key's value (its default when unset) and `is_set` says whether the
    /// file or `--set` gave it.
    ///
    /// # Errors
    /// [`BrokerError::Config`] naming the key and the rule it breaks.
    pub fn parse(
        get: &impl Fn(&str) -> String,
        is_set: &impl Fn(&str) -> bool,
        node_id: i32,
    ) -> Result<Self, BrokerError> {
        let process_roles = Self::parse_roles(get, is_set)?;
        let in_cluster = process_roles.is_some();
        if in_cluster && (!is_set("node.id") || node_id < 0) {
            return Err(invalid(
                "node.id",
                &get("node.id"),
                "Missing configuration `node.id` which is required when `process.roles` is \
                 defined (i.e. when running in KRaft mode).",
            ));
        }
        if node_id < 0 {
            return Err(invalid("node.id", &get("node.id"), "must not be negative"));
        }
        let process_roles = process_roles.unwrap_or(ProcessRoles::Combined);
        let listeners = parse_listeners(&get("listeners"))?;
        let controller_listener_names: Vec<String> = list(&get("controller.listener.names"))
            .map(str::to_ascii_uppercase)
            .collect();
        let quorum = if in_cluster {
            let voters = parse_voters(&get("controller.quorum.voters"))?;
            let bootstrap_servers =
                parse_bootstrap_servers(&get("controller.quorum.bootstrap.servers"))?;
            Self::check_quorum(process_roles, node_id, &voters, &bootstrap_servers)?;
            Quorum::Configured {
                voters,
                bootstrap_servers,
            }
        } else {
            Quorum::SingleNode
        };
        let controller_listener = Self::controller_listener(
            get,
            process_roles,
            in_cluster,
            &listeners,
            &controller_listener_names,
        )?;
        Self::check_role_listeners(get, process_roles, &listeners, &controller_listener_names)?;
        Self::check_security_protocols(get, is_set, &listeners, &controller_listener_names)?;
        let broker_listener =
            Self::broker_listener(get, process_roles, &listeners, &controller_listener_names)?;
        let advertised_listeners = Self::advertised_listeners(
            get,
            is_set,
            process_roles,
            &listeners,
            &controller_listener_names,
        )?;
        let inter_broker_listener_name = Self::inter_broker_listener_name(
            get,
            process_roles,
            &advertised_listeners,
            &controller_listener_names,
        )?;
        let (broker_heartbeat_interval, broker_session_timeout) = Self::broker_timeouts(get)?;
        let broker_rack =
            Some(get("broker.rack").trim().to_owned()).filter(|rack| !rack.is_empty());
        Ok(Self {
            process_roles,
            quorum,
            listeners,
            controller_listener_names,
            controller_listener,
            broker_listener,
            advertised_listeners,
            inter_broker_listener_name,
            broker_rack,
            broker_heartbeat_interval,
            broker_session_timeout,
            quorum_election_timeout: positive_milliseconds(
                "controller.quorum.election.timeout.ms",
                &get("controller.quorum.election.timeout.ms"),
            )?,
            quorum_fetch_timeout: positive_milliseconds(
                "controller.quorum.fetch.timeout.ms",
                &get("controller.quorum.fetch.timeout.ms"),
            )?,
            quorum_request_timeout: positive_milliseconds(
                "controller.quorum.request.timeout.ms",
                &get("controller.quorum.request.timeout.ms"),
            )?,
            initial_broker_registration_timeout: positive_milliseconds(
                "initial.broker.registration.timeout.ms",
                &get("initial.broker.registration.timeout.ms"),
            )?,
        })
    }

    /// The listener the quorum binds: Kafka's rules for a controller's
    /// `controller.listener.names`.
    fn controller_listener(
        get: &impl Fn(&str) -> String,
        process_roles: ProcessRoles,
        in_cluster: bool,
        listeners: &[Listener],
        controller_listener_names: &[String],
    ) -> Result<Option<Listener>, BrokerError> {
        let listener_names = || {
            listeners
                .iter()
                .map(|listener| listener.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if process_roles.is_controller() && in_cluster {
            if controller_listener_names.is_empty()
                || !controller_listener_names
                    .iter()
                    .any(|name| listeners.iter().any(|listener| listener.name == *name))
            {
                return Err(invalid(
                    "controller.listener.names",
                    &get("controller.listener.names"),
                    "controller.listener.names must contain at least one value appearing in the \
                     'listeners' configuration when running the KRaft controller role",
                ));
            }
            if let Some(missing) = controller_listener_names
                .iter()
                .find(|name| !listeners.iter().any(|listener| listener.name == **name))
            {
                return Err(invalid(
                    "controller.listener.names",
                    &get("controller.listener.names"),
                    format!(
                        "controller.listener.names must only contain values appearing in the \
                         'listeners' configuration when running the KRaft controller role: \
                         {missing} is not among listeners {}",
                        listener_names()
                    ),
                ));
            }
            let first = &controller_listener_names[0];
            Ok(listeners
                .iter()
                .find(|listener| listener.name == *first)
                .cloned())
        } else {
            Ok(None)
        }
    }

    /// Kafka's rules on which listeners a broker-only or a controller-only
    /// node may define.
    fn check_role_listeners(
        get: &impl Fn(&str) -> String,
        process_roles: ProcessRoles,
        listeners: &[Listener],
        controller_listener_names: &[String],
    ) -> Result<(), BrokerError> {
        let is_controller_listener =
            |name: &str| controller_listener_names.iter().any(|known| known == name);
        if process_roles == ProcessRoles::Broker {
            if controller_listener_names.is_empty() {
                return Err(invalid(
                    "controller.listener.names",
                    "",
                    "controller.listener.names must contain at least one value when running \
                     KRaft with just the broker role",
                ));
            }
            if listeners
                .iter()
                .any(|listener| is_controller_listener(&listener.name))
            {
                return Err(invalid(
                    "controller.listener.names",
                    &get("controller.listener.names"),
                    "controller.listener.names must not contain a value appearing in the \
                     'listeners' configuration when running KRaft with just the broker role",
                ));
            }
        }
        if process_roles == ProcessRoles::Controller
            && listeners
                .iter()
                .any(|listener| !is_controller_listener(&listener.name))
        {
            return Err(invalid(
                "listeners",
                &get("listeners"),
                "The listeners config must only contain KRaft controller listeners from \
                 controller.listener.names when process.roles=controller",
            ));
        }
        Ok(())
    }

    /// The one listener a broker serves clients on.
    fn broker_listener(
        get: &impl Fn(&str) -> String,
        process_roles: ProcessRoles,
        listeners: &[Listener],
        controller_listener_names: &[String],
    ) -> Result<Option<Listener>, BrokerError> {
        let is_controller_listener =
            |name: &str| controller_listener_names.iter().any(|known| known == name);
        if process_roles.is_broker() {
            let broker_listeners: Vec<&Listener> = listeners
                .iter()
                .filter(|listener| !is_controller_listener(&listener.name))
                .collect();
            match broker_listeners.as_slice() {
                [] => Err(invalid(
                    "listeners",
                    &get("listeners"),
                    "There must be at least one broker advertised listener. Perhaps all \
                     listeners appear in controller.listener.names?",
                )),
                [one] => Ok(Some((*one).clone())),
                _ => Err(invalid(
                    "listeners",
                    &get("listeners"),
                    format!(
                        "fjord serves clients on one listener, but {} are not controller \
                             listeners",
                        broker_listeners
                            .iter()
                            .map(|listener| listener.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                )),
            }
        } else {
            Ok(None)
        }
    }

    /// `advertised.listeners` as given (checked against `listeners`), or
    /// each broker listener's own address; never a controller listener.
    fn advertised_listeners(
        get: &impl Fn(&str) -> String,
        is_set: &impl Fn(&str) -> bool,
        process_roles: ProcessRoles,
        listeners: &[Listener],
        controller_listener_names: &[String],
    ) -> Result<Vec<AdvertisedListener>, BrokerError> {
        let is_controller_listener =
            |name: &str| controller_listener_names.iter().any(|known| known == name);
        let listener_names = || {
            listeners
                .iter()
                .map(|listener| listener.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if is_set("advertised.listeners") {
            let advertised = parse_advertised(&get("advertised.listeners"))?;
            if let Some(unknown) = advertised
                .iter()
                .find(|entry| !listeners.iter().any(|listener| listener.name == entry.name))
            {
                return Err(invalid(
                    "advertised.listeners",
                    &get("advertised.listeners"),
                    format!(
                        "advertised.listeners listener names must be equal to or a subset of \
                         the ones defined in listeners. Found {}. The valid options based on \
                         the current configuration are {}",
                        unknown.name,
                        listener_names()
                    ),
                ));
            }
            if process_roles.is_broker()
                && advertised
                    .iter()
                    .any(|entry| is_controller_listener(&entry.name))
            {
                return Err(invalid(
                    "advertised.listeners",
                    &get("advertised.listeners"),
                    "The advertised.listeners config must not contain KRaft controller listeners \
                     from controller.listener.names when process.roles contains the broker role \
                     because Kafka clients that send requests via advertised listeners do not \
                     send requests to KRaft controllers -- they only send requests to KRaft \
                     brokers.",
                ));
            }
            Ok(advertised
                .into_iter()
                .filter(|entry| !is_controller_listener(&entry.name))
                .collect())
        } else {
            Ok(listeners
                .iter()
                .filter(|listener| !is_controller_listener(&listener.name))
                .map(|listener| AdvertisedListener {
                    name: listener.name.clone(),
                    endpoint: HostPort {
                        host: if listener.address.ip().is_unspecified() {
                            WILDCARD_ADVERTISED_HOST.to_owned()
                        } else {
                            listener.address.ip().to_string()
                        },
                        port: listener.address.port(),
                    },
                })
                .collect())
        }
    }

    /// `inter.broker.listener.name`: on a broker, an advertised broker
    /// listener.
    fn inter_broker_listener_name(
        get: &impl Fn(&str) -> String,
        process_roles: ProcessRoles,
        advertised_listeners: &[AdvertisedListener],
        controller_listener_names: &[String],
    ) -> Result<String, BrokerError> {
        let is_controller_listener =
            |name: &str| controller_listener_names.iter().any(|known| known == name);
        let inter_broker_listener_name = match get("inter.broker.listener.name").trim() {
            "" => DEFAULT_INTER_BROKER_LISTENER.to_owned(),
            name => name.to_ascii_uppercase(),
        };
        if process_roles.is_broker() {
            if advertised_listeners.is_empty() {
                return Err(invalid(
                    "advertised.listeners",
                    &get("advertised.listeners"),
                    "There must be at least one broker advertised listener. Perhaps all \
                     listeners appear in controller.listener.names?",
                ));
            }
            if is_controller_listener(&inter_broker_listener_name) {
                return Err(invalid(
                    "inter.broker.listener.name",
                    &get("inter.broker.listener.name"),
                    format!(
                        "inter.broker.listener.name must not be a controller listener \
                         ({inter_broker_listener_name} is in controller.listener.names): brokers \
                         replicate over a broker listener"
                    ),
                ));
            }
            if !advertised_listeners
                .iter()
                .any(|entry| entry.name == inter_broker_listener_name)
            {
                return Err(invalid(
                    "inter.broker.listener.name",
                    &get("inter.broker.listener.name"),
                    format!(
                        "inter.broker.listener.name must be a listener name defined in \
                         advertised.listeners. The valid options based on currently configured \
                         listeners are {}",
                        advertised_listeners
                            .iter()
                            .map(|entry| entry.name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ));
            }
        }
        Ok(inter_broker_listener_name)
    }

    /// `broker.heartbeat.interval.ms` and `broker.session.timeout.ms`.
    fn broker_timeouts(get: &impl Fn(&str) -> String) -> Result<(Duration, Duration), BrokerError> {
        let broker_heartbeat_interval = positive_milliseconds(
            "broker.heartbeat.interval.ms",
            &get("broker.heartbeat.interval.ms"),
        )?;
        let broker_session_timeout = positive_milliseconds(
            "broker.session.timeout.ms",
            &get("broker.session.timeout.ms"),
        )?;
        if broker_heartbeat_interval >= broker_session_timeout {
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                &get("broker.heartbeat.interval.ms"),
                format!(
                    "must be below broker.session.timeout.ms ({} ms), or every broker is fenced \
                     between two heartbeats",
                    broker_session_timeout.as_millis()
                ),
            ));
        }
        Ok((broker_heartbeat_interval, broker_session_timeout))
    }

    /// `process.roles`: `None` for the single node (no cluster key set).
    fn parse_roles(
        get: &impl Fn(&str) -> String,
        is_set: &impl Fn(&str) -> bool,
    ) -> Result<Option<ProcessRoles>, BrokerError> {
        const KEY: &str = "process.roles";
        let value = get(KEY);
        if value.trim().is_empty() {
            return match CLUSTER_KEYS.iter().find(|key| is_set(key)) {
                Some(key) => Err(invalid(
                    key,
                    &get(key),
                    format!("process.roles must be set (broker, controller or broker,controller) when {key} is set"),
                )),
                None => Ok(None),
            };
        }
        let (mut broker, mut controller) = (false, false);
        for role in value.split(',').map(str::trim) {
            let seen = match role {
                "broker" => &mut broker,
                "controller" => &mut controller,
                _ => {
                    return Err(invalid(
                        KEY,
                        &value,
                        format!(
                            "Unknown process role '{role}' (only 'broker' and 'controller' are \
                             allowed roles)"
                        ),
                    ))
                }
            };
            if std::mem::replace(seen, true) {
                return Err(invalid(
                    KEY,
                    &value,
                    format!("Duplicate role names found in `process.roles`: {value}"),
                ));
            }
        }
        Ok(Some(match (broker, controller) {
            (true, true) => ProcessRoles::Combined,
            (true, false) => ProcessRoles::Broker,
            _ => ProcessRoles::Controller,
        }))
    }

    /// Kafka's rules on where the quorum is for each role.
    fn check_quorum(
        roles: ProcessRoles,
        node_id: i32,
        voters: &BTreeMap<i32, HostPort>,
        bootstrap_servers: &[HostPort],
    ) -> Result<(), BrokerError> {
        const KEY: &str = "controller.quorum.voters";
        let shown = || {
            voters
                .iter()
                .map(|(id, address)| format!("{id}@{address}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        if voters.is_empty() && bootstrap_servers.is_empty() {
            return Err(invalid(
                KEY,
                "",
                "If using process.roles, either controller.quorum.bootstrap.servers must contain \
                 the set of bootstrap controllers or controller.quorum.voters must contain a \
                 parseable set of controllers.",
            ));
        }
        if roles == ProcessRoles::Broker && voters.contains_key(&node_id) {
            return Err(invalid(
                KEY,
                &shown(),
                format!(
                    "If process.roles contains just the 'broker' role, the node id {node_id} must \
                     not be included in the set of voters controller.quorum.voters={}",
                    id_set(voters)
                ),
            ));
        }
        if roles.is_controller() && !voters.is_empty() && !voters.contains_key(&node_id) {
            return Err(invalid(
                KEY,
                &shown(),
                format!(
                    "If process.roles contains the 'controller' role, the node id {node_id} must \
                     be included in the set of voters controller.quorum.voters={}",
                    id_set(voters)
                ),
            ));
        }
        Ok(())
    }

    /// Every listener (and every controller listener name) must map to a
    /// security protocol, and that protocol must be PLAINTEXT. As in Kafka,
    /// a map left at its default gains `NAME:PLAINTEXT` for each controller
    /// listener name.
    fn check_security_protocols(
        get: &impl Fn(&str) -> String,
        is_set: &impl Fn(&str) -> bool,
        listeners: &[Listener],
        controller_listener_names: &[String],
    ) -> Result<(), BrokerError> {
        const KEY: &str = "listener.security.protocol.map";
        let mut map = parse_security_protocol_map(&get(KEY))?;
        if !is_set(KEY) {
            for name in controller_listener_names {
                map.entry(name.clone())
                    .or_insert_with(|| PLAINTEXT.to_owned());
            }
        }
        let names = listeners
            .iter()
            .map(|listener| &listener.name)
            .chain(controller_listener_names);
        for name in names {
            match map.get(name) {
                None if controller_listener_names.contains(name) => {
                    return Err(invalid(
                        KEY,
                        &get(KEY),
                        format!(
                            "Controller listener with name {name} defined in \
                             controller.listener.names not found in {KEY} (an explicit security \
                             mapping for each controller listener is required if {KEY} is \
                             non-empty, or if there are security protocols other than PLAINTEXT \
                             in use)"
                        ),
                    ))
                }
                None => {
                    return Err(invalid(
                        "listeners",
                        &get("listeners"),
                        format!("No security protocol defined for listener {name}"),
                    ))
                }
                Some(protocol) if protocol != PLAINTEXT => {
                    return Err(invalid(
                        "listeners",
                        &get("listeners"),
                        format!(
                            "listener {name} uses {protocol}: only PLAINTEXT listeners are \
                             supported"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BrokerConfig, DEFAULTS};

    /// Node 1 of `tuning/cluster/`: combined, three voters, loopback.
    const NODE1: &[(&str, &str)] = &[
        ("process.roles", "broker,controller"),
        ("node.id", "1"),
        (
            "controller.quorum.voters",
            "1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293",
        ),
        ("controller.listener.names", "CONTROLLER"),
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        ),
    ];

    /// `base` with `changes` applied (an empty value removes the key).
    fn with<K: AsRef<str>, V: AsRef<str>>(
        base: &[(K, V)],
        changes: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = base
            .iter()
            .map(|(key, value)| (key.as_ref().to_owned(), value.as_ref().to_owned()))
            .collect();
        for (key, value) in changes {
            settings.retain(|(known, _)| known != key);
            if !value.is_empty() {
                settings.push(((*key).to_owned(), (*value).to_owned()));
            }
        }
        settings
    }

    fn load(settings: &[(String, String)]) -> Result<BrokerConfig, BrokerError> {
        BrokerConfig::load(settings, &[])
    }

    /// The cluster keys of `settings` alone, for roles `load` does not run
    /// yet.
    fn cluster(settings: &[(String, String)]) -> Result<ClusterConfig, BrokerError> {
        let get = |key: &str| {
            settings
                .iter()
                .find(|(known, _)| known == key)
                .map(|(_, value)| value.clone())
                .or_else(|| {
                    DEFAULTS
                        .iter()
                        .find(|(known, _)| *known == key)
                        .map(|(_, value)| (*value).to_owned())
                })
                .unwrap_or_default()
        };
        let is_set = |key: &str| settings.iter().any(|(known, _)| known == key);
        let node_id = get("node.id").parse().unwrap_or(-1);
        ClusterConfig::parse(&get, &is_set, node_id)
    }

    /// The error `settings` give, as the operator reads it.
    #[track_caller]
    fn refused(settings: &[(String, String)]) -> String {
        match load(settings) {
            Ok(config) => panic!("accepted: {:?}", config.cluster),
            Err(error) => error.to_string(),
        }
    }

    #[track_caller]
    fn assert_refused(settings: &[(String, String)], fragment: &str) {
        let text = refused(settings);
        assert!(text.contains(fragment), "expected {fragment:?} in {text:?}");
    }

    fn endpoint(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn no_cluster_key_is_a_single_combined_node_without_a_controller_listener() {
        let config = load(&[]).unwrap();
        let cluster = &config.cluster;
        assert_eq!(cluster.process_roles, ProcessRoles::Combined);
        assert_eq!(cluster.quorum, Quorum::SingleNode);
        assert_eq!(cluster.controller_listener, None);
        assert!(cluster.controller_listener_names.is_empty());
        assert_eq!(
            config.listener,
            "0.0.0.0:9092".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("localhost", 9092)
        );
        assert_eq!(cluster.inter_broker_listener_name, "PLAINTEXT");
        assert_eq!(cluster.broker_rack, None);
        assert_eq!(cluster.broker_heartbeat_interval, Duration::from_secs(2));
        assert_eq!(cluster.broker_session_timeout, Duration::from_secs(9));
        assert_eq!(cluster.quorum_election_timeout, Duration::from_secs(1));
        assert_eq!(cluster.quorum_fetch_timeout, Duration::from_secs(2));
        assert_eq!(cluster.quorum_request_timeout, Duration::from_secs(2));
        assert_eq!(config.cluster_id, None);
    }

    #[test]
    fn a_combined_node_of_three_voters_gets_typed_values() {
        let config = load(&with(
            NODE1,
            &[
                ("broker.rack", "rack-a"),
                ("broker.session.timeout.ms", "12000"),
            ],
        ))
        .unwrap();
        let cluster = &config.cluster;
        assert_eq!(cluster.process_roles, ProcessRoles::Combined);
        assert_eq!(
            cluster.quorum,
            Quorum::Configured {
                voters: BTreeMap::from([
                    (1, endpoint("127.0.0.1", 19093)),
                    (2, endpoint("127.0.0.1", 19193)),
                    (3, endpoint("127.0.0.1", 19293)),
                ]),
                bootstrap_servers: Vec::new(),
            }
        );
        assert_eq!(
            cluster.controller_listener,
            Some(Listener {
                name: "CONTROLLER".to_owned(),
                address: "127.0.0.1:19093".parse().unwrap(),
            })
        );
        assert_eq!(
            config.listener,
            "127.0.0.1:19092".parse::<SocketAddr>().unwrap()
        );
        // The client listener is advertised, the controller listener never.
        assert_eq!(
            cluster.advertised_listeners,
            vec![AdvertisedListener {
                name: "PLAINTEXT".to_owned(),
                endpoint: endpoint("127.0.0.1", 19092),
            }]
        );
        assert_eq!(cluster.broker_rack.as_deref(), Some("rack-a"));
        assert_eq!(cluster.broker_session_timeout, Duration::from_secs(12));
    }

    #[test]
    fn names_are_case_insensitive_and_ipv6_voters_parse() {
        let config = load(&with(
            NODE1,
            &[
                ("controller.listener.names", "controller"),
                (
                    "controller.quorum.voters",
                    "1@[::1]:19093, 2@node2.example:29093",
                ),
                ("inter.broker.listener.name", "plaintext"),
            ],
        ))
        .unwrap();
        let Quorum::Configured { voters, .. } = &config.cluster.quorum else {
            panic!("not configured");
        };
        assert_eq!(voters[&1], endpoint("::1", 19093));
        assert_eq!(voters[&1].to_string(), "[::1]:19093");
        assert_eq!(voters[&2], endpoint("node2.example", 29093));
    }

    #[test]
    fn malformed_voter_lists_are_refused_with_kafkas_words() {
        for (voters, fragment) in [
            (
                "1",
                "Each entry should be in the form `{id}@{host}:{port}`.",
            ),
            ("1@a@b:1", "Each entry should be in the form"),
            ("one@h:1", "Failed to parse voter ID as an integer from one"),
            ("1@h", "Failed to parse host name and port from entry 1@h"),
            (
                "1@:9093",
                "Failed to parse host name and port from entry 1@:9093",
            ),
            ("1@h:0", "Failed to parse host name and port"),
            ("1@h:99999", "Failed to parse host name and port"),
            ("-1@h:1", "voter id -1 is negative"),
        ] {
            let text = refused(&with(NODE1, &[("controller.quorum.voters", voters)]));
            assert!(
                text.contains("controller.quorum.voters"),
                "{voters}: {text}"
            );
            assert!(
                text.contains(fragment),
                "{voters}: expected {fragment:?} in {text}"
            );
        }
    }

    #[test]
    fn a_duplicate_voter_id_is_refused() {
        assert_refused(
            &with(NODE1, &[("controller.quorum.voters", "1@h:1,2@h:2,1@h:3")]),
            "duplicate voter id 1",
        );
    }

    #[test]
    fn a_controller_must_be_among_the_voters_and_a_broker_must_not() {
        assert_refused(
            &with(NODE1, &[("node.id", "4")]),
            "If process.roles contains the 'controller' role, the node id 4 must be included \
             in the set of voters controller.quorum.voters={1, 2, 3}",
        );
        let broker = with(
            NODE1,
            &[
                ("process.roles", "broker"),
                ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            ],
        );
        let text = cluster(&broker).unwrap_err().to_string();
        assert!(
            text.contains(
                "If process.roles contains just the 'broker' role, the node id 1 must not be \
                 included in the set of voters"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_node_in_a_cluster_must_say_where_the_quorum_is() {
        let broker = with(
            NODE1,
            &[
                ("process.roles", "broker"),
                ("node.id", "4"),
                ("controller.quorum.voters", ""),
                ("listeners", "PLAINTEXT://127.0.0.1:19092"),
            ],
        );
        let text = cluster(&broker).unwrap_err().to_string();
        assert!(
            text.contains(
                "If using process.roles, either controller.quorum.bootstrap.servers must \
                 contain the set of bootstrap controllers or controller.quorum.voters must \
                 contain a parseable set of controllers."
            ),
            "{text}"
        );
        // Bootstrap servers alone do (KIP-853).
        let bootstrapped = with(
            &broker,
            &[(
                "controller.quorum.bootstrap.servers",
                "127.0.0.1:19093, [::1]:29093",
            )],
        );
        let cluster = cluster(&bootstrapped).unwrap();
        assert_eq!(
            cluster.quorum,
            Quorum::Configured {
                voters: BTreeMap::new(),
                bootstrap_servers: vec![endpoint("127.0.0.1", 19093), endpoint("::1", 29093)],
            }
        );
        assert_refused(
            &with(
                &bootstrapped,
                &[("controller.quorum.bootstrap.servers", "127.0.0.1")],
            ),
            "Invalid url in controller.quorum.bootstrap.servers: 127.0.0.1",
        );
    }

    #[test]
    fn a_broker_only_node_loads_without_a_controller_listener() {
        let broker = with(
            NODE1,
            &[
                ("process.roles", "broker"),
                ("node.id", "4"),
                ("listeners", "PLAINTEXT://127.0.0.1:49092"),
            ],
        );
        let parsed = cluster(&broker).unwrap();
        assert_eq!(parsed.process_roles, ProcessRoles::Broker);
        assert_eq!(parsed.controller_listener, None);
        assert_eq!(
            parsed.broker_listener.map(|listener| listener.address),
            Some("127.0.0.1:49092".parse().unwrap())
        );
        let loaded = load(&broker).unwrap();
        assert_eq!(
            loaded.listener,
            "127.0.0.1:49092".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(loaded.cluster.process_roles, ProcessRoles::Broker);
        assert_refused(
            &with(&broker, &[("controller.listener.names", "")]),
            "controller.listener.names must contain at least one value when running KRaft \
             with just the broker role",
        );
        assert_refused(
            &with(
                &broker,
                &[(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:49092,CONTROLLER://127.0.0.1:49093",
                )],
            ),
            "controller.listener.names must not contain a value appearing in the 'listeners' \
             configuration when running KRaft with just the broker role",
        );
    }

    #[test]
    fn a_controller_only_node_listens_only_as_a_controller() {
        let controller = with(
            NODE1,
            &[
                ("process.roles", "controller"),
                ("listeners", "CONTROLLER://127.0.0.1:19093"),
            ],
        );
        let parsed = cluster(&controller).unwrap();
        assert_eq!(parsed.process_roles, ProcessRoles::Controller);
        assert_eq!(parsed.broker_listener, None);
        assert!(parsed.advertised_listeners.is_empty());
        assert_eq!(
            parsed.controller_listener.map(|listener| listener.address),
            Some("127.0.0.1:19093".parse().unwrap())
        );
        assert_refused(
            &controller,
            "process.roles=controller is valid but not supported yet",
        );
        assert_refused(
            &with(
                &controller,
                &[(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
                )],
            ),
            "The listeners config must only contain KRaft controller listeners from \
             controller.listener.names when process.roles=controller",
        );
    }

    #[test]
    fn the_controller_listener_must_be_named_and_defined() {
        assert_refused(
            &with(NODE1, &[("controller.listener.names", "")]),
            "controller.listener.names must contain at least one value appearing in the \
             'listeners' configuration when running the KRaft controller role",
        );
        assert_refused(
            &with(NODE1, &[("controller.listener.names", "QUORUM")]),
            "controller.listener.names must contain at least one value appearing in the \
             'listeners' configuration",
        );
        assert_refused(
            &with(NODE1, &[("controller.listener.names", "CONTROLLER,QUORUM")]),
            "controller.listener.names must only contain values appearing in the 'listeners' \
             configuration when running the KRaft controller role: QUORUM is not among \
             listeners PLAINTEXT,CONTROLLER",
        );
    }

    #[test]
    fn node_id_must_be_set_and_not_negative_in_a_cluster() {
        let missing = "Missing configuration `node.id` which is required when `process.roles` \
                       is defined (i.e. when running in KRaft mode).";
        assert_refused(&with(NODE1, &[("node.id", "")]), missing);
        assert_refused(&with(NODE1, &[("node.id", "-1")]), missing);
        assert_refused(&with(NODE1, &[("node.id", "one")]), "node.id");
        assert_refused(
            &with::<&str, &str>(&[], &[("node.id", "-1")]),
            "must not be negative",
        );
    }

    #[test]
    fn a_cluster_key_without_process_roles_is_refused() {
        for key in CLUSTER_KEYS.iter().skip(1) {
            let value = NODE1
                .iter()
                .find(|(known, _)| known == key)
                .map_or("127.0.0.1:19093", |(_, value)| *value);
            assert_refused(
                &with::<&str, &str>(&[("node.id", "1")], &[(key, value)]),
                &format!("process.roles must be set (broker, controller or broker,controller) when {key} is set"),
            );
        }
    }

    #[test]
    fn process_roles_accepts_only_kafkas_roles_once_each() {
        let combined = load(&with(NODE1, &[("process.roles", "controller, broker")])).unwrap();
        assert_eq!(combined.cluster.process_roles, ProcessRoles::Combined);
        assert_refused(
            &with(NODE1, &[("process.roles", "brokers")]),
            "Unknown process role 'brokers' (only 'broker' and 'controller' are allowed roles)",
        );
        assert_refused(
            &with(NODE1, &[("process.roles", "broker,broker")]),
            "Duplicate role names found in `process.roles`: broker,broker",
        );
        assert_refused(
            &with(NODE1, &[("process.roles", "broker,")]),
            "Unknown process role ''",
        );
    }

    #[test]
    fn the_inter_broker_listener_must_be_an_advertised_broker_listener() {
        assert_refused(
            &with(NODE1, &[("inter.broker.listener.name", "REPLICATION")]),
            "inter.broker.listener.name must be a listener name defined in \
             advertised.listeners. The valid options based on currently configured listeners \
             are PLAINTEXT",
        );
        assert_refused(
            &with(NODE1, &[("inter.broker.listener.name", "CONTROLLER")]),
            "inter.broker.listener.name must not be a controller listener (CONTROLLER is in \
             controller.listener.names)",
        );
        // The default names PLAINTEXT, as Kafka's.
        assert_refused(
            &with(
                NODE1,
                &[
                    (
                        "listeners",
                        "INTERNAL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
                    ),
                    (
                        "listener.security.protocol.map",
                        "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    ),
                ],
            ),
            "inter.broker.listener.name must be a listener name defined in advertised.listeners",
        );
        let named = load(&with(
            NODE1,
            &[
                (
                    "listeners",
                    "INTERNAL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
                ),
                (
                    "listener.security.protocol.map",
                    "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
                ),
                ("inter.broker.listener.name", "INTERNAL"),
            ],
        ))
        .unwrap();
        assert_eq!(named.cluster.inter_broker_listener_name, "INTERNAL");
        assert_eq!(
            named.listener,
            "127.0.0.1:19092".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn advertised_listeners_are_per_listener_and_never_a_controllers() {
        let config = load(&with(
            NODE1,
            &[("advertised.listeners", "PLAINTEXT://broker1.example:9092")],
        ))
        .unwrap();
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("broker1.example", 9092)
        );
        assert_refused(
            &with(
                NODE1,
                &[(
                    "advertised.listeners",
                    "PLAINTEXT://broker1.example:9092,CONTROLLER://broker1.example:9093",
                )],
            ),
            "The advertised.listeners config must not contain KRaft controller listeners",
        );
        assert_refused(
            &with(
                NODE1,
                &[("advertised.listeners", "PLAINTEXT://0.0.0.0:9092")],
            ),
            "advertised.listeners cannot use the nonroutable meta-address 0.0.0.0",
        );
        assert_refused(
            &with(NODE1, &[("advertised.listeners", "EXTERNAL://h:9092")]),
            "advertised.listeners listener names must be equal to or a subset of the ones \
             defined in listeners. Found EXTERNAL.",
        );
        assert_refused(
            &with(NODE1, &[("advertised.listeners", "PLAINTEXT://h")]),
            "PLAINTEXT://h: expected host:port",
        );
    }

    #[test]
    fn listeners_must_be_distinct_plaintext_and_one_for_clients() {
        assert_refused(
            &with(
                NODE1,
                &[(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:19092,plaintext://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093",
                )],
            ),
            "Each listener must have a different name",
        );
        assert_refused(
            &with(
                NODE1,
                &[(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.2:19092",
                )],
            ),
            "Each listener must have a different port",
        );
        assert_refused(
            &with::<&str, &str>(&[], &[("listeners", "SSL://127.0.0.1:9093")]),
            "listener SSL uses SSL: only PLAINTEXT listeners are supported",
        );
        assert_refused(
            &with::<&str, &str>(&[], &[("listeners", "INTERNAL://127.0.0.1:9093")]),
            "No security protocol defined for listener INTERNAL",
        );
        assert_refused(
            &with::<&str, &str>(&[], &[("listeners", "PLAINTEXT://localhost:9093")]),
            "host must be an IP address",
        );
        assert_refused(
            &with::<&str, &str>(&[], &[("listeners", "127.0.0.1:9093")]),
            "expected NAME://host:port",
        );
        assert_refused(
            &with(
                NODE1,
                &[(
                    "listeners",
                    "PLAINTEXT://127.0.0.1:19092,EXTERNAL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093",
                ),
                ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,EXTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT")],
            ),
            "fjord serves clients on one listener, but PLAINTEXT,EXTERNAL are not controller \
             listeners",
        );
    }

    #[test]
    fn an_explicit_security_protocol_map_must_name_the_controller_listener() {
        assert_refused(
            &with(
                NODE1,
                &[("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT")],
            ),
            "Controller listener with name CONTROLLER defined in controller.listener.names \
             not found in listener.security.protocol.map",
        );
        assert_refused(
            &with(
                NODE1,
                &[(
                    "listener.security.protocol.map",
                    "PLAINTEXT:PLAINTEXT,CONTROLLER:TLS",
                )],
            ),
            "Invalid security protocol `TLS` defined in listener.security.protocol.map",
        );
        load(&with(
            NODE1,
            &[(
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            )],
        ))
        .unwrap();
    }

    #[test]
    fn timeouts_are_positive_and_heartbeats_come_within_the_session() {
        for key in [
            "broker.heartbeat.interval.ms",
            "broker.session.timeout.ms",
            "controller.quorum.election.timeout.ms",
            "controller.quorum.fetch.timeout.ms",
            "controller.quorum.request.timeout.ms",
        ] {
            assert_refused(&with(NODE1, &[(key, "0")]), "must be at least 1");
            assert_refused(&with(NODE1, &[(key, "soon")]), key);
        }
        assert_refused(
            &with(NODE1, &[("broker.heartbeat.interval.ms", "9000")]),
            "must be below broker.session.timeout.ms (9000 ms)",
        );
        let config = load(&with(
            NODE1,
            &[
                ("controller.quorum.election.timeout.ms", "1500"),
                ("controller.quorum.fetch.timeout.ms", "3000"),
                ("controller.quorum.request.timeout.ms", "2500"),
            ],
        ))
        .unwrap();
        assert_eq!(
            config.cluster.quorum_election_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(config.cluster.quorum_fetch_timeout, Duration::from_secs(3));
        assert_eq!(
            config.cluster.quorum_request_timeout,
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn a_configured_cluster_id_must_be_a_kafka_uuid() {
        let config = load(&with(NODE1, &[("cluster.id", "MkU3OEVBNTcwNTJENDM2Qg")])).unwrap();
        assert_eq!(
            config.cluster_id.map(|id| id.to_string()).as_deref(),
            Some("MkU3OEVBNTcwNTJENDM2Qg")
        );
        assert_refused(
            &with(NODE1, &[("cluster.id", "fjord-cluster")]),
            "invalid configuration cluster.id=\"fjord-cluster\": not a Kafka UUID",
        );
    }

    #[test]
    fn the_example_cluster_configs_validate_and_agree() {
        let mut voters = Vec::new();
        for node in 1..=3 {
            let path = format!(
                "{}/../tuning/cluster/node{node}.properties",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let config = load(&crate::config::parse_properties(&text).unwrap())
                .unwrap_or_else(|error| panic!("{path}: {error}"));
            assert_eq!(config.node_id, node);
            assert_eq!(config.cluster.process_roles, ProcessRoles::Combined);
            let Quorum::Configured { voters: listed, .. } = &config.cluster.quorum else {
                panic!("{path}: not a cluster");
            };
            // Each node's voter entry is its own controller listener.
            let own = config.cluster.controller_listener.as_ref().unwrap().address;
            assert_eq!(listed[&node], endpoint(&own.ip().to_string(), own.port()));
            voters.push(listed.clone());
            assert!(config
                .data_dir
                .ends_with(format!("data/cluster/node{node}")));
        }
        assert!(voters.windows(2).all(|pair| pair[0] == pair[1]));
    }
}
