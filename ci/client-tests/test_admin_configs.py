"""Admin APIs through real clients (confluent-kafka's AdminClient, i.e.
librdkafka; kafka-python for DescribeLogDirs): topic configs described with
Kafka's names, sources and defaults; AlterConfigs and IncrementalAlterConfigs
persisted across kill -9 and clean restarts and applied to live partitions;
CreatePartitions; DeleteRecords; DescribeCluster; DescribeLogDirs.

OffsetForLeaderEpoch is covered by broker/tests/admin_wire.rs: a consumer
only validates its position after a leader change, which one node never has.

Every restart in this module happens before any test writes records: the
engine cannot yet always reopen a partition whose active segment holds data
(EOPNOTSUPP while scanning it, seen after both kill -9 and clean stops),
which leaves one shard down and the broker unable to stop. Tests run in file
order, so the tests that produce come after those that restart.
"""

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

TIMEOUT_SECONDS = 30
LOG_CONFIG_KEYS = [
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "flush.messages",
    "flush.ms",
    "retention.ms",
    "retention.bytes",
]
BROKER_SIDE_KEYS = ["cleanup.policy", "compression.type", "min.insync.replicas"]


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(broker, name, partitions=1, config=None):
    client = admin(broker)  # must outlive its futures
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    futures[name].result(TIMEOUT_SECONDS)


def describe(broker, name):
    resource = ConfigResource(ResourceType.TOPIC, name)
    client = admin(broker)  # must outlive its futures
    futures = client.describe_configs([resource])
    return futures[resource].result(TIMEOUT_SECONDS)


def alter(broker, name, configs):
    resource = ConfigResource(ResourceType.TOPIC, name, set_config=configs)
    client = admin(broker)  # must outlive its futures
    futures = client.alter_configs([resource])
    return futures[resource].result(TIMEOUT_SECONDS)


def incremental(broker, name, entries):
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=entries)
    client = admin(broker)  # must outlive its futures
    futures = client.incremental_alter_configs([resource])
    return futures[resource].result(TIMEOUT_SECONDS)


def produce(broker, topic, count, partition=0, value_bytes=16):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    reports = []

    def delivered(error, message):
        reports.append((error, message.partition() if message else None,
                        message.offset() if message else None))

    for index in range(count):
        value = f"{index:0{value_bytes}d}".encode()
        producer.produce(topic, value=value, partition=partition, on_delivery=delivered)
    assert producer.flush(TIMEOUT_SECONDS) == 0
    return reports


def consume_from_beginning(broker, topic, partition, expected):
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": unique("admin-test"),
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    try:
        consumer.assign([TopicPartition(topic, partition, -2)])  # OFFSET_BEGINNING
        offsets = []
        while len(offsets) < expected:
            message = consumer.poll(TIMEOUT_SECONDS)
            assert message is not None, f"only {offsets} consumed"
            assert message.error() is None, message.error()
            offsets.append(message.offset())
        return offsets
    finally:
        consumer.close()


def test_describe_configs_reports_every_implemented_config_with_defaults(broker):
    topic = unique("defaults")
    create_topic(broker, topic)
    configs = describe(broker, topic)
    assert set(LOG_CONFIG_KEYS + BROKER_SIDE_KEYS) <= set(configs)
    assert configs["retention.ms"].value == "604800000"
    assert configs["segment.bytes"].value == "1073741824"
    assert configs["cleanup.policy"].value == "delete"
    assert configs["compression.type"].value == "producer"
    assert configs["min.insync.replicas"].value == "1"
    for entry in configs.values():
        assert entry.source == ConfigSource.DEFAULT_CONFIG.value, entry
        assert entry.is_default, entry
        assert not entry.is_read_only, entry


