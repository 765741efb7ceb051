"""Streaming-quantile thresholds: which share of recent items a pool would select, tie-safe.

A pool keeps the scores of the last ``W`` items in a ring (``-1`` marks an item the pool may not select).
To select a fraction ``r`` of all items it takes the threshold ``theta`` at the ``ceil(r W)``-th largest
window value and the tie probability ``q`` that makes the expected selection exact:

    p(s) = 1 if s > theta,   q if s == theta,   0 if s < theta,
    q    = (r W - #{w > theta}) / #{w == theta}

so a stream of identical scores selects a random share ``r`` (seeded per-item draws decide which), never all
of them, and a stream that is 98% exact zeros still spends its share among the zeros it ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import FloatArray

INELIGIBLE = -1.0
"""Window value of an item the pool may not select (below every score in [0, 1])."""

SELECT_ALL_ELIGIBLE = -0.5
"""Threshold meaning: fewer eligible items than wanted, select every eligible one."""

COLD_START_ITEMS = 32
"""Below this many observed items a pool selects eligible items with probability ``r`` instead."""


@dataclass(frozen=True)
class Threshold:
    """Selection rule in force, ``p(s)`` above; ``theta = inf`` selects nothing, ``cold`` means ``p = r``."""

    theta: float
    q: float
    rate: float
    cold: bool = False

    def probability(self, s: FloatArray) -> FloatArray:
        """Selection probability of each pool score (``INELIGIBLE`` gives 0)."""
        eligible = s > INELIGIBLE
        if self.cold:
            return np.where(eligible, self.rate, 0.0)
        p: FloatArray = np.where(s > self.theta, 1.0, np.where(s == self.theta, self.q, 0.0))
        p[~eligible] = 0.0
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"theta": _finite_or_str(self.theta), "q": self.q, "rate": self.rate, "cold": self.cold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        return cls(float(d["theta"]), float(d["q"]), float(d["rate"]), bool(d["cold"]))


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else repr(x)


def quantile_threshold(window: FloatArray, rate: float, weights: FloatArray | None = None) -> Threshold:
    """The rule that selects an expected fraction ``rate`` of items distributed like ``window``.

    With ``weights``, window item ``j`` counts ``weights[j]`` instead of 1 (the chance that nothing else
    selects it already), so the rule selects ``rate`` of all items on top of what is selected otherwise.
    """
    m = len(window)
    if m < COLD_START_ITEMS:
        return Threshold(math.inf, 0.0, rate, cold=True)
    k = rate * m
    if k <= 0.0:
        return Threshold(math.inf, 0.0, rate)
    if weights is None:
        ordered = np.sort(window)
        theta = float(ordered[m - min(m, math.ceil(k))])
        if theta <= INELIGIBLE:
            return Threshold(SELECT_ALL_ELIGIBLE, 0.0, rate)
        lo = int(np.searchsorted(ordered, theta, side="left"))
        hi = int(np.searchsorted(ordered, theta, side="right"))
        above, tied = float(m - hi), float(hi - lo)
    else:
        order = np.argsort(window)[::-1]
        reached = int(np.searchsorted(np.cumsum(weights[order]), k, side="left"))
        theta = float(window[order[reached]]) if reached < m else INELIGIBLE
        if theta <= INELIGIBLE:
            return Threshold(SELECT_ALL_ELIGIBLE, 0.0, rate)
        above, tied = float(weights[window > theta].sum()), float(weights[window == theta].sum())
    q = min(1.0, max(0.0, (k - above) / tied)) if tied > 0 else 1.0
    return Threshold(theta, q, rate)


def expected_share(window: FloatArray, rule: Threshold) -> float:
    """Expected fraction of items the rule selects, judged on the window (at most the eligible fraction)."""
    if len(window) == 0:
        return 0.0
    return float(rule.probability(window).mean())


@dataclass(frozen=True)
class Ring:
    """The last ``size`` values of a stream, oldest first when read with :meth:`values`."""

    buf: FloatArray
    filled: int = 0
    pos: int = 0

    @classmethod
    def empty(cls, size: int) -> Ring:
        return cls(np.full(size, np.nan))

    def values(self) -> FloatArray:
        if self.filled < len(self.buf):
            return self.buf[: self.filled]
        out: FloatArray = np.concatenate([self.buf[self.pos :], self.buf[: self.pos]])
        return out

    def extended(self, new: FloatArray) -> Ring:
        """The ring after appending ``new`` (a copy; self is unchanged)."""
        size = len(self.buf)
        if len(new) >= size:
            return Ring(np.array(new[-size:], dtype=np.float64), size, 0)
        buf = self.buf.copy()
        end = self.pos + len(new)
        if end <= size:
            buf[self.pos : end] = new
        else:
            cut = size - self.pos
            buf[self.pos :] = new[:cut]
            buf[: end - size] = new[cut:]
        return Ring(buf, min(size, self.filled + len(new)), end % size)

    def resized(self, size: int) -> Ring:
        """The same recent values in a ring of another size."""
        if size == len(self.buf):
            return self
        return Ring.empty(size).extended(self.values())

    def to_dict(self) -> dict[str, Any]:
        # exact values: a rounded window would move the thresholds after a restore or a hot reload
        return {"values": self.values().tolist(), "size": len(self.buf)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], size: int) -> Ring:
        return cls.empty(size).extended(np.asarray(d["values"], dtype=np.float64))
