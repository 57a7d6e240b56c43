//! `fjordctl consume`: print records, like `kafka-console-consumer.sh`.
//! Without a group: every partition of the topic (or `--partition`), from
//! the end by default, `--from-beginning`, `--offset`, or the first record
//! at or after `--timestamp`. With `--group`: the partitions the group
//! assigns, from its committed offsets, committing after every Fetch,
//! heartbeating every 3 s and rejoining when the group rebalances.
//!
//! It stops after `--max-messages` records, or when `--timeout-ms` passes
//! without a new record (then printing, as Kafka's tool does, how many it
//! processed on stderr); without either it follows the topic until killed.
//! Output is flushed after every Fetch, so a pipe sees records as they come.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::records::{Record, TimestampType};
use serde_json::json;

use super::ServerArgs;
use crate::client::group::{GroupMember, Membership, TopicPartition, HEARTBEAT_INTERVAL};
use crate::client::records::decode_fetched;
use crate::client::{
    fetch, fetch_request, list_offsets, Client, FetchLimits, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
use crate::Error;

/// Fetch limits: at most this much data in memory per Fetch.
const FETCH_LIMITS: FetchLimits = FetchLimits {
    max_wait_ms: 500,
    max_bytes: 16 << 20,
    partition_max_bytes: 1 << 20,
};

/// How each record is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The value alone (`null` for a null value).
    Value,
    /// Key, a tab, then the value.
    KeyValue,
    /// One JSON object per line: topic, partition, offset, timestamp,
    /// timestamp type, key, value, headers (bytes as lossy UTF-8).
    Json,
}

/// Where to start in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start offset.
    Earliest,
    /// The log end offset: only records written from now on.
    Latest,
    /// This offset.
    At(i64),
}

/// `earliest`, `latest` or a non-negative offset.
///
/// # Errors
/// [`Error::Usage`] otherwise, which clap prints.
pub fn parse_offset(text: &str) -> Result<StartOffset, Error> {
    match text {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        number => number
            .parse::<i64>()
            .ok()
            .filter(|offset| *offset >= 0)
            .map(StartOffset::At)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "offset is earliest, latest or a number >= 0, not `{text}`"
                ))
            }),
    }
}

/// Options of `fjordctl consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to read.
    #[arg(long)]
    pub topic: String,
    /// Read only this partition.
    #[arg(long, conflicts_with = "group")]
    pub partition: Option<i32>,
    /// Consume as a member of this consumer group: partitions come from
    /// the group's assignment, reading starts at its committed offsets (or
    /// the end, or the beginning with --from-beginning, where it has none),
    /// and offsets are committed after every Fetch and on exit.
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub group: Option<String>,
    /// Start at each partition's log start (same as `--offset earliest`).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    pub from_beginning: bool,
    /// Start at `earliest`, `latest` (the default) or this offset.
    #[arg(long, value_parser = parse_offset, conflicts_with = "timestamp")]
    pub offset: Option<StartOffset>,
    /// Start at the first record whose timestamp is at or after this time
    /// (ms since the epoch); partitions without one start at their end.
    #[arg(long)]
    pub timestamp: Option<i64>,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrives for this long.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// How to print each record.
    #[arg(long, value_enum, default_value = "value")]
    pub format: Format,
}

