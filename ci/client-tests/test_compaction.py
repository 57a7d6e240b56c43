"""Log compaction seen by confluent-kafka (librdkafka): a compacted topic
converges to one record per key, the last one written; tombstones go once
`delete.retention.ms` has passed; a record without key is refused.

Guards against: a cleaner that never runs on a live broker (configs not
reaching the engine, background task not started), one that loses or
reorders latest values or serves data a client cannot decode (filtered or
recompressed batches, offset gaps), tombstones kept forever or dropped
early, and a compacted topic accepting records it cannot compact."""

import os

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker, wait_until

REQUEST_TIMEOUT_SECONDS = 15
CLEAN_DEADLINE_SECONDS = 60
KEYS = 10
VERSIONS = 20
# Small segments roll often; a low ratio makes every roll worth a pass.
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "4096",
    "min.cleanable.dirty.ratio": "0.01",
}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A broker whose cleaner looks for work every 100 ms."""
    with running_broker(tmp_path_factory, ["log.cleaner.backoff.ms=100"]) as instance:
        yield instance


def create_topic(broker, name, configs):
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = client.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1, config=configs)],
        request_timeout=REQUEST_TIMEOUT_SECONDS,
    )
    futures[name].result(timeout=REQUEST_TIMEOUT_SECONDS)


def produce(broker, topic, records, **settings):
    """Produces (key, value) records in order; returns the delivery errors."""
    client = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            # Small batches, so the log rolls 4 KiB segments as it fills.
            "batch.num.messages": 5,
            **settings,
        }
    )
    errors = []

    def on_delivery(error, _message):
        if error is not None:
            errors.append(error)

    for key, value in records:
        client.produce(topic, key=key, value=value, on_delivery=on_delivery)
        client.poll(0)
    assert client.flush(REQUEST_TIMEOUT_SECONDS) == 0, "records never delivered"
    return errors


def read_all(broker, topic):
    """Every (offset, key, value) from the log start to the end."""
    client_errors = []
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "assign-only",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "error_cb": client_errors.append,
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=REQUEST_TIMEOUT_SECONDS)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        records = []

        def caught_up():
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if message.error() is None:
                    records.append((message.offset(), message.key(), message.value()))
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(message.error())
                elif message.offset() >= high:
                    return True
            return bool(records) and records[-1][0] >= high - 1

        wait_until(caught_up, REQUEST_TIMEOUT_SECONDS, "reading the topic")
        return records
    finally:
        consumer.close()


def versioned_records():
    return [
        (f"key-{key}".encode(), f"value-{key}-{version}-".encode() + b"x" * 100)
        for version in range(VERSIONS)
        for key in range(KEYS)
    ]


def filler(count, tag):
    """Records with unique keys that push the versioned ones out of the
    active segment, which the cleaner never touches (random values, so
    compression cannot shrink them into it)."""
    return [(f"filler-{tag}-{n}".encode(), os.urandom(200)) for n in range(count)]


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_a_consumer_from_the_beginning_sees_the_last_value_of_each_key(broker, topic_name, codec):
    """Twenty versions of ten keys converge to the twentieth of each, in
    offset order, readable by librdkafka (also when batches were compressed
    and had to be filtered and recompressed)."""
    create_topic(broker, topic_name, COMPACTED)
    assert produce(broker, topic_name, versioned_records() + filler(40, "a"), **{"compression.type": codec}) == []
    expected = {f"key-{key}".encode(): f"value-{key}-{VERSIONS - 1}-".encode() + b"x" * 100 for key in range(KEYS)}

    def compacted():
        records = read_all(broker, topic_name)
        offsets = [offset for offset, _, _ in records]
        assert offsets == sorted(set(offsets)), "offsets must strictly increase"
        versioned = [(key, value) for _, key, value in records if key.startswith(b"key-")]
        return len(versioned) == KEYS and dict(versioned) == expected

    wait_until(compacted, CLEAN_DEADLINE_SECONDS, "compaction to one record per key")


def test_tombstones_vanish_after_delete_retention(broker, topic_name):
    """A deleted key's older values go at the first pass and its tombstone
    once delete.retention.ms has passed; other keys keep their last value."""
    create_topic(broker, topic_name, {**COMPACTED, "delete.retention.ms": "1000"})
    deleted = [f"key-{key}".encode() for key in range(KEYS // 2)]
    records = versioned_records() + [(key, None) for key in deleted] + filler(40, "b")
    assert produce(broker, topic_name, records) == []

    def values_of(key):
        return [value for _, record_key, value in read_all(broker, topic_name) if record_key == key]

    wait_until(
        lambda: all(values_of(key) in ([None], []) for key in deleted),
        CLEAN_DEADLINE_SECONDS,
        "older values of deleted keys removed",
    )
    # New writes keep the log dirty and the cleaner busy meanwhile.
    assert produce(broker, topic_name, filler(40, "c")) == []

    def tombstones_gone():
        keys = [key for _, key, _ in read_all(broker, topic_name)]
        return all(key not in keys for key in deleted)

    wait_until(tombstones_gone, CLEAN_DEADLINE_SECONDS, "tombstones removed after delete.retention.ms")
    survivors = read_all(broker, topic_name)
    live = {key: value for _, key, value in survivors if key.startswith(b"key-")}
    assert set(live) == {f"key-{key}".encode() for key in range(KEYS // 2, KEYS)}


def test_a_record_without_key_is_refused_by_a_compacted_topic(broker, topic_name):
    """Kafka answers INVALID_RECORD (87) to a keyless record on a compacted
    topic: it could never be compacted."""
    create_topic(broker, topic_name, COMPACTED)
    errors = produce(broker, topic_name, [(None, b"no key")], **{"enable.idempotence": False, "retries": 0})
    assert [error.code() for error in errors] == [KafkaError.INVALID_RECORD]


def test_delete_records_needs_the_delete_policy(broker, topic_name):
    """DeleteRecords is retention by hand: Kafka refuses it with
    POLICY_VIOLATION on a topic whose cleanup.policy is only `compact`,
    and allows it once the policy includes `delete`."""
    create_topic(broker, topic_name, COMPACTED)
    assert produce(broker, topic_name, [(b"k", b"v1"), (b"k", b"v2"), (b"j", b"v3")]) == []
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    partition = TopicPartition(topic_name, 0, 1)
    with pytest.raises(KafkaException) as raised:
        client.delete_records([partition])[partition].result(REQUEST_TIMEOUT_SECONDS)
    assert raised.value.args[0].code() == KafkaError.POLICY_VIOLATION

    both = f"{topic_name}-both"
    create_topic(broker, both, {**COMPACTED, "cleanup.policy": "compact,delete"})
    assert produce(broker, both, [(b"k", b"v1"), (b"k", b"v2"), (b"j", b"v3")]) == []
    partition = TopicPartition(both, 0, 1)
    deleted = client.delete_records([partition])[partition].result(REQUEST_TIMEOUT_SECONDS)
    assert deleted.low_watermark == 1
