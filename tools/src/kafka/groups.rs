//! `fjordctl groups list|describe|reset-offsets|delete`, after
//! `kafka-consumer-groups.sh`: `describe` prints Kafka's columns (current
//! offset, log end offset and lag per partition, with the member that owns
//! it), and `reset-offsets` is a dry run that prints the plan unless
//! `--execute` is given, and refuses a group with active members.

use std::collections::BTreeMap;

use clap::Subcommand;

use super::ServerArgs;
use crate::client::group::TopicPartition;
use crate::client::{list_offsets, Client, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use crate::Error;

/// `fjordctl groups` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Print every consumer group and its state.
    List(ListArgs),
    /// Print a group's state, and per partition its committed offset, log
    /// end offset, lag and owner.
    Describe(GroupArgs),
    /// Move a group's committed offsets (dry run unless --execute).
    ResetOffsets(ResetOffsetsArgs),
    /// Delete a group that has no members, with its committed offsets.
    Delete(GroupArgs),
}

/// Options of `groups list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Options naming one group.
#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
}

/// Where `reset-offsets` moves the offsets.
#[derive(clap::Args, Debug, Clone, Copy)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// Each partition's log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// Each partition's log end offset.
    #[arg(long)]
    pub to_latest: bool,
    /// This offset (clamped into each partition's log).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// The committed offset plus this (negative moves back), clamped.
    #[arg(long, allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
}

/// Options of `groups reset-offsets`.
#[derive(clap::Args, Debug)]
pub struct ResetOffsetsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The consumer group.
    #[arg(long)]
    pub group: String,
    /// The topic whose partitions are reset.
    #[arg(long)]
    pub topic: String,
    #[command(flatten)]
    pub target: ResetTarget,
    /// Commit the new offsets; without it only the plan is printed.
    #[arg(long)]
    pub execute: bool,
}

/// Runs a `groups` subcommand.
///
/// # Errors
/// A broker without group support, connection failures and the broker's
/// errors, as one line.
pub fn run(command: &GroupsCommand) -> Result<bool, Error> {
    match command {
        GroupsCommand::List(args) => {
            let mut client = args.server.connect()?;
            client.supports_groups()?;
            for (group, state) in client.list_groups()? {
                println!("{group}\t{state}");
            }
        }
        GroupsCommand::Describe(args) => print!("{}", describe(args)?),
        GroupsCommand::ResetOffsets(args) => print!("{}", reset_offsets(args)?),
        GroupsCommand::Delete(args) => {
            let mut client = args.server.connect()?;
            client.supports_groups()?;
            client.delete_group(&args.group)?;
            println!("Deleted group {}.", args.group);
        }
    }
    Ok(true)
}

/// Log start or end offsets of `partitions`, asked of their leaders.
fn log_offsets(
    client: &mut Client,
    partitions: &[TopicPartition],
    timestamp: i64,
) -> Result<BTreeMap<TopicPartition, i64>, Error> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut offsets = BTreeMap::new();
    for (topic, wanted) in by_topic {
        let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for leader in client.partition_leaders(topic, None)? {
            if wanted.contains(&leader.partition) {
                by_leader
                    .entry(leader.address)
                    .or_default()
                    .push(leader.partition);
            }
        }
        for (address, partitions) in by_leader {
            let found = list_offsets(
                client.connection_to(&address)?,
                topic,
                &partitions,
                timestamp,
            )?;
            offsets.extend(
                found
                    .into_iter()
                    .map(|(partition, offset)| ((topic.to_owned(), partition), offset)),
            );
        }
    }
    Ok(offsets)
}

