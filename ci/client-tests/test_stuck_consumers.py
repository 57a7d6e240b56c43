"""Consumers that stop reading in the middle of a response must not stall
the broker. Fetches of data past the batch cache are sent from the segment
file with sendfile(2) on the shard's blocking pool, which also persists the
controller's changes and runs the engine's file operations: a send that
waited there for a client that reads nothing held a pool thread for as
long as the send timeout, and a few such clients held them all.

Here more connections than the pool has threads (the broker runs one shard)
each ask for tens of megabytes of file data and never read; topic creation,
produce and a healthy consumer must still answer as usual."""

import fcntl
import socket
import struct
import termios
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import produce_when_room, running_broker, wait_until
from raw_fetch import fetch_request

# More than BLOCKING_THREADS_PER_SHARD (4).
STUCK_CONNECTIONS = 6
# Beyond the engine's 64 MiB batch cache, so the first offsets are served
# from the segment file.
FILL_BYTES = 96 << 20
RECORD_BYTES = 64 << 10
STUCK_FETCH_BYTES = 32 << 20
ANSWER_DEADLINE_SECONDS = 10


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory, ["cores=1"]) as instance:
        yield instance


def queued_bytes(connection):
    """Bytes the broker sent that this connection has not read."""
    return struct.unpack("i", fcntl.ioctl(connection, termios.FIONREAD, b"\0\0\0\0"))[0]


def unread_fetch(broker, topic, correlation_id, offset):
    """A connection that asks for STUCK_FETCH_BYTES of `topic` from `offset`
    and reads nothing, with a small receive window the broker's sends fill
    at once."""
    connection = socket.socket()
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    connection.connect(("127.0.0.1", broker.port))
    connection.sendall(fetch_request(topic, correlation_id, offset, STUCK_FETCH_BYTES))
    return connection


def fill(broker, topic):
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1", "linger.ms": 5})
    record = bytes(RECORD_BYTES)
    for _ in range(FILL_BYTES // RECORD_BYTES):
        produce_when_room(producer, topic, record, 0)
    assert producer.flush(60) == 0, "the fill was not acknowledged"


def test_clients_that_never_read_do_not_stall_the_broker(broker, topic_name):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
    fill(broker, topic_name)

    stuck = []
    try:
        for correlation_id in range(STUCK_CONNECTIONS):
            stuck.append(unread_fetch(broker, topic_name, correlation_id, 0))
        for connection in stuck:
            wait_until(lambda: queued_bytes(connection) > 0, 30, "the stuck fetch's first bytes")

        created = f"after-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(created, 1, 1)])[created].result(ANSWER_DEADLINE_SECONDS)

        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        delivered = []
        producer.produce(created, b"still served", on_delivery=lambda e, m: delivered.append(e))
        assert producer.flush(ANSWER_DEADLINE_SECONDS) == 0
        assert delivered == [None]

        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": f"healthy-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        message = wait_until(
            lambda: consumer.poll(0.2), ANSWER_DEADLINE_SECONDS, "a healthy consumer's first record"
        )
        assert message.error() is None and message.offset() == 0
        consumer.close()
    finally:
        for connection in stuck:
            connection.close()


def received_until_closed(connection, deadline_seconds):
    """Reads everything the broker sends until it closes the connection;
    returns the byte count."""
    connection.settimeout(deadline_seconds)
    received = 0
    while True:
        try:
            chunk = connection.recv(1 << 20)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += len(chunk)


def test_a_response_stalled_past_connections_max_idle_ms_closes_the_connection(tmp_path_factory, topic_name):
    """Kafka closes a connection with no network activity for
    connections.max.idle.ms; a response the client stops reading is such a
    connection, whether the broker sends it from the segment file (offset 0,
    beyond the batch cache) or from memory (the last records). Guards against
    a stalled client holding its response's memory, and its connection,
    forever."""
    idle_ms = 2000
    with running_broker(tmp_path_factory, ["cores=1", f"connections.max.idle.ms={idle_ms}"]) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
        fill(broker, topic_name)
        records = FILL_BYTES // RECORD_BYTES
        stalled = {
            "file": unread_fetch(broker, topic_name, 0, 0),
            "memory": unread_fetch(broker, topic_name, 1, records - STUCK_FETCH_BYTES // (2 * RECORD_BYTES)),
        }
        for connection in stalled.values():
            wait_until(lambda: queued_bytes(connection) > 0, 30, "the stalled fetch's first bytes")
        try:
            # The stall is the input here, not a guess at when something is
            # done: nothing is read for a second past the idle limit, then
            # whatever the broker had sent is read, up to its closing.
            time.sleep(idle_ms / 1000 + 1)
            for name, connection in stalled.items():
                received = received_until_closed(connection, 30)
                assert received < STUCK_FETCH_BYTES // 4, (
                    f"the {name} response went on after a stall of {idle_ms + 1000} ms: {received} bytes"
                )
        finally:
            for connection in stalled.values():
                connection.close()
