"""Producer process for test_restart.py and the replication workload: an
idempotent acks=all confluent-kafka producer that sends the numbers
0 .. count-1 to the partitions of a topic in turn (number % partitions),
at most RATE a second (0: as fast as librdkafka takes them) with at most
QUEUED_MAX unacknowledged (so a crash of a broker lands in the middle of
the stream), then flushes and exits. SIGTERM stops the sending early; what
was handed to librdkafka is still flushed.

Prints one line per delivery report, flushed at once so the test sees acks
as they happen: `ack PARTITION OFFSET NUMBER`, or `error NUMBER REASON`;
`stopping produced=N` when SIGTERM ends the sending, and
`done produced=N unflushed=M` at the end.
Usage: numbered_producer.py BOOTSTRAP TOPIC PARTITIONS COUNT [RATE [JSON_CONFIG_OVERRIDES]]"""

import json
import signal
import sys
import time

from confluent_kafka import Producer

FLUSH_DEADLINE_SECONDS = 120
QUEUED_MAX = 1000

running = True


def stop(*_):
    global running
    running = False


def main():
    bootstrap, topic, partitions, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    overrides = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    signal.signal(signal.SIGTERM, stop)

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
            **overrides,
        }
    )
    next_due = time.monotonic()
    number = 0
    while number < count and running:
        wait = next_due - time.monotonic()
        if wait > 0:
            producer.poll(wait)
            continue
        try:
            producer.produce(topic, value=str(number).encode(), partition=number % partitions, on_delivery=on_delivery)
            number += 1
            if rate > 0:
                # Paced from now, not from the start: after a stall (the
                # queue full while a partition has no leader) the sending
                # resumes at the rate, without a burst to catch up.
                next_due = max(next_due, time.monotonic()) + 1 / rate
            producer.poll(0)
        except BufferError:
            producer.poll(0.05)
    if not running:
        print(f"stopping produced={number}", flush=True)
    remaining = producer.flush(FLUSH_DEADLINE_SECONDS)
    print(f"done produced={number} unflushed={remaining}", flush=True)
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
