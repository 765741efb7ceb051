"""Judging models on labeled samples of the stream: importance-weighted metrics and a stable holdout split.

A labeled item ``i`` carries the weight ``w_i = 1 / pi_i`` (its inclusion probability ``pi_i``), so a
weighted count over the labeled items estimates the same count over the stream (Horvitz & Thompson 1952):
:func:`weighted_accuracy` and :func:`weighted_macro_f1` score a model on the stream it serves, not on the
uncertain items that were queried. :func:`holdout_mask` splits items by a hash of their id, so an item is
held out forever: no model is judged on items it, or its parent, was trained on.

The promotion gate (:func:`promotion_gate`) compares a candidate with the current model *paired*, on the same
held-out labels: the interval of their macro-F1 difference (:func:`paired_macro_f1`, linearized), the
held-out labels' effective size (:func:`kish_effective_n`) and, per defect class, the interval of the recall
difference (:func:`paired_recalls`, Bonett-Price). docs/estimates.md says why and what it costs.

Example:
    >>> import numpy as np
    >>> weighted_accuracy(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([1.0, 1.0, 2.0]))
    0.5
    >>> holdout_mask(["a", "b", "c", "d", "e", "f"], 0.5).tolist()
    [False, False, True, False, True, True]
    >>> y = np.array([0, 0, 1, 1] * 10)
    >>> v = promotion_gate(y, y, np.zeros(40, int), np.ones(40), [False, True])
    >>> v.promote, v.macro_f1.text(), v.recalls[1].text(), v.effective
    (True, '+0.667 [+0.595, +0.739]', '+1.000 [+0.735, +1.000]', 40.0)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from selector.arrays import BoolArray, FloatArray
from selector.errors import SelectorError


def _check_metric_inputs(y_true: Any, y_pred: Any, weights: Any) -> None:
    if not len(y_true) == len(y_pred) == len(weights):
        raise SelectorError(f"lengths differ: {len(y_true)}, {len(y_pred)}, {len(weights)}")
    if len(y_true) == 0:
        raise SelectorError("cannot score an empty set")
    if not np.all(np.asarray(weights) > 0):
        raise SelectorError("weights must be positive")


def weighted_accuracy(y_true: Any, y_pred: Any, weights: Any) -> float:
    """``sum_i w_i [pred_i == true_i] / sum_i w_i`` (with ``w_i = 1 / pi_i``: the stream's accuracy)."""
    _check_metric_inputs(y_true, y_pred, weights)
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(w, np.asarray(y_true) == np.asarray(y_pred)) / w.sum())


def weighted_macro_f1(y_true: Any, y_pred: Any, weights: Any, n_classes: int) -> float:
    """Mean over classes of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, each count a sum of weights.

    Classes absent from both ``y_true`` and ``y_pred`` are left out of the mean (their F1 is undefined).
    Predictions outside ``[0, n_classes)`` (e.g. -1: a class the model does not know) are simply wrong.
    """
    _check_metric_inputs(y_true, y_pred, weights)
    t, p = np.asarray(y_true), np.asarray(y_pred)
    w = np.asarray(weights, dtype=np.float64)
    classes = np.arange(n_classes)
    is_true = t[None, :] == classes[:, None]  # (C, n)
    is_pred = p[None, :] == classes[:, None]
    tp = (is_true & is_pred) @ w
    fp = (~is_true & is_pred) @ w
    fn = (is_true & ~is_pred) @ w
    present = is_true.any(axis=1) | is_pred.any(axis=1)
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(f1.mean())


def holdout_mask(ids: Sequence[str], share: float, salt: str = "holdout") -> BoolArray:
    """Which items are held out: ``sha256(salt:id)`` read as a number in [0, 1) falls below ``share``.

    Stable across retrains, processes and Python versions, so an item never moves between the training
    set and the holdout (a model is never judged on items it was trained on, nor on items a later
    candidate's parent was trained on).
    """
    if not 0.0 <= share <= 1.0:
        raise SelectorError(f"holdout share must be in [0, 1]: {share}")
    digests = (hashlib.sha256(f"{salt}:{i}".encode()).digest() for i in ids)
    draws = [int.from_bytes(h[:8], "big") / 2.0**64 for h in digests]
    return np.asarray(draws, dtype=np.float64) < share


