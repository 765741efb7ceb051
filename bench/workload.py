"""The benchmark workload: a 10-class simulated production line, its configs, and topics filled with it.

Every section decides the same kind of stream: :func:`connectors.demo.simulate.prediction_records` (about 1%
defects; 85% easy, 12% ambiguous, 3% hard items) with 10 classes, as JSON records of ~380 bytes that carry
``model``, ``segment``, ``payload`` and ``meta`` like a real inference output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from kafka import KafkaProducer

from connectors.demo.simulate import prediction_records
from connectors.kafka.clients import prepare_topics
from selector.config import Config, parse_config

CLASSES = ["ok", *(f"defect-{i}" for i in range(1, 10))]
"""10 classes: "ok" and nine defect kinds."""

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000}
"""Consumer-group timeouts that make a join on the embedded broker take ~3 s instead of ~23 s."""

MALFORMED_RATE = 0.001
"""Share of broken records in the broker benchmarks (the demo's rate), so the dead-letter path runs too."""

BUDGETS: dict[str, dict[str, Any]] = {
    "default caps": {},
    "no caps": {"caps": {}},
}
"""Budget scenarios: the shipped defaults (rate 2%, audit 0.2%, cap 1,000 labels per hour), and the same
without caps, where the token bucket alone grants the full 2% (its most expensive case)."""


def bench_config(
    budget: Mapping[str, Any] | None = None, servers: str | None = None, unique: str = "bench"
) -> Config:
    """The shipped defaults with 10 classes; on a broker, own topics and group, fast joins, no metrics."""
    data: dict[str, Any] = {"classes": CLASSES, "budget": dict(budget or {}), "metrics": {"enabled": False}}
    if servers is not None:
        data["topics"] = {
            "predictions": f"predictions-{unique}",
            "to_label": f"to-label-{unique}",
            "accepted": f"accepted-{unique}",
            "dead_letter": f"dead-letter-{unique}",
        }
        data["kafka"] = {"bootstrap_servers": servers, "group_id": f"selector-{unique}", **FAST_GROUP}
    return parse_config(data)


def predictions(n: int, seed: int = 0, malformed_rate: float = 0.0) -> list[tuple[bytes, bytes]]:
    """``n`` simulated (key, value) prediction records."""
    return list(prediction_records(np.random.default_rng(seed), n, CLASSES, malformed_rate=malformed_rate))


def create_topics(config: Config) -> None:
    """Create the config's topics as the monitor would."""
    prepare_topics(config, config.kafka.bootstrap_servers)


def produce(servers: str, topics: Iterable[str], records: list[tuple[bytes, bytes]]) -> int:
    """Produce every record to each topic and wait for the acks; returns the number acknowledged.

    The broker's ListOffsets answers are not reliable, so the records are counted here instead.
    """
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5, batch_size=256 * 1024)
    try:
        futures = [producer.send(t, key=k, value=v) for t in topics for k, v in records]
        producer.flush(timeout=120)
        return sum(1 for f in futures if f.succeeded())
    finally:
        producer.close(timeout=5)
