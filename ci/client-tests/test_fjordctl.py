"""fjordctl against a real fjord: topics, produce, consume and cluster info,
each cross-checked with a client we did not write (kcat, confluent-kafka);
dump-log and verify-log on a data directory a broker wrote over the wire and
on a corrupted copy; tune --check on this machine."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import REPO, Broker
from test_kcat import kcat

FJORDCTL = Path(os.environ.get("FJORDCTL_BIN", REPO / "target" / "debug" / "fjordctl"))
DEADLINE_SECONDS = 60
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def fjordctl(*arguments, stdin=None, expect=0):
    """Runs fjordctl; asserts its exit code is `expect`; returns the result."""
    result = subprocess.run(
        [str(FJORDCTL), *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
    )
    assert result.returncode == expect, (
        f"fjordctl {arguments} exited {result.returncode}, expected {expect}: {result.stderr}"
    )
    return result


def admin(broker, *arguments, **kwargs):
    return fjordctl(*arguments, "--bootstrap-server", broker.bootstrap, **kwargs)


def consume_json(broker, topic, *arguments):
    out = admin(broker, "consume", "--topic", topic, "--format", "json", *arguments).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_topics_create_list_describe_alter_delete(broker, topic_name):
    """The kafka-topics workflow end to end, with the configs checked through
    librdkafka's DescribeConfigs; guards against a create that ignores
    --partitions or --config, an alter that replaces every config instead of
    the named ones, and a delete that leaves the topic listed."""
    admin(broker, "topics", "create", "--topic", topic_name, "--partitions", "3",
          "--replication-factor", "1", "--config", "retention.ms=3600000",
          "--config", "cleanup.policy=delete")
    assert topic_name in admin(broker, "topics", "list").stdout.splitlines()

    described = admin(broker, "topics", "describe", "--topic", topic_name).stdout.splitlines()
    assert described[0].startswith(f"Topic: {topic_name}\tPartitionCount: 3\tReplicationFactor: 1")
    assert "retention.ms=3600000" in described[0]
    assert [line.split("\t")[2] for line in described[1:]] == [
        "Partition: 0", "Partition: 1", "Partition: 2"]
    assert all("Leader: 1" in line for line in described[1:])

    admin(broker, "topics", "alter", "--topic", topic_name, "--config", "segment.bytes=1048576",
          "--delete-config", "retention.ms")
    resource = ConfigResource("topic", topic_name)
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = client.describe_configs([resource])[resource].result(timeout=30)
    assert configs["segment.bytes"].value == "1048576"
    assert configs["cleanup.policy"].value == "delete"
    assert not configs["retention.ms"].source == 1, "retention.ms is still a topic override"

    admin(broker, "topics", "delete", "--topic", topic_name)
    assert topic_name not in admin(broker, "topics", "list").stdout.splitlines()


def test_errors_are_one_line_and_exit_2(broker, topic_name):
    """A broker error (topic exists), a missing topic and an unreachable
    broker each give exit code 2 and one line naming the problem; guards
    against stack traces, silent success, or exit 0 on failure."""
    admin(broker, "topics", "create", "--topic", topic_name, "--partitions", "1")
    exists = admin(broker, "topics", "create", "--topic", topic_name, expect=2)
    assert exists.stderr.count("\n") == 1 and "TopicAlreadyExists" in exists.stderr
    admin(broker, "topics", "create", "--topic", topic_name, "--if-not-exists")

    missing = admin(broker, "consume", "--topic", f"{topic_name}-missing", expect=2)
    assert "does not exist" in missing.stderr and missing.stderr.count("\n") == 1

    unreachable = fjordctl("topics", "list", "--bootstrap-server", "127.0.0.1:1", expect=2)
    assert "cannot connect to 127.0.0.1:1" in unreachable.stderr

    bad_config = admin(broker, "topics", "alter", "--topic", topic_name, "--config",
                       "retention.ms=soon", expect=2)
    assert bad_config.stderr.count("\n") == 1


@pytest.mark.parametrize("codec", CODECS)
def test_fjordctl_produce_is_read_back_by_kcat(broker, topic_name, codec):
    """Keys, values and headers written by fjordctl produce with each codec
    come back from librdkafka byte for byte and in order; guards against
    batches other clients cannot decompress or a header/key parser that
    differs from kafka-console-producer's."""
    topic_name = topic_name.replace("[", "-").replace("]", "")
    admin(broker, "topics", "create", "--topic", topic_name, "--partitions", "1")
    lines = ["trace:t1,span:s1\tk1:v1", "\tk2:value two", "only:h\tk3:v:with:colons"]
    admin(broker, "produce", "--topic", topic_name, "--compression-codec", codec,
          "--property", "parse.key=true", "--property", "key.separator=:",
          "--property", "parse.headers=true", stdin="".join(f"{line}\n" for line in lines))

    out = kcat(broker, "-C", "-t", topic_name, "-e", "-q", "-f", "%o\x1f%k\x1f%s\x1f%h\n")
    records = [tuple(line.split("\x1f")) for line in out.splitlines()]
    assert records == [
        ("0", "k1", "v1", "trace=t1,span=s1"),
        ("1", "k2", "value two", ""),
        ("2", "k3", "v:with:colons", "only=h"),
    ]


