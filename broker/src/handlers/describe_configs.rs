//! DescribeConfigs: a topic's configs under Kafka's names, each with its
//! value and where it comes from, and the broker's static configuration.
//!
//! A topic reports every config fjord implements: the engine's
//! [`LogConfig::KEYS`] plus the broker-side [`BROKER_SIDE_TOPIC_CONFIGS`]. An
//! override is `DYNAMIC_TOPIC_CONFIG`; otherwise the value is the broker
//! default, `STATIC_BROKER_CONFIG` when one of its broker keys was set in
//! `server.properties` or `--set`, else `DEFAULT_CONFIG`. With
//! `include_synonyms` each config lists the values it would fall back to,
//! most specific first, as Kafka does. The broker resource (named by this
//! node's id, or `""` for the cluster-wide dynamic defaults, of which fjord
//! has none) lists the `server.properties` keys fjord knows, all read-only:
//! fjord has no dynamic broker configs.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

#[cfg(doc)]
use fjord_engine::config::LogConfig;

use super::ApiSupport;
use crate::config::{BrokerConfig, DEFAULTS};
#[cfg(doc)]
use crate::controller::BROKER_SIDE_TOPIC_CONFIGS;
use crate::server::Broker;

/// Versions served (v0, with `is_default` instead of `config_source`, is
/// not: the codec starts at v1).
pub const SUPPORT: ApiSupport = ApiSupport {
    key: ApiKey::DescribeConfigs,
    min: 1,
    max: 4,
};

/// Kafka's `ConfigResource.Type` codes.
pub mod resource_type {
    /// A topic, named by its name.
    pub const TOPIC: i8 = 2;
    /// A broker, named by its node id (`""`: the cluster-wide defaults).
    pub const BROKER: i8 = 4;
    /// A broker's loggers.
    pub const BROKER_LOGGER: i8 = 8;
}

/// Kafka's `ConfigSource` codes.
pub mod config_source {
    /// A topic override.
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    /// Set in `server.properties` (or `--set`).
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    /// Kafka's default.
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's `ConfigType` codes.
pub mod config_type {
    /// `true` or `false`.
    pub const BOOLEAN: i8 = 1;
    /// Free text or one of an enumeration.
    pub const STRING: i8 = 2;
    /// A 32-bit integer.
    pub const INT: i8 = 3;
    /// A 64-bit integer.
    pub const LONG: i8 = 5;
    /// A floating-point number.
    pub const DOUBLE: i8 = 6;
    /// Comma-separated values.
    pub const LIST: i8 = 7;
}

/// One topic config fjord implements.
#[derive(Debug)]
pub struct TopicConfigSpec {
    /// The Kafka topic config name.
    pub name: &'static str,
    /// The broker keys that set its default, most specific first (Kafka's
    /// synonyms; `min.insync.replicas` names Kafka's key, which fjord's
    /// broker does not take, and `write.caching` its own name: it has no
    /// broker key).
    pub broker_keys: &'static [&'static str],
    /// Its [`config_type`].
    pub config_type: i8,
    /// One line of documentation.
    pub documentation: &'static str,
}

