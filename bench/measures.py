"""Throughput of every informativeness measure: the measure alone, and the whole decision with it configured.

The workload follows the design's figure: 10 classes, T = K = 10 samples / committee members, 128-number
embeddings, 3 detection boxes per item. "Measure alone" times the pure function over one batch (for
density and novelty against a full reservoir / core-set); "decide" times ``Router.decide`` + ``commit``
(scores, scoring memory, controller, routes) at a 2% budget; "decode + decide" starts from JSON records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from selector.config import Config, parse_config
from selector.messages.prediction import decode_batch
from selector.routing import Router
from selector.scores import bayesian, committee, embedding, gradient
from selector.scores.base import MEASURES
from selector.scores.embedding import CoreSet

CLASSES = [f"c{i}" for i in range(10)]
MEMBERS = 10
DIM = 128
BOXES = 3


@dataclass(frozen=True)
class Workload:
    """Synthetic predictions with every optional field, as arrays."""

    probs: np.ndarray
    samples: np.ndarray
    committee: np.ndarray
    vectors: np.ndarray
    loss: np.ndarray
    boxes: np.ndarray


def workload(n: int, seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet([0.3] * len(CLASSES), size=n)
    samples = rng.dirichlet([0.3] * len(CLASSES), size=(n, MEMBERS))
    members = rng.dirichlet([0.3] * len(CLASSES), size=(n, MEMBERS))
    vectors = rng.standard_normal((n, DIM))
    loss = rng.exponential(size=n)
    boxes = rng.dirichlet([0.3] * len(CLASSES), size=(n, BOXES))
    return Workload(probs, samples, members, vectors, loss, boxes)


def records(w: Workload, reads: str) -> list[bytes]:
    """JSON prediction records carrying ``probs`` and the fields named in ``reads`` (comma-separated)."""
    columns: dict[str, Any] = {
        "samples": w.samples,
        "committee": w.committee,
        "embedding": w.vectors,
        "predicted_loss": w.loss,
        "cost": 1.0 + np.arange(len(w.probs)) % 3,
        "detections": w.boxes,
    }
    fields = [f.strip() for f in reads.split(",") if f.strip() in columns]
    return [
        orjson.dumps(
            {"id": f"m-{i}", "probs": w.probs[i].tolist(), **{f: columns[f][i].tolist() for f in fields}}
        )
        for i in range(len(w.probs))
    ]


def config(**scoring: Any) -> Config:
    diversity = scoring.pop("diversity", {})
    calibration = scoring.pop("calibration", {})
    return parse_config(
        {
            "classes": CLASSES,
            "input": {"embedding_dim": DIM},
            "scoring": scoring,
            "diversity": diversity,
            "calibration": calibration,
            "budget": {"rate": 0.02, "caps": {}},
        }
    )


SETUPS: list[tuple[str, str, dict[str, Any]]] = [
    *[(name, "probs", {"measure": name}) for name in MEASURES],
    ("bald", "samples", {"measure": "bald"}),
    ("predictive_entropy", "samples", {"measure": "predictive_entropy"}),
    ("predictive_variance", "samples", {"measure": "predictive_variance"}),
    ("vote_entropy", "committee", {"measure": "vote_entropy"}),
    ("kl_consensus", "committee", {"measure": "kl_consensus"}),
    ("egl", "probs, embedding", {"measure": "egl"}),
    ("predicted_loss", "predicted_loss", {"measure": "predicted_loss"}),
    ("density", "embedding", {"measure": "density"}),
    ("novelty", "embedding", {"measure": "novelty"}),
    (
        "combination: bald + margin + novelty",
        "samples, embedding",
        {"measure": "combination", "weights": {"bald": 0.5, "margin": 0.3, "novelty": 0.2}},
    ),
    ("entropy, cost-aware, density^1", "embedding, cost", {"cost_aware": True, "density_beta": 1.0}),
    ("entropy over 3 boxes (max)", "detections", {"measure": "entropy"}),
    ("entropy, temperature 1.5", "probs", {"calibration": {"temperature": 1.5}}),
    ("entropy, diversity k-center", "embedding", {"diversity": {"mode": "kcenter"}}),
    (
        "entropy, diversity k-means++ (gradient)",
        "embedding",
        {"diversity": {"mode": "kmeanspp", "space": "gradient"}},
    ),
]
"""(row name, fields read, scoring section) per benchmark row."""


def _rate(fn: Callable[[], object], items: int, reps: int) -> float:
    """Median items/s of ``fn`` over ``reps`` timed calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return items / float(np.median(times))


def alone(w: Workload, name: str) -> Callable[[], object] | None:
    """The pure measure function over the batch, or None for a row that is not one measure."""
    rng = np.random.default_rng(1)
    reservoir = rng.standard_normal((128, DIM)).astype(np.float32)
    core = CoreSet.empty(256, DIM).with_points(rng.standard_normal((256, DIM)))
    fns: dict[str, Callable[[], object]] = {
        **{m: (lambda f=f: f(w.probs)) for m, f in MEASURES.items()},
        "bald": lambda: bayesian.bald(w.samples),
        "predictive_entropy": lambda: bayesian.predictive_entropy(w.samples),
        "predictive_variance": lambda: bayesian.predictive_variance(w.samples),
        "vote_entropy": lambda: committee.vote_entropy(w.committee),
        "kl_consensus": lambda: committee.kl_consensus(w.committee),
        "egl": lambda: gradient.egl(w.probs, w.vectors),
        "predicted_loss": lambda: np.minimum(1.0, w.loss / np.quantile(w.loss, 0.99)),
        "density": lambda: embedding.density(w.vectors, reservoir),
        "novelty": lambda: embedding.nearest_distance(w.vectors, core.points),
    }
    return fns.get(name)


def decide_rate(cfg: Config, values: list[bytes], batch: int, reps: int, with_decode: bool) -> float:
    """Items/s of deciding (and committing) the records batch by batch on a fresh router."""
    options = cfg.decode_options()
    chunks = [values[i : i + batch] for i in range(0, len(values), batch)]
    decoded = [decode_batch(c, [0] * len(c), **options) for c in chunks]
    assert all(not b.rejects for b in decoded), decoded[0].rejects[:3]

    def one_pass() -> None:
        router = Router(cfg)
        t0 = 0.0
        for c, b in zip(chunks, decoded, strict=True):
            batch = decode_batch(c, [0] * len(c), **options) if with_decode else b
            t = t0 + np.arange(len(batch)) * 1e-4
            router.commit(0, router.decide(0, batch, t))
            t0 = float(t[-1]) if len(t) else t0

    return _rate(one_pass, len(values), reps)


@dataclass(frozen=True)
class Row:
    name: str
    reads: str
    alone: float | None
    decide: float
    decode_decide: float


def measure_rows(items: int, batch: int, reps: int) -> list[Row]:
    w = workload(items)
    rows = []
    for name, reads, scoring in SETUPS:
        fn = alone(w, name)
        values = records(w, reads)
        rows.append(
            Row(
                name,
                reads,
                _rate(fn, items, reps) if fn is not None else None,
                decide_rate(config(**scoring), values, batch, reps, with_decode=False),
                decide_rate(config(**scoring), values, batch, max(1, reps // 2), with_decode=True),
            )
        )
    return rows
