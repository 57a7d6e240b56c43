//! `fjord-bench consume`: Fetch requests over TCP as fast as the broker
//! answers.
//!
//! One connection fetches every partition of the topic at once (one Fetch
//! outstanding, no fetch session), starting from each partition's log start
//! offset (`--from beginning`: a catch-up read, from disk unless cached) or
//! its end (`--from end`: records produced while it runs). With `--from
//! beginning` it stops at the end offsets it saw when it started; it also
//! stops after `--total-bytes` or `--duration-secs`. Counted bytes are whole
//! record batches at or past the fetch position.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fjord_tools::client::{
    fetch, fetch_request, list_offsets, Connection, FetchLimits, EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
};
use serde::Serialize;

use super::{partition_leaders, single_leader, ClientArgs, CLIENT_ID};
use crate::engine::{megabytes_per_second, parse_bytes, write_json, BenchResult};

/// Bytes of a record batch header (magic 2).
const BATCH_HEADER_BYTES: usize = 61;

/// Where `consume` starts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// Each partition's log start offset: a catch-up read.
    Beginning,
    /// Each partition's end: only records produced meanwhile.
    End,
}

/// Options of `fjord-bench consume`.
#[derive(clap::Args, Clone, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Where to start reading.
    #[arg(long, value_enum, default_value = "beginning")]
    pub from: StartFrom,
    /// Stop after this many batch bytes.
    #[arg(long, value_parser = parse_bytes)]
    pub total_bytes: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Fetch `max_bytes`.
    #[arg(long, default_value = "50MiB", value_parser = parse_bytes)]
    pub max_bytes: u64,
    /// Fetch `partition_max_bytes`.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub partition_max_bytes: u64,
    /// Fetch `max_wait_ms`.
    #[arg(long, default_value_t = 500)]
    pub max_wait_ms: i32,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of a consume run.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumeReport {
    pub bootstrap_server: String,
    pub topic: String,
    pub from: StartFrom,
    pub partitions: usize,
    /// Batch bytes received at or past the fetch positions.
    pub bytes: u64,
    pub records: u64,
    pub fetches: u64,
    pub seconds: f64,
    pub megabytes_per_second: f64,
    pub records_per_second: f64,
}

impl ConsumeReport {
    /// Prints the report as text.
    pub fn print(&self) {
        println!(
            "consume {} <- {} from {:?}: {} partitions",
            self.bootstrap_server, self.topic, self.from, self.partitions
        );
        println!(
            "  {} bytes in {:.2} s over {} fetches: {:.1} MB/s, {:.0} msg/s",
            self.bytes,
            self.seconds,
            self.fetches,
            self.megabytes_per_second,
            self.records_per_second
        );
    }
}

/// What a Fetch returned for one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchesRead {
    /// Bytes of the whole batches whose last offset is at or past the
    /// position.
    pub bytes: u64,
    /// Their records.
    pub records: u64,
    /// The offset after the last whole batch; `None` without one.
    pub next_offset: Option<i64>,
}

/// Walks the record batches in `records` (a partition's Fetch data), from
/// fetch position `position`; a trailing partial batch is ignored, as a
/// client does (the broker may cut the data at `partition_max_bytes`).
///
/// # Panics
/// Never: every field read lies inside the header length checked first.
#[must_use]
pub fn read_batches(mut records: &[u8], position: i64) -> BatchesRead {
    let mut read = BatchesRead::default();
    while records.len() >= BATCH_HEADER_BYTES {
        let field = |at: usize| i32::from_be_bytes(records[at..at + 4].try_into().expect("4"));
        let base_offset = i64::from_be_bytes(records[..8].try_into().expect("8 bytes"));
        let Ok(length) = usize::try_from(field(8)) else {
            break;
        };
        let total = 12 + length;
        if total < BATCH_HEADER_BYTES || records.len() < total {
            break;
        }
        let next_offset = base_offset + i64::from(field(23)) + 1;
        if next_offset > position {
            read.bytes += total as u64;
            read.records += u64::try_from(field(57)).unwrap_or(0);
            read.next_offset = Some(next_offset);
        }
        records = &records[total..];
    }
    read
}

