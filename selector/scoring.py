"""From a batch's calibrated predictions to the deciding informativeness, with the partition's scoring memory.

For the rows of one segment (the Router cuts batches at the controller's chunk boundaries, so a stream scores
the same however it is cut into batches), in this order:

1. **measures**: the four probability measures always (logged), and every other measure the configuration
   uses (:meth:`selector.config.ScoringConfig.measures`). With ``detections``, a probability measure is the
   aggregate (``scoring.detections``: max, mean or sum capped at 1) of its per-box values; an item without
   boxes keeps its item-level value. Raw measures (:data:`~selector.scores.base.ONLINE`: expected gradient
   length, predicted loss, novelty distance) become ``min(1, x / Q)``, ``Q`` the 99th percentile of the recent
   raw values (``scoring.normalize_items`` of them; ``x / (1 + x)`` while none is known).
2. **deciding score** ``s``: the configured measure, or for ``combination`` the weighted mean of each
   measure's online rank (mid-rank among its recent values), ``sum_m w_m rank_m / sum_m w_m``.
3. **cost-aware** (``scoring.cost_aware``): ``s`` becomes the online rank of ``s / cost``.
4. **density weighting** (``scoring.density_beta = b > 0``): ``s * density^b``, density the mean cosine
   similarity to a reservoir of recent embeddings, so outliers are not over-sampled (Settles & Craven 2008).
5. **cold start** (``scoring.cold_start_labels = N > 0``): while fewer than ``N`` items of the partition were
   sent for labeling, ``s`` is the novelty (distance to the nearest item already sent), so the first labels
   cover the embedding space like a streaming k-center cover.

The memory (:class:`ScoringState`) takes each chunk's values, and the core-set the embeddings of the items
the controller sent for labeling, when the chunk closes: every item of a chunk is scored against the memory as
of the chunk's start, wherever the batches were cut. Everything has a fixed size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray, UIntArray
from selector.budget.quantile import Ring
from selector.config import COMBINATION, Config
from selector.draws import uniforms
from selector.scores import bayesian, committee, embedding, gradient
from selector.scores.base import MEASURES, ONLINE
from selector.scores.embedding import CoreSet, decode_rows, encode_rows

NORMALIZE_QUANTILE = 0.99
"""Raw measures are divided by this quantile of their recent values (and capped at 1)."""

_RESERVOIR_STREAM = 8
"""Draw stream deciding which items enter the density reservoir."""

_OF_SAMPLES = {
    "bald": bayesian.bald,
    "predictive_entropy": bayesian.predictive_entropy,
    "predictive_variance": bayesian.predictive_variance,
}
_OF_COMMITTEE = {"vote_entropy": committee.vote_entropy, "kl_consensus": committee.kl_consensus}

Column = list[FloatArray | None]
"""One optional nested array per item (samples, committee or boxes)."""


@dataclass(frozen=True)
class Inputs:
    """What scoring and auto-accept read of a batch, as columns (probabilities already calibrated)."""

    probs: FloatArray
    samples: Column = field(default_factory=list)
    committee: Column = field(default_factory=list)
    detections: Column = field(default_factory=list)
    predicted_loss: FloatArray | None = None
    cost: FloatArray | None = None
    vectors: FloatArray | None = None
    """(n, d) embeddings when ``input.embedding_dim`` is configured"""

    def __len__(self) -> int:
        return len(self.probs)

    def rows(self, start: int, end: int) -> Inputs:
        """The rows ``start:end``."""

        def cut(col: Any) -> Any:
            return col[start:end] if col is not None and len(col) else col

        return Inputs(
            self.probs[start:end],
            cut(self.samples),
            cut(self.committee),
            cut(self.detections),
            cut(self.predicted_loss),
            cut(self.cost),
            cut(self.vectors),
        )


def shape_groups(column: Column) -> list[tuple[IntArray, FloatArray]]:
    """The items of a column grouped by array shape (the same T or K), each group stacked into one array."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(column):
        if a is not None:
            groups.setdefault(a.shape, []).append(i)
    return [
        (np.asarray(rows, dtype=np.int64), np.stack([column[i] for i in rows]))  # type: ignore[misc]
        for rows in groups.values()
    ]


