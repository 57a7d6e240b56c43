"""The replication checker on made-up histories: each invariant passes a
correct run and names the record that breaks it in a faulty one. Guards
against a checker that passes everything (a scenario then proves nothing)
or fails a correct run, such as a group member re-reading what it had not
committed when a rebalance took its partition."""

import copy

import checker


def batch(base_offset, last_offset, epoch=0, crc=1000, **changes):
    return {"base_offset": base_offset, "last_offset": last_offset, "partition_leader_epoch": epoch,
            "crc": crc + base_offset, "crc_valid": True, "size": 70 * (last_offset - base_offset + 1),
            "producer_id": 7, "producer_epoch": 0, "base_sequence": base_offset, **changes}


def record(partition, offset, value):
    return {"event": "record", "partition": partition, "offset": offset, "value": value}


def correct_run():
    """Six values over two partitions, "5" failed and never written; a
    consumer without a group reading all; a group member that reads
    partition 0, commits up to offset 1, reads offset 1 and 2, loses the
    partition in a rebalance and re-reads from its committed offset 1."""
    replicas = {node: [batch(0, 1), batch(2, 2, epoch=1)] for node in (1, 2, 3)}
    return {
        "produced": 6,
        "deliveries": [
            {"value": "0", "partition": 0, "offset": 0},
            {"value": "1", "partition": 1, "offset": 0},
            {"value": "2", "partition": 0, "offset": 1},
            {"value": "3", "partition": 1, "offset": 1},
            {"value": "4", "partition": 0, "offset": 2},
            {"value": "5", "error": "error 5 Local: Message timed out"},
        ],
        "consumers": {
            "confluent": [
                {"event": "assigned", "partitions": [0, 1]},
                record(0, 0, "0"), record(1, 0, "1"), record(0, 1, "2"), record(1, 1, "3"),
                record(1, 2, "6"),
            ],
            "group-member": [
                {"event": "assigned", "partitions": [0]},
                record(0, 0, "0"),
                {"event": "committed", "offsets": {"0": 1}},
                record(0, 1, "2"), record(0, 2, "4"),
                {"event": "revoked", "partitions": [0]},
                {"event": "assigned", "partitions": [0]},
                record(0, 1, "2"), record(0, 2, "4"),
                {"event": "committed", "offsets": {"0": 3}},
            ],
        },
        "healed_log": {0: [(0, "0"), (1, "2"), (2, "4")], 1: [(0, "1"), (1, "3"), (2, "6")]},
        "high_watermarks": {0: 3, 1: 3},
        "replica_batches": {0: replicas, 1: copy.deepcopy(replicas)},
        # Node 3 still names the old leader of epoch 0 after the others
        # have moved to epoch 1, and leader none in epoch 2.
        "leaders_seen": {(1, "t", 0, 0, 1), (3, "t", 0, 0, 1), (1, "t", 0, 1, 2), (2, "t", 0, 1, 2),
                         (2, "t", 0, 2, -1)},
    }


def test_a_correct_run_has_no_violations():
    # "6" was written though its delivery is not reported: sent values are
    # 0 .. produced-1, so widen `produced` for it.
    history = correct_run()
    history["produced"] = 7
    assert checker.violations(history) == []


def test_an_acknowledged_record_missing_or_elsewhere_is_lost():
    history = correct_run()
    history["healed_log"][0] = [(0, "0"), (1, "4")]
    assert checker.lost_acks(history["deliveries"], history["healed_log"]) == [
        "acknowledged value 2 at partition 0 offset 1 is lost: the healed log holds '4' there",
        "acknowledged value 4 at partition 0 offset 2 is lost: the healed log holds None there",
    ]


def test_a_failed_delivery_may_or_may_not_be_written():
    history = correct_run()
    history["healed_log"][1].append((3, "5"))
    assert checker.lost_acks(history["deliveries"], history["healed_log"]) == []
    assert checker.duplicates(history["healed_log"]) == []


def test_a_value_at_two_offsets_is_a_duplicate():
    history = correct_run()
    history["healed_log"][1].append((3, "2"))
    assert checker.duplicates(history["healed_log"]) == [
        "value 2 at partition 1 offset 3 and at (0, 1)"]


def test_a_consumer_reading_an_offset_again_within_an_assignment_goes_back():
    events = correct_run()["consumers"]["confluent"] + [record(0, 1, "2")]
    assert checker.offsets_going_back("confluent", events) == [
        "confluent read partition 0 offset 1 after offset 1"]
    events = correct_run()["consumers"]["confluent"] + [record(1, 0, "1")]
    assert checker.offsets_going_back("confluent", events) == [
        "confluent read partition 1 offset 0 after offset 2"]