/// Runs `fjord-bench consume` and prints the result.
///
/// # Errors
/// Connection, protocol or broker errors, a missing topic, or `--from end`
/// without a limit.
pub fn run(args: &ConsumeArgs) -> BenchResult<ConsumeReport> {
    if args.from == StartFrom::End && args.total_bytes.is_none() && args.duration_secs.is_none() {
        return Err(crate::Error::Usage(
            "--from end needs --total-bytes or --duration-secs",
        ));
    }
    let leaders = partition_leaders(&args.client, None)?;
    let address = single_leader(&leaders)?;
    let partitions: Vec<i32> = leaders.iter().map(|leader| leader.partition).collect();
    let mut connection = Connection::open(&address, CLIENT_ID)?;
    let starts = list_offsets(
        &mut connection,
        &args.client.topic,
        &partitions,
        match args.from {
            StartFrom::Beginning => EARLIEST_TIMESTAMP,
            StartFrom::End => LATEST_TIMESTAMP,
        },
    )?;
    let ends = match args.from {
        StartFrom::Beginning => Some(list_offsets(
            &mut connection,
            &args.client.topic,
            &partitions,
            LATEST_TIMESTAMP,
        )?),
        StartFrom::End => None,
    };
    let mut positions = starts;
    let limits = fetch_limits(args)?;
    let deadline = args
        .duration_secs
        .map(Duration::try_from_secs_f64)
        .transpose()?
        .map(|duration| Instant::now() + duration);
    let total_bytes = args.total_bytes.unwrap_or(u64::MAX);
    let (mut bytes, mut records, mut fetches) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    loop {
        let wanted: Vec<(i32, i64)> = positions
            .iter()
            .filter(|(partition, position)| {
                ends.as_ref()
                    .is_none_or(|ends| ends.get(partition).is_some_and(|end| *position < end))
            })
            .map(|(partition, position)| (*partition, *position))
            .collect();
        if wanted.is_empty()
            || bytes >= total_bytes
            || deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            break;
        }
        let request = fetch_request(&args.client.topic, &wanted, limits);
        let response = fetch(&mut connection, &request)?;
        fetches += 1;
        for topic in &response.responses {
            for partition in &topic.partitions {
                let Some(position) = positions.get_mut(&partition.partition_index) else {
                    continue;
                };
                let read = read_batches(partition.records.as_deref().unwrap_or(&[]), *position);
                bytes += read.bytes;
                records += read.records;
                if let Some(next_offset) = read.next_offset {
                    *position = next_offset;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = ConsumeReport {
        bootstrap_server: args.client.bootstrap_server.clone(),
        topic: args.client.topic.clone(),
        from: args.from,
        partitions: partitions.len(),
        bytes,
        records,
        fetches,
        seconds,
        megabytes_per_second: megabytes_per_second(bytes, seconds),
        records_per_second: records as f64 / seconds,
    };
    report.print();
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

fn fetch_limits(args: &ConsumeArgs) -> BenchResult<FetchLimits> {
    Ok(FetchLimits {
        max_wait_ms: args.max_wait_ms,
        max_bytes: i32::try_from(args.max_bytes)?,
        partition_max_bytes: i32::try_from(args.partition_max_bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use fjord_engine::batch::build_batch;
    use fjord_engine::TimestampMs;

    use super::*;

    /// Two batches (offsets 0-2 and 3-4, base offsets rewritten as a broker
    /// stores them), plus the first half of a third.
    fn fetched_records() -> (Vec<u8>, usize, usize) {
        let value = [1u8; 100];
        let three = build_batch(&[(None, Some(&value[..])); 3], TimestampMs(0), None);
        let mut two = build_batch(&[(None, Some(&value[..])); 2], TimestampMs(0), None);
        two[..8].copy_from_slice(&3i64.to_be_bytes());
        let mut records = three.clone();
        records.extend_from_slice(&two);
        records.extend_from_slice(&three[..three.len() / 2]);
        (records, three.len(), two.len())
    }

    #[test]
    fn whole_batches_are_counted_and_a_partial_tail_is_not() {
        let (records, three, two) = fetched_records();
        assert_eq!(
            read_batches(&records, 0),
            BatchesRead {
                bytes: (three + two) as u64,
                records: 5,
                next_offset: Some(5),
            }
        );
    }

    #[test]
    fn batches_before_the_position_are_skipped() {
        let (records, _, two) = fetched_records();
        assert_eq!(
            read_batches(&records, 3),
            BatchesRead {
                bytes: two as u64,
                records: 2,
                next_offset: Some(5),
            }
        );
        assert_eq!(read_batches(&records[..20], 0), BatchesRead::default());
    }
}
