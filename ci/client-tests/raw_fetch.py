"""Requests written by hand, for tests that need what no client library
lets them do: ask for more than a client would, never read the answer, or
ask one chosen node (a client library sends where its metadata says)."""

import socket
import struct

from kafka.protocol.consumer import ListOffsetsRequest, ListOffsetsResponse

IO_TIMEOUT_SECONDS = 30


def kafka_string(value):
    encoded = value.encode()
    return struct.pack(">h", len(encoded)) + encoded


def fetch_request(topic, correlation_id, offset, max_bytes, max_wait_ms=0):
    """A Fetch v4 frame for partition 0 of `topic` from `offset`, with
    `max_bytes` as both the response's and the partition's limit, waiting
    up to `max_wait_ms` for at least one byte."""
    header = struct.pack(">hhi", 1, 4, correlation_id) + kafka_string("raw-fetch")
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0)
    body += struct.pack(">i", 1) + kafka_string(topic)
    body += struct.pack(">iiqi", 1, 0, offset, max_bytes)
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def receive_exactly(connection, count):
    received = bytearray()
    while len(received) < count:
        chunk = connection.recv(count - len(received))
        if not chunk:
            raise ConnectionError("the broker closed the connection mid-response")
        received += chunk
    return bytes(received)


def response_size(connection):
    """Reads one whole response frame; returns its size in bytes."""
    (size,) = struct.unpack(">i", receive_exactly(connection, 4))
    receive_exactly(connection, size)
    return size


def call(address, request, response_class, version, correlation_id=1,
         timeout_seconds=IO_TIMEOUT_SECONDS):
    """Sends `request` (a kafka-python protocol message, encoded by
    kafka-python from Kafka's own schemas) as `version` to `address`, a
    (host, port), on a connection of its own, and decodes the answer.
    Raises OSError if the node cannot be reached or does not answer within
    `timeout_seconds`."""
    request.with_header(correlation_id=correlation_id, client_id="fjord-tests")
    frame = request.encode(version=version, header=True, framed=True)
    with socket.create_connection(address, timeout=timeout_seconds) as connection:
        connection.sendall(frame)
        (size,) = struct.unpack(">i", receive_exactly(connection, 4))
        body = receive_exactly(connection, size)
    response = response_class.decode(body, version=version, header=True)
    assert response.header.correlation_id == correlation_id
    return response


def list_offset(address, topic, partition, timestamp, replica_id=-1, version=7,
                timeout_seconds=IO_TIMEOUT_SECONDS):
    """ListOffsets for one partition at `timestamp` (-1 latest, -2
    earliest), asked of `address` alone as `replica_id` (-1 a consumer,
    -2 the debugging id any replica answers with its own offsets): the
    offset, or None when the node refuses (an error code) or cannot be
    asked."""
    request = ListOffsetsRequest(
        replica_id=replica_id,
        isolation_level=0,
        topics=[ListOffsetsRequest.ListOffsetsTopic(
            name=topic,
            partitions=[ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                partition_index=partition, current_leader_epoch=-1, timestamp=timestamp)],
        )],
    )
    try:
        response = call(address, request, ListOffsetsResponse, version,
                        timeout_seconds=timeout_seconds)
    except OSError:
        return None
    [answer] = response.topics[0].partitions
    return answer.offset if answer.error_code == 0 else None
