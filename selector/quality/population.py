"""Estimates from every decided item: label-free (calibrated confidence alone) and prediction-powered.

A :class:`Tally` sums, over every item the monitor decided in one scope, the calibrated probabilities by
predicted class; :class:`Labeled` holds the labeled items of the same scope with their inclusion
probabilities.

- :func:`label_free`: confidence-based performance estimation (CBPE): if the probabilities are calibrated,
  ``P(label = j | x) = p_j(x)``, so accuracy is ``trace(expected) / n``, the recall of ``j`` is
  ``expected[j, j] / expected[:, j].sum()``, the precision of ``k`` is ``expected[k, k] / expected[k].sum()``
  and the defect rate is ``expected[:, defects].sum() / n``. Available from the first item; right only as long
  as the calibration holds.
- :func:`prediction_powered`: prediction-powered inference with active sampling (Angelopoulos et al. 2023,
  "Prediction-powered inference"; Zrnic & Candes 2024, "Active statistical inference"): for a per-item
  outcome ``a`` with calibrated proxy ``c = E[a | x]``,
  ``A = (1/N) sum_all c_i + (1/N) sum_labeled (a_i - c_i) / pi_i``, unbiased whatever the calibration (the
  labeled residuals, weighted by ``1 / pi``, correct the proxy). A ratio ``A / B`` (recall, precision)
  takes both parts this way.
- :func:`divergence`: the prediction-powered minus the label-free accuracy, with its standard error: when the
  labels stop agreeing with the confidence, calibration no longer holds (a concept drift the confidence cannot
  see).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.errors import SelectorError
from selector.quality.estimates import Z_95, Interval, interval_from_variance


@dataclass(frozen=True)
class Tally:
    """Sums over every decided item (labeled or not) of one scope (window, model version, segment)."""

    n: int
    """decided items"""
    expected: FloatArray
    """(C, C): ``[k, j]`` = sum over items predicted ``k`` of the calibrated probability ``p_j``"""
    expected_sq: FloatArray
    """(C, C): ``[k, j]`` = sum over items predicted ``k`` of ``p_j ** 2``"""

    @classmethod
    def zeros(cls, n_classes: int) -> Tally:
        """Nothing decided yet."""
        return cls(0, np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes)))

    @classmethod
    def of_batch(cls, probs: FloatArray, predicted: IntArray) -> Tally:
        """The sums of a batch of calibrated probabilities ``(n, C)`` and the predicted class of each item."""
        if probs.ndim != 2 or len(probs) != len(predicted):
            raise SelectorError(
                f"need probs (n, C) and n predictions, got {probs.shape} and {len(predicted)}"
            )
        c = probs.shape[1]
        if len(predicted) and not ((predicted >= 0) & (predicted < c)).all():
            raise SelectorError(
                f"predicted classes must lie in [0, {c}): {predicted.min()}..{predicted.max()}"
            )
        expected = np.zeros((c, c))
        expected_sq = np.zeros((c, c))
        np.add.at(expected, predicted, probs)
        np.add.at(expected_sq, predicted, probs * probs)
        return cls(len(predicted), expected, expected_sq)

    def __add__(self, other: Tally) -> Tally:
        if self.expected.shape != other.expected.shape:
            raise SelectorError(
                f"cannot add tallies of {self.expected.shape} and {other.expected.shape} classes"
            )
        return Tally(self.n + other.n, self.expected + other.expected, self.expected_sq + other.expected_sq)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"n": self.n, "expected": self.expected.tolist(), "expected_sq": self.expected_sq.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tally:
        """Inverse of :meth:`to_dict`."""
        try:
            expected = np.asarray(d["expected"], dtype=np.float64)
            expected_sq = np.asarray(d["expected_sq"], dtype=np.float64)
            n = int(d["n"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SelectorError(f"not a tally: {exc}") from exc
        square = expected.ndim == 2 and expected.shape[0] == expected.shape[1]
        if not square or expected_sq.shape != expected.shape or n < 0:
            raise SelectorError(
                f"not a tally: n={n}, expected {expected.shape}, expected_sq {expected_sq.shape}"
            )
        return cls(n, expected, expected_sq)


@dataclass(frozen=True)
class Labeled:
    """The labeled items of the same scope."""

    label: IntArray
    """human label (class index)"""
    predicted: IntArray
    """the model's predicted class index when decided"""
    probs: FloatArray
    """(m, C) calibrated probabilities the model gave, same calibration as the Tally"""
    pi: FloatArray
    """inclusion probability logged with the decision"""


