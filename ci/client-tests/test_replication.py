"""Partition replication (issue #17) under faults, end to end: three
combined fjord nodes, each in a network namespace of its own
(cluster_harness), replicating every partition three ways with
`min.insync.replicas=2` and unclean leader election off, while an
idempotent acks=all producer and three consumers (workload.Workload) run
through one fault sequence per scenario.

Every scenario ends the same way: the faults healed, every node running,
every replica back in every ISR, more records acknowledged, the producer
stopped, the cluster settled (every replica's log ending at the high
watermark), the consumers given time to read up to it, the topic read
back from the beginning; then checker.py's invariants must all hold: no
acknowledged record lost or moved, no duplicate, no consumer's offsets
going back, nothing read that was never sent or that the healed log does
not hold, every replica identical below the high watermark, one leader
per leader epoch; and every consumer, the group member too, must have
ridden through the faults to the high watermark. Each scenario also
checks what its fault must cause, as it happens. The failures guarded
against are named in each scenario's header.

Each step polls a condition with a deadline; a scenario is bounded by its
steps' deadlines and by SCENARIO_TIMEOUT_SECONDS."""

import json

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

import checker
from cluster_harness import NODE_IDS, SESSION_TIMEOUT_MS, Cluster, can_make_namespaces
from conftest import holds_throughout, wait_until
from workload import Workload, read_partitions

PARTITIONS = 3
# Kafka's 30 s shortened: a frozen or cut-off follower leaves the ISR
# within a scenario.
REPLICA_LAG_TIME_MAX_MS = 4000
REPLICATION_SETTINGS = [
    "default.replication.factor=3",
    "min.insync.replicas=2",
    f"replica.lag.time.max.ms={REPLICA_LAG_TIME_MAX_MS}",
    "unclean.leader.election.enable=false",
    # Kafka's 50 offsets partitions, three replicas each, are most of what
    # three debug brokers would replicate: six suffice for one group.
    "offsets.topic.num.partitions=6",
    "group.initial.rebalance.delay.ms=0",
]
SCENARIO_TIMEOUT_SECONDS = 180
# Topic created, every ISR whole, the workload's first acks.
START_DEADLINE_SECONDS = 60
FIRST_ACKS = 200
# A killed or cut-off leader: fenced after the session timeout, a new
# leader elected and every asked node's metadata naming it.
FAILOVER_DEADLINE_SECONDS = 20
# A follower lagging for replica.lag.time.max.ms leaves the ISR: the
# leader's check, then the controller's commit.
ISR_SHRINK_DEADLINE_SECONDS = REPLICA_LAG_TIME_MAX_MS / 1000 + 10
# A follower that cannot fetch stays out of the ISR at least this long
# once dropped from it (nothing may bring it back).
CUT_FOLLOWER_HOLD_SECONDS = 2
# A node restarted (or thawed, or reconnected) back in every ISR.
REJOIN_DEADLINE_SECONDS = 60
# Acks on one partition that show acks=all goes on (about 1.5 s of the
# workload), and how long they may take.
ACKS_PER_STEP = 100
PROGRESS_DEADLINE_SECONDS = 30
SETTLE_DEADLINE_SECONDS = 30
# After the producer stops: every consumer (the group member rejoined and
# resumed from its commits) has read up to every high watermark.
CONSUMERS_CATCH_UP_DEADLINE_SECONDS = 30
READ_DEADLINE_SECONDS = 60
# A SIGTERM'd node moves every leadership away, then exits.
CONTROLLED_SHUTDOWN_DEADLINE_SECONDS = 30
# Errors a partition's error code may carry when an isolated leader does
# not acknowledge a produce; any other code, or none, fails.
NOT_ACKNOWLEDGED = {
    6: "NOT_LEADER_OR_FOLLOWER",
    7: "REQUEST_TIMED_OUT",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
}

pytestmark = pytest.mark.timeout(SCENARIO_TIMEOUT_SECONDS)


def log_end(batches):
    return batches[-1]["last_offset"] + 1 if batches else 0