def kish_effective_n(weights: Any) -> float:
    """Kish's effective sample size ``(sum_i w_i)^2 / sum_i w_i^2``: how many equally weighted items a
    weighted sample is worth (0 for an empty one). One audit at ``w = 500`` among fifty queries at
    ``w <= 20`` leaves about 2."""
    w = np.asarray(weights, dtype=np.float64)
    square = float(np.dot(w, w))
    return float(w.sum()) ** 2 / square if square > 0 else 0.0


def trimmed_weights(weights: Any, cap: float | None) -> FloatArray:
    """The weights clipped at ``cap`` times their median (``cap`` None: unchanged).

    Trimming trades bias for variance (Potter 1990): items labeled with a tiny ``pi`` (audits) count less
    than the stream share they stand for, so a mean leans towards the queried, uncertain items, where two
    models differ; in exchange a single audit no longer decides the whole comparison.
    """
    w = np.asarray(weights, dtype=np.float64)
    if cap is None or len(w) == 0:
        return w
    if not cap >= 1:
        raise SelectorError(f"weight cap must be >= 1 (times the median weight): {cap}")
    trimmed: FloatArray = np.minimum(w, cap * float(np.median(w)))
    return trimmed


def t_quantile(level: float, df: float) -> float:
    """Two-sided quantile of Student's t with ``df`` degrees of freedom (the Cornish-Fisher expansion of
    Abramowitz & Stegun 26.7.5, from the normal quantile; within 1% for ``df >= 3``, narrow below)."""
    if not 0.5 <= level < 1:
        raise SelectorError(f"confidence level must be in [0.5, 1): {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    v = max(float(df), 1.0)
    z2 = z * z
    return z * (
        1
        + (z2 + 1) / (4 * v)
        + (5 * z2 * z2 + 16 * z2 + 3) / (96 * v * v)
        + (3 * z2**3 + 19 * z2 * z2 + 17 * z2 - 15) / (384 * v**3)
    )


@dataclass(frozen=True)
class PairedDifference:
    """A metric of two models on the same labeled items: candidate minus current, with its interval."""

    estimate: float
    low: float
    high: float
    candidate: float
    current: float
    effective: float
    """Kish effective size of the items behind it"""

    def text(self) -> str:
        """``+0.012 [-0.031, +0.055]``"""
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def _paired_inputs(y_true: Any, candidate: Any, current: Any, weights: Any) -> tuple[Any, ...]:
    _check_metric_inputs(y_true, candidate, weights)
    if len(current) != len(y_true):
        raise SelectorError(f"lengths differ: {len(y_true)} labels, {len(current)} current predictions")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise SelectorError("weights must be finite")
    return np.asarray(y_true), np.asarray(candidate), np.asarray(current), w


def paired_macro_f1(
    y_true: Any, candidate: Any, current: Any, weights: Any, n_classes: int, level: float = 0.95
) -> PairedDifference:
    """Weighted macro-F1 of ``candidate`` minus ``current`` on the same items, with a linearized interval.

    The mean runs over the classes present in ``y_true`` (for both models alike, so the difference
    compares like with like; a prediction of an absent class is still a false negative of the true one).
    Per class, ``F_c = 2 TP_c / (T_c + P_c)`` with weighted totals: true ``T_c``, predicted ``P_c``. Its
    linearization (Woodruff 1971) gives item ``i`` the influence
    ``u_ic = (2 [y_i = c = p_i] - F_c ([y_i = c] + [p_i = c])) / (T_c + P_c)``; with ``V_i`` the candidate's
    mean influence minus the current model's, ``D_hat - D ~ sum_i w_i V_i`` and
    ``var(D_hat) = n / (n - 1) sum_i (w_i V_i)^2`` (items drawn with replacement: no finite-population
    credit, so the interval also speaks for the stream's future items). The interval is
    ``D_hat +- t var^(1/2)`` with Student's ``t`` at the Kish effective size less one, clipped to [-1, 1].
    Identical predictions give ``[0, 0]``; swapping the models mirrors the interval.
    """
    y, a, b, w = _paired_inputs(y_true, candidate, current, weights)
    classes = np.unique(y[(y >= 0) & (y < n_classes)])
    if len(classes) == 0:
        raise SelectorError(f"no label is a class index in [0, {n_classes})")
    is_true = y[None, :] == classes[:, None]  # (K, n)
    t_tot = is_true @ w
    f1s, influence = [], np.zeros(len(y))
    for sign, pred in ((1.0, a), (-1.0, b)):
        is_pred = pred[None, :] == classes[:, None]
        denominator = t_tot + is_pred @ w
        f1 = 2 * ((is_true & is_pred) @ w) / denominator
        u = (2 * (is_true & is_pred) - f1[:, None] * (is_true.astype(float) + is_pred)) / denominator[:, None]
        influence += sign * u.mean(axis=0)
        f1s.append(float(f1.mean()))
    return _linearized(f1s[0], f1s[1], w * influence, w, level)


def paired_accuracy(
    y_true: Any, candidate: Any, current: Any, weights: Any, level: float = 0.95
) -> PairedDifference:
    """Weighted accuracy of ``candidate`` minus ``current`` on the same items; the interval as
    :func:`paired_macro_f1`'s (the influence of item ``i`` is ``(d_i - D) / sum w``, ``d_i`` its
    candidate-right minus current-right)."""
    y, a, b, w = _paired_inputs(y_true, candidate, current, weights)
    right_a, right_b = (a == y).astype(float), (b == y).astype(float)
    total = float(w.sum())
    acc_a, acc_b = float(w @ right_a) / total, float(w @ right_b) / total
    return _linearized(acc_a, acc_b, w * ((right_a - right_b) - (acc_a - acc_b)) / total, w, level)


def _linearized(cand: float, curr: float, terms: FloatArray, w: FloatArray, level: float) -> PairedDifference:
    n = len(terms)
    effective = kish_effective_n(w)
    estimate = cand - curr
    var = n / (n - 1) * float(terms @ terms) if n > 1 else math.inf
    half = t_quantile(level, effective - 1) * math.sqrt(var)
    low, high = float(max(-1.0, estimate - half)), float(min(1.0, estimate + half))
    return PairedDifference(estimate, low, high, cand, curr, effective)


def paired_recalls(
    y_true: Any, candidate: Any, current: Any, weights: Any, classes: Any, level: float = 0.95
) -> dict[int, PairedDifference]:
    """Per class in ``classes`` (with at least one item of it in ``y_true``): the weighted recall of
    ``candidate`` minus ``current`` over the items of that class, with the Bonett & Price (2012) adjusted
    interval of a paired difference of proportions, at the class items' Kish effective size ``m``.

    With ``p12`` the weighted share of the class's items only the candidate finds and ``p21`` the share only
    the current model finds: ``q12 = (m p12 + 1) / (m + 2)``, ``q21 = (m p21 + 1) / (m + 2)``, interval
    ``q12 - q21 +- z ((q12 + q21 - (q12 - q21)^2) / (m + 2))^(1/2)``, clipped to [-1, 1]. Never of zero
    width, so three misses on three defects do not prove a candidate worse (a sign test agrees: 1/8), and it
    keeps its coverage with the few defects a holdout holds. The estimate is the plain ``p12 - p21``; the
    interval contains it at every level of at least 0.85.
    """
    y, a, b, w = _paired_inputs(y_true, candidate, current, weights)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    cls = np.asarray(classes, dtype=np.int64)
    is_c = y[None, :] == cls[:, None]  # (K, n)
    hit_a, hit_b = a[None, :] == cls[:, None], b[None, :] == cls[:, None]
    total = is_c @ w
    only_a = (is_c & hit_a & ~hit_b) @ w
    only_b = (is_c & hit_b & ~hit_a) @ w
    rec_a, rec_b = (is_c & hit_a) @ w, (is_c & hit_b) @ w
    m = np.where(total > 0, total**2 / np.maximum(is_c @ (w * w), 1e-300), 0.0)
    out: dict[int, PairedDifference] = {}
    for k in np.flatnonzero(total > 0):
        p12, p21 = only_a[k] / total[k], only_b[k] / total[k]
        q12, q21 = (m[k] * p12 + 1) / (m[k] + 2), (m[k] * p21 + 1) / (m[k] + 2)
        centre = q12 - q21
        half = z * math.sqrt(max(q12 + q21 - centre * centre, 0.0) / (m[k] + 2))
        out[int(cls[k])] = PairedDifference(
            float(p12 - p21),
            float(max(-1.0, centre - half)),
            float(min(1.0, centre + half)),
            float(rec_a[k] / total[k]),
            float(rec_b[k] / total[k]),
            float(m[k]),
        )
    return out


@dataclass(frozen=True)
class GateVerdict:
    """The promotion gate's judgement of a candidate against the current model on the same held-out labels.

    Attributes:
        promote: every check passed.
        macro_f1: the paired macro-F1 difference (the gate's metric).
        accuracy: the paired accuracy difference (reported, not gated).
        recalls: per defect class present in the holdout, the paired recall difference.
        held_out: held-out labels judged on.
        effective: their Kish effective size.
        failures: why it was not promoted: ``effective``, ``improvement``, and ``recall:<class index>`` per
            defect class whose recall the candidate credibly lowers.
    """

    promote: bool
    macro_f1: PairedDifference
    accuracy: PairedDifference
    recalls: dict[int, PairedDifference]
    held_out: int
    effective: float
    min_effective: float
    min_improvement: float
    failures: tuple[str, ...]

    def describe(self, candidate: str, current: str, classes: Sequence[str]) -> str:
        """One line for the log, the manifest and the models topic, e.g. ``rejected v4: macro-F1 +0.012
        [-0.031, +0.055] vs v3 on 64 held-out labels (effective 11.2 < 30); recall 8 -0.150 [-0.400,
        +0.050]; not promoted: effective size below retrain.min_holdout_effective, ...``"""
        relation = ">=" if self.effective >= self.min_effective else "<"
        parts = [
            f"{'promoted' if self.promote else 'rejected'} {candidate}: macro-F1 {self.macro_f1.text()} "
            f"vs {current} on {self.held_out} held-out labels "
            f"(effective {self.effective:.1f} {relation} {self.min_effective:g})"
        ]
        parts += [f"recall {classes[k]} {d.text()}" for k, d in self.recalls.items()]
        why = {
            "effective": "effective size below retrain.min_holdout_effective",
            "improvement": (
                f"lower bound {self.macro_f1.low:+.3f} not above "
                f"retrain.min_improvement {self.min_improvement:g}"
            ),
        }
        reasons = [
            why.get(f) or f"recall of {classes[int(f.split(':')[1])]} credibly lower" for f in self.failures
        ]
        if reasons:
            parts.append("not promoted: " + ", ".join(reasons))
        return "; ".join(parts)

    def metrics(self, classes: Sequence[str]) -> dict[str, float]:
        """The verdict as flat numbers for the manifest: each difference with its interval, the sizes."""
        out = {"holdout": float(self.held_out), "holdout_effective": self.effective}
        named = [("macro_f1", self.macro_f1), ("accuracy", self.accuracy)]
        named += [(f"recall_{classes[k]}", d) for k, d in self.recalls.items()]
        for name, d in named:
            out |= {
                f"candidate_{name}": d.candidate,
                f"current_{name}": d.current,
                f"{name}_difference": d.estimate,
                f"{name}_low": d.low,
                f"{name}_high": d.high,
            }
        return out


def promotion_gate(
    y_true: Any,
    candidate: Any,
    current: Any,
    weights: Any,
    defects: Any,
    *,
    min_improvement: float = 0.0,
    min_effective: float = 30.0,
    level: float = 0.95,
) -> GateVerdict:
    """Promote ``candidate`` over ``current`` only if, on the same held-out labels (weights ``weights``):

    1. their Kish effective size is at least ``min_effective``;
    2. the lower bound of the paired macro-F1 difference (:func:`paired_macro_f1`) exceeds
       ``min_improvement``;
    3. no defect class (``defects``: one flag per class) present in the holdout has a paired recall
       difference (:func:`paired_recalls`) whose upper bound is below 0: the candidate credibly finds fewer
       of that defect.

    Identical predictions are never promoted (the difference's lower bound is 0, not above it).
    """
    flags = np.asarray(defects, dtype=bool)
    if not min_improvement >= 0:
        raise SelectorError(f"min_improvement must be >= 0: {min_improvement}")
    f1 = paired_macro_f1(y_true, candidate, current, weights, len(flags), level)
    recalls = paired_recalls(y_true, candidate, current, weights, np.flatnonzero(flags), level)
    failures = []
    if not f1.effective >= min_effective:
        failures.append("effective")
    if not f1.low > min_improvement:
        failures.append("improvement")
    failures += [f"recall:{k}" for k, d in recalls.items() if d.high < 0]
    return GateVerdict(
        not failures,
        f1,
        paired_accuracy(y_true, candidate, current, weights, level),
        recalls,
        len(np.asarray(y_true)),
        f1.effective,
        min_effective,
        min_improvement,
        tuple(failures),
    )
