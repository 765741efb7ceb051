"""Honest estimates from labeled decisions, each with a confidence interval.

Items are sent for labeling with a known inclusion probability ``pi_i`` (recorded with every decision), so
the labeled items are a probability sample of the stream and weighting each by ``1 / pi_i`` undoes the
selection: queries favour uncertain items, where the model is wrong more often, and an unweighted accuracy of
the labeled items would be far too low.

- :func:`wilson`: a proportion from a simple random sample (audits of auto-accepted items: every accepted
  item had the same audit probability), with the Wilson score interval (Wilson 1927), which keeps its
  coverage near 0 and 1 where the normal interval collapses.
- :func:`weighted_mean`: the Hajek estimator ``sum_i w_i y_i / sum_i w_i`` with ``w_i = 1 / pi_i`` over the
  labeled items (Horvitz & Thompson 1952; Hajek 1971), with the linearization variance for Poisson sampling
  (independent inclusion draws, as our per-item draws are):
  ``var = sum_i (1 - pi_i) w_i^2 (y_i - mean)^2 / (sum_i w_i)^2``, turned into a Wilson interval at the
  design's effective sample size (Korn & Graubard 1998), which stays honest with few labels.
  Accuracy is the weighted mean of ``correct``; the recall of class ``c`` is the weighted mean of ``correct``
  over the items whose label is ``c``; the defect rate is the weighted mean of ``label is a defect``.

Example:
    >>> import numpy as np
    >>> round(wilson(8, 10).low, 3), round(wilson(8, 10).high, 3)
    (0.49, 0.943)
    >>> e = weighted_mean(np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.5, 0.25]))
    >>> round(e.estimate, 4)
    0.7143
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.errors import SelectorError

Z_95 = 1.959963984540054
"""Standard normal quantile of a two-sided 95% interval."""


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


def wilson(successes: int, n: int, z: float = Z_95) -> Interval:
    """Wilson score interval of a binomial proportion."""
    if not 0 <= successes <= n:
        raise SelectorError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Interval.empty()
    p = successes / n
    low, high = _wilson_bounds(p, float(n), z)
    return Interval(p, low, high, n)


def _wilson_bounds(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson bounds of proportion ``p`` observed on an (effective, possibly fractional) sample of ``n``."""
    low, high = bounds(np.array([p]), np.array([n]), np.array([np.inf]), z)
    return float(low[0]), float(high[0])


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
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
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


@functools.lru_cache(maxsize=8)
def _t_table(z: float) -> FloatArray:
    """Student-t quantiles at the two-sided level of ``z``, for 1..64 degrees of freedom (bisection)."""
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    out = np.empty(_T_TABLE_DF)
    for i, df in enumerate(range(1, _T_TABLE_DF + 1)):
        lo, hi = z, 1e6
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if 0.5 * _betainc(df / 2.0, 0.5, df / (df + mid * mid)) > tail:
                lo = mid
            else:
                hi = mid
        out[i] = 0.5 * (lo + hi)
    return out


_T_TABLE_DF = 64


def t_quantile(df: FloatArray, z: float = Z_95) -> FloatArray:
    """The Student-t quantile with ``df`` degrees of freedom at the two-sided level of the normal ``z``:
    exact (tabulated) at whole ``df`` up to 64, linear in ``1 / df`` between, Cornish-Fisher beyond; ``inf``
    below one degree of freedom."""
    table = _t_table(float(z))
    df = np.asarray(df, dtype=np.float64)
    inv = 1.0 / np.maximum(df, 1.0)
    grid = 1.0 / np.arange(_T_TABLE_DF, 0, -1, dtype=np.float64)
    inside = np.interp(inv, grid, table[::-1])
    v = np.maximum(df, 1.0)
    z3, z5 = z**3, z**5
    beyond = z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v)
    out: FloatArray = np.where(df < 1.0, np.inf, np.where(df > _T_TABLE_DF, beyond, inside))
    return out