/// Every topic config fjord implements, in the order they are described.
pub const TOPIC_CONFIGS: [TopicConfigSpec; 21] = [
    spec("cleanup.policy", &["log.cleanup.policy"], config_type::LIST,
        "\"delete\" (retention by time and size) and/or \"compact\" (keep the latest value per key)."),
    spec("compression.type", &["compression.type"], config_type::STRING,
        "Final compression of the topic's batches; \"producer\" keeps the producer's."),
    spec("delete.retention.ms", &["log.cleaner.delete.retention.ms"], config_type::LONG,
        "How long a tombstone stays after the cleaner first kept it, for consumers reading from behind."),
    spec("flush.messages", &["log.flush.interval.messages"], config_type::LONG,
        "fdatasync after this many records."),
    spec("flush.ms", &["log.flush.interval.ms"], config_type::LONG,
        "fdatasync when the oldest unflushed record is this old."),
    spec("index.interval.bytes", &["log.index.interval.bytes"], config_type::INT,
        "Log bytes between index entries."),
    spec("max.compaction.lag.ms", &["log.cleaner.max.compaction.lag.ms"], config_type::LONG,
        "Compact records at the latest this long after they were written, whatever the dirty ratio."),
    spec("max.message.bytes", &["message.max.bytes"], config_type::INT,
        "The largest record batch accepted."),
    spec("message.timestamp.after.max.ms", &["log.message.timestamp.after.max.ms"], config_type::LONG,
        "With CreateTime, refuse records stamped more than this after the broker's clock."),
    spec("message.timestamp.before.max.ms", &["log.message.timestamp.before.max.ms"], config_type::LONG,
        "With CreateTime, refuse records stamped more than this before the broker's clock."),
    spec("message.timestamp.type", &["log.message.timestamp.type"], config_type::STRING,
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps the append time."),
    spec("min.cleanable.dirty.ratio", &["log.cleaner.min.cleanable.ratio"], config_type::DOUBLE,
        "Compact a log once this share of its cleanable bytes is dirty."),
    spec("min.compaction.lag.ms", &["log.cleaner.min.compaction.lag.ms"], config_type::LONG,
        "Leave records younger than this uncompacted."),
    spec("min.insync.replicas", &["min.insync.replicas"], config_type::INT,
        "Replicas that must acknowledge an acks=all write."),
    spec("retention.bytes", &["log.retention.bytes"], config_type::LONG,
        "Delete the oldest segments beyond this many bytes per partition; -1 keeps all."),
    spec("retention.ms",
        &["log.retention.ms", "log.retention.minutes", "log.retention.hours"],
        config_type::LONG,
        "Delete segments whose newest record is older than this; -1 keeps all."),
    spec("segment.bytes", &["log.segment.bytes"], config_type::INT,
        "Roll to a new segment at this size."),
    spec("segment.index.bytes", &["log.index.size.max.bytes"], config_type::INT,
        "The largest a segment's offset or time index grows; a full index rolls the segment."),
    spec("segment.ms", &["log.roll.ms"], config_type::LONG,
        "Roll to a new segment this long after a segment's first append."),
    spec("unclean.leader.election.enable", &["unclean.leader.election.enable"], config_type::BOOLEAN,
        "Elect a replica outside the ISR when no ISR member is live, losing the records only the ISR had."),
    spec("write.caching", &["write.caching"], config_type::BOOLEAN,
        "Acknowledge an acks=all record once every ISR member wrote it (Kafka's), not once each flushed it."),
];

const fn spec(
    name: &'static str,
    broker_keys: &'static [&'static str],
    config_type: i8,
    documentation: &'static str,
) -> TopicConfigSpec {
    TopicConfigSpec {
        name,
        broker_keys,
        config_type,
        documentation,
    }
}

/// The spec of the topic config `name`, if fjord implements it.
#[must_use]
pub fn topic_config_spec(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|spec| spec.name == name)
}

/// One described config, before it is put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedConfig {
    /// The config name.
    pub name: String,
    /// Its value (`None`: unset).
    pub value: Option<String>,
    /// Its [`config_source`].
    pub source: i8,
    /// Whether it cannot be altered.
    pub read_only: bool,
    /// The values it falls back to, most specific first: (name, value,
    /// source), itself included.
    pub synonyms: Vec<(String, Option<String>, i8)>,
    /// Its [`config_type`].
    pub config_type: i8,
    /// One line of documentation.
    pub documentation: &'static str,
}

/// The topic config's value when the topic does not override it: Kafka's
/// default as the broker configuration sets it.
pub(crate) fn topic_default(name: &str, broker: &BrokerConfig) -> String {
    match name {
        "compression.type" => broker.compression_type.clone(),
        "min.insync.replicas" => broker.replication.min_insync_replicas.to_string(),
        "unclean.leader.election.enable" => broker
            .replication
            .unclean_leader_election_enable
            .to_string(),
        "write.caching" => "false".to_owned(),
        key => broker.log_defaults.get(key).unwrap_or_default(),
    }
}

/// Kafka's default of the topic config, set by no broker key.
fn kafka_default(name: &str) -> String {
    match name {
        "compression.type" => "producer".to_owned(),
        "min.insync.replicas" => "1".to_owned(),
        "unclean.leader.election.enable" | "write.caching" => "false".to_owned(),
        key => fjord_engine::config::LogConfig::default()
            .get(key)
            .unwrap_or_default(),
    }
}

/// Describes every topic config for a topic with `overrides`.
#[must_use]
pub fn describe_topic(
    overrides: &[(String, String)],
    broker: &BrokerConfig,
) -> Vec<DescribedConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|spec| {
            let mut synonyms = Vec::new();
            if let Some((_, value)) = overrides.iter().find(|(key, _)| key == spec.name) {
                synonyms.push((
                    spec.name.to_owned(),
                    Some(value.clone()),
                    config_source::DYNAMIC_TOPIC_CONFIG,
                ));
            }
            for key in spec.broker_keys {
                if let Some(value) = broker.explicit_settings.get(*key) {
                    synonyms.push((
                        (*key).to_owned(),
                        Some(value.clone()),
                        config_source::STATIC_BROKER_CONFIG,
                    ));
                }
            }
            synonyms.push((
                spec.broker_keys[0].to_owned(),
                Some(kafka_default(spec.name)),
                config_source::DEFAULT_CONFIG,
            ));
            let source = synonyms[0].2;
            let value = if source == config_source::DYNAMIC_TOPIC_CONFIG {
                synonyms[0].1.clone()
            } else {
                Some(topic_default(spec.name, broker))
            };
            DescribedConfig {
                name: spec.name.to_owned(),
                value,
                source,
                read_only: false,
                synonyms,
                config_type: spec.config_type,
                documentation: spec.documentation,
            }
        })
        .collect()
}

