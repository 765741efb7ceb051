"""Confidence bounds of a proportion from an effective sample size, vectorized.

Every estimate in :mod:`selector.quality` ends here: a proportion ``p`` with an effective sample size
``n_eff`` (how many simple-random-sample items its variance is worth) and the degrees of freedom ``df`` that
variance rests on. The bounds are the continuity-corrected Wilson score interval (Newcombe 1998, method 4) at
Korn & Graubard's (1998) degrees-of-freedom-adjusted effective size ``n* = n_eff (z / t_df)^2``:

- Wilson's score interval keeps its width near 0 and 1 where the normal interval collapses to a point, and
  the continuity correction lifts its coverage to the exact (Clopper-Pearson) interval's: over n = 1..500 and
  p in {0.001, 0.01, 0.05, 0.2, 0.5} its exact binomial coverage never falls below 94.9% at z = 1.96 (plain
  Wilson dips to 80%, Brown, Cai & DasGupta 2001). It is closed-form, so it runs on whole arrays.
- A variance estimated from few items is itself uncertain; the ``t`` quantile with ``df`` degrees of freedom
  instead of ``z`` widens the interval as the t interval would (``df < 1``: the whole unit interval).
- A variance estimated from the labels cannot see errors too rare to have shown yet (a drift among
  confident items, seen only through audits at 0.2%). :func:`pseudo_error_floor` assumes every weight class
  of labeled items (inclusion probabilities within a factor of two) hides at least :data:`PSEUDO_ERRORS`
  errors beyond those its labels showed, and :func:`widen` adds their reach (:func:`hidden_reach`) to the
  bounds in quadrature: the "rule of three" per class.

Example:
    >>> import numpy as np
    >>> low, high = bounds(np.array([0.8]), np.array([10.0]), np.array([np.inf]))
    >>> round(float(low[0]), 3), round(float(high[0]), 3)
    (0.442, 0.965)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray

Z_95 = 1.959963984540054
"""Standard normal quantile of a two-sided 95% interval."""

_T_TABLE_DF = 64


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval and the number of labeled items behind it."""

    estimate: float
    low: float
    high: float
    n: int

    @classmethod
    def empty(cls) -> Interval:
        """Nothing labeled yet: no estimate (NaN), the whole unit interval."""
        return cls(math.nan, 0.0, 1.0, 0)


@dataclass(frozen=True)
class Bands:
    """Estimates with their bounds, element by element (any shape), and the labels behind each."""

    estimate: FloatArray
    low: FloatArray
    high: FloatArray
    n: IntArray

    def at(self, i: int | tuple[int, ...]) -> Interval:
        """One element as an :class:`Interval`."""
        return Interval(float(self.estimate[i]), float(self.low[i]), float(self.high[i]), int(self.n[i]))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


@functools.lru_cache(maxsize=8)
def _t_table(z: float) -> FloatArray:
    """Student-t quantiles at the two-sided level of ``z`` for 1..64 degrees of freedom, by bisection on
    ``P(T > t) = I_{df / (df + t^2)}(df / 2, 1 / 2) / 2``."""
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    out = np.empty(_T_TABLE_DF)
    for i in range(_T_TABLE_DF):
        df = i + 1.0
        lo, hi = z, 1e6
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if 0.5 * _betainc(df / 2.0, 0.5, df / (df + mid * mid)) > tail else (lo, mid)
        out[i] = 0.5 * (lo + hi)
    return out


def t_quantile(df: FloatArray, z: float = Z_95) -> FloatArray:
    """The Student-t quantile with ``df`` degrees of freedom at the two-sided level of the normal quantile
    ``z``: exact at whole ``df`` up to 64 (linear in ``1 / df`` between), the Cornish-Fisher expansion beyond,
    ``inf`` below one degree of freedom."""
    table = _t_table(float(z))
    df = np.asarray(df, dtype=np.float64)
    v = np.maximum(df, 1.0)
    grid = 1.0 / np.arange(_T_TABLE_DF, 0, -1, dtype=np.float64)
    inside = np.interp(1.0 / v, grid, table[::-1])
    z3, z5 = z**3, z**5
    beyond = z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v)
    out: FloatArray = np.where(df < 1.0, np.inf, np.where(df > _T_TABLE_DF, beyond, inside))
    return out