/// Runs `fjordctl consume`.
///
/// # Errors
/// Connection failures, the broker's errors, a batch that does not decode.
pub fn run(args: &ConsumeArgs) -> Result<bool, Error> {
    let mut client = args.server.connect()?;
    let mut member = match &args.group {
        Some(group) => {
            client.supports_groups()?;
            Some(GroupMember::join(
                &mut client,
                group,
                std::slice::from_ref(&args.topic),
            )?)
        }
        None => None,
    };
    let mut positions = if let Some((member, assigned)) = &mut member {
        group_positions(&mut client, args, member, assigned)?
    } else {
        let by_leader = partitions_by_leader(&mut client, args, None)?;
        start_positions(&mut client, args, &by_leader)?
    };
    let mut last_heartbeat = Instant::now();

    let timeout = args.timeout_ms.map(Duration::from_millis);
    let max_messages = args.max_messages.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut last_record = Instant::now();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    'follow: while printed < max_messages {
        for (address, wanted) in &mut positions {
            let request = fetch_request(&args.topic, wanted, FETCH_LIMITS);
            let response = fetch(client.connection_to(address)?, &request)?;
            for partition in response
                .responses
                .iter()
                .flat_map(|topic| &topic.partitions)
            {
                let Some(position) = wanted
                    .iter_mut()
                    .find(|(index, _)| *index == partition.partition_index)
                else {
                    continue;
                };
                let records =
                    decode_fetched(partition.records.as_deref().unwrap_or(&[]), position.1)?;
                for record in &records {
                    if printed >= max_messages {
                        break 'follow;
                    }
                    position.1 = record.offset + 1;
                    printed += 1;
                    last_record = Instant::now();
                    if !write_record(
                        &mut out,
                        &args.topic,
                        partition.partition_index,
                        record,
                        args.format,
                    )? {
                        break 'follow;
                    }
                }
            }
            if out.flush().is_err() {
                break 'follow;
            }
        }
        if let Some((member, _)) = &mut member {
            let mut membership = member.commit(&committable(args, &positions))?;
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if member.heartbeat()? == Membership::Rejoin {
                    membership = Membership::Rejoin;
                }
            }
            if membership == Membership::Rejoin {
                let assigned = member.rejoin(&mut client)?;
                positions = group_positions(&mut client, args, member, &assigned)?;
            }
        }
        if timeout.is_some_and(|timeout| last_record.elapsed() >= timeout) {
            break;
        }
    }
    // A closed pipe (`| head`) is a normal end, not an error.
    out.flush().ok();
    if let Some((mut member, _)) = member {
        member.commit(&committable(args, &positions))?;
        member.leave()?;
    }
    eprintln!("Processed a total of {printed} messages");
    Ok(true)
}

/// The topic's partitions (all, or only `only`, or `--partition`) grouped
/// by leader address.
fn partitions_by_leader(
    client: &mut Client,
    args: &ConsumeArgs,
    only: Option<&[i32]>,
) -> Result<BTreeMap<String, Vec<i32>>, Error> {
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for leader in client.partition_leaders(&args.topic, None)? {
        let wanted = match (only, args.partition) {
            (Some(only), _) => only.contains(&leader.partition),
            (None, Some(partition)) => leader.partition == partition,
            (None, None) => true,
        };
        if wanted {
            by_leader
                .entry(leader.address)
                .or_default()
                .push(leader.partition);
        }
    }
    if by_leader.is_empty() && only.is_none() {
        return Err(Error::Usage(format!(
            "topic {} has no partition {}",
            args.topic,
            args.partition.unwrap_or_default()
        )));
    }
    Ok(by_leader)
}

/// A group member's positions: the group's committed offsets of its
/// assigned partitions, else the end (or the start with
/// `--from-beginning`), Kafka's `auto.offset.reset`.
fn group_positions(
    client: &mut Client,
    args: &ConsumeArgs,
    member: &mut GroupMember,
    assigned: &[TopicPartition],
) -> Result<BTreeMap<String, Vec<(i32, i64)>>, Error> {
    let partitions: Vec<i32> = assigned
        .iter()
        .filter(|(topic, _)| *topic == args.topic)
        .map(|(_, partition)| *partition)
        .collect();
    let committed = member.committed(assigned)?;
    let by_leader = partitions_by_leader(client, args, Some(&partitions))?;
    let reset = if args.from_beginning {
        EARLIEST_TIMESTAMP
    } else {
        LATEST_TIMESTAMP
    };
    let mut positions = BTreeMap::new();
    for (address, partitions) in by_leader {
        let resets = list_offsets(
            client.connection_to(&address)?,
            &args.topic,
            &partitions,
            reset,
        )?;
        let offsets = resets
            .into_iter()
            .map(|(partition, reset)| {
                let key = (args.topic.clone(), partition);
                (partition, committed.get(&key).copied().unwrap_or(reset))
            })
            .collect();
        positions.insert(address, offsets);
    }
    Ok(positions)
}

