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
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def weighted_mean(y: FloatArray, pi: FloatArray, z: float = Z_95) -> Interval:
    """Inverse-probability-weighted (Hajek) proportion of ``y`` (0 or 1) over labeled items with inclusion
    ``pi``, with a Wilson interval at the design's effective sample size.

    The effective size is Korn & Graubard's ``p (1 - p) / var`` (the size of a simple random sample with the
    linearization variance ``var``), at most the number of labeled items; when every labeled item agrees
    (``p`` is 0 or 1, no variance to go by) it is Kish's ``(sum w)^2 / sum w^2``, how many items the weights
    rest on. The plain normal interval ``p +- z sqrt(var)`` collapses to a point in both cases; this one
    does not. Items seen with certainty (``pi = 1``) carry no sampling error: a census gives a point.

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
    mean = min(1.0, max(0.0, float(np.dot(w, y) / total)))  # rounding may step just past [0, 1]
    var = float(np.sum((1.0 - pi) * w * w * (y - mean) ** 2)) / (total * total)
    sampled = pi < 1.0
    if not sampled.any():
        return Interval(mean, mean, mean, len(y))  # a census: every item was seen
    if 0.0 < mean < 1.0:
        if var <= 0.0:  # the sampled items all equal the mean: only certain items vary
            return Interval(mean, mean, mean, len(y))
        n_eff = min(float(len(y)), mean * (1.0 - mean) / var)
    else:  # every labeled item agrees: no variance to go by, only how many items the weights rest on
        n_eff = total * total / float(np.dot(w, w))
    low, high = _wilson_bounds(mean, n_eff, z)
    return Interval(mean, low, high, len(y))


@dataclass(frozen=True)
class ModelEstimates:
    """The deployed model's quality, estimated from every labeled decision."""

    accuracy: Interval
    recall: dict[str, Interval]
    defect_rate: Interval


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
    return ModelEstimates(
        weighted_mean(correct, pi, z), recall, weighted_mean(defects[label].astype(np.float64), pi, z)
    )
