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

from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import FloatArray

INELIGIBLE = -1.0
"""Window value of an item the pool may not select (below every score in [0, 1])."""

COLD_START_ITEMS = 32
"""Below this many observed items a pool selects eligible items with probability ``r`` instead."""


@dataclass(frozen=True)
class WindowRule:
    """The selection rule of one pool over its window, as a function of the share ``s`` it selects.

    With ``A(x)`` the window values above ``x`` and ``E(x)`` those equal to it, a pool selecting an expected
    share ``s`` of the ``m`` window items picks an item of score ``x`` with probability

        p(x, s) = clip((s m - A(x)) / E(x), 0, 1)       (E(x) = 0: 1 if s m > A(x), else 0)

    the exact tie rule above. An item with its own uniform draw ``u`` is therefore picked iff ``s`` exceeds
    its *critical share* ``s*(x, u) = (A(x) + u E(x)) / m``, so a balance-driven share (the controller's
    feedback) decides with one comparison per item. With fewer than :data:`COLD_START_ITEMS` values the pool
    is cold: ``p = min(1, s)``, ``s* = u``.
    """

    ordered: FloatArray
    """the window, sorted ascending"""

    @classmethod
    def of(cls, window: FloatArray) -> WindowRule:
        return cls(np.sort(window))

    @property
    def cold(self) -> bool:
        return len(self.ordered) < COLD_START_ITEMS

    def above_tied(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        lo = np.searchsorted(self.ordered, x, side="left")
        hi = np.searchsorted(self.ordered, x, side="right")
        return (len(self.ordered) - hi).astype(np.float64), (hi - lo).astype(np.float64)

    def critical(self, x: FloatArray, u: FloatArray) -> FloatArray:
        """The share above which each item (score ``x``, draw ``u``) is picked; ``inf`` if ineligible."""
        if self.cold:
            out: FloatArray = np.where(x > INELIGIBLE, u, np.inf)
            return out
        above, tied = self.above_tied(x)
        out = (above + u * tied) / len(self.ordered)
        out[x <= INELIGIBLE] = np.inf
        return out

    def probability(self, x: FloatArray, s: FloatArray) -> FloatArray:
        """Chance that a pool selecting share ``s`` (per item) picks each item of score ``x``."""
        if self.cold:
            out: FloatArray = np.where(x > INELIGIBLE, np.minimum(1.0, s), 0.0)
            return out
        return self.probability_from(*self.above_tied(x), x, s)

    def probability_from(
        self, above: FloatArray, tied: FloatArray, x: FloatArray, s: FloatArray
    ) -> FloatArray:
        """:meth:`probability` given :meth:`above_tied` of ``x`` (a warm rule)."""
        c = s * len(self.ordered)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(tied > 0, np.clip((c - above) / tied, 0.0, 1.0), (c > above).astype(np.float64))
        p[x <= INELIGIBLE] = 0.0
        return p

    def threshold(self, s: FloatArray, floor: float) -> FloatArray:
        """The score a pool selecting share ``s`` picks from (ties at it by draw); ``floor`` when it selects
        every eligible item, NaN while cold."""
        m = len(self.ordered)
        if self.cold:
            return np.full(len(s), np.nan)
        rank = np.clip(np.ceil(np.minimum(s, 1.0) * m).astype(np.int64), 1, m)
        theta = self.ordered[m - rank]
        out: FloatArray = np.where((theta <= INELIGIBLE) | (s * m > m), floor, theta)
        return out


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
