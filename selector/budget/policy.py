"""What the spending controller reads from the configuration, and its fixed constants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from selector.arrays import FloatArray
from selector.budget.quantile import COLD_START_ITEMS

CHUNK = 256
"""Items between window refreshes (fewer at high rates and while a window is young: see
:func:`chunk_items`)."""

FEEDBACK_GAIN = 3.0
"""``kappa``: a pool's share grows ``e``-fold per token of balance above the set point. High enough that
the balance stays within about a token of the set point (so spend over any stretch is exact within a couple
of labels), low enough that a label goes to one of the more informative items of the wait."""

SET_POINT = 2.0
"""``T_0`` in tokens (at most half of ``max_burst``): the balance the feedback aims at, one token above the
gate's, so the gate is rarely what holds a label back."""

MIN_COMMON_SHARE = 0.05
"""The common pool's base share is at least this fraction of the rate, so it can take up what reserved
pools leave."""

VERSIONS_KEPT = 8
"""Model versions a partition remembers: one among them coming back (A/B traffic) keeps the windows."""

# selection mechanisms, recorded per item; pool k has code POOL_BASE + k
NONE, AUDIT, COLD, POOL_BASE = 0, 1, 2, 3
_CLUSTERS_STREAM, _SEEDING_STREAM = 4, 5

SHORTFALL_REASONS = ("floor", "cap")
"""Why budget credit is lost: ``floor``, no eligible item arrived while the balance was full (scores under
``budget.query_threshold``, or near-duplicates of pending items); ``cap``, a hard cap held labels back.
A reserved pool's own shortfall is reported as ``pool:<name>`` (the common pool makes it up)."""


@dataclass(frozen=True)
class Pool:
    """A share of the budget: ``kind`` common, class, segment or exploration (every item eligible, all
    scores tied, so its picks are uniform); ``key`` the class index or segment name."""

    name: str
    kind: Literal["common", "class", "segment", "exploration"]
    share: float
    key: int | str | None = None


@dataclass(frozen=True)
class Policy:
    """Everything the controller needs from the configuration (hot-reloadable)."""

    rate: float
    audit_rate: float
    pools: tuple[Pool, ...]
    """the common pool first, then reserved pools"""
    controller: Literal["quantile", "threshold"]
    min_score: float
    window_items: int
    max_burst: float
    seed: int
    pending_ttl_s: float = 86400.0
    dedup_distance: float = 0.0
    pending_max_items: int = 100_000
    diversity: Literal["none", "kcenter", "kmeanspp"] = "none"
    diversity_space: Literal["embedding", "gradient"] = "embedding"
    oversample: float = 1.0

    @property
    def over(self) -> float:
        """Factor the common pool's likely picks are widened by for the diversity step (1 when it is off)."""
        return self.oversample if self.diversity != "none" else 1.0

    @property
    def set_point(self) -> float:
        return min(SET_POINT, self.max_burst / 2.0)

    def base_shares(self) -> FloatArray:
        """Each pool's share of all items at the set point (the common pool's floored)."""
        r = self.rate
        reserved = [r * p.share for p in self.pools[1:]]
        common = max(r - self.audit_rate - sum(reserved), MIN_COMMON_SHARE * r)
        return np.asarray([common, *reserved], dtype=np.float64)


def chunk_items(policy: Policy, filled: int | None = None) -> int:
    """Items between window refreshes: at most :data:`CHUNK`, few enough that one chunk's expected spend
    stays within half the burst, and, for a window of only ``filled`` items, no more than it holds (so a
    young window, after a cold start or a model swap, is refreshed at 32, 64, 128... items)."""
    n = max(16, min(CHUNK, int(policy.max_burst / (2 * policy.rate))))
    return n if filled is None else min(n, max(COLD_START_ITEMS, filled))
