"""Weak consensus asks for another vote, on the real broker: the weak item's decision comes back on the
to-label topic with its revote field, and a second call sends nothing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.kafka.clients import make_producer
from connectors.labels.revote import META_KEY, request_votes
from connectors.model.dataset import DatasetStore
from selector.messages.to_label import ToLabelRecord, read_to_label
from selector.quality.consensus import consensus
from selector.quality.labels import LabelEvent
from tests.integration.streams import config_for, create_topics, read_topic

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]

NOW = 1_765_000_000.0


def test_a_weak_item_is_sent_again_once_with_its_revote_field(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    """Two items labeled by two annotators each: one agreed, one split. The split one (a tie, weak) is
    produced to the to-label topic keyed by its id, with its stored decision (payload included) and
    revote {votes 2, confidence, requested_at}, still a decision the label loop reads; the second call
    sends nothing (remembered in the store)."""
    servers = broker.bootstrap_servers
    cfg = config_for(
        servers,
        unique,
        dataset={"path": str(tmp_path / "d.sqlite"), "consensus": "dawid_skene", "revote_share": 1.0},
    )
    create_topics(cfg)
    store = DatasetStore(cfg.dataset.path)
    base = {"route": "query", "predicted": "ok", "probs": [0.4, 0.3, 0.2, 0.1], "embedding": None,
            "query_probability": 0.25, "model": "v1", "decided_at": "2026-12-01T00:00:00Z"}  # fmt: skip
    store.add_decisions([base | {"id": rid, "payload": {"uri": f"{rid}.png"}} for rid in ("agreed", "split")])
    store.add_labels(
        [
            LabelEvent("agreed", "dent", "ann", 1.0),
            LabelEvent("agreed", "dent", "bob", 1.0),
            LabelEvent("split", "ok", "ann", 1.0),
            LabelEvent("split", "crack", "bob", 1.0),
        ]
    )
    d = cfg.dataset
    resolved = consensus(store.book(), cfg.classes, method=d.consensus, weak_below=d.weak_below)
    assert resolved.weak_items() == ["split"]
    producer = make_producer(cfg, servers)
    try:
        assert request_votes(store, producer, cfg, resolved, NOW) == 1
        assert request_votes(store, producer, cfg, resolved, NOW + 60) == 0
    finally:
        producer.close()
    (message,) = read_topic(servers, cfg.topics.to_label, expect=1, idle_s=1.0)
    record = orjson.loads(message.value or b"")
    assert message.key == b"split"
    assert record["payload"] == {"uri": "split.png"} and record["probs"] == base["probs"]
    revote = record["revote"]
    assert (revote["votes"], revote["requested_at"]) == (2, "2025-12-06T05:46:40.000Z")
    assert revote["confidence"] == pytest.approx(resolved.items["split"].confidence)
    read = read_to_label(message.value)
    assert isinstance(read, ToLabelRecord) and read.decision() is not None  # the loop can read it back
    assert store.get_meta(META_KEY) == {"split": 2}
    store.close()
