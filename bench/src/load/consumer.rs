//! One workload consumer: a Fetch loop over its share of a topic's
//! partitions from offset 0 (the topics are new), decoding every record
//! (decompressing if needed, as a real consumer must) and recording its
//! end-to-end latency from the stamp the producer wrote into the value.
//!
//! Its share is a fixed split of the partitions, or, with
//! `useConsumerGroup`, what the topic's consumer group assigns it: then it
//! starts at the group's committed offsets, commits after every Fetch,
//! heartbeats every 3 s and rejoins when the group rebalances, as a Kafka
//! consumer in a subscription does (OMB's setup).

use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;

use fjord_tools::client::group::{GroupMember, Membership, TopicPartition, HEARTBEAT_INTERVAL};
use fjord_tools::client::records::decode_fetched;
use fjord_tools::client::{fetch, fetch_request, Client, Connection, FetchLimits};

use super::run::{Clock, Meter};
use super::STAMP_BYTES;
use crate::engine::BenchResult;
use crate::wire::CLIENT_ID;

/// Fetch limits: a consumer holds at most `max_bytes` of one response.
const FETCH_LIMITS: FetchLimits = FetchLimits {
    max_wait_ms: 100,
    max_bytes: 32 << 20,
    partition_max_bytes: 1 << 20,
};

/// What one consumer does.
pub struct ConsumerPlan {
    /// The partitions' leader.
    pub address: String,
    /// The topic read.
    pub topic: String,
    /// This consumer's partitions, when it is in no group.
    pub partitions: Vec<i32>,
    /// The consumer group to join instead of taking `partitions`.
    pub group: Option<String>,
    /// Run timing; the consumer stops at `clock.drained`.
    pub clock: Clock,
    /// End-to-end counts and latency.
    pub meter: Arc<Meter>,
}

/// Runs one consumer until the clock's drain deadline.
///
/// # Errors
/// Connection, protocol and broker errors, or a record too short to carry
/// a stamp (something else wrote to the topic).
pub fn run(plan: &ConsumerPlan) -> BenchResult<()> {
    let mut connection = Connection::open(&plan.address, CLIENT_ID)?;
    let mut group = match &plan.group {
        Some(group) => {
            let mut client = Client::connect(&plan.address, CLIENT_ID)?;
            let (member, assigned) =
                GroupMember::join(&mut client, group, std::slice::from_ref(&plan.topic))?;
            Some((client, member, assigned))
        }
        None => None,
    };
    let mut positions: Vec<(i32, i64)> = match &mut group {
        Some((_, member, assigned)) => group_positions(member, &plan.topic, assigned)?,
        None => plan.partitions.iter().map(|p| (*p, 0)).collect(),
    };
    let mut stamps = Vec::new();
    let mut last_heartbeat = Instant::now();
    while Instant::now() < plan.clock.drained {
        let request = fetch_request(&plan.topic, &positions, FETCH_LIMITS);
        let response = fetch(&mut connection, &request)?;
        for partition in response
            .responses
            .iter()
            .flat_map(|topic| &topic.partitions)
        {
            let Some(position) = positions
                .iter_mut()
                .find(|(index, _)| *index == partition.partition_index)
            else {
                continue;
            };
            let records = decode_fetched(partition.records.as_deref().unwrap_or(&[]), position.1)?;
            stamps.clear();
            let mut bytes = 0u64;
            for record in &records {
                let value = record.value.as_deref().unwrap_or(&[]);
                let stamp: [u8; STAMP_BYTES] = value
                    .get(..STAMP_BYTES)
                    .and_then(|stamp| stamp.try_into().ok())
                    .ok_or(crate::Error::Measurement(
                        "a record without a stamp: the topic is not this run's",
                    ))?;
                stamps.push(u64::from_be_bytes(stamp));
                bytes += value.len() as u64;
                position.1 = record.offset + 1;
            }
            if !stamps.is_empty() {
                let now = plan.clock.stamp(Instant::now());
                plan.meter.record_bytes(&stamps, now, bytes);
            }
        }
        if let Some((client, member, _)) = &mut group {
            let mut membership = member.commit(&committable(&plan.topic, &positions))?;
            if last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
                last_heartbeat = Instant::now();
                if member.heartbeat()? == Membership::Rejoin {
                    membership = Membership::Rejoin;
                }
            }
            if membership == Membership::Rejoin {
                let assigned = member.rejoin(client)?;
                positions = group_positions(member, &plan.topic, &assigned)?;
            }
        }
    }
    if let Some((_, mut member, _)) = group {
        member.commit(&committable(&plan.topic, &positions))?;
        member.leave()?;
    }
    Ok(())
}

/// The assigned partitions of `topic` from the group's committed offsets,
/// or 0 (the run's topics are new).
fn group_positions(
    member: &mut GroupMember,
    topic: &str,
    assigned: &[TopicPartition],
) -> BenchResult<Vec<(i32, i64)>> {
    let committed = member.committed(assigned)?;
    Ok(assigned
        .iter()
        .filter(|(assigned_topic, _)| assigned_topic == topic)
        .map(|key| (key.1, committed.get(key).copied().unwrap_or(0)))
        .collect())
}

/// Positions as the offsets a group commits.
fn committable(topic: &str, positions: &[(i32, i64)]) -> BTreeMap<TopicPartition, i64> {
    positions
        .iter()
        .map(|(partition, offset)| ((topic.to_owned(), *partition), *offset))
        .collect()
}
