"""A simulated line for the estimate tests: every prediction (as a record of the predictions topic), the
decisions among them sent for labeling with their inclusion probability, and the annotators' labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
from kafka.consumer.fetcher import ConsumerRecord

from selector.messages.timestamps import rfc3339
from selector.quality.labels import LabelEvent

CLASSES = ["ok", "scratch", "dent", "crack"]
T0 = 1_795_000_000.0  # 2026-11-18T08:26:40Z


def record(offset: int, value: bytes | None, ts_ms: int = 0, partition: int = 0) -> ConsumerRecord:
    """A record of the predictions topic."""
    return ConsumerRecord("predictions", partition, -1, offset, ts_ms, 0, None, value, [], None, -1, -1, -1)


@dataclass(frozen=True)
class Line:
    probs: np.ndarray
    truth: np.ndarray
    ts: np.ndarray
    model: list[str | None]
    segment: list[str | None]
    pi: np.ndarray
    sampled: np.ndarray
    """which items were sent for labeling (and labeled)"""

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def records(self, start: int = 0) -> list[ConsumerRecord]:
        """Every item as a prediction record, offsets from ``start`` (``ts`` in epoch ms)."""
        out = []
        for k in range(len(self.ts)):
            value = {"id": f"p-{k}", "probs": self.probs[k].tolist(), "ts": int(self.ts[k] * 1000)}
            if self.model[k] is not None:
                value["model"] = self.model[k]
            if self.segment[k] is not None:
                value["segment"] = self.segment[k]
            out.append(record(start + k, orjson.dumps(value)))
        return out

    def decisions(self) -> list[dict[str, object]]:
        """The labeled items' to-label records, decided at their prediction's time."""
        return [
            {
                "id": f"p-{k}",
                "route": "query",
                "predicted": CLASSES[int(self.predicted[k])],
                "probs": self.probs[k].tolist(),
                "embedding": None,
                "query_probability": float(self.pi[k]),
                "model": self.model[k],
                "segment": self.segment[k],
                "decided_at": rfc3339(float(self.ts[k])),
                "accept_eligible": False,
            }
            for k in np.flatnonzero(self.sampled).tolist()
        ]

    def labels(self) -> list[LabelEvent]:
        return [
            LabelEvent(f"p-{k}", CLASSES[int(self.truth[k])], "ann", float(self.ts[k]) + 60)
            for k in np.flatnonzero(self.sampled).tolist()
        ]


def line(
    n: int,
    seed: int = 0,
    span_s: float = 2 * 86400.0,
    end: float = T0,
    models: tuple[str | None, ...] = ("v1", "v2"),
    segments: tuple[str | None, ...] = ("a", "b", None),
) -> Line:
    """``n`` items over the ``span_s`` seconds before ``end``, calibrated (each true class is drawn from the
    item's probabilities), each labeled with its own probability in [0.05, 0.5]."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([6.0, 1.0, 1.0, 1.0], n)
    truth = (np.cumsum(probs, axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(0, 3)
    pi = rng.uniform(0.05, 0.5, n)
    return Line(
        probs,
        truth,
        np.sort(end - rng.uniform(0, span_s, n)),
        [models[k % len(models)] for k in range(n)],
        [segments[k % len(segments)] for k in range(n)],
        pi,
        rng.random(n) < pi,
    )
