//! `fjord-bench produce|consume`: load over the Kafka protocol, against any
//! Kafka-compatible bootstrap server (fjord, Apache Kafka, Redpanda, ...).
//!
//! Plain std threads with blocking sockets: one connection per producer
//! thread, responses read in request order. The client (framing, metadata,
//! topic creation, `ListOffsets`, Fetch) is fjordctl's, [`fjord_tools::client`],
//! so the operator's tool and the load generator speak the protocol one way.
//! Record batches come from [`fjord_engine::batch::build_batch`]
//! (uncompressed, magic 2).

pub mod consume;
pub mod produce;

use fjord_tools::client::{Client, PartitionLeader, TopicSpec};

use crate::engine::BenchResult;

/// The client id every request carries.
pub const CLIENT_ID: &str = "fjord-bench";

/// Options shared by `produce` and `consume`.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    /// A broker to ask for metadata, `host:port`.
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// The topic to write or read.
    #[arg(long, default_value = "fjord-bench")]
    pub topic: String,
}

/// Every partition of the topic with its leader, creating the topic with
/// `create` if it does not exist.
///
/// # Errors
/// As [`Client::partition_leaders`].
pub fn partition_leaders(
    client: &ClientArgs,
    create: Option<&TopicSpec>,
) -> BenchResult<Vec<PartitionLeader>> {
    Ok(Client::connect(&client.bootstrap_server, CLIENT_ID)?
        .partition_leaders(&client.topic, create)?)
}

/// The one leader of every partition in `leaders`.
///
/// # Errors
/// If the partitions have different leaders: each producer thread keeps a
/// single connection, so a run covers partitions of one broker.
pub fn single_leader(leaders: &[PartitionLeader]) -> BenchResult<String> {
    let first = leaders
        .first()
        .ok_or(crate::Error::Measurement("the topic has no partitions"))?;
    if let Some(other) = leaders
        .iter()
        .find(|leader| leader.address != first.address)
    {
        return Err(crate::Error::SeveralLeaders {
            first_partition: first.partition,
            first_leader: first.address.clone(),
            other_partition: other.partition,
            other_leader: other.address.clone(),
        });
    }
    Ok(first.address.clone())
}

/// The partitions of `leaders` grouped by leader address, in the order
/// the leaders first appear: a run over a cluster gives each leader broker
/// its own producers and consumers (one connection each).
#[must_use]
pub fn by_leader(leaders: &[PartitionLeader]) -> Vec<(String, Vec<i32>)> {
    let mut groups: Vec<(String, Vec<i32>)> = Vec::new();
    for leader in leaders {
        match groups
            .iter_mut()
            .find(|(address, _)| *address == leader.address)
        {
            Some((_, partitions)) => partitions.push(leader.partition),
            None => groups.push((leader.address.clone(), vec![leader.partition])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_grouped_by_leader_in_first_seen_order() {
        let leader = |partition, address: &str| PartitionLeader {
            partition,
            address: address.to_owned(),
        };
        let leaders = [leader(0, "b:1"), leader(1, "a:1"), leader(2, "b:1")];
        assert_eq!(
            by_leader(&leaders),
            vec![("b:1".to_owned(), vec![0, 2]), ("a:1".to_owned(), vec![1])]
        );
    }

    #[test]
    fn one_broker_per_run() {
        let leader = |partition, address: &str| PartitionLeader {
            partition,
            address: address.to_owned(),
        };
        assert_eq!(
            single_leader(&[leader(0, "a:1"), leader(1, "a:1")]).unwrap(),
            "a:1"
        );
        assert!(single_leader(&[leader(0, "a:1"), leader(1, "b:1")]).is_err());
        assert!(single_leader(&[]).is_err());
    }
}
