"""A full disk, for real: the broker's data directory is a small ext4 file
system (a loop-mounted image), nearly filled by another file, that an
idempotent acks=all producer then fills. A write that fails must never be
acknowledged; the broker keeps answering; once space is freed and the
broker restarted, every acknowledged record is there exactly once and in
order, and producing works again."""

import os
import shutil
import subprocess

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, produce_when_room, wait_until

IMAGE_BYTES = 96 << 20
HEADROOM_BYTES = 12 << 20
RECORD_BYTES = 8 << 10
SEGMENT_BYTES = 4 << 20
DEADLINE_SECONDS = 60


@pytest.fixture
def small_file_system(tmp_path):
    """A fresh ext4 file system of IMAGE_BYTES mounted under tmp_path."""
    image = tmp_path / "fs.img"
    mount = tmp_path / "mnt"
    mount.mkdir()
    mkfs = shutil.which("mkfs.ext4", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert mkfs, "mkfs.ext4 is missing: ci/install-test-deps installs e2fsprogs"
    with open(image, "wb") as file:
        file.truncate(IMAGE_BYTES)
    subprocess.run([mkfs, "-q", "-F", str(image)], check=True)
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"this machine cannot loop-mount a file system: {mounted.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def value_of(number):
    return f"{number:08d}".encode().ljust(RECORD_BYTES, b"x")


def fill_until_refused(bootstrap, topic):
    """Produces numbered records until one is refused; returns the numbers
    acknowledged, in order, and the errors reported."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 8000,
        }
    )
    acked, errors = [], []

    def delivered(error, message):
        if error is None:
            acked.append(int(message.value()[:8]))
        else:
            errors.append(error)

    # Three times what fits in the headroom: the disk fills long before.
    for number in range(3 * HEADROOM_BYTES // RECORD_BYTES):
        if errors:
            break
        produce_when_room(producer, topic, value_of(number), 0, on_delivery=delivered)
        producer.poll(0)
    producer.flush(DEADLINE_SECONDS)
    return acked, errors


def read_numbers(bootstrap, topic):
    """The record numbers of partition 0 up to its high watermark."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "full-disk-check", "enable.auto.commit": False}
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        numbers, errors = [], []

        def read_to_high():
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    errors.append(message.error())
                    continue
                numbers.append(int(message.value()[:8]))
                if message.offset() + 1 >= high:
                    return True
            return high == 0

        try:
            wait_until(read_to_high, DEADLINE_SECONDS, f"reading {topic} to offset {high}")
        except TimeoutError as timeout:
            raise AssertionError(f"{timeout}; read {len(numbers)}, errors {errors[:3]}") from None
        return numbers
    finally:
        consumer.close()


def test_a_full_disk_refuses_writes_and_loses_no_acknowledged_record(small_file_system, tmp_path):
    broker = Broker(small_file_system / "data", [f"log.segment.bytes={SEGMENT_BYTES}"])
    # The broker's own log lives off the small file system.
    broker.log_path = tmp_path / "fjord.log"
    broker.start()
    try:
        topic = "filling"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

        filler = small_file_system / "filler"
        free = os.statvfs(small_file_system).f_bavail * os.statvfs(small_file_system).f_frsize
        with open(filler, "wb") as file:
            os.posix_fallocate(file.fileno(), 0, free - HEADROOM_BYTES)

        acked, errors = fill_until_refused(broker.bootstrap, topic)
        assert errors, "the disk never filled"
        assert acked, "nothing was acknowledged before the disk filled"
        assert "No space left on device" in broker.log_text()
        # Still answering: metadata lists the topic.
        assert topic in admin.list_topics(timeout=10).topics
        assert broker.process.poll() is None

        filler.unlink()
        broker.stop()
        broker.start()

        numbers = read_numbers(broker.bootstrap, topic)
        assert len(numbers) == len(set(numbers)), "a record is there twice"
        assert numbers == sorted(numbers), "records are out of order"
        missing = sorted(set(acked) - set(numbers))
        assert not missing, f"{len(missing)} acknowledged records lost, first {missing[:5]}"

        more_acked, more_errors = [], []
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for number in range(10):
            producer.produce(
                topic,
                value=value_of(1_000_000 + number),
                partition=0,
                on_delivery=lambda error, message: (more_errors if error else more_acked).append(
                    error or message.offset()
                ),
            )
        producer.flush(DEADLINE_SECONDS)
        assert not more_errors, f"producing after space was freed failed: {more_errors}"
        assert len(more_acked) == 10
    finally:
        broker.stop()
