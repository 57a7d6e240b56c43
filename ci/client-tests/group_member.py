"""One consumer-group member for test_groups.py and the replication workload,
in its own process so a test can SIGKILL it (no LeaveGroup) or stop it
cleanly (SIGTERM: close()).

Usage: group_member.py BOOTSTRAP TOPIC GROUP NAME [JSON_CONFIG_OVERRIDES]

Prints one JSON object per line: {"event": "assigned"|"revoked"|"lost",
"partitions": [...]} from the rebalance callbacks, {"event": "record",
"partition", "offset", "value"} for each record processed, and
{"event": "committed", "offsets": {partition: next offset}} after each
synchronous commit of what was processed (so every record is processed
before its offset is committed), naming the offsets the group coordinator
acknowledged."""

import json
import signal
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException

bootstrap, topic, group, name = sys.argv[1:5]
overrides = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
config = {
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "client.id": name,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "topic.metadata.refresh.interval.ms": 2000,
}
config.update(overrides)
for key in [key for key, value in config.items() if value is None]:
    del config[key]


def emit(**fields):
    print(json.dumps(fields), flush=True)


running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)

consumer = Consumer(config)
consumer.subscribe(
    [topic],
    on_assign=lambda _, partitions: emit(event="assigned", partitions=[p.partition for p in partitions]),
    on_revoke=lambda _, partitions: emit(event="revoked", partitions=[p.partition for p in partitions]),
    on_lost=lambda _, partitions: emit(event="lost", partitions=[p.partition for p in partitions]),
)
emit(event="started")
while running:
    processed = False
    for message in consumer.consume(num_messages=100, timeout=0.2):
        if message.error():
            if message.error().code() != KafkaError._PARTITION_EOF:
                emit(event="error", error=str(message.error()))
            continue
        emit(event="record", partition=message.partition(), offset=message.offset(), value=message.value().decode())
        processed = True
    if processed:
        try:
            committed = consumer.commit(asynchronous=False)
            emit(event="committed", offsets={
                str(tp.partition): tp.offset for tp in committed if tp.error is None and tp.offset >= 0
            })
        except KafkaException as error:
            emit(event="commit_failed", error=str(error))
consumer.close()
emit(event="closed")
