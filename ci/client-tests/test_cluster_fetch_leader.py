"""A consumer that fetches a partition from a node that does not lead it is
told, with Fetch v16 (KIP-951), which broker leads it, in which leader
epoch, and where that broker listens, so it can go there at once instead of
first refreshing its metadata. Three real `fjord` processes on loopback
(test_cluster's `Cluster`), requests encoded and responses decoded by
kafka-python's protocol classes (generated from Kafka's own message
schemas), not by fjord's code.

The failures guarded against: a v16 refusal without the leader (clients
fall back to a Metadata round trip), a leader or epoch other than the one
Metadata names, an endpoint missing, wrong or repeated, topic ids (Fetch
v13+) not resolved to the partitions they name, and the KIP-951 fields
leaking into v15, whose clients do not expect them."""

import pytest
from kafka.protocol.consumer import FetchRequest, FetchResponse
from kafka.protocol.metadata import MetadataRequest, MetadataResponse

from conftest import wait_until
from raw_fetch import call
from test_cluster import ADMIN_TIMEOUT_SECONDS, NODE_IDS, Cluster, create_topic

PARTITIONS = 6
NOT_LEADER_OR_FOLLOWER = 6
# Fetch v16 is the first with current leaders and node endpoints.
LEADER_HINT_VERSION = 16
METADATA_VERSION = 12
PARTITION_MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    instance = Cluster(tmp_path_factory.mktemp("cluster-fetch-leader"))
    instance.start_all()
    try:
        yield instance
    finally:
        instance.stop_all()


def metadata(node, name):
    """`node`'s view of topic `name` and of the brokers, once it has a
    leader for every partition: (topic id, partition -> (leader, leader
    epoch), broker id -> (host, port))."""
    def view():
        request = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=name)],
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
        response = call(("127.0.0.1", node.port), request, MetadataResponse, METADATA_VERSION, 1)
        [topic] = response.topics
        leaders = {p.partition_index: (p.leader_id, p.leader_epoch) for p in topic.partitions}
        if topic.error_code != 0 or len(leaders) != PARTITIONS or any(
                leader < 0 for leader, _ in leaders.values()):
            return None
        brokers = {b.node_id: (b.host, b.port) for b in response.brokers}
        return topic.topic_id, leaders, brokers
    return wait_until(view, ADMIN_TIMEOUT_SECONDS, f"{name} with leaders in node {node.node_id}")


def fetch_every_partition(node, topic_id, version):
    """A sessionless Fetch of every partition from offset 0, answered at
    once; `(response, partition -> answer)`."""
    request = FetchRequest(
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=PARTITION_MAX_BYTES,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[FetchRequest.FetchTopic(
            topic_id=topic_id,
            partitions=[
                FetchRequest.FetchTopic.FetchPartition(
                    partition=partition,
                    current_leader_epoch=-1,
                    fetch_offset=0,
                    last_fetched_epoch=-1,
                    log_start_offset=-1,
                    partition_max_bytes=PARTITION_MAX_BYTES,
                )
                for partition in range(PARTITIONS)
            ],
        )],
        forgotten_topics_data=[],
        rack_id="",
    )
    response = call(("127.0.0.1", node.port), request, FetchResponse, version, 2)
    assert response.error_code == 0
    [topic] = response.responses
    assert topic.topic_id == topic_id
    assert sorted(p.partition_index for p in topic.partitions) == list(range(PARTITIONS))
    return response, {p.partition_index: p for p in topic.partitions}


def fetch_once_led_partitions_are_open(node, topic_id, leaders, version):
    """`fetch_every_partition` once `node` serves every partition Metadata
    says it leads: a node learns it leads a partition (the image) a moment
    before it has opened its log, and answers UNKNOWN_TOPIC_OR_PARTITION
    meanwhile."""
    def served():
        response, answers = fetch_every_partition(node, topic_id, version)
        led_here = [p for p, (leader, _) in leaders.items() if leader == node.node_id]
        return (response, answers) if all(answers[p].error_code == 0 for p in led_here) else None
    return wait_until(served, ADMIN_TIMEOUT_SECONDS,
                      f"node {node.node_id} serving the partitions it leads")


def current_leader(answer):
    """The answer's (leader id, leader epoch); the field's default, -1 and
    -1, when the tagged field is absent."""
    leader = answer.current_leader
    return (-1, -1) if leader is None else (leader.leader_id, leader.leader_epoch)


def test_a_v16_fetch_from_a_non_leader_names_the_leader_and_where_it_listens(
        cluster, topic_name):
    """Every node is asked for all six partitions, spread over the three:
    it serves those it leads and refuses the others with
    NOT_LEADER_OR_FOLLOWER, each naming the leader and epoch its Metadata
    names, and the response carries each of those leaders' endpoint once."""
    create_topic(cluster.nodes[1], topic_name, PARTITIONS)
    for node_id, node in cluster.nodes.items():
        topic_id, leaders, brokers = metadata(node, topic_name)
        assert {leader for leader, _ in leaders.values()} == set(NODE_IDS), leaders
        response, answers = fetch_once_led_partitions_are_open(
            node, topic_id, leaders, LEADER_HINT_VERSION)
        elsewhere = set()
        for partition, (leader, leader_epoch) in leaders.items():
            answer = answers[partition]
            if leader == node_id:
                assert current_leader(answer) == (-1, -1), "served, not refused"
                continue
            elsewhere.add(leader)
            assert answer.error_code == NOT_LEADER_OR_FOLLOWER, (node_id, partition)
            assert current_leader(answer) == (leader, leader_epoch), (node_id, partition)
        endpoints = [(e.node_id, e.host, e.port) for e in response.node_endpoints]
        assert sorted(endpoints) == sorted(
            (leader, *brokers[leader]) for leader in elsewhere), node_id
        assert {port for _, _, port in endpoints} == {
            cluster.nodes[leader].port for leader in elsewhere}


def test_a_v15_fetch_from_a_non_leader_names_no_leader(cluster, topic_name):
    create_topic(cluster.nodes[2], topic_name, PARTITIONS)
    node = cluster.nodes[3]
    topic_id, leaders, _ = metadata(node, topic_name)
    response, answers = fetch_once_led_partitions_are_open(
        node, topic_id, leaders, LEADER_HINT_VERSION - 1)
    refused = [answers[p] for p, (leader, _) in leaders.items() if leader != node.node_id]
    assert refused
    for answer in refused:
        assert answer.error_code == NOT_LEADER_OR_FOLLOWER
        assert current_leader(answer) == (-1, -1)
    assert not response.node_endpoints