/// `kafka-consumer-groups --describe` output.
fn describe(args: &GroupArgs) -> Result<String, Error> {
    use std::fmt::Write as _;
    let mut client = args.server.connect()?;
    client.supports_groups()?;
    let description = client.describe_group(&args.group)?;
    let committed = client.committed_offsets(&args.group, None)?;
    let mut owners: BTreeMap<TopicPartition, (&str, &str, &str)> = BTreeMap::new();
    for member in &description.members {
        for partition in &member.partitions {
            owners.insert(
                partition.clone(),
                (&member.member_id, &member.host, &member.client_id),
            );
        }
    }
    let mut partitions: Vec<TopicPartition> =
        committed.keys().chain(owners.keys()).cloned().collect();
    partitions.sort();
    partitions.dedup();
    let ends = log_offsets(&mut client, &partitions, LATEST_TIMESTAMP)?;
    let mut out = format!(
        "Group {} is {} with {} members.\n\n",
        description.group,
        description.state,
        description.members.len()
    );
    writeln!(
        out,
        "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10} {:<40} {:<16} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    )
    .expect("writing to a String");
    for partition in &partitions {
        let current = committed.get(partition);
        let end = ends.get(partition);
        let lag = match (current, end) {
            (Some(current), Some(end)) => (end - current).max(0).to_string(),
            _ => "-".to_owned(),
        };
        let (member, host, client_id) = owners.get(partition).copied().unwrap_or(("-", "-", "-"));
        writeln!(
            out,
            "{:<24} {:<24} {:>9} {:>15} {:>15} {:>10} {:<40} {:<16} {client_id}",
            description.group,
            partition.0,
            partition.1,
            current.map_or_else(|| "-".to_owned(), ToString::to_string),
            end.map_or_else(|| "-".to_owned(), ToString::to_string),
            lag,
            member,
            host,
        )
        .expect("writing to a String");
    }
    Ok(out)
}

/// The new offset of one partition: `target` within `[start, end]`.
#[must_use]
pub fn reset_offset(target: ResetTarget, current: Option<i64>, start: i64, end: i64) -> i64 {
    let wanted = if target.to_earliest {
        start
    } else if target.to_latest {
        end
    } else if let Some(offset) = target.to_offset {
        offset
    } else {
        current.unwrap_or(end) + target.shift_by.unwrap_or(0)
    };
    wanted.clamp(start, end)
}

fn reset_offsets(args: &ResetOffsetsArgs) -> Result<String, Error> {
    use std::fmt::Write as _;
    let mut client = args.server.connect()?;
    client.supports_groups()?;
    let description = client.describe_group(&args.group)?;
    if !description.members.is_empty() {
        return Err(Error::Usage(format!(
            "group {} has {} active members ({}): offsets can only be reset while it is empty",
            args.group,
            description.members.len(),
            description.state
        )));
    }
    let partitions: Vec<TopicPartition> = client
        .partition_leaders(&args.topic, None)?
        .iter()
        .map(|leader| (args.topic.clone(), leader.partition))
        .collect();
    let committed = client.committed_offsets(&args.group, Some(&partitions))?;
    let starts = log_offsets(&mut client, &partitions, EARLIEST_TIMESTAMP)?;
    let ends = log_offsets(&mut client, &partitions, LATEST_TIMESTAMP)?;
    let plan: BTreeMap<TopicPartition, i64> = partitions
        .iter()
        .map(|partition| {
            let offset = reset_offset(
                args.target,
                committed.get(partition).copied(),
                starts[partition],
                ends[partition],
            );
            (partition.clone(), offset)
        })
        .collect();
    if args.execute {
        client.commit_offsets_as_admin(&args.group, &plan)?;
    }
    let mut out = format!(
        "{:<24} {:<24} {:>9} {:>15}\n",
        "GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"
    );
    for ((topic, partition), offset) in &plan {
        writeln!(
            out,
            "{:<24} {topic:<24} {partition:>9} {offset:>15}",
            args.group
        )
        .expect("writing to a String");
    }
    if !args.execute {
        out.push_str("(dry run: add --execute to commit these offsets)\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ResetTarget {
        ResetTarget {
            to_earliest: false,
            to_latest: false,
            to_offset: None,
            shift_by: None,
        }
    }

    #[test]
    fn reset_targets_stay_inside_the_log() {
        let earliest = ResetTarget {
            to_earliest: true,
            ..target()
        };
        assert_eq!(reset_offset(earliest, Some(50), 10, 100), 10);
        let latest = ResetTarget {
            to_latest: true,
            ..target()
        };
        assert_eq!(reset_offset(latest, None, 10, 100), 100);
        let offset = |to| ResetTarget {
            to_offset: Some(to),
            ..target()
        };
        assert_eq!(reset_offset(offset(5), None, 10, 100), 10);
        assert_eq!(reset_offset(offset(500), None, 10, 100), 100);
        let shift = |by| ResetTarget {
            shift_by: Some(by),
            ..target()
        };
        assert_eq!(reset_offset(shift(-20), Some(50), 10, 100), 30);
        assert_eq!(reset_offset(shift(-20), None, 10, 100), 80);
    }
}