def per_shape(column: Column, fn: Callable[[FloatArray], FloatArray]) -> FloatArray:
    """``fn`` over each group of :func:`shape_groups`, NaN where an item has no array."""
    out = np.full(len(column), np.nan)
    for rows, stacked in shape_groups(column):
        out[rows] = fn(stacked)
    return out


def box_aggregate(
    boxes: Column, fn: Callable[[FloatArray], FloatArray], how: str
) -> tuple[IntArray, FloatArray]:
    """Rows with at least one box, and the aggregate (max, min, mean, or sum capped at 1) of ``fn``."""
    counts = np.fromiter((0 if b is None else len(b) for b in boxes), dtype=np.int64, count=len(boxes))
    rows = np.flatnonzero(counts)
    if not len(rows):
        return rows, np.zeros(0)
    values = fn(np.concatenate([boxes[i] for i in rows.tolist()]))
    starts = np.concatenate([[0], np.cumsum(counts[rows])[:-1]])
    if how == "max":
        agg: FloatArray = np.maximum.reduceat(values, starts)
    elif how == "min":
        agg = np.minimum.reduceat(values, starts)
    elif how == "mean":
        agg = np.add.reduceat(values, starts) / counts[rows]
    else:
        agg = np.minimum(1.0, np.add.reduceat(values, starts))
    return rows, agg


@dataclass(frozen=True)
class Reservoir:
    """A ring of recent embeddings (float32, so a snapshot round trip is exact)."""

    buf: np.ndarray[Any, np.dtype[np.float32]]
    filled: int = 0
    pos: int = 0

    @classmethod
    def empty(cls, size: int, dim: int) -> Reservoir:
        return cls(np.zeros((size, dim), dtype=np.float32))

    def values(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.buf[: self.filled]

    def extended(self, new: FloatArray) -> Reservoir:
        """With the rows of ``new`` added, the oldest overwritten (a copy)."""
        if not len(new):
            return self
        size = len(self.buf)
        buf = self.buf.copy()
        idx = (self.pos + np.arange(len(new))) % size
        buf[idx[-size:]] = new[-size:]
        return Reservoir(buf, min(size, self.filled + len(new)), int((self.pos + len(new)) % size))

    def to_dict(self) -> dict[str, Any]:
        ordered = np.concatenate([self.buf[self.pos : self.filled], self.buf[: self.pos]])
        return {
            "dim": self.buf.shape[1],
            "values": encode_rows(ordered),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], size: int, dim: int) -> Reservoir:
        fresh = cls.empty(size, dim)
        if int(d.get("dim", -1)) != dim:
            return fresh  # the embedding length changed: the old memory does not apply
        return fresh.extended(decode_rows(d["values"], dim).astype(np.float64))


@dataclass(frozen=True)
class Carry:
    """What the open chunk adds to the memory once it closes: window values, reservoir rows, sent items."""

    values: dict[str, FloatArray] = field(default_factory=dict)
    reservoir: FloatArray | None = None
    sent: FloatArray | None = None
    n_sent: int = 0

    def plus(
        self, values: dict[str, FloatArray], reservoir: FloatArray, sent: FloatArray, n_sent: int
    ) -> Carry:
        def cat(a: FloatArray | None, b: FloatArray) -> FloatArray:
            return b if a is None else np.concatenate([a, b])

        merged = {k: cat(self.values.get(k), v) for k, v in values.items()}
        return Carry(
            {**self.values, **merged},
            cat(self.reservoir, reservoir),
            cat(self.sent, sent),
            self.n_sent + n_sent,
        )

    def to_dict(self) -> dict[str, Any]:
        rows = self.reservoir if self.reservoir is not None else self.sent
        return {
            "values": {k: v.tolist() for k, v in self.values.items()},
            "dim": rows.shape[1] if rows is not None else None,
            "reservoir": encode_rows(self.reservoir) if self.reservoir is not None else None,
            "sent": encode_rows(self.sent) if self.sent is not None else None,
            "n_sent": self.n_sent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], dim: int) -> Carry:
        """Restore; embeddings of another length (the configuration changed) are dropped."""
        same = d.get("dim") == dim
        return cls(
            {k: np.asarray(v, dtype=np.float64) for k, v in d.get("values", {}).items()},
            # an empty block of rows ("") is restored as empty rows, not as none, so snapshots round-trip
            decode_rows(d["reservoir"], dim).astype(np.float64)
            if d.get("reservoir") is not None and same
            else None,
            decode_rows(d["sent"], dim).astype(np.float64) if d.get("sent") is not None and same else None,
            int(d.get("n_sent", 0)),
        )


