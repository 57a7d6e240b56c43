"""The broker raises its soft open-files limit to the hard one at start, as
the JVM does for Kafka: each partition holds a descriptor, and services
often start with a soft limit of 1,024 under a far higher hard one.

The failure guarded against: a broker started with a low soft limit runs
out of descriptors once it holds more partitions than that (its metadata
log and new connections fail with EMFILE), although the system allows
more."""

import resource
import subprocess

import pytest

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker

SOFT_LIMIT = 256
PARTITIONS = 300


class LowSoftLimitBroker(Broker):
    """A broker whose process starts with `SOFT_LIMIT` open files (soft),
    the hard limit left as this process has it."""

    def before_exec(self):
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT_LIMIT, hard))


def open_files_limits(pid):
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_more_partitions_than_the_soft_limit_at_start(tmp_path, topic_name):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > PARTITIONS * 2, "the test needs a hard limit above its partitions"
    broker = LowSoftLimitBroker(tmp_path / "data")
    broker.start()
    try:
        assert open_files_limits(broker.process.pid) == (hard, hard)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic_name, PARTITIONS, 1)])[topic_name].result(60)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for partition in range(PARTITIONS):
            producer.produce(topic_name, value=b"%d" % partition, partition=partition)
        assert producer.flush(60) == 0
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic_name,
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic_name, partition, 0)
                         for partition in range(PARTITIONS)])
        values = set()
        for _ in range(600):
            for message in consumer.consume(num_messages=PARTITIONS, timeout=0.1):
                assert message.error() is None, message.error()
                values.add(int(message.value()))
            if len(values) == PARTITIONS:
                break
        consumer.close()
        assert values == set(range(PARTITIONS))
    finally:
        broker.stop()



def test_a_metadata_log_that_cannot_be_written_stops_the_broker(tmp_path, topic_name):
    """openraft stops this node's quorum member once its metadata log
    cannot be written (here: the directory made immutable, as a failing
    disk would refuse writes): the broker exits with an error saying so,
    for a supervisor to restart it, instead of serving on from a frozen
    image that no longer follows the cluster."""
    broker = Broker(tmp_path / "data")
    broker.start()
    log_dir = tmp_path / "data" / "__cluster_metadata-0"
    try:
        if subprocess.run(["chattr", "+i", str(log_dir)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is refused on this file system")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        try:
            admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
        except KafkaException:
            pass  # refused (KAFKA_STORAGE_ERROR) or cut off: what matters is how the broker ends
        assert broker.process.wait(timeout=60) != 0
        assert "the controller quorum member failed" in broker.log_text()
    finally:
        subprocess.run(["chattr", "-i", str(log_dir)], capture_output=True)
        if broker.process.poll() is None:
            broker.process.kill()
