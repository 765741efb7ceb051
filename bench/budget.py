"""Budget control on synthetic score streams: our controllers beside scikit-activeml's budget managers.

Every contender reads the same stream of informativeness scores in [0, 1] and says which items it labels:

- **selector**: :func:`selector.budget.controller.decide` with the policy :func:`selector.routing.policy_of`
  builds from the shipped defaults (``window_items`` 2,000, ``feedback_items`` 200, ``max_catchup`` 0.5,
  ``max_burst`` 10), no audits, no caps (one extra run with caps shows that they hold), nothing
  auto-accepted, batches of :data:`BATCH` items with the partition state threaded from one to the next;
- **scikit-activeml**: its stream budget managers, one item at a time (:mod:`bench.skactiveml_budget`);
- **Bernoulli(r)**: every item labeled with probability ``r``, independently: the reference for how far a
  window of items strays from ``r W`` by chance alone.

The streams are those of issue 3 (and of ``tests/unit/budget/test_controller.py``), at 10 items/s of stream
time:
(a) uniform scores, (b) one identical score for every item (a saturated model), (c) 98% exact zeros and the
rest uniform, (d) Beta(1, 8) scores for the first half, Beta(8, 1) for the second, (e) uniform scores, the
first half at 10 items/s, then six idle hours, then the second half within ten seconds.

Measured per contender, stream and budget ``r``: the realized rate (labels / items) and its error relative to
``r``, the same over the second half alone (after the drift, or the burst after the gap), the worst windowed
overshoot ``max_i (labels in items i..i+W-1) - r W`` for every window of ``W`` consecutive items, and
decisions per second (time spent deciding, stream generation and id hashing excluded).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray
from selector.budget.controller import Features, decide, initial_partition
from selector.config import HORIZONS_S, parse_config
from selector.draws import id_hashes
from selector.routing import cap_limits, policy_of

RATES = (0.005, 0.02, 0.05)
"""Budgets (fraction of items) every contender is run at."""

WINDOWS = (1_000, 10_000)
"""Window lengths, in items, of the worst windowed overshoot."""

BATCH = 1_000
"""Items per :func:`decide` call for our controllers (the monitor decides one polled batch at a time)."""

ITEMS_PER_S = 10.0
"""Stream time: a production line of 10 items/s."""

IDLE_GAP_S = 6 * 3600.0
BURST_S = 10.0
"""Scenario (e): six idle hours, then the second half of the stream within ten seconds."""

CAP_RATE = 0.02
CAPS = {"minute": 20, "hour": 500}
"""The capped run: at 10 items/s and 2% the hourly cap (500 < 720 labels an hour) binds all the time and the
minute cap (20 > 12 a minute) only when labels bunch up."""

CAP_CEILING = CAPS["hour"] / (3600.0 * ITEMS_PER_S)
"""The highest rate the hourly cap allows at 10 items/s (labels per item, over whole hours)."""

SCENARIOS = {
    "continuous": "(a) continuous",
    "identical": "(b) all identical",
    "zeros": "(c) 98% zeros",
    "drift": "(d) drift",
    "idle_gap": "(e) idle gap, burst",
}
"""Scenario name -> its label in the tables."""

REFERENCE = "reference: Bernoulli(r)"
"""Table name of :func:`bernoulli`."""

TARGET_ERROR = 0.02
"""The design's figure: realized rate within +-2% (relative) of the target."""


@dataclass(frozen=True)
class ScoreStream:
    """One scenario: a score and a time per item, and the item ids (our controller draws per id)."""

    name: str
    score: FloatArray
    t: FloatArray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.score)


