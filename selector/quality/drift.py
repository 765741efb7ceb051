"""Change detection on a stream of scores: the two-sided Page-Hinkley test.

We feed it the model's confidence (or informativeness) score of every decided item, or per-batch means; a
sustained shift of their mean says the input or the model changed, and is one of the retrain triggers.

The Page-Hinkley test (Page 1954; Hinkley 1971) is a CUSUM against the running mean. After item ``t`` since
the last reset, with ``mean_t`` the mean of ``x_1 .. x_t`` and ``delta`` the magnitude of change to tolerate:

- **up**: ``U_t = sum_{i<=t} (x_i - mean_i - delta)``, ``U_min_t = min(0, U_1 .. U_t)``; an upward shift
  makes ``U_t`` climb away from its minimum, and the test alarms when ``U_t - U_min_t > threshold``.
- **down**: ``D_t = sum_{i<=t} (x_i - mean_i + delta)``, ``D_max_t = max(0, D_1 .. D_t)``; it alarms on a
  downward shift when ``D_max_t - D_t > threshold``.

No alarm is raised before ``min_items`` items since the last reset (the mean is still rough). On an alarm
the detector **resets** to a fresh state and goes on from the next item, so it learns the new level and can
detect the next change. When both sides cross on the same item, the larger excursion names the direction.

Batches are processed with numpy accumulations that add left to right, exactly as one item at a time would,
so any cut of a stream into batches gives bit-identical states and the same alarm positions. The state
keeps the running *sum* (not the mean) for the same reason; :attr:`PageHinkleyState.mean` derives the mean.

The default ``threshold`` of 50 (with ``delta = 0.005``, river's defaults) suits per-item scores in [0, 1]:
a CUSUM's mean run length to a false alarm is about ``s^2 / (2 delta^2) * (e^a - 1 - a)`` with
``a = 2 delta threshold / s^2`` (Siegmund 1985), over 10^8 items for a score spread ``s = 0.2`` and about
5 * 10^5 even for ``s = 0.3`` (uniform scores), while a shift of 0.2 after a long stable stretch is found
within about ``threshold / (0.2 - delta)`` ~ 260-300 items. Per-batch means have a much smaller spread and
can use a much smaller threshold for faster detection.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0.5, 0.05, 1000), rng.normal(0.3, 0.05, 1000)])
    >>> state, at, direction = PageHinkley().update(PageHinkleyState(), x)
    >>> direction, 1000 < at < 1400, state.n == len(x) - at - 1
    ('down', True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from selector.arrays import FloatArray
from selector.errors import SelectorError

Direction = Literal["up", "down"]

_STATE_KEYS = ("n", "total", "up", "up_min", "down", "down_max")


@dataclass(frozen=True)
class PageHinkleyState:
    """The test's state since the last reset (a fresh state is all zeros).

    Attributes:
        n: items seen since the last reset.
        total: their sum (the running mean is ``total / n``; kept as a sum so batching is exact).
        up: ``U_n = sum (x_i - mean_i - delta)``, the statistic of an upward shift.
        up_min: its running minimum, starting at 0.
        down: ``D_n = sum (x_i - mean_i + delta)``, the statistic of a downward shift.
        down_max: its running maximum, starting at 0.
    """

    n: int = 0
    total: float = 0.0
    up: float = 0.0
    up_min: float = 0.0
    down: float = 0.0
    down_max: float = 0.0

    @property
    def mean(self) -> float:
        """Running mean of the items since the last reset; NaN before the first."""
        return self.total / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain-data snapshot (JSON-able ints and floats)."""
        return {key: getattr(self, key) for key in _STATE_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PageHinkleyState:
        """Restore a :meth:`to_dict` snapshot.

        Raises:
            SelectorError: if a key is missing or a value is not a number.
        """
        missing = [key for key in _STATE_KEYS if key not in d]
        if missing:
            raise SelectorError(f"Page-Hinkley state is missing {missing}: {d!r}")
        try:
            state = cls(int(d["n"]), *(float(d[key]) for key in _STATE_KEYS[1:]))
        except (TypeError, ValueError) as exc:
            raise SelectorError(f"Page-Hinkley state has a non-numeric value: {d!r}") from exc
        if state.n < 0:
            raise SelectorError(f"Page-Hinkley state 'n' must be >= 0: {state.n}")
        return state


@dataclass(frozen=True)
class PageHinkley:
    """Two-sided Page-Hinkley change detector (parameters only; the state is passed in and returned).

    Attributes:
        delta: magnitude of change tolerated without alarm, >= 0 (in the units of the scores).
        threshold: ``lambda``, the excursion of either statistic that raises an alarm, > 0.
        min_items: no alarm before this many items since the last reset, >= 1.
    """

    delta: float = 0.005
    threshold: float = 50.0
    min_items: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise SelectorError(f"'delta' must be a finite number >= 0: {self.delta!r}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise SelectorError(f"'threshold' must be a finite number > 0: {self.threshold!r}")
        if isinstance(self.min_items, bool) or not isinstance(self.min_items, int) or self.min_items < 1:
            raise SelectorError(f"'min_items' must be an integer >= 1: {self.min_items!r}")

    def update(
        self, state: PageHinkleyState, x: FloatArray
    ) -> tuple[PageHinkleyState, int | None, Direction | None]:
        """Process a batch of scores.

        Returns:
            The state after the batch, the index in ``x`` of the batch's first alarm and its direction
            (``"up"`` or ``"down"``), or None and None without alarm. After an alarm the detector restarts
            from a fresh state with the next item; further alarms in the same batch reset it again (see
            :meth:`alarms` to have all of them).

        Raises:
            SelectorError: if ``x`` is not one-dimensional or holds a non-finite value.
        """
        state, found = self.alarms(state, x)
        if not found:
            return state, None, None
        return state, found[0][0], found[0][1]

    def alarms(
        self, state: PageHinkleyState, x: FloatArray
    ) -> tuple[PageHinkleyState, list[tuple[int, Direction]]]:
        """Process a batch of scores and return the state after it and every alarm ``(index in x,
        direction)`` in it, in order (the detector resets after each).

        Raises:
            SelectorError: if ``x`` is not one-dimensional or holds a non-finite value.
        """
        values = np.asarray(x, dtype=np.float64)
        if values.ndim != 1:
            raise SelectorError(f"'x' must be one-dimensional: shape {values.shape}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise SelectorError(f"'x' must be finite: x[{int(bad[0])}] = {float(values[bad[0]])!r}")
        found: list[tuple[int, Direction]] = []
        start = 0
        while start < len(values):
            state, hit = self._scan(state, values[start:])
            if hit is None:
                break
            found.append((start + hit[0], hit[1]))
            start += hit[0] + 1
        return state, found

    def _scan(
        self, state: PageHinkleyState, x: FloatArray
    ) -> tuple[PageHinkleyState, tuple[int, Direction] | None]:
        """Run the statistics over ``x`` without reset: the state after ``x`` and no alarm, or a fresh state
        and the first alarm."""
        # accumulate adds strictly left to right, seeded with the state's values: exactly the additions a
        # one-item-at-a-time run performs, whatever the batch cuts
        n = state.n + np.arange(1, len(x) + 1, dtype=np.float64)
        total = np.add.accumulate(np.concatenate(([state.total], x)))[1:]
        centred = x - total / n
        up = np.add.accumulate(np.concatenate(([state.up], centred - self.delta)))[1:]
        down = np.add.accumulate(np.concatenate(([state.down], centred + self.delta)))[1:]
        up_min = np.minimum.accumulate(np.concatenate(([state.up_min], up)))[1:]
        down_max = np.maximum.accumulate(np.concatenate(([state.down_max], down)))[1:]
        rise = up - up_min
        fall = down_max - down
        crossed = np.flatnonzero((n >= self.min_items) & ((rise > self.threshold) | (fall > self.threshold)))
        if crossed.size:
            i = int(crossed[0])
            return PageHinkleyState(), (i, "up" if rise[i] >= fall[i] else "down")
        return (
            PageHinkleyState(
                state.n + len(x),
                float(total[-1]),
                float(up[-1]),
                float(up_min[-1]),
                float(down[-1]),
                float(down_max[-1]),
            ),
            None,
        )
