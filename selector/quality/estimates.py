"""Honest estimates from labeled decisions, each with a confidence interval that is never a point.

Items are sent for labeling with a known inclusion probability ``pi_i`` (recorded with every decision), so
the labeled items are a probability sample of the stream and weighting each by ``1 / pi_i`` undoes the
selection: queries favour uncertain items, where the model is wrong more often, and an unweighted accuracy of
the labeled items would be far too low. The target is the model's quality on the stream it serves, an
endless population, so even items labeled with certainty (``pi = 1``) leave it uncertain.

- :func:`wilson`: a proportion from a simple random sample (audits of auto-accepted items: every accepted
  item had the same audit probability), with the continuity-corrected Wilson interval
  (:mod:`selector.quality.intervals`: exact binomial coverage >= 94.9% at every n up to 500).
- :func:`weighted_mean`: the Hajek estimator ``sum_i w_i y_i / sum_i w_i`` with ``w_i = 1 / pi_i`` over the
  labeled items (Horvitz & Thompson 1952; Hajek 1971), with the with-replacement (superpopulation) variance
  ``var = sum_i w_i^2 (y_i - mean)^2 / (sum_i w_i)^2`` (no finite-population factor ``1 - pi_i``: the stream
  is not used up). Its interval is the corrected Wilson interval at Korn & Graubard's (1998) effective size
  ``mean (1 - mean) / var``, at most Kish's ``(sum w)^2 / sum w^2`` (how many items the weights rest on: a
  few heavy audits among many light queries are worth a few items, whatever the variance says), with
  ``kish - 1`` degrees of freedom (the t quantile for z). One label gives the whole unit interval.
- :func:`model_estimates`: accuracy (weighted mean of ``correct``), recall of class ``c`` (of ``correct``
  over the items labeled ``c``), precision of ``c`` (of ``correct`` over the items predicted ``c``), defect
  rate (of ``label is a defect``). A class's members can hide among any labeled item, so a recall takes
  pseudo-errors (:data:`selector.quality.intervals.PSEUDO_ERRORS`) per weight class: members a class of
  heavily weighted audits may hold unseen, moving the ratio through its denominator.

Limits, measured by ``bench/estimates.py``: the labels alone cannot know the part of the stream they have
not reached. With audits at 0.2%, the first 5-30 labels are mostly queries, the auto-accepted bulk is not
represented and the worst coverage dips to 89%; :mod:`selector.quality.population` (every decided item)
does not have that blind spot.

Example:
    >>> import numpy as np
    >>> round(wilson(8, 10).low, 3), round(wilson(8, 10).high, 3)
    (0.442, 0.965)
    >>> e = weighted_mean(np.array([1.0, 0.0, 1.0]), np.array([1.0, 0.5, 0.25]))
    >>> round(e.estimate, 4)
    0.7143
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from selector.arrays import BoolArray, FloatArray, IntArray
from selector.errors import SelectorError
from selector.quality.intervals import (
    Z_95,
    Bands,
    Interval,
    bounds,
    effective_size,
    floor_reach,
    hidden_reach,
    pseudo_error_floor,
    widen,
)

__all__ = ["Z_95", "Interval", "ModelEstimates", "confusion", "model_estimates", "weighted_mean", "wilson"]


def wilson(successes: int, n: int, z: float = Z_95) -> Interval:
    """A binomial proportion of a simple random sample, with the continuity-corrected Wilson interval."""
    if not 0 <= successes <= n:
        raise SelectorError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Interval.empty()
    p = successes / n
    low, high = bounds(np.array([p]), np.array([float(n)]), np.array([np.inf]), z)
    return Interval(p, float(low[0]), float(high[0]), n)


def ipw_bands(y: FloatArray, w: FloatArray, z: float = Z_95, hideout: FloatArray | None = None) -> Bands:
    """Hajek proportions of ``y`` (0 or 1) weighted by ``w = 1 / pi`` (0: not in the group) along the last
    axis, with their bounds; any leading shape (replicates, estimands). ``hideout``: the weights of the
    labeled items among which unseen members of the group may hide (0 elsewhere), for the pseudo-errors."""
    total = w.sum(axis=-1)
    some = total > 0
    safe = np.where(some, total, 1.0)
    mean = np.clip((w * y).sum(axis=-1) / safe, 0.0, 1.0)
    var = (w * w * (y - mean[..., None]) ** 2).sum(axis=-1) / (safe * safe)
    kish, df = effective_size(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(var > 0, np.minimum(kish, mean * (1 - mean) / var), kish)
    low, high = bounds(mean, n_eff, df, z)
    if hideout is not None:
        some_pi = np.where(hideout > 0, 1.0 / np.where(hideout > 0, hideout, 1.0), 1.0)
        floor = pseudo_error_floor(hideout * hideout, some_pi, (w * (y - mean[..., None])) ** 2)
        reach = hidden_reach(mean, total, floor_reach(floor, df, z), np.ones(mean.shape, bool))
        low, high = widen(mean, low, high, *reach)
    n = np.count_nonzero(w > 0, axis=-1)
    return Bands(np.where(some, mean, np.nan), low, high, n)


def weighted_mean(y: FloatArray, pi: FloatArray, z: float = Z_95) -> Interval:
    """Inverse-probability-weighted (Hajek) proportion of ``y`` (0 or 1) over labeled items with inclusion
    ``pi``, with its interval (see the module docstring).

    Raises:
        SelectorError: if a ``pi`` is outside (0, 1] or the lengths differ.
    """
    if len(y) != len(pi):
        raise SelectorError(f"y and pi differ in length: {len(y)} != {len(pi)}")
    if len(y) == 0:
        return Interval.empty()
    _check_pi(pi)
    return ipw_bands(np.asarray(y, dtype=np.float64)[None], 1.0 / pi[None], z).at(0)


def _check_pi(pi: FloatArray) -> None:
    if not ((pi > 0) & (pi <= 1)).all():
        raise SelectorError("inclusion probabilities must lie in (0, 1]")


def check_decisions(label: IntArray, predicted: IntArray, pi: FloatArray, n_classes: int) -> None:
    """Labeled decisions fit for an estimate: one label, prediction and inclusion probability each, class
    indices in ``[0, n_classes)``, ``pi`` in (0, 1].

    Raises:
        SelectorError: naming what does not fit.
    """
    if not (len(label) == len(predicted) == len(pi)):
        raise SelectorError(
            f"label, predicted and pi differ in length: {len(label)}, {len(predicted)}, {len(pi)}"
        )
    for name, x in (("label", label), ("predicted", predicted)):
        if len(x) and not ((x >= 0) & (x < n_classes)).all():
            raise SelectorError(f"{name} class indices must lie in [0, {n_classes}): {x.min()}..{x.max()}")
    _check_pi(pi)


@dataclass(frozen=True)
class ModelEstimates:
    """The deployed model's quality, estimated from every labeled decision."""

    accuracy: Interval
    recall: dict[str, Interval]
    defect_rate: Interval
    precision: dict[str, Interval]
    """the share of correct among the items predicted as each class"""