def bounds(
    p: FloatArray, n_eff: FloatArray, df: FloatArray, z: float = Z_95
) -> tuple[FloatArray, FloatArray]:
    """Wilson bounds of proportions ``p`` at effective sample sizes ``n_eff`` shrunk by Korn & Graubard's
    degrees-of-freedom factor ``(z / t_df)^2`` (``df = inf``: none); vectorized."""
    t = t_quantile(df, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(np.isinf(t), 0.0, n_eff * (z / t) ** 2)
        z2 = z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    empty = ~(n > 0)
    low = np.where(empty, 0.0, np.clip(np.minimum(p, centre - half), 0.0, 1.0))
    high = np.where(empty, 1.0, np.clip(np.maximum(p, centre + half), 0.0, 1.0))
    return low, high


def interval_from_variance(
    estimate: float, var: float, n: int, z: float = Z_95, n_items: float | None = None
) -> Interval:
    """An interval for a proportion ``estimate`` with variance ``var`` resting on ``n`` labels."""
    n_eff = estimate * (1 - estimate) / var if var > 0 else float(n_items or n)
    if n_items is not None:
        n_eff = min(n_eff, float(n_items))
    low, high = bounds(np.array([estimate]), np.array([n_eff]), np.array([max(n - 1.0, 0.0)]), z)
    return Interval(estimate, float(low[0]), float(high[0]), n)


def weighted_mean(y: FloatArray, pi: FloatArray, z: float = Z_95) -> Interval:
    """Inverse-probability-weighted (Hajek) proportion of ``y`` (0 or 1) over labeled items with inclusion
    ``pi``, with a Wilson interval at the design's effective sample size.

    Raises:
        SelectorError: if a ``pi`` is outside (0, 1] or the lengths differ.
    """
    if len(y) != len(pi):
        raise SelectorError(f"y and pi differ in length: {len(y)} != {len(pi)}")
    if len(y) == 0:
        return Interval.empty()
    if not ((pi > 0) & (pi <= 1)).all():
        raise SelectorError("inclusion probabilities must lie in (0, 1]")
    w = 1.0 / pi
    total = float(w.sum())
    mean = min(1.0, max(0.0, float(np.dot(w, y) / total)))
    var = float(np.sum(w * w * (y - mean) ** 2)) / (total * total)
    kish = total * total / float(np.dot(w, w))
    n_eff = min(kish, mean * (1 - mean) / var) if var > 0 else kish
    low, high = bounds(np.array([mean]), np.array([n_eff]), np.array([kish - 1.0]), z)
    return Interval(mean, float(low[0]), float(high[0]), len(y))


@dataclass(frozen=True)
class ModelEstimates:
    """The deployed model's quality, estimated from every labeled decision."""

    accuracy: Interval
    recall: dict[str, Interval]
    defect_rate: Interval
    precision: dict[str, Interval]


def model_estimates(
    label: IntArray,
    predicted: IntArray,
    pi: FloatArray,
    classes: list[str],
    defects: BoolArray,
    z: float = Z_95,
) -> ModelEstimates:
    """Accuracy, per-class recall and defect rate from labeled decisions.

    Args:
        label: the human label of each labeled item (class index).
        predicted: the model's predicted class for it.
        pi: its inclusion probability at decision time.
        classes: class names, for the recall keys.
        defects: which classes count as defects (per class).
    """
    correct = (label == predicted).astype(np.float64)
    recall = {name: weighted_mean(correct[label == c], pi[label == c], z) for c, name in enumerate(classes)}
    precision = {
        name: weighted_mean(correct[predicted == c], pi[predicted == c], z) for c, name in enumerate(classes)
    }
    return ModelEstimates(
        weighted_mean(correct, pi, z),
        recall,
        weighted_mean(defects[label].astype(np.float64), pi, z),
        precision,
    )


def confusion(label: IntArray, predicted: IntArray, pi: FloatArray, n_classes: int) -> FloatArray:
    """The IPW-estimated share of the stream in each cell ``[true, predicted]`` (C x C, summing to 1; zeros
    when nothing is labeled)."""
    if not (len(label) == len(predicted) == len(pi)):
        raise SelectorError(
            f"label, predicted and pi differ in length: {len(label)}, {len(predicted)}, {len(pi)}"
        )
    out = np.zeros((n_classes, n_classes))
    if len(label) == 0:
        return out
    if not ((pi > 0) & (pi <= 1)).all():
        raise SelectorError("inclusion probabilities must lie in (0, 1]")
    np.add.at(out, (label, predicted), 1.0 / pi)
    total: FloatArray = out / out.sum()
    return total
