"""The broker's `fetch.max.bytes` caps a Fetch response whatever the client
asks, as in Kafka, so a response read from disk into memory stays bounded;
a real consumer that asks for more still reads everything, in more fetches."""

import socket

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import produce_when_room, running_broker, wait_until
from raw_fetch import fetch_request, response_size

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
