"""The broker's `fetch.max.bytes` caps a Fetch response whatever the client
asks, as in Kafka, so a response read from disk into memory stays bounded;
a real consumer that asks for more still reads everything, in more fetches.
A connection's Fetches are answered one at a time, so a client pipelining
them makes the broker hold one response, not many."""

import socket
import struct
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import produce_when_room, running_broker, wait_until
from raw_fetch import fetch_request, receive_exactly, response_size

FETCH_MAX_BYTES = 1 << 20
RECORD_BYTES = 16 << 10
RECORDS = 512
# The producer's batch.size: a response may exceed the cap by one batch
# (the first partition with data always gets one, KIP-74).
BATCH_BYTES = 256 << 10
CLIENT_FETCH_BYTES = 64 << 20
# Response, topic and partition headers.
HEADERS_BYTES = 4096


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory, [f"fetch.max.bytes={FETCH_MAX_BYTES}"]) as instance:
        yield instance


def test_fetch_max_bytes_caps_a_response_and_consumers_still_read_everything(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "batch.size": BATCH_BYTES, "linger.ms": 5})
    for index in range(RECORDS):
        produce_when_room(producer, topic_name, index.to_bytes(4, "big") + bytes(RECORD_BYTES - 4), 0)
    assert producer.flush(60) == 0

    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as connection:
        connection.sendall(fetch_request(topic_name, 1, 0, CLIENT_FETCH_BYTES))
        size = response_size(connection)
    assert FETCH_MAX_BYTES // 2 < size <= FETCH_MAX_BYTES + BATCH_BYTES + HEADERS_BYTES, (
        f"a fetch asking {CLIENT_FETCH_BYTES} bytes of {RECORDS * RECORD_BYTES} got a {size}-byte response"
    )

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"{topic_name}-reader",
            "enable.auto.commit": False,
            "fetch.max.bytes": CLIENT_FETCH_BYTES,
            "max.partition.fetch.bytes": CLIENT_FETCH_BYTES,
            "receive.message.max.bytes": CLIENT_FETCH_BYTES + (1 << 20),
        }
    )
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    seen = []

    def read_everything():
        for message in consumer.consume(RECORDS, 0.2):
            assert message.error() is None, message.error()
            seen.append(int.from_bytes(message.value()[:4], "big"))
        return len(seen) >= RECORDS

    wait_until(read_everything, 60, "every record")
    consumer.close()
    assert seen == list(range(RECORDS))


LONG_POLL_MS = 1500


def test_pipelined_fetches_are_answered_one_at_a_time(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)

    # Two long polls of the empty partition, sent together: the second may
    # only start once the first was answered, so it answers a whole long
    # poll later (the broker never answers an unmet poll early).
    with socket.create_connection(("127.0.0.1", broker.port), timeout=30) as connection:
        connection.sendall(
            fetch_request(topic_name, 1, 0, FETCH_MAX_BYTES, LONG_POLL_MS)
            + fetch_request(topic_name, 2, 0, FETCH_MAX_BYTES, LONG_POLL_MS)
        )
        answered_at = {}
        for _ in range(2):
            (size,) = struct.unpack(">i", receive_exactly(connection, 4))
            (correlation_id,) = struct.unpack(">i", receive_exactly(connection, size)[:4])
            answered_at[correlation_id] = time.monotonic()
    gap = answered_at[2] - answered_at[1]
    assert gap >= 0.8 * LONG_POLL_MS / 1000, (
        f"the second fetch was answered {gap:.3f} s after the first: both were being answered at once"
    )