def model_estimates(
    label: IntArray,
    predicted: IntArray,
    pi: FloatArray,
    classes: list[str],
    defects: BoolArray,
    z: float = Z_95,
) -> ModelEstimates:
    """Accuracy, per-class recall and precision, and defect rate from labeled decisions.

    Args:
        label: the human label of each labeled item (class index).
        predicted: the model's predicted class for it.
        pi: its inclusion probability at decision time.
        classes: class names, for the recall and precision keys.
        defects: which classes count as defects (per class).
    """
    check_decisions(label, predicted, pi, len(classes))
    b = model_bands(label, predicted, pi, len(classes), defects, z)
    c = len(classes)
    return ModelEstimates(
        b.at(0),
        {name: b.at(1 + k) for k, name in enumerate(classes)},
        b.at(1 + 2 * c),
        {name: b.at(1 + c + k) for k, name in enumerate(classes)},
    )


def model_bands(
    label: IntArray, predicted: IntArray, pi: FloatArray, n_classes: int, defects: BoolArray, z: float = Z_95
) -> Bands:
    """:func:`model_estimates` on arrays: labeled items along the last axis (any leading shape, e.g.
    replicates of a simulation); estimands along a new last axis, in the order accuracy, recall of each class,
    precision of each class, defect rate."""
    onehot = np.eye(n_classes, dtype=np.float64)
    is_label = np.moveaxis(onehot[label], -1, -2)  # (..., C, m)
    is_pred = np.moveaxis(onehot[predicted], -1, -2)
    correct = (label == predicted).astype(np.float64)[..., None, :]
    w = (1.0 / pi)[..., None, :]
    ones = np.ones_like(correct)
    y = np.concatenate(
        [
            correct,
            *(np.broadcast_to(correct, is_label.shape),) * 2,
            defects[label].astype(np.float64)[..., None, :],
        ],
        axis=-2,
    )
    weights = w * np.concatenate([ones, is_label, is_pred, ones], axis=-2)
    # a class's members hide among every labeled item: a weight class that showed none may still hold some
    hideout = np.zeros(weights.shape)
    hideout[..., 1 : 1 + n_classes, :] = w
    return ipw_bands(y, weights, z, hideout)


def confusion(label: IntArray, predicted: IntArray, pi: FloatArray, n_classes: int) -> FloatArray:
    """The IPW-estimated share of the stream in each cell ``[true, predicted]`` (C x C, summing to 1; zeros
    when nothing is labeled)."""
    check_decisions(label, predicted, pi, n_classes)
    out = np.zeros((n_classes, n_classes))
    if len(label) == 0:
        return out
    np.add.at(out, (label, predicted), 1.0 / pi)
    total: FloatArray = out / out.sum()
    return total