/// The Kafka type of a broker key fjord knows.
fn broker_config_type(key: &str) -> i8 {
    match key {
        "auto.create.topics.enable"
        | "log.cleaner.enable"
        | "unclean.leader.election.enable"
        | "controlled.shutdown.enable"
        | "auto.leader.rebalance.enable" => config_type::BOOLEAN,
        "listeners"
        | "advertised.listeners"
        | "log.dirs"
        | "log.cleanup.policy"
        | "process.roles"
        | "controller.quorum.voters"
        | "controller.quorum.bootstrap.servers" => config_type::LIST,
        "log.roll.ms"
        | "log.retention.ms"
        | "log.retention.bytes"
        | "log.flush.interval.messages"
        | "log.flush.interval.ms"
        | "log.cleaner.dedupe.buffer.size"
        | "log.cleaner.backoff.ms"
        | "log.cleaner.delete.retention.ms"
        | "log.cleaner.min.compaction.lag.ms"
        | "log.cleaner.max.compaction.lag.ms"
        | "log.message.timestamp.before.max.ms"
        | "log.message.timestamp.after.max.ms"
        | "replica.lag.time.max.ms"
        | "leader.imbalance.check.interval.seconds" => config_type::LONG,
        "log.message.timestamp.type"
        | "compression.type"
        | "cluster.id"
        | "metadata.log.dir"
        | "controller.listener.names"
        | "listener.security.protocol.map"
        | "inter.broker.listener.name"
        | "broker.rack" => config_type::STRING,
        "log.cleaner.min.cleanable.ratio" => config_type::DOUBLE,
        _ => config_type::INT,
    }
}

/// Describes the broker's static configuration: every key fjord knows, all
/// read-only.
#[must_use]
pub fn describe_broker(broker: &BrokerConfig) -> Vec<DescribedConfig> {
    DEFAULTS
        .iter()
        .map(|&(key, default)| {
            let (value, source) = match broker.explicit_settings.get(key) {
                Some(value) => (value.clone(), config_source::STATIC_BROKER_CONFIG),
                None => (default.to_owned(), config_source::DEFAULT_CONFIG),
            };
            let value = (!value.is_empty()).then_some(value);
            DescribedConfig {
                name: key.to_owned(),
                value: value.clone(),
                source,
                read_only: true,
                synonyms: vec![(key.to_owned(), value, source)],
                config_type: broker_config_type(key),
                documentation: "",
            }
        })
        .collect()
}

fn to_wire(
    config: DescribedConfig,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    let synonyms = if request.include_synonyms {
        config
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(value.map(StrBytes::from_string))
                    .with_source(source)
            })
            .collect()
    } else {
        Vec::new()
    };
    let result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(config.name))
        .with_value(config.value.map(StrBytes::from_string))
        .with_read_only(config.read_only)
        .with_config_source(config.source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if version < 3 {
        return result;
    }
    let documentation = (request.include_documentation && !config.documentation.is_empty())
        .then(|| StrBytes::from_static_str(config.documentation));
    result
        .with_config_type(config.config_type)
        .with_documentation(documentation)
}

/// The configs of one resource, or the error and its message.
fn describe_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<Vec<DescribedConfig>, (ResponseError, String)> {
    match resource_type {
        resource_type::TOPIC => match broker.controller.image().topics.get(name) {
            Some(topic) => Ok(describe_topic(&topic.configs, &broker.config)),
            None => Err((
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic {name:?}"),
            )),
        },
        resource_type::BROKER if name.is_empty() => Ok(Vec::new()),
        resource_type::BROKER if name == broker.config.node_id.to_string() => {
            Ok(describe_broker(&broker.config))
        }
        resource_type::BROKER => Err((
            ResponseError::InvalidRequest,
            format!(
                "unexpected broker id, expected {} or empty string, but received {name:?}",
                broker.config.node_id
            ),
        )),
        resource_type::BROKER_LOGGER => Err((
            ResponseError::InvalidRequest,
            "fjord has no dynamically configurable broker loggers".to_owned(),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("unsupported resource type {other}"),
        )),
    }
}