@dataclass(frozen=True)
class Estimates:
    """Accuracy, per-class recall and precision, defect rate."""

    accuracy: Interval
    recall: dict[str, Interval]
    precision: dict[str, Interval]
    defect_rate: Interval


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


@dataclass(frozen=True)
class _Ratios:
    """Every estimand as a ratio ``A / B`` of per-item outcome means: proxy totals over all items, and the
    outcomes and proxies of the labeled items (one column per estimand)."""

    names: list[str]
    proxy_a: FloatArray  # (Q,) sum over all items of the proxy of a
    proxy_b: FloatArray  # (Q,)
    a: FloatArray  # (m, Q) outcome of the labeled items
    b: FloatArray
    ca: FloatArray  # (m, Q) proxy of the labeled items
    cb: FloatArray


def _ratios(tally: Tally, labeled: Labeled | None, classes: Sequence[str], defects: BoolArray) -> _Ratios:
    c = len(classes)
    e = tally.expected
    if e.shape != (c, c) or len(defects) != c:
        raise SelectorError(f"a tally of {e.shape} for {c} classes and {len(defects)} defect flags")
    names = [
        "accuracy",
        *(f"recall:{x}" for x in classes),
        *(f"precision:{x}" for x in classes),
        "defect_rate",
    ]
    proxy_a = np.concatenate([[np.trace(e)], np.diag(e), np.diag(e), [e[:, defects].sum()]])
    proxy_b = np.concatenate([[float(tally.n)], e.sum(axis=0), e.sum(axis=1), [float(tally.n)]])
    if labeled is None:
        empty = np.zeros((0, len(names)))
        return _Ratios(names, proxy_a, proxy_b, empty, empty, empty, empty)
    m = len(labeled.label)
    lab, pred, p = labeled.label, labeled.predicted, labeled.probs
    onehot_label = np.eye(c)[lab] if m else np.zeros((0, c))
    onehot_pred = np.eye(c)[pred] if m else np.zeros((0, c))
    correct = (lab == pred).astype(np.float64)[:, None]
    hit = onehot_label * onehot_pred
    p_pred = p[np.arange(m), pred][:, None]
    ones = np.ones((m, 1))
    a = np.hstack([correct, hit, hit, onehot_label[:, defects].sum(axis=1, keepdims=True)])
    b = np.hstack([ones, onehot_label, onehot_pred, ones])
    ca = np.hstack([p_pred, p * onehot_pred, p * onehot_pred, p[:, defects].sum(axis=1, keepdims=True)])
    cb = np.hstack([ones, p, onehot_pred, ones])
    return _Ratios(names, proxy_a, proxy_b, a, b, ca, cb)


def _check_labeled(labeled: Labeled, n_classes: int) -> None:
    m = len(labeled.label)
    if not (len(labeled.predicted) == len(labeled.pi) == len(labeled.probs) == m):
        raise SelectorError(
            f"labeled arrays differ in length: label {m}, predicted {len(labeled.predicted)}, "
            f"probs {len(labeled.probs)}, pi {len(labeled.pi)}"
        )
    if m and labeled.probs.shape[1] != n_classes:
        raise SelectorError(f"labeled probs have {labeled.probs.shape[1]} classes, expected {n_classes}")
    if not ((labeled.pi > 0) & (labeled.pi <= 1)).all():
        raise SelectorError("inclusion probabilities must lie in (0, 1]")


