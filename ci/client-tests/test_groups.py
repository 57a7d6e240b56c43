"""Consumer groups against fjord's group coordinator with real clients:
confluent-kafka members in separate processes (so one can be SIGKILLed
without a LeaveGroup), cooperative-sticky and static membership, kcat's and
kafka-python's group consumers, the AdminClient's group operations, and
committed offsets and group metadata across broker restarts."""

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker, running_broker, wait_until
from workload import Member

PARTITIONS = 6
SESSION_TIMEOUT_SECONDS = 6
DEADLINE_SECONDS = 60
GROUP_SETTINGS = ["group.initial.rebalance.delay.ms=200", "group.min.session.timeout.ms=1000"]


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory):
    with running_broker(tmp_path_factory, GROUP_SETTINGS) as instance:
        wait_until(lambda: coordinator_loaded(instance), DEADLINE_SECONDS, "coordinator loaded")
        yield instance


@pytest.fixture(scope="module")
def kip848_broker(tmp_path_factory):
    """KIP-848 members heartbeat at the coordinator's pace: keep it short."""
    settings = [*GROUP_SETTINGS, "group.consumer.heartbeat.interval.ms=500", "group.consumer.session.timeout.ms=6000"]
    with running_broker(tmp_path_factory, settings) as instance:
        wait_until(lambda: coordinator_loaded(instance), DEADLINE_SECONDS, "coordinator loaded")
        yield instance


@pytest.fixture
def group_name(request):
    return f"group-{request.node.name.removeprefix('test_')[:30]}-{uuid.uuid4().hex[:8]}"


def split_is_exact(members, partitions=PARTITIONS):
    """Every partition owned by exactly one member, every member owning one."""
    owned = [member.owned() for member in members]
    if not all(owned):
        return False
    union = set().union(*owned)
    return union == set(range(partitions)) and sum(len(o) for o in owned) == partitions


