//! The brokers clients are told about (Metadata, DescribeCluster): the
//! registrations in the metadata image, each at the endpoint of the
//! listener clients use, never a fenced broker unless DescribeCluster v2
//! asks for those too (KIP-1073). A single node is its own registration.

use crate::metadata::records::{BrokerEndpoint, BrokerId};
use crate::metadata::MetadataImage;

/// The listener name brokers register for clients.
pub const CLIENT_LISTENER: &str = "PLAINTEXT";

/// A broker as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdvertisedBroker {
    /// Its `node.id`.
    pub id: BrokerId,
    /// Where clients reach it.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Whether it is fenced.
    pub fenced: bool,
}

/// The registered brokers by id, the fenced ones only if `include_fenced`,
/// each at its client endpoint (a broker that registered none is left out:
/// clients could not reach it).
#[must_use]
pub fn advertised_brokers(image: &MetadataImage, include_fenced: bool) -> Vec<AdvertisedBroker> {
    image
        .brokers
        .values()
        .filter(|registration| include_fenced || !registration.fenced)
        .filter_map(|registration| {
            let endpoint: &BrokerEndpoint = registration
                .endpoints
                .iter()
                .find(|endpoint| endpoint.name == CLIENT_LISTENER)?;
            Some(AdvertisedBroker {
                id: registration.id,
                host: endpoint.host.clone(),
                port: endpoint.port,
                rack: registration.rack.clone(),
                fenced: registration.fenced,
            })
        })
        .collect()
}
