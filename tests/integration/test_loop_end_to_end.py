"""The whole loop on the real broker, as `selector demo` runs it: digit features in, predictions of the
served model, decisions, simulated labels, a retrain, the promoted model served, predictions that carry its
version; every item accounted for on the way."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from connectors.demo.run import Demo, demo_config
from connectors.kafka.broker import EmbeddedBroker
from connectors.model.registry import ModelRegistry
from tests.integration.streams import config_for, create_topics, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]


def test_features_to_a_promoted_model_and_back_without_losing_an_item(
    broker: EmbeddedBroker, unique: str, tmp_path: Path
) -> None:
    servers = broker.bootstrap_servers
    base = config_for(
        servers,
        unique,
        # the loop's wiring is under test here, not the gate (tests/connectors/model/test_trainer_gate.py):
        # a smaller effective holdout lets the first sure improvement through within the test's minutes
        retrain={"every_labels": 60, "min_interval_s": 5.0, "min_holdout_effective": 10},
        dataset={"pseudo_label_share": 0.05},
    )
    cfg = demo_config(base, tmp_path)
    create_topics(cfg)
    demo = Demo(cfg, servers, rate=400.0)
    assert demo.version == "v1"
    demo.start()
    monitor = threading.Thread(target=demo.monitor.run, daemon=True)
    monitor.start()
    try:
        wait_for(
            lambda: demo.server.model is not None and demo.server.model.version != "v1",
            150,
            "a retrained model to be promoted and served",
        )
        promoted = demo.server.model.version  # type: ignore[union-attr]
        swapped_at = demo.server.stats.items
        wait_for(lambda: demo.server.stats.items >= swapped_at + 400, 30, "predictions of it")
        demo.line.stop_event.set()
        demo.line.join(timeout=10)
        sent = demo.line.sent
        wait_for(lambda: demo.monitor.router.stats.total >= sent, 60, "the monitor to decide every item")
    finally:
        demo.stop()
        monitor.join(timeout=30)

    # every feature record became one prediction, and every prediction one decision
    assert demo.server.stats.items == sent and sum(demo.server.stats.dead_letters.values()) == 0
    assert demo.monitor.router.stats.total == sent
    predictions = read_topic(servers, cfg.topics.predictions, expect=sent)
    values = [orjson.loads(m.value) for m in predictions]
    assert len({v["id"] for v in values}) == len(values) == sent
    versions = {v["model"] for v in values}
    assert {"v1", promoted} <= versions
    assert all(len(v["committee"]) == cfg.retrain.members for v in values)

    registry = ModelRegistry(cfg.retrain.registry)
    manifest = registry.manifest(promoted)
    assert manifest["status"] == "promoted" and manifest["parent"] == "v1"
    assert manifest["metrics"]["candidate_macro_f1"] > manifest["metrics"]["current_macro_f1"]
    assert manifest["data"]["pseudo_labels"] > 0  # the accepted sample trained too
    assert demo.loop.totals["pseudo_labels"] > 0
    events = [orjson.loads(m.value) for m in read_topic(servers, cfg.topics.models)]
    assert promoted in [e["version"] for e in events if e["type"] == "promoted"]
    requests = [orjson.loads(m.value) for m in read_topic(servers, cfg.topics.retrain)]
    assert requests and requests[0]["reasons"] == ["labels"] and requests[0]["labels"] >= 60
    st = demo.loop.status
    assert st.labeled >= 60 and demo.loop.totals["unknown"] == 0 and demo.loop.totals["invalid"] == 0