class Scenario:
    """One run: a cluster with REPLICATION_SETTINGS, one topic, the
    workload; `finish` heals, settles and applies the checker."""

    def __init__(self, root, topic):
        self.root = root
        self.topic = topic
        self.cluster = None
        self.workload = None
        self.history_path = root / "history.json"

    @property
    def nodes(self):
        return self.cluster.nodes

    def start(self, partitions=PARTITIONS, extra_settings=()):
        """Starts the cluster, creates the topic (replication factor the
        broker default) and the workload; returns the topic's view once
        every ISR is whole and the workload's first records are acked."""
        self.cluster = Cluster(self.root, [*REPLICATION_SETTINGS, *extra_settings])
        self.cluster.start()
        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap})
        created = admin.create_topics([NewTopic(self.topic, partitions)],
                                      request_timeout=START_DEADLINE_SECONDS)
        created[self.topic].result(timeout=START_DEADLINE_SECONDS)
        view = self.cluster.wait_fully_replicated(self.topic, START_DEADLINE_SECONDS)
        assert all(len(state.replicas) == len(NODE_IDS) for state in view.partitions.values()), view
        self.workload = Workload(self.cluster, self.topic, partitions, f"{self.topic}-group")
        self.workload.wait_for_acks(FIRST_ACKS, START_DEADLINE_SECONDS, what="the workload under way")
        return view

    def wait_for_acks(self, what, partition=None):
        self.workload.wait_for_acks(ACKS_PER_STEP, PROGRESS_DEADLINE_SECONDS, partition, what)

    def view(self, condition, deadline_seconds, what, asked=None):
        """The topic's agreed view once `condition(partitions)` holds."""
        return self.cluster.wait_for_partitions(self.topic, condition, deadline_seconds, what, asked)

    def settled(self):
        """(the topic's view, partition -> high watermark) once every
        replica of every partition is in its ISR and its log ends at the
        high watermark; else None."""
        view = self.cluster.agreed_view(self.topic)
        if view is None or not all(state.fully_replicated for state in view.partitions.values()):
            return None
        high_watermarks = {}
        for partition, state in view.partitions.items():
            high_watermark = self.nodes[state.leader].latest_offset(self.topic, partition)
            ends = {log_end(self.nodes[replica].batches(self.topic, partition))
                    for replica in state.replicas}
            if high_watermark is None or ends != {high_watermark}:
                return None
            high_watermarks[partition] = high_watermark
        return view, high_watermarks

    def finish(self, absent_values=()):
        """Heals every fault, checks acks=all goes on, stops the producer,
        settles the cluster, gives the consumers time to read everything,
        stops them, reads it all back and asserts the checker's invariants,
        that no value of `absent_values` was kept, and that every consumer
        read up to the high watermarks."""
        self.cluster.network.heal()
        for node in self.nodes.values():
            if node.frozen:
                node.thaw()
            elif not node.running:
                node.start()
        self.cluster.wait_fully_replicated(self.topic, REJOIN_DEADLINE_SECONDS)
        self.wait_for_acks("after healing")
        history = self.workload.stop_producer()
        view, high_watermarks = wait_until(self.settled, SETTLE_DEADLINE_SECONDS,
                                           "every replica ending at the high watermark")
        # Liveness, asserted after the checker's safety: every consumer
        # rode through the faults and reads on to the high watermark.
        try:
            wait_until(lambda: not self.workload.lagging_consumers(high_watermarks),
                       CONSUMERS_CATCH_UP_DEADLINE_SECONDS, "every consumer reading everything")
        except TimeoutError:
            pass
        lagging = self.workload.lagging_consumers(high_watermarks)
        history.update(self.workload.stop_consumers())
        history["high_watermarks"] = high_watermarks
        history["healed_log"] = read_partitions(self.cluster.bootstrap, self.topic, high_watermarks,
                                                READ_DEADLINE_SECONDS)
        history["replica_batches"] = {
            partition: {replica: self.nodes[replica].batches(self.topic, partition)
                        for replica in state.replicas}
            for partition, state in view.partitions.items()
        }
        history["leaders_seen"] = self.cluster.leaders_seen
        self.history_path.write_text(json.dumps(history, default=sorted))
        report = checker.violations(history)
        assert report == [], "\n".join(report)
        kept = {value for records in history["healed_log"].values() for _, value in records}
        assert kept.isdisjoint(absent_values), f"kept: {kept & set(absent_values)}"
        assert lagging == {}, (f"consumers that stopped short of the high watermarks "
                               f"{high_watermarks} (name: partition -> read up to): {lagging}")

    def close(self):
        try:
            if self.workload is not None:
                self.workload.kill()
        finally:
            if self.cluster is not None:
                self.cluster.stop()

    def report_sections(self):
        sections = self.cluster.report_sections() if self.cluster else []
        if self.workload is not None:
            sections.append(("producer's last reports",
                             "\n".join(" ".join(line) for line in self.workload.producer.lines[-10:])))
        if self.history_path.exists():
            sections.append(("run history", str(self.history_path)))
        return sections


