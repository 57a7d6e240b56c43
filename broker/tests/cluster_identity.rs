//! A node told it is part of a cluster starts with a checked identity, and
//! never on another cluster's or another node's data.
//!
//! The failures guarded against: a combined node configured as in
//! `tuning/cluster/` (named listeners, a controller listener; here the only
//! voter of its quorum) that does not start or no longer serves clients on
//! its client listener; a cluster id
//! that changes across restarts or differs between a node's directories;
//! and, worst, a node that starts on a data directory another cluster (or
//! another node) wrote, serving that data as its own. Each runs the real
//! `fjord` binary.

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use std::path::{Path, PathBuf};

use fjord_broker::config::parse_properties;
use kafka_protocol::messages::{ApiKey, MetadataRequest, ResponseKind};

use common::{broker_port, Broker};

/// The settings of `tuning/cluster/node1.properties`, moved to the free
/// ports `client` and `controller`, with node 1 the only voter (a node alone
/// cannot elect a leader among three) and without its data directories (the
/// test kit sets `log.dirs`), as `--set` arguments.
fn node1_settings(client: u16, controller: u16) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tuning/cluster/node1.properties"
    );
    let text = std::fs::read_to_string(path).unwrap();
    parse_properties(&text)
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key != "log.dirs")
        .map(|(key, value)| {
            if key == "controller.quorum.voters" {
                return format!("{key}=1@127.0.0.1:{controller}");
            }
            let value = value
                .replace("127.0.0.1:19092", &format!("127.0.0.1:{client}"))
                .replace("127.0.0.1:19093", &format!("127.0.0.1:{controller}"));
            format!("{key}={value}")
        })
        .collect()
}

/// The cluster id in `dir`'s meta.properties.
fn stored_cluster_id(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("meta.properties")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("cluster.id="))
        .unwrap_or_else(|| panic!("no cluster.id in {text}"))
        .to_owned()
}

/// What Metadata says: the cluster id and the (only) broker's node id,
/// host and port.
fn metadata(broker: &Broker) -> (String, i32, String, i32) {
    let ResponseKind::Metadata(response) =
        broker
            .connect()
            .call(ApiKey::Metadata, 12, &MetadataRequest::default().into())
    else {
        panic!("not a Metadata response");
    };
    let [node] = response.brokers.as_slice() else {
        panic!("brokers: {:?}", response.brokers);
    };
    (
        response
            .cluster_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        node.node_id.0,
        node.host.to_string(),
        node.port,
    )
}

#[test]
fn a_combined_cluster_node_starts_and_serves_metadata_with_a_lasting_cluster_id() {
    let metadata_dir = tempfile::tempdir().unwrap();
    let client = broker_port();
    let controller = broker_port();
    let mut settings = node1_settings(client, controller);
    settings.push(format!(
        "metadata.log.dir={}",
        metadata_dir.path().display()
    ));
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut broker = Broker::start_on(common::fjord(), client, &settings);

    let (cluster_id, node_id, host, port) = metadata(&broker);
    assert_eq!(cluster_id.len(), 22, "{cluster_id}");
    assert_eq!(node_id, 1);
    // The client listener is advertised; the controller listener is not.
    assert_eq!((host.as_str(), port), ("127.0.0.1", i32::from(client)));
    // Both directories carry the id Metadata reports.
    assert_eq!(stored_cluster_id(&broker.data_dir()), cluster_id);
    assert_eq!(stored_cluster_id(metadata_dir.path()), cluster_id);

    broker.restart();
    assert_eq!(metadata(&broker).0, cluster_id, "the id survives a restart");
}

/// A data directory formatted for `cluster_id` and node `node_id`, as a
/// Kafka 3.7+ node leaves it, with a partition in it.
fn formatted_data_dir(root: &Path, cluster_id: &str, node_id: i32) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("orders-0")).unwrap();
    std::fs::write(
        data.join("meta.properties"),
        format!(
            "#\n#Sun Dec 06 12:00:00 UTC 2026\nnode.id={node_id}\n\
             directory.id=J8aAPcfLQt2bqs1JT_rMgQ\nversion=1\ncluster.id={cluster_id}\n"
        ),
    )
    .unwrap();
    data
}

/// Runs `fjord` on `data` with `extra` settings until it exits: whether it
/// exited successfully, and what it said.
fn start_on(data: &Path, extra: &[String]) -> (bool, String) {
    let mut settings = vec![
        format!("listeners=PLAINTEXT://127.0.0.1:{}", broker_port()),
        format!("log.dirs={}", data.display()),
        "cores=1".to_owned(),
    ];
    settings.extend_from_slice(extra);
    common::run_until_exit(Path::new(env!("CARGO_BIN_EXE_fjord")), &settings)
}

#[test]
fn a_node_refuses_a_data_directory_of_another_cluster_or_node() {
    const OURS: &str = "MkU3OEVBNTcwNTJENDM2Qg";
    const THEIRS: &str = "3Db5QLSqSZieL3rGBgZhOA";
    let root = tempfile::tempdir().unwrap();
    let data = formatted_data_dir(root.path(), THEIRS, 1);
    let before = std::fs::read_to_string(data.join("meta.properties")).unwrap();

    let (started, output) = start_on(&data, &[format!("cluster.id={OURS}")]);
    assert!(!started, "another cluster's directory: {output}");
    let expected = format!(
        "Invalid cluster.id in: {}. Expected {OURS}, but read {THEIRS}",
        data.join("meta.properties").display()
    );
    assert!(output.contains(&expected), "{output}");

    let (started, output) = start_on(&data, &["node.id=2".to_owned()]);
    assert!(!started, "another node's directory: {output}");
    assert!(
        output.contains("Stored node id 1 doesn't match the configured node.id 2"),
        "{output}"
    );

    // Refusing touched nothing.
    assert_eq!(
        std::fs::read_to_string(data.join("meta.properties")).unwrap(),
        before
    );
    assert!(data.join("orders-0").is_dir());
}
