"""A three-node cluster with each node in a network namespace of its own
(cluster_harness: veth pairs on a bridge the test owns), for faults
loopback cannot make: the quorum leader's link cut, and a node frozen with
SIGSTOP.

The failures guarded against: a majority that does not elect a new leader
without the old one or takes no metadata change meanwhile, and an old
leader that does not step down, catch up (the topic made without it) and
follow the new leader once its link is back or it runs again, or that
cannot forward a change afterwards. Traffic goes only to the addresses the
test gives its own namespaces."""

import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_harness import ELECTION_DEADLINE_SECONDS, NODE_IDS, can_make_namespaces, running_cluster
from conftest import wait_until

FAILOVER_DEADLINE_SECONDS = 10
ADMIN_TIMEOUT_SECONDS = 30


@pytest.fixture
def cluster(tmp_path):
    if not can_make_namespaces():
        pytest.fail("network namespaces are needed (root and iproute2): ci/test runs as root")
    with running_cluster(tmp_path) as instance:
        yield instance


def create_topic(node, name, timeout=ADMIN_TIMEOUT_SECONDS):
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    futures = client.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)],
                                   request_timeout=timeout)
    futures[name].result(timeout=timeout)


def topic_listed(node, name):
    client = AdminClient({"bootstrap.servers": node.bootstrap})
    try:
        return name in client.list_topics(timeout=5).topics
    except Exception:  # noqa: BLE001 - a node still catching up may not answer yet
        return False


def test_a_cut_off_leader_is_replaced_and_catches_up_when_its_link_returns(cluster):
    nodes = cluster.nodes
    old_leader = cluster.controller(NODE_IDS)
    majority = [node_id for node_id in NODE_IDS if node_id != old_leader]
    cluster.network.disconnect(old_leader)
    cut_at = time.monotonic()
    new_leader = wait_until(
        lambda: next((leader for leader in [cluster.agreed_leader(majority)]
                      if leader not in (None, old_leader)), None),
        FAILOVER_DEADLINE_SECONDS, "the majority electing a new leader")
    assert time.monotonic() - cut_at <= FAILOVER_DEADLINE_SECONDS
    assert new_leader in majority
    name = f"made-while-cut-{uuid.uuid4().hex[:8]}"
    create_topic(nodes[majority[0]], name)

    cluster.network.reconnect(old_leader)
    wait_until(lambda: cluster.agreed_leader(NODE_IDS) == new_leader, ELECTION_DEADLINE_SECONDS,
               "the old leader following the new one")
    wait_until(lambda: topic_listed(nodes[old_leader], name), ADMIN_TIMEOUT_SECONDS,
               "the old leader seeing the topic made while it was cut off")


def test_a_frozen_leader_is_replaced_and_steps_down_when_it_runs_again(cluster):
    nodes = cluster.nodes
    old_leader = cluster.controller(NODE_IDS)
    majority = [node_id for node_id in NODE_IDS if node_id != old_leader]
    nodes[old_leader].freeze()
    try:
        new_leader = wait_until(
            lambda: next((leader for leader in [cluster.agreed_leader(majority)]
                          if leader not in (None, old_leader)), None),
            FAILOVER_DEADLINE_SECONDS, "the majority electing a new leader")
        name = f"made-while-frozen-{uuid.uuid4().hex[:8]}"
        create_topic(nodes[majority[1]], name)
    finally:
        nodes[old_leader].thaw()
    wait_until(lambda: cluster.agreed_leader(NODE_IDS) == new_leader, ELECTION_DEADLINE_SECONDS,
               "the thawed leader following the new one")
    wait_until(lambda: topic_listed(nodes[old_leader], name), ADMIN_TIMEOUT_SECONDS,
               "the thawed leader seeing the topic")
    create_topic(nodes[old_leader], f"made-through-the-thawed-{uuid.uuid4().hex[:8]}")
