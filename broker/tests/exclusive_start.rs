//! A second broker never shares what the first one owns. Every shard
//! listens with `SO_REUSEPORT`, so without a check a second `fjord` on the
//! same port would start and silently take part of the first one's
//! connections; two on one data directory would interleave writes to the
//! same segments. Each must refuse to start with a clear error while the
//! first keeps serving. A broker that cannot open one of its partitions
//! refuses to start the same way.

#[allow(dead_code, reason = "helpers shared with other test binaries")]
mod common;

use kafka_protocol::messages::{ApiKey, ResponseKind};

use common::{api_versions, broker_port, Broker};

/// Runs a second `fjord` with `settings` until it exits; its exit success
/// and its output.
fn second_broker(settings: &[String]) -> (bool, String) {
    common::run_until_exit(std::path::Path::new(env!("CARGO_BIN_EXE_fjord")), settings)
}

#[test]
fn a_second_broker_on_the_same_port_or_data_directory_refuses_to_start() {
    let mut first = Broker::start(common::fjord(), &[]);
    let other_dir = tempfile::tempdir().unwrap();

    let (started, output) = second_broker(&[
        format!("listeners=PLAINTEXT://127.0.0.1:{}", first.port),
        format!("log.dirs={}", other_dir.path().join("data").display()),
    ]);
    assert!(!started, "same port: {output}");
    assert!(output.contains("in use"), "same port: {output}");

    let (started, output) = second_broker(&[
        format!("listeners=PLAINTEXT://127.0.0.1:{}", broker_port()),
        format!("log.dirs={}", first.data_dir().display()),
    ]);
    assert!(!started, "same data directory: {output}");
    assert!(
        output.contains("another fjord process is using this data directory"),
        "same data directory: {output}"
    );

    first.assert_alive();
    for _ in 0..8 {
        // Every connection still reaches the first broker.
        let ResponseKind::ApiVersions(versions) =
            first
                .connect()
                .call(ApiKey::ApiVersions, 3, &api_versions())
        else {
            panic!("not an ApiVersions response");
        };
        assert_eq!(versions.error_code, 0);
    }
    // The lock is the process's: after a restart the same broker takes it.
    first.restart();
    first.assert_alive();
}

/// Guards against a partition that does not open (here its checkpoint is
/// damaged) leaving a broker half started, hanging, or dying without
/// saying why: the engine stops every shard and `fjord` exits non-zero
/// naming the file.
#[test]
fn a_broker_whose_partition_does_not_open_exits_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let partition = data.join("broken-0");
    std::fs::create_dir_all(&partition).unwrap();
    std::fs::write(partition.join("partition.checkpoint"), b"not a checkpoint").unwrap();

    let (started, output) = second_broker(&[
        format!("listeners=PLAINTEXT://127.0.0.1:{}", broker_port()),
        format!("log.dirs={}", data.display()),
        // Every shard but the one owning the partition starts.
        format!(
            "cores={}",
            std::thread::available_parallelism().map_or(1, |cpus| cpus.get().min(2))
        ),
    ]);
    assert!(!started, "{output}");
    assert!(output.contains("corrupt checkpoint"), "{output}");
    assert!(output.contains("broken-0"), "{output}");
}