@pytest.fixture
def scenario(tmp_path, topic_name):
    if not can_make_namespaces():
        pytest.fail("network namespaces are needed (root and iproute2): ci/test runs as root")
    instance = Scenario(tmp_path, topic_name)
    try:
        yield instance
    finally:
        instance.close()


def test_kill_9_the_leader_five_times_chasing_each_new_one(scenario):
    """kill -9 partition 0's leader; a member of its ISR takes over in a
    higher epoch and acks=all goes on through it with the two left; the
    killed node restarts and rejoins; then the same to the new leader, five
    times. The producer sees only retriable errors. Guards against a new
    leader lacking acknowledged records (acks before every ISR member had
    them), a leader elected from outside the ISR, and a restarted replica
    that never catches up or keeps records the new leader does not have."""
    scenario.start()
    for round_number in range(5):
        before = scenario.cluster.wait_fully_replicated(scenario.topic, REJOIN_DEADLINE_SECONDS)
        old = before.partitions[0]
        scenario.nodes[old.leader].kill9()
        survivors = [node_id for node_id in NODE_IDS if node_id != old.leader]
        after = scenario.view(lambda partitions: partitions[0].leader not in (-1, old.leader),
                              FAILOVER_DEADLINE_SECONDS,
                              f"round {round_number}: a new leader after killing {old.leader}",
                              asked=survivors)
        new = after.partitions[0]
        assert new.leader in old.isr and new.leader_epoch > old.leader_epoch, (old, new)
        scenario.wait_for_acks(f"round {round_number}: through leader {new.leader}", partition=0)
        scenario.nodes[old.leader].start()
    scenario.finish()
    assert scenario.workload.producer.errors() == []


def test_a_rolling_restart_with_sigterm_moves_leadership_before_each_exit(scenario):
    """SIGTERM each node in turn (a controlled shutdown): it exits cleanly
    only after its leaderships have moved, so the others name new leaders
    at once (long before its session would expire and fence it), acks=all
    goes on with two, and it restarts and rejoins before the next. The
    producer sees only retriable errors. Guards against a shutdown that
    leaves partitions leaderless until fencing, or exits with acks=all
    records it had not replicated, and against a restart that loses them."""
    session_timeout_ms = 10000
    scenario.start(extra_settings=[f"broker.session.timeout.ms={session_timeout_ms}"])
    for node_id in NODE_IDS:
        scenario.cluster.wait_fully_replicated(scenario.topic, REJOIN_DEADLINE_SECONDS)
        returncode = scenario.nodes[node_id].terminate(CONTROLLED_SHUTDOWN_DEADLINE_SECONDS)
        assert returncode == 0, scenario.nodes[node_id].log_tail()
        others = [other for other in NODE_IDS if other != node_id]
        scenario.view(lambda partitions: all(state.leader in others for state in partitions.values()),
                      session_timeout_ms / 1000 / 2,
                      f"node {node_id}'s leaderships moved by its controlled shutdown", asked=others)
        scenario.wait_for_acks(f"node {node_id} stopped")
        scenario.nodes[node_id].start()
    scenario.finish()
    assert scenario.workload.producer.errors() == []


