//! `fjordctl topics create|list|describe|alter|delete`, after
//! `kafka-topics.sh` (the output of `describe` has the same shape, so tools
//! that grep it keep working).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Subcommand;
use kafka_protocol::messages::metadata_response::MetadataResponsePartition;
use kafka_protocol::messages::MetadataResponse;

use super::ServerArgs;
use crate::client::TopicSpec;
use crate::Error;

/// `fjordctl topics` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// Print every topic's name, one per line, sorted.
    List(ListArgs),
    /// Print partitions, leaders, replicas, ISR and overridden configs.
    Describe(DescribeArgs),
    /// Set or remove topic configs (`IncrementalAlterConfigs`: configs not
    /// named keep their value).
    Alter(AlterArgs),
    /// Delete a topic and its data.
    Delete(DeleteArgs),
}

/// Options of `topics create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to create.
    #[arg(long)]
    pub topic: String,
    /// Partitions; the broker's `num.partitions` when not given.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Replication factor; the broker's `default.replication.factor` when
    /// not given.
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// A topic config, `key=value` (Kafka's names, e.g. `retention.ms=3600000`); repeatable.
    #[arg(long = "config", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
    /// Succeed when the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
}

/// Options of `topics list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Options of `topics describe`.
#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to describe; every topic when not given.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only the partitions whose leader is not available (none, or not a
    /// live broker), without the topic lines, as kafka-topics.
    #[arg(long)]
    pub unavailable_partitions: bool,
    /// Only the partitions with fewer in-sync replicas than replicas,
    /// without the topic lines, as kafka-topics.
    #[arg(long)]
    pub under_replicated_partitions: bool,
    /// Also each replica's lag: how many offsets its log ends behind the
    /// leader's (`Lag: broker:offsets`, `?` for a replica whose broker did
    /// not answer), asked of every replica's broker.
    #[arg(long)]
    pub replica_lag: bool,
}

/// Options of `topics alter`.
#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to alter.
    #[arg(long)]
    pub topic: String,
    /// A config to set, `key=value`; repeatable.
    #[arg(long = "config", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
    /// A config to remove (back to the broker default); repeatable.
    #[arg(long = "delete-config")]
    pub delete_configs: Vec<String>,
}

/// Options of `topics delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to delete.
    #[arg(long)]
    pub topic: String,
}

/// `key=value` as a pair.
///
/// # Errors
/// [`Error::Usage`], which clap prints, when there is no `=` or the key is
/// empty.
pub fn parse_config(text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(Error::Usage(format!("expected key=value, got `{text}`"))),
    }
}

/// Runs a `topics` subcommand, printing its result on stdout.
///
/// # Errors
/// Connection failures and the broker's errors, as one line.
pub fn run(command: &TopicsCommand) -> Result<bool, Error> {
    match command {
        TopicsCommand::Create(args) => {
            let spec = TopicSpec {
                partitions: args.partitions.unwrap_or(-1),
                replication_factor: args.replication_factor.unwrap_or(-1),
                configs: args.configs.clone(),
            };
            args.server
                .connect()?
                .create_topic(&args.topic, &spec, args.if_not_exists)?;
            println!("Created topic {}.", args.topic);
        }
        TopicsCommand::List(args) => {
            for name in topic_names(&args.server)? {
                println!("{name}");
            }
        }
        TopicsCommand::Describe(args) => print!("{}", describe(args)?),
        TopicsCommand::Alter(args) => {
            if args.configs.is_empty() && args.delete_configs.is_empty() {
                return Err(Error::Usage(
                    "topics alter needs --config or --delete-config".to_owned(),
                ));
            }
            args.server.connect()?.alter_topic_configs(
                &args.topic,
                &args.configs,
                &args.delete_configs,
            )?;
            println!("Altered topic {}.", args.topic);
        }
        TopicsCommand::Delete(args) => {
            args.server
                .connect()?
                .delete_topics(std::slice::from_ref(&args.topic))?;
            println!("Deleted topic {}.", args.topic);
        }
    }
    Ok(true)
}

fn topic_names(server: &ServerArgs) -> Result<Vec<String>, Error> {
    let metadata = server.connect()?.metadata(None)?;
    let mut names: Vec<String> = metadata
        .topics
        .iter()
        .filter_map(|topic| topic.name.as_ref().map(|name| name.0.to_string()))
        .collect();
    names.sort();
    Ok(names)
}

