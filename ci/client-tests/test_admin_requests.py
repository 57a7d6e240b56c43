"""Admin requests that Kafka's admin clients send, answered as Kafka answers
them (confluent-kafka's AdminClient, i.e. librdkafka, and kafka-python's
KafkaAdminClient):

- Authorized operations (KIP-430): describe_cluster and describe_topics
  asked to include them must get every operation of the resource type, as
  Kafka answers without an authorizer, and None when not asked. librdkafka
  asks through Metadata (v8-v10 for the cluster's), kafka-python through
  DescribeCluster and Metadata.
"""

import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic
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


def names(operations):
    return {operation.name for operation in operations}


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
