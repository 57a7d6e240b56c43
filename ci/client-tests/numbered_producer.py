"""Producer process for test_restart.py: an idempotent acks=all
confluent-kafka producer that sends the numbers 0 .. count-1 to the
partitions of a topic in turn (number % partitions), as fast as librdkafka
takes them with at most QUEUED_MAX unacknowledged (so a crash of the broker
lands in the middle of the stream), then flushes and exits.

Prints one line per delivery report, flushed at once so the test sees acks
as they happen: `ack PARTITION OFFSET NUMBER`, or `error NUMBER REASON`.
Usage: numbered_producer.py BOOTSTRAP TOPIC PARTITIONS COUNT"""

import sys

from confluent_kafka import Producer

FLUSH_DEADLINE_SECONDS = 120
QUEUED_MAX = 1000


def main():
    bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def on_delivery(error, message):
        if error is None:
            print(f"ack {message.partition()} {message.offset()} {message.value().decode()}", flush=True)
        else:
            print(f"error {message.value().decode()} {error}", flush=True)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "reconnect.backoff.max.ms": 200,
            "queue.buffering.max.messages": QUEUED_MAX,
        }
    )
    number = 0
    while number < count:
        try:
            producer.produce(topic, value=str(number).encode(), partition=number % partitions, on_delivery=on_delivery)
            number += 1
            producer.poll(0)
        except BufferError:
            producer.poll(0.05)
    remaining = producer.flush(FLUSH_DEADLINE_SECONDS)
    print(f"done produced={number} unflushed={remaining}", flush=True)
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
