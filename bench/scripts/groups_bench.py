"""Group coordinator benchmark against a running broker (fjord or any
Kafka-compatible one):

1. rebalance time: N confluent-kafka consumers (threads of this process,
   each with its own librdkafka instance) subscribe to a P-partition topic;
   time from the first subscribe until every partition is owned by exactly
   one member; then one member closes (LeaveGroup) and the time until the
   others own everything again;
2. offset-commit throughput: one client committing offsets of all P
   partitions synchronously (each commit is acknowledged only once flushed),
   for a fixed time; commits/s and latency percentiles.

Usage: groups_bench.py BOOTSTRAP [--members 10] [--partitions 100]
       [--commit-seconds 10] [--protocol classic|consumer]
Prints one JSON object with every figure."""

import argparse
import json
import threading
import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


class Member(threading.Thread):
    def __init__(self, config, topic):
        super().__init__(daemon=True)
        self.consumer = Consumer(config)
        self.topic = topic
        self.owned = set()
        self.lock = threading.Lock()
        self.running = True

    def on_assign(self, _, partitions):
        with self.lock:
            self.owned |= {p.partition for p in partitions}

    def on_revoke(self, _, partitions):
        with self.lock:
            self.owned -= {p.partition for p in partitions}

    def run(self):
        self.consumer.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_revoke)
        while self.running:
            self.consumer.poll(0.05)
        self.consumer.close()

    def snapshot(self):
        with self.lock:
            return set(self.owned)


def exact_split(members, partitions):
    owned = [member.snapshot() for member in members]
    return all(owned) and sum(len(o) for o in owned) == partitions and set().union(*owned) == set(range(partitions))


def wait(condition, deadline_seconds):
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_seconds:
            raise TimeoutError("no stable assignment in time")
        time.sleep(0.01)
    return time.monotonic() - start


def rebalance(bootstrap, topic, members_count, partitions, protocol):
    group = f"bench-rebalance-{uuid.uuid4().hex[:8]}"
    config = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    if protocol == "consumer":
        config["group.protocol"] = "consumer"
    else:
        config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    members = [Member(config, topic) for _ in range(members_count)]
    start = time.monotonic()
    for member in members:
        member.start()
    wait(lambda: exact_split(members, partitions), 120)
    join_seconds = time.monotonic() - start
    leaving = members.pop()
    start = time.monotonic()
    leaving.running = False
    leaving.join()
    wait(lambda: exact_split(members, partitions), 120)
    leave_seconds = time.monotonic() - start
    for member in members:
        member.running = False
    for member in members:
        member.join()
    return {"members": members_count, "partitions": partitions, "join_seconds": join_seconds, "leave_seconds": leave_seconds}


def commit_throughput(bootstrap, topic, partitions, seconds):
    group = f"bench-commit-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    latencies = []
    offset = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        offset += 1
        start = time.monotonic()
        consumer.commit(offsets=[TopicPartition(topic, p, offset) for p in range(partitions)], asynchronous=False)
        latencies.append(time.monotonic() - start)
    consumer.close()
    latencies.sort()
    return {
        "commits": len(latencies),
        "partitions_per_commit": partitions,
        "commits_per_second": len(latencies) / seconds,
        "partition_offsets_per_second": len(latencies) * partitions / seconds,
        "latency_ms_p50": percentile(latencies, 0.5) * 1000,
        "latency_ms_p99": percentile(latencies, 0.99) * 1000,
        "latency_ms_max": latencies[-1] * 1000,
    }


def wait_for_coordinator(admin):
    """Until ListGroups succeeds: the coordinator has loaded its groups."""
    deadline = time.monotonic() + 120
    while True:
        try:
            admin.list_consumer_groups().result(timeout=10)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--commit-seconds", type=float, default=10)
    parser.add_argument("--protocol", choices=["classic", "consumer"], default="classic")
    arguments = parser.parse_args()
    topic = f"bench-groups-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": arguments.bootstrap})
    wait_for_coordinator(admin)
    admin.create_topics([NewTopic(topic, arguments.partitions, 1)])[topic].result(timeout=60)
    report = {
        "protocol": arguments.protocol,
        "rebalance": rebalance(arguments.bootstrap, topic, arguments.members, arguments.partitions, arguments.protocol),
        "commit": commit_throughput(arguments.bootstrap, topic, arguments.partitions, arguments.commit_seconds),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
