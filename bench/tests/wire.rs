//! `fjord-bench produce` and `consume` against a real fjord broker, run in
//! process through `fjord_broker::run`.
//!
//! Guards against a wire bench that "succeeds" without moving data: a
//! produce whose responses are never matched, a consume that stops at the
//! first empty fetch, or JSON reports with zero or missing figures.

use std::path::Path;

use fjord_bench::wire::consume::{self, ConsumeArgs, StartFrom};
use fjord_bench::wire::produce::{self, ProduceArgs};
use fjord_bench::wire::ClientArgs;
use fjord_broker::testkit::{Broker, Launch};

/// A fjord broker in this process (this crate's tests cannot name the
/// `fjord` binary); stopped cleanly on drop.
fn start_broker() -> Broker {
    Broker::start(Launch::InProcess, &[])
}

fn client(broker: &Broker, topic: &str) -> ClientArgs {
    ClientArgs {
        bootstrap_server: broker.bootstrap_server(),
        topic: topic.to_owned(),
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("json")
}

fn positive(report: &serde_json::Value, pointer: &str) -> f64 {
    let value = report
        .pointer(pointer)
        .and_then(serde_json::Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {report}"));
    assert!(value.is_finite() && value > 0.0, "{pointer} = {value}");
    value
}

#[test]
fn produced_megabytes_are_acknowledged_and_read_back_from_the_beginning() {
    let broker = start_broker();
    let output = tempfile::tempdir().expect("tempdir");
    let produce_json = output.path().join("produce.json");
    let consume_json = output.path().join("consume.json");
    let total_bytes: u32 = 4 << 20;

    let produced = produce::run(&ProduceArgs {
        client: client(&broker, "wire-bench"),
        partitions: 3,
        replication_factor: 1,
        record_bytes: 1024,
        batch_bytes: 64 << 10,
        producers: 2,
        acks: 1,
        in_flight: 5,
        total_bytes: Some(u64::from(total_bytes)),
        duration_secs: None,
        json: Some(produce_json.clone()),
    })
    .expect("produce runs");
    let report = json(&produce_json);
    assert!(positive(&report, "/bytes") >= f64::from(total_bytes));
    positive(&report, "/megabytes_per_second");
    positive(&report, "/records_per_second");
    positive(&report, "/latency/p99_us");
    assert_eq!(report["partitions"], 3);
    assert_eq!(report["records_per_batch"], 63);
    assert_eq!(
        produced.records,
        produced.requests * produced.records_per_batch
    );
    let latency = produced.latency.expect("acks=1 has latencies");
    assert_eq!(latency.count, produced.requests);
    assert!(latency.p50_us <= latency.p99_us && latency.p99_us <= latency.max_us);

    let consumed = consume::run(&ConsumeArgs {
        client: client(&broker, "wire-bench"),
        from: StartFrom::Beginning,
        total_bytes: None,
        duration_secs: None,
        max_bytes: 50 << 20,
        partition_max_bytes: 8 << 20,
        max_wait_ms: 100,
        json: Some(consume_json.clone()),
    })
    .expect("consume runs");
    let report = json(&consume_json);
    positive(&report, "/megabytes_per_second");
    positive(&report, "/fetches");
    assert_eq!(report["from"], "beginning");
    assert_eq!(
        consumed.bytes, produced.bytes,
        "every produced batch is read"
    );
    assert_eq!(consumed.records, produced.records);
}

#[test]
fn acks_zero_batches_all_land_and_a_timed_tail_read_ends() {
    let broker = start_broker();
    let produced = produce::run(&ProduceArgs {
        client: client(&broker, "fire-and-forget"),
        partitions: 1,
        replication_factor: 1,
        record_bytes: 100,
        batch_bytes: 16 << 10,
        producers: 1,
        acks: 0,
        in_flight: 1,
        total_bytes: Some(1 << 20),
        duration_secs: None,
        json: None,
    })
    .expect("produce runs");
    assert!(produced.latency.is_none());
    assert!(produced.bytes >= 1 << 20);
    let consumed = consume::run(&ConsumeArgs {
        client: client(&broker, "fire-and-forget"),
        from: StartFrom::End,
        total_bytes: None,
        duration_secs: Some(0.3),
        max_bytes: 1 << 20,
        partition_max_bytes: 1 << 20,
        max_wait_ms: 50,
        json: None,
    })
    .expect("consume runs");
    // The acks=0 requests may still be landing while the tail read starts.
    assert!(consumed.bytes <= produced.bytes);
    assert!(consumed.fetches > 0);
    let everything = consume::run(&ConsumeArgs {
        client: client(&broker, "fire-and-forget"),
        from: StartFrom::Beginning,
        total_bytes: None,
        duration_secs: None,
        max_bytes: 1 << 20,
        partition_max_bytes: 1 << 20,
        max_wait_ms: 50,
        json: None,
    })
    .expect("consume runs");
    assert_eq!(
        everything.bytes, produced.bytes,
        "every acks=0 batch landed"
    );
}
