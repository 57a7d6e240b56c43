"""Retention end to end: segments past `retention.bytes` or `retention.ms`
are deleted by the broker's periodic check (`log.retention.check.interval.ms`),
the log start offset moves up, and a consumer from the beginning starts
there and reads every remaining record in order."""

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker, wait_until

DEADLINE_SECONDS = 30
RECORDS = 300
VALUE_BYTES = 200


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory, ["log.retention.check.interval.ms=200"]) as instance:
        yield instance


def fill(broker, topic, configs):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic].result(timeout=DEADLINE_SECONDS)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "batch.num.messages": 5, "linger.ms": 0})
    for number in range(RECORDS):
        producer.produce(topic, f"{number:06d}".encode() + b"x" * VALUE_BYTES, partition=0)
    assert producer.flush(DEADLINE_SECONDS) == 0


def watermarks(broker, topic):
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-wm"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=DEADLINE_SECONDS)
    finally:
        consumer.close()


def read_from_beginning(broker, topic, end):
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-read", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    offsets = []

    def done():
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            assert message.value().startswith(f"{message.offset():06d}".encode())
            offsets.append(message.offset())
        return offsets and offsets[-1] == end - 1

    try:
        wait_until(done, DEADLINE_SECONDS, f"reading {topic} to its end")
    finally:
        consumer.close()
    return offsets


@pytest.mark.parametrize(
    "configs",
    [{"retention.bytes": "16384"}, {"retention.ms": "1000"}],
    ids=["retention.bytes", "retention.ms"],
)
def test_old_segments_are_deleted_and_consumers_start_at_the_new_log_start(broker, topic_name, configs):
    """Guards against retention that never runs (the check interval is a
    broker key), deletes the active segment or records still inside the
    limit, or leaves a log start that consumers cannot read from."""
    fill(broker, topic_name, {"segment.bytes": "8192", **configs})
    # The periodic check may already have run while the fill went on, so
    # the log start is whatever it is by now; every record is there.
    assert watermarks(broker, topic_name)[1] == RECORDS
    low = wait_until(
        lambda: watermarks(broker, topic_name)[0] or None, DEADLINE_SECONDS, "retention deleting old segments"
    )
    assert 0 < low < RECORDS, "the active segment stays"
    if "retention.bytes" in configs:
        kept_bytes = (RECORDS - low) * VALUE_BYTES
        assert kept_bytes >= 16384 - 8192, "segments inside retention.bytes stay"
    offsets = read_from_beginning(broker, topic_name, RECORDS)
    assert offsets == list(range(offsets[0], RECORDS))
    assert offsets[0] >= low
