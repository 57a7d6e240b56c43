"""Leaderships go back to preferred replicas: through ElectLeaders
(`kafka-leader-election.sh`, confluent-kafka's and kafka-python's
`elect_leaders`) and on their own with `auto.leader.rebalance.enable`.
Three real `fjord` processes on loopback, RF=3.

The failures guarded against: after a broker fails and comes back, every
leadership it had stays with the brokers that took them over (they carry
all the traffic while it idles), an election that hands a partition to a
replica out of sync, and an admin answer clients cannot read."""

import pytest
from confluent_kafka import Consumer, ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.admin import KafkaAdminClient

from conftest import wait_until
from test_cluster import ADMIN_TIMEOUT_SECONDS, Cluster

PARTITIONS = 6
# A restarted broker catches up, rejoins the ISRs, then is elected.
REJOIN_DEADLINE_SECONDS = 60


def start_cluster(root, *settings):
    cluster = Cluster(root)
    for node in cluster.nodes.values():
        node.extra_settings.extend(settings)
    cluster.start_all()
    return cluster


@pytest.fixture(scope="module")
def manual_cluster(tmp_path_factory):
    """Leaderships move only when asked."""
    cluster = start_cluster(tmp_path_factory.mktemp("manual"), "auto.leader.rebalance.enable=false")
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def automatic_cluster(tmp_path_factory):
    """The controller looks for imbalance every second."""
    cluster = start_cluster(tmp_path_factory.mktemp("automatic"),
                            "leader.imbalance.check.interval.seconds=1")
    try:
        yield cluster
    finally:
        cluster.stop_all()


def partitions_of(cluster, topic):
    """Partition -> (leader, replicas, isr) from Metadata through any
    running node."""
    for node in cluster.nodes.values():
        if node.process is None or node.process.poll() is not None:
            continue
        client = AdminClient({"bootstrap.servers": node.bootstrap})
        found = client.list_topics(topic, timeout=ADMIN_TIMEOUT_SECONDS).topics[topic]
        assert found.error is None, found.error
        return {partition.id: (partition.leader, list(partition.replicas), sorted(partition.isrs))
                for partition in found.partitions.values()}
    raise AssertionError("no node runs")


# confluent-kafka 2.16's elect_leaders refuses keyword arguments (a
# SystemError from its C binding), so its calls take the default timeouts
# and `result` bounds the wait.


def error_code(outcome):
    """The Kafka error code of one partition's `elect_leaders` outcome
    (None: elected)."""
    return None if outcome is None else outcome.code()


def create(cluster, topic):
    client = AdminClient({"bootstrap.servers": cluster.nodes[1].bootstrap})
    futures = client.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3)],
                                   request_timeout=ADMIN_TIMEOUT_SECONDS)
    futures[topic].result(timeout=ADMIN_TIMEOUT_SECONDS)
    wait_until(lambda: all(leader == replicas[0] and len(isr) == 3
                           for leader, replicas, isr in partitions_of(cluster, topic).values()),
               ADMIN_TIMEOUT_SECONDS, "every partition led by its preferred replica, ISR full")


def fail_and_return(cluster, topic, node_id):
    """kill -9 `node_id` until its leaderships have moved, then restart it
    and wait until it is back in every ISR; returns the partitions it
    prefers, which others lead now."""
    preferred = [partition for partition, (_, replicas, _) in partitions_of(cluster, topic).items()
                 if replicas[0] == node_id]
    assert preferred, "placement gives every broker preferred leaderships"
    node = cluster.nodes[node_id]
    node.kill9()
    wait_until(lambda: all(partitions_of(cluster, topic)[partition][0] not in (node_id, -1)
                           for partition in preferred),
               ADMIN_TIMEOUT_SECONDS, f"broker {node_id}'s leaderships moved")
    node.start()
    wait_until(lambda: all(node_id in isr for _, _, isr in partitions_of(cluster, topic).values()),
               REJOIN_DEADLINE_SECONDS, f"broker {node_id} back in every ISR")
    return preferred


def test_elect_leaders_gives_preferred_leaderships_back(manual_cluster, topic_name):
    """confluent-kafka and kafka-python ask for preferred elections; the
    first gives each partition back to its preferred replica, in sync; a
    second answers ELECTION_NOT_NEEDED; an unknown partition is named."""
    create(manual_cluster, topic_name)
    preferred = fail_and_return(manual_cluster, topic_name, 2)
    # Nothing moves on its own here.
    assert all(partitions_of(manual_cluster, topic_name)[partition][0] != 2
               for partition in preferred)

    first, rest = preferred[0], preferred[1:]
    admin = AdminClient({"bootstrap.servers": manual_cluster.nodes[3].bootstrap})
    asked = [TopicPartition(topic_name, first), TopicPartition(topic_name, PARTITIONS + 5)]
    future = admin.elect_leaders(ElectionType.PREFERRED, asked)
    results = future.result(timeout=ADMIN_TIMEOUT_SECONDS)
    by_partition = {partition.partition: error_code(error) for partition, error in results.items()}
    assert by_partition == {first: None, PARTITIONS + 5: KafkaError.UNKNOWN_TOPIC_OR_PART}
    leader, replicas, isr = partitions_of(manual_cluster, topic_name)[first]
    assert leader == replicas[0] == 2 and len(isr) == 3

    again = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic_name, first)])
    error = again.result(timeout=ADMIN_TIMEOUT_SECONDS)[TopicPartition(topic_name, first)]
    assert error_code(error) == KafkaError.ELECTION_NOT_NEEDED, error

    # kafka-python, through another node, for the rest.
    client = KafkaAdminClient(bootstrap_servers=manual_cluster.nodes[1].bootstrap,
                              request_timeout_ms=ADMIN_TIMEOUT_SECONDS * 1000)
    try:
        client.elect_leaders(0, {topic_name: rest})
    finally:
        client.close()
    leaders = partitions_of(manual_cluster, topic_name)
    assert all(leaders[partition][0] == 2 for partition in preferred), leaders
    assert all(leader == replicas[0] for leader, replicas, _ in leaders.values()), leaders


