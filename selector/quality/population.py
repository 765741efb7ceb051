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
  takes both parts this way. Proxies: accuracy ``p_pred``; recall of ``j`` ``p_j 1[pred = j]`` over
  ``p_j``; precision of ``k`` ``p_k 1[pred = k]`` over ``1[pred = k]`` (known for every item); defect rate
  the summed probability of the defect classes.
- their divergence (:mod:`selector.quality.divergence`): the prediction-powered minus the label-free accuracy,
  with its standard error: when the labels stop agreeing with the confidence, calibration no longer holds (a
  concept drift the confidence cannot see).

**Intervals.** The variance of a ratio ``R = A / B`` is linearized (delta method) over the stream as a
superpopulation: ``var = [E(a - R b)^2 + (1/N) sum_labeled (1 - pi) w^2 r^2] / (N B^2)``, the first term the
outcome's own spread (``(1 - R)^2 A + R^2 (B - A)`` for 0/1 outcomes with ``a <= b``), the second the labels'
(``r = (a - c_a) - R (b - c_b)``). Per weight class of labels (``pi`` within a factor of two) the squared
residuals count, or calibration's variance ``Var(a - R b | x)`` if larger: a class of audits that has not
shown its rare errors yet is not read as certain. The bounds are the corrected Wilson interval at the
effective size ``R (1 - R) / var`` (at most the items the denominator counts) with Kish's degrees of freedom
of the labels' weights less one (:mod:`selector.quality.intervals`), widened by the pseudo-errors each weight
class may hide beyond what it showed, and by the decided items no label stands for yet: the labels' weights
``sum 1 / pi`` add up to the decided items within their sampling error when every part of the stream could be
labeled, and what falls short beyond ``z`` standard errors (the first labels, all queries, before any audit of
the confident bulk) is of unknown outcome, bounding the interval as far as it could move it (Manski 2003,
partial identification). This is what keeps them honest after a drift the confidence cannot see (>= 96%
coverage at every n from 1 to 500 in ``bench/estimates.py``, drifts of 1% to 30% of the confident items).
With no label (or one) nothing corrects the confidence: the point is the label-free one and the interval is
the whole [0, 1]. The label-free interval is
the outcome's spread alone, ``R (1 - R)`` per item at the effective size (the Poisson-binomial variance of the
realized value plus the spread of the confidences): it holds only while the calibration does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.errors import SelectorError
from selector.quality.estimates import Interval, check_decisions, model_bands
from selector.quality.intervals import (
    Z_95,
    Bands,
    bounds,
    effective_size,
    floor_reach,
    hidden_reach,
    larger_per_class,
    pseudo_error_floor,
    widen,
)


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
        if len(probs) and not (np.isfinite(probs).all() and (probs >= 0).all()):
            raise SelectorError("probs must be finite and non-negative")
        if len(probs) and np.abs(probs.sum(axis=1) - 1.0).max() > 1e-4:
            raise SelectorError(
                f"probs rows must sum to 1: {probs.sum(axis=1).min()}..{probs.sum(axis=1).max()}"
            )
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


def _proxies(n_items: FloatArray, expected: FloatArray, defects: BoolArray) -> tuple[FloatArray, FloatArray]:
    """Sums over every decided item of the proxies of each estimand's numerator and denominator: (..., Q)
    in the order accuracy, recall of each class, precision of each class, defect rate."""
    diag = np.diagonal(expected, axis1=-2, axis2=-1)
    trace = diag.sum(axis=-1, keepdims=True)
    defect = expected[..., defects].sum(axis=(-2, -1))[..., None]
    n = np.asarray(n_items, dtype=np.float64)[..., None]
    proxy_a = np.concatenate([trace, diag, diag, defect], axis=-1)
    proxy_b = np.concatenate([n, expected.sum(axis=-2), expected.sum(axis=-1), n], axis=-1)
    return proxy_a, proxy_b


