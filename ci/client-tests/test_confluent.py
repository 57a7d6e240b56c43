"""confluent-kafka (librdkafka) against fjord: the admin API for topics, the
idempotent producer with every codec, and assign-based consumption (fjord has
no group coordinator yet, so consumers never subscribe or commit)."""

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until

REQUEST_TIMEOUT_SECONDS = 15
CONSUME_DEADLINE_SECONDS = 60
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def admin(broker):
    """An AdminClient. Callers keep it in a variable until its futures are
    resolved: a collected client fails them with _DESTROY."""
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, name, partitions):
    client = admin(broker)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        request_timeout=REQUEST_TIMEOUT_SECONDS,
    )
    futures[name].result(timeout=REQUEST_TIMEOUT_SECONDS)


def topic_names(broker):
    return set(admin(broker).list_topics(timeout=REQUEST_TIMEOUT_SECONDS).topics)


def creation_error(broker, new_topic, **options):
    """The KafkaError code that creating `new_topic` fails with."""
    client = admin(broker)
    futures = client.create_topics([new_topic], request_timeout=REQUEST_TIMEOUT_SECONDS, **options)
    with pytest.raises(KafkaException) as raised:
        futures[new_topic.topic].result(timeout=REQUEST_TIMEOUT_SECONDS)
    return raised.value.args[0].code()


def producer(broker, **settings):
    return Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            **settings,
        }
    )


def consumer(broker, client_errors, **settings):
    """An assign-only consumer. It has a group.id (librdkafka wants one) but
    never subscribes or commits; client errors land in `client_errors`."""
    return Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "assign-only",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "error_cb": client_errors.append,
            **settings,
        }
    )


def produce_all(producer_client, topic, records, partition=None):
    """Produces (key, value, headers, timestamp_ms) records and returns the
    delivery reports as (partition, offset, value), failing on any error."""
    reports, failures = [], []

    def on_delivery(error, message):
        if error is not None:
            failures.append(error)
        else:
            reports.append((message.partition(), message.offset(), message.value()))

    for key, value, headers, timestamp_ms in records:
        arguments = {"key": key, "value": value, "headers": headers, "on_delivery": on_delivery}
        if partition is not None:
            arguments["partition"] = partition
        if timestamp_ms is not None:
            arguments["timestamp"] = timestamp_ms
        producer_client.produce(topic, **arguments)
        producer_client.poll(0)
    remaining = producer_client.flush(CONSUME_DEADLINE_SECONDS)
    assert remaining == 0, f"{remaining} records never delivered"
    assert failures == []
    assert len(reports) == len(records)
    return reports


def consume_until(consumer_client, done, deadline_seconds=CONSUME_DEADLINE_SECONDS):
    """Polls messages until `done(messages)` holds, failing on message errors
    other than partition EOF."""
    messages = []

    def poll_once():
        for message in consumer_client.consume(num_messages=1000, timeout=0.2):
            if message.error() is None:
                messages.append(message)
            elif message.error().code() != KafkaError._PARTITION_EOF:
                raise KafkaException(message.error())
        return done(messages)

    wait_until(poll_once, deadline_seconds, "consume")
    return messages


def test_admin_creates_lists_and_deletes_topics(broker, topic_name):
    """create_topics makes a topic with the requested partitions that
    list_topics shows; delete_topics removes it from the listing; guards
    against CreateTopics/DeleteTopics acknowledging without effect."""
    create_topic(broker, topic_name, partitions=3)

    listed = admin(broker).list_topics(timeout=REQUEST_TIMEOUT_SECONDS).topics
    assert topic_name in listed
    assert sorted(listed[topic_name].partitions) == [0, 1, 2]
    assert all(p.leader == 1 for p in listed[topic_name].partitions.values())

    client = admin(broker)
    futures = client.delete_topics([topic_name], request_timeout=REQUEST_TIMEOUT_SECONDS)
    futures[topic_name].result(timeout=REQUEST_TIMEOUT_SECONDS)
    assert topic_name not in topic_names(broker)


