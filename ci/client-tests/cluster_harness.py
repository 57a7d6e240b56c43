"""Three combined fjord nodes (broker and controller), each in a network
namespace of its own, for the faults loopback cannot make: a node cut off,
a link between two nodes dropped, a node frozen (SIGSTOP), killed (SIGKILL)
or stopped (SIGTERM, a controlled shutdown). Shared by the cluster fault
tests and the replication scenarios.

The network: a bridge in the tests' namespace and, per node, a namespace
joined to it by a veth pair. Each node gets two addresses, assigned by the
harness in its namespace and used nowhere else:
  - a data address, where the client listener is: clients (in the tests'
    namespace, through the bridge's address on that subnet) and followers
    fetching from a leader connect there;
  - a control address, on a subnet only the nodes have, where the
    controller listener is: Raft and the brokers' heartbeats.
Two planes let a test stop replication between two nodes while both still
heartbeat, so an ISR shrinks because a follower lags, with nobody fenced.

Faults on links are routes: a dropped link is a blackhole route to the
other node's addresses in each of the two namespaces, so neither side's
packets leave (the kernel fails a local send at once; the other side sees
silence); an isolated node has every link to the other nodes dropped while
clients still reach it; a disconnected node has the host end of its veth
down, cut from everyone. `tc netem` delays and random loss are not among
the faults: the kernels the tests run on here are built without sch_netem
(`tc qdisc add ... netem` answers "Specified qdisc kind is unknown").

Names carry the test process's id and a count of its clusters
(`fjh<pid>x<n>...`), so concurrent runs never collide, nor one test with
what the kernel is still tearing down of the previous one; what a killed
run left behind (its namespaces, the fjord processes in them, its bridge)
is removed at the next start, and a cluster removes its own in its
finalizer, whatever the test's outcome."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kafka.protocol.metadata import MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse
from kafka.record.memory_records import MemoryRecordsBuilder

from conftest import FJORD, Broker, wait_until
from raw_fetch import call, list_offset
from test_fjordctl import FJORDCTL

CLUSTER_ID = "4L6g3nShT-eMCtK--X86sw"
NODE_IDS = (1, 2, 3)
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093
# An election among three, the first one included.
ELECTION_DEADLINE_SECONDS = 30
HEARTBEAT_INTERVAL_MS = 500
# Kafka's 9 s shortened, so a killed broker is fenced (and its partitions
# get new leaders) within a scenario's deadlines.
SESSION_TIMEOUT_MS = 3000
# A question to one node: a frozen or cut-off node must not stall a poll.
QUERY_TIMEOUT_SECONDS = 5
LOG_TAIL_LINES = 60
METADATA_VERSION = 12
LIST_OFFSETS_VERSION = 7
PRODUCE_VERSION = 7
RECORD_BATCH_MAGIC = 2
LATEST_TIMESTAMP = -1
NAME_PREFIX = "fjh"
# Data on 10.233.S.0/24, control on 10.234.S.0/24; the bridge holds
# 10.233.S.254 so the tests' namespace reaches the data addresses.
DATA_NET = "10.233"
CONTROL_NET = "10.234"
GATEWAY_HOST = 254


def run(*command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip()}")


def can_make_namespaces():
    probe = f"{NAME_PREFIX}probe{os.getpid()}"
    try:
        run("ip", "netns", "add", probe)
        run("ip", "netns", "del", probe)
        return True
    except (OSError, RuntimeError):
        return False


def process_alive(pid):
    return Path(f"/proc/{pid}").exists()


def remove_stale_networks():
    """Removes the namespaces (and the fjord processes in them) and bridges
    of harness runs whose test process is gone."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in namespaces.splitlines():
        match = re.fullmatch(rf"({NAME_PREFIX}(\d+)x\d+n\d+)", line.split()[0]) if line else None
        if match and not process_alive(int(match.group(2))):
            pids = subprocess.run(["ip", "netns", "pids", match.group(1)],
                                  capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", match.group(1)], capture_output=True)
    bridges = subprocess.run(["ip", "-o", "link", "show", "type", "bridge"],
                             capture_output=True, text=True).stdout
    for name in re.findall(rf"^\d+: ({NAME_PREFIX}(\d+)x\d+br)[:@]", bridges, re.MULTILINE):
        if not process_alive(int(name[1])):
            subprocess.run(["ip", "link", "del", name[0]], capture_output=True)


def free_subnet():
    """A third octet no bridge of this host uses on the data net, starting
    from one this process's id picks so concurrent runs rarely race."""
    addresses = subprocess.run(["ip", "-o", "-4", "addr", "show"],
                               capture_output=True, text=True).stdout
    used = {int(octet) for octet in re.findall(rf"inet {re.escape(DATA_NET)}\.(\d+)\.", addresses)}
    start = os.getpid() % 250
    return next((start + step) % 250 for step in range(250) if (start + step) % 250 not in used)


class Network:
    """The bridge, the namespaces and the veth pairs of one cluster."""

    # Interface names hold 15 characters: `fjh` + 7 digits of pid + `x` +
    # 2 of count + `h1` at most.
    created = 0

    def __init__(self, node_ids=NODE_IDS):
        self.node_ids = tuple(node_ids)
        self.prefix = f"{NAME_PREFIX}{os.getpid()}x{Network.created % 100}"
        Network.created += 1
        self.bridge = f"{self.prefix}br"
        self.subnet = None
        self.dropped = set()

    def data_address(self, node_id):
        return f"{DATA_NET}.{self.subnet}.{node_id}"

    def control_address(self, node_id):
        return f"{CONTROL_NET}.{self.subnet}.{node_id}"

    def namespace(self, node_id):
        return f"{self.prefix}n{node_id}"

    def host_link(self, node_id):
        return f"{self.prefix}h{node_id}"

    def in_namespace(self, node_id, *command):
        run("ip", "netns", "exec", self.namespace(node_id), *command)

    def create(self):
        remove_stale_networks()
        self.destroy()
        self.subnet = free_subnet()
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{DATA_NET}.{self.subnet}.{GATEWAY_HOST}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for node_id in self.node_ids:
            namespace = self.namespace(node_id)
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", self.host_link(node_id), "type", "veth",
                "peer", "name", "eth0", "netns", namespace)
            run("ip", "link", "set", self.host_link(node_id), "master", self.bridge)
            run("ip", "link", "set", self.host_link(node_id), "up")
            self.in_namespace(node_id, "ip", "link", "set", "lo", "up")
            # The data address first: it is the source of connections to
            # the data subnet, the control address of those to the control
            # subnet (each subnet's route names its own source).
            for address in (self.data_address(node_id), self.control_address(node_id)):
                self.in_namespace(node_id, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
            self.in_namespace(node_id, "ip", "link", "set", "eth0", "up")

    def destroy(self):
        for node_id in self.node_ids:
            # Deleting one end of a veth pair deletes both at once; a
            # namespace's own devices go only when the kernel gets to it.
            subprocess.run(["ip", "link", "del", self.host_link(node_id)], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.namespace(node_id)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self.dropped.clear()

    def disconnect(self, node_id):
        """Cuts `node_id` from everyone, clients included: its veth down."""
        run("ip", "link", "set", self.host_link(node_id), "down")

    def reconnect(self, node_id):
        run("ip", "link", "set", self.host_link(node_id), "up")

    def _addresses(self, node_id, planes):
        by_plane = {"data": self.data_address, "control": self.control_address}
        return [by_plane[plane](node_id) for plane in planes]

    def drop_link(self, first, second, planes=("data", "control")):
        """Drops every packet between `first` and `second` on `planes`
        ("data": client listeners, so replication; "control": the
        controller listeners), in both directions; other links and the
        clients' stay up."""
        for here, there in ((first, second), (second, first)):
            for address in self._addresses(there, planes):
                if (here, address) not in self.dropped:
                    self.in_namespace(here, "ip", "route", "add", "blackhole", f"{address}/32")
                    self.dropped.add((here, address))

    def isolate(self, node_id):
        """Drops every link between `node_id` and the other nodes; clients
        still reach it, and it still answers them."""
        for other in self.node_ids:
            if other != node_id:
                self.drop_link(node_id, other)

    def heal(self):
        """Restores every dropped link and every disconnected node."""
        for here, address in sorted(self.dropped):
            self.in_namespace(here, "ip", "route", "del", "blackhole", f"{address}/32")
        self.dropped.clear()
        for node_id in self.node_ids:
            self.reconnect(node_id)


@dataclass(frozen=True)
class PartitionView:
    """One partition as one node's Metadata tells it."""

    leader: int
    leader_epoch: int
    replicas: tuple
    isr: tuple

    @property
    def fully_replicated(self):
        return self.leader >= 0 and set(self.isr) == set(self.replicas)


@dataclass(frozen=True)
class TopicView:
    """One topic, the controller and the live brokers as one node tells."""

    partitions: dict
    controller: int
    brokers: tuple


class Node(Broker):
    """A combined node of the cluster, run in its own namespace."""

    def __init__(self, network, node_id, data_dir, extra_settings=()):
        super().__init__(data_dir, extra_settings)
        self.network = network
        self.node_id = node_id
        self.log_path = Path(data_dir).parent / f"node{node_id}.log"
        self.frozen = False

    @property
    def address(self):
        return self.network.data_address(self.node_id)

    @property
    def bootstrap(self):
        return f"{self.address}:{CLIENT_PORT}"

    def command(self):
        return ["ip", "netns", "exec", self.network.namespace(self.node_id), str(FJORD)]

    def settings(self):
        network = self.network
        voters = ",".join(f"{node_id}@{network.control_address(node_id)}:{CONTROLLER_PORT}"
                          for node_id in network.node_ids)
        return [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"cluster.id={CLUSTER_ID}",
            f"controller.quorum.voters={voters}",
            "controller.listener.names=CONTROLLER",
            f"listeners=PLAINTEXT://{self.address}:{CLIENT_PORT},"
            f"CONTROLLER://{network.control_address(self.node_id)}:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://{self.address}:{CLIENT_PORT}",
            f"log.dirs={self.data_dir}",
            f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
            f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
            # The last node runs one shard, the others their default: brokers
            # with different core counts replicate (a leader routes each
            # partition a follower fetches to the shard that owns it).
            *(["cores=1"] if self.node_id == network.node_ids[-1] else []),
            *self.extra_settings,
        ]

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def serving(self):
        if not self.running:
            raise RuntimeError(f"node {self.node_id} exited with {self.process.returncode}")
        try:
            with socket.create_connection((self.address, CLIENT_PORT), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self):
        """Launches the node and waits until it listens: once a majority of
        the quorum runs, which a lone node waits for."""
        self.launch()
        wait_until(self.serving, ELECTION_DEADLINE_SECONDS, f"node {self.node_id} serving")

    def freeze(self):
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill9(self):
        super().kill9()
        self.frozen = False

    def terminate(self, deadline_seconds):
        """SIGTERM (a controlled shutdown); returns the exit status, once
        the process exits within `deadline_seconds`."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=deadline_seconds)

    def stop(self):
        # A frozen node must run to handle SIGTERM.
        if self.running:
            self.thaw()
        super().stop()

    def quorum(self):
        """The quorum as this node reports it, or None if it cannot be asked."""
        try:
            result = subprocess.run(
                [str(FJORDCTL), "cluster", "info", "--json", "--bootstrap-server", self.bootstrap],
                capture_output=True, text=True, timeout=QUERY_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            return None
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)["quorum"]

    def topic_view(self, topic):
        """`topic` as this node's Metadata (v12) tells it, or None if the node
        cannot be asked or does not know the topic."""
        request = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False,
        )
        try:
            response = call((self.address, CLIENT_PORT), request, MetadataResponse,
                            METADATA_VERSION, timeout_seconds=QUERY_TIMEOUT_SECONDS)
        except OSError:
            return None
        [answer] = response.topics
        if answer.error_code != 0:
            return None
        return TopicView(
            partitions={
                p.partition_index: PartitionView(p.leader_id, p.leader_epoch,
                                                 tuple(p.replica_nodes), tuple(p.isr_nodes))
                for p in answer.partitions
            },
            controller=response.controller_id,
            brokers=tuple(sorted(broker.node_id for broker in response.brokers)),
        )

    def latest_offset(self, topic, partition):
        """ListOffsets latest, asked of this node whatever Metadata says: the
        high watermark it serves consumers, or None when it refuses (an
        error code) or cannot be asked."""
        return list_offset((self.address, CLIENT_PORT), topic, partition, LATEST_TIMESTAMP,
                           version=LIST_OFFSETS_VERSION, timeout_seconds=QUERY_TIMEOUT_SECONDS)

    def produce(self, topic, partition, value, acks, timeout_ms):
        """Produces one record (`value`, bytes) to this node whatever
        Metadata says, waiting up to `timeout_ms` for `acks` (-1: all);
        returns the partition's error code, 0 when acknowledged."""
        builder = MemoryRecordsBuilder(magic=RECORD_BATCH_MAGIC, compression_type=0,
                                       batch_size=len(value) + 1024)
        builder.append(timestamp=int(time.time() * 1000), key=None, value=value)
        builder.close()
        request = ProduceRequest(
            transactional_id=None,
            acks=acks,
            timeout_ms=timeout_ms,
            topic_data=[ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[ProduceRequest.TopicProduceData.PartitionProduceData(
                    index=partition, records=bytes(builder.buffer()))],
            )],
        )
        response = call((self.address, CLIENT_PORT), request, ProduceResponse, PRODUCE_VERSION,
                        timeout_seconds=timeout_ms / 1000 + QUERY_TIMEOUT_SECONDS)
        return response.responses[0].partition_responses[0].error_code

    def batches(self, topic, partition):
        """The record batches of this node's replica of a partition, read
        from its segment files by `fjordctl dump-log --json` (the node may
        run: only batches below the high watermark, flushed and never
        rewritten, are meant to be compared): dicts with base_offset,
        last_offset, partition_leader_epoch, crc, crc_valid, size,
        producer_id, producer_epoch and base_sequence, by offset."""
        directory = Path(self.data_dir) / f"{topic}-{partition}"
        batches = []
        for segment in sorted(directory.glob("*.log")):
            result = subprocess.run([str(FJORDCTL), "dump-log", "--json", str(segment)],
                                    capture_output=True, text=True, timeout=QUERY_TIMEOUT_SECONDS)
            # 1 is a torn or zero-filled tail past the last whole batch,
            # which a running node's active segment may have.
            assert result.returncode in (0, 1), f"dump-log {segment}: {result.stderr}"
            batches += json.loads(result.stdout)["batches"]
        return sorted(batches, key=lambda batch: batch["base_offset"])

    def log_tail(self, lines=LOG_TAIL_LINES):
        return "\n".join(self.log_text().splitlines()[-lines:])


class Cluster:
    """Three nodes on one `Network`; `extra_settings` go to every node."""

    def __init__(self, root, extra_settings=()):
        self.network = Network()
        self.nodes = {node_id: Node(self.network, node_id, Path(root) / f"node{node_id}",
                                    extra_settings)
                      for node_id in NODE_IDS}
        # (node, topic, partition, leader epoch, leader) of every view of a
        # topic asked for: checker.leaders_per_epoch's input.
        self.leaders_seen = set()

    @property
    def bootstrap(self):
        """Every node's client listener, so a client starts with any one up."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def start(self):
        self.network.create()
        for node in self.nodes.values():
            node.launch()
        for node in self.nodes.values():
            wait_until(node.serving, ELECTION_DEADLINE_SECONDS, f"node {node.node_id} serving")

    def stop(self):
        """Stops every node (killing one that does not stop in time) and
        removes the network, even when a node fails to stop."""
        failures = []
        try:
            for node in self.nodes.values():
                try:
                    node.stop()
                except (OSError, subprocess.SubprocessError) as error:
                    failures.append(f"node {node.node_id}: {error!r}")
        finally:
            self.network.destroy()
        assert not failures, f"nodes that did not stop cleanly: {failures}"

    def running(self):
        """The nodes whose process runs and is not frozen."""
        return [node_id for node_id, node in self.nodes.items() if node.running and not node.frozen]

    def agreed_leader(self, asked):
        """The quorum leader every node in `asked` names, if they agree."""
        leaders = set()
        for node_id in asked:
            quorum = self.nodes[node_id].quorum()
            if quorum is None:
                return None
            leaders.add(quorum["leader_id"])
        return leaders.pop() if len(leaders) == 1 and -1 not in leaders else None

    def controller(self, asked=None):
        """The quorum leader the running nodes (or `asked`) agree on, once
        they do."""
        asked = asked or self.running()
        return wait_until(lambda: self.agreed_leader(asked), ELECTION_DEADLINE_SECONDS,
                          f"nodes {asked} agreeing on a quorum leader")

    def agreed_view(self, topic, asked=None):
        """`topic` as every node in `asked` (default: the running ones)
        tells it, if they all answer the same partitions; else None."""
        asked = asked or self.running()
        views = [self.nodes[node_id].topic_view(topic) for node_id in asked]
        for node_id, view in zip(asked, views):
            for partition, state in (view.partitions.items() if view else ()):
                self.leaders_seen.add((node_id, topic, partition, state.leader_epoch, state.leader))
        if not views or any(view is None for view in views):
            return None
        if any(view.partitions != views[0].partitions for view in views):
            return None
        return views[0]

    def wait_for_partitions(self, topic, condition, deadline_seconds, what, asked=None):
        """The agreed view of `topic` once `condition(partitions)` holds."""
        def met():
            view = self.agreed_view(topic, asked)
            return view if view is not None and condition(view.partitions) else None
        return wait_until(met, deadline_seconds, what)

    def wait_fully_replicated(self, topic, deadline_seconds, asked=None):
        """Every partition of `topic` led, with every replica in its ISR."""
        return self.wait_for_partitions(
            topic,
            lambda partitions: partitions and all(p.fully_replicated for p in partitions.values()),
            deadline_seconds, f"every partition of {topic} with its whole ISR", asked)

    def report_sections(self):
        """For a failed test's report: each node's log tail."""
        return [(f"node {node_id} log tail ({node.log_path})", node.log_tail())
                for node_id, node in self.nodes.items()]


@contextlib.contextmanager
def running_cluster(root, extra_settings=()):
    """A started `Cluster` under `root`, stopped and its network removed on
    exit, however the test ends."""
    cluster = Cluster(root, extra_settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
