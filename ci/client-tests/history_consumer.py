"""A consumer without a group for the replication workload, in its own
process: reads every partition of a topic from the beginning with CLIENT
(`confluent`: confluent-kafka, that is librdkafka; `kafka-python`) and
reports each record in the order the client returned it, until SIGTERM.

Usage: history_consumer.py CLIENT BOOTSTRAP TOPIC PARTITIONS

Prints one JSON object per line, in group_member.py's shapes:
{"event": "assigned", "partitions": [...]} once, {"event": "record",
"partition", "offset", "value"} per record, {"event": "error", "error"}
for an error the client reports, {"event": "closed"} at the end."""

import json
import signal
import sys

POLL_TIMEOUT_SECONDS = 0.2
# Failover: a client learns a partition's new leader from metadata at
# least this often, besides on a leadership error.
METADATA_MAX_AGE_MS = 2000

client, bootstrap, topic, partitions = sys.argv[1], sys.argv[2], sys.argv[3], range(int(sys.argv[4]))


def emit(**fields):
    print(json.dumps(fields), flush=True)


running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)


def read_with_confluent():
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        # Required by librdkafka even without subscribe(); nothing is committed.
        "group.id": f"history-{topic}",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
    })
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
    emit(event="assigned", partitions=list(partitions))
    while running:
        for message in consumer.consume(num_messages=500, timeout=POLL_TIMEOUT_SECONDS):
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    emit(event="error", error=str(message.error()))
                continue
            emit(event="record", partition=message.partition(), offset=message.offset(),
                 value=message.value().decode())
    consumer.close()


def read_with_kafka_python():
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
    )
    assigned = [TopicPartition(topic, partition) for partition in partitions]
    consumer.assign(assigned)
    consumer.seek_to_beginning(*assigned)
    emit(event="assigned", partitions=list(partitions))
    while running:
        batches = consumer.poll(timeout_ms=int(POLL_TIMEOUT_SECONDS * 1000))
        for records in batches.values():
            for record in records:
                emit(event="record", partition=record.partition, offset=record.offset,
                     value=record.value.decode())
    consumer.close()


{"confluent": read_with_confluent, "kafka-python": read_with_kafka_python}[client]()
emit(event="closed")
