"""Hard caps on labels per sliding window, at several horizons (e.g. minute, hour, day).

A label (query or audit) may be granted at time ``t`` only if, for every horizon ``h`` with window ``W_h`` and
cap ``N_h``, fewer than ``N_h`` labels were granted in ``(t - W_h, t]``. Only the ``N_h`` most recent grant
times can matter, so the state per horizon is a sorted array of at most ``N_h`` times: memory is bounded by
the caps, not by the stream.

The time axis is made non-decreasing (:meth:`CapLedger.monotone`): a clock that steps back is treated as
standing still, which can only make the cap stricter.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selector.arrays import FloatArray


@dataclass(frozen=True)
class CapLedger:
    """Grant times per horizon. Immutable: :meth:`with_grants` returns the next ledger.

    Attributes:
        limits: horizon name -> (window in seconds, cap).
        grants: horizon name -> sorted times of the most recent grants (at most ``cap`` of them).
        last_time: the latest time seen; earlier times are clamped to it.
    """

    limits: dict[str, tuple[float, int]]
    grants: dict[str, FloatArray] = field(default_factory=dict)
    last_time: float = float("-inf")

    def monotone(self, t: FloatArray) -> FloatArray:
        """The time axis the caps use: ``t`` made non-decreasing and never before ``last_time``."""
        out: FloatArray = np.maximum.accumulate(np.maximum(t, self.last_time)) if len(t) else t
        return out

    def remaining(self, now: float) -> dict[str, int]:
        """Labels that could still be granted at ``now`` per horizon (the cap headroom)."""
        out = {}
        for name, (window, cap) in self.limits.items():
            times = self.grants.get(name, _EMPTY)
            in_window = len(times) - int(np.searchsorted(times, now - window, side="right"))
            out[name] = max(0, cap - in_window)
        return out

    def with_grants(self, times: list[float], last_time: float) -> CapLedger:
        """The ledger after granting labels at ``times`` (sorted, not before ``last_time`` of self)."""
        new = np.asarray(times, dtype=np.float64)
        grants = {}
        for name, (_window, cap) in self.limits.items():
            merged = (
                np.concatenate([self.grants.get(name, _EMPTY), new])
                if len(new)
                else self.grants.get(name, _EMPTY)
            )
            grants[name] = merged[max(0, len(merged) - cap) :] if cap else _EMPTY
        return CapLedger(self.limits, grants, max(self.last_time, last_time))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data snapshot (for the state topic)."""
        # -inf (nothing seen yet) is written as null: strict JSON has no infinity (orjson writes null for it)
        last = self.last_time if math.isfinite(self.last_time) else None
        return {"last_time": last, "grants": {k: v.tolist() for k, v in self.grants.items()}}

    @classmethod
    def from_dict(cls, limits: dict[str, tuple[float, int]], data: dict[str, Any]) -> CapLedger:
        """Restore a snapshot under (possibly changed) limits."""
        grants = {
            k: np.asarray(data["grants"].get(k, []), dtype=np.float64)[-lim[1] :] for k, lim in limits.items()
        }
        last = data["last_time"]
        return cls(
            limits,
            {k: v if limits[k][1] else _EMPTY for k, v in grants.items()},
            float("-inf") if last is None else float(last),
        )


_EMPTY: FloatArray = np.zeros(0, dtype=np.float64)


class CapWalk:
    """Checks grants one at a time against a ledger plus the grants made so far in this batch."""

    def __init__(self, ledger: CapLedger) -> None:
        self._ledger = ledger
        self.new: list[float] = []

    def free_at(self, t: float) -> float:
        """Earliest time ``>= t`` at which every horizon has room (``t`` itself if it has room now)."""
        earliest = t
        for name, (window, cap) in self._ledger.limits.items():
            if cap == 0:
                return float("inf")
            old = self._ledger.grants.get(name, _EMPTY)
            in_window = (len(old) - int(np.searchsorted(old, t - window, side="right"))) + (
                len(self.new) - bisect_right(self.new, t - window)
            )
            if in_window >= cap:
                # the cap-th most recent grant must leave the window: free once t >= that time + window
                k = len(self.new) - cap
                kth = self.new[k] if k >= 0 else float(old[len(old) + k])
                # kth + window may round down to t itself: a full window must never report room at t
                earliest = max(earliest, kth + window, math.nextafter(t, math.inf))
        return earliest

    def grant(self, t: float) -> None:
        """Record a grant at ``t`` (not before the previous grant)."""
        self.new.append(t)
