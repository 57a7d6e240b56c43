"""kafka-python (a pure-Python client with its own protocol code) against
fjord: produce with keys, consume by assignment without a group."""

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import wait_until

DEADLINE_SECONDS = 30


def test_kafka_python_round_trip_with_keys_from_the_beginning(broker, topic_name):
    """Records sent by KafkaProducer (acks=all) are acknowledged at
    consecutive offsets and read back in order, keys included, by a
    group-less KafkaConsumer after assign + seek_to_beginning; guards against
    version negotiation or encodings that only librdkafka tolerates."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    sent = [(f"key-{number}".encode(), f"value-{number}".encode()) for number in range(50)]
    futures = [producer.send(topic_name, key=key, value=value, partition=0) for key, value in sent]
    metadata = [future.get(timeout=DEADLINE_SECONDS) for future in futures]
    producer.close(timeout=DEADLINE_SECONDS)
    assert [m.offset for m in metadata] == list(range(len(sent)))

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False)
    partition = TopicPartition(topic_name, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    received = []

    def all_received():
        for records in consumer.poll(timeout_ms=200).values():
            received.extend(records)
        return len(received) >= len(sent)

    wait_until(all_received, DEADLINE_SECONDS, "kafka-python consume")
    consumer.close()
    assert [(r.offset, r.key, r.value) for r in received] == [
        (offset, key, value) for offset, (key, value) in enumerate(sent)
    ]
