"""Producing to and reading back from topics of the test broker, and building configs that point at it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from connectors.kafka.clients import prepare_topics
from selector.config import Config, parse_config
from tests.conftest import FAST_GROUP


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


KAFKA_CLIENT = {"name": "kafka-python"}
"""The ``kafka.client`` of every config :func:`config_for` builds (the ``kafka_client`` fixture sets it)."""


def config_for(servers: str, unique: str, **sections: Any) -> Config:
    """A config on the test broker with its own topics and group, fast group timeouts, no metrics server."""
    data: dict[str, Any] = {
        "topics": {
            "predictions": f"predictions-{unique}",
            "to_label": f"to-label-{unique}",
            "accepted": f"accepted-{unique}",
            "dead_letter": f"dead-letter-{unique}",
            "labels": f"labels-{unique}",
            "state": f"selector-state-{unique}",
            "features": f"features-{unique}",
            "models": f"models-{unique}",
            "retrain": f"retrain-{unique}",
        },
        "kafka": {
            "bootstrap_servers": servers,
            "client": KAFKA_CLIENT["name"],
            "group_id": f"selector-{unique}",
            "commit_interval_s": 0.2,
            **FAST_GROUP,
        },
        "metrics": {"enabled": False},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return parse_config(data)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def create_topics(config: Config) -> None:
    """Create the config's topics as the monitor would."""
    prepare_topics(config, config.kafka.bootstrap_servers)


def produce(
    servers: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce (key, value) records and wait for every ack; returns (partition, offset) of each, in order."""
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=k, value=v) for k, v in records]
    producer.flush()
    placed = []
    for f in futures:
        meta = f.get(timeout=10)
        placed.append((meta.partition, meta.offset))
    producer.close()
    return placed


def caught_up_on(consumer: KafkaConsumer, tp: TopicPartition, end: int) -> bool:
    """Whether ``consumer`` has read ``tp`` up to offset ``end`` (its position is None until known)."""
    at = consumer.position(tp, timeout_ms=1000)
    return at is not None and at >= end


def read_topic(
    servers: str, topic: str, *, expect: int | None = None, timeout_s: float = 30.0, idle_s: float = 1.5
) -> list[Message]:
    """Every message of a topic, from the beginning, without a consumer group.

    Reads at least every message the topic held when the call began (its end offsets then); then stops when
    ``expect`` messages were read (and ``idle_s`` more passed, to catch surplus duplicates), or when nothing
    arrived for ``idle_s`` (no ``expect``), or at ``timeout_s``. A topic that does not exist yet is waited
    for.
    """
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None)
    deadline = time.monotonic() + timeout_s
    # The producer may create the topic after this call began (a monitor still starting): wait for it until
    # the deadline when messages are expected, else for ``idle_s``.
    topic_deadline = deadline if expect else min(deadline, time.monotonic() + idle_s)
    parts = consumer.partitions_for_topic(topic)
    while not parts and time.monotonic() < topic_deadline:
        time.sleep(0.2)
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        return []
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    # A loaded machine may take longer than ``idle_s`` to fetch what is already there: ``idle_s`` alone would
    # end the read early, with part of the topic (or nothing). A broker that does not answer (an outage test)
    # leaves only ``idle_s`` and the deadline, as before.
    ends: dict[TopicPartition, int] | None
    try:
        ends = consumer.end_offsets(tps, timeout_ms=10_000)
    except KafkaError:
        ends = None
    out: list[Message] = []
    last_new = time.monotonic()
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200)
        for tp, records in polled.items():
            for r in records:
                out.append(Message(tp.topic, tp.partition, r.offset, r.key, r.value, dict(r.headers or [])))
            last_new = time.monotonic()
        caught_up = ends is None or all(caught_up_on(consumer, tp, end) for tp, end in ends.items())
        reached = expect is None or len(out) >= expect
        if caught_up and reached and time.monotonic() - last_new > idle_s:
            break
    consumer.close()
    return out