def _assemble(names: list[str], intervals: list[Interval], classes: Sequence[str]) -> Estimates:
    by = dict(zip(names, intervals, strict=True))
    return Estimates(
        by["accuracy"],
        {x: by[f"recall:{x}"] for x in classes},
        {x: by[f"precision:{x}"] for x in classes},
        by["defect_rate"],
    )


def label_free(tally: Tally, classes: Sequence[str], defects: BoolArray, z: float = Z_95) -> Estimates:
    """CBPE estimates from calibrated confidence alone, with the sampling interval that holds if the
    calibration does (``Interval.n`` is the number of decided items behind each)."""
    r = _ratios(tally, None, classes, defects)
    n = float(tally.n)
    out = []
    for q in range(len(r.names)):
        a, b = r.proxy_a[q], r.proxy_b[q]
        if n == 0 or b <= 0:
            out.append(Interval(math.nan, 0.0, 1.0, tally.n))
            continue
        ratio = min(1.0, max(0.0, a / b))
        var = ((1 - ratio) ** 2 * a + ratio**2 * max(0.0, b - a)) / (b * b)
        out.append(interval_from_variance(ratio, var, tally.n, z, n_items=n))
    return _assemble(r.names, out, classes)


def prediction_powered(
    tally: Tally, labeled: Labeled, classes: Sequence[str], defects: BoolArray, z: float = Z_95
) -> Estimates:
    """Prediction-powered estimates: the label-free proxies over every decided item, corrected by the labeled
    residuals weighted by ``1 / pi`` (``Interval.n`` is the number of labels behind each)."""
    _check_labeled(labeled, len(classes))
    r = _ratios(tally, labeled, classes, defects)
    n = float(tally.n)
    w = 1.0 / labeled.pi
    out = []
    for q in range(len(r.names)):
        behind = int(np.count_nonzero(r.b[:, q] + r.cb[:, q] > 0))
        if n == 0:
            out.append(Interval(math.nan, 0.0, 1.0, 0))
            continue
        a = (r.proxy_a[q] + np.dot(w, r.a[:, q] - r.ca[:, q])) / n
        b = (r.proxy_b[q] + np.dot(w, r.b[:, q] - r.cb[:, q])) / n
        if b <= 0:
            out.append(Interval(math.nan, 0.0, 1.0, behind))
            continue
        ratio = min(1.0, max(0.0, a / b))
        resid = (r.a[:, q] - r.ca[:, q]) - ratio * (r.b[:, q] - r.cb[:, q])
        outcome = (1 - ratio) ** 2 * max(a, 0.0) + ratio**2 * max(0.0, b - a)
        sampling = float(np.sum((1 - labeled.pi) * w * w * resid * resid)) / n
        var = (outcome + sampling) / (n * b * b)
        out.append(interval_from_variance(ratio, var, behind, z, n_items=n))
    return _assemble(r.names, out, classes)


def divergence(tally: Tally, labeled: Labeled, min_labels: int = 30) -> Divergence:
    """Prediction-powered minus label-free accuracy: ``(1/N) sum_labeled (correct_i - p_pred,i) / pi_i``."""
    _check_labeled(labeled, tally.expected.shape[0])
    m = len(labeled.label)
    if tally.n == 0 or m == 0:
        return Divergence(0.0, math.nan, math.nan, m)
    n = float(tally.n)
    c = labeled.probs[np.arange(m), labeled.predicted]
    resid = (labeled.label == labeled.predicted) - c
    w = 1.0 / labeled.pi
    gap = float(np.dot(w, resid)) / n
    var = max(float(np.sum(w * w * resid * resid)), float(np.sum(w * w * c * (1 - c)))) / (n * n)
    se = math.sqrt(var)
    sigmas = gap / se if m >= min_labels and se > 0 else math.nan
    return Divergence(gap, se, sigmas, m)
