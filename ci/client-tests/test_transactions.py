"""Transactional producers against fjord, which has no transaction
coordinator yet: confluent-kafka's (librdkafka's) init_transactions() must
fail at once with a fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED, the answer
FindCoordinator and InitProducerId give a transactional id. A retriable
answer (COORDINATOR_NOT_AVAILABLE, as fjord gave before) keeps the client
retrying until init_transactions' timeout, so an application waits that long
for an error that was certain from the first request."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

INIT_TIMEOUT_SECONDS = 30
# Far below INIT_TIMEOUT_SECONDS: a retrying client cannot pass.
PROMPT_FAILURE_SECONDS = 5


def test_init_transactions_fails_at_once_with_a_fatal_error(broker):
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "transactional.id": "fjord-test-transactions",
    })
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        producer.init_transactions(INIT_TIMEOUT_SECONDS)
    elapsed = time.monotonic() - started
    error = raised.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error
    assert error.fatal() and not error.retriable(), error
    assert elapsed < PROMPT_FAILURE_SECONDS, f"failed after {elapsed:.1f}s: {error}"
