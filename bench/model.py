"""The model side of the loop: the inference connector's throughput and the built-in trainer's wall time.

- Inference: the exported deep ensemble (5 members, 64 hidden units, 10 classes, 64-number features, the
  demo's shape) scored by onnxruntime alone, then with the connector's per-batch work around it (decode the
  JSON feature records, score, encode the prediction records), at several batch sizes; and through the
  embedded broker (``ModelServer`` consuming pre-produced features and publishing predictions).
- Retraining: ``train_ensemble`` on 10,000 labeled examples, and the whole ``retrain`` (split, train,
  export, parity check, gate against the current model, register).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from connectors.kafka.broker import EmbeddedBroker
from connectors.model.dataset import Example
from connectors.model.registry import ModelRegistry
from connectors.model.serving import LoadedModel, ModelServer
from connectors.model.trainer import TrainSettings, onnx_model, retrain, train_ensemble
from selector.config import parse_config
from selector.messages.features import decode_features

CLASSES = [str(d) for d in range(10)]
DIM = 64


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable-ish synthetic features: class centroids plus noise (the trainer's work does not depend on
    the data's meaning, only its shape)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    centres = rng.normal(0, 1, (len(CLASSES), DIM))
    return (centres[y] + rng.normal(0, 1.5, (n, DIM))).astype(np.float32), y.astype(np.int64)


def model_bytes(settings: TrainSettings, train_items: int = 2_000) -> bytes:
    x, y = _data(train_items)
    ensemble = train_ensemble(
        x, y, np.ones(len(y)), CLASSES, TrainSettings(**{**settings.__dict__, "epochs": 5})
    )
    return bytes(onnx_model(ensemble).SerializeToString())


@dataclass(frozen=True)
class InferenceRow:
    batch: int
    alone: float
    """items/s, onnxruntime on ready float32 arrays"""
    connector: float
    """items/s, decode + score + encode"""


def inference_rows(data: bytes, items: int, batches: tuple[int, ...], reps: int) -> list[InferenceRow]:
    model = LoadedModel.from_bytes(data, "v1", CLASSES, DIM)
    x, _ = _data(items, seed=1)
    raw = [orjson.dumps({"id": f"i{k}", "embedding": x[k].tolist(), "payload": None}) for k in range(items)]
    rows = []
    for b in batches:
        alone, connector = [], []
        for _ in range(reps):
            t = time.perf_counter()
            for i in range(0, items, b):
                model.predict(x[i : i + b])
            alone.append(items / (time.perf_counter() - t))
            t = time.perf_counter()
            for i in range(0, items, b):
                fb = decode_features(raw[i : i + b], DIM)
                probs, members = model.predict(fb.x)
                assert members is not None
                for j, rid in enumerate(fb.ids):
                    orjson.dumps({"id": rid, "probs": probs[j].tolist(), "committee": members[j].tolist(),
                                  "embedding": fb.x[j].tolist(), "model": "v1"})  # fmt: skip
            connector.append(items / (time.perf_counter() - t))
        rows.append(InferenceRow(b, statistics.median(alone), statistics.median(connector)))
    return rows


@dataclass(frozen=True)
class ServeThroughput:
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def serve_through_broker(data: bytes, items: int, batch_size: int) -> ServeThroughput:
    """Pre-produce ``items`` feature records; time the connector from its first prediction to its last."""
    from kafka import KafkaProducer  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        servers = broker.bootstrap_servers
        registry = ModelRegistry(Path(tmp) / "models")
        registry.add(data, {"created_at": 0.0, "classes": CLASSES}, promote=True)
        cfg = parse_config(
            {
                "classes": CLASSES,
                "input": {"embedding_dim": DIM},
                "kafka": {"bootstrap_servers": servers, "session_timeout_ms": 6000,
                          "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10000},
                "retrain": {"registry": str(registry.root)},
                "serve": {"batch_size": batch_size},
                "metrics": {"enabled": False},
            }
        )  # fmt: skip
        from connectors.kafka.clients import prepare_topics  # noqa: PLC0415

        prepare_topics(cfg, servers)
        x, _ = _data(items, seed=2)
        producer = KafkaProducer(bootstrap_servers=servers, linger_ms=20, batch_size=256 * 1024)
        for k in range(items):
            rid = f"i{k}"
            producer.send(
                cfg.topics.features,
                key=rid.encode(),
                value=orjson.dumps({"id": rid, "embedding": x[k].tolist()}),
            )
        producer.flush()
        producer.close()
        server = ModelServer(cfg, servers)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while server.stats.items == 0:
            time.sleep(0.005)
        started = time.perf_counter()
        first = server.stats.items
        while server.stats.items < items:
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        server.request_stop()
        thread.join(timeout=30)
        return ServeThroughput(items - first, seconds)


@dataclass(frozen=True)
class RetrainTiming:
    examples: int
    train_s: float
    retrain_s: float
    holdout: int


def retrain_timing(examples: int, settings: TrainSettings) -> RetrainTiming:
    x, y = _data(examples, seed=3)
    t = time.perf_counter()
    train_ensemble(x, y, np.ones(examples), CLASSES, settings)
    train_s = time.perf_counter() - t
    rng = np.random.default_rng(4)
    pi = rng.uniform(0.05, 1.0, examples)
    stored = [
        Example(f"e{k}", CLASSES[y[k]], 1, 1.0, "query", CLASSES[(y[k] + (k % 3 == 0)) % 10], [0.1] * 10,
                x[k].tolist(), float(pi[k]), 1.0 / float(pi[k]), "v0", "2026-11-24T00:00:00Z", False)
        for k in range(examples)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        registry = ModelRegistry(tmp)
        t = time.perf_counter()
        result = retrain(stored, CLASSES, registry, settings, now=time.time())
        retrain_s = time.perf_counter() - t
    return RetrainTiming(examples, train_s, retrain_s, int(result.metrics["holdout"]))
