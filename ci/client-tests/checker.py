"""What every replication scenario's run must satisfy, as pure functions of
its history, so they are tested on made-up histories (test_checker.py) as
well as applied to real ones.

A history (workload.Workload.stop() gives the first three, the scenario
adds the rest once the cluster has healed and the producer has stopped):
  - produced: n, the producer was handed the values "0" .. str(n - 1);
  - deliveries: one per delivery report, {"value", "partition", "offset"}
    when acknowledged, {"value", "error"} when it failed (such a record may
    or may not have been written);
  - consumers: name -> the events that consumer printed, in order
    ("assigned" with partitions, "revoked"/"lost" with partitions,
    "record" with partition, offset and value, "committed" with offsets:
    partition -> the next offset to read, as the coordinator acknowledged);
  - healed_log: partition -> [(offset, value)], every record below the
    high watermark read from the beginning after healing;
  - high_watermarks: partition -> the leader's high watermark then;
  - replica_batches: partition -> node id -> that replica's record batches
    (`fjordctl dump-log --json` shapes), read after healing;
  - leaders_seen: (node, topic, partition, leader epoch, leader) of every
    Metadata answer the scenario polled.

The invariants, each a function returning the violations it finds (empty
when it holds):
  - `lost_acks`: every acknowledged record is in the healed log, at the
    offset its acknowledgement named;
  - `duplicates`: no value at two offsets of the healed log;
  - `offsets_going_back`: what one consumer reads of one partition goes
    forward: offsets strictly increase within one assignment of the
    partition, and a new assignment of it resumes no lower than the last
    offset the group acknowledged as committed for it. (A group member may
    legitimately read a record again after a rebalance: what it read but
    had not committed when the partition was revoked or lost. A consumer
    without a group has one assignment, from its first event to its last.)
  - `unsent_reads`: every value read (by a consumer, or in the healed log)
    was sent;
  - `dirty_reads`: every record a consumer read is in the healed log at
    the offset it was read at (consumers read up to the high watermark
    only, and nothing below it is ever truncated);
  - `log_gaps`: the healed log holds every offset below the high watermark
    once (no compaction, no transactions here);
  - `replica_divergence`: every replica holds the same batches (offsets,
    leader epoch, CRC, size, producer) up to the high watermark;
  - `leaders_per_epoch`: no two nodes, nor one node at two times, name two
    leaders (-1, none, counting as one) for one leader epoch of a
    partition: every change of leader bumps the epoch."""

# The fields of a batch two replicas must agree on. The CRC covers
# attributes through the records, producer id and sequence included; the
# offsets, the leader epoch and the size are outside it.
BATCH_IDENTITY = ("base_offset", "last_offset", "partition_leader_epoch", "crc", "size",
                  "producer_id", "producer_epoch", "base_sequence")
# Violations listed per invariant before the rest are only counted.
SHOWN_MAX = 10


def located(healed_log):
    """(partition, offset) -> value of the healed log."""
    return {(partition, offset): value
            for partition, records in healed_log.items() for offset, value in records}


def lost_acks(deliveries, healed_log):
    where = located(healed_log)
    violations = []
    for delivery in deliveries:
        if "error" in delivery:
            continue
        key = (delivery["partition"], delivery["offset"])
        found = where.get(key)
        if found != delivery["value"]:
            violations.append(f"acknowledged value {delivery['value']} at partition {key[0]} offset "
                              f"{key[1]} is lost: the healed log holds {found!r} there")
    return violations


def duplicates(healed_log):
    seen = {}
    violations = []
    for (partition, offset), value in sorted(located(healed_log).items()):
        if value in seen:
            violations.append(f"value {value} at partition {partition} offset {offset} "
                              f"and at {seen[value]}")
        else:
            seen[value] = (partition, offset)
    return violations


def offsets_going_back(name, events):
    committed = {}
    last_read = {}
    violations = []
    for event in events:
        kind = event["event"]
        if kind in ("assigned", "revoked", "lost"):
            for partition in event["partitions"]:
                last_read.pop(partition, None)
        elif kind == "committed":
            for partition, offset in event["offsets"].items():
                committed[int(partition)] = max(offset, committed.get(int(partition), 0))
        elif kind == "record":
            partition, offset = event["partition"], event["offset"]
            if partition in last_read and offset <= last_read[partition]:
                violations.append(f"{name} read partition {partition} offset {offset} "
                                  f"after offset {last_read[partition]}")
            elif partition not in last_read and offset < committed.get(partition, 0):
                violations.append(f"{name} resumed partition {partition} at offset {offset}, below "
                                  f"the committed offset {committed[partition]}")
            last_read[partition] = offset
    return violations


