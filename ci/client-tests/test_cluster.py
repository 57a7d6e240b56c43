"""Three real `fjord` processes on loopback form one cluster: one controller
quorum (openraft) among the three combined nodes, every node registered,
topics placed over all three, and admin requests sent to any node taking
effect through the quorum leader. Checked with clients we did not write
(confluent-kafka's AdminClient, kafka-python's KafkaAdminClient) and
fjordctl's view of the quorum.

The failures guarded against: nodes that each run a quorum of their own
(topics created through one never seen by the others), a follower that
refuses or loses an admin request instead of forwarding it, a cluster that
stops taking metadata changes when its leader is killed, a killed node that
cannot rejoin, and metadata lost across a full stop and start."""

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.admin import NewTopic as KafkaPythonNewTopic

from conftest import Broker, free_port, wait_for_port, wait_until
from raw_fetch import list_offset
from test_fjordctl import FJORDCTL
from test_kcat import consume as kcat_consume

CLUSTER_ID = "4L6g3nShT-eMCtK--X86sw"
NODE_IDS = (1, 2, 3)
# An election among three on loopback, the first one included.
ELECTION_DEADLINE_SECONDS = 30
# What the issue promises after the active controller is killed.
FAILOVER_DEADLINE_SECONDS = 10
ADMIN_TIMEOUT_SECONDS = 30
HEARTBEAT_INTERVAL_MS = 500
SESSION_TIMEOUT_MS = 3000


class ClusterNode(Broker):
    """A combined broker and controller of a three-voter quorum or, without
    a controller port, a broker-only node following it."""

    def __init__(self, data_dir, node_id, controller_port, voters, extra_settings=()):
        super().__init__(data_dir, extra_settings)
        self.node_id = node_id
        self.controller_port = controller_port
        self.voters = voters

    def settings(self):
        if self.controller_port is None:
            roles = ["process.roles=broker", f"listeners=PLAINTEXT://127.0.0.1:{self.port}"]
        else:
            roles = ["process.roles=broker,controller",
                     f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                     f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        return [
            *roles,
            f"node.id={self.node_id}",
            f"cluster.id={CLUSTER_ID}",
            f"controller.quorum.voters={self.voters}",
            "controller.listener.names=CONTROLLER",
            f"advertised.listeners=PLAINTEXT://localhost:{self.port}",
            f"log.dirs={self.data_dir}",
            # Kafka's 2 s and 9 s, shortened so a killed broker is fenced
            # (and a restart after kill -9 registers) within the deadlines.
            f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
            f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
            *self.extra_settings,
        ]

    def start(self):
        # A node serves clients only once the quorum has a leader, which
        # takes a majority running: launch() starts one without waiting.
        self.launch()
        wait_for_port(self.port, self.process, ELECTION_DEADLINE_SECONDS)


class Cluster:
    """Three combined nodes on loopback; `extra_settings` go to each."""

    def __init__(self, root, extra_settings=()):
        self.root = root
        self.controller_ports = {node_id: free_port() for node_id in NODE_IDS}
        self.voters = ",".join(
            f"{node_id}@127.0.0.1:{port}" for node_id, port in self.controller_ports.items()
        )
        self.nodes = {
            node_id: ClusterNode(root / f"node{node_id}", node_id,
                                 self.controller_ports[node_id], self.voters, extra_settings)
            for node_id in NODE_IDS
        }

    def start_all(self):
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            wait_for_port(node.port, node.process, ELECTION_DEADLINE_SECONDS)

    def stop_all(self):
        for node in self.nodes.values():
            node.stop()

    def quorum(self, node):
        """The quorum as `node` reports it (fjordctl cluster info)."""
        result = subprocess.run(
            [str(FJORDCTL), "cluster", "info", "--json", "--bootstrap-server", node.bootstrap],
            capture_output=True, text=True, timeout=ADMIN_TIMEOUT_SECONDS,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["quorum"]

    def agreed_leader(self, asked):
        """The quorum leader every node in `asked` names, if they agree on
        one; `None` while they do not (or one cannot be asked)."""
        try:
            leaders = {self.quorum(self.nodes[node_id])["leader_id"] for node_id in asked}
        except (AssertionError, subprocess.TimeoutExpired):
            return None
        return leaders.pop() if len(leaders) == 1 and -1 not in leaders else None

    def leader_id(self, asked):
        """The quorum leader every node in `asked` agrees on, once they do."""
        return wait_until(lambda: self.agreed_leader(asked), ELECTION_DEADLINE_SECONDS,
                          "one quorum leader")

    def logs(self):
        return "\n".join(
            f"--- node {node_id}\n" + "\n".join(node.log_text().splitlines()[-40:])
            for node_id, node in self.nodes.items()
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    instance = Cluster(tmp_path_factory.mktemp("cluster"))
    instance.start_all()
    try:
        yield instance
    finally:
        instance.stop_all()


def create_topic(node, name, partitions, replication_factor=1):
    """CreateTopics through `node` alone (librdkafka), awaited."""
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)],
        request_timeout=ADMIN_TIMEOUT_SECONDS,
    )
    futures[name].result(timeout=ADMIN_TIMEOUT_SECONDS)


