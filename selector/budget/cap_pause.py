"""When a hard cap holds labeling back, and until when: what the operator must be told.

Each input partition owns a share of every cap (:func:`selector.routing.cap_limits`) and a ledger of its
recent grant times (:class:`selector.budget.caps.CapLedger`). A partition is *blocked* at horizon ``h``
(window ``W``, share ``N``) when ``N`` grants lie in ``(now - W, now]``; its next label is possible once the
``N``-th most recent grant leaves the window, at ``t_{-N} + W`` (``inf`` for a share of zero). Over the
partitions an instance owns, labeling at ``h`` is *paused* when every one of them is blocked, until the first
of them frees; it is *partly* held back while only some are blocked.

Example:
    >>> import numpy as np
    >>> from selector.budget.caps import CapLedger
    >>> full = CapLedger({"hour": (3600.0, 2)}, {"hour": np.array([100.0, 200.0])}, 200.0)
    >>> (p,) = cap_pauses({0: full}, now=300.0)
    >>> (p.horizon, p.blocked, p.partitions, p.paused, p.until)
    ('hour', 1, 1, True, 3700.0)
    >>> cap_pauses({0: full}, now=3701.0)
    []
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from selector.budget.caps import CapLedger


@dataclass(frozen=True)
class CapPause:
    """A horizon whose cap holds labeling back on some (or all) of an instance's partitions."""

    horizon: str
    cap: int
    """the instance's part of the cap: the shares of its partitions, summed"""
    blocked: int
    """partitions whose share is spent"""
    partitions: int
    """partitions the instance owns"""
    until: float
    """when the first blocked partition may label again (``inf``: a cap of zero)"""

    @property
    def paused(self) -> bool:
        """Every owned partition is blocked: no label at all until :attr:`until`."""
        return self.blocked == self.partitions


def free_at(ledger: CapLedger, horizon: str, now: float) -> float | None:
    """When the partition may label again at ``horizon`` (None: it may now)."""
    window, cap = ledger.limits[horizon]
    if cap == 0:
        return math.inf
    times = ledger.grants.get(horizon)
    if times is None or len(times) < cap:
        return None
    in_window = len(times) - int(np.searchsorted(times, now - window, side="right"))
    if in_window < cap:
        return None
    return float(times[len(times) - cap]) + window


def cap_pauses(ledgers: Mapping[int, CapLedger], now: float) -> list[CapPause]:
    """The horizons at which a cap holds back at least one of ``ledgers`` (partition -> ledger) at ``now``,
    in the order of the limits."""
    if not ledgers:
        return []
    out = []
    first = next(iter(ledgers.values()))
    for horizon in first.limits:
        frees = [free_at(ledger, horizon, now) for ledger in ledgers.values()]
        blocked = [t for t in frees if t is not None]
        if blocked:
            cap = sum(ledger.limits[horizon][1] for ledger in ledgers.values())
            out.append(CapPause(horizon, cap, len(blocked), len(ledgers), min(blocked)))
    return out