def test_admin_validate_only_creates_nothing(broker, topic_name):
    """A validate_only CreateTopics succeeds for a valid topic but leaves no
    topic behind; guards against validate_only being ignored."""
    client = admin(broker)
    futures = client.create_topics(
        [NewTopic(topic_name, num_partitions=2, replication_factor=1)],
        validate_only=True,
        request_timeout=REQUEST_TIMEOUT_SECONDS,
    )
    futures[topic_name].result(timeout=REQUEST_TIMEOUT_SECONDS)
    assert topic_name not in topic_names(broker)


def test_admin_create_errors_carry_kafka_error_codes(broker, topic_name):
    """Creating an existing topic, a topic with an illegal name, or one with
    replication factor 3 on a single broker fails with Kafka's codes
    TOPIC_ALREADY_EXISTS, INVALID_TOPIC_EXCEPTION (librdkafka: TOPIC_EXCEPTION) and
    INVALID_REPLICATION_FACTOR; guards against silent success or generic
    errors that clients cannot act on."""
    create_topic(broker, topic_name, partitions=1)

    assert creation_error(broker, NewTopic(topic_name, 1, 1)) == KafkaError.TOPIC_ALREADY_EXISTS
    assert creation_error(broker, NewTopic("bad/name", 1, 1)) == KafkaError.TOPIC_EXCEPTION
    assert (
        creation_error(broker, NewTopic(f"{topic_name}-rf3", 1, 3)) == KafkaError.INVALID_REPLICATION_FACTOR
    )
    assert (
        creation_error(broker, NewTopic(topic_name, 1, 1), validate_only=True)
        == KafkaError.TOPIC_ALREADY_EXISTS
    )
    assert f"{topic_name}-rf3" not in topic_names(broker)


@pytest.mark.parametrize("codec", CODECS)
def test_idempotent_acks_all_round_trip_is_exactly_once_in_order(broker, topic_name, codec):
    """An idempotent acks=all producer using `codec` gets a successful
    delivery report for every record, and an assigned consumer reads every
    record back exactly once, at the reported offsets, in per-partition
    produce order, with its key, value and headers intact; guards against
    codec handling, batch validation or offset assignment that loses,
    duplicates, reorders or corrupts records."""
    partitions = 3
    create_topic(broker, topic_name, partitions)
    count = 3000
    records = [
        (
            f"key-{number % 11}".encode(),
            f"{codec}-value-{number}-".encode() * (1 + number % 4),
            [("number", str(number).encode()), ("codec", codec.encode())],
            None,
        )
        for number in range(count)
    ]
    reports = produce_all(producer(broker, **{"compression.type": codec, "linger.ms": 5}), topic_name, records)

    expected = {}
    for partition, offset, value in reports:
        expected.setdefault(partition, []).append((offset, value))
    for partition in expected:
        expected[partition].sort()
        offsets = [offset for offset, _ in expected[partition]]
        assert offsets == list(range(len(offsets))), f"partition {partition} offsets are not dense from 0"

    client_errors = []
    reader = consumer(broker, client_errors)
    reader.assign([TopicPartition(topic_name, p, OFFSET_BEGINNING) for p in range(partitions)])
    messages = consume_until(reader, lambda got: len(got) >= count)
    # Anything more would be a duplicate: give it a moment to show up.
    extra = reader.consume(num_messages=10, timeout=1.0)
    reader.close()
    assert [m for m in extra if m.error() is None] == []

    by_record = {number: record for number, record in enumerate(records)}
    seen = {}
    for message in messages:
        headers = dict(message.headers())
        number = int(headers["number"])
        key, value, _, _ = by_record[number]
        assert (message.key(), message.value(), headers["codec"]) == (key, value, codec.encode())
        seen.setdefault(message.partition(), []).append((message.offset(), message.value()))
    assert seen == expected
    # Per-partition produce order: the numbers rise with the offsets.
    for partition_messages in seen.values():
        numbers = [int(value.split(b"-")[2]) for _, value in partition_messages]
        assert numbers == sorted(numbers)
    assert client_errors == [] or all(not e.fatal() for e in client_errors), client_errors