def _outcomes(
    label: IntArray, predicted: IntArray, probs: FloatArray, defects: BoolArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Each labeled item's numerator and denominator outcome (``a``, ``b``) of every estimand and their
    proxies (``ca``, ``cb``): (..., Q, m)."""
    c = probs.shape[-1]
    onehot = np.eye(c, dtype=np.float64)
    is_label = np.moveaxis(onehot[label], -1, -2)  # (..., C, m)
    is_pred = np.moveaxis(onehot[predicted], -1, -2)
    p = np.moveaxis(probs, -1, -2)
    correct = (label == predicted).astype(np.float64)[..., None, :]
    hit = is_label * is_pred
    ones = np.ones_like(correct)
    p_pred = (p * is_pred).sum(axis=-2, keepdims=True)
    a = np.concatenate([correct, hit, hit, is_label[..., defects, :].sum(axis=-2, keepdims=True)], axis=-2)
    b = np.concatenate([ones, is_label, is_pred, ones], axis=-2)
    ca = np.concatenate(
        [p_pred, p * is_pred, p * is_pred, p[..., defects, :].sum(axis=-2, keepdims=True)], -2
    )
    cb = np.concatenate([ones, p, is_pred, ones], axis=-2)
    return a, b, ca, cb


def _ratio_bands(
    num: FloatArray,
    den: FloatArray,
    sampling: FloatArray,
    n_items: FloatArray,
    df: FloatArray,
    n: IntArray,
    z: float,
    floor: FloatArray | None = None,
    member: BoolArray | None = None,
    unseen: FloatArray | None = None,
) -> Bands:
    """``num / den`` (per-item means) clipped to [0, 1] with the bounds of its linearized variance:
    ``sampling`` is the labels' part of the variance of ``num - ratio den`` per item (beyond the outcome's
    own), ``n_items`` the decided items, ``df`` the degrees of freedom of the variance; ``floor``: the
    pseudo-error floor (counts squared), of items that may be members of the denominator where ``member``;
    ``unseen``: the share of the items no label stands for, of unknown outcome."""
    some = (den > 0) & (n_items > 0)
    safe_den = np.where(some, den, 1.0)
    ratio = np.clip(num / safe_den, 0.0, 1.0)
    outcome = (1 - ratio) ** 2 * np.clip(num, 0.0, None) + ratio**2 * np.clip(den - num, 0.0, None)
    items = np.where(some, n_items, 1.0)
    var = (outcome + sampling) / (items * safe_den * safe_den)
    behind = items * np.clip(safe_den, 0.0, 1.0)  # the items the denominator counts
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(var > 0, np.minimum(behind, ratio * (1 - ratio) / var), behind)
    df = np.where(some, df, -1.0)
    low, high = bounds(ratio, n_eff, df, z)
    if floor is not None:
        hidden = floor_reach(floor, df, z) / items + (0.0 if unseen is None else unseen)
        joins: BoolArray = np.zeros(ratio.shape, bool) if member is None else member
        low, high = widen(ratio, low, high, *hidden_reach(ratio, np.where(some, den, 0.0), hidden, joins))
    return Bands(np.where(some, ratio, np.nan), low, high, n)


def label_free_bands(n_items: FloatArray, expected: FloatArray, defects: BoolArray, z: float = Z_95) -> Bands:
    """:func:`label_free` on arrays: scopes along the leading axes, estimands along the last."""
    proxy_a, proxy_b = _proxies(n_items, expected, defects)
    n = np.asarray(n_items, dtype=np.float64)[..., None]
    items = np.broadcast_to(n, proxy_a.shape)
    safe_n = np.where(n > 0, n, 1.0)
    unknown = np.full(proxy_a.shape, np.inf)
    return _ratio_bands(
        proxy_a / safe_n, proxy_b / safe_n, np.zeros(proxy_a.shape), items, unknown, items.astype(np.int64), z
    )


def prediction_powered_bands(
    n_items: FloatArray,
    expected: FloatArray,
    label: IntArray,
    predicted: IntArray,
    probs: FloatArray,
    pi: FloatArray,
    defects: BoolArray,
    z: float = Z_95,
) -> Bands:
    """:func:`prediction_powered` on arrays: scopes along the leading axes (labeled items along the last axis
    of ``label``, ``predicted``, ``pi``, the one before last of ``probs``), estimands along the last."""
    proxy_a, proxy_b = _proxies(n_items, expected, defects)
    a, b, ca, cb = _outcomes(label, predicted, probs, defects)
    n = np.asarray(n_items, dtype=np.float64)[..., None]
    safe_n = np.where(n > 0, n, 1.0)
    pi_ = pi[..., None, :]
    w = 1.0 / pi_
    num = (proxy_a + (w * (a - ca)).sum(axis=-1)) / safe_n
    den = (proxy_b + (w * (b - cb)).sum(axis=-1)) / safe_n
    ratio = np.clip(num / np.where(den > 0, den, 1.0), 0.0, 1.0)[..., None]
    unsure = (cb > 0) & (cb < 1) | (ca > 0) & (ca < 1)  # items whose outcome the proxy does not settle
    u = np.where(unsure, (1.0 - pi_) * w * w, 0.0)
    observed = u * ((a - ca) - ratio * (b - cb)) ** 2
    model = u * np.clip((1 - ratio) ** 2 * ca + ratio**2 * (cb - ca) - (ca - ratio * cb) ** 2, 0.0, None)
    # each weight class: its observed squared residuals, or calibration's variance if larger (rare errors)
    sampling = larger_per_class(observed, model, np.broadcast_to(pi_, u.shape))
    floor = pseudo_error_floor(u, np.broadcast_to(pi_, u.shape), observed)
    wu = np.where(unsure, w, 0.0)
    _, df = effective_size(wu)
    behind = np.count_nonzero((a + b) > 0, axis=-1)
    items = np.broadcast_to(n, num.shape)
    recall = np.zeros(num.shape, bool)
    recall[..., 1 : 1 + probs.shape[-1]] = True  # a class's members hide among every labeled item
    unseen = np.broadcast_to(unrepresented(n[..., 0], pi, z)[..., None], num.shape)
    return _ratio_bands(num, den, sampling / safe_n, items, df, behind, z, floor, recall, unseen)


def unrepresented(n_items: FloatArray, pi: FloatArray, z: float = Z_95) -> FloatArray:
    """The share of the decided items no label stands for yet. The labels' weights ``1 / pi`` add up to the
    decided items, within sampling error, when every part of the stream could be labeled; what is missing
    beyond ``z`` standard errors (the first labels, all queries, before any audit of the confident bulk) is a
    part of the stream of unknown outcome. Labeled items along the last axis of ``pi``."""
    w = 1.0 / pi
    n = np.asarray(n_items, dtype=np.float64)
    missing = n - w.sum(axis=-1) - z * np.sqrt(((1.0 - pi) * w * w).sum(axis=-1))
    out: FloatArray = np.clip(missing, 0.0, None) / np.where(n > 0, n, 1.0)
    return out


def labels_only_bands(
    n_items: FloatArray,
    label: IntArray,
    predicted: IntArray,
    pi: FloatArray,
    n_classes: int,
    defects: BoolArray,
    z: float = Z_95,
) -> Bands:
    """:func:`selector.quality.estimates.model_bands` (the labels alone, weighted by ``1 / pi``) when the
    decided items are counted too: each interval also spans what the part of the stream no label stands for
    yet (:func:`unrepresented`) could make of it (Manski's bounds), as :func:`prediction_powered_bands` does.
    A class's items may hide in that part, so a recall or a precision widens as a ratio whose denominator
    may grow."""
    bands = model_bands(label, predicted, pi, n_classes, defects, z)
    u = unrepresented(n_items, pi, z)
    n = np.asarray(n_items, dtype=np.float64)
    onehot = np.eye(n_classes, dtype=np.float64)
    w = 1.0 / pi
    per_class = [np.einsum("...m,...mc->...c", w, onehot[x]) for x in (label, predicted)]
    ones = np.ones((*u.shape, 1))
    den = np.concatenate([ones, *(c / np.where(n > 0, n, 1.0)[..., None] for c in per_class), ones], axis=-1)
    member = np.zeros(den.shape, bool)
    member[..., 1 : 1 + 2 * n_classes] = True
    p = np.nan_to_num(bands.estimate, nan=0.5)
    low, high = widen(p, bands.low, bands.high, *hidden_reach(p, den, u[..., None] * ones, member))
    return Bands(bands.estimate, low, high, bands.n)


def labels_only(
    tally: Tally, labeled: Labeled, classes: Sequence[str], defects: BoolArray, z: float = Z_95
) -> Estimates:
    """The labels' own (IPW) estimates, their intervals spanning the decided items no label stands for yet
    (:func:`labels_only_bands`; ``Interval.n`` is the number of labels behind each)."""
    check_scope(tally, labeled, classes, defects)
    bands = labels_only_bands(
        np.array(float(tally.n)), labeled.label, labeled.predicted, labeled.pi, len(classes), defects, z
    )
    return _estimates(bands, classes)


def _estimates(bands: Bands, classes: Sequence[str]) -> Estimates:
    c = len(classes)
    return Estimates(
        bands.at(0),
        {x: bands.at(1 + k) for k, x in enumerate(classes)},
        {x: bands.at(1 + c + k) for k, x in enumerate(classes)},
        bands.at(1 + 2 * c),
    )


def check_scope(tally: Tally, labeled: Labeled | None, classes: Sequence[str], defects: BoolArray) -> None:
    c = len(classes)
    if tally.expected.shape != (c, c) or len(defects) != c:
        raise SelectorError(
            f"a tally of {tally.expected.shape} for {c} classes and {len(defects)} defect flags"
        )
    if labeled is None:
        return
    check_decisions(labeled.label, labeled.predicted, labeled.pi, c)
    if labeled.probs.ndim != 2 or labeled.probs.shape != (len(labeled.label), c):
        raise SelectorError(f"labeled probs must be ({len(labeled.label)}, {c}), got {labeled.probs.shape}")


def label_free(tally: Tally, classes: Sequence[str], defects: BoolArray, z: float = Z_95) -> Estimates:
    """CBPE estimates from calibrated confidence alone, with the sampling interval that holds if the
    calibration does (``Interval.n`` is the number of decided items behind each)."""
    check_scope(tally, None, classes, defects)
    return _estimates(label_free_bands(np.array(float(tally.n)), tally.expected, defects, z), classes)


def prediction_powered(
    tally: Tally, labeled: Labeled, classes: Sequence[str], defects: BoolArray, z: float = Z_95
) -> Estimates:
    """Prediction-powered estimates: the label-free proxies over every decided item, corrected by the labeled
    residuals weighted by ``1 / pi`` (``Interval.n`` is the number of labels behind each)."""
    check_scope(tally, labeled, classes, defects)
    bands = prediction_powered_bands(
        np.array(float(tally.n)),
        tally.expected,
        labeled.label,
        labeled.predicted,
        labeled.probs,
        labeled.pi,
        defects,
        z,
    )
    return _estimates(bands, classes)
