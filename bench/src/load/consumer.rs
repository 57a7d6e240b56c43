//! One workload consumer: a Fetch loop over its share of a topic's
//! partitions from offset 0 (the topics are new), decoding every record
//! (decompressing if needed, as a real consumer must) and recording its
//! end-to-end latency from the stamp the producer wrote into the value.

use std::sync::Arc;
use std::time::Instant;

use fjord_tools::client::records::decode_fetched;
use fjord_tools::client::{fetch, fetch_request, Connection, FetchLimits};

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
    /// This consumer's partitions.
    pub partitions: Vec<i32>,
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
    let mut positions: Vec<(i32, i64)> = plan.partitions.iter().map(|p| (*p, 0)).collect();
    let mut stamps = Vec::new();
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
                let stamp = value
                    .get(..STAMP_BYTES)
                    .ok_or("a record without a stamp: the topic is not this run's")?;
                stamps.push(u64::from_be_bytes(stamp.try_into()?));
                bytes += value.len() as u64;
                position.1 = record.offset + 1;
            }
            if !stamps.is_empty() {
                let now = plan.clock.stamp(Instant::now());
                plan.meter.record_bytes(&stamps, now, bytes);
            }
        }
    }
    Ok(())
}