def reads(consumers):
    """(consumer, partition, offset, value) of every record consumers read."""
    return [(name, event["partition"], event["offset"], event["value"])
            for name, events in consumers.items() for event in events if event["event"] == "record"]


def unsent_reads(produced, consumers, healed_log):
    sent = {str(number) for number in range(produced)}
    observed = reads(consumers) + [("the healed log", partition, offset, value)
                                   for (partition, offset), value in located(healed_log).items()]
    return [f"{name} read {value!r} at partition {partition} offset {offset}: never sent"
            for name, partition, offset, value in observed if value not in sent]


def dirty_reads(consumers, healed_log):
    where = located(healed_log)
    return [f"{name} read {value!r} at partition {partition} offset {offset}: the healed log "
            f"holds {where.get((partition, offset))!r} there"
            for name, partition, offset, value in reads(consumers)
            if where.get((partition, offset)) != value]


def log_gaps(healed_log, high_watermarks):
    violations = []
    for partition, high_watermark in sorted(high_watermarks.items()):
        offsets = [offset for offset, _ in healed_log.get(partition, [])]
        if offsets != list(range(high_watermark)):
            missing = sorted(set(range(high_watermark)) - set(offsets))
            violations.append(f"partition {partition}: the healed log's offsets are not 0 .. "
                              f"{high_watermark - 1} once each (missing {missing[:SHOWN_MAX]}, "
                              f"{len(offsets)} read)")
    return violations


def described(batches, index):
    return dict(zip(BATCH_IDENTITY, batches[index])) if index < len(batches) else "no batch"


def replica_divergence(high_watermarks, replica_batches):
    violations = []
    for partition, high_watermark in sorted(high_watermarks.items()):
        below = {}
        for node, batches in sorted(replica_batches.get(partition, {}).items()):
            kept = [batch for batch in batches if batch["base_offset"] < high_watermark]
            if any(not batch["crc_valid"] for batch in kept):
                violations.append(f"partition {partition} replica {node}: a batch below the high "
                                  f"watermark fails its CRC")
            end = kept[-1]["last_offset"] + 1 if kept else 0
            if end != high_watermark:
                violations.append(f"partition {partition} replica {node}: its batches below the "
                                  f"high watermark {high_watermark} end at {end}")
            below[node] = [tuple(batch[field] for field in BATCH_IDENTITY) for batch in kept]
        nodes = sorted(below)
        for node in nodes[1:]:
            mine, theirs = below[nodes[0]], below[node]
            if mine != theirs:
                first = next((index for index, pair in enumerate(zip(mine, theirs))
                              if pair[0] != pair[1]), min(len(mine), len(theirs)))
                violations.append(
                    f"partition {partition}: replicas {nodes[0]} and {node} differ below the high "
                    f"watermark from their batch {first}: {described(mine, first)} against "
                    f"{described(theirs, first)}")
    return violations


def leaders_per_epoch(leaders_seen):
    named = {}
    for node, topic, partition, epoch, leader in sorted(leaders_seen):
        named.setdefault((topic, partition, epoch), {}).setdefault(leader, node)
    return [f"{topic} partition {partition} leader epoch {epoch}: leaders "
            + ", ".join(f"{leader} (as node {node} told)" for leader, node in sorted(leaders.items()))
            for (topic, partition, epoch), leaders in sorted(named.items()) if len(leaders) > 1]


def violations(history):
    """Every invariant's violations for one run, the first SHOWN_MAX of
    each and a count of the rest."""
    found = {
        "acknowledged records lost": lost_acks(history["deliveries"], history["healed_log"]),
        "duplicates": duplicates(history["healed_log"]),
        "offsets going back": [violation for name, events in sorted(history["consumers"].items())
                               for violation in offsets_going_back(name, events)],
        "records read that were never sent": unsent_reads(
            history["produced"], history["consumers"], history["healed_log"]),
        "records read that the healed log does not hold": dirty_reads(
            history["consumers"], history["healed_log"]),
        "gaps in the healed log": log_gaps(history["healed_log"], history["high_watermarks"]),
        "replicas differing below the high watermark": replica_divergence(
            history["high_watermarks"], history["replica_batches"]),
        "two leaders in one leader epoch": leaders_per_epoch(history["leaders_seen"]),
    }
    report = []
    for invariant, listed in found.items():
        if listed:
            more = f" (and {len(listed) - SHOWN_MAX} more)" if len(listed) > SHOWN_MAX else ""
            report.append(f"{invariant}: {len(listed)}{more}")
            report += [f"  {violation}" for violation in listed[:SHOWN_MAX]]
    return report
