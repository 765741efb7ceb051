"""`selector serve-model` on the real broker: every valid feature record becomes exactly one prediction of the
served model, invalid ones are dead-lettered, a promoted model is swapped in between batches, and a promoted
model that fails its checks is never served."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from connectors.kafka.broker import EmbeddedBroker
from connectors.model.registry import ModelRegistry
from connectors.model.serving import ModelServer
from tests.connectors.model.test_serving import CLASSES, ensemble, graph
from tests.integration.streams import config_for, create_topics, produce, read_topic, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("kafka_client")]


def features(prefix: str, n: int, rng: np.random.Generator) -> list[tuple[bytes, bytes]]:
    x = rng.normal(size=(n, 6))
    return [
        (f"{prefix}-{k}".encode(),
         orjson.dumps({"id": f"{prefix}-{k}", "embedding": x[k].tolist(), "payload": {"k": k}}))
        for k in range(n)
    ]  # fmt: skip


@pytest.fixture
def running() -> Iterator[list[tuple[ModelServer, threading.Thread]]]:
    started: list[tuple[ModelServer, threading.Thread]] = []
    yield started
    for server, thread in started:
        server.request_stop()
        thread.join(timeout=30)


def test_predictions_follow_the_promoted_model_and_a_bad_one_is_never_served(
    broker: EmbeddedBroker, unique: str, tmp_path: Path, running: list[tuple[ModelServer, threading.Thread]]
) -> None:
    servers = broker.bootstrap_servers
    registry = ModelRegistry(tmp_path / "models")
    cfg = config_for(
        servers,
        unique,
        input={"embedding_dim": 6},
        retrain={"registry": str(registry.root)},
        serve={"batch_size": 64},
    )
    create_topics(cfg)
    good = {"created_at": 0.0, "classes": CLASSES}
    registry.add(graph(ensemble(1)), good, promote=True)
    server = ModelServer(cfg, servers)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    running.append((server, thread))
    rng = np.random.default_rng(0)
    bad = [(b"bad-1", b"{oops"), (b"bad-2", orjson.dumps({"id": "bad-2", "embedding": [1, 2]}))]
    produce(servers, cfg.topics.features, features("a", 200, rng) + bad)
    wait_for(lambda: server.stats.items == 200, 60, "the first 200 predictions")

    # a promoted v2 whose file no longer matches its manifest: refused, v1 keeps serving
    v2 = registry.add(graph(ensemble(2)), good, promote=True)
    registry.model_path("v2").write_bytes(graph(ensemble(7)))
    event = {"type": "promoted", "version": "v2", "sha256": v2["sha256"]}
    produce(servers, cfg.topics.models, [(b"v2", orjson.dumps(event))])
    wait_for(lambda: server.stats.loads["refused"] == 1, 30, "v2 to be refused")
    produce(servers, cfg.topics.features, features("b", 50, rng))
    wait_for(lambda: server.stats.items == 250, 30, "50 more predictions")

    v3 = registry.add(graph(ensemble(3)), good, promote=True)
    event = {"type": "promoted", "version": "v3", "sha256": v3["sha256"]}
    produce(servers, cfg.topics.models, [(b"v3", orjson.dumps(event))])
    wait_for(lambda: server.model is not None and server.model.version == "v3", 30, "v3 to be served")
    produce(servers, cfg.topics.features, features("c", 50, rng))
    wait_for(lambda: server.stats.items == 300, 30, "50 more predictions")

    out = read_topic(servers, cfg.topics.predictions, expect=300)
    values = [orjson.loads(m.value) for m in out]
    assert len(values) == 300 and len({v["id"] for v in values}) == 300
    by_prefix = {p: {v["model"] for v in values if v["id"].startswith(p)} for p in "abc"}
    assert by_prefix == {"a": {"v1"}, "b": {"v1"}, "c": {"v3"}}
    one = next(v for v in values if v["id"] == "a-5")
    probs, members = ensemble(1).predict(np.array([one["embedding"]]))
    assert np.abs(np.array(one["probs"]) - probs[0]).max() < 1e-5
    assert (
        np.array(one["committee"]).shape == (3, 4)
        and np.abs(np.array(one["committee"]) - members[0]).max() < 1e-5
    )
    assert one["payload"] == {"k": 5} and isinstance(one["ts"], int)
    dead = read_topic(servers, cfg.topics.dead_letter, expect=2)
    assert sorted((m.key, m.headers["x-dlq-stage"], m.headers["x-dlq-reason"]) for m in dead) == [
        (b"bad-1", b"serve", b"malformed_json"),
        (b"bad-2", b"serve", b"wrong_embedding_dim"),
    ]
    assert server.stats.loads == {"loaded": 2, "refused": 1}
    assert server.stats.dead_letters == {"serve": 2, "score": 0, "encode": 0, "produce": 0}
