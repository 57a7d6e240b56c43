"""Durability and idempotence across a broker crash: kill -9 in the middle of
a full-speed idempotent produce, restart on the same data, and check what a
consumer reads against every acknowledgement."""

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import wait_until
from workload import ProducerProcess

PARTITIONS = 3
ACKS_BEFORE_KILL = 3000
RECORDS = 30000
DEADLINE_SECONDS = 120


def read_everything(broker, topic):
    """Every record in the topic up to the high watermarks, as
    {partition: [(offset, number)]}."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "restart-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(PARTITIONS)}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    records = {p: [] for p in range(PARTITIONS)}

    def caught_up():
        for message in consumer.consume(num_messages=5000, timeout=0.2):
            if message.error() is None:
                records[message.partition()].append((message.offset(), int(message.value())))
            elif message.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consume error: {message.error()}")
        return all(len(records[p]) >= ends[p] for p in range(PARTITIONS))

    wait_until(caught_up, DEADLINE_SECONDS, "reading the topic back")
    consumer.close()
    return ends, records


def test_acked_records_survive_kill_9_exactly_once_in_order(broker, topic_name):
    """An idempotent acks=all producer writing at full speed to three
    partitions through a kill -9 and restart of fjord loses no acknowledged
    record, duplicates none (the producer's retries of batches the broker
    had already written are recognised by their sequence numbers), and
    every partition holds its numbers in production order at exactly the
    offsets the acknowledgements named; guards against acking before data is
    written, producer state lost across restart, and recovery that truncates
    or replays acknowledged batches."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])[topic_name].result(timeout=30)

    producer = ProducerProcess(broker.bootstrap, topic_name, PARTITIONS, RECORDS)
    wait_until(lambda: len(producer.acks()) >= ACKS_BEFORE_KILL, DEADLINE_SECONDS, "acks before the kill")
    acks_at_kill = len(producer.acks())
    broker.restart_after_kill9()
    acks_at_restart = len(producer.acks())
    returncode, stderr = producer.finish(DEADLINE_SECONDS)

    assert returncode == 0, f"producer failed: {producer.lines[-3:]} {stderr[-2000:]}"
    assert producer.errors() == []
    acks = producer.acks()
    assert len(acks) == RECORDS
    assert acks_at_restart < RECORDS, "everything was acknowledged before the restart"

    ends, records = read_everything(broker, topic_name)

    numbers = [number for partition in records.values() for _, number in partition]
    assert len(numbers) == len(set(numbers)), "a number was written twice"
    for partition, partition_records in records.items():
        assert [offset for offset, _ in partition_records] == list(range(ends[partition]))
        partition_numbers = [number for _, number in partition_records]
        assert partition_numbers == sorted(partition_numbers), f"partition {partition} out of order"
        assert all(number % PARTITIONS == partition for number in partition_numbers)
    # Every acknowledged record sits exactly where its acknowledgement said.
    located = {(partition, offset): number for partition, rs in records.items() for offset, number in rs}
    assert {(p, o): v for p, o, v in acks} == {(p, o): located.get((p, o)) for p, o, _ in acks}
    # Everything the producer flushed was acknowledged: the log holds exactly the acks.
    assert sorted(numbers) == sorted(v for _, _, v in acks)
