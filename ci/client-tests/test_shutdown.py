"""SIGTERM stops the broker promptly while consumers long-poll: their
Fetches are answered at once with what there is, instead of holding the
broker's exit for their whole `fetch.wait.max.ms` (it did: 24.6 s for a 25 s
long poll)."""

import json
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running_broker, wait_until

LONG_POLL_MS = 20000


def test_sigterm_answers_a_consumers_long_poll_at_once(tmp_path_factory, topic_name):
    with running_broker(tmp_path_factory) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
        latest_stats = {}
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": f"{topic_name}-reader",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": LONG_POLL_MS,
                "statistics.interval.ms": 100,
                "stats_cb": lambda text: latest_stats.update(json.loads(text)),
            }
        )
        consumer.assign([TopicPartition(topic_name, 0, 0)])

        def long_polling():
            # librdkafka's own view: it sent the broker a Fetch, which waits
            # for its answer (the empty partition keeps it for the long poll).
            consumer.poll(0.1)
            return any(
                state.get("req", {}).get("Fetch", 0) >= 1 and state.get("waitresp_cnt", 0) >= 1
                for name, state in latest_stats.get("brokers", {}).items()
                if not name.startswith("GroupCoordinator")
            )

        wait_until(long_polling, 30, "the consumer long-polls the empty partition")
        asked_to_stop = time.monotonic()
        broker.stop()
        took = time.monotonic() - asked_to_stop
        consumer.close()
    assert took < LONG_POLL_MS / 1000 / 4, f"the broker took {took:.1f} s to stop under a {LONG_POLL_MS} ms long poll"