@dataclass(frozen=True)
class ScoringState:
    """A partition's scoring memory: windows for online normalization, reservoir, core-set, items sent, all
    as of the last chunk boundary, and what the open chunk will add (``carry``)."""

    windows: dict[str, Ring] = field(default_factory=dict)
    reservoir: Reservoir | None = None
    coreset: CoreSet | None = None
    sent: int = 0
    carry: Carry = field(default_factory=Carry)

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": {k: v.to_dict() for k, v in self.windows.items()},
            "reservoir": self.reservoir.to_dict() if self.reservoir is not None else None,
            "coreset": self.coreset.to_dict() if self.coreset is not None else None,
            "sent": self.sent,
            "carry": self.carry.to_dict(),
        }


@dataclass(frozen=True)
class Scored:
    """Scores of a segment: the deciding one, every measure in [0, 1], and what extends the windows."""

    score: FloatArray
    scores: dict[str, FloatArray]
    window_values: dict[str, FloatArray]


def normalized(raw: FloatArray, window: Ring) -> FloatArray:
    """``min(1, x / Q)`` with ``Q`` the :data:`NORMALIZE_QUANTILE` of the recent finite raw values; with none
    known yet, ``x / (1 + x)`` (per item, so the result never depends on which items share a batch)."""
    known = window.values()
    known = known[np.isfinite(known)]
    if not len(known):
        with np.errstate(invalid="ignore"):
            fallback: FloatArray = raw / (1.0 + raw)
        fallback[np.isinf(raw)] = 1.0
        return fallback
    q = float(np.quantile(known, NORMALIZE_QUANTILE))
    if q <= 0.0:
        return (raw > 0).astype(np.float64)
    with np.errstate(over="ignore"):  # a tiny Q: x / Q overflows to infinity, capped at 1 as it should be
        out: FloatArray = np.minimum(1.0, raw / q)
    return out


def online_rank(values: FloatArray, window: Ring) -> FloatArray:
    """Mid-rank of each value among the recent values, in [0, 1] (ties count half; 0.5 with none known)."""
    ordered = np.sort(window.values())
    if not len(ordered):
        return np.full(len(values), 0.5)
    lo = np.searchsorted(ordered, values, side="left")
    hi = np.searchsorted(ordered, values, side="right")
    out: FloatArray = (lo + hi) / (2.0 * len(ordered))
    return out