def test_a_group_member_resuming_below_its_committed_offset_goes_back():
    events = correct_run()["consumers"]["group-member"] + [
        {"event": "lost", "partitions": [0]},
        {"event": "assigned", "partitions": [0]},
        record(0, 2, "4"),
    ]
    assert checker.offsets_going_back("group-member", events) == [
        "group-member resumed partition 0 at offset 2, below the committed offset 3"]


def test_a_commit_the_coordinator_did_not_acknowledge_does_not_count():
    events = [
        {"event": "assigned", "partitions": [0]},
        record(0, 0, "0"), record(0, 1, "2"),
        {"event": "commit_failed", "error": "NOT_COORDINATOR"},
        {"event": "revoked", "partitions": [0]},
        {"event": "assigned", "partitions": [0]},
        record(0, 0, "0"),
    ]
    assert checker.offsets_going_back("group-member", events) == []


def test_a_value_never_sent_is_reported_where_it_was_read():
    history = correct_run()
    assert checker.unsent_reads(history["produced"], history["consumers"], history["healed_log"]) == [
        "confluent read '6' at partition 1 offset 2: never sent",
        "the healed log read '6' at partition 1 offset 2: never sent",
    ]


def test_a_read_the_healed_log_does_not_hold_is_dirty():
    history = correct_run()
    history["healed_log"][1][2] = (2, "7")
    assert checker.dirty_reads(history["consumers"], history["healed_log"]) == [
        "confluent read '6' at partition 1 offset 2: the healed log holds '7' there"]


def test_an_offset_missing_below_the_high_watermark_is_a_gap():
    history = correct_run()
    del history["healed_log"][0][1]
    assert checker.log_gaps(history["healed_log"], history["high_watermarks"]) == [
        "partition 0: the healed log's offsets are not 0 .. 2 once each (missing [1], 2 read)"]


def test_replicas_may_differ_above_the_high_watermark_only():
    history = correct_run()
    replicas = history["replica_batches"][0]
    # Node 2 has appended a batch the others have not: past the HW, fine.
    replicas[2].append(batch(3, 4, epoch=1))
    assert checker.replica_divergence(history["high_watermarks"], history["replica_batches"]) == []
    # Node 3 kept an old epoch's batch where the others have epoch 1's.
    replicas[3][1] = batch(2, 2, epoch=0, crc=2000)
    [violation] = checker.replica_divergence(history["high_watermarks"], history["replica_batches"])
    assert violation.startswith(
        "partition 0: replicas 1 and 3 differ below the high watermark from their batch 1: "
        "{'base_offset': 2, 'last_offset': 2, 'partition_leader_epoch': 1, 'crc': 1002,")
    assert "against {'base_offset': 2, 'last_offset': 2, 'partition_leader_epoch': 0, 'crc': 2002," in violation


def test_a_replica_short_of_the_high_watermark_or_with_a_bad_crc_diverges():
    history = correct_run()
    replicas = history["replica_batches"][1]
    del replicas[2][1]
    replicas[3][0]["crc_valid"] = False
    violations = checker.replica_divergence(history["high_watermarks"], history["replica_batches"])
    assert violations[:2] == [
        "partition 1 replica 2: its batches below the high watermark 3 end at 2",
        "partition 1 replica 3: a batch below the high watermark fails its CRC",
    ]
    assert violations[2].startswith("partition 1: replicas 1 and 2 differ below the high watermark "
                                    "from their batch 1: {'base_offset': 2,")
    assert violations[2].endswith(" against no batch")
    assert len(violations) == 3


def test_two_leaders_named_for_one_epoch():
    history = correct_run()
    history["leaders_seen"] |= {(3, "t", 0, 2, 3), (3, "t", 1, 0, 2)}
    assert checker.leaders_per_epoch(history["leaders_seen"]) == [
        "t partition 0 leader epoch 2: leaders -1 (as node 2 told), 3 (as node 3 told)"]


def test_the_report_names_each_broken_invariant_and_counts_beyond_the_first_few():
    history = correct_run()
    history["produced"] = 7
    history["consumers"]["confluent"] += [record(0, 0, "0")] * (checker.SHOWN_MAX + 2)
    report = checker.violations(history)
    assert report[0] == f"offsets going back: {checker.SHOWN_MAX + 2} (and 2 more)"
    assert len(report) == 1 + checker.SHOWN_MAX
