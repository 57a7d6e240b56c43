"""A connection's records land in the order it sent them. librdkafka
pipelines Produce requests (up to a million in flight per connection by
default, no idempotence, no retries needed): Kafka appends a connection's
requests for a partition in the order they arrive, and producers without
idempotence rely on it for ordering, as does every consumer downstream.

fjord once let a later request overtake an earlier one on its way to the
log: a large batch waiting for room in the partition's write queue was
passed by a later, smaller one, and tasks that hopped to the owning shard
could be admitted in whatever order the executor ran them. With 500 KB
records, 71 of 300 landed at an offset other than their send index.

Each record carries its producer and send index; every test reads the
partition back and checks that every producer's records have increasing
offsets in send order, and that every acknowledged record is there once."""

import random
import struct
import threading
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import produce_when_room, running_broker

HEADER = struct.Struct(">II")  # producer number, send index


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    # Two shards, so partitions live on both and appends cross between them.
    with running_broker(tmp_path_factory, ["cores=2"]) as instance:
        yield instance


def create_topic(broker, topic, partitions):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def record(producer_number, index, size):
    return HEADER.pack(producer_number, index) + bytes(size - HEADER.size)


def produce_numbered(broker, topic, producer_number, sizes, partitions, config=()):
    """Produces one record per size from one producer (one connection per
    broker), record i to partition i % partitions; returns the send indexes
    acknowledged without error per partition."""
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 0, **dict(config)}
    )
    acked = {partition: [] for partition in range(partitions)}
    failures = []

    def delivered(error, message):
        if error is None:
            _, index = HEADER.unpack(message.value()[: HEADER.size])
            acked[message.partition()].append(index)
        else:
            failures.append(error)

    for index, size in enumerate(sizes):
        value = record(producer_number, index, size)
        produce_when_room(producer, topic, value, index % partitions, delivered)
    assert producer.flush(120) == 0, "records were still unacknowledged"
    assert failures == [], f"produce failed: {failures[:3]}"
    return acked


def read_partition(broker, topic, partition, count):
    """The (producer number, send index) of the first `count` records of the
    partition, in offset order."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"order-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 << 20,
        }
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    records = []
    try:
        while len(records) < count:
            message = consumer.poll(10)
            assert message is not None, f"partition {partition}: only {len(records)} of {count} records"
            assert message.error() is None, message.error()
            assert message.offset() == len(records), "offsets have a gap"
            records.append(HEADER.unpack(message.value()[: HEADER.size]))
    finally:
        consumer.close()
    return records


def assert_in_send_order(records, acked, producer_number):
    """The producer's records appear in the partition exactly as it sent
    them, each acknowledged one once."""
    mine = [index for number, index in records if number == producer_number]
    assert mine == sorted(mine), (
        f"producer {producer_number}: {sum(1 for a, b in zip(mine, mine[1:]) if b < a)} records "
        f"out of send order; first offsets hold {mine[:12]}"
    )
    assert sorted(mine) == sorted(acked), f"producer {producer_number}: acknowledged records missing or doubled"


@pytest.mark.parametrize("acks", ["1", "all"])
def test_one_connections_large_records_land_in_send_order(broker, topic_name, acks):
    create_topic(broker, topic_name, 1)
    sizes = [500_000] * 300
    acked = produce_numbered(broker, topic_name, 0, sizes, 1, {"acks": acks})
    assert_in_send_order(read_partition(broker, topic_name, 0, len(sizes)), acked[0], 0)


def test_mixed_sizes_over_partitions_on_both_shards_land_in_send_order(broker, topic_name):
    partitions = 4
    create_topic(broker, topic_name, partitions)
    rng = random.Random(7)
    sizes = [rng.choice([100, 5_000, 60_000, 500_000, 900_000]) for _ in range(800)]
    acked = produce_numbered(broker, topic_name, 0, sizes, partitions, {"acks": "1"})
    for partition in range(partitions):
        records = read_partition(broker, topic_name, partition, len(acked[partition]))
        assert_in_send_order(records, acked[partition], 0)


def test_many_producers_past_the_write_queue_limit_each_keep_their_order(broker, topic_name):
    """Six producers write large and small records to one partition at once,
    far more than its 16 MiB write queue holds, so appends wait for room
    there: none may pass one sent before it on the same connection."""
    create_topic(broker, topic_name, 1)
    producers = 6
    results = [None] * producers
    errors = []

    def run(number):
        try:
            rng = random.Random(number)
            sizes = [rng.choice([200, 20_000, 400_000, 900_000]) for _ in range(120)]
            results[number] = produce_numbered(broker, topic_name, number, sizes, 1, {"acks": "1"})
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(number,)) for number in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    total = sum(len(result[0]) for result in results)
    records = read_partition(broker, topic_name, 0, total)
    for number in range(producers):
        assert_in_send_order(records, results[number][0], number)