def score_stream(name: str, n: int, seed: int = 0) -> ScoreStream:
    """The score stream of scenario ``name`` (a key of :data:`SCENARIOS`), ``n`` items, seeded."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / ITEMS_PER_S
    half = n // 2
    if name == "continuous":
        score = rng.random(n)
    elif name == "identical":
        score = np.full(n, 0.7312345678)
    elif name == "zeros":
        score = np.where(rng.random(n) < 0.02, rng.random(n), 0.0)
    elif name == "drift":
        score = np.concatenate([rng.beta(1, 8, half), rng.beta(8, 1, n - half)])
    elif name == "idle_gap":
        score = rng.random(n)
        after = t[half - 1] + IDLE_GAP_S + np.linspace(0.0, BURST_S, n - half)
        t = np.concatenate([t[:half], after])
    else:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    return ScoreStream(name, score, t, [f"{name}-{seed}-{i}" for i in range(n)])


@dataclass(frozen=True)
class Selection:
    """Which items a contender labeled, and the seconds it spent deciding."""

    labels: BoolArray
    seconds: float
    inclusion_sum: float = math.nan
    """sum of the inclusion probabilities the contender logged (ours; NaN for the others)"""


Contender = Callable[[ScoreStream, float], Selection]
"""Decides a whole stream at a budget (fraction of items)."""


def selector_contender(
    controller: str, query_threshold: float = 0.0, caps: dict[str, int] | None = None
) -> Contender:
    """Our ``budget.controller`` with the shipped defaults, no audits, and ``caps`` (none by default)."""

    def run(stream: ScoreStream, rate: float) -> Selection:
        budget: dict[str, Any] = {
            "controller": controller,
            "rate": rate,
            "audit_rate": 0.0,
            "query_threshold": query_threshold,
            "caps": dict(caps or {}),
        }
        config = parse_config({"accept": {"default_threshold": 1.0}, "budget": budget})
        policy = policy_of(config)
        limits = cap_limits(config.budget.caps, 0, 1)
        n = len(stream)
        hashes = id_hashes(stream.ids)
        batches = [
            Features(
                stream.score[a:b],
                np.zeros(b - a, dtype=np.int64),
                np.full(b - a, None, dtype=object),
                np.zeros(b - a, dtype=bool),
                hashes[a:b],
                stream.t[a:b],
                stream.ids[a:b],
                [None] * (b - a),
            )
            for a, b in ((a, min(n, a + BATCH)) for a in range(0, n, BATCH))
        ]
        state = initial_partition(policy, limits)
        parts = []
        pi = 0.0
        started = time.perf_counter()
        for features in batches:
            out = decide(policy, state, features)
            parts.append(out.query | out.audit)
            pi += float(out.inclusion.sum())
            state = out.state
        seconds = time.perf_counter() - started
        return Selection(np.concatenate(parts) if parts else np.zeros(0, dtype=bool), seconds, pi)

    return run


def bernoulli(stream: ScoreStream, rate: float) -> Selection:
    """The reference: each item labeled with probability ``rate``, independently (the same draws for every
    stream of a length)."""
    rng = np.random.default_rng(len(stream))
    started = time.perf_counter()
    labels = rng.random(len(stream)) < rate
    return Selection(labels, time.perf_counter() - started)


def contenders(seed: int = 0) -> tuple[dict[str, Contender], str | None]:
    """Every contender by table name, and why scikit-activeml's are missing (None when they are present)."""
    ours: dict[str, Contender] = {
        "selector quantile": selector_contender("quantile"),
        "selector threshold (query_threshold 0)": selector_contender("threshold"),
        "selector threshold (query_threshold 0.5)": selector_contender("threshold", 0.5),
    }
    try:
        from bench import skactiveml_budget  # noqa: PLC0415 (optional dependency: the other sections run without it)
    except ImportError as exc:
        return {**ours, REFERENCE: bernoulli}, f"scikit-activeml is not installed ({exc})"
    theirs: dict[str, Contender] = {
        name: _skactiveml_contender(name, seed, skactiveml_budget.select)
        for name in skactiveml_budget.MANAGERS
    }
    return {**ours, **theirs, REFERENCE: bernoulli}, None


def _skactiveml_contender(
    name: str, seed: int, select: Callable[[str, FloatArray, float, int], tuple[BoolArray, float]]
) -> Contender:
    def run(stream: ScoreStream, rate: float) -> Selection:
        labels, seconds = select(name, stream.score, rate, seed)
        return Selection(labels, seconds)

    return run


