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


def test_kafka_python_incremental_fetch_sessions_follow_many_partitions(broker, topic_name):
    """kafka-python fetches with KIP-227 sessions by default: after the
    first full fetch it names only partitions whose position changed and
    expects answers only for partitions with news. Records produced in
    rounds to some of six partitions while the consumer polls must all
    arrive exactly once, in order per partition, with the session open all
    along; guards against a session that drops a partition, repeats
    records, or answers in a way the client rejects (it would reset to
    full fetches, or stall)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    partitions = 6
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=partitions, replication_factor=1)])
    admin.close()

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    assigned = [TopicPartition(topic_name, index) for index in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    sent = {index: [] for index in range(partitions)}
    received = {index: [] for index in range(partitions)}

    def drain(expected):
        def done():
            for batch in consumer.poll(timeout_ms=100).values():
                for record in batch:
                    received[record.partition].append(record.value)
            return sum(len(values) for values in received.values()) >= expected
        wait_until(done, DEADLINE_SECONDS, "kafka-python incremental fetch")

    total = 0
    for round_number in range(8):
        # Each round touches a different pair of partitions, so most
        # partitions have no news in most fetches.
        for index in (round_number % partitions, (round_number * 5 + 1) % partitions):
            for number in range(10):
                value = f"round-{round_number}-{index}-{number}".encode()
                producer.send(topic_name, value=value, partition=index)
                sent[index].append(value)
                total += 1
        producer.flush(timeout=DEADLINE_SECONDS)
        drain(total)
    producer.close(timeout=DEADLINE_SECONDS)
    sessions = consumer._fetcher._session_handlers  # pylint: disable=protected-access
    session_ids = [handler.next_metadata.session_id for handler in sessions.values()]
    consumer.close()
    assert received == sent
    assert session_ids and all(session_id != 0 for session_id in session_ids), session_ids