def bounds(
    p: FloatArray, n_eff: FloatArray, df: FloatArray, z: float = Z_95
) -> tuple[FloatArray, FloatArray]:
    """Continuity-corrected Wilson bounds of proportions ``p`` at effective sizes ``n_eff`` with ``df``
    degrees of freedom (``inf``: a known variance); ``low <= p <= high`` and ``low < high`` always."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    t = t_quantile(np.asarray(df, dtype=np.float64), z)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.where(np.isfinite(t), np.asarray(n_eff, dtype=np.float64) * (z / t) ** 2, 0.0)
        n = np.where(np.isfinite(n) & (n > 0), n, 0.0)
        z2, q = z * z, 1.0 - p
        lo_arg = z2 - 2.0 - 1.0 / n + 4.0 * p * (n * q + 1.0)
        hi_arg = z2 + 2.0 - 1.0 / n + 4.0 * p * (n * q - 1.0)
        low = (2 * n * p + z2 - 1.0 - z * np.sqrt(np.maximum(lo_arg, 0.0))) / (2 * (n + z2))
        high = (2 * n * p + z2 + 1.0 + z * np.sqrt(np.maximum(hi_arg, 0.0))) / (2 * (n + z2))
    # below one effective item, or where the corrected score equation has no root, the bound is the edge
    known = n >= 1.0
    with np.errstate(divide="ignore", over="ignore"):
        half_step = 0.5 / n
    low = np.where(
        known & (p > half_step) & (lo_arg >= 0), np.clip(np.nan_to_num(low, nan=0.0), 0.0, 1.0), 0.0
    )
    high = np.where(
        known & (p < 1.0 - half_step) & (hi_arg >= 0), np.clip(np.nan_to_num(high, nan=1.0), 0.0, 1.0), 1.0
    )
    return np.minimum(low, p), np.maximum(high, p)


def effective_size(w: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of weights ``w`` along the last axis (0: absent),
    and the degrees of freedom of a variance estimated from them, ``kish - 1``. Even equal weights lose
    one: equal inclusion probabilities among the labeled items say nothing of the unlabeled ones."""
    total, sq = w.sum(axis=-1), (w * w).sum(axis=-1)
    kish: FloatArray = np.where(sq > 0, total * total / np.where(sq > 0, sq, 1.0), 0.0)
    return kish, kish - 1.0


def widen(
    p: FloatArray, low: FloatArray, high: FloatArray, reach_low: FloatArray, reach_high: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Bounds ``low``, ``high`` of ``p`` widened in quadrature by how far unseen errors could reach on each
    side, within [0, 1]."""
    wide_low = p - np.sqrt((p - low) ** 2 + reach_low**2)
    wide_high = p + np.sqrt((high - p) ** 2 + reach_high**2)
    return np.clip(wide_low, 0.0, low), np.clip(wide_high, high, 1.0)


def hidden_reach(
    p: FloatArray, den: FloatArray, hidden: FloatArray, member: BoolArray
) -> tuple[FloatArray, FloatArray]:
    """How far ``hidden`` items of unknown outcome (in the units of ``den``) can move a ratio
    ``p = num / den``, down and up. Where they may be members of the denominator (``member``: a class's
    items hide among any labeled item, for a recall), ``h`` of them move it to ``num / (den + h)`` or
    ``(num + h) / (den + h)``; elsewhere they change the outcome only: ``h / den``."""
    h = np.minimum(np.nan_to_num(hidden, nan=0.0), 1e300)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where((den > 0) & (h > 0), np.minimum(h / np.where(member, den + h, den), 1.0), 0.0)
    low: FloatArray = np.where(member, p * share, share)
    high: FloatArray = np.where(member, (1.0 - p) * share, share)
    return low, high


def floor_reach(floor: FloatArray, df: FloatArray, z: float = Z_95) -> FloatArray:
    """The items a pseudo-error ``floor`` (counts squared) stands for at the bounds: ``t_df sqrt(floor)``."""
    with np.errstate(invalid="ignore", over="ignore"):
        out: FloatArray = np.where(floor > 0, t_quantile(df, z) * np.sqrt(floor), 0.0)
    return out


PSEUDO_ERRORS = 3.54
"""Errors each weight class of labeled items is assumed to hide at least: ``(ln(1 / 0.025) / 1.96)^2``.

A class of ``m`` labeled items of weight ``w`` stands for ``m w`` items of the stream. If its labels all
agreed, the exact one-sided 97.5% bound on its error rate is ``1 - 0.025^(1/m) ~ 3.69 / m`` (the "rule of
three" at 97.5%): ``3.69 w`` items in all, the reach of a normal bound with variance ``3.54 w^2``. So a drift
the labels have not caught yet (a rare error among heavily weighted audits) stays inside the interval."""


def weight_class(pi: FloatArray) -> FloatArray:
    """Labeled items grouped by inclusion probability within a factor of two: ``floor(-log2 pi)``."""
    out: FloatArray = np.floor(-np.log2(pi))
    return out


def larger_per_class(first: FloatArray, second: FloatArray, pi: FloatArray) -> FloatArray:
    """Sum over weight classes of the larger of the class's sums of ``first`` and ``second`` (last axis)."""
    cls = weight_class(pi) + np.zeros(first.shape)
    out = np.zeros(first.shape[:-1])
    for h in np.unique(cls):
        in_h = cls == h
        out += np.maximum(np.where(in_h, first, 0.0).sum(axis=-1), np.where(in_h, second, 0.0).sum(axis=-1))
    return out


def pseudo_error_floor(u: FloatArray, pi: FloatArray, seen: FloatArray) -> FloatArray:
    """What the pseudo-errors add beyond what the labels showed, along the last axis: per weight class,
    ``PSEUDO_ERRORS * max u`` less the class's ``sum seen``, if positive, summed. ``u`` is each labeled item's
    squared weight (0 where it cannot hide an error), ``seen`` its squared weighted residual."""
    cls = weight_class(pi) + np.zeros(u.shape)
    floor = np.zeros(u.shape[:-1])
    for h in np.unique(cls[u > 0]):
        in_h = cls == h
        top = PSEUDO_ERRORS * np.where(in_h, u, 0.0).max(axis=-1)
        floor += np.maximum(top - np.where(in_h, seen, 0.0).sum(axis=-1), 0.0)
    return floor
