"""Admin requests that Kafka's admin clients send, answered as Kafka answers
them (confluent-kafka's AdminClient, i.e. librdkafka, and kafka-python's
KafkaAdminClient):

- CreateTopics with a manual replica assignment: the client sends
  num_partitions=-1 and replication_factor=-1, and the topic must get one
  partition per assigned list (fjord used to create one partition), while
  assignments Kafka refuses (unknown or repeated brokers, gaps in the
  partition numbers, a partition count next to an assignment) are refused
  with Kafka's error codes. CreatePartitions with an assignment likewise.
- Authorized operations (KIP-430): describe_cluster and describe_topics
  asked to include them must get every operation of the resource type, as
  Kafka answers without an authorizer, and None when not asked. librdkafka
  asks through Metadata (v8-v10 for the cluster's), kafka-python through
  DescribeCluster and Metadata.
- DescribeTopicPartitions (KIP-966), through kafka-python's
  describe_topic_partitions: pages bounded by response_partition_limit,
  continued with next_cursor until every partition was seen exactly once,
  unknown topics, and cursors Kafka refuses.
"""

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient, NewPartitions, NewTopic
from kafka.admin import KafkaAdminClient

TIMEOUT_SECONDS = 30
NODE_ID = 1
# What Kafka answers for a topic and for the cluster without an authorizer:
# AclEntry.supportedOperations(TOPIC) and (CLUSTER).
TOPIC_OPERATIONS = {
    "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS",
}
CLUSTER_OPERATIONS = {
    "CREATE", "ALTER", "DESCRIBE", "CLUSTER_ACTION", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
    "IDEMPOTENT_WRITE",
}
INVALID_REPLICA_ASSIGNMENT = 39
INVALID_REQUEST = 42
UNKNOWN_TOPIC_OR_PARTITION = 3
# Pages a DescribeTopicPartitions walk may take before it counts as a loop.
PAGES_MAX = 1000


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def admin(broker):
    """A confluent AdminClient; callers keep it until its futures resolve."""
    return AdminClient({"bootstrap.servers": broker.bootstrap})


@pytest.fixture
def kafka_python_admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield client
    client.close()


def kafka_error(future):
    """The KafkaError a failed confluent future raises."""
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT_SECONDS)
    return raised.value.args[0]


def partitions_of(client, topic):
    """The partitions of `topic` in a fresh Metadata answer, by index."""
    return client.list_topics(topic, timeout=TIMEOUT_SECONDS).topics[topic].partitions


def names(operations):
    return {operation.name for operation in operations}


def test_create_topics_with_a_replica_assignment_has_one_partition_per_entry(broker):
    topic = unique("assigned")
    client = admin(broker)
    new_topic = NewTopic(topic, num_partitions=3, replica_assignment=[[NODE_ID]] * 3)
    client.create_topics([new_topic], validate_only=True)[topic].result(TIMEOUT_SECONDS)
    assert topic not in client.list_topics(timeout=TIMEOUT_SECONDS).topics

    client.create_topics([new_topic])[topic].result(TIMEOUT_SECONDS)
    partitions = partitions_of(client, topic)
    assert sorted(partitions) == [0, 1, 2]
    for partition in partitions.values():
        assert (partition.leader, partition.replicas, partition.isrs) == (
            NODE_ID, [NODE_ID], [NODE_ID])
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    reports = []
    producer.produce(topic, b"last", partition=2,
                     on_delivery=lambda error, message: reports.append((error, message.offset())))
    assert producer.flush(TIMEOUT_SECONDS) == 0
    assert reports == [(None, 0)]


