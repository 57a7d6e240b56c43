"""fjordctl's consumer-group commands against a real fjord, cross-checked with
confluent-kafka's group consumer. Skipped, with the reason, while the broker
does not advertise the group APIs in ApiVersions: they run as soon as it
does."""

import json
import socket
import struct
import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_fjord_bench import bench
from test_fjordctl import FJORDCTL, admin

# FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
# OffsetFetch, ListGroups, DescribeGroups, DeleteGroups.
GROUP_API_KEYS = {10: "FindCoordinator", 11: "JoinGroup", 14: "SyncGroup", 12: "Heartbeat",
                  13: "LeaveGroup", 8: "OffsetCommit", 9: "OffsetFetch", 16: "ListGroups",
                  15: "DescribeGroups", 42: "DeleteGroups"}


def advertised_api_keys(port):
    """The API keys an ApiVersions v0 request gets back, over a raw socket
    (no client library's own version probing in the way)."""
    client_id = b"group-probe"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", connection.recv(4, socket.MSG_WAITALL))[0]
        response = connection.recv(size, socket.MSG_WAITALL)
    _correlation, error, count = struct.unpack(">ihi", response[:10])
    assert error == 0
    return {struct.unpack(">h", response[10 + 6 * i:12 + 6 * i])[0] for i in range(count)}


@pytest.fixture(autouse=True)
def require_group_apis(broker):
    missing = [name for key, name in GROUP_API_KEYS.items()
               if key not in advertised_api_keys(broker.port)]
    if missing:
        pytest.skip(f"fjord does not serve consumer groups yet (ApiVersions lacks {', '.join(missing)})")


def produce_values(broker, topic, count, partitions=1):
    admin(broker, "topics", "create", "--topic", topic, "--partitions", str(partitions))
    admin(broker, "produce", "--topic", topic, "--partition", "0",
          stdin="".join(f"v{index}\n" for index in range(count)))


def consume_in_group(broker, topic, group, *arguments):
    out = admin(broker, "consume", "--topic", topic, "--group", group, "--timeout-ms", "3000",
                *arguments).stdout
    return out.splitlines()


def describe_rows(broker, group):
    """`groups describe` rows as {(topic, partition): (current, end, lag)}."""
    out = admin(broker, "groups", "describe", "--group", group).stdout.splitlines()
    header = next(index for index, line in enumerate(out) if line.startswith("GROUP"))
    rows = {}
    for line in out[header + 1:]:
        fields = line.split()
        rows[(fields[1], int(fields[2]))] = (fields[3], fields[4], fields[5])
    return rows


def test_a_group_member_commits_and_the_next_one_resumes(broker, topic_name):
    """A group consumer reads 6 of 10 records and commits; describe shows
    offset 6 and lag 4; the next member of the group reads exactly the other
    4; guards against commits lost on exit or a restart from the wrong end."""
    group = f"{topic_name}-group"
    produce_values(broker, topic_name, 10)

    first = consume_in_group(broker, topic_name, group, "--from-beginning", "--max-messages", "6")
    assert first == [f"v{index}" for index in range(6)]
    assert describe_rows(broker, group)[(topic_name, 0)] == ("6", "10", "4")

    assert consume_in_group(broker, topic_name, group) == ["v6", "v7", "v8", "v9"]
    assert describe_rows(broker, group)[(topic_name, 0)] == ("10", "10", "0")
    assert group in admin(broker, "groups", "list").stdout


def test_reset_offsets_is_a_dry_run_until_execute(broker, topic_name):
    """reset-offsets prints the plan without committing it, then commits it
    with --execute; guards against a dry run that changes offsets."""
    group = f"{topic_name}-group"
    produce_values(broker, topic_name, 5)
    consume_in_group(broker, topic_name, group, "--from-beginning")

    plan = admin(broker, "groups", "reset-offsets", "--group", group, "--topic", topic_name,
                 "--to-offset", "2").stdout
    assert "dry run" in plan
    assert describe_rows(broker, group)[(topic_name, 0)][0] == "5"

    admin(broker, "groups", "reset-offsets", "--group", group, "--topic", topic_name,
          "--to-offset", "2", "--execute")
    assert consume_in_group(broker, topic_name, group) == ["v2", "v3", "v4"]


def test_offsets_committed_by_librdkafka_show_in_describe_and_back(broker, topic_name):
    """A confluent-kafka group consumer's commits are what fjordctl describes
    and resumes from, and offsets fjordctl resets are what librdkafka sees as
    committed; guards against a group protocol only our own client speaks."""
    group = f"{topic_name}-group"
    produce_values(broker, topic_name, 8)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic_name])
    read = []
    while len(read) < 3:
        message = consumer.poll(10)
        assert message is not None and message.error() is None
        read.append(message.value())
    consumer.commit(asynchronous=False)
    consumer.close()

    assert describe_rows(broker, group)[(topic_name, 0)] == ("3", "8", "5")
    assert consume_in_group(broker, topic_name, group) == ["v3", "v4", "v5", "v6", "v7"]

    admin(broker, "groups", "reset-offsets", "--group", group, "--topic", topic_name,
          "--to-earliest", "--execute")
    checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = checker.committed([TopicPartition(topic_name, 0)], timeout=10)
    checker.close()
    assert committed[0].offset == 0


def test_delete_removes_an_empty_group(broker, topic_name):
    """groups delete removes a group without members; guards against a
    delete that leaves it listed."""
    group = f"{topic_name}-group"
    produce_values(broker, topic_name, 1)
    consume_in_group(broker, topic_name, group, "--from-beginning")
    admin(broker, "groups", "delete", "--group", group)
    assert group not in admin(broker, "groups", "list").stdout


def test_two_members_split_the_partitions(broker, topic_name):
    """Records of a 4-partition topic read by two concurrent members of one
    group are each read once; guards against both members reading
    everything (no assignment) or a partition left unassigned."""
    group = f"{topic_name}-group"
    admin(broker, "topics", "create", "--topic", topic_name, "--partitions", "4")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index in range(40):
        producer.produce(topic_name, value=f"v{index}".encode(), partition=index % 4)
    assert producer.flush(30) == 0
    members = [subprocess.Popen([str(FJORDCTL), "consume", "--bootstrap-server", broker.bootstrap,
                                 "--topic", topic_name, "--group", group, "--from-beginning",
                                 "--timeout-ms", "8000"], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [member.communicate(timeout=60)[0].splitlines() for member in members]
    assert sorted(outputs[0] + outputs[1]) == sorted(f"v{index}" for index in range(40))


def test_bench_consumers_in_a_group_consume_every_message(broker, tmp_path):
    """fjord-bench's consumers, joined in one consumer group per topic, read
    every message the producers published; guards against a group
    assignment that leaves partitions unread."""
    # Joining takes the coordinator's initial rebalance delay (3 s by
    # default), so the group gets a longer warm-up than short_run's.
    bench("run", "--bootstrap-server", broker.bootstrap, "--output-dir", str(tmp_path),
          "--name", "grouped", "--partitions", "4", "--producers", "2", "--consumers", "2",
          "--message-size", "256", "--warmup-secs", "10", "--duration-secs", "4",
          "--rate", "1000", "--consumer-group")
    result = json.loads((tmp_path / "grouped.json").read_text())
    assert result["end_to_end"]["messages"] > 0
    assert 0.8 < result["end_to_end"]["msgs_per_sec"] / result["publish"]["msgs_per_sec"] < 1.2