def test_kcat_produce_is_read_back_by_fjordctl_as_json(broker, topic_name):
    """Records librdkafka wrote (gzip, keys, headers) print as fjordctl's JSON
    with topic, partition, offset, timestamp, key, value and headers; guards
    against a decoder that only reads our own batches."""
    kcat(broker, "-P", "-t", topic_name, "-p", "0", "-z", "gzip", "-K:", "-H", "h=1",
         stdin="a:first\nb:second\n")

    records = consume_json(broker, topic_name, "--from-beginning", "--max-messages", "2")

    assert [(r["offset"], r["key"], r["value"], r["headers"]) for r in records] == [
        (0, "a", "first", {"h": "1"}),
        (1, "b", "second", {"h": "1"}),
    ]
    assert all(r["topic"] == topic_name and r["partition"] == 0 for r in records)
    assert all(r["timestampType"] == "CreateTime" and r["timestamp"] > 0 for r in records)


def test_consume_starts_at_an_offset_a_timestamp_or_the_end(broker, topic_name):
    """--offset N, --timestamp MS, --offset latest and --max-messages pick the
    same records a Kafka consumer would; guards against off-by-one starts and a
    consumer that never stops."""
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(10):
        producer.produce(topic_name, value=f"v{index}".encode(), partition=0,
                         timestamp=1_700_000_000_000 + index * 1000)
    assert producer.flush(30) == 0

    def values(*arguments):
        out = admin(broker, "consume", "--topic", topic_name, "--partition", "0",
                    "--timeout-ms", "1500", *arguments).stdout
        return out.splitlines()

    assert values("--offset", "7") == ["v7", "v8", "v9"]
    assert values("--from-beginning", "--max-messages", "2") == ["v0", "v1"]
    assert values("--timestamp", str(1_700_000_000_000 + 4500)) == ["v5", "v6", "v7", "v8", "v9"]
    assert values("--offset", "latest") == []
    assert values("--timestamp", str(1_800_000_000_000)) == []


def test_keyed_records_land_where_the_java_partitioner_puts_them(broker, topic_name):
    """fjordctl's default partitioner is Kafka's murmur2, so each key lands in
    the same partition as with librdkafka's `murmur2_random` (the Java
    client's); guards against keys of one entity split across partitions when
    tools are mixed."""
    admin(broker, "topics", "create", "--topic", topic_name, "--partitions", "6")
    keys = [f"user-{index}" for index in range(30)]
    admin(broker, "produce", "--topic", topic_name, "--property", "parse.key=true",
          "--property", "key.separator=:", stdin="".join(f"{key}:fjordctl\n" for key in keys))
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    for key in keys:
        producer.produce(topic_name, key=key.encode(), value=b"librdkafka")
    assert producer.flush(30) == 0

    records = consume_json(broker, topic_name, "--from-beginning", "--max-messages", "60")
    partitions = {}
    for record in records:
        partitions.setdefault(record["key"], set()).add(record["partition"])
    assert len(records) == 60
    assert all(len(found) == 1 for found in partitions.values()), partitions
    assert len({next(iter(found)) for found in partitions.values()}) > 1