def test_replica_assignments_kafka_refuses_are_refused_with_its_codes(broker, kafka_python_admin):
    client = admin(broker)
    refused = {
        "unknown-broker": [[NODE_ID + 1]],
        "repeated-broker": [[NODE_ID], [NODE_ID, NODE_ID]],
    }
    topics = {unique(name): assignment for name, assignment in refused.items()}
    futures = client.create_topics([
        NewTopic(topic, num_partitions=len(assignment), replica_assignment=assignment)
        for topic, assignment in topics.items()
    ])
    errors = {topic: kafka_error(future) for topic, future in futures.items()}
    for topic, error in errors.items():
        assert error.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, (topic, error)
    unknown_broker = next(topic for topic in topics if topic.startswith("unknown-broker"))
    assert f"Unknown broker {NODE_ID + 1}" in errors[unknown_broker].str()

    # kafka-python sends assignments as given: a gap in the partition
    # numbers, or a count or factor next to the assignment.
    gap, with_count, with_factor = unique("gap"), unique("with-count"), unique("with-factor")
    answer = kafka_python_admin.create_topics({
        gap: {"assignments": {0: [NODE_ID], 2: [NODE_ID]}},
        with_count: {"num_partitions": 2, "assignments": {0: [NODE_ID], 1: [NODE_ID]}},
        with_factor: {"replication_factor": 1, "assignments": {0: [NODE_ID]}},
    }, raise_errors=False)
    codes = {result["name"]: result["error_code"] for result in answer["topics"]}
    assert codes == {
        gap: INVALID_REPLICA_ASSIGNMENT,
        with_count: INVALID_REQUEST,
        with_factor: INVALID_REQUEST,
    }
    existing = client.list_topics(timeout=TIMEOUT_SECONDS).topics
    assert not (set(topics) | set(codes)) & set(existing)


def test_create_partitions_with_a_replica_assignment_needs_live_brokers(broker):
    topic = unique("grown")
    client = admin(broker)
    client.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        TIMEOUT_SECONDS)
    grow = NewPartitions(topic, 3, replica_assignment=[[NODE_ID], [NODE_ID]])
    client.create_partitions([grow])[topic].result(TIMEOUT_SECONDS)
    assert sorted(partitions_of(client, topic)) == [0, 1, 2]

    for refused in (
        NewPartitions(topic, 4, replica_assignment=[[NODE_ID + 1]]),
        NewPartitions(topic, 5, replica_assignment=[[NODE_ID]]),
        NewPartitions(topic, 4, replica_assignment=[[NODE_ID, NODE_ID]]),
    ):
        error = kafka_error(client.create_partitions([refused])[topic])
        assert error.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, (refused, error)
    assert sorted(partitions_of(client, topic)) == [0, 1, 2]


def test_describe_cluster_lists_every_cluster_operation_when_asked(broker, kafka_python_admin):
    client = admin(broker)
    asked = client.describe_cluster(include_authorized_operations=True).result(TIMEOUT_SECONDS)
    assert names(asked.authorized_operations) == CLUSTER_OPERATIONS
    assert [node.id for node in asked.nodes] == [NODE_ID]
    not_asked = client.describe_cluster().result(TIMEOUT_SECONDS)
    assert not_asked.authorized_operations is None

    described = kafka_python_admin.describe_cluster()
    assert set(described["authorized_operations"]) == CLUSTER_OPERATIONS
    assert [node["broker_id"] for node in described["brokers"]] == [NODE_ID]


