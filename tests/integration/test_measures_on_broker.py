"""Measures beyond softmax through the real broker: records lacking a required field are dead-lettered with a
reason, the rest are decided with every configured measure logged, and the scoring memory travels in the
state snapshots."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.monitor.loop import Monitor
from selector.messages.contracts import ToLabel
from tests.integration.conftest import RunningMonitors
from tests.integration.streams import config_for, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

CLASSES = ["ok", "scratch", "dent", "crack"]
DIM = 4


def records(unique: str, n: int, seed: int) -> list[tuple[bytes, bytes, str | None]]:
    """(key, value, expected dead-letter reason or None): every 40th lacks samples, every 50th has an
    embedding of the wrong length, every 70th one beyond float32 range (it would poison the core-set), the
    rest carry samples, a committee and an embedding."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, bytes, str | None]] = []
    for i in range(n):
        rid = f"m-{unique}-{i}"
        probs = rng.dirichlet([0.5] * 4)
        rec: dict[str, object] = {
            "id": rid,
            "probs": probs.tolist(),
            "samples": rng.dirichlet([0.5] * 4, size=5).tolist(),
            "embedding": rng.standard_normal(DIM).tolist(),
        }
        reason = None
        if i % 40 == 0:
            del rec["samples"]
            reason = "missing_field"
        elif i % 50 == 0:
            rec["embedding"] = [1.0, 2.0]
            reason = "wrong_embedding_dim"
        elif i % 70 == 0:
            rec["embedding"] = [1e39, 0.0, 0.0, 0.0]
            reason = "embedding_out_of_range"
        out.append((rid.encode(), orjson.dumps(rec), reason))
    return out


def test_required_fields_dead_letter_and_measures_reach_the_outputs(
    broker: EmbeddedBroker, unique: str, monitors: RunningMonitors
) -> None:
    """3,000 records under a bald + novelty combination with diversity: each record lacking samples or
    with a wrong embedding length or beyond float32 range is dead-lettered with its reason; every other one
    is decided, the to-label records carry both measures (finite: the memory was not poisoned), and the state
    topic holds the scoring memory."""
    servers = broker.bootstrap_servers
    cfg = config_for(
        servers,
        unique,
        input={"embedding_dim": DIM},
        scoring={"measure": "combination", "weights": {"bald": 2.0, "novelty": 1.0}},
        diversity={"mode": "kcenter"},
        budget={"rate": 0.05, "caps": {}},
    )
    recs = records(unique, 3000, seed=5)
    produce(servers, cfg.topics.predictions, [(k, v) for k, v, _ in recs])
    bad = {k.decode(): reason for k, _, reason in recs if reason is not None}
    monitor = monitors.start(Monitor(cfg, servers))
    wait_for(
        lambda: monitor.router.stats.total + monitor.router.stats.dead_letters["decode"] >= len(recs),
        60,
        "every record decided or dead-lettered",
    )
    dead = read_topic(servers, cfg.topics.dead_letter, expect=len(bad))
    assert {m.key.decode(): m.headers["x-dlq-reason"].decode() for m in dead} == bad
    assert len(dead) == len(bad) == 75 + 45 + 26
    missing = next(m for m in dead if m.headers["x-dlq-reason"] == b"missing_field")
    assert missing.headers["x-dlq-exception-message"] == b"'samples' is required by measure 'bald' (scoring)"

    assert monitor.router.stats.total == len(recs) - len(bad)
    to_label = [orjson.loads(m.value) for m in read_topic(servers, cfg.topics.to_label, expect=1)]
    assert to_label
    for value in to_label:
        ToLabel.model_validate(value)
        assert {"bald", "novelty", "entropy"} <= set(value["scores"])
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in value["scores"].values())
        assert 0.0 < value["query_probability"] <= 1.0
    monitors.stop_all()  # drains: the last snapshots are written
    latest = {m.key: orjson.loads(m.value)["state"] for m in read_topic(servers, cfg.topics.state, expect=1)}
    assert latest and all("scoring" in s for s in latest.values())
    sent = sum(s["scoring"]["sent"] + s["scoring"]["carry"]["n_sent"] for s in latest.values())
    assert sent == len(to_label)  # the memory counted every item sent for labeling
