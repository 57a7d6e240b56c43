//! `fjordctl` commands that talk to a running cluster over the Kafka
//! protocol, named and flagged like Kafka's shell tools (`kafka-topics`,
//! `kafka-console-producer`, `kafka-console-consumer`, `kafka-cluster`) so an
//! operator's habits and scripts carry over. All go through
//! [`crate::client`].

pub mod cluster;
pub mod consume;
pub mod groups;
pub mod produce;
pub mod topics;

/// The client id fjordctl's requests carry (visible in broker logs).
pub const CLIENT_ID: &str = "fjordctl";

/// Where to reach the cluster.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// A broker to bootstrap from, `host:port`.
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
}

impl ServerArgs {
    /// A client connected to the bootstrap server.
    ///
    /// # Errors
    /// [`crate::Error::Connect`] if it does not accept.
    pub fn connect(&self) -> Result<crate::client::Client, crate::Error> {
        crate::client::Client::connect(&self.bootstrap_server, CLIENT_ID)
    }
}
