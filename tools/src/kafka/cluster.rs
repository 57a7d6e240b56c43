//! `fjordctl cluster info`: the cluster id, controller and brokers (fenced
//! or not, rack) from `DescribeCluster`, and the metadata quorum (leader,
//! epoch, each voter's and observer's lag) from `DescribeQuorum`: what
//! `kafka-cluster.sh cluster-id` and `kafka-metadata-quorum.sh describe`
//! tell between them.

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
    for broker in &info.brokers {
        let rack = broker
            .rack
            .as_ref()
            .map(|rack| format!(" rack={rack}"))
            .unwrap_or_default();
        let fenced = if broker.fenced { " fenced" } else { "" };
        println!("Broker: {} {}{rack}{fenced}", broker.id, broker.address);
    }
    match &info.quorum {
        Some(quorum) => {
            println!(
                "Quorum leader: {} (epoch {}), high watermark {}",
                quorum.leader_id, quorum.leader_epoch, quorum.high_watermark
            );
            for voter in &quorum.voters {
                println!(
                    "Voter: {} log end {} lag {}",
                    voter.id, voter.log_end_offset, voter.lag
                );
            }
            for observer in &quorum.observers {
                println!(
                    "Observer: {} log end {} lag {}",
                    observer.id, observer.log_end_offset, observer.lag
                );
            }
        }
        None => println!("Quorum: not reported (the broker does not serve DescribeQuorum)"),
    }
    Ok(true)
}