def worst_overshoot(labels: BoolArray, rate: float, window: int) -> float:
    """``max_i (labels in items i..i+window-1) - rate * window`` over every window of ``window`` items."""
    if len(labels) < window:
        return math.nan
    cum = np.concatenate([[0], np.cumsum(labels, dtype=np.int64)])
    return float((cum[window:] - cum[:-window]).max()) - rate * window


def most_in_time_window(times: FloatArray, window_s: float) -> int:
    """The most labels at ``times`` (sorted) that fall in any sliding window ``(t - window_s, t]``."""
    if len(times) == 0:
        return 0
    first = np.searchsorted(times, times - window_s, side="right")
    return int((np.arange(len(times)) - first + 1).max())


@dataclass(frozen=True)
class RateResult:
    """One contender on one stream at one budget."""

    contender: str
    scenario: str
    rate: float
    items: int
    labels: int
    second_half_labels: int
    overshoot: dict[int, float]
    """window (items) -> worst overshoot, labels"""
    seconds: float
    inclusion_sum: float = math.nan

    @property
    def realized(self) -> float:
        return self.labels / self.items

    @property
    def inclusion_error(self) -> float:
        """(sum of the logged inclusion probabilities) / labels - 1: 0 when they are honest."""
        return self.inclusion_sum / self.labels - 1.0 if self.labels else math.nan

    @property
    def error(self) -> float:
        return self.realized / self.rate - 1.0

    @property
    def second_half_error(self) -> float:
        return self.second_half_labels / (self.items - self.items // 2) / self.rate - 1.0

    def relative_overshoot(self, window: int) -> float:
        return self.overshoot[window] / (self.rate * window)

    @property
    def decisions_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.inf


def measure_rates(
    n: int, rates: Sequence[float] = RATES, seed: int = 0
) -> tuple[list[RateResult], str | None]:
    """Every contender on every scenario at every budget; and why scikit-activeml is missing, if it is."""
    chosen, missing = contenders(seed)
    streams = [score_stream(name, n, seed) for name in SCENARIOS]
    out = []
    for rate in rates:
        for stream in streams:
            for name, run in chosen.items():
                sel = run(stream, rate)
                out.append(
                    RateResult(
                        name,
                        stream.name,
                        rate,
                        len(stream),
                        int(np.count_nonzero(sel.labels)),
                        int(np.count_nonzero(sel.labels[len(stream) // 2 :])),
                        {w: worst_overshoot(sel.labels, rate, w) for w in WINDOWS},
                        sel.seconds,
                        sel.inclusion_sum,
                    )
                )
    return out, missing


@dataclass(frozen=True)
class CapResult:
    """One of our controllers on one stream under the hard caps of :data:`CAPS`."""

    contender: str
    scenario: str
    items: int
    labels: int
    most: dict[str, int]
    """horizon -> the most labels in any sliding window of that horizon"""

    @property
    def realized(self) -> float:
        return self.labels / self.items

    @property
    def violations(self) -> int:
        return sum(1 for h, cap in CAPS.items() if self.most[h] > cap)


def measure_caps(n: int, seed: int = 0) -> list[CapResult]:
    """Our controllers at :data:`CAP_RATE` under :data:`CAPS`, on every scenario."""
    capped = {
        "selector quantile": selector_contender("quantile", caps=CAPS),
        "selector threshold (query_threshold 0)": selector_contender("threshold", caps=CAPS),
    }
    out = []
    for name in SCENARIOS:
        stream = score_stream(name, n, seed)
        for contender, run in capped.items():
            labels = run(stream, CAP_RATE).labels
            times = stream.t[labels]
            most = {h: most_in_time_window(times, HORIZONS_S[h]) for h in CAPS}
            out.append(CapResult(contender, name, len(stream), int(np.count_nonzero(labels)), most))
    return out
