"""A simulated production line: a defect-detection model's predictions, for the demo and the benchmarks.

About 1% of items are defective (the classes after the first, "ok", share them). The model is good but not
perfect: most items are easy and predicted confidently, some are ambiguous, a few are hard and often wrong,
so the stream has the mix of confident and uncertain outputs a real line produces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer

# (share of items, logit advantage of the true class): easy, ambiguous, hard
DIFFICULTY = ((0.85, 7.0), (0.12, 2.5), (0.03, 0.3))


def simulate_probs(
    rng: np.random.Generator, n: int, n_classes: int, defect_rate: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """True classes and model probabilities for ``n`` items (class 0 is "ok")."""
    defective = rng.random(n) < defect_rate
    truth = np.where(defective, rng.integers(1, n_classes, size=n), 0)
    shares = np.array([s for s, _ in DIFFICULTY])
    advantage = np.array([a for _, a in DIFFICULTY])[
        rng.choice(len(DIFFICULTY), size=n, p=shares / shares.sum())
    ]
    logits = rng.normal(0.0, 1.0, size=(n, n_classes))
    logits[np.arange(n), truth] += advantage
    logits[:, 0] += 1.0  # the model leans towards "ok", as models trained on a 99% "ok" line do
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return truth, z / z.sum(axis=1, keepdims=True)


def prediction_records(
    rng: np.random.Generator,
    n: int,
    classes: list[str],
    start: int = 0,
    prefix: str = "item",
    malformed_rate: float = 0.0,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) records of simulated predictions; ``malformed_rate`` of them are broken on purpose."""
    truth, probs = simulate_probs(rng, n, len(classes))
    broken = rng.random(n) < malformed_rate
    for i in range(n):
        rid = f"{prefix}-{start + i:09d}"
        if broken[i]:
            yield rid.encode(), b'{"id": "' + rid.encode() + b'", "probs": [0.5, "oops"'
            continue
        value: dict[str, Any] = {
            "id": rid,
            "probs": probs[i].tolist(),
            "model": "line-model-v1",
            "segment": f"camera-{i % 3}",
            "payload": {"image": f"s3://line-images/{rid}.png"},
            "meta": {"true_class": classes[truth[i]]},
        }
        yield rid.encode(), orjson.dumps(value)


class LineSimulator(threading.Thread):
    """Produces simulated predictions to a topic at a steady rate until stopped."""

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        classes: list[str],
        rate_per_s: float,
        seed: int = 0,
        malformed_rate: float = 0.001,
    ) -> None:
        super().__init__(name="line-simulator", daemon=True)
        self.producer = producer
        self.topic = topic
        self.classes = classes
        self.rate_per_s = rate_per_s
        self.rng = np.random.default_rng(seed)
        self.malformed_rate = malformed_rate
        self.sent = 0
        self.stop_event = threading.Event()
        self.prefix = f"item-{int(time.time())}"

    def run(self) -> None:
        tick = 0.1
        start = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - start) * self.rate_per_s) - self.sent
            if due > 0:
                for key, value in prediction_records(
                    self.rng, due, self.classes, self.sent, self.prefix, self.malformed_rate
                ):
                    self.producer.send(self.topic, key=key, value=value)
                self.sent += due
                self.producer.flush()
            self.stop_event.wait(tick)