def test_describe_topics_lists_every_topic_operation_when_asked(broker, kafka_python_admin):
    topic, missing = unique("described"), unique("missing")
    client = admin(broker)
    client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        TIMEOUT_SECONDS)
    futures = client.describe_topics(TopicCollection([topic, missing]),
                                     include_authorized_operations=True)
    description = futures[topic].result(TIMEOUT_SECONDS)
    assert names(description.authorized_operations) == TOPIC_OPERATIONS
    assert [(partition.id, partition.leader.id, [replica.id for replica in partition.replicas])
            for partition in description.partitions] == [(0, NODE_ID, [NODE_ID]),
                                                         (1, NODE_ID, [NODE_ID])]
    assert kafka_error(futures[missing]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    not_asked = client.describe_topics(TopicCollection([topic]))[topic].result(TIMEOUT_SECONDS)
    assert not_asked.authorized_operations is None

    (described,) = kafka_python_admin.describe_topics([topic])
    assert described["error_code"] == 0
    assert set(described["authorized_operations"]) == TOPIC_OPERATIONS


def pages(client, topics, limit):
    """Every DescribeTopicPartitions answer for `topics`, following
    next_cursor from the first page to the last."""
    answers, cursor = [], None
    while True:
        answer = client.describe_topic_partitions(
            topics, response_partition_limit=limit, cursor=cursor)
        answers.append(answer)
        cursor = answer["next_cursor"]
        if cursor is None:
            return answers
        assert len(answers) < PAGES_MAX, f"no last page: {answers[-3:]}"


def test_describe_topic_partitions_pages_through_every_partition_once(broker, kafka_python_admin):
    base = unique("paged")
    wide, narrow, missing = f"{base}-a", f"{base}-b", f"{base}-c-missing"
    client = admin(broker)
    for topic, count in ((wide, 5), (narrow, 2)):
        client.create_topics([NewTopic(topic, num_partitions=count, replication_factor=1)])[
            topic].result(TIMEOUT_SECONDS)

    answers = pages(kafka_python_admin, [missing, narrow, wide], limit=3)
    # Name order, three partitions a page, the cursor at the first one left out.
    assert [answer["next_cursor"] for answer in answers] == [
        {"topic_name": wide, "partition_index": 3},
        {"topic_name": narrow, "partition_index": 1},
        None,
    ]
    seen = [(topic["name"], partition["partition_index"])
            for answer in answers for topic in answer["topics"] for partition in topic["partitions"]]
    assert seen == [(wide, index) for index in range(5)] + [(narrow, index) for index in range(2)]
    topics = [topic for answer in answers for topic in answer["topics"]]
    for topic in topics:
        assert topic["topic_authorized_operations"] == sum(
            1 << AclOperation[name].value for name in TOPIC_OPERATIONS)
        for partition in topic["partitions"]:
            assert partition["error_code"] == 0
            assert (partition["leader_id"], partition["leader_epoch"]) == (NODE_ID, 0)
            assert (partition["replica_nodes"], partition["isr_nodes"]) == ([NODE_ID], [NODE_ID])
            assert not partition["eligible_leader_replicas"]
            assert not partition["last_known_elr"]
            assert partition["offline_replicas"] == []
    (unknown,) = [topic for topic in topics if topic["name"] == missing]
    assert (unknown["error_code"], unknown["partitions"]) == (UNKNOWN_TOPIC_OR_PARTITION, [])

    # No topic named: every topic, internal ones included, each partition once.
    everything = pages(kafka_python_admin, [], limit=7)
    listed = [(topic["name"], partition["partition_index"])
              for answer in everything for topic in answer["topics"]
              for partition in topic["partitions"]]
    expected = [(name, index)
                for name, metadata in sorted(client.list_topics(timeout=TIMEOUT_SECONDS).topics.items())
                for index in sorted(metadata.partitions)]
    assert listed == expected
    # Every page but the last is full.
    sizes = [sum(len(topic["partitions"]) for topic in answer["topics"]) for answer in everything]
    assert sizes[:-1] == [7] * (len(sizes) - 1) and 0 < sizes[-1] <= 7, sizes


def test_describe_topic_partitions_refuses_cursors_outside_the_request(broker, kafka_python_admin):
    topic = unique("cursor")
    client = admin(broker)
    client.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        TIMEOUT_SECONDS)
    for cursor in ({"topic_name": unique("elsewhere"), "partition_index": 0},
                   {"topic_name": topic, "partition_index": -1}):
        answer = kafka_python_admin.describe_topic_partitions([topic], cursor=cursor)
        assert [(t["name"], t["error_code"], t["partitions"]) for t in answer["topics"]] == [
            (topic, INVALID_REQUEST, [])], cursor
        assert answer["next_cursor"] is None
    # A cursor past the topic's end is no error: the topic has nothing left.
    answer = kafka_python_admin.describe_topic_partitions(
        [topic], cursor={"topic_name": topic, "partition_index": 9})
    assert [(t["name"], t["error_code"], t["partitions"]) for t in answer["topics"]] == [
        (topic, 0, [])]