def test_create_topic_overrides_are_dynamic_topic_configs(broker):
    topic = unique("overrides")
    create_topic(broker, topic, config={"retention.ms": "12345", "cleanup.policy": "compact"})
    configs = describe(broker, topic)
    for key, value in [("retention.ms", "12345"), ("cleanup.policy", "compact")]:
        assert configs[key].value == value
        assert configs[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert not configs[key].is_default
    assert configs["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_describe_configs_of_an_unknown_topic_fails(broker):
    with pytest.raises(KafkaException) as raised:
        describe(broker, unique("missing"))
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_broker_configs_are_read_only(broker):
    resource = ConfigResource(ResourceType.BROKER, "1")
    client = admin(broker)
    configs = client.describe_configs([resource])[resource].result(TIMEOUT_SECONDS)
    assert configs["num.partitions"].value == "1"
    assert configs["log.dirs"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert all(entry.is_read_only for entry in configs.values())
    with pytest.raises(KafkaException) as raised:
        futures = client.alter_configs(
            [ConfigResource(ResourceType.BROKER, "1", set_config={"num.partitions": "3"})]
        )
        list(futures.values())[0].result(TIMEOUT_SECONDS)
    assert raised.value.args[0].code() == KafkaError.INVALID_REQUEST


def test_alter_configs_replaces_overrides_and_survives_restarts(broker):
    topic = unique("alter")
    create_topic(broker, topic, config={"segment.ms": "100000"})
    alter(broker, topic, {"retention.ms": "3600000", "retention.bytes": "1048576"})
    configs = describe(broker, topic)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.bytes"].value == "1048576"
    # AlterConfigs replaces the whole override set: segment.ms is back to default.
    assert configs["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    broker.restart_after_kill9()
    configs = describe(broker, topic)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.bytes"].value == "1048576"

    broker.stop()
    broker.start()
    configs = describe(broker, topic)
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_incremental_alter_configs_set_delete_append_survive_restarts(broker):
    topic = unique("incremental")
    create_topic(broker, topic, config={"retention.ms": "5000", "segment.ms": "100000"})
    incremental(broker, topic, [
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("flush.messages", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    ])
    configs = describe(broker, topic)
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.ms"].value == "604800000"
    assert configs["segment.ms"].value == "100000"  # untouched
    assert configs["flush.messages"].value == "1000"
    assert configs["cleanup.policy"].value == "delete,compact"

    broker.restart_after_kill9()
    configs = describe(broker, topic)
    assert configs["flush.messages"].value == "1000"
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value

    broker.stop()
    broker.start()
    configs = describe(broker, topic)
    assert configs["flush.messages"].value == "1000"
    assert configs["segment.ms"].value == "100000"


def test_invalid_values_are_refused_and_change_nothing(broker):
    topic = unique("invalid")
    create_topic(broker, topic, config={"retention.ms": "5000"})
    for configs in [{"retention.ms": "soon"}, {"segment.bytes": "12"}, {"no.such.config": "1"}]:
        with pytest.raises(KafkaException) as raised:
            alter(broker, topic, configs)
        assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG, configs
    with pytest.raises(KafkaException) as raised:
        incremental(broker, topic, [
            ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.APPEND),
        ])
    assert raised.value.args[0].code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as raised:
        alter(broker, unique("missing"), {"retention.ms": "1"})
    assert raised.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert describe(broker, topic)["retention.ms"].value == "5000"


def test_validate_only_alterations_change_nothing(broker):
    topic = unique("validate")
    create_topic(broker, topic)
    resource = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "1000"})
    client = admin(broker)
    client.alter_configs([resource], validate_only=True)[resource].result(TIMEOUT_SECONDS)
    assert describe(broker, topic)["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_create_partitions_grows_the_topic_and_new_partitions_take_records(broker):
    topic = unique("grow")
    create_topic(broker, topic, partitions=2)
    client = admin(broker)
    client.create_partitions([NewPartitions(topic, 5)])[topic].result(TIMEOUT_SECONDS)
    metadata = client.list_topics(topic, timeout=TIMEOUT_SECONDS)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2, 3, 4]
    for count in (5, 3):
        with pytest.raises(KafkaException) as raised:
            client.create_partitions([NewPartitions(topic, count)])[topic].result(TIMEOUT_SECONDS)
        assert raised.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    client.create_partitions([NewPartitions(topic, 8)], validate_only=True)[topic].result(
        TIMEOUT_SECONDS)
    assert len(client.list_topics(topic, timeout=TIMEOUT_SECONDS).topics[topic].partitions) == 5

    broker.restart_after_kill9()
    broker.stop()
    broker.start()
    client = admin(broker)
    metadata = client.list_topics(topic, timeout=TIMEOUT_SECONDS)
    assert len(metadata.topics[topic].partitions) == 5
    reports = produce(broker, topic, 3, partition=4)
    assert [(error, partition, offset) for error, partition, offset in reports] == [
        (None, 4, 0), (None, 4, 1), (None, 4, 2)]
    assert consume_from_beginning(broker, topic, 4, 3) == [0, 1, 2]


def test_altered_max_message_bytes_applies_to_live_partitions(broker):
    topic = unique("live")
    create_topic(broker, topic)
    assert all(error is None for error, _, _ in produce(broker, topic, 1, value_bytes=4000))
    incremental(broker, topic, [
        ConfigEntry("max.message.bytes", "1024", incremental_operation=AlterConfigOpType.SET),
    ])
    reports = produce(broker, topic, 1, value_bytes=4000)
    assert reports[0][0] is not None
    assert reports[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, reports


def test_delete_records_moves_the_low_watermark(broker):
    topic = unique("delete")
    create_topic(broker, topic)
    produce(broker, topic, 10)
    client = admin(broker)
    partition = TopicPartition(topic, 0, 4)
    deleted = client.delete_records([partition])[partition].result(TIMEOUT_SECONDS)
    assert deleted.low_watermark == 4
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique("wm")})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0),
                                              timeout=TIMEOUT_SECONDS) == (4, 10)
    finally:
        consumer.close()
    assert consume_from_beginning(broker, topic, 0, 6) == [4, 5, 6, 7, 8, 9]

    beyond = TopicPartition(topic, 0, 11)
    with pytest.raises(KafkaException) as raised:
        client.delete_records([beyond])[beyond].result(TIMEOUT_SECONDS)
    assert raised.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE

    everything = TopicPartition(topic, 0, -1)  # -1: up to the high watermark
    deleted = client.delete_records([everything])[everything].result(TIMEOUT_SECONDS)
    assert deleted.low_watermark == 10


def test_describe_cluster_names_this_node_as_broker_and_controller(broker):
    client = admin(broker)
    cluster = client.describe_cluster().result(TIMEOUT_SECONDS)
    # Generated at the first start and kept in meta.properties (Kafka's form).
    meta = (Path(broker.data_dir) / "meta.properties").read_text()
    assert f"cluster.id={cluster.cluster_id}\n" in meta
    assert len(cluster.cluster_id) == 22
    assert [node.id for node in cluster.nodes] == [1]
    assert cluster.nodes[0].port == broker.port
    assert cluster.controller.id == 1


def test_describe_log_dirs_reports_partition_sizes(broker):
    kafka_admin = pytest.importorskip("kafka.admin")
    topic = unique("sizes")
    create_topic(broker, topic)
    produce(broker, topic, 5)
    client = kafka_admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        answers = client.describe_log_dirs()
    finally:
        client.close()
    (answer,) = answers
    (log_dir,) = answer["log_dirs"]
    assert log_dir["error_code"] == 0
    sizes = {t["name"]: t["partitions"][0]["partition_size"] for t in log_dir["topics"]}
    assert sizes[topic] > 0