/// Every partition's next offset, as a group commits it.
fn committable(
    args: &ConsumeArgs,
    positions: &BTreeMap<String, Vec<(i32, i64)>>,
) -> BTreeMap<TopicPartition, i64> {
    positions
        .values()
        .flatten()
        .map(|(partition, offset)| ((args.topic.clone(), *partition), *offset))
        .collect()
}

/// Each leader's partitions with the offset to start at.
fn start_positions(
    client: &mut Client,
    args: &ConsumeArgs,
    by_leader: &BTreeMap<String, Vec<i32>>,
) -> Result<BTreeMap<String, Vec<(i32, i64)>>, Error> {
    let start = if args.from_beginning {
        StartOffset::Earliest
    } else {
        args.offset.unwrap_or(StartOffset::Latest)
    };
    let mut positions: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for (address, partitions) in by_leader {
        let connection = client.connection_to(address)?;
        let offsets = match (args.timestamp, start) {
            (Some(timestamp), _) => {
                let found = list_offsets(connection, &args.topic, partitions, timestamp)?;
                let ends = list_offsets(connection, &args.topic, partitions, LATEST_TIMESTAMP)?;
                found
                    .into_iter()
                    .map(|(partition, offset)| {
                        (
                            partition,
                            if offset < 0 { ends[&partition] } else { offset },
                        )
                    })
                    .collect()
            }
            (None, StartOffset::Earliest) => {
                list_offsets(connection, &args.topic, partitions, EARLIEST_TIMESTAMP)?
            }
            (None, StartOffset::Latest) => {
                list_offsets(connection, &args.topic, partitions, LATEST_TIMESTAMP)?
            }
            (None, StartOffset::At(offset)) => partitions
                .iter()
                .map(|partition| (*partition, offset))
                .collect(),
        };
        positions.insert(address.clone(), offsets.into_iter().collect());
    }
    Ok(positions)
}

/// Writes one record; `false` when stdout is closed.
fn write_record(
    out: &mut impl Write,
    topic: &str,
    partition: i32,
    record: &Record,
    format: Format,
) -> Result<bool, Error> {
    let text =
        |bytes: Option<&[u8]>| bytes.map(|bytes| String::from_utf8_lossy(bytes).into_owned());
    let line = match format {
        Format::Value => text(record.value.as_deref()).unwrap_or_else(|| "null".to_owned()),
        Format::KeyValue => format!(
            "{}\t{}",
            text(record.key.as_deref()).unwrap_or_else(|| "null".to_owned()),
            text(record.value.as_deref()).unwrap_or_else(|| "null".to_owned())
        ),
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = record
                .headers
                .iter()
                .map(|(key, value)| (key.to_string(), json!(text(value.as_deref()))))
                .collect();
            serde_json::to_string(&json!({
                "topic": topic,
                "partition": partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "timestampType": match record.timestamp_type {
                    TimestampType::Creation => "CreateTime",
                    TimestampType::LogAppend => "LogAppendTime",
                },
                "key": text(record.key.as_deref()),
                "value": text(record.value.as_deref()),
                "headers": headers,
            }))?
        }
    };
    Ok(writeln!(out, "{line}").is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("earliest").ok(), Some(StartOffset::Earliest));
        assert_eq!(parse_offset("latest").ok(), Some(StartOffset::Latest));
        assert_eq!(parse_offset("42").ok(), Some(StartOffset::At(42)));
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("soon").is_err());
    }
}
