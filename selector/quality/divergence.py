"""The prediction-powered minus the label-free accuracy, in standard errors: a concept-drift signal.

When the labels stop agreeing with the calibrated confidence, calibration no longer holds: the gap
``(1/N) sum_labeled (correct_i - p_pred,i) / pi_i`` between the two estimates of
:mod:`selector.quality.population` grows beyond its standard error (a concept drift the confidence cannot
see).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from selector.arrays import FloatArray, IntArray
from selector.quality.intervals import larger_per_class
from selector.quality.population import Labeled, Tally, check_scope


@dataclass(frozen=True)
class Divergence:
    """The prediction-powered minus the label-free accuracy."""

    gap: float
    """prediction-powered minus label-free accuracy"""
    se: float
    """its standard error (from the labeled residuals)"""
    sigmas: float
    """``gap / se``; NaN with fewer than ``min_labels`` labels"""
    labels: int


def divergence_arrays(
    n_items: FloatArray, label: IntArray, predicted: IntArray, probs: FloatArray, pi: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """:func:`divergence`'s gap and standard error on arrays (scopes along the leading axes, labeled items
    along the last)."""
    c = np.take_along_axis(probs, predicted[..., None], axis=-1)[..., 0]
    resid = (label == predicted) - c
    w = 1.0 / pi
    n = np.asarray(n_items, dtype=np.float64)
    safe_n = np.where(n > 0, n, 1.0)
    gap = (w * resid).sum(axis=-1) / safe_n
    var = larger_per_class((w * resid) ** 2, w * w * c * (1.0 - c), pi)
    return gap, np.sqrt(var) / safe_n


def divergence(tally: Tally, labeled: Labeled, min_labels: int = 30) -> Divergence:
    """Prediction-powered minus label-free accuracy, ``(1/N) sum_labeled (correct_i - p_pred,i) / pi_i``,
    in standard errors: a test of calibration on the labeled items.

    Under calibration each residual ``correct - p_pred`` has mean 0 and variance ``p_pred (1 - p_pred)``; the
    variance of the gap is taken per weight class (inclusion probabilities within a factor of two) as the
    larger of the observed squared residuals and that calibrated variance, so a class whose rare errors have
    not shown yet (audits of confident items) is not read as certain, and one rare error under calibration
    is not read as a drift. ``sigmas`` is NaN below ``min_labels`` labels (or with no spread at all).
    """
    c = tally.expected.shape[0]
    check_scope(tally, labeled, [str(k) for k in range(c)], np.zeros(c, dtype=bool))
    m = len(labeled.label)
    if tally.n == 0 or m == 0:
        return Divergence(0.0, math.nan, math.nan, m)
    gap, se = divergence_arrays(
        np.array(float(tally.n)), labeled.label, labeled.predicted, labeled.probs, labeled.pi
    )
    g, s = float(gap), float(se)
    return Divergence(g, s, g / s if m >= min_labels and s > 0 else math.nan, m)