def test_cluster_info_names_the_broker_and_the_quorum(broker):
    """cluster info reports the cluster id, the controller and the advertised
    address, the same as librdkafka's metadata, the broker unfenced
    (DescribeCluster v2), and the metadata quorum: this node leading, the
    only voter, with no lag and a high watermark past the records a start
    writes (DescribeQuorum); guards against DescribeCluster and
    DescribeQuorum decoding (flexible requests) going wrong."""
    info = json.loads(admin(broker, "cluster", "info", "--json").stdout)
    metadata = json.loads(kcat(broker, "-L", "-J"))
    assert info["brokers"] == [
        {"id": 1, "address": broker.bootstrap, "rack": None, "fenced": False}
    ]
    assert [b["id"] for b in metadata["brokers"]] == [1]
    assert info["controller_id"] == metadata["controllerid"]
    assert info["cluster_id"]
    quorum = info["quorum"]
    assert quorum["leader_id"] == 1 and quorum["leader_epoch"] >= 1
    assert quorum["high_watermark"] > 0
    assert quorum["voters"] == [
        {"id": 1, "log_end_offset": quorum["high_watermark"], "lag": 0, "last_fetch_ms": -1}
    ]
    text = admin(broker, "cluster", "info").stdout
    assert f"Broker: 1 {broker.bootstrap}" in text
    assert "Quorum leader: 1 (epoch" in text
    assert "Voter: 1 log end" in text


def test_verify_and_dump_log_on_a_data_dir_written_over_the_wire(tmp_path):
    """A data directory a real broker wrote (uncompressed and zstd batches via
    fjordctl produce), stopped cleanly, passes verify-log, and dump-log prints
    its records; a copy with one flipped byte in a batch fails both; guards
    against the offline tools disagreeing with what the broker writes."""
    data_dir = tmp_path / "data"
    broker = Broker(data_dir)
    broker.start()
    try:
        admin(broker, "topics", "create", "--topic", "offline", "--partitions", "1")
        for codec in ["none", "zstd"]:
            admin(broker, "produce", "--topic", "offline", "--compression-codec", codec,
                  stdin="".join(f"{codec}-{index}\n" for index in range(50)))
    finally:
        broker.stop()

    verified = fjordctl("verify-log", str(data_dir))
    assert "offline-0" in verified.stdout
    segment = sorted((data_dir / "offline-0").glob("*.log"))[0]
    dumped = fjordctl("dump-log", "--print-data", str(segment)).stdout
    assert "none-49" in dumped and "zstd-0" in dumped

    corrupt = tmp_path / "corrupt"
    shutil.copytree(data_dir, corrupt)
    corrupt_segment = corrupt / "offline-0" / segment.name
    content = bytearray(corrupt_segment.read_bytes())
    content[100] ^= 0xFF
    corrupt_segment.write_bytes(bytes(content))
    failed = fjordctl("verify-log", str(corrupt), expect=1)
    assert "CRC" in failed.stdout + failed.stderr
    fjordctl("dump-log", str(corrupt_segment), expect=1)


def test_tune_check_reports_this_machine():
    """tune --check runs on this (untuned) VM and reports every setting as a
    JSON document, exiting 0 or 1 but never 2; guards against a check that
    crashes on a host without NVMe or cpufreq."""
    result = subprocess.run([str(FJORDCTL), "tune", "--check", "--json"],
                            capture_output=True, text=True, timeout=DEADLINE_SECONDS)
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report, "the report is empty"