def test_a_frozen_follower_leaves_the_isr_and_rejoins_after_sigcont(scenario):
    """SIGSTOP a follower of partition 0 (not the controller): past
    replica.lag.time.max.ms the leader drops it from the ISR, with no
    election and without the follower fenced (its session is longer than
    the freeze), acks=all goes on with the two left; after SIGCONT it
    catches up and rejoins. Guards against an ISR that never shrinks
    (acks=all stuck on a dead follower), one that shrinks by fencing only,
    and a follower that never rejoins."""
    scenario.start(extra_settings=["broker.session.timeout.ms=30000"])
    view = scenario.cluster.wait_fully_replicated(scenario.topic, REJOIN_DEADLINE_SECONDS)
    controller = scenario.cluster.controller()
    old = view.partitions[0]
    follower = next(node_id for node_id in old.replicas if node_id not in (old.leader, controller))
    others = [node_id for node_id in NODE_IDS if node_id != follower]
    scenario.nodes[follower].freeze()
    shrunk = scenario.view(lambda partitions: follower not in partitions[0].isr,
                           ISR_SHRINK_DEADLINE_SECONDS, f"frozen node {follower} leaving the ISR",
                           asked=others)
    assert shrunk.partitions[0].leader == old.leader, shrunk
    assert set(shrunk.partitions[0].isr) == set(old.replicas) - {follower}, shrunk
    assert follower in scenario.cluster.nodes[old.leader].topic_view(scenario.topic).brokers, \
        "the frozen follower was fenced: the lag was not what shrank the ISR"
    scenario.wait_for_acks("acks=all with two in the ISR", partition=0)
    scenario.nodes[follower].thaw()
    scenario.view(lambda partitions: set(partitions[0].isr) == set(old.replicas),
                  REJOIN_DEADLINE_SECONDS, f"node {follower} rejoining the ISR")
    scenario.finish()
    assert scenario.workload.producer.errors() == []


def test_an_isolated_leader_acknowledges_nothing_and_truncates_after_healing(scenario):
    """Cut a partition's leader (not the controller) off from the other
    nodes, not from clients: the others elect a new leader from the ISR and
    acks=all goes on through it, while the old leader, which still answers
    clients, acknowledges nothing: an acks=all produce sent to it is
    refused or times out, and the high watermark it serves stays put.
    After healing it follows the new leader, dropping what it appended
    alone, and rejoins the ISR. Guards against a leader acknowledging what
    only it holds, a split brain where two leaders take writes, and an old
    leader keeping records the new one never had."""
    view = scenario.start()
    controller = scenario.cluster.controller()
    partition = next((p for p, state in sorted(view.partitions.items()) if state.leader != controller), 0)
    old = view.partitions[partition]
    isolated = scenario.nodes[old.leader]
    others = [node_id for node_id in NODE_IDS if node_id != old.leader]
    scenario.cluster.network.isolate(old.leader)
    after = scenario.view(lambda partitions: partitions[partition].leader not in (-1, old.leader),
                          FAILOVER_DEADLINE_SECONDS, f"a new leader of partition {partition}",
                          asked=others)
    new = after.partitions[partition]
    assert new.leader in old.isr and new.leader_epoch > old.leader_epoch, (old, new)
    # Past its session timeout, nothing sent before the cut is still on
    # its way: what the isolated leader serves now, it must keep serving.
    served = isolated.latest_offset(scenario.topic, partition)
    probe = b"isolated-leader-probe"
    error_code = isolated.produce(scenario.topic, partition, probe, acks=-1, timeout_ms=3000)
    assert error_code in NOT_ACKNOWLEDGED, f"the isolated leader answered {error_code}"
    scenario.wait_for_acks(f"through the new leader {new.leader}", partition=partition)
    assert isolated.latest_offset(scenario.topic, partition) in (None, served), \
        f"the isolated leader's high watermark moved from {served}"
    scenario.cluster.network.heal()
    scenario.view(lambda partitions: set(partitions[partition].isr) == set(old.replicas),
                  REJOIN_DEADLINE_SECONDS, f"node {old.leader} rejoining the ISR")
    scenario.finish(absent_values={probe.decode()})