class Scorer:
    """Computes the configured scores of a segment and advances the partition's scoring memory."""

    def __init__(self, config: Config) -> None:
        s = config.scoring
        self.config = config
        self.measures = s.measures()
        self.extra = [m for m in self.measures if m not in MEASURES]
        self.windows = [f"raw:{m}" for m in self.extra if m in ONLINE]
        if s.measure == COMBINATION:
            self.windows += [f"rank:{m}" for m in s.weights]
        if s.cost_aware:
            self.windows.append("cost")
        self.dim = config.input.embedding_dim or 0
        self.reservoir = "density" in self.measures
        self.coreset = "novelty" in self.measures
        self.stateful = bool(self.windows) or self.reservoir or self.coreset or s.cold_start_labels > 0

    def initial(self) -> ScoringState:
        """The memory of a partition never seen."""
        s = self.config.scoring
        return ScoringState(
            {k: Ring.empty(s.normalize_items) for k in self.windows},
            Reservoir.empty(s.reservoir_items, self.dim) if self.reservoir else None,
            CoreSet.empty(s.coreset_items, self.dim) if self.coreset else None,
        )

    def restore(self, d: dict[str, Any] | None) -> ScoringState:
        """Adopt a snapshot (possibly taken under another configuration: what still applies is kept)."""
        fresh = self.initial()
        if not d:
            return fresh
        s = self.config.scoring
        windows = {
            k: Ring.from_dict(d["windows"][k], s.normalize_items) if k in d.get("windows", {}) else w
            for k, w in fresh.windows.items()
        }
        reservoir, coreset = fresh.reservoir, fresh.coreset
        if reservoir is not None and d.get("reservoir"):
            reservoir = Reservoir.from_dict(d["reservoir"], s.reservoir_items, self.dim)
        if coreset is not None and d.get("coreset") and d["coreset"]["dim"] == self.dim:
            coreset = CoreSet.from_dict(d["coreset"], s.coreset_items)
        return ScoringState(
            windows, reservoir, coreset, int(d.get("sent", 0)), Carry.from_dict(d.get("carry", {}), self.dim)
        )

    def _raw(self, name: str, state: ScoringState, x: Inputs) -> FloatArray:
        if name in _OF_SAMPLES:
            return per_shape(x.samples, _OF_SAMPLES[name])
        if name in _OF_COMMITTEE:
            return per_shape(x.committee, _OF_COMMITTEE[name])
        if name == "predicted_loss":
            assert x.predicted_loss is not None
            return x.predicted_loss
        assert x.vectors is not None, "embedding measures need input.embedding_dim"
        if name == "egl":
            return gradient.egl(x.probs, x.vectors)
        if name == "density":
            assert state.reservoir is not None
            return embedding.density(x.vectors, state.reservoir.values())
        assert name == "novelty" and state.coreset is not None
        return embedding.nearest_distance(x.vectors, state.coreset.points)

    def score(self, state: ScoringState, x: Inputs) -> Scored:
        """Scores of the rows of ``x`` against ``state`` (which is not changed)."""
        s = self.config.scoring
        scores = {name: fn(x.probs) for name, fn in MEASURES.items()}
        if any(d is not None for d in x.detections):
            for name, fn in MEASURES.items():
                rows, agg = box_aggregate(x.detections, fn, s.detections)
                scores[name][rows] = agg
        extend: dict[str, FloatArray] = {}
        for name in self.extra:
            raw = self._raw(name, state, x)
            if name in ONLINE:
                extend[f"raw:{name}"] = raw[np.isfinite(raw)]
                raw = normalized(raw, state.windows[f"raw:{name}"])
            scores[name] = np.clip(raw, 0.0, 1.0)
        if s.measure == COMBINATION:
            total = sum(s.weights.values())
            score = np.zeros(len(x))
            for name, w in s.weights.items():
                extend[f"rank:{name}"] = scores[name]
                score += w * online_rank(scores[name], state.windows[f"rank:{name}"])
            score /= total
        else:
            score = scores[s.measure].copy()
        if s.cost_aware:
            per_cost = score / (x.cost if x.cost is not None else 1.0)
            extend["cost"] = per_cost
            score = online_rank(per_cost, state.windows["cost"])
        if s.density_beta > 0:
            score = score * scores["density"] ** s.density_beta
        if state.sent < s.cold_start_labels:
            score = scores["novelty"].copy()
        return Scored(np.clip(score, 0.0, 1.0), scores, extend)

    def advance(
        self,
        state: ScoringState,
        x: Inputs,
        scored: Scored,
        sent: BoolArray,
        hashes: UIntArray,
        boundary: bool,
    ) -> ScoringState:
        """The memory once the segment is decided: its additions are carried until the chunk closes
        (``boundary``), then windows, reservoir, core-set and the sent count take them all at once."""
        if not self.stateful:
            return state
        s = self.config.scoring
        dim = np.zeros((0, self.dim))
        reservoir_rows, sent_rows = dim, dim
        if x.vectors is not None:
            if state.reservoir is not None:
                keep = uniforms(hashes, self.config.budget.seed, _RESERVOIR_STREAM) < min(
                    1.0, s.reservoir_items / s.normalize_items
                )
                reservoir_rows = x.vectors[keep]
            if state.coreset is not None:
                sent_rows = x.vectors[sent]
        # embeddings are kept at float32 precision, as reservoir and core-set (and snapshots) hold them
        carry = state.carry.plus(
            scored.window_values,
            reservoir_rows.astype(np.float32).astype(np.float64),
            sent_rows.astype(np.float32).astype(np.float64),
            int(np.count_nonzero(sent)),
        )
        if not boundary:
            return replace(state, carry=carry)
        windows = {
            k: w.extended(carry.values[k]) if k in carry.values else w for k, w in state.windows.items()
        }
        reservoir, coreset = state.reservoir, state.coreset
        if reservoir is not None and carry.reservoir is not None:
            reservoir = reservoir.extended(carry.reservoir)
        if coreset is not None and carry.sent is not None and len(carry.sent):
            coreset = coreset.with_points(carry.sent)
        return ScoringState(windows, reservoir, coreset, state.sent + carry.n_sent)