def partition_leaders(node, name):
    """Partition -> leader as Metadata from `node` alone tells it."""
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    topic = client.list_topics(name, timeout=ADMIN_TIMEOUT_SECONDS).topics[name]
    assert topic.error is None, topic.error
    return {partition.id: partition.leader for partition in topic.partitions.values()}


def described_partitions(node, topic, *filters):
    """The partitions `fjordctl topics describe` lists for `topic` through
    `node` with `filters`."""
    result = subprocess.run(
        [str(FJORDCTL), "topics", "describe", "--topic", topic, *filters,
         "--bootstrap-server", node.bootstrap],
        capture_output=True, text=True, timeout=ADMIN_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    return {int(line.split("Partition: ")[1].split("\t")[0])
            for line in result.stdout.splitlines() if "Partition: " in line}


def replica_lags(node, topic):
    """Partition -> {broker: lag or None} from `fjordctl topics describe
    --replica-lag` through `node` (None: the broker did not answer)."""
    result = subprocess.run(
        [str(FJORDCTL), "topics", "describe", "--topic", topic, "--replica-lag",
         "--bootstrap-server", node.bootstrap],
        capture_output=True, text=True, timeout=ADMIN_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    lags = {}
    for line in result.stdout.splitlines():
        if "Lag: " not in line:
            continue
        partition = int(line.split("Partition: ")[1].split("\t")[0])
        pairs = (entry.split(":") for entry in line.split("Lag: ")[1].split(","))
        lags[partition] = {int(broker): None if lag == "?" else int(lag) for broker, lag in pairs}
    return lags


def listed_brokers(node):
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    return sorted(client.list_topics(timeout=ADMIN_TIMEOUT_SECONDS).brokers)


def test_every_node_lists_all_three_brokers(cluster):
    """Metadata through any node lists the three brokers and names the
    quorum leader as the controller, where admin requests go unforwarded."""
    leader = cluster.leader_id(NODE_IDS)
    for node in cluster.nodes.values():
        client = AdminClient({"bootstrap.servers": node.bootstrap})
        metadata = client.list_topics(timeout=ADMIN_TIMEOUT_SECONDS)
        assert metadata.controller_id == leader
        brokers = metadata.brokers
        assert sorted(brokers) == list(NODE_IDS), cluster.logs()
        assert {broker.port for broker in brokers.values()} == {
            other.port for other in cluster.nodes.values()
        }


def test_a_topic_created_through_any_node_is_seen_by_all(cluster, topic_name):
    """One topic created through each node (two of them quorum followers,
    which forward the change); each is then in every node's Metadata with
    its partitions spread over all three brokers."""
    leader = cluster.leader_id(NODE_IDS)
    names = {node_id: f"{topic_name}-via{node_id}" for node_id in NODE_IDS}
    for node_id, name in names.items():
        create_topic(cluster.nodes[node_id], name, partitions=6)
    for name in names.values():
        for node in cluster.nodes.values():
            leaders = wait_until(lambda: partition_leaders(node, name), ADMIN_TIMEOUT_SECONDS,
                                 f"{name} in node {node.node_id}'s metadata")
            assert sorted(leaders) == list(range(6))
            assert set(leaders.values()) == set(NODE_IDS), (name, leaders)
    assert cluster.leader_id(NODE_IDS) == leader, "creating topics moved the leader"


def held_partitions(node, name):
    """The partitions of `name` with a directory in `node`'s data."""
    prefix = f"{name}-"
    return {
        int(entry.name.removeprefix(prefix))
        for entry in node.data_dir.iterdir()
        if entry.name.startswith(prefix) and entry.name.removeprefix(prefix).isdigit()
    }


def test_records_go_to_the_leaders_metadata_names_through_one_bootstrap(cluster, topic_name):
    """librdkafka bootstrapped from node 1 alone produces to six partitions
    led by all three nodes; each partition's data lands on the node Metadata
    names its leader and nowhere else, and kcat bootstrapped from node 3 and
    a confluent-kafka group consumer bootstrapped from node 2 read every
    record back."""
    partitions = 6
    create_topic(cluster.nodes[2], topic_name, partitions)
    leaders = partition_leaders(cluster.nodes[1], topic_name)
    for node_id, node in cluster.nodes.items():
        led_here = {partition for partition, leader in leaders.items() if leader == node_id}
        wait_until(lambda: held_partitions(node, topic_name) == led_here, ADMIN_TIMEOUT_SECONDS,
                   f"node {node_id} holding exactly the partitions it leads")

    producer = Producer({"bootstrap.servers": cluster.nodes[1].bootstrap, "acks": "all"})
    failures = []
    sent = {(partition, f"{partition}-{n}") for partition in range(partitions) for n in range(10)}
    for partition, value in sorted(sent):
        producer.produce(topic_name, value.encode(), partition=partition,
                         on_delivery=lambda error, _: error and failures.append(error))
    assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0, "undelivered records"
    assert failures == [], failures

    read = {(int(record[0]), record[3]) for record in kcat_consume(cluster.nodes[3], topic_name)}
    assert read == sent

    consumer = Consumer({
        "bootstrap.servers": cluster.nodes[2].bootstrap,
        "group.id": f"{topic_name}-group",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic_name])
    consumed = set()
    try:
        def all_consumed():
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                consumed.add((message.partition(), message.value().decode()))
            return consumed == sent
        wait_until(all_consumed, ADMIN_TIMEOUT_SECONDS, "the group consumer reading every record")
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def test_kafka_python_creates_a_topic_through_a_follower(cluster, topic_name):
    leader = cluster.leader_id(NODE_IDS)
    follower = next(node for node_id, node in cluster.nodes.items() if node_id != leader)
    client = KafkaAdminClient(bootstrap_servers=follower.bootstrap)
    try:
        client.create_topics([KafkaPythonNewTopic(topic_name, 3, 1)])
    finally:
        client.close()
    for node in cluster.nodes.values():
        wait_until(lambda: partition_leaders(node, topic_name), ADMIN_TIMEOUT_SECONDS,
                   f"{topic_name} in node {node.node_id}'s metadata")


def test_killing_the_active_controller_elects_another_and_it_rejoins(cluster, topic_name):
    """kill -9 the quorum leader: the other two elect one of themselves
    within the deadline and take metadata changes again; the killed node
    restarts on its data and sees what was created while it was down."""
    old_leader = cluster.leader_id(NODE_IDS)
    cluster.nodes[old_leader].kill9()
    survivors = [node_id for node_id in NODE_IDS if node_id != old_leader]
    killed_at = time.monotonic()
    new_leader = wait_until(
        lambda: next((leader for leader in [cluster.agreed_leader(survivors)]
                      if leader not in (None, old_leader)), None),
        FAILOVER_DEADLINE_SECONDS, "a new quorum leader")
    assert time.monotonic() - killed_at <= FAILOVER_DEADLINE_SECONDS
    assert new_leader in survivors
    created_while_down = f"{topic_name}-while-down"
    create_topic(cluster.nodes[survivors[0]], created_while_down, partitions=2)

    cluster.nodes[old_leader].start()
    rejoined = cluster.nodes[old_leader]
    wait_until(lambda: partition_leaders(rejoined, created_while_down), ADMIN_TIMEOUT_SECONDS,
               "the rejoined node sees the topic created while it was down")
    create_topic(rejoined, f"{topic_name}-after", partitions=1)


def idempotent_producer_id(node, topic):
    """The producer id kafka-python's idempotent producer gets through
    `node` (InitProducerId), after one acknowledged record."""
    producer = KafkaProducer(bootstrap_servers=node.bootstrap, enable_idempotence=True)
    try:
        producer.send(topic, b"idempotent").get(timeout=ADMIN_TIMEOUT_SECONDS)
        return producer._transaction_manager.producer_id_and_epoch.producer_id
    finally:
        producer.close()


def retention_ms(node, topic):
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = client.describe_configs([resource])[resource].result(timeout=ADMIN_TIMEOUT_SECONDS)
    return described["retention.ms"].value


def test_topics_configs_and_producer_ids_survive_stopping_and_starting_all(cluster, topic_name):
    """Stop all three, start them again: every topic, its config overrides
    and the producer id blocks handed out are still there (a producer id
    after the restart is above every one before it)."""
    create_topic(cluster.nodes[1], topic_name, partitions=3)
    client = AdminClient({"bootstrap.servers": cluster.nodes[2].bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic_name,
                              set_config={"retention.ms": "7200000"})
    client.alter_configs([resource])[resource].result(timeout=ADMIN_TIMEOUT_SECONDS)
    ids_before = [idempotent_producer_id(node, topic_name) for node in cluster.nodes.values()]
    assert len(set(ids_before)) == len(ids_before), f"a producer id given twice: {ids_before}"

    cluster.stop_all()
    cluster.start_all()
    for node in cluster.nodes.values():
        leaders = wait_until(lambda: partition_leaders(node, topic_name), ADMIN_TIMEOUT_SECONDS,
                             f"{topic_name} after the restart")
        assert sorted(leaders) == [0, 1, 2]
        assert retention_ms(node, topic_name) == "7200000"
    ids_after = [idempotent_producer_id(node, topic_name) for node in cluster.nodes.values()]
    assert min(ids_after) > max(ids_before), (ids_before, ids_after)


def test_a_killed_broker_is_fenced_and_its_partitions_return_with_it(cluster, topic_name):
    """kill -9 a broker that does not lead the quorum: once its session
    expires the leader fences it, Metadata stops listing it, its partitions
    (their only replica) have no leader, and new partitions are placed on
    the other two; restarted, it registers, is unfenced and leads its
    partitions again."""
    create_topic(cluster.nodes[1], topic_name, partitions=6)
    before = partition_leaders(cluster.nodes[1], topic_name)
    quorum_leader = cluster.leader_id(NODE_IDS)
    victim = next(node_id for node_id in NODE_IDS if node_id != quorum_leader)
    survivors = [node_id for node_id in NODE_IDS if node_id != victim]
    its_partitions = {partition for partition, leader in before.items() if leader == victim}
    assert its_partitions, before
    cluster.nodes[victim].kill9()

    observer = cluster.nodes[survivors[0]]
    deadline = SESSION_TIMEOUT_MS / 1000 + ADMIN_TIMEOUT_SECONDS
    wait_until(lambda: listed_brokers(observer) == survivors, deadline,
               f"broker {victim} fenced")
    after = partition_leaders(observer, topic_name)
    assert {partition for partition, leader in after.items() if leader == -1} == its_partitions
    # kafka-topics' filters: the leaderless partitions, and no partition
    # under-replicated (each has its one replica in its ISR).
    assert described_partitions(observer, topic_name, "--unavailable-partitions") == its_partitions
    assert described_partitions(observer, topic_name, "--under-replicated-partitions") == set()
    assert all(after[p] == before[p] for p in before if p not in its_partitions)
    placed_while_fenced = f"{topic_name}-fenced"
    create_topic(observer, placed_while_fenced, partitions=4)
    assert set(partition_leaders(observer, placed_while_fenced).values()) <= set(survivors)

    cluster.nodes[victim].start()
    wait_until(lambda: partition_leaders(observer, topic_name) == before, ADMIN_TIMEOUT_SECONDS,
               f"broker {victim} leading its partitions again")
    assert listed_brokers(observer) == list(NODE_IDS)


def test_replica_lag_follows_a_killed_follower_and_its_catch_up(cluster, topic_name):
    """RF=3: once acks=all records are in, every replica's log ends where
    the leader's does (lag 0, each broker asked with the debugging replica
    id); a follower killed with kill -9 shows no lag (`?`) while records
    go on through the other two, and after its restart it fetches what it
    missed until its lag is 0 again. Guards against followers that do not
    replicate, a lag read from the wrong replica, and a restarted follower
    that never catches up."""
    create_topic(cluster.nodes[1], topic_name, partitions=1, replication_factor=3)
    leader = wait_until(lambda: partition_leaders(cluster.nodes[1], topic_name).get(0, -1) in NODE_IDS and
                        partition_leaders(cluster.nodes[1], topic_name)[0], ADMIN_TIMEOUT_SECONDS, "a leader")
    producer = Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "all"})
    for i in range(20):
        producer.produce(topic_name, value=f"a-{i}".encode(), partition=0)
    assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
    observer = cluster.nodes[leader]
    wait_until(lambda: replica_lags(observer, topic_name) == {0: {n: 0 for n in NODE_IDS}},
               ADMIN_TIMEOUT_SECONDS, "every replica at the leader's log end")
    quorum_leader = cluster.leader_id(NODE_IDS)
    victim = next(n for n in NODE_IDS if n not in (leader, quorum_leader))
    cluster.nodes[victim].kill9()
    acks_one = Producer({"bootstrap.servers": cluster.nodes[leader].bootstrap, "acks": "1"})
    for i in range(30):
        acks_one.produce(topic_name, value=f"b-{i}".encode(), partition=0)
    assert acks_one.flush(ADMIN_TIMEOUT_SECONDS) == 0
    lags = replica_lags(observer, topic_name)[0]
    assert lags[victim] is None and all(lags[n] is not None for n in NODE_IDS if n != victim), lags
    cluster.nodes[victim].start()
    wait_until(lambda: replica_lags(observer, topic_name) == {0: {n: 0 for n in NODE_IDS}},
               SESSION_TIMEOUT_MS / 1000 + ADMIN_TIMEOUT_SECONDS, f"broker {victim} caught up")


def replica_offsets(node, topic, partition):
    """(log start, log end) of `node`'s own replica of a partition:
    ListOffsets earliest and latest with the debugging replica id (-2),
    which any replica answers with its own offsets; None while the node
    refuses or cannot be asked."""
    offsets = tuple(list_offset(("127.0.0.1", node.port), topic, partition, timestamp,
                                replica_id=-2) for timestamp in (-2, -1))
    return None if None in offsets else offsets


def partition_isr(node, name, partition):
    """The ISR of a partition as Metadata from `node` alone tells it."""
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    topic = client.list_topics(name, timeout=ADMIN_TIMEOUT_SECONDS).topics[name]
    return set(topic.partitions[partition].isrs)


def test_a_follower_behind_the_leaders_log_start_starts_afresh_and_rejoins(cluster, topic_name):
    """RF=3: a follower killed with kill -9 misses records, and
    DeleteRecords moves the leader's log start past the follower's log end,
    inside a batch. Restarted, the follower is answered OFFSET_OUT_OF_RANGE
    with the leader's log start, drops its whole log, starts afresh there,
    catches up and rejoins the ISR, every replica's log start and end the
    leader's. Guards against a follower that backs off forever outside the
    ISR (acks=all left with two for good), and one that keeps records the
    partition deleted."""
    create_topic(cluster.nodes[1], topic_name, partitions=1, replication_factor=3)
    leader = wait_until(lambda: partition_leaders(cluster.nodes[1], topic_name).get(0, -1) in NODE_IDS and
                        partition_leaders(cluster.nodes[1], topic_name)[0], ADMIN_TIMEOUT_SECONDS, "a leader")
    observer = cluster.nodes[leader]
    producer = Producer({"bootstrap.servers": observer.bootstrap, "acks": "all", "linger.ms": 20})
    for i in range(20):
        producer.produce(topic_name, value=f"a-{i}".encode(), partition=0)
    assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
    wait_until(lambda: partition_isr(observer, topic_name, 0) == set(NODE_IDS),
               ADMIN_TIMEOUT_SECONDS, "every replica in the ISR")
    victim = next(n for n in NODE_IDS if n not in (leader, cluster.leader_id(NODE_IDS)))
    wait_until(lambda: replica_offsets(cluster.nodes[victim], topic_name, 0) == (0, 20),
               ADMIN_TIMEOUT_SECONDS, f"broker {victim} holding the first records")
    cluster.nodes[victim].kill9()
    wait_until(lambda: victim not in partition_isr(observer, topic_name, 0),
               SESSION_TIMEOUT_MS / 1000 + ADMIN_TIMEOUT_SECONDS, f"broker {victim} out of the ISR")
    # Batches of many records (linger; flushed every 50), so the new log
    # start falls inside one, past the first.
    for i in range(200):
        producer.produce(topic_name, value=f"b-{i}".encode(), partition=0)
        if i % 50 == 49:
            assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
    log_start = 151
    admin = AdminClient({"bootstrap.servers": observer.bootstrap})
    deleted = admin.delete_records([TopicPartition(topic_name, 0, log_start)],
                                   request_timeout=ADMIN_TIMEOUT_SECONDS)
    [future] = deleted.values()
    assert future.result(timeout=ADMIN_TIMEOUT_SECONDS).low_watermark == log_start
    assert replica_offsets(observer, topic_name, 0) == (log_start, 220)

    cluster.nodes[victim].start()
    wait_until(lambda: partition_isr(observer, topic_name, 0) == set(NODE_IDS),
               SESSION_TIMEOUT_MS / 1000 + ADMIN_TIMEOUT_SECONDS, f"broker {victim} back in the ISR")
    wait_until(lambda: all(replica_offsets(node, topic_name, 0) == (log_start, 220)
                           for node in cluster.nodes.values()),
               ADMIN_TIMEOUT_SECONDS, "every replica starting and ending where the leader does")
    segments = sorted((cluster.nodes[victim].data_dir / f"{topic_name}-0").glob("*.log"))
    # One segment, from the batch holding the log start on (past the
    # records the victim had).
    bases = [int(segment.stem) for segment in segments]
    assert len(bases) == 1 and 20 < bases[0] <= log_start, \
        f"broker {victim} kept segments of deleted records: {segments}"


def test_a_broker_only_node_joins_registers_and_receives_new_partitions(cluster, topic_name):
    """A fourth node with process.roles=broker follows the quorum as a
    learner: it registers, every node lists it, a new topic gets partitions
    on it, and records produced through node 1 to those partitions are read
    back through it. Stopped cleanly, it is fenced and no longer listed."""
    fourth = ClusterNode(cluster.root / "node4", 4, None, cluster.voters)
    fourth.start()
    try:
        everyone = [*NODE_IDS, 4]
        for node in [*cluster.nodes.values(), fourth]:
            wait_until(lambda: listed_brokers(node) == everyone, ADMIN_TIMEOUT_SECONDS,
                       f"node {node.node_id} listing the fourth broker")
        # DescribeQuorum names it an observer (a learner), not a voter.
        leader = cluster.nodes[cluster.leader_id(NODE_IDS)]
        quorum = cluster.quorum(leader)
        assert sorted(voter["id"] for voter in quorum["voters"]) == list(NODE_IDS)
        assert [observer["id"] for observer in quorum["observers"]] == [4]
        create_topic(fourth, topic_name, partitions=8)
        leaders = partition_leaders(cluster.nodes[1], topic_name)
        on_fourth = {partition for partition, leader in leaders.items() if leader == 4}
        assert on_fourth, leaders
        for node_id, node in [*cluster.nodes.items(), (4, fourth)]:
            led_here = {partition for partition, leader in leaders.items() if leader == node_id}
            wait_until(lambda: held_partitions(node, topic_name) == led_here,
                       ADMIN_TIMEOUT_SECONDS, f"node {node_id} holding the partitions it leads")

        producer = Producer({"bootstrap.servers": cluster.nodes[1].bootstrap, "acks": "all"})
        sent = {(partition, f"on-4-{partition}") for partition in on_fourth}
        for partition, value in sorted(sent):
            producer.produce(topic_name, value.encode(), partition=partition)
        assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
        read = {(int(record[0]), record[3]) for record in kcat_consume(fourth, topic_name)}
        assert read == sent

        # A second process claiming node.id 4 while the first is live is
        # refused (it would take the metadata log away from it), and the
        # live one goes on following the log.
        impostor = ClusterNode(cluster.root / "impostor", 4, None, cluster.voters)
        impostor.extra_settings = ["initial.broker.registration.timeout.ms=3000"]
        impostor.launch()
        assert impostor.process.wait(timeout=ADMIN_TIMEOUT_SECONDS) != 0
        assert "Another broker is registered with that broker id: 4" in impostor.log_text()
        later = f"{topic_name}-later"
        create_topic(cluster.nodes[2], later, partitions=8)
        later_on_fourth = {partition for partition, leader
                           in partition_leaders(cluster.nodes[2], later).items() if leader == 4}
        assert later_on_fourth
        wait_until(lambda: held_partitions(fourth, later) == later_on_fourth,
                   ADMIN_TIMEOUT_SECONDS, "the fourth broker still following the log")
    finally:
        fourth.stop()
    wait_until(lambda: listed_brokers(cluster.nodes[1]) == list(NODE_IDS),
               ADMIN_TIMEOUT_SECONDS, "the stopped fourth broker fenced")


# What a leader logs the first time a follower's fetch reads a partition
# on a shard other than the one the connection landed on.
READ_ACROSS_SHARDS = "a follower's fetch reads a partition another shard owns"


def test_followers_fetch_each_partition_from_the_leaders_shard_that_owns_it(
        tmp_path_factory, topic_name):
    """Three nodes with two shards each, a topic of 12 partitions at RF=3:
    every follower shard's connection to a leader lands on the leader's
    shard with the same index (its source port steers it there), which
    owns the partitions that follower shard fetches, so once acks=all
    records reached every replica no leader has read a follower's
    partition on another shard. Guards against links left to the kernel's
    reuseport hash, where about half of them land on the wrong shard and
    every fetch of theirs crosses cores."""
    partitions = 12
    cluster = Cluster(tmp_path_factory.mktemp("two-shards"), ["cores=2"])
    cluster.start_all()
    try:
        node = cluster.nodes[cluster.leader_id(NODE_IDS)]
        create_topic(node, topic_name, partitions, replication_factor=3)
        leaders = partition_leaders(node, topic_name)
        # Each node leads some partitions on each shard: every follower
        # shard has a link to every other node.
        assert set(leaders.values()) == set(NODE_IDS), leaders
        producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all"})
        for partition in range(partitions):
            for i in range(10):
                producer.produce(topic_name, value=f"{partition}-{i}".encode(),
                                 partition=partition)
        assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
        caught_up = {partition: {n: 0 for n in NODE_IDS} for partition in range(partitions)}
        wait_until(lambda: replica_lags(node, topic_name) == caught_up,
                   ADMIN_TIMEOUT_SECONDS, "every replica at its leader's log end")
        crossings = [f"node {node_id}: {line}" for node_id, each in cluster.nodes.items()
                     for line in each.log_text().splitlines() if READ_ACROSS_SHARDS in line]
        assert not crossings, "\n".join(crossings)
    finally:
        cluster.stop_all()