def create_topic(broker, topic, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(timeout=30)


def produce(broker, topic, values, partitions=PARTITIONS):
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for index, value in enumerate(values):
        producer.produce(topic, value.encode(), partition=index % partitions)
    assert producer.flush(30) == 0


def committed_offsets(broker, group, topic, partitions=PARTITIONS):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    result = admin.list_consumer_group_offsets([request])[group].result(timeout=30)
    return {tp.partition: tp.offset for tp in result.topic_partitions}


def coordinator_loaded(broker):
    """Whether `__consumer_offsets` exists with a leader for every partition
    (the first FindCoordinator creates it, as in Kafka: a probe group's
    describe asks one) and the coordinator has read its groups back: until
    then group requests answer COORDINATOR_LOAD_IN_PROGRESS, which the
    AdminClient and a synchronous commit return rather than retry (as
    against Kafka)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    try:
        offsets_topic = admin.list_topics(timeout=10).topics.get("__consumer_offsets")
        probe = admin.describe_consumer_groups(["coordinator-probe"])["coordinator-probe"]
        if probe.exception(timeout=10) is not None:
            return False
        if offsets_topic is None or any(p.leader < 0 for p in offsets_topic.partitions.values()):
            return False
        # A broker's error comes back in `errors`, not as an exception.
        return not admin.list_consumer_groups().result(timeout=10).errors
    except KafkaException:
        return False


def stop_all(members):
    for member in members:
        if member.process.poll() is None:
            member.process.kill()
            member.process.wait(timeout=30)


def test_three_members_split_survive_a_kill9_and_resume_from_commits(group_broker, topic_name, group_name):
    """Three members split six partitions with no overlap; one SIGKILLed
    member (no LeaveGroup) loses its partitions to the others within the
    session timeout; with commits after processing no record is lost; and a
    restarted group resumes from the committed offsets. Guards against
    overlapping or missing assignments, sessions that never expire, and
    commits lost or not honoured."""
    broker = group_broker
    create_topic(broker, topic_name)
    first = [f"a-{i}" for i in range(600)]
    produce(broker, topic_name, first)
    members = [Member(broker, topic_name, group_name, f"m{i}") for i in range(3)]
    try:
        wait_until(lambda: split_is_exact(members), DEADLINE_SECONDS, "three members splitting the topic")
        wait_until(lambda: len(set().union(*(m.values() for m in members))) == len(first), DEADLINE_SECONDS, "first records consumed")
        victim = members[2]
        victim.kill9()
        killed_at = time.monotonic()
        survivors = members[:2]
        wait_until(lambda: split_is_exact(survivors), DEADLINE_SECONDS, "survivors taking over")
        moved_after = time.monotonic() - killed_at
        # Session timeout, then a rebalance of the two survivors (their
        # next heartbeat sees it, then they rejoin).
        assert moved_after < SESSION_TIMEOUT_SECONDS + 5, f"partitions moved after {moved_after:.1f}s"
        second = [f"b-{i}" for i in range(600)]
        produce(broker, topic_name, second)
        everything = set(first) | set(second)
        wait_until(
            lambda: set().union(*(m.values() for m in members)) >= everything,
            DEADLINE_SECONDS,
            "every record processed at least once",
        )
        wait_until(
            lambda: committed_offsets(broker, group_name, topic_name) == {p: 200 for p in range(PARTITIONS)},
            DEADLINE_SECONDS,
            "commits covering every record",
        )
        for member in survivors:
            member.stop()
        third = [f"c-{i}" for i in range(60)]
        produce(broker, topic_name, third)
        restarted = Member(broker, topic_name, group_name, "restarted")
        members.append(restarted)
        wait_until(lambda: restarted.values() >= set(third), DEADLINE_SECONDS, "restarted member reading new records")
        offsets = [event["offset"] for event in restarted.of_kind("record")]
        assert min(offsets) >= 200, "the restarted group re-read committed records"
        assert restarted.values() == set(third)
        restarted.stop()
    finally:
        stop_all(members)


def test_cooperative_sticky_revokes_only_what_moves(group_broker, topic_name, group_name):
    """With cooperative-sticky, a third member joining takes two partitions
    and the two others give up exactly those, keeping the rest without a
    revocation; guards against a coordinator that breaks incremental
    rebalancing (e.g. losing the owned partitions in member metadata)."""
    broker = group_broker
    create_topic(broker, topic_name)
    strategy = {"partition.assignment.strategy": "cooperative-sticky"}
    members = [Member(broker, topic_name, group_name, f"m{i}", **strategy) for i in range(2)]
    try:
        wait_until(lambda: split_is_exact(members), DEADLINE_SECONDS, "two members splitting the topic")
        before = [member.owned() for member in members]
        revoked_before = [len(member.of_kind("revoked")) for member in members]
        members.append(Member(broker, topic_name, group_name, "m2", **strategy))
        wait_until(lambda: split_is_exact(members) and len(members[2].owned()) == 2, DEADLINE_SECONDS, "three members splitting the topic")
        revoked = set()
        for member, count in zip(members[:2], revoked_before):
            for event in member.of_kind("revoked")[count:]:
                revoked |= set(event["partitions"])
        assert revoked == members[2].owned(), "revoked more than what moved"
        for member, owned in zip(members[:2], before):
            assert member.owned() == owned - revoked
        for member in members:
            member.stop()
    finally:
        stop_all(members)


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(group_broker, topic_name, group_name):
    """A static member (group.instance.id) restarted within its session
    timeout gets its partitions back and the other member sees no
    revocation (KIP-345); guards against treating the restart as a new
    member and rebalancing everyone."""
    broker = group_broker
    create_topic(broker, topic_name)
    static = lambda instance: {"group.instance.id": instance, "session.timeout.ms": 15000}
    stay = Member(broker, topic_name, group_name, "stay", **static("stay"))
    bounce = Member(broker, topic_name, group_name, "bounce", **static("bounce"))
    members = [stay, bounce]
    try:
        wait_until(lambda: split_is_exact(members), DEADLINE_SECONDS, "two static members splitting the topic")
        owned = bounce.owned()
        stay_assignments = len(stay.of_kind("assigned"))
        bounce.kill9()
        back = Member(broker, topic_name, group_name, "bounce-again", **static("bounce"))
        members.append(back)
        wait_until(lambda: back.owned() == owned, DEADLINE_SECONDS, "restarted static member getting its partitions back")
        time.sleep(0)  # the check below is on what already happened
        assert stay.of_kind("revoked") == []
        assert len(stay.of_kind("assigned")) == stay_assignments
        stay.stop()
        back.stop()
    finally:
        stop_all(members)


def test_kcat_balanced_consumer_reads_everything(group_broker, topic_name, group_name):
    """`kcat -G` (librdkafka's balanced consumer) joins, gets every
    partition and reads every record; guards against a coordinator only
    confluent-kafka's configuration works with."""
    broker = group_broker
    create_topic(broker, topic_name, 3)
    values = [f"k-{i}" for i in range(30)]
    produce(broker, topic_name, values, 3)
    process = subprocess.Popen(
        ["kcat", "-b", broker.bootstrap, "-G", group_name, "-o", "beginning", "-f", "%s\\n", "-q", "-u", topic_name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []

    def read():
        for line in process.stdout:
            seen.append(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: set(seen) >= set(values), DEADLINE_SECONDS, "kcat reading every record")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_kafka_python_group_consumer_reads_and_commits(group_broker, topic_name, group_name):
    """kafka-python's KafkaConsumer with a group_id joins (its own
    JoinGroup/SyncGroup versions and range assignor), reads everything and
    commits; guards against a coordinator only librdkafka works with."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    broker = group_broker
    create_topic(broker, topic_name, 3)
    values = [f"p-{i}" for i in range(30)]
    produce(broker, topic_name, values, 3)
    consumer = KafkaConsumer(
        topic_name,
        bootstrap_servers=broker.bootstrap,
        group_id=group_name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    seen = set()

    def poll():
        for records in consumer.poll(timeout_ms=500).values():
            seen.update(record.value.decode() for record in records)
        return seen >= set(values)

    try:
        wait_until(poll, DEADLINE_SECONDS, "kafka-python reading every record")
        assert consumer.assignment() == {KafkaTopicPartition(topic_name, p) for p in range(3)}
        consumer.commit()
        assert [consumer.committed(KafkaTopicPartition(topic_name, p)) for p in range(3)] == [10, 10, 10]
    finally:
        consumer.close()
    assert committed_offsets(broker, group_name, topic_name, 3) == {0: 10, 1: 10, 2: 10}


def test_admin_client_lists_describes_alters_and_deletes_groups(group_broker, topic_name, group_name):
    """The AdminClient's group operations: list and describe an active group
    (members and assignment), refuse to delete it (NON_EMPTY_GROUP), read
    and alter its offsets once empty, then delete it; guards against admin
    tools that see nothing or wrong states."""
    broker = group_broker
    create_topic(broker, topic_name, 2)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    member = Member(broker, topic_name, group_name, "admin-member")
    try:
        wait_until(lambda: member.owned() == {0, 1}, DEADLINE_SECONDS, "member owning both partitions")
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert group_name in listed
        assert str(listed[group_name].state) == "ConsumerGroupState.STABLE"
        described = admin.describe_consumer_groups([group_name])[group_name].result(timeout=30)
        assert str(described.state) == "ConsumerGroupState.STABLE"
        assert len(described.members) == 1
        assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == {0, 1}
        assert described.members[0].client_id == "admin-member"
        with pytest.raises(Exception, match="NON_EMPTY_GROUP|not empty"):
            admin.delete_consumer_groups([group_name])[group_name].result(timeout=30)
        member.stop()
        wait_until(
            lambda: str(admin.describe_consumer_groups([group_name])[group_name].result(timeout=30).state)
            == "ConsumerGroupState.EMPTY",
            DEADLINE_SECONDS,
            "group empty after the member left",
        )
        altered = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_name, [TopicPartition(topic_name, 0, 5), TopicPartition(topic_name, 1, 7)])]
        )[group_name].result(timeout=30)
        assert all(tp.error is None for tp in altered.topic_partitions)
        assert committed_offsets(broker, group_name, topic_name, 2) == {0: 5, 1: 7}
        admin.delete_consumer_groups([group_name])[group_name].result(timeout=30)
        listed = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert group_name not in listed
        assert committed_offsets(broker, group_name, topic_name, 2) == {0: -1001, 1: -1001}
    finally:
        stop_all([member])


@pytest.mark.parametrize("how", ["clean", "kill9"])
def test_committed_offsets_and_group_metadata_survive_a_broker_restart(tmp_path, topic_name, group_name, how):
    """Offsets committed (acknowledged) before a clean stop or a kill -9 are
    there after the restart, the group is still listed with its protocol,
    and a member that stays up through the restart keeps its partitions
    without a rebalance (the group came back Stable in its generation);
    guards against acknowledging commits before they are durable and
    against forgetting groups on restart."""
    broker = Broker(tmp_path / "data", GROUP_SETTINGS)
    broker.start()
    wait_until(lambda: coordinator_loaded(broker), DEADLINE_SECONDS, "coordinator loaded")
    members = []
    try:
        create_topic(broker, topic_name, 2)
        produce(broker, topic_name, [f"r-{i}" for i in range(20)], 2)
        committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group_name + "-simple"})
        committer.commit(offsets=[TopicPartition(topic_name, 0, 3), TopicPartition(topic_name, 1, 4)], asynchronous=False)
        committer.close()
        member = Member(broker, topic_name, group_name, "survivor", **{"session.timeout.ms": 15000})
        members.append(member)
        wait_until(lambda: member.owned() == {0, 1}, DEADLINE_SECONDS, "member owning both partitions")
        wait_until(lambda: committed_offsets(broker, group_name, topic_name, 2) == {0: 10, 1: 10}, DEADLINE_SECONDS, "member's commits")
        if how == "clean":
            broker.stop()
            broker.start()
        else:
            broker.restart_after_kill9()
        wait_until(lambda: coordinator_loaded(broker), DEADLINE_SECONDS, "coordinator loaded after the restart")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert wait_until(
            lambda: committed_offsets(broker, group_name + "-simple", topic_name, 2) == {0: 3, 1: 4},
            DEADLINE_SECONDS,
            "simple commits after the restart",
        )
        assert committed_offsets(broker, group_name, topic_name, 2) == {0: 10, 1: 10}
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert group_name in listed and group_name + "-simple" in listed
        produce(broker, topic_name, [f"s-{i}" for i in range(20)], 2)
        wait_until(lambda: {f"s-{i}" for i in range(20)} <= member.values(), DEADLINE_SECONDS, "member reading after the restart")
        assert member.of_kind("revoked") == [] and member.of_kind("lost") == []
        described = admin.describe_consumer_groups([group_name])[group_name].result(timeout=30)
        assert described.partition_assignor == "range"
        assert len(described.members) == 1
        member.stop()
    finally:
        stop_all(members)
        broker.stop()


CONSUMER_PROTOCOL = {
    "group.protocol": "consumer",
    "session.timeout.ms": None,
    "heartbeat.interval.ms": None,
}


def test_consumer_protocol_members_join_split_and_leave(kip848_broker, topic_name, group_name):
    """KIP-848 (`group.protocol=consumer`): three members get disjoint
    shares of six partitions from the coordinator's assignor, every record
    is read, and when one leaves the others take its partitions without
    any partition having two owners; guards against a server-side
    assignment that overlaps, starves a member or never converges."""
    broker = kip848_broker
    create_topic(broker, topic_name)
    values = [f"n-{i}" for i in range(300)]
    produce(broker, topic_name, values)
    members = [Member(broker, topic_name, group_name, f"m{i}", **CONSUMER_PROTOCOL) for i in range(3)]
    try:
        # The uniform assignor moves partitions one revocation at a time: an
        # exact but uneven split is a step on the way, not the end.
        wait_until(lambda: split_is_exact(members) and sorted(len(m.owned()) for m in members) == [2, 2, 2],
                   DEADLINE_SECONDS, "three members splitting the topic evenly")
        wait_until(lambda: set().union(*(m.values() for m in members)) >= set(values), DEADLINE_SECONDS, "every record read")
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert str(listed[group_name].type) == "ConsumerGroupType.CONSUMER"
        members[2].stop()
        wait_until(lambda: split_is_exact(members[:2]), DEADLINE_SECONDS, "two members taking over")
        more = [f"o-{i}" for i in range(60)]
        produce(broker, topic_name, more)
        wait_until(lambda: set().union(*(m.values() for m in members[:2])) >= set(more), DEADLINE_SECONDS, "records after the leave")
        for member in members[:2]:
            member.stop()
        assert committed_offsets(broker, group_name, topic_name) == {p: 60 for p in range(PARTITIONS)}
    finally:
        stop_all(members)


def consumer_offsets_log_bytes(broker):
    return sum(path.stat().st_size for path in Path(broker.data_dir).glob("__consumer_offsets-*/*.log"))


def test_the_log_cleaner_compacts_consumer_offsets_and_the_latest_commits_survive(tmp_path, topic_name, group_name):
    """`__consumer_offsets` is a compacted topic: hundreds of commits of
    the same two partitions shrink to about one record each once the
    cleaner has run, and after a kill -9 the coordinator, loading the
    cleaned log, still has the latest commit of each partition; guards
    against the topic growing without bound and against a cleaned log the
    loader misreads."""
    settings = [
        *GROUP_SETTINGS,
        "offsets.topic.num.partitions=1",
        "offsets.topic.segment.bytes=4096",
        "log.cleaner.backoff.ms=100",
        "log.cleaner.min.cleanable.ratio=0.1",
    ]
    broker = Broker(tmp_path / "data", settings)
    broker.start()
    try:
        wait_until(lambda: coordinator_loaded(broker), DEADLINE_SECONDS, "coordinator loaded")
        create_topic(broker, topic_name, 2)
        committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group_name})
        commits = 300
        for number in range(1, commits + 1):
            committer.commit(
                offsets=[TopicPartition(topic_name, 0, number), TopicPartition(topic_name, 1, 2 * number)],
                asynchronous=False,
            )
        committer.close()
        written = commits * 2 * 60  # at least ~60 bytes per commit record
        wait_until(
            lambda: consumer_offsets_log_bytes(broker) < written // 4,
            DEADLINE_SECONDS,
            "the cleaner compacting __consumer_offsets",
        )
        broker.restart_after_kill9()
        wait_until(lambda: coordinator_loaded(broker), DEADLINE_SECONDS, "coordinator loaded after the restart")
        assert committed_offsets(broker, group_name, topic_name, 2) == {0: commits, 1: 2 * commits}
    finally:
        broker.stop()