/// `kafka-topics --describe` output for one topic or all.
fn describe(args: &DescribeArgs) -> Result<String, Error> {
    let mut client = args.server.connect()?;
    let wanted = args.topic.clone().map(|topic| vec![topic]);
    let metadata = client.metadata(wanted.as_deref())?;
    // Metadata lists the live (unfenced) brokers only.
    let live: Vec<i32> = metadata
        .brokers
        .iter()
        .map(|broker| broker.node_id.0)
        .collect();
    let mut topics: Vec<_> = metadata.topics.iter().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for topic in topics {
        let name = topic
            .name
            .as_ref()
            .map_or_else(String::new, |name| name.0.to_string());
        crate::client::check(&format!("topic {name}"), topic.error_code, None)?;
        let configs = client
            .describe_topic_configs(&name)?
            .into_iter()
            .filter(|entry| entry.is_override)
            .map(|entry| format!("{}={}", entry.name, entry.value.unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(",");
        let mut partitions: Vec<_> = topic.partitions.iter().collect();
        partitions.sort_by_key(|partition| partition.partition_index);
        let replication_factor = partitions
            .first()
            .map_or(0, |partition| partition.replica_nodes.len());
        let ids = |nodes: &[kafka_protocol::messages::BrokerId]| {
            nodes
                .iter()
                .map(|node| node.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let filtered = args.unavailable_partitions || args.under_replicated_partitions;
        if !filtered {
            writeln!(
                out,
                "Topic: {name}\tPartitionCount: {}\tReplicationFactor: {replication_factor}\tConfigs: {configs}",
                partitions.len()
            )
            .expect("writing to a String");
        }
        let log_ends = if args.replica_lag {
            replica_log_ends(&mut client, &metadata, &name, &partitions)
        } else {
            BTreeMap::new()
        };
        for partition in partitions {
            let unavailable = !live.contains(&partition.leader_id.0);
            let under_replicated = partition.isr_nodes.len() < partition.replica_nodes.len();
            if (args.unavailable_partitions && !unavailable)
                || (args.under_replicated_partitions && !under_replicated)
            {
                continue;
            }
            write!(
                out,
                "\tTopic: {name}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
                partition.partition_index,
                partition.leader_id.0,
                ids(&partition.replica_nodes),
                ids(&partition.isr_nodes)
            )
            .expect("writing to a String");
            if args.replica_lag {
                write!(out, "\tLag: {}", replica_lags(partition, &log_ends))
                    .expect("writing to a String");
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// The log end of every replica of `partitions` of `topic`, by broker
/// and partition, asked of each broker that holds some (any replica
/// answers the debugging replica id); a broker that does not answer is
/// left out.
fn replica_log_ends(
    client: &mut crate::client::Client,
    metadata: &MetadataResponse,
    topic: &str,
    partitions: &[&MetadataResponsePartition],
) -> BTreeMap<i32, BTreeMap<i32, i64>> {
    let mut log_ends = BTreeMap::new();
    for broker in &metadata.brokers {
        let held: Vec<i32> = partitions
            .iter()
            .filter(|partition| partition.replica_nodes.contains(&broker.node_id))
            .map(|partition| partition.partition_index)
            .collect();
        if held.is_empty() {
            continue;
        }
        let address = format!("{}:{}", broker.host, broker.port);
        let answered = client
            .connection_to(&address)
            .and_then(|connection| crate::client::replica_log_ends(connection, topic, &held));
        if let Ok(ends) = answered {
            log_ends.insert(broker.node_id.0, ends);
        }
    }
    log_ends
}

/// `broker:lag` for each replica of `partition`, in replica order: how far
/// its log end is behind the leader's; `?` where either is unknown.
fn replica_lags(
    partition: &MetadataResponsePartition,
    log_ends: &BTreeMap<i32, BTreeMap<i32, i64>>,
) -> String {
    let log_end = |broker: i32| {
        log_ends
            .get(&broker)
            .and_then(|ends| ends.get(&partition.partition_index))
            .copied()
    };
    let leader_end = log_end(partition.leader_id.0);
    partition
        .replica_nodes
        .iter()
        .map(|replica| match (leader_end, log_end(replica.0)) {
            (Some(leader), Some(end)) => format!("{}:{}", replica.0, (leader - end).max(0)),
            _ => format!("{}:?", replica.0),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lags_count_from_the_leaders_log_end() {
        use kafka_protocol::messages::BrokerId;

        let partition = MetadataResponsePartition::default()
            .with_partition_index(0)
            .with_leader_id(BrokerId(1))
            .with_replica_nodes(vec![BrokerId(1), BrokerId(2), BrokerId(3)]);
        let log_ends = BTreeMap::from([
            (1, BTreeMap::from([(0, 100)])),
            (2, BTreeMap::from([(0, 100)])),
            (3, BTreeMap::from([(0, 85)])),
        ]);
        assert_eq!(replica_lags(&partition, &log_ends), "1:0,2:0,3:15");
        let without_leader = BTreeMap::from([(3, BTreeMap::from([(0, 85)]))]);
        assert_eq!(replica_lags(&partition, &without_leader), "1:?,2:?,3:?");
    }

    #[test]
    fn configs_are_key_equals_value() {
        assert_eq!(
            parse_config("retention.ms=1000").unwrap(),
            ("retention.ms".to_owned(), "1000".to_owned())
        );
        assert_eq!(
            parse_config("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert!(parse_config("novalue").is_err());
        assert!(parse_config("=x").is_err());
    }
}
