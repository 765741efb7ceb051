"""Partitions a monitor keeps across a rebalance are still fetched.

kafka-python 3.0.0 to 3.0.8 never fetched again a partition that an eager rebalance handed back to the same
consumer when a rebalance listener was set, as the monitor sets one: the pin ``kafka-python>=3.0.9`` and this
test keep it so.
"""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, create_topics, produce, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

PARTITIONS = 4


def predictions(prefix: str, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` records keyed by id (spread over every partition)."""
    return [
        (f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "probs": [0.7, 0.1, 0.1, 0.1]}))
        for i in range(n)
    ]


def committed(servers: str, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset of every partition (read without joining the group)."""
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        consumer.close(autocommit=False)


def test_partitions_kept_across_a_member_joining_and_leaving_are_still_fetched(
    broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
) -> None:
    """Monitor A owns 4 partitions; B joins (A keeps 2) and leaves (A gets all back): records produced after
    each rebalance, on every partition, are decided, and A commits every partition to its end."""
    servers = broker.bootstrap_servers
    cfg = config_for(servers, unique, kafka={"topic_partitions": PARTITIONS})
    create_topics(cfg)
    topic = cfg.topics.predictions
    a = monitors.start(Monitor(cfg, servers))
    wait_for(lambda: a.assigned == set(range(PARTITIONS)), 30, "A assigned every partition")
    produce(servers, topic, predictions("one", 200))
    wait_for(lambda: a.router.stats.total == 200, 30, "A deciding the first records")

    b = Monitor(cfg, servers)
    monitors.start(b)
    wait_for(lambda: len(a.assigned) == 2 and len(b.assigned) == 2, 40, "the partitions shared by A and B")
    kept = set(a.assigned)
    placed = produce(servers, topic, predictions("two", 200))
    assert {p for p, _ in placed} == set(range(PARTITIONS))
    wait_for(lambda: a.router.stats.total + b.router.stats.total >= 400, 30, "A and B deciding")

    b.request_stop()
    monitors.running[-1][1].join(timeout=30)
    wait_for(lambda: a.assigned == set(range(PARTITIONS)), 40, "A owning every partition again")
    placed = produce(servers, topic, predictions("three", 400))
    ends: dict[int, int | None] = dict.fromkeys(range(PARTITIONS), 0)
    for p, off in placed:
        ends[p] = max(ends[p] or 0, off + 1)
    wait_for(
        lambda: committed(servers, cfg.kafka.group_id, topic) == ends,
        40,
        "every partition committed to its end",
    )
    assert kept < set(range(PARTITIONS))
    # A's own delivered offsets (its consumer is not asked from this thread: it is not thread-safe)
    by_partition = {tp.partition: offset for tp, offset in dict(a.checkpoint.delivered).items()}
    assert {p: by_partition.get(p) for p in kept} == {p: ends[p] for p in kept}
