//! `fjordctl produce`: one record per stdin line, like
//! `kafka-console-producer.sh`, with its `--property` names: `parse.key`,
//! `key.separator`, `parse.headers`, `headers.delimiter`,
//! `headers.separator`, `headers.key.separator`, `null.marker`.
//!
//! Lines are batched per partition up to `--batch-size` records, and a
//! batch is sent when full, at end of input, or after every line with
//! `--sync`. Partitions come from `--partition`, else Kafka's default
//! partitioner for keyed records (murmur2 of the key, so a key lands where a
//! Java producer would put it), else round robin per batch.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse};

use super::ServerArgs;
use crate::client::records::{encode_batch, Codec, OutgoingRecord};
use crate::client::{produce_request, produce_result, PartitionLeader, PRODUCE_VERSION};
use crate::Error;

/// The largest `--batch-size`: a bound on the records held in memory per
/// partition.
pub const BATCH_SIZE_MAX: usize = 100_000;

/// Options of `fjordctl produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The topic to write.
    #[arg(long)]
    pub topic: String,
    /// Write every record to this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// `acks`: 0, 1, -1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks, allow_hyphen_values = true)]
    pub acks: i16,
    /// Compression of each batch.
    #[arg(long, value_enum, default_value = "none")]
    pub compression_codec: Codec,
    /// Records per batch (at most 100000).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Send each line as soon as it is read.
    #[arg(long)]
    pub sync: bool,
    /// A line-reader property, `name=value`: `parse.key=true`,
    /// `key.separator=:` (default a tab), `parse.headers=true`,
    /// `headers.delimiter` (tab), `headers.separator` (`,`),
    /// `headers.key.separator` (`:`), `null.marker`; repeatable.
    #[arg(long = "property", value_parser = super::topics::parse_config)]
    pub properties: Vec<(String, String)>,
}

/// How a line becomes a record: `kafka-console-producer`'s line reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineFormat {
    parse_key: bool,
    key_separator: String,
    parse_headers: bool,
    headers_delimiter: String,
    headers_separator: String,
    headers_key_separator: String,
    null_marker: Option<String>,
}

impl LineFormat {
    /// The format `properties` describe.
    ///
    /// # Errors
    /// [`Error::Usage`] for an unknown property, a boolean that is neither
    /// `true` nor `false`, or an empty separator.
    pub fn from_properties(properties: &[(String, String)]) -> Result<Self, Error> {
        let mut format = Self {
            parse_key: false,
            key_separator: "\t".to_owned(),
            parse_headers: false,
            headers_delimiter: "\t".to_owned(),
            headers_separator: ",".to_owned(),
            headers_key_separator: ":".to_owned(),
            null_marker: None,
        };
        for (name, value) in properties {
            let flag = || match value.as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Error::Usage(format!("--property {name} is true or false"))),
            };
            let separator = || {
                if value.is_empty() {
                    Err(Error::Usage(format!("--property {name} may not be empty")))
                } else {
                    Ok(value.clone())
                }
            };
            match name.as_str() {
                "parse.key" => format.parse_key = flag()?,
                "key.separator" => format.key_separator = separator()?,
                "parse.headers" => format.parse_headers = flag()?,
                "headers.delimiter" => format.headers_delimiter = separator()?,
                "headers.separator" => format.headers_separator = separator()?,
                "headers.key.separator" => format.headers_key_separator = separator()?,
                "null.marker" => format.null_marker = Some(value.clone()),
                _ => return Err(Error::Usage(format!("unknown --property {name}"))),
            }
        }
        Ok(format)
    }

    /// The record `line` (without its newline) describes.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the line number when a key or headers
    /// separator is missing, as Kafka's reader refuses such a line.
    pub fn parse(&self, line: &str, line_number: u64) -> Result<OutgoingRecord, Error> {
        let missing = |what: &str, separator: &str| {
            Error::Usage(format!(
                "line {line_number}: no {what} separator `{}` in `{line}`",
                separator.escape_default()
            ))
        };
        let bytes = |text: &str| {
            (self.null_marker.as_deref() != Some(text))
                .then(|| Bytes::copy_from_slice(text.as_bytes()))
        };
        let mut rest = line;
        let mut headers = Vec::new();
        if self.parse_headers {
            let (header_text, after) = rest
                .split_once(self.headers_delimiter.as_str())
                .ok_or_else(|| missing("headers", &self.headers_delimiter))?;
            rest = after;
            for header in header_text
                .split(self.headers_separator.as_str())
                .filter(|header| !header.is_empty())
            {
                let (key, value) = header
                    .split_once(self.headers_key_separator.as_str())
                    .ok_or_else(|| missing("header key", &self.headers_key_separator))?;
                headers.push((key.to_owned(), bytes(value)));
            }
        }
        let key = if self.parse_key {
            let (key, value) = rest
                .split_once(self.key_separator.as_str())
                .ok_or_else(|| missing("key", &self.key_separator))?;
            rest = value;
            bytes(key)
        } else {
            None
        };
        Ok(OutgoingRecord {
            key,
            value: bytes(rest),
            headers,
        })
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), which
/// the default partitioner hashes keys with.
///
/// # Panics
/// Never: `chunks_exact(4)` yields 4-byte chunks.
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among
/// `partitions`.
#[must_use]
pub fn partition_for_key(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions
}