def test_with_every_isr_member_down_the_partition_stays_offline_until_one_returns(scenario):
    """Cut replication (not heartbeats) from a partition's leader to one
    follower, then the other: each leaves the ISR for lag, acks=all goes on
    with two, then stops with the leader alone (below
    min.insync.replicas). kill -9 that last ISR member: the partition goes
    offline and stays so, though both other replicas run (the one cut
    first lacks acknowledged records); restarted, the old leader leads
    again and every acknowledged record is there. Guards against an
    unclean election with it disabled (acknowledged records lost), an ISR
    emptied by fencing, a follower taken back into the ISR before it has
    fetched, and acks=all completing below min.insync.replicas."""
    view = scenario.start()
    partition = 0
    old = view.partitions[partition]
    leader = old.leader
    first_cut, second_cut = [node_id for node_id in old.replicas if node_id != leader]
    others = [first_cut, second_cut]
    for cut, isr in ((first_cut, {leader, second_cut}), (second_cut, {leader})):
        scenario.cluster.network.drop_link(leader, cut, planes=("data",))
        scenario.view(lambda partitions: set(partitions[partition].isr) == isr,
                      ISR_SHRINK_DEADLINE_SECONDS, f"node {cut} leaving the ISR for lag")

        def cut_follower_stays_out():
            now = scenario.cluster.agreed_view(scenario.topic)
            assert now is None or cut not in now.partitions[partition].isr, \
                f"node {cut} back in the ISR though it cannot fetch: {now}"

        holds_throughout(cut_follower_stays_out, CUT_FOLLOWER_HOLD_SECONDS)
        if len(isr) == 2:
            scenario.wait_for_acks(f"acks=all without node {cut}", partition=partition)
    scenario.nodes[leader].kill9()
    offline = scenario.view(lambda partitions: partitions[partition].leader == -1,
                            FAILOVER_DEADLINE_SECONDS, "the partition offline", asked=others)
    assert offline.partitions[partition].isr == (leader,), offline
    acked = scenario.workload.producer.acked_count(partition)

    def still_offline_and_nothing_acked():
        now = scenario.cluster.agreed_view(scenario.topic, asked=others)
        assert now is None or now.partitions[partition].leader == -1, \
            f"a replica outside the ISR was elected: {now}"
        assert scenario.workload.producer.acked_count(partition) == acked, "an ack while offline"

    # Two session timeouts: any election the controller would make for the
    # fenced leader's partitions is made by then.
    holds_throughout(still_offline_and_nothing_acked, 2 * SESSION_TIMEOUT_MS / 1000)
    scenario.cluster.network.heal()
    scenario.nodes[leader].start()
    scenario.view(lambda partitions: partitions[partition].leader == leader,
                  FAILOVER_DEADLINE_SECONDS, f"node {leader} leading again")
    scenario.wait_for_acks("back online", partition=partition)
    scenario.finish()


def test_killing_the_controller_during_leader_elections(scenario):
    """kill -9 a node that leads partitions (not the controller); as soon
    as the controller's first election of a new leader for them shows,
    kill -9 the controller too and restart the first node, so the rest of
    that round and the dead controller's own partitions fall to the next
    controller. Every partition gets a live leader from its ISR, acks=all
    goes on, and all of it survives the controller's restart. Guards
    against elections half made by a dead controller (partitions left
    leaderless or led by a dead node) and two leaders for one epoch."""
    partitions = 6
    view = scenario.start(partitions=partitions)
    controller = scenario.cluster.controller()
    led_by = {node_id: {p for p, state in view.partitions.items() if state.leader == node_id}
              for node_id in NODE_IDS if node_id != controller}
    victim = max(led_by, key=lambda node_id: len(led_by[node_id]))
    assert led_by[victim], view
    scenario.nodes[victim].kill9()
    scenario.view(lambda partitions: any(partitions[p].leader != victim for p in led_by[victim]),
                  FAILOVER_DEADLINE_SECONDS, f"the controller electing leaders for node {victim}'s",
                  asked=[controller])
    scenario.nodes[controller].kill9()
    scenario.nodes[victim].start()
    survivors = [node_id for node_id in NODE_IDS if node_id != controller]
    assert scenario.cluster.controller(survivors) != controller
    scenario.view(lambda partitions: all(state.leader in survivors for state in partitions.values()),
                  FAILOVER_DEADLINE_SECONDS, "every partition led by a live node", asked=survivors)
    scenario.wait_for_acks("with the old controller down")
    scenario.nodes[controller].start()
    scenario.finish()
