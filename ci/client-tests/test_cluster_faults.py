"""A three-node cluster with each node in a network namespace of its own
(veth pairs on a bridge the test owns), for faults loopback cannot make:
the quorum leader's link cut, and a node frozen with SIGSTOP.

The failures guarded against: a majority that does not elect a new leader
without the old one or takes no metadata change meanwhile, and an old
leader that does not step down, catch up (the topic made without it) and
follow the new leader once its link is back or it runs again, or that
cannot forward a change afterwards. Traffic goes only to the addresses the
test gives its own namespaces."""

import json
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import FJORD, Broker, wait_until
from test_fjordctl import FJORDCTL

CLUSTER_ID = "4L6g3nShT-eMCtK--X86sw"
NODE_IDS = (1, 2, 3)
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093
ELECTION_DEADLINE_SECONDS = 30
FAILOVER_DEADLINE_SECONDS = 10
ADMIN_TIMEOUT_SECONDS = 30


def run(*command):
    subprocess.run(command, check=True, capture_output=True, text=True)


def can_make_namespaces():
    probe = f"fjprobe{os.getpid()}"
    try:
        run("ip", "netns", "add", probe)
        run("ip", "netns", "del", probe)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


class Network:
    """A bridge in this namespace and, per node, a namespace joined to it by
    a veth pair; names carry this process's id so runs never collide."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.prefix = f"fj{tag}"
        subnet = 16 + tag % 200
        self.bridge = f"{self.prefix}br"
        self.gateway = f"10.231.{subnet}.254"
        self.addresses = {node_id: f"10.231.{subnet}.{node_id}" for node_id in NODE_IDS}

    def namespace(self, node_id):
        return f"{self.prefix}n{node_id}"

    def host_link(self, node_id):
        return f"{self.prefix}h{node_id}"

    def create(self):
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for node_id, address in self.addresses.items():
            namespace = self.namespace(node_id)
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", self.host_link(node_id), "type", "veth",
                "peer", "name", "eth0", "netns", namespace)
            run("ip", "link", "set", self.host_link(node_id), "master", self.bridge)
            run("ip", "link", "set", self.host_link(node_id), "up")
            run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/24",
                "dev", "eth0")
            run("ip", "netns", "exec", namespace, "ip", "link", "set", "eth0", "up")

    def destroy(self):
        for node_id in NODE_IDS:
            subprocess.run(["ip", "netns", "del", self.namespace(node_id)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def cut(self, node_id):
        run("ip", "link", "set", self.host_link(node_id), "down")

    def heal(self, node_id):
        run("ip", "link", "set", self.host_link(node_id), "up")


class Node(Broker):
    """A combined node of the three, run in its own namespace."""

    def __init__(self, network, node_id, data_dir):
        super().__init__(data_dir)
        self.network = network
        self.node_id = node_id
        self.address = network.addresses[node_id]
        self.log_path = data_dir.parent / f"node{node_id}.log"

    @property
    def bootstrap(self):
        return f"{self.address}:{CLIENT_PORT}"

    def command(self):
        return ["ip", "netns", "exec", self.network.namespace(self.node_id), str(FJORD)]

    def settings(self):
        voters = ",".join(f"{node_id}@{address}:{CONTROLLER_PORT}"
                          for node_id, address in self.network.addresses.items())
        return [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"cluster.id={CLUSTER_ID}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
            f"listeners=PLAINTEXT://{self.address}:{CLIENT_PORT},"
            f"CONTROLLER://{self.address}:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://{self.address}:{CLIENT_PORT}",
            f"log.dirs={self.data_dir}",
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=3000",
        ]

    def serving(self):
        try:
            with socket.create_connection((self.address, CLIENT_PORT), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self):
        # A frozen node must run to handle SIGTERM.
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        super().stop()

    def quorum(self):
        """The quorum as this node reports it, or None if it cannot be asked."""
        try:
            result = subprocess.run(
                [str(FJORDCTL), "cluster", "info", "--json", "--bootstrap-server", self.bootstrap],
                capture_output=True, text=True, timeout=5,
            )
        except subprocess.TimeoutExpired:
            return None
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)["quorum"]



@pytest.fixture
def cluster(tmp_path):
    if not can_make_namespaces():
        pytest.fail("network namespaces are needed (root and iproute2): ci/test runs as root")
    network = Network()
    network.destroy()
    network.create()
    nodes = {node_id: Node(network, node_id, tmp_path / f"node{node_id}") for node_id in NODE_IDS}
    try:
        for node in nodes.values():
            node.launch()
        for node in nodes.values():
            wait_until(node.serving, ELECTION_DEADLINE_SECONDS, f"node {node.node_id} serving")
        yield network, nodes
    finally:
        for node in nodes.values():
            node.stop()
        network.destroy()


def agreed_leader(nodes, asked):
    """The leader every node in `asked` names, once they agree on one."""
    leaders = set()
    for node_id in asked:
        quorum = nodes[node_id].quorum()
        if quorum is None:
            return None
        leaders.add(quorum["leader_id"])
    return leaders.pop() if len(leaders) == 1 and -1 not in leaders else None


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
    network, nodes = cluster
    old_leader = wait_until(lambda: agreed_leader(nodes, NODE_IDS), ELECTION_DEADLINE_SECONDS,
                            "one quorum leader")
    majority = [node_id for node_id in NODE_IDS if node_id != old_leader]
    network.cut(old_leader)
    cut_at = time.monotonic()
    new_leader = wait_until(
        lambda: next((leader for leader in [agreed_leader(nodes, majority)]
                      if leader not in (None, old_leader)), None),
        FAILOVER_DEADLINE_SECONDS, "the majority electing a new leader")
    assert time.monotonic() - cut_at <= FAILOVER_DEADLINE_SECONDS
    assert new_leader in majority
    name = f"made-while-cut-{uuid.uuid4().hex[:8]}"
    create_topic(nodes[majority[0]], name)

    network.heal(old_leader)
    wait_until(lambda: agreed_leader(nodes, NODE_IDS) == new_leader, ELECTION_DEADLINE_SECONDS,
               "the old leader following the new one")
    wait_until(lambda: topic_listed(nodes[old_leader], name), ADMIN_TIMEOUT_SECONDS,
               "the old leader seeing the topic made while it was cut off")


def test_a_frozen_leader_is_replaced_and_steps_down_when_it_runs_again(cluster):
    _, nodes = cluster
    old_leader = wait_until(lambda: agreed_leader(nodes, NODE_IDS), ELECTION_DEADLINE_SECONDS,
                            "one quorum leader")
    majority = [node_id for node_id in NODE_IDS if node_id != old_leader]
    nodes[old_leader].process.send_signal(signal.SIGSTOP)
    try:
        new_leader = wait_until(
            lambda: next((leader for leader in [agreed_leader(nodes, majority)]
                          if leader not in (None, old_leader)), None),
            FAILOVER_DEADLINE_SECONDS, "the majority electing a new leader")
        name = f"made-while-frozen-{uuid.uuid4().hex[:8]}"
        create_topic(nodes[majority[1]], name)
    finally:
        nodes[old_leader].process.send_signal(signal.SIGCONT)
    wait_until(lambda: agreed_leader(nodes, NODE_IDS) == new_leader, ELECTION_DEADLINE_SECONDS,
               "the thawed leader following the new one")
    wait_until(lambda: topic_listed(nodes[old_leader], name), ADMIN_TIMEOUT_SECONDS,
               "the thawed leader seeing the topic")
    create_topic(nodes[old_leader], f"made-through-the-thawed-{uuid.uuid4().hex[:8]}")
