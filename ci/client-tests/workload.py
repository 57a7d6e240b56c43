"""Client processes whose every event a test records, and the replication
scenarios' workload built from them.

Each client runs in a process of its own (so a test can SIGKILL it, and
clients do not share the test's interpreter), reporting one line per event
that a reader thread gathers:
  - `ProducerProcess`: numbered_producer.py, an idempotent acks=all
    confluent-kafka producer; one line per delivery report.
  - `Member`: group_member.py, one confluent-kafka consumer-group member
    that commits what it processed; JSON events.
  - `HistoryConsumer`: history_consumer.py, a consumer without a group
    (confluent-kafka or kafka-python) reading every partition from the
    beginning; JSON events in group_member.py's shapes.

`Workload` runs one producer and three consumers (one of each kind) against
a cluster while a scenario injects faults, then hands checker.py its
history, after telling whether every consumer went on to read everything."""

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from conftest import wait_until

PRODUCER = Path(__file__).with_name("numbered_producer.py")
MEMBER = Path(__file__).with_name("group_member.py")
HISTORY_CONSUMER = Path(__file__).with_name("history_consumer.py")
DEADLINE_SECONDS = 60


class ProducerProcess:
    """numbered_producer.py in a subprocess, its report lines collected by a
    reader thread: `count` numbered records over `partitions`, at most
    `rate` a second (0: as fast as librdkafka takes them), with librdkafka
    `config` overrides."""

    def __init__(self, bootstrap, topic, partitions, count, rate=0, config=None):
        self.process = subprocess.Popen(
            [sys.executable, str(PRODUCER), bootstrap, topic, str(partitions), str(count),
             str(rate), json.dumps(config or {})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.split())

    def acks(self):
        """(partition, offset, number) of every acknowledged record."""
        return [(int(p), int(o), int(v)) for kind, p, o, v in (l for l in list(self.lines) if l[0] == "ack")]

    def acked_count(self, partition=None):
        return sum(1 for p, _, _ in self.acks() if partition is None or p == partition)

    def errors(self):
        return [" ".join(line) for line in list(self.lines) if line[0] == "error"]

    def produced(self):
        """How many numbers (0 .. n-1) were handed to librdkafka, once the
        producer has stopped sending; None before."""
        for line in self.lines:
            if line[0] in ("stopping", "done"):
                return int(line[1].removeprefix("produced="))
        return None

    def finish(self, deadline_seconds):
        returncode = self.process.wait(timeout=deadline_seconds)
        self.reader.join(timeout=deadline_seconds)
        return returncode, self.process.stderr.read()

    def stop(self, deadline_seconds):
        """Stops sending (SIGTERM), waits for the outstanding deliveries;
        returns what `finish` does."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish(deadline_seconds)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_SECONDS)


class EventProcess:
    """A client script in a subprocess printing one JSON event a line; its
    events gathered by a thread. SIGTERM makes it close and print
    {"event": "closed"}."""

    def __init__(self, name, arguments):
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self.lock:
                self.events.append(json.loads(line))

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def of_kind(self, kind):
        return [event for event in self.snapshot() if event["event"] == kind]

    def values(self):
        return {event["value"] for event in self.of_kind("record")}

    def kill9(self):
        self.process.kill()
        self.process.wait(timeout=DEADLINE_SECONDS)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=DEADLINE_SECONDS)
        self.reader.join(timeout=10)
        assert self.of_kind("closed"), f"{self.name} did not close cleanly: {self.process.stderr.read()[-2000:]}"


class Member(EventProcess):
    """group_member.py: one member of `group` on `topic`, through
    `broker.bootstrap`, with consumer `overrides`."""

    def __init__(self, broker, topic, group, name, **overrides):
        super().__init__(name, [str(MEMBER), broker.bootstrap, topic, group, name, json.dumps(overrides)])

    def owned(self):
        owned = set()
        for event in self.snapshot():
            if event["event"] == "assigned":
                owned |= set(event["partitions"])
            elif event["event"] in ("revoked", "lost"):
                owned -= set(event["partitions"])
        return owned


class HistoryConsumer(EventProcess):
    """history_consumer.py with `client` ("confluent" or "kafka-python")."""

    def __init__(self, client, bootstrap, topic, partitions):
        super().__init__(client, [str(HISTORY_CONSUMER), client, bootstrap, topic, str(partitions)])


# The producer's librdkafka settings for failover: a leader that stops
# answering holds a produce request at most this long before librdkafka
# retries it (idempotent, so without duplicates), and metadata is refreshed
# often enough to find a new leader within a scenario.
WORKLOAD_PRODUCER_CONFIG = {
    "request.timeout.ms": 10000,
    "topic.metadata.refresh.interval.ms": 1000,
}
# Records a second: enough to keep every partition busy through each fault,
# little enough that three debug brokers and the clients share two cores
# without missing heartbeats.
WORKLOAD_RATE = 200
# Far more than a scenario sends at WORKLOAD_RATE: the producer runs until
# stopped.
WORKLOAD_RECORDS_MAX = 10**9


class Workload:
    """An idempotent acks=all producer sending numbered records to every
    partition of `topic`, and three consumers recording what they read: a
    confluent-kafka and a kafka-python consumer without a group, and one
    confluent-kafka group member committing after each batch."""

    def __init__(self, cluster, topic, partitions, group):
        self.topic = topic
        self.partitions = partitions
        self.producer = ProducerProcess(cluster.bootstrap, topic, partitions, WORKLOAD_RECORDS_MAX,
                                        WORKLOAD_RATE, WORKLOAD_PRODUCER_CONFIG)
        self.consumers = [
            HistoryConsumer("confluent", cluster.bootstrap, topic, partitions),
            HistoryConsumer("kafka-python", cluster.bootstrap, topic, partitions),
            Member(cluster, topic, group, "group-member"),
        ]

    def wait_for_acks(self, more, deadline_seconds, partition=None, what="acks"):
        """Waits until `more` records (of `partition`, or of any) beyond
        those acknowledged now are acknowledged."""
        target = self.producer.acked_count(partition) + more
        wait_until(lambda: self.producer.acked_count(partition) >= target, deadline_seconds,
                   f"{more} more acks{'' if partition is None else f' on partition {partition}'}: {what}")

    def stop_producer(self):
        """Stops the producer and waits for its outstanding deliveries;
        returns the history's produced and deliveries."""
        returncode, stderr = self.producer.stop(DEADLINE_SECONDS)
        assert returncode == 0, f"producer: {self.producer.lines[-3:]} {stderr[-2000:]}"
        deliveries = [{"value": str(number), "partition": partition, "offset": offset}
                      for partition, offset, number in self.producer.acks()]
        deliveries += [{"value": line.split()[1], "error": line} for line in self.producer.errors()]
        return {"produced": self.producer.produced(), "deliveries": deliveries}

    def lagging_consumers(self, ends):
        """name -> {partition: the offset after the last it read} of the
        consumers that have not yet read every partition up to `ends`
        (partition -> offset)."""
        lagging = {}
        for consumer in self.consumers:
            read_to = dict.fromkeys(ends, 0)
            for event in consumer.of_kind("record"):
                partition = event["partition"]
                read_to[partition] = max(read_to[partition], event["offset"] + 1)
            if any(read_to[partition] < end for partition, end in ends.items()):
                lagging[consumer.name] = read_to
        return lagging

    def stop_consumers(self):
        """Stops the consumers; returns the history's consumers."""
        for consumer in self.consumers:
            consumer.stop()
        return {"consumers": {consumer.name: consumer.snapshot() for consumer in self.consumers}}

    def kill(self):
        """Ends every process at once (a failed scenario's cleanup)."""
        self.producer.kill()
        for consumer in self.consumers:
            if consumer.process.poll() is None:
                consumer.kill9()


def read_partitions(bootstrap, topic, ends, deadline_seconds):
    """Every record of `topic` below `ends` (partition -> offset), read from
    the beginning by a fresh consumer: partition -> [(offset, value)]."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{topic}-healed-read",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(topic, partition, 0) for partition in ends])
    records = {partition: [] for partition in ends}
    try:
        def reached(partition):
            read = records[partition]
            return ends[partition] == 0 or (read and read[-1][0] >= ends[partition] - 1)

        def read_to_the_ends():
            for message in consumer.consume(num_messages=5000, timeout=0.2):
                if message.error() is None:
                    if message.offset() < ends[message.partition()]:
                        records[message.partition()].append((message.offset(), message.value().decode()))
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {message.error()}")
            return all(reached(partition) for partition in ends)

        wait_until(read_to_the_ends, deadline_seconds, f"reading {topic} up to {ends}")
    finally:
        consumer.close()
    return records
