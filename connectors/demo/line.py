"""The demo's production line and its annotators, on real data: scikit-learn's bundled handwritten digits.

Each item is an 8x8 image of a digit; its 64 pixel values (scaled to [0, 1]) are the features the model head
scores. The digit 8 is made rare (about 1 item in 100) and plays the defect. :class:`FeatureLine` produces
feature records at a steady rate and remembers each item's true digit; :class:`Annotators` read the to-label
topic like a labeling team would: each item is answered after a random delay, sometimes wrongly, and some
items get a second opinion (so annotator agreement is measured).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer

from selector.messages.timestamps import rfc3339
from selector.messages.to_label import ToLabelRecord, read_to_label

log = logging.getLogger(__name__)

CLASSES = [str(d) for d in range(10)]
RARE = "8"
RARE_WEIGHT = 0.1
"""Relative sampling weight of the rare digit: 0.1 / (9 + 0.1), about 1.1% of the items."""


@dataclass(frozen=True)
class Digits:
    """The digits as features (n, 64) float32 in [0, 1] and labels (n,) as class indices."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def load(cls) -> Digits:
        from sklearn.datasets import load_digits  # noqa: PLC0415 (the demo's only use of scikit-learn)

        data = load_digits()
        return cls((data.data / 16.0).astype(np.float32), data.target.astype(np.int64))

    def split(self, seed: int, seed_items: int) -> tuple[Digits, Digits, Digits]:
        """A labeled seed (common digits only, as a first model's data would be), the stream's pool and a
        held-out test set (a quarter of the items), disjoint."""
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(self.y))
        test, rest = order[: len(order) // 4], order[len(order) // 4 :]
        common = rest[self.y[rest] != int(RARE)]
        first = common[:seed_items]
        pool = np.setdiff1d(rest, first)
        return (
            Digits(self.x[first], self.y[first]),
            Digits(self.x[pool], self.y[pool]),
            Digits(self.x[test], self.y[test]),
        )

    def draw_weights(self) -> np.ndarray:
        w: np.ndarray = np.where(self.y == int(RARE), RARE_WEIGHT, 1.0)
        return w / float(w.sum())


class FeatureLine(threading.Thread):
    """Produces feature records of digits drawn from a pool, at a steady rate, until stopped."""

    def __init__(self, producer: KafkaProducer, topic: str, pool: Digits, rate_per_s: float, seed: int = 1):
        super().__init__(name="feature-line", daemon=True)
        self.producer = producer
        self.topic = topic
        self.pool = pool
        self.rate_per_s = rate_per_s
        self.rng = np.random.default_rng(seed)
        self.truth: dict[str, int] = {}
        """true digit of every item produced (what the simulated annotators know)"""
        self.sent = 0
        self.stop_event = threading.Event()
        self.prefix = f"digit-{int(time.time())}"
        self._p = pool.draw_weights()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - start) * self.rate_per_s) - self.sent
            if due > 0:
                for k in self.rng.choice(len(self.pool.y), size=due, p=self._p).tolist():
                    rid = f"{self.prefix}-{self.sent:08d}"
                    self.truth[rid] = int(self.pool.y[k])
                    value = {
                        "id": rid,
                        "embedding": self.pool.x[k].tolist(),
                        "payload": {"image_index": k},
                        "meta": {"line": "digits"},
                    }
                    self.producer.send(self.topic, key=rid.encode(), value=orjson.dumps(value))
                    self.sent += 1
                self.producer.flush()
            self.stop_event.wait(0.1)


class Annotators(threading.Thread):
    """A simulated labeling team: answers to-label items after a delay, with errors and second opinions."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        labels_topic: str,
        truth: dict[str, int],
        *,
        delay_s: float = 3.0,
        error_rate: float = 0.05,
        second_opinion: float = 0.1,
        seed: int = 2,
    ) -> None:
        super().__init__(name="annotators", daemon=True)
        self.consumer = consumer
        self.producer = producer
        self.labels_topic = labels_topic
        self.truth = truth
        self.delay_s = delay_s
        self.error_rate = error_rate
        self.second_opinion = second_opinion
        self.rng = np.random.default_rng(seed)
        self.stop_event = threading.Event()
        self.answered = 0
        self._queue: list[tuple[float, str, str]] = []

    def _answer(self, rid: str) -> str:
        true = self.truth[rid]
        if self.rng.random() < self.error_rate:
            return CLASSES[(true + int(self.rng.integers(1, len(CLASSES)))) % len(CLASSES)]
        return CLASSES[true]

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for records in self.consumer.poll(timeout_ms=200).values():
                    for rec in records:
                        read = read_to_label(rec.value)
                        if not isinstance(read, ToLabelRecord):
                            log.warning("skipped a to-label record: %s", read.message)
                            continue
                        rid = read.id
                        if rid not in self.truth:
                            continue  # an item of an earlier demo run
                        n = 2 if self.rng.random() < self.second_opinion else 1
                        for who in self.rng.choice(3, size=n, replace=False).tolist():
                            due = time.monotonic() + self.rng.exponential(self.delay_s)
                            heapq.heappush(self._queue, (due, rid, f"annotator-{who + 1}"))
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    _, rid, who = heapq.heappop(self._queue)
                    at = rfc3339(time.time())
                    label = {"id": rid, "label": self._answer(rid), "annotator": who, "ts": at}
                    self.producer.send(self.labels_topic, key=rid.encode(), value=orjson.dumps(label))
                    self.answered += 1
                self.producer.flush()
        finally:
            self.consumer.close()