/// Answers DescribeConfigs.
#[must_use]
pub fn handle(
    broker: &Rc<Broker>,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match describe_resource(broker, resource.resource_type, &resource.resource_name) {
                Ok(configs) => {
                    // Null or empty keys mean every config.
                    let wanted = |name: &str| {
                        resource.configuration_keys.as_ref().is_none_or(|keys| {
                            keys.is_empty() || keys.iter().any(|key| **key == *name)
                        })
                    };
                    result.with_configs(
                        configs
                            .into_iter()
                            .filter(|config| wanted(&config.name))
                            .map(|config| to_wire(config, request, version))
                            .collect(),
                    )
                }
                Err((error, message)) => result
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::BROKER_SIDE_TOPIC_CONFIGS;

    fn broker_config(settings: &[(&str, &str)]) -> BrokerConfig {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        BrokerConfig::load(&[], &settings).unwrap()
    }

    fn find<'a>(configs: &'a [DescribedConfig], name: &str) -> &'a DescribedConfig {
        configs.iter().find(|config| config.name == name).unwrap()
    }

    #[test]
    fn every_implemented_topic_config_is_described() {
        let mut names: Vec<&str> = TOPIC_CONFIGS.iter().map(|spec| spec.name).collect();
        let mut implemented: Vec<&str> = fjord_engine::config::LogConfig::KEYS
            .iter()
            .chain(BROKER_SIDE_TOPIC_CONFIGS.iter())
            .copied()
            .collect();
        names.sort_unstable();
        implemented.sort_unstable();
        assert_eq!(names, implemented);
    }

    #[test]
    fn defaults_overrides_and_broker_settings_report_their_source() {
        let broker = broker_config(&[("log.retention.hours", "1")]);
        let overrides = vec![("segment.bytes".to_owned(), "8192".to_owned())];
        let configs = describe_topic(&overrides, &broker);
        let segment = find(&configs, "segment.bytes");
        assert_eq!(segment.value.as_deref(), Some("8192"));
        assert_eq!(segment.source, config_source::DYNAMIC_TOPIC_CONFIG);
        assert_eq!(segment.synonyms.len(), 2);
        assert_eq!(segment.synonyms[1].2, config_source::DEFAULT_CONFIG);
        let retention = find(&configs, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("3600000"));
        assert_eq!(retention.source, config_source::STATIC_BROKER_CONFIG);
        assert_eq!(retention.synonyms[0].0, "log.retention.hours");
        let cleanup = find(&configs, "cleanup.policy");
        assert_eq!(cleanup.value.as_deref(), Some("delete"));
        assert_eq!(cleanup.source, config_source::DEFAULT_CONFIG);
        assert!(configs.iter().all(|config| !config.read_only));
    }

    #[test]
    fn replication_topic_configs_follow_the_broker_default() {
        let configs = describe_topic(&[], &broker_config(&[]));
        let unclean = find(&configs, "unclean.leader.election.enable");
        assert_eq!(unclean.value.as_deref(), Some("false"));
        assert_eq!(unclean.source, config_source::DEFAULT_CONFIG);
        assert_eq!(unclean.config_type, config_type::BOOLEAN);
        let caching = find(&configs, "write.caching");
        assert_eq!(caching.value.as_deref(), Some("false"));
        let broker = broker_config(&[("unclean.leader.election.enable", "true")]);
        let overrides = vec![("write.caching".to_owned(), "true".to_owned())];
        let configs = describe_topic(&overrides, &broker);
        let unclean = find(&configs, "unclean.leader.election.enable");
        assert_eq!(unclean.value.as_deref(), Some("true"));
        assert_eq!(unclean.source, config_source::STATIC_BROKER_CONFIG);
        let caching = find(&configs, "write.caching");
        assert_eq!(caching.value.as_deref(), Some("true"));
        assert_eq!(caching.source, config_source::DYNAMIC_TOPIC_CONFIG);
        let broker_configs = describe_broker(&broker);
        let lag = find(&broker_configs, "replica.lag.time.max.ms");
        assert_eq!(lag.value.as_deref(), Some("30000"));
        assert_eq!(lag.config_type, config_type::LONG);
        let shutdown = find(&broker_configs, "controlled.shutdown.enable");
        assert_eq!(shutdown.value.as_deref(), Some("true"));
        assert_eq!(shutdown.config_type, config_type::BOOLEAN);
    }

    #[test]
    fn broker_configs_are_read_only_with_explicit_ones_static() {
        let configs = describe_broker(&broker_config(&[("num.partitions", "3")]));
        let partitions = find(&configs, "num.partitions");
        assert_eq!(partitions.value.as_deref(), Some("3"));
        assert_eq!(partitions.source, config_source::STATIC_BROKER_CONFIG);
        let retention = find(&configs, "log.retention.ms");
        assert_eq!(retention.value, None);
        assert_eq!(retention.source, config_source::DEFAULT_CONFIG);
        assert!(configs.iter().all(|config| config.read_only));
    }
}