/// `acks` from `0`, `1`, `-1` or `all`.
///
/// # Errors
/// [`Error::Usage`] otherwise, which clap prints.
pub fn parse_acks(text: &str) -> Result<i16, Error> {
    match text {
        "all" | "-1" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(Error::Usage(format!(
            "acks is 0, 1, -1 or all, not `{text}`"
        ))),
    }
}

/// Runs `fjordctl produce`, reading stdin to its end.
///
/// # Errors
/// A malformed line, connection failures and the broker's errors.
pub fn run(args: &ProduceArgs) -> Result<bool, Error> {
    let format = LineFormat::from_properties(&args.properties)?;
    let mut client = args.server.connect()?;
    let leaders = client.partition_leaders(&args.topic, None)?;
    if let Some(partition) = args.partition {
        if !leaders.iter().any(|leader| leader.partition == partition) {
            return Err(Error::Usage(format!(
                "topic {} has no partition {partition}",
                args.topic
            )));
        }
    }
    let mut producer = Producer {
        client: &mut client,
        args,
        leaders: &leaders,
        pending: BTreeMap::new(),
        next_round_robin: 0,
        unkeyed_partition: None,
    };
    let batch_size = if args.sync {
        1
    } else {
        args.batch_size as usize
    };
    let stdin = std::io::stdin().lock();
    for (index, line) in stdin.lines().enumerate() {
        let line = line.map_err(|source| Error::Stdio {
            what: "reading stdin",
            source,
        })?;
        let record = format.parse(&line, index as u64 + 1)?;
        producer.add(record, batch_size)?;
    }
    producer.flush_all()
}

/// Records waiting per partition, at most `batch_size` each.
struct Producer<'a> {
    client: &'a mut crate::client::Client,
    args: &'a ProduceArgs,
    leaders: &'a [PartitionLeader],
    pending: BTreeMap<usize, Vec<OutgoingRecord>>,
    next_round_robin: usize,
    /// Where unkeyed records go until that batch is sent.
    unkeyed_partition: Option<usize>,
}

impl Producer<'_> {
    fn add(&mut self, record: OutgoingRecord, batch_size: usize) -> Result<(), Error> {
        let index = match (self.args.partition, &record.key) {
            (Some(partition), _) => self
                .leaders
                .iter()
                .position(|leader| leader.partition == partition)
                .expect("checked at start"),
            (None, Some(key)) => partition_for_key(key, self.leaders.len()),
            (None, None) => *self.unkeyed_partition.get_or_insert_with(|| {
                let index = self.next_round_robin % self.leaders.len();
                self.next_round_robin += 1;
                index
            }),
        };
        let batch = self.pending.entry(index).or_default();
        batch.push(record);
        if batch.len() >= batch_size {
            self.send(index)?;
        }
        Ok(())
    }

    fn send(&mut self, index: usize) -> Result<(), Error> {
        let Some(records) = self.pending.remove(&index) else {
            return Ok(());
        };
        if self.unkeyed_partition == Some(index) {
            self.unkeyed_partition = None;
        }
        let leader = &self.leaders[index];
        let batch = encode_batch(&records, now_ms(), self.args.compression_codec)?;
        let request = produce_request(&self.args.topic, leader.partition, self.args.acks, batch);
        let connection = self.client.connection_to(&leader.address)?;
        if self.args.acks == 0 {
            let (_, frame) = connection.frame(ApiKey::Produce, PRODUCE_VERSION, &request)?;
            return connection.send_frame(&frame);
        }
        let response: ProduceResponse =
            connection.call(ApiKey::Produce, PRODUCE_VERSION, &request)?;
        produce_result(&response).map(drop)
    }

    fn flush_all(mut self) -> Result<bool, Error> {
        let waiting: Vec<usize> = self.pending.keys().copied().collect();
        for index in waiting {
            self.send(index)?;
        }
        Ok(true)
    }
}

/// Milliseconds since the Unix epoch.
///
/// # Panics
/// If the clock is before 1970.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        for (data, expected) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    fn format(properties: &[(&str, &str)]) -> LineFormat {
        let properties: Vec<(String, String)> = properties
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        LineFormat::from_properties(&properties).unwrap()
    }

    #[test]
    fn lines_become_records_like_the_console_producer_reads_them() {
        let plain = format(&[]).parse("a:b", 1).unwrap();
        assert_eq!(plain.key, None);
        assert_eq!(plain.value.as_deref(), Some(&b"a:b"[..]));

        let keyed = format(&[("parse.key", "true"), ("key.separator", ":")]);
        let record = keyed.parse("k:v:w", 1).unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"v:w"[..]));
        assert!(keyed
            .parse("no separator", 7)
            .unwrap_err()
            .to_string()
            .contains("line 7"));

        let with_headers = format(&[
            ("parse.headers", "true"),
            ("parse.key", "true"),
            ("null.marker", "NULL"),
        ]);
        let record = with_headers.parse("h1:v1,h2:NULL\tkey\tNULL", 1).unwrap();
        assert_eq!(
            record.headers,
            [
                ("h1".to_owned(), Some(Bytes::from_static(b"v1"))),
                ("h2".to_owned(), None)
            ]
        );
        assert_eq!(record.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(record.value, None);
    }

    #[test]
    fn unknown_properties_and_bad_acks_are_refused() {
        assert!(LineFormat::from_properties(&[("nope".to_owned(), "1".to_owned())]).is_err());
        assert!(
            LineFormat::from_properties(&[("parse.key".to_owned(), "yes".to_owned())]).is_err()
        );
        assert_eq!(parse_acks("all").ok(), Some(-1));
        assert!(parse_acks("2").is_err());
    }
}