def test_assign_at_offset_and_seek_read_from_there(broker, topic_name):
    """Assigning a partition at offset 5 starts reading there, and seeking
    back to 2 re-reads from 2; guards against Fetch ignoring the requested
    offset after the first fetch session."""
    create_topic(broker, topic_name, partitions=1)
    produce_all(producer(broker), topic_name, [(None, f"v{n}".encode(), None, None) for n in range(10)], 0)

    reader = consumer(broker, [])
    reader.assign([TopicPartition(topic_name, 0, 5)])
    first = consume_until(reader, lambda got: len(got) >= 1)[0]
    assert (first.offset(), first.value()) == (5, b"v5")

    reader.seek(TopicPartition(topic_name, 0, 2))
    after_seek = consume_until(reader, lambda got: len(got) >= 3)
    reader.close()
    assert [(m.offset(), m.value()) for m in after_seek[:3]] == [(2, b"v2"), (3, b"v3"), (4, b"v4")]


def test_watermarks_report_log_start_and_end(broker, topic_name):
    """get_watermark_offsets is (0, 0) for an empty partition and (0, 7)
    after seven records; guards against ListOffsets earliest/latest or the
    Fetch high watermark being off by one."""
    create_topic(broker, topic_name, partitions=1)
    reader = consumer(broker, [])
    partition = TopicPartition(topic_name, 0)
    assert reader.get_watermark_offsets(partition, timeout=REQUEST_TIMEOUT_SECONDS) == (0, 0)

    produce_all(producer(broker), topic_name, [(None, b"x", None, None)] * 7, 0)

    assert reader.get_watermark_offsets(partition, timeout=REQUEST_TIMEOUT_SECONDS) == (0, 7)
    reader.close()


def test_offsets_for_times_finds_the_first_record_at_or_after_a_timestamp(broker, topic_name):
    """With a batch stamped an hour ago and one stamped half an hour ago, a
    timestamp between them resolves to the second batch's first offset, the
    first batch's exact timestamp to offset 0, and a future timestamp to the
    end (-1); guards against the time index returning the wrong batch or a
    stale offset."""
    create_topic(broker, topic_name, partitions=1)
    now_ms = int(time.time() * 1000)
    old_ms, recent_ms = now_ms - 3_600_000, now_ms - 1_800_000
    writer = producer(broker)
    produce_all(writer, topic_name, [(None, f"old{n}".encode(), None, old_ms + n) for n in range(4)], 0)
    produce_all(writer, topic_name, [(None, f"new{n}".encode(), None, recent_ms + n) for n in range(3)], 0)

    reader = consumer(broker, [])

    def offset_for(timestamp_ms):
        query = [TopicPartition(topic_name, 0, timestamp_ms)]
        (answer,) = reader.offsets_for_times(query, timeout=REQUEST_TIMEOUT_SECONDS)
        assert answer.error is None
        return answer.offset

    assert offset_for(old_ms) == 0
    assert offset_for(old_ms + 2) == 2
    assert offset_for(now_ms - 2_700_000) == 4
    assert offset_for(recent_ms + 2) == 6
    assert offset_for(now_ms + 3_600_000) in (-1, OFFSET_END)
    reader.close()


def test_long_poll_delivers_a_record_produced_while_the_consumer_waits(broker, topic_name):
    """A consumer waiting in a Fetch with fetch.wait.max.ms=8000 on an empty
    partition gets a record produced meanwhile well before the wait expires;
    guards against long-poll Fetches that sleep out their full max wait
    instead of waking on new data (or never return it)."""
    create_topic(broker, topic_name, partitions=1)
    wait_max_ms = 8000
    reader = consumer(broker, [], **{"fetch.wait.max.ms": wait_max_ms})
    reader.assign([TopicPartition(topic_name, 0, OFFSET_BEGINNING)])
    # Let the consumer resolve its start offset and park in a Fetch.
    assert consume_until(reader, lambda got: True, deadline_seconds=5) == []
    assert reader.poll(1.0) is None

    produce_all(producer(broker), topic_name, [(b"k", b"late arrival", None, None)], 0)
    acknowledged = time.monotonic()
    (message,) = consume_until(reader, lambda got: len(got) >= 1, deadline_seconds=wait_max_ms / 1000 * 2)
    latency_seconds = time.monotonic() - acknowledged
    reader.close()

    assert (message.offset(), message.key(), message.value()) == (0, b"k", b"late arrival")
    assert latency_seconds < wait_max_ms / 1000 / 2, f"record took {latency_seconds:.2f}s to arrive"
