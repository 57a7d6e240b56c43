"""Per-record produce errors (KIP-467): when a batch is refused because of
some of its records (a record without a key on a compacted topic, a
CreateTime timestamp outside message.timestamp.before.max.ms /
message.timestamp.after.max.ms), the broker names those records in the
Produce response's record_errors. librdkafka then fails exactly those with
the batch's error and the others with its "different record" error, which
an application may retry; without record_errors every record of the batch
fails as if it were bad (fjord once failed 100 records for 10 keyless
ones). librdkafka (2.16) applies record_errors to keyless records as
above, but for INVALID_TIMESTAMP it fails a batch whole in some cases, so
timestamps are checked with kafka-python, which fails exactly the named
records."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaProducer
from kafka.errors import InvalidRecordError, InvalidTimestampError

from conftest import running_broker

RECORDS = 100
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with running_broker(tmp_path_factory, ["cores=1"]) as instance:
        yield instance


def create_topic(broker, topic, config):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(30)


def produce_one_batch(broker, topic, records):
    """Produces (key, timestamp) records in one batch (a long linger, then
    flush); returns each record's delivery error code, None when acked."""
    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "linger.ms": 1000,
            "retries": 0,
            "enable.idempotence": False,
        }
    )
    outcomes = [Ellipsis] * len(records)

    def on_delivery(index):
        def delivered(error, _message):
            outcomes[index] = None if error is None else error.code()

        return delivered

    for index, (key, timestamp) in enumerate(records):
        producer.produce(
            topic,
            value=f"record {index}".encode(),
            key=key,
            timestamp=timestamp,
            partition=0,
            on_delivery=on_delivery(index),
        )
    assert producer.flush(30) == 0, "records were still unanswered"
    assert Ellipsis not in outcomes
    return outcomes


def assert_only_faulty_records_fail_with(outcomes, faulty, error_code):
    for index, outcome in enumerate(outcomes):
        if index in faulty:
            assert outcome == error_code, f"record {index}: {outcome}"
        else:
            assert outcome in (None, KafkaError._INVALID_DIFFERENT_RECORD), f"record {index}: {outcome}"
    # The batch held good records too: they fail as innocent bystanders,
    # not with the batch's error.
    assert outcomes.count(KafkaError._INVALID_DIFFERENT_RECORD) > 0


def committed_values(broker, topic):
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    try:
        while (message := consumer.poll(2)) is not None:
            assert message.error() is None, message.error()
            values.append(message.value())
    finally:
        consumer.close()
    return values


def test_keyless_records_on_a_compacted_topic_are_named_in_record_errors(broker, topic_name):
    create_topic(broker, topic_name, {"cleanup.policy": "compact"})
    keyless = set(range(3, RECORDS, 10))
    records = [(None if index in keyless else f"key-{index}".encode(), 0) for index in range(RECORDS)]
    outcomes = produce_one_batch(broker, topic_name, records)
    assert_only_faulty_records_fail_with(outcomes, keyless, KafkaError.INVALID_RECORD)
    # Retrying the good records alone succeeds.
    retried = produce_one_batch(broker, topic_name, [records[index] for index in range(RECORDS) if index not in keyless])
    assert retried == [None] * (RECORDS - len(keyless))
    assert len(committed_values(broker, topic_name)) == RECORDS - len(keyless)


def produce_one_batch_with_kafka_python(broker, topic, timestamps):
    """Produces one record per timestamp in one batch with kafka-python
    (which reports record_errors per record since KIP-467 support); returns
    each record's exception, None when acked."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=1000, retries=0)
    futures = [
        producer.send(topic, value=f"record {index}".encode(), partition=0, timestamp_ms=timestamp)
        for index, timestamp in enumerate(timestamps)
    ]
    producer.flush(30)
    outcomes = [future.exception if future.failed() else None for future in futures]
    producer.close()
    return outcomes


def assert_only_out_of_range_timestamps_named(outcomes, faulty):
    """Each named record fails with its own record error (kafka-python, like
    the Java client, raises it as InvalidTimestampError for a lone record
    and InvalidRecordError when several are named); the others fail as
    part of a batch with invalid records."""
    for index, outcome in enumerate(outcomes):
        if index in faulty:
            assert isinstance(outcome, (InvalidTimestampError, InvalidRecordError)), f"record {index}: {outcome!r}"
            assert f"message with offset {index} is out of range" in str(outcome), outcome
        else:
            assert outcome is not None and "invalid records" in str(outcome), f"record {index}: {outcome!r}"


def test_timestamps_outside_message_timestamp_before_max_ms_are_named_in_record_errors(broker, topic_name):
    create_topic(broker, topic_name, {"message.timestamp.before.max.ms": str(HOUR_MS)})
    now_ms = int(time.time() * 1000)
    stale = {0, 41, 99}
    timestamps = [now_ms - 2 * HOUR_MS if index in stale else now_ms for index in range(RECORDS)]
    assert_only_out_of_range_timestamps_named(produce_one_batch_with_kafka_python(broker, topic_name, timestamps), stale)
    assert committed_values(broker, topic_name) == []
    fresh = [timestamp for index, timestamp in enumerate(timestamps) if index not in stale]
    assert produce_one_batch_with_kafka_python(broker, topic_name, fresh) == [None] * len(fresh)
    assert len(committed_values(broker, topic_name)) == len(fresh)


def test_timestamps_beyond_the_default_message_timestamp_after_max_ms_are_named_in_record_errors(
    broker, topic_name
):
    """Kafka's default allows a record at most an hour ahead of the broker."""
    create_topic(broker, topic_name, {})
    now_ms = int(time.time() * 1000)
    timestamps = [now_ms + 2 * HOUR_MS if index == 7 else now_ms for index in range(20)]
    assert_only_out_of_range_timestamps_named(produce_one_batch_with_kafka_python(broker, topic_name, timestamps), {7})
    assert produce_one_batch_with_kafka_python(broker, topic_name, [now_ms + HOUR_MS // 2]) == [None]
