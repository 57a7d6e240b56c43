//! `fjordctl cluster info`: the cluster id, controller and brokers, from
//! `DescribeCluster` (what `kafka-cluster.sh cluster-id` and
//! `kafka-broker-api-versions.sh` tell between them).

use clap::Subcommand;

use super::ServerArgs;
use crate::Error;

/// `fjordctl cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print the cluster id, the controller and every broker.
    Info(InfoArgs),
}

/// Options of `cluster info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `cluster` subcommand.
///
/// # Errors
/// Connection failures and the broker's errors, as one line.
pub fn run(command: &ClusterCommand) -> Result<bool, Error> {
    let ClusterCommand::Info(args) = command;
    let info = args.server.connect()?.describe_cluster()?;
    if args.json {
        println!("{}", serde_json::to_string(&info)?);
        return Ok(true);
    }
    println!("Cluster ID: {}", info.cluster_id);
    println!("Controller: {}", info.controller_id);
    for (node_id, address, rack) in &info.brokers {
        match rack {
            Some(rack) => println!("Broker: {node_id} {address} rack={rack}"),
            None => println!("Broker: {node_id} {address}"),
        }
    }
    Ok(true)
}