def test_unclean_election_is_not_needed_where_a_leader_exists(manual_cluster, topic_name):
    """An UNCLEAN election of a led partition changes nothing."""
    create(manual_cluster, topic_name)
    before = partitions_of(manual_cluster, topic_name)
    admin = AdminClient({"bootstrap.servers": manual_cluster.nodes[2].bootstrap})
    future = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic_name, 0)])
    error = future.result(timeout=ADMIN_TIMEOUT_SECONDS)[TopicPartition(topic_name, 0)]
    assert error_code(error) == KafkaError.ELECTION_NOT_NEEDED, error
    assert partitions_of(manual_cluster, topic_name) == before


def test_an_unclean_election_elects_a_stale_replica_which_recovers_and_takes_followers_back(
        manual_cluster, topic_name):
    """With the whole ISR down, an UNCLEAN election through confluent-kafka
    elects the live replica outside it; the partition is marked recovering
    until its new leader reports it recovered (KIP-704), which is what lets
    the old leader, back and truncated, rejoin the ISR."""
    nodes = manual_cluster.nodes
    admin = AdminClient({"bootstrap.servers": nodes[1].bootstrap})
    created = admin.create_topics([NewTopic(topic_name, num_partitions=1,
                                            replica_assignment=[[2, 3]])])
    created[topic_name].result(timeout=ADMIN_TIMEOUT_SECONDS)
    wait_until(lambda: partitions_of(manual_cluster, topic_name)[0] == (2, [2, 3], [2, 3]),
               ADMIN_TIMEOUT_SECONDS, "partition 0 led by 2 with both in sync")
    nodes[3].kill9()
    wait_until(lambda: partitions_of(manual_cluster, topic_name)[0][2] == [2],
               ADMIN_TIMEOUT_SECONDS, "3 fenced out of the ISR")
    producer = Producer({"bootstrap.servers": nodes[1].bootstrap, "acks": "all"})
    producer.produce(topic_name, value=b"only-on-2", partition=0)
    assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0
    nodes[2].kill9()
    nodes[3].start()
    wait_until(lambda: partitions_of(manual_cluster, topic_name)[0][0] == -1,
               ADMIN_TIMEOUT_SECONDS, "the partition offline, its ISR (2) down")

    # librdkafka sends ElectLeaders to the controller its metadata names;
    # the first client's may still name 2, dead (it was the quorum leader
    # in some runs). A client bootstrapped now learns a live one: 2 is
    # fenced, which only a quorum with a live leader can have decided.
    admin = AdminClient({"bootstrap.servers": nodes[3].bootstrap})
    elected = admin.elect_leaders(ElectionType.UNCLEAN, [TopicPartition(topic_name, 0)])
    outcome = elected.result(timeout=ADMIN_TIMEOUT_SECONDS)[TopicPartition(topic_name, 0)]
    assert error_code(outcome) is None, outcome
    assert partitions_of(manual_cluster, topic_name)[0][:1] == (3,)
    producer.produce(topic_name, value=b"after-the-election", partition=0)
    assert producer.flush(ADMIN_TIMEOUT_SECONDS) == 0

    nodes[2].start()
    wait_until(lambda: partitions_of(manual_cluster, topic_name)[0] == (3, [2, 3], [2, 3]),
               REJOIN_DEADLINE_SECONDS, "the old leader back in the ISR")
    consumer = Consumer({"bootstrap.servers": nodes[1].bootstrap, "group.id": topic_name,
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, 0, 0)])
    values = []
    for _ in range(100):
        values += [message.value() for message in consumer.consume(10, timeout=0.2)
                   if message.error() is None]
        if values:
            break
    consumer.close()
    # The record only 2 had is the price of the unclean election.
    assert values == [b"after-the-election"]


def test_leaderships_return_to_a_restarted_broker_on_their_own(automatic_cluster, topic_name):
    """With auto.leader.rebalance.enable (Kafka's default), a broker that
    failed and rejoined the ISRs leads its preferred partitions again."""
    create(automatic_cluster, topic_name)
    preferred = fail_and_return(automatic_cluster, topic_name, 3)
    wait_until(lambda: all(partitions_of(automatic_cluster, topic_name)[partition][0] == 3
                           for partition in preferred),
               ADMIN_TIMEOUT_SECONDS, "broker 3 leads its preferred partitions again")
